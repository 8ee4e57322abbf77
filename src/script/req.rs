//! The read-only `req` object a route function receives.
//!
//! Cost matters (every request pays it), so nothing is copied up front: one `req` userdata and
//! one `req.headers` userdata are created per `Router` and reused by every call. During a call
//! they point at the current [`RouteRequest`]; each field is computed when it is read. Reading
//! `req` after its call returned (e.g. from an upvalue in a later call) sees the request of that
//! later call; outside any call it is an error.

use std::cell::Cell;
use std::marker::PhantomData;
use std::rc::Rc;

use mlua::{AnyUserData, Lua, MetaMethod, UserData, UserDataMethods, Value};

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
        let p = req as *const RouteRequest<'_> as *const RouteRequest<'static>;
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

/// `req`.
pub(super) struct ReqUd {
    pub(super) cur: Rc<Current>,
    pub(super) headers: AnyUserData,
}

/// `req.headers`.
pub(super) struct HeadersUd {
    pub(super) cur: Rc<Current>,
}

fn read_only(what: &str) -> mlua::Error {
    mlua::Error::RuntimeError(format!("{what} is read-only"))
}

fn opt_str(lua: &Lua, s: Option<&str>) -> mlua::Result<Value> {
    match s {
        Some(s) => lua.create_string(s).map(Value::String),
        None => Ok(Value::Nil),
    }
}

impl UserData for ReqUd {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method("arg", |lua, this, name: mlua::String| {
            this.cur.with(|r| {
                let Some(q) = r.req.query.as_deref() else {
                    return Ok(Value::Nil);
                };
                match args::arg(q, &name.as_bytes()) {
                    Some(v) => lua.create_string(v).map(Value::String),
                    None => Ok(Value::Nil),
                }
            })
        });
        methods.add_meta_method(MetaMethod::Index, |lua, this, key: Value| {
            let Value::String(key) = key else {
                return Ok(Value::Nil);
            };
            let key = key.as_bytes();
            this.cur.with(|r| {
                let q = r.req;
                Ok(match &*key {
                    b"path" => Value::String(lua.create_string(&q.path)?),
                    b"method" => Value::String(lua.create_string(q.method.as_str())?),
                    b"host" => opt_str(lua, q.host.as_deref())?,
                    b"headers" => Value::UserData(this.headers.clone()),
                    b"query" => opt_str(lua, q.query.as_deref())?,
                    b"raw_path" => Value::String(lua.create_string(&q.raw_path)?),
                    b"uri" => Value::String(lua.create_string(&q.target)?),
                    b"version" => Value::String(lua.create_string(q.version.as_str())?),
                    b"scheme" => Value::String(lua.create_string(r.scheme)?),
                    b"remote_addr" => Value::String(lua.create_string(r.remote_addr)?),
                    b"remote_port" => Value::Integer(i64::from(r.remote_port)),
                    b"listener" => Value::String(lua.create_string(r.listener)?),
                    other => {
                        return Err(mlua::Error::RuntimeError(format!(
                            "req has no field '{}' (fields: method, path, raw_path, query, uri, \
                             version, host, scheme, remote_addr, remote_port, listener, headers, \
                             arg)",
                            String::from_utf8_lossy(other)
                        )))
                    }
                })
            })
        });
        methods.add_meta_method(MetaMethod::NewIndex, |_, _, _: mlua::MultiValue| {
            Err::<(), _>(read_only("req"))
        });
        methods.add_meta_method(MetaMethod::ToString, |_, this, ()| {
            this.cur
                .with(|r| Ok(format!("req: {} {}", r.req.method.as_str(), r.req.target)))
        });
    }
}

impl UserData for HeadersUd {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_meta_method(MetaMethod::Index, |lua, this, key: Value| {
            let Value::String(key) = key else {
                return Ok(Value::Nil);
            };
            let key = key.as_bytes();
            this.cur.with(|r| {
                let mut found = r
                    .req
                    .headers()
                    .filter(|(n, _)| n.eq_ignore_ascii_case(&key))
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
            })
        });
        methods.add_meta_method(MetaMethod::NewIndex, |_, _, _: mlua::MultiValue| {
            Err::<(), _>(read_only("req.headers"))
        });
        // pairs(req.headers): lowercased names, repeated headers joined, like indexing.
        methods.add_meta_method(MetaMethod::Pairs, |lua, this, ()| {
            let t = lua.create_table()?;
            this.cur.with(|r| {
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
            let next: mlua::Function = lua.globals().raw_get("next")?;
            Ok((next, t, Value::Nil))
        });
        methods.add_meta_method(MetaMethod::ToString, |_, _, ()| Ok("req.headers"));
    }
}
