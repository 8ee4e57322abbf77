//! `respond_hook(function(req, res) ... end)`: Lua that sees every response head before it is
//! sent (static, in-memory, FastCGI, errors) and may set or remove its headers (issue 13).
//!
//! `res.status` is the status; `res.headers` reads case-insensitively (repeated lines joined
//! with ", "), and assigning sets a header (a string, or a list of strings for several lines)
//! or removes it (nil), with the checks of a decision's headers. The body cannot be changed.
//! The hook runs under the route limits; an error (or a limit) is logged with the request and
//! the response goes out as it was. One `res` object is reused for every call and is dead
//! outside one.

use std::cell::RefCell;
use std::rc::Rc;

use mlua::{AnyUserData, Function, Lua, MetaMethod, UserData, UserDataMethods, Value};

use super::{RouteErrorKind, RouteRequest, Router};
use crate::http::chunked::is_tchar;

/// Registry name of the config's respond hook function.
pub const RESPOND_HOOK: &str = "luahttpd.respond_hook";
/// Registry name of where it was given (`file:line`).
pub const RESPOND_HOOK_AT: &str = "luahttpd.respond_hook.at";

/// Headers the hook may not set: framing and the server's own.
const RESERVED: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "date",
    "server",
];

/// The response head while a hook call runs.
#[derive(Default)]
struct Head {
    active: bool,
    status: u16,
    headers: Vec<(String, String)>,
    changed: bool,
}

/// `res`.
struct Res(Rc<RefCell<Head>>);
/// `res.headers`.
struct Headers(Rc<RefCell<Head>>);

/// The prepared hook of a router.
pub(super) struct Hook {
    func: Function,
    /// The function as the config gave it, for a call with `req` = nil.
    raw: Function,
    res: AnyUserData,
    head: Rc<RefCell<Head>>,
}

fn dead() -> mlua::Error {
    mlua::Error::runtime("res is only available during a respond_hook call")
}

impl UserData for Res {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_meta_function(MetaMethod::Index, |_, (ud, key): (AnyUserData, String)| {
            let this = ud.borrow::<Res>()?;
            let h = this.0.borrow();
            if !h.active {
                return Err(dead());
            }
            match key.as_str() {
                "status" => Ok(Value::Integer(i64::from(h.status))),
                "headers" => ud.user_value::<Value>(),
                other => Err(mlua::Error::runtime(format!(
                    "res has no field '{other}' (status, headers)"
                ))),
            }
        });
        m.add_meta_method(
            MetaMethod::NewIndex,
            |_, _, _: mlua::MultiValue| -> mlua::Result<()> {
                Err(mlua::Error::runtime(
                "res fields cannot be assigned: set res.headers[name] (the status and body stay)",
            ))
            },
        );
    }
}

impl UserData for Headers {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_meta_method(MetaMethod::Index, |lua, this, name: String| {
            let h = this.0.borrow();
            if !h.active {
                return Err(dead());
            }
            let mut values = h
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(&name))
                .map(|(_, v)| v.as_str());
            let Some(first) = values.next() else {
                return Ok(Value::Nil);
            };
            let mut joined = first.to_string();
            for v in values {
                joined.push_str(", ");
                joined.push_str(v);
            }
            lua.create_string(joined).map(Value::String)
        });
        m.add_meta_method(
            MetaMethod::NewIndex,
            |_, this, (name, v): (String, Value)| {
                let values = header_values(&name, v)?;
                let mut h = this.0.borrow_mut();
                if !h.active {
                    return Err(dead());
                }
                h.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
                for value in values {
                    h.headers.push((name.clone(), value));
                }
                h.changed = true;
                Ok(())
            },
        );
        m.add_meta_method(MetaMethod::Pairs, |lua, this, ()| {
            let h = this.0.borrow();
            if !h.active {
                return Err(dead());
            }
            let t = lua.create_table()?;
            for (n, v) in &h.headers {
                let key = n.to_ascii_lowercase();
                let joined = match t.raw_get::<Option<String>>(key.as_str())? {
                    Some(prev) => format!("{prev}, {v}"),
                    None => v.clone(),
                };
                t.raw_set(key, joined)?;
            }
            let next: Function = lua.globals().get("next")?;
            Ok((next, t, Value::Nil))
        });
    }
}

/// The lines `v` sets for header `name`, checked as a decision's headers are.
fn header_values(name: &str, v: Value) -> mlua::Result<Vec<String>> {
    let bad = |m: String| Err(mlua::Error::runtime(format!("res.headers: {m}")));
    if name.is_empty() || !name.bytes().all(is_tchar) {
        return bad(format!("header name {name:?} is not a token"));
    }
    if RESERVED.iter().any(|r| name.eq_ignore_ascii_case(r)) {
        return bad(format!("header '{name}' is set by the server"));
    }
    let values = match v {
        Value::Nil => Vec::new(),
        Value::String(s) => vec![s.to_str()?.to_string()],
        Value::Integer(n) => vec![n.to_string()],
        Value::Number(n) => vec![n.to_string()],
        Value::Table(t) => {
            let mut out = Vec::new();
            for item in t.sequence_values::<mlua::String>() {
                out.push(item?.to_str()?.to_string());
            }
            if out.is_empty() {
                return bad(format!(
                    "'{name}' needs a string or a non-empty list of strings"
                ));
            }
            out
        }
        other => {
            return bad(format!(
                "'{name}' must be a string or a list of strings, not {}",
                other.type_name()
            ))
        }
    };
    for value in &values {
        if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return bad(format!("header '{name}' value contains CR, LF or NUL"));
        }
    }
    Ok(values)
}

impl Hook {
    /// The hook stored by the config in `lua`'s registry, if any, wrapped like the route (over
    /// the router's `req` object).
    pub(super) fn from_registry(lua: &Lua, req: &mlua::Table) -> mlua::Result<Option<Hook>> {
        let Some(f) = lua.named_registry_value::<Option<Function>>(RESPOND_HOOK)? else {
            return Ok(None);
        };
        let func = super::req::wrap(lua, req, f.clone())?;
        let head = Rc::new(RefCell::new(Head::default()));
        let res = lua.create_userdata(Res(head.clone()))?;
        res.set_user_value(lua.create_userdata(Headers(head.clone()))?)?;
        Ok(Some(Hook {
            func,
            raw: f,
            res,
            head,
        }))
    }
}

/// A route that always falls through, for a config with a respond hook or timers and no
/// `route(fn)`: None when there is neither.
pub fn hook_only_route(lua: &Lua) -> Option<mlua::RegistryKey> {
    let hook = lua
        .named_registry_value::<Option<Function>>(RESPOND_HOOK)
        .ok()
        .flatten();
    if hook.is_none() && !super::has_timers(lua) {
        return None;
    }
    let f = lua.create_function(|_, _: mlua::MultiValue| Ok(())).ok()?;
    lua.create_registry_value(f).ok()
}

impl Router {
    /// Whether the config has a respond hook.
    pub fn has_respond_hook(&self) -> bool {
        self.hook.is_some()
    }

    /// Runs the respond hook on a response head: `status`, and its header lines (`headers`,
    /// each ending in CRLF, with `overrides` replacing those of the same names, as
    /// `http::response::write_head` applies them). When the hook changed a header, both are
    /// rewritten (the merged lines in `headers`; `overrides` keeps only Date or Server lines).
    /// `req` is None for a request refused before its head could be parsed (`req` is then nil
    /// in Lua). An error is logged and changes nothing.
    pub fn respond_hook(
        &mut self,
        req: Option<&RouteRequest<'_>>,
        status: u16,
        headers: &mut Vec<u8>,
        overrides: &mut Vec<u8>,
    ) {
        let Some(hook) = &self.hook else { return };
        let (list, kept) = merged(headers, overrides);
        {
            let mut h = hook.head.borrow_mut();
            *h = Head {
                active: true,
                status,
                headers: list,
                changed: false,
            };
        }
        let result = {
            self.budget.start(&self.limits);
            let r = match req {
                Some(rr) => {
                    let _entered = self.current.enter(rr);
                    hook.func.call::<()>(hook.res.clone())
                }
                None => {
                    // No request to show: call the hook itself with req = nil.
                    hook.raw.call::<()>((Value::Nil, hook.res.clone()))
                }
            };
            let trip = self.budget.finish();
            (r, trip)
        };
        let head = std::mem::take(&mut *hook.head.borrow_mut());
        let failed = match result {
            (_, Some((trip, at))) => Some(format!(
                "{}{}",
                at.map(|a| format!("{a}: ")).unwrap_or_default(),
                match trip {
                    super::Trip::Instructions =>
                        "the respond hook ran out of its instruction budget",
                    super::Trip::Deadline => "the respond hook ran past its deadline",
                }
            )),
            (Err(e), None) => {
                let e = super::RouteError::from_lua(RouteErrorKind::Lua, &e);
                Some(match e.location {
                    Some(at) => format!("{at}: {}", e.message),
                    None => e.message,
                })
            }
            (Ok(()), None) => None,
        };
        self.collect_if_due();
        if let Some(msg) = failed {
            let what = req.map_or_else(String::new, |r| {
                format!(" ({} {})", r.req.method.as_str(), r.req.target)
            });
            tracing::error!("respond_hook{what}: {msg}; the response goes out unchanged");
            return;
        }
        if !head.changed {
            return;
        }
        headers.clear();
        for (n, v) in &head.headers {
            headers.extend_from_slice(n.as_bytes());
            headers.extend_from_slice(b": ");
            headers.extend_from_slice(v.as_bytes());
            headers.extend_from_slice(b"\r\n");
        }
        *overrides = kept;
    }
}

/// Splits CRLF-ended header lines into (name, value).
fn lines(buf: &[u8]) -> impl Iterator<Item = (String, String)> + '_ {
    buf.split(|&b| b == b'\n').filter_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|&b| b == b':')?;
        let name = String::from_utf8_lossy(&line[..colon]).trim().to_string();
        let value = String::from_utf8_lossy(&line[colon + 1..])
            .trim()
            .to_string();
        Some((name, value))
    })
}

/// The head's headers as write_head would send them (without Date and Server), and the
/// override lines for Date or Server, which must stay overrides.
fn merged(headers: &[u8], overrides: &[u8]) -> (Vec<(String, String)>, Vec<u8>) {
    let over: Vec<(String, String)> = lines(overrides).collect();
    let special = |n: &str| n.eq_ignore_ascii_case("date") || n.eq_ignore_ascii_case("server");
    let mut list: Vec<(String, String)> = lines(headers)
        .filter(|(n, _)| !over.iter().any(|(o, _)| o.eq_ignore_ascii_case(n)))
        .collect();
    let mut kept = Vec::new();
    for (n, v) in over {
        if special(&n) {
            kept.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        } else {
            list.push((n, v));
        }
    }
    (list, kept)
}
