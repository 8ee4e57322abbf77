//! The read-only `req` object a route function receives.
//!
//! Cost matters (every request pays it), so nothing is copied up front: `req` and `req.headers`
//! are two empty Lua tables made once per `Router` (see `req.lua`), whose `__index` is Rust
//! (`req_raw`): a field is computed from the current [`RouteRequest`] at each read, with no
//! per-call state to reset. A `req` kept in an upvalue and read in a later call sees that later
//! call's request; reading a field outside any call is an error.

use std::cell::{Cell, UnsafeCell};
use std::marker::PhantomData;
use std::rc::Rc;

use mlua::{Function, Lua, Value};

use super::req_raw::{self, Accessor};
use super::{args, RouteRequest};
use crate::lua_raw::LazyFields;

/// The request of the call in progress, if any.
pub(super) struct Current {
    /// Null outside a call. Set only by [`Current::enter`], whose guard resets it.
    ptr: Cell<*const RouteRequest<'static>>,
    /// The string fields of the request at `ptr`, which the VM reads itself (`req_raw::fill`);
    /// not live while `ptr` is null. Written only by `enter` and its guard, when no Lua runs.
    fields: UnsafeCell<LazyFields>,
}

/// Resets [`Current`] when the call ends (also on unwinding).
pub(super) struct Entered<'c> {
    cur: &'c Current,
    prev: *const RouteRequest<'static>,
    _req: PhantomData<&'c ()>,
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        self.cur.ptr.set(self.prev);
        // SAFETY: `prev` is null or the request of an enclosing call, whose guard is still
        // alive (guards drop in reverse order), so it still points to a live request.
        self.cur.fill(unsafe { self.prev.as_ref() });
    }
}

impl Current {
    pub(super) fn new() -> Current {
        Current {
            ptr: Cell::new(std::ptr::null()),
            fields: UnsafeCell::new(LazyFields::new()),
        }
    }

    /// The fields the VM reads, for `lua_raw::set_lazy_reader`.
    pub(super) fn lazy_fields(&self) -> *const LazyFields {
        self.fields.get()
    }

    /// Names the table, cache and names of the fields the VM reads (once, when `req` is made).
    fn bind_fields(&self, table: &mlua::Table, cache: &mlua::Table, names: &mlua::Table) {
        // SAFETY: no Lua runs here and no reference to the fields exists (they are only ever
        // reached through the raw pointer).
        let f = unsafe { &mut *self.fields.get() };
        req_raw::bind(f, table, cache, names);
    }

    /// Sets the fields' values to `req`'s, or makes them not live when None.
    fn fill(&self, req: Option<&RouteRequest<'_>>) {
        // SAFETY: as in `bind_fields`: called by `enter` and its guard, between Lua runs.
        let f = unsafe { &mut *self.fields.get() };
        req_raw::fill(f, req);
    }

    /// Makes `req` the current request until the returned guard is dropped. The guard borrows
    /// `req`, so `req` outlives every use of the pointer.
    pub(super) fn enter<'c>(&'c self, req: &'c RouteRequest<'_>) -> Entered<'c> {
        let prev = self.ptr.get();
        // Only the lifetime parameter changes; `with` never lets the `'static` escape.
        let p: *const RouteRequest<'static> = (req as *const RouteRequest<'_>).cast();
        self.ptr.set(p);
        self.fill(Some(req));
        Entered {
            cur: self,
            prev,
            _req: PhantomData,
        }
    }

    /// Runs `f` on the current request; None outside a call.
    pub(super) fn with_raw<R>(&self, f: impl FnOnce(&RouteRequest<'_>) -> R) -> Option<R> {
        let p = self.ptr.get();
        if p.is_null() {
            return None;
        }
        // SAFETY: as in `with`.
        let req: &RouteRequest<'_> = unsafe { &*p };
        Some(f(req))
    }

    /// Runs `f` on the current request; an error outside a call.
    fn with<R>(&self, f: impl FnOnce(&RouteRequest<'_>) -> mlua::Result<R>) -> mlua::Result<R> {
        let p = self.ptr.get();
        if p.is_null() {
            return Err(mlua::Error::RuntimeError(
                "req is only available during a route call".into(),
            ));
        }
        // SAFETY: `p` is non-null only between `enter` and the drop of its guard, and the guard
        // borrows the request for that whole time, so the pointee is alive and not mutated
        // (shared borrow). Lua states are single-threaded. `f` is generic over the request's
        // lifetime, so no reference with the faked `'static` lifetime can escape it.
        let req: &RouteRequest<'_> = unsafe { &*p };
        f(req)
    }
}

const REQ_LUA: &str = include_str!("req.lua");

/// `route` called with `req` in front of its arguments (the route function, or the respond
/// hook called through mlua).
pub(super) fn wrap(lua: &Lua, req: &mlua::Table, route: Function) -> mlua::Result<Function> {
    lua.load("local route, req = ...\nreturn function(...) return route(req, ...) end")
        .set_name("=luahttpd req wrapper")
        .call((route, req))
}

/// The `req` object over `cur`, the view of the call in progress, made once per router (the
/// route and the respond hook share it); it installs the state's lazy reader for it.
pub(super) fn object(lua: &Lua, cur: &Rc<Current>) -> mlua::Result<mlua::Table> {
    let strings = req_raw::string_cache(lua)?;
    let index = req_raw::function(lua, cur, Accessor::Field, &strings)?;
    let header_index = req_raw::function(lua, cur, Accessor::Header, &strings)?;
    let arg = req_raw::function(lua, cur, Accessor::Arg, &strings)?;
    let c = cur.clone();
    let header_pairs = lua.create_function(move |lua, ()| {
        let t = lua.create_table()?;
        c.with(|r| {
            for (n, v) in r.req.headers() {
                let name = lua.create_string(n.to_ascii_lowercase())?;
                let value = match t.raw_get::<Option<mlua::String>>(&name)? {
                    Some(prev) => lua.create_string([&prev.as_bytes()[..], b", ", v].concat())?,
                    None => lua.create_string(v)?,
                };
                t.raw_set(name, value)?;
            }
            Ok(())
        })?;
        let next: Function = lua.globals().get("next")?;
        Ok((next, t, Value::Nil))
    })?;
    let protect: Function = lua.named_registry_value(super::sandbox::PROTECT)?;
    let body = super::suspend::body_function(lua)?;
    let form_decode = lua.create_function(|lua, s: mlua::String| {
        let t = lua.create_table()?;
        for part in s.as_bytes().split(|&b| b == b'&') {
            if part.is_empty() {
                continue;
            }
            let (k, v) = match part.iter().position(|&b| b == b'=') {
                Some(i) => (&part[..i], &part[i + 1..]),
                None => (part, &b""[..]),
            };
            let k = lua.create_string(args::decode(k))?;
            // The first value of a name, as req:arg.
            if t.raw_get::<Value>(&k)?.is_nil() {
                t.raw_set(k, lua.create_string(args::decode(v))?)?;
            }
        }
        Ok(t)
    })?;
    let (req, headers): (mlua::Table, mlua::Table) =
        lua.load(REQ_LUA).set_name("=luahttpd req").call((
            index,
            header_index,
            arg,
            header_pairs,
            protect,
            body,
            form_decode,
        ))?;
    // Read-only: `req.headers = x` must reach `__newindex` although `headers` is in `req`,
    // and the lazy reader answers only for read-only tables.
    crate::lua_raw::set_readonly(lua, &req)?;
    crate::lua_raw::set_readonly(lua, &headers)?;
    let names = req_raw::field_names(lua)?;
    cur.bind_fields(&req, &strings, &names);
    let lazy = req_raw::Lazy {
        cur: cur.clone(),
        req: req.to_pointer(),
        headers: headers.to_pointer(),
        cache: strings.to_pointer(),
    };
    crate::lua_raw::set_lazy_reader(
        lua,
        req_raw::lazy_fn,
        Rc::new(lazy),
        Some(|l: &req_raw::Lazy| l.cur.lazy_fields()),
        &[&req, &headers, &strings, &names],
    )?;
    Ok(req)
}

/// The error for `req.<key>` when there is no such field.
pub(super) fn unknown_field(key: &[u8]) -> String {
    format!(
        "req has no field '{}' (fields: method, path, raw_path, query, uri, version, host, \
         scheme, remote_addr, remote_port, listener, headers, arg)",
        String::from_utf8_lossy(key)
    )
}
