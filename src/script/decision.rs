//! Decisions: what a route function returns, and the Lua constructors that build them
//! (`static{}`, `fastcgi()`, `redirect()`, `respond()`, `deny()`).
//!
//! A constructor validates its arguments when it is called, so a mistake is reported at the
//! line that made it (`site.lua:7: redirect: status must be 301, 302, 303, 307 or 308`). The
//! result is an opaque userdata holding the Rust [`Decision`]; the router clones it out, so a
//! decision built once at config time can be returned by every request.

use std::path::PathBuf;

use mlua::{Lua, Table, UserData, Value};

use crate::http::chunked::is_tchar;

/// What to do with a request, as decided by the route function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Serve a file from `root` (the config's root when `None`).
    Static {
        /// Document root (absolute), or the default root.
        root: Option<PathBuf>,
        /// Extra response headers.
        headers: Vec<(String, String)>,
    },
    /// Pass the request to a FastCGI backend defined in the config.
    FastCgi {
        /// Name of the backend (known to the config).
        backend: String,
        /// SCRIPT_FILENAME, when the route chose one.
        script: Option<String>,
        /// PATH_INFO, when the route chose one.
        path_info: Option<String>,
        /// Extra FastCGI params, in name order.
        params: Vec<(String, String)>,
        /// Extra response headers.
        headers: Vec<(String, String)>,
    },
    /// Pass the request to an HTTP upstream defined in the config (`proxy(name, {...})`).
    Proxy {
        /// Name of the upstream (known to the config).
        upstream: String,
        /// The path sent instead of the request's (the query string is kept).
        path: Option<String>,
        /// Request headers set on the upstream request (each replaces the client's).
        headers: Vec<(String, String)>,
        /// The Host sent instead of the client's.
        host: Option<String>,
    },
    /// Answer with a redirect.
    Redirect {
        /// 301, 302, 303, 307 or 308.
        status: u16,
        /// The Location header value.
        location: String,
        /// Extra response headers.
        headers: Vec<(String, String)>,
    },
    /// Answer with this status and body.
    Respond {
        /// 200..=599.
        status: u16,
        /// The response body.
        body: Vec<u8>,
        /// Extra response headers.
        headers: Vec<(String, String)>,
    },
    /// Refuse the request with an error status.
    Deny {
        /// 400..=599.
        status: u16,
        /// Extra response headers.
        headers: Vec<(String, String)>,
    },
    /// Answer with the status page (`status()`, see `src/status_page.rs`).
    Status,
    /// The route function returned nil: use the config's default rules.
    FallThrough,
    /// Require a user of the config's `basic_auth{}` helper number `rule` (401 otherwise),
    /// then carry out `then`.
    Auth {
        /// Index of the helper in `Config::route_auth`.
        rule: usize,
        /// What to do once the user is known (`FallThrough`: the default rules).
        then: Box<Decision>,
    },
}

impl Decision {
    fn kind(&self) -> &'static str {
        match self {
            Decision::Static { .. } => "static",
            Decision::FastCgi { .. } => "fastcgi",
            Decision::Proxy { .. } => "proxy",
            Decision::Redirect { .. } => "redirect",
            Decision::Respond { .. } => "respond",
            Decision::Deny { .. } => "deny",
            Decision::Status => "status",
            Decision::FallThrough => "fallthrough",
            Decision::Auth { .. } => "basic_auth",
        }
    }
}

/// The Lua face of a decision.
pub(super) struct DecisionUd(pub(super) Decision);

impl UserData for DecisionUd {
    fn add_methods<M: mlua::UserDataMethods<Self>>(methods: &mut M) {
        methods.add_meta_method(mlua::MetaMethod::ToString, |_, this, ()| {
            Ok(format!("decision: {}", this.0.kind()))
        });
    }
}

/// Response header names the server owns: a route may not set them, as they frame the message.
const RESERVED_HEADERS: &[&str] = &["content-length", "transfer-encoding", "connection"];

/// Defines the decision constructors as globals of `lua`: `static`, `redirect`, `respond`,
/// `deny` and, unless `with_fastcgi` is false, `fastcgi`.
///
/// At config time the config's own `fastcgi "name" {...}` (the backend definition) owns the
/// name `fastcgi`; it can hand two-argument calls to [`fastcgi_decision`].
pub fn install_decisions(lua: &Lua, with_fastcgi: bool) -> mlua::Result<()> {
    let g = lua.globals();
    for pair in constructors(lua)?.pairs::<String, Value>() {
        let (k, v) = pair?;
        if with_fastcgi || k != "fastcgi" {
            g.set(k, v)?;
        }
    }
    Ok(())
}

/// A table of the five decision constructors, by name.
pub(super) fn constructors(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.raw_set("static", lua.create_function(static_)?)?;
    t.raw_set("redirect", lua.create_function(redirect)?)?;
    t.raw_set("respond", lua.create_function(respond)?)?;
    t.raw_set("deny", lua.create_function(deny)?)?;
    t.raw_set("proxy", lua.create_function(proxy)?)?;
    t.raw_set(
        "status",
        lua.create_function(|_, ()| Ok(DecisionValue(Decision::Status, None)))?,
    )?;
    t.raw_set(
        "fastcgi",
        lua.create_function(|lua, (name, opts): (Value, Value)| fastcgi_decision(lua, name, opts))?,
    )?;
    super::respond_fast::install(lua, &t)?;
    Ok(t)
}

/// `fastcgi(name, { script = ..., path_info = ..., params = {...}, headers = {...} })`: a
/// FastCGI decision. The backend name is checked against the config when the route returns it.
pub fn fastcgi_decision(lua: &Lua, name: Value, opts: Value) -> mlua::Result<DecisionValue> {
    let what = "fastcgi";
    let backend = match name {
        Value::String(s) => s.to_str()?.to_string(),
        other => {
            return Err(fail(
                lua,
                what,
                format!("expects a backend name, got {}", other.type_name()),
            ))
        }
    };
    if let Some(names) = lua.app_data_ref::<super::BackendNames>() {
        if !names.0.contains(&backend) {
            return Err(fail(lua, what, format!("unknown backend '{backend}'")));
        }
    }
    let mut script = None;
    let mut path_info = None;
    let mut params = Vec::new();
    let mut headers = Vec::new();
    if let Some(t) = opt_table(lua, what, opts)? {
        for pair in t.pairs::<Value, Value>() {
            let (k, v) = pair?;
            match key(&k) {
                Some("script") => script = Some(text(lua, what, "script", v)?),
                Some("path_info") => path_info = Some(text(lua, what, "path_info", v)?),
                Some("params") => params = string_map(lua, what, "params", v, false)?,
                Some("headers") => headers = header_list(lua, what, v)?,
                _ => return Err(unknown_field(lua, what, &k)),
            }
        }
    }
    Ok(DecisionValue(
        Decision::FastCgi {
            backend,
            script,
            path_info,
            params,
            headers,
        },
        None,
    ))
}

/// A decision on its way into Lua.
pub struct DecisionValue(Decision, Option<mlua::String>);

impl mlua::IntoLua for DecisionValue {
    fn into_lua(self, lua: &Lua) -> mlua::Result<Value> {
        let ud = lua.create_userdata(DecisionUd(self.0))?;
        if let Some(body) = self.1 {
            ud.set_user_value(body)?;
        }
        Ok(Value::UserData(ud))
    }
}

/// The decision of the `basic_auth{}` helper number `rule` called with `inner` (a decision,
/// or nil for the default rules): authenticate, then `inner`.
pub fn auth_decision(lua: &Lua, rule: usize, inner: Value) -> mlua::Result<DecisionValue> {
    let then = match inner {
        Value::Nil => Decision::FallThrough,
        Value::UserData(ud) => decision_of(lua, &ud)
            .ok_or_else(|| fail(lua, "basic_auth", "expects a decision or nil"))?,
        other => {
            return Err(fail(
                lua,
                "basic_auth",
                format!("expects a decision or nil, got {}", other.type_name()),
            ))
        }
    };
    Ok(DecisionValue(
        Decision::Auth {
            rule,
            then: Box::new(then),
        },
        None,
    ))
}

/// The decision a userdata holds, with a `respond` body taken from its user value.
///
/// A `respond` body stays a Lua string (the userdata's user value), not a Rust copy: a
/// decision built per request is then garbage the Lua collector sees at its real size (a
/// 10 KB body copied into Rust looked like a 100-byte userdata, and millions piled up before
/// a collection), and a body built once is shared, not copied, by every decision.
pub(super) fn decision_of(lua: &Lua, ud: &mlua::AnyUserData) -> Option<Decision> {
    let Ok(held) = ud.borrow::<DecisionUd>() else {
        return super::respond_fast::of(lua, ud);
    };
    let mut d = held.0.clone();
    if let Decision::Respond { body, .. } = &mut d {
        if let Ok(Some(s)) = ud.user_value::<Option<mlua::String>>() {
            *body = s.as_bytes().to_vec();
        }
    }
    Some(d)
}

/// Request header names the proxy owns: framing, hop-by-hop and Host (set with `host`).
const PROXY_OWNED: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
    "host",
];

/// `proxy(name, { path = ..., headers = {...}, host = ... })`: a reverse-proxy decision. The
/// upstream name is checked against the config when the route returns it.
fn proxy(lua: &Lua, (name, opts): (Value, Value)) -> mlua::Result<DecisionValue> {
    let what = "proxy";
    let upstream = match name {
        Value::String(s) => s.to_str()?.to_string(),
        other => {
            return Err(fail(
                lua,
                what,
                format!("expects an upstream name, got {}", other.type_name()),
            ))
        }
    };
    if let Some(names) = lua.app_data_ref::<super::UpstreamNames>() {
        if !names.0.contains(&upstream) {
            return Err(fail(lua, what, format!("unknown upstream '{upstream}'")));
        }
    }
    let mut path = None;
    let mut headers = Vec::new();
    let mut host = None;
    if let Some(t) = opt_table(lua, what, opts)? {
        for pair in t.pairs::<Value, Value>() {
            let (k, v) = pair?;
            match key(&k) {
                Some("path") => {
                    let p = text(lua, what, "path", v)?;
                    if !p.starts_with('/') || p.bytes().any(|b| b <= b' ' || b == 0x7f) {
                        return Err(fail(
                            lua,
                            what,
                            "path must start with '/' and hold no spaces or control characters",
                        ));
                    }
                    path = Some(p);
                }
                Some("host") => {
                    let h = text(lua, what, "host", v)?;
                    if h.is_empty() || h.bytes().any(|b| b <= b' ' || b == 0x7f) {
                        return Err(fail(
                            lua,
                            what,
                            "host must be non-empty, without spaces or control characters",
                        ));
                    }
                    host = Some(h);
                }
                Some("headers") => {
                    let list = string_map(lua, what, "headers", v, true)?;
                    for (name, value) in &list {
                        if name.is_empty() || !name.bytes().all(is_tchar) {
                            return Err(fail(
                                lua,
                                what,
                                format!("header name {name:?} is not a token"),
                            ));
                        }
                        if PROXY_OWNED.iter().any(|r| name.eq_ignore_ascii_case(r)) {
                            return Err(fail(
                                lua,
                                what,
                                format!(
                                    "header '{name}' is set by the proxy (use host = ... for Host)"
                                ),
                            ));
                        }
                        if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                            return Err(fail(
                                lua,
                                what,
                                format!("header '{name}' value contains CR, LF or NUL"),
                            ));
                        }
                    }
                    headers = list;
                }
                _ => return Err(unknown_field(lua, what, &k)),
            }
        }
    }
    Ok(DecisionValue(
        Decision::Proxy {
            upstream,
            path,
            headers,
            host,
        },
        None,
    ))
}

fn static_(lua: &Lua, opts: Value) -> mlua::Result<DecisionValue> {
    let what = "static";
    let mut root = None;
    let mut headers = Vec::new();
    if let Some(t) = opt_table(lua, what, opts)? {
        for pair in t.pairs::<Value, Value>() {
            let (k, v) = pair?;
            match key(&k) {
                Some("root") => {
                    let r = text(lua, what, "root", v)?;
                    if !r.starts_with('/') {
                        return Err(fail(lua, what, "root must be an absolute path"));
                    }
                    root = Some(PathBuf::from(r));
                }
                Some("headers") => headers = header_list(lua, what, v)?,
                _ => return Err(unknown_field(lua, what, &k)),
            }
        }
    }
    Ok(DecisionValue(Decision::Static { root, headers }, None))
}

fn redirect(
    lua: &Lua,
    (status, location, hdrs): (Value, Value, Value),
) -> mlua::Result<DecisionValue> {
    let what = "redirect";
    let status = status_arg(lua, what, status, None)?;
    if !matches!(status, 301 | 302 | 303 | 307 | 308) {
        return Err(fail(lua, what, "status must be 301, 302, 303, 307 or 308"));
    }
    let location = text(lua, what, "location", location)?;
    if location.is_empty() || location.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(fail(
            lua,
            what,
            "location must be non-empty, without control characters",
        ));
    }
    let headers = header_list(lua, what, hdrs)?;
    Ok(DecisionValue(
        Decision::Redirect {
            status,
            location,
            headers,
        },
        None,
    ))
}

fn respond(lua: &Lua, (status, body, hdrs): (Value, Value, Value)) -> mlua::Result<DecisionValue> {
    let what = "respond";
    let status = status_arg(lua, what, status, None)?;
    if !(200..=599).contains(&status) {
        return Err(fail(lua, what, "status must be in 200..599"));
    }
    let body = match body {
        Value::Nil => None,
        Value::String(s) => Some(s),
        Value::Integer(_) | Value::Number(_) => Some(lua.create_string(body.to_string()?)?),
        other => {
            return Err(fail(
                lua,
                what,
                format!("body must be a string, got {}", other.type_name()),
            ))
        }
    };
    let body = body.filter(|b| !b.as_bytes().is_empty());
    if body.is_some() && matches!(status, 204 | 304) {
        return Err(fail(
            lua,
            what,
            format!("status {status} cannot have a body"),
        ));
    }
    let headers = header_list(lua, what, hdrs)?;
    Ok(DecisionValue(
        Decision::Respond {
            status,
            body: Vec::new(),
            headers,
        },
        body,
    ))
}

fn deny(lua: &Lua, (status, hdrs): (Value, Value)) -> mlua::Result<DecisionValue> {
    let what = "deny";
    let status = status_arg(lua, what, status, Some(403))?;
    if !(400..=599).contains(&status) {
        return Err(fail(lua, what, "status must be in 400..599"));
    }
    let headers = header_list(lua, what, hdrs)?;
    Ok(DecisionValue(Decision::Deny { status, headers }, None))
}

fn status_arg(lua: &Lua, what: &str, v: Value, default: Option<u16>) -> mlua::Result<u16> {
    let n = match v {
        Value::Nil => default,
        Value::Integer(i) => u16::try_from(i).ok(),
        Value::Number(f) if f.fract() == 0.0 && (0.0..=65535.0).contains(&f) => Some(f as u16),
        _ => None,
    };
    n.ok_or_else(|| fail(lua, what, "expects an integer status"))
}

fn opt_table(lua: &Lua, what: &str, v: Value) -> mlua::Result<Option<Table>> {
    match v {
        Value::Nil => Ok(None),
        Value::Table(t) => Ok(Some(t)),
        other => Err(fail(
            lua,
            what,
            format!("expects a table of options, got {}", other.type_name()),
        )),
    }
}

fn key(k: &Value) -> Option<&str> {
    match k {
        Value::String(s) => {
            // Field names we accept are ASCII; anything else is unknown.
            let b = s.as_bytes();
            match &*b {
                b"root" => Some("root"),
                b"headers" => Some("headers"),
                b"script" => Some("script"),
                b"path_info" => Some("path_info"),
                b"params" => Some("params"),
                b"path" => Some("path"),
                b"host" => Some("host"),
                _ => None,
            }
        }
        _ => None,
    }
}

fn unknown_field(lua: &Lua, what: &str, k: &Value) -> mlua::Error {
    let name = match k {
        Value::String(s) => s.to_string_lossy(),
        other => other.type_name().to_string(),
    };
    fail(lua, what, format!("unknown field '{name}'"))
}

/// A string (numbers are turned into text) without NUL.
fn text(lua: &Lua, what: &str, field: &str, v: Value) -> mlua::Result<String> {
    let s = match &v {
        Value::String(s) => s
            .to_str()
            .map(|s| s.to_string())
            .map_err(|_| fail(lua, what, format!("{field} must be valid UTF-8")))?,
        Value::Integer(_) | Value::Number(_) => v.to_string()?,
        other => {
            return Err(fail(
                lua,
                what,
                format!("{field} must be a string, got {}", other.type_name()),
            ))
        }
    };
    if s.contains('\0') {
        return Err(fail(lua, what, format!("{field} contains NUL")));
    }
    Ok(s)
}

/// A table of name → string, sorted by name. With `as_headers`, a value may also be a list of
/// strings (one header line each).
fn string_map(
    lua: &Lua,
    what: &str,
    field: &str,
    v: Value,
    as_headers: bool,
) -> mlua::Result<Vec<(String, String)>> {
    let t = match v {
        Value::Nil => return Ok(Vec::new()),
        Value::Table(t) => t,
        other => {
            return Err(fail(
                lua,
                what,
                format!("{field} must be a table, got {}", other.type_name()),
            ))
        }
    };
    let mut out = Vec::new();
    // Header names are case-insensitive: two keys naming one header would send it twice.
    let mut seen: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    for pair in t.pairs::<Value, Value>() {
        let (k, v) = pair?;
        let name = match &k {
            Value::String(_) => text(lua, what, field, k)?,
            other => {
                return Err(fail(
                    lua,
                    what,
                    format!("{field} names must be strings, got {}", other.type_name()),
                ))
            }
        };
        if as_headers {
            if let Some(prev) = seen.insert(name.to_ascii_lowercase(), name.clone()) {
                return Err(fail(
                    lua,
                    what,
                    format!(
                        "{field} sets '{prev}' and '{name}': header names are case-insensitive,                          set each once (a list of strings sends several lines)"
                    ),
                ));
            }
        }
        match v {
            Value::Table(list) if as_headers => {
                let n = list.raw_len();
                let keys = list.pairs::<Value, Value>().count();
                if n == 0 || keys != n {
                    return Err(fail(
                        lua,
                        what,
                        format!(
                            "{field}['{name}'] must be a string or a non-empty list of strings"
                        ),
                    ));
                }
                for item in list.sequence_values::<Value>() {
                    let item = text(lua, what, &format!("{field}['{name}']"), item?)?;
                    out.push((name.clone(), item));
                }
            }
            v => {
                let value = text(lua, what, &format!("{field}['{name}']"), v)?;
                out.push((name, value));
            }
        }
    }
    crate::sort_compact::sort_by(&mut out, |a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Response headers: token names (not server-owned ones), values without CR, LF or NUL.
fn header_list(lua: &Lua, what: &str, v: Value) -> mlua::Result<Vec<(String, String)>> {
    let list = string_map(lua, what, "headers", v, true)?;
    for (name, value) in &list {
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return Err(fail(
                lua,
                what,
                format!("header name {name:?} is not a token"),
            ));
        }
        if RESERVED_HEADERS
            .iter()
            .any(|r| name.eq_ignore_ascii_case(r))
        {
            return Err(fail(
                lua,
                what,
                format!("header '{name}' is set by the server"),
            ));
        }
        if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(fail(
                lua,
                what,
                format!("header '{name}' value contains CR, LF or NUL"),
            ));
        }
    }
    Ok(list)
}

/// A Lua error positioned at the Lua code that called the constructor.
fn fail(lua: &Lua, what: &str, msg: impl std::fmt::Display) -> mlua::Error {
    let pos = caller(lua).map(|p| format!("{p}: ")).unwrap_or_default();
    mlua::Error::RuntimeError(format!("{pos}{what}: {msg}"))
}

/// `file:line` of the nearest Lua frame calling into Rust.
pub(super) fn caller(lua: &Lua) -> Option<String> {
    for level in 1..32 {
        let d = lua.inspect_stack(level)?;
        let line = d.curr_line();
        if line > 0 {
            let src = d.source();
            let file = match src.source.as_deref() {
                Some(s) if s.starts_with('@') || s.starts_with('=') => s[1..].to_string(),
                _ => src.short_src.as_deref().unwrap_or("?").to_string(),
            };
            return Some(format!("{file}:{line}"));
        }
    }
    None
}
