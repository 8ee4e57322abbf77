//! The read-only `req` object a route function receives.
//!
//! Cost matters (every request pays it), so nothing is copied up front: `req` and `req.headers`
//! are two empty Lua tables made once per `Router` (see `req.lua`). Each call gives them fresh
//! caches; a field is computed from the current [`RouteRequest`] by Rust on its first read in
//! the call and is a plain table read after that. A `req` kept in an upvalue and read in a later
//! call sees that later call's request; reading an uncached field outside any call is an error.

use std::cell::Cell;
use std::marker::PhantomData;
use std::rc::Rc;

use mlua::{Function, Lua, Value};

use super::{args, RouteRequest};

/// The request of the call in progress, if any.
pub(super) struct Current {
    /// Null outside a call. Set only by [`Current::enter`], whose guard resets it.
    ptr: Cell<*const RouteRequest<'static>>,
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
    }
}

impl Current {
    pub(super) fn new() -> Current {
        Current {
            ptr: Cell::new(std::ptr::null()),
        }
    }

    /// Makes `req` the current request until the returned guard is dropped. The guard borrows
    /// `req`, so `req` outlives every use of the pointer.
    pub(super) fn enter<'c>(&'c self, req: &'c RouteRequest<'_>) -> Entered<'c> {
        let prev = self.ptr.get();
        // Only the lifetime parameter changes; `with` never lets the `'static` escape.
        let p: *const RouteRequest<'static> = (req as *const RouteRequest<'_>).cast();
        self.ptr.set(p);
        Entered {
            cur: self,
            prev,
            _req: PhantomData,
        }
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

/// Wraps the route function: the returned function takes no argument, builds the call's `req`
/// view and calls `route(req)`.
pub(super) fn wrap(lua: &Lua, cur: &Rc<Current>, route: Function) -> mlua::Result<Function> {
    let c = cur.clone();
    let fetch = lua.create_function(move |lua, key: Value| {
        let Value::String(key) = key else {
            return Ok((Value::Nil, None));
        };
        let key = key.as_bytes();
        c.with(|r| field(lua, r, &key))
    })?;
    let c = cur.clone();
    let header = lua.create_function(move |lua, key: Value| {
        let Value::String(key) = key else {
            return Ok(Value::Nil);
        };
        let key = key.as_bytes();
        c.with(|r| header(lua, r, &key))
    })?;
    let c = cur.clone();
    let arg = lua.create_function(move |lua, name: mlua::String| {
        c.with(|r| {
            let Some(q) = r.req.query.as_deref() else {
                return Ok(Value::Nil);
            };
            match args::arg(q, &name.as_bytes()) {
                Some(v) => lua.create_string(v).map(Value::String),
                None => Ok(Value::Nil),
            }
        })
    })?;
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
    lua.load(REQ_LUA).set_name("=luahttpd req").call((
        fetch,
        header,
        arg,
        header_pairs,
        route,
        protect,
        body,
        form_decode,
    ))
}

fn opt_str(lua: &Lua, s: Option<&str>) -> mlua::Result<Value> {
    match s {
        Some(s) => lua.create_string(s).map(Value::String),
        None => Ok(Value::Nil),
    }
}

/// `req.<key>`, or (nil, message) for a field that does not exist.
fn field(lua: &Lua, r: &RouteRequest<'_>, key: &[u8]) -> mlua::Result<(Value, Option<String>)> {
    let q = r.req;
    let v = match key {
        b"path" => Value::String(lua.create_string(&q.path)?),
        b"method" => Value::String(lua.create_string(q.method.as_str())?),
        b"host" => opt_str(lua, q.host.as_deref())?,
        b"query" => opt_str(lua, q.query.as_deref())?,
        b"raw_path" => Value::String(lua.create_string(&q.raw_path)?),
        b"uri" => Value::String(lua.create_string(&q.target)?),
        b"version" => Value::String(lua.create_string(q.version.as_str())?),
        b"scheme" => Value::String(lua.create_string(r.scheme)?),
        b"remote_addr" => Value::String(lua.create_string(r.remote_addr)?),
        b"remote_port" => Value::Integer(i64::from(r.remote_port)),
        b"listener" => Value::String(lua.create_string(r.listener)?),
        other => {
            let msg = format!(
                "req has no field '{}' (fields: method, path, raw_path, query, uri, version, \
                 host, scheme, remote_addr, remote_port, listener, headers, arg)",
                String::from_utf8_lossy(other)
            );
            return Ok((Value::Nil, Some(msg)));
        }
    };
    Ok((v, None))
}

/// `req.headers[key]`: case-insensitive, repeated headers joined with ", ".
fn header(lua: &Lua, r: &RouteRequest<'_>, key: &[u8]) -> mlua::Result<Value> {
    let mut found = r
        .req
        .headers()
        .filter(|(n, _)| n.eq_ignore_ascii_case(key))
        .map(|(_, v)| v);
    let Some(first) = found.next() else {
        return Ok(Value::Nil);
    };
    let Some(second) = found.next() else {
        return lua.create_string(first).map(Value::String);
    };
    let mut joined = [first, b", ", second].concat();
    for v in found {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(v);
    }
    lua.create_string(joined).map(Value::String)
}
