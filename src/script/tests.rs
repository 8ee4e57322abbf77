//! Unit tests of the route sandbox, without sockets: the state is built like the config builds
//! it (a chunk named "@site.lua" calling a `route` global).

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use mlua::{Function, Lua, RegistryKey};

use super::*;
use crate::http::request::{parse, Request};

pub(super) fn state(src: &str) -> (Lua, RegistryKey) {
    let lua = Lua::new();
    let slot: Rc<RefCell<Option<RegistryKey>>> = Rc::default();
    let s = slot.clone();
    let route = lua
        .create_function(move |lua, f: Function| {
            *s.borrow_mut() = Some(lua.create_registry_value(f)?);
            Ok(())
        })
        .unwrap();
    lua.globals().set("route", route).unwrap();
    install_decisions(&lua, true).unwrap();
    lua.load(src).set_name("@site.lua").exec().unwrap();
    let key = slot.borrow_mut().take().expect("route() called");
    (lua, key)
}

pub(super) fn router_with(src: &str, limits: RouterLimits) -> Router {
    let (lua, key) = state(src);
    Router::new(&lua, &key, ["app", "php"], limits).unwrap()
}

pub(super) fn router(src: &str) -> Router {
    router_with(src, RouterLimits::default())
}

pub(super) fn request(head: &str) -> Request {
    parse(head.as_bytes(), 65536).unwrap().unwrap()
}

const GET: &str = "GET /index.html HTTP/1.1\r\nHost: example.com\r\n\r\n";

/// `req` as the tests' client sends it: from 192.0.2.7:40000 to 127.0.0.1:8080, over http.
pub(super) fn route_request(req: &Request) -> RouteRequest<'_> {
    RouteRequest {
        req,
        remote_addr: "192.0.2.7",
        remote_port: 40000,
        listener: "127.0.0.1:8080",
        scheme: "http",
    }
}

pub(super) fn call_head(r: &mut Router, head: &str) -> Result<Decision, RouteError> {
    let req = request(head);
    r.route(&route_request(&req))
}

pub(super) fn call(r: &mut Router) -> Result<Decision, RouteError> {
    call_head(r, GET)
}

pub(super) fn respond_body(d: Decision) -> String {
    match d {
        Decision::Respond { body, .. } => String::from_utf8(body).unwrap(),
        other => panic!("expected respond, got {other:?}"),
    }
}

/// A router whose route evaluates `expr` and answers it as the body.
pub(super) fn eval(expr: &str) -> Router {
    router(&format!(
        "route(function(req) return respond(200, tostring({expr})) end)"
    ))
}

fn eval_head(expr: &str, head: &str) -> String {
    respond_body(call_head(&mut eval(expr), head).unwrap())
}

pub(super) fn hdrs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// Asserts a failure of `kind` and that the router still answers afterwards.
pub(super) fn fails_then_recovers(
    src_prefix: &str,
    bad_head: &str,
    kind: RouteErrorKind,
) -> RouteError {
    fails_then_recovers_with(src_prefix, bad_head, kind, RouterLimits::default())
}

pub(super) fn fails_then_recovers_with(
    body: &str,
    bad_head: &str,
    kind: RouteErrorKind,
    limits: RouterLimits,
) -> RouteError {
    let src = format!(
        "route(function(req)\n  if req.path == '/bad' then\n{body}\n  end\n  return respond(200, 'fine')\nend)"
    );
    let mut r = router_with(&src, limits);
    let e = call_head(&mut r, bad_head).unwrap_err();
    assert_eq!(e.kind, kind, "{e}");
    for _ in 0..3 {
        assert_eq!(respond_body(call(&mut r).unwrap()), "fine");
    }
    e
}

/// Limits with only a deadline: no instruction cap, the default memory.
pub(super) fn deadline_only(deadline: Duration) -> RouterLimits {
    RouterLimits {
        instructions: u64::MAX,
        deadline,
        ..RouterLimits::default()
    }
}

pub(super) const BAD: &str = "GET /bad HTTP/1.1\r\nHost: example.com\r\n\r\n";

#[test]
fn the_contract_example() {
    let src = r#"
route(function(req)
  if req.path:find("^/api/") then return fastcgi("app", { script = "/srv/api/index.php" }) end
  if req.host == "old.example" then return redirect(301, "https://new.example" .. req.uri) end
  if req.path == "/health" then return respond(200, "ok\n", { ["content-type"] = "text/plain" }) end
  if req.headers["x-debug"] then return deny(403) end
  if req.path == "/other" then
    return static { root = "/srv/other", headers = { ["cache-control"] = "max-age=60" } }
  end
end)"#;
    let mut r = router(src);
    let d = call_head(&mut r, "GET /api/x HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    assert_eq!(
        d,
        Decision::FastCgi {
            backend: "app".into(),
            script: Some("/srv/api/index.php".into()),
            path_info: None,
            params: vec![],
            headers: vec![],
        }
    );
    let d = call_head(&mut r, "GET /p?q=1 HTTP/1.1\r\nHost: old.example\r\n\r\n").unwrap();
    assert_eq!(
        d,
        Decision::Redirect {
            status: 301,
            location: "https://new.example/p?q=1".into(),
            headers: vec![],
        }
    );
    let d = call_head(&mut r, "GET /health HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    assert_eq!(
        d,
        Decision::Respond {
            status: 200,
            body: b"ok\n".to_vec(),
            headers: hdrs(&[("content-type", "text/plain")]),
        }
    );
    let d = call_head(&mut r, "GET /x HTTP/1.1\r\nHost: a\r\nX-Debug: 1\r\n\r\n").unwrap();
    assert_eq!(
        d,
        Decision::Deny {
            status: 403,
            headers: vec![]
        }
    );
    let d = call_head(&mut r, "GET /other HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    assert_eq!(
        d,
        Decision::Static {
            root: Some(PathBuf::from("/srv/other")),
            headers: hdrs(&[("cache-control", "max-age=60")]),
        }
    );
    assert_eq!(call(&mut r).unwrap(), Decision::FallThrough);
}

#[test]
fn decision_details() {
    let mut r = router(
        r#"route(function(req)
  local p = req.path
  if p == "/s" then return static() end
  if p == "/f" then
    return fastcgi("php", { path_info = "/x", params = { B = "2", A = "1" },
                            headers = { ["set-cookie"] = { "a=1", "b=2" } } })
  end
  if p == "/r" then return redirect(308, "/new", { ["x-why"] = "moved" }) end
  if p == "/d" then return deny() end
  if p == "/d5" then return deny(503, { ["retry-after"] = 10 }) end
  if p == "/204" then return respond(204) end
end)"#,
    );
    let at =
        |r: &mut Router, p: &str| call_head(r, &format!("GET {p} HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert_eq!(
        at(&mut r, "/s").unwrap(),
        Decision::Static {
            root: None,
            headers: vec![]
        }
    );
    assert_eq!(
        at(&mut r, "/f").unwrap(),
        Decision::FastCgi {
            backend: "php".into(),
            script: None,
            path_info: Some("/x".into()),
            params: hdrs(&[("A", "1"), ("B", "2")]),
            headers: hdrs(&[("set-cookie", "a=1"), ("set-cookie", "b=2")]),
        }
    );
    assert_eq!(
        at(&mut r, "/r").unwrap(),
        Decision::Redirect {
            status: 308,
            location: "/new".into(),
            headers: hdrs(&[("x-why", "moved")]),
        }
    );
    assert_eq!(
        at(&mut r, "/d").unwrap(),
        Decision::Deny {
            status: 403,
            headers: vec![]
        }
    );
    assert_eq!(
        at(&mut r, "/d5").unwrap(),
        Decision::Deny {
            status: 503,
            headers: hdrs(&[("retry-after", "10")]),
        }
    );
    assert_eq!(
        at(&mut r, "/204").unwrap(),
        Decision::Respond {
            status: 204,
            body: vec![],
            headers: vec![]
        }
    );
}

#[test]
fn config_time_decision_is_reused() {
    let mut r = router("local ok = respond(200, 'cached')\nroute(function(req) return ok end)");
    for _ in 0..3 {
        assert_eq!(respond_body(call(&mut r).unwrap()), "cached");
    }
}

#[test]
fn config_time_decision_with_unknown_backend_is_refused_when_returned() {
    let mut r = router("local d = fastcgi('nope')\nroute(function(req) return d end)");
    let e = call(&mut r).unwrap_err();
    assert_eq!(e.kind, RouteErrorKind::BadDecision);
    assert!(e.message.contains("unknown backend 'nope'"), "{e}");
}

#[test]
fn request_fields() {
    let head = "POST /a%20b/c?x=1&y=two+words HTTP/1.1\r\nHost: Example.COM:8080\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(eval_head("req.method", head), "POST");
    assert_eq!(eval_head("req.path", head), "/a b/c");
    assert_eq!(eval_head("req.raw_path", head), "/a%20b/c");
    assert_eq!(eval_head("req.query", head), "x=1&y=two+words");
    assert_eq!(eval_head("req.uri", head), "/a%20b/c?x=1&y=two+words");
    assert_eq!(eval_head("req.version", head), "HTTP/1.1");
    assert_eq!(eval_head("req.host", head), "example.com");
    assert_eq!(eval_head("req.scheme", head), "http");
    assert_eq!(eval_head("req.remote_addr", head), "192.0.2.7");
    assert_eq!(eval_head("req.remote_port", head), "40000");
    assert_eq!(eval_head("math.type(req.remote_port)", head), "integer");
    assert_eq!(eval_head("req.listener", head), "127.0.0.1:8080");
    assert_eq!(eval_head("req.query", GET), "nil");
    assert_eq!(
        eval_head("req.host", "GET / HTTP/1.0\r\n\r\n"),
        "nil",
        "no Host on HTTP/1.0"
    );
    assert_eq!(
        eval_head("req.version", "GET / HTTP/1.0\r\n\r\n"),
        "HTTP/1.0"
    );
}

#[test]
fn unknown_request_field_is_an_error() {
    let e = fails_then_recovers("return respond(200, req.paht)", BAD, RouteErrorKind::Lua);
    assert!(e.message.contains("req has no field 'paht'"), "{e}");
    assert_eq!(e.location.as_deref(), Some("site.lua:3"), "{e}");
}

#[test]
fn headers_are_case_insensitive_and_joined() {
    let head = "GET / HTTP/1.1\r\nHost: a\r\nX-Debug: yes\r\nAccept: a/b\r\naccept: c/d\r\nACCEPT: e/f\r\n\r\n";
    assert_eq!(eval_head(r#"req.headers["X-Debug"]"#, head), "yes");
    assert_eq!(eval_head(r#"req.headers["x-debug"]"#, head), "yes");
    assert_eq!(eval_head(r#"req.headers["X-DEBUG"]"#, head), "yes");
    assert_eq!(eval_head("req.headers.accept", head), "a/b, c/d, e/f");
    assert_eq!(eval_head("req.headers.missing", head), "nil");
    assert_eq!(eval_head("req.headers[1]", head), "nil");
    let listed =
        "(function() local t = {} for k, v in pairs(req.headers) do t[#t+1] = k .. '=' .. v end \
                  table.sort(t) return table.concat(t, ';') end)()";
    assert_eq!(
        eval_head(listed, head),
        "accept=a/b, c/d, e/f;host=a;x-debug=yes"
    );
}

/// Header values kept for the next request (the string cache) are pushed again only when the
/// bytes are the same: one router, requests whose headers change, stay and share cache slots
/// (more names than slots, so some collide), each answered with its own values.
#[test]
fn header_values_are_never_those_of_another_request() {
    let names = [
        "user-agent",
        "accept",
        "x-a",
        "x-b",
        "x-c",
        "x-d",
        "x-e",
        "x-f",
        "x-g",
        "x-h",
        "cookie",
    ];
    let expr = names
        .iter()
        .map(|n| format!("tostring(req.headers['{n}'])"))
        .collect::<Vec<_>>()
        .join(" .. '|' .. ");
    let mut r = router(&format!(
        "route(function(req) return respond(200, {expr}) end)"
    ));
    for round in 0..6 {
        let mut head = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
        let mut want = Vec::new();
        for (i, n) in names.iter().enumerate() {
            // Some values stay from one request to the next, others change, some are absent.
            match (i + round) % 3 {
                0 => want.push(format!("{n}-same")),
                1 => want.push(format!("{n}-{round}")),
                _ => {
                    want.push("nil".to_string());
                    continue;
                }
            }
            head.push_str(&format!("{n}: {}\r\n", want[i]));
        }
        head.push_str("\r\n");
        assert_eq!(
            respond_body(call_head(&mut r, &head).unwrap()),
            want.join("|"),
            "round {round}"
        );
    }
}

#[test]
fn query_arguments_are_decoded() {
    let head =
        "GET /?q=hello+world&e=%E2%82%AC&flag&a=1&a=2&sp%20ace=x HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_eq!(eval_head("req:arg('q')", head), "hello world");
    assert_eq!(eval_head("req:arg('e')", head), "€");
    assert_eq!(eval_head("req:arg('flag')", head), "");
    assert_eq!(eval_head("req:arg('a')", head), "1");
    assert_eq!(eval_head("req:arg('sp ace')", head), "x");
    assert_eq!(eval_head("req:arg('none')", head), "nil");
    assert_eq!(eval_head("req:arg('q')", GET), "nil");
    // A number names the argument by its text; any other type is an error.
    let head = "GET /?1=one&2.5=x HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_eq!(eval_head("req:arg(1)", head), "one");
    assert_eq!(eval_head("req:arg(2.5)", head), "x");
    assert_eq!(eval_head("req[1]", head), "nil");
}

#[test]
fn an_argument_name_that_is_not_a_string_is_an_error() {
    let e = fails_then_recovers("return respond(200, req:arg({}))", BAD, RouteErrorKind::Lua);
    assert!(
        e.message.contains("req:arg(name): name must be a string"),
        "{e}"
    );
}

#[test]
fn request_is_read_only() {
    let e = fails_then_recovers("req.path = '/x'", BAD, RouteErrorKind::Lua);
    assert!(e.message.contains("req is read-only"), "{e}");
    let e = fails_then_recovers("req.headers['x'] = '1'", BAD, RouteErrorKind::Lua);
    assert!(e.message.contains("req.headers is read-only"), "{e}");
    let e = fails_then_recovers("req.new_field = 1", BAD, RouteErrorKind::Lua);
    assert!(e.message.contains("read-only"), "{e}");
}

#[test]
fn request_outside_its_call_is_an_error_not_a_crash() {
    // Keeping req in an upvalue and reading it later sees the later request; Rust code reading
    // it between calls gets an error.
    let (lua, key) = state("local last\nroute(function(req) last = req return nil end)\nfunction peek() return last.path end");
    let peek: Function = lua.globals().get("peek").unwrap();
    let mut r = Router::new(&lua, &key, ["app"], RouterLimits::default()).unwrap();
    assert_eq!(call(&mut r).unwrap(), Decision::FallThrough);
    let e = peek.call::<String>(()).unwrap_err();
    assert!(
        e.to_string().contains("only available during a route call"),
        "{e}"
    );
}

#[test]
fn assigning_a_global_is_an_error() {
    let e = fails_then_recovers("counter = 1", BAD, RouteErrorKind::Lua);
    assert!(
        e.message
            .contains("assignment to undeclared global 'counter'"),
        "{e}"
    );
    assert_eq!(e.location.as_deref(), Some("site.lua:3"));
    // Reading an undeclared global is fine.
    assert_eq!(
        respond_body(call(&mut eval("type(undeclared)")).unwrap()),
        "nil"
    );
    // Globals the config defined may be read but not replaced either.
    let mut r = router("limit = 3\nroute(function(req) return respond(200, tostring(limit)) end)");
    assert_eq!(respond_body(call(&mut r).unwrap()), "3");
}

/// Per-worker state lives in upvalues of the config, on purpose: it survives across calls.
#[test]
fn upvalues_keep_per_worker_state() {
    let mut r = router(
        "local hits = 0\nroute(function(req) hits = hits + 1 return respond(200, tostring(hits)) end)",
    );
    assert_eq!(respond_body(call(&mut r).unwrap()), "1");
    assert_eq!(respond_body(call(&mut r).unwrap()), "2");
    assert_eq!(respond_body(call(&mut r).unwrap()), "3");
}

#[test]
fn runtime_error_has_file_line_and_traceback() {
    let src = "local function helper(x)\n  return x.y.z\nend\nroute(function(req)\n  if req.path == '/bad' then local r = helper({}) return r end\n  return respond(200, 'fine')\nend)";
    let mut r = router(src);
    let e = call_head(&mut r, BAD).unwrap_err();
    assert_eq!(e.kind, RouteErrorKind::Lua);
    assert_eq!(e.location.as_deref(), Some("site.lua:2"), "{e}");
    assert!(e.message.contains("attempt to index"), "{e}");
    let tb = e.traceback.as_deref().unwrap_or_default();
    assert!(tb.contains("site.lua:5"), "{tb}");
    let shown = e.to_string();
    assert!(!shown.contains('\n'), "one paragraph: {shown}");
    assert!(
        shown.starts_with("route: Lua error at site.lua:2: "),
        "{shown}"
    );
    assert_eq!(respond_body(call(&mut r).unwrap()), "fine");
}

#[test]
fn error_with_explicit_call() {
    let e = fails_then_recovers("error('nope')", BAD, RouteErrorKind::Lua);
    assert_eq!(e.location.as_deref(), Some("site.lua:3"));
    assert_eq!(e.message, "nope");
}

#[test]
fn runaway_loop_is_stopped_by_the_instruction_budget() {
    let limits = RouterLimits {
        deadline: Duration::from_secs(60),
        ..RouterLimits::default()
    };
    let e = fails_then_recovers_with(
        "while true do end",
        BAD,
        RouteErrorKind::Instructions,
        limits,
    );
    assert_eq!(e.location.as_deref(), Some("site.lua:3"), "{e}");
    // pcall does not catch the stop.
    let e = fails_then_recovers_with(
        "while true do pcall(function() while true do end end) end",
        BAD,
        RouteErrorKind::Instructions,
        limits,
    );
    assert!(e.to_string().contains("instruction"), "{e}");
    let e = fails_then_recovers_with(
        "while true do xpcall(function() while true do end end, function(m) return m end) end",
        BAD,
        RouteErrorKind::Instructions,
        limits,
    );
    assert!(e.to_string().contains("instruction"), "{e}");
}

#[test]
fn deadline_is_enforced() {
    let limits = deadline_only(Duration::from_millis(5));
    let e = fails_then_recovers_with(
        "local s = ''\n    while true do s = string.upper(string.sub('abcdef' .. s, 1, 8)) end",
        BAD,
        RouteErrorKind::Deadline,
        limits,
    );
    assert!(e.to_string().contains("longer than 5 ms"), "{e}");
}

#[test]
fn memory_bomb_is_stopped_and_the_state_survives() {
    let limits = RouterLimits {
        memory: 16 * 1024 * 1024,
        ..RouterLimits::default()
    };
    // One big allocation in C…
    let e = fails_then_recovers_with(
        "return respond(200, string.rep('x', 64 * 1024 * 1024))",
        BAD,
        RouteErrorKind::Memory,
        limits,
    );
    assert!(e.to_string().contains("memory"), "{e}");
    // …and many small ones kept alive in Lua.
    let limits = RouterLimits {
        instructions: u64::MAX,
        deadline: Duration::from_secs(60),
        memory: 16 * 1024 * 1024,
    };
    fails_then_recovers_with(
        "local t = {}\n    for i = 1, math.huge do t[i] = { i } end",
        BAD,
        RouteErrorKind::Memory,
        limits,
    );
}

#[test]
fn bad_decisions_are_errors() {
    let cases = [
        ("return fastcgi('nope')", "unknown backend 'nope'"),
        (
            "return redirect(200, '/x')",
            "status must be 301, 302, 303, 307 or 308",
        ),
        ("return respond(99, 'x')", "status must be in 200..599"),
        ("return respond(700, 'x')", "status must be in 200..599"),
        ("return deny(200)", "status must be in 400..599"),
        ("return deny('x')", "expects an integer status"),
        (
            "return respond(200, 'x', { ['a\\r\\nb'] = '1' })",
            "is not a token",
        ),
        (
            "return respond(200, 'x', { ['x-a'] = 'a\\r\\nb' })",
            "CR, LF or NUL",
        ),
        (
            "return respond(200, 'x', { ['x-a'] = 'a\\0b' })",
            "contains NUL",
        ),
        (
            "return respond(200, 'x', { ['content-length'] = '9' })",
            "set by the server",
        ),
        (
            "return redirect(302, 'https://x\\r\\nSet-Cookie: a=1')",
            "control characters",
        ),
        ("return static { root = 'relative' }", "absolute path"),
        ("return static { roots = '/srv' }", "unknown field 'roots'"),
        ("return static '/srv'", "expects a table"),
        ("return respond(204, 'body')", "cannot have a body"),
        // What respond_fast hands to the mlua `respond` raises there, at the caller's line.
        ("return respond(99)", "respond: status must be in 200..599"),
        (
            "return respond(200, {})",
            "respond: body must be a string, got table",
        ),
        (
            "return respond(200.5, 'x')",
            "respond: expects an integer status",
        ),
        (
            "return respond(200, 'x', 5)",
            "respond: headers must be a table, got integer",
        ),
    ];
    for (body, want) in cases {
        let e = fails_then_recovers(body, BAD, RouteErrorKind::Lua);
        assert!(e.message.contains(want), "{body}: {e}");
        assert_eq!(e.location.as_deref(), Some("site.lua:3"), "{body}: {e}");
    }
    let e = fails_then_recovers("return 'static'", BAD, RouteErrorKind::BadDecision);
    assert!(e.message.contains("returned a string"), "{e}");
    let e = fails_then_recovers("return {}", BAD, RouteErrorKind::BadDecision);
    assert!(e.message.contains("returned a table"), "{e}");
}

#[test]
fn sandbox_hides_dangerous_functions() {
    for expr in [
        "io",
        "os.execute",
        "os.exit",
        "os.remove",
        "os.rename",
        "load",
        "loadstring",
        "dofile",
        "loadfile",
        "require",
        "package",
        "debug",
        "string.dump",
        "('x').dump",
        "coroutine",
        "read_file",
        "exists",
        "include",
        "server",
    ] {
        assert_eq!(
            respond_body(call(&mut eval(&format!("type({expr})"))).unwrap()),
            "nil",
            "{expr}"
        );
    }
    for expr in [
        "os.time",
        "os.clock",
        "os.date",
        "os.getenv",
        "string.find",
        "math.floor",
        "utf8.char",
        "table.concat",
    ] {
        assert_eq!(
            respond_body(call(&mut eval(&format!("type({expr})"))).unwrap()),
            "function",
            "{expr}"
        );
    }
    assert_eq!(
        respond_body(call(&mut eval("type(collectgarbage('count'))")).unwrap()),
        "number"
    );
    let e = fails_then_recovers("collectgarbage('collect')", BAD, RouteErrorKind::Lua);
    assert!(e.message.contains("only \"count\""), "{e}");
    let e = fails_then_recovers("string.find = nil", BAD, RouteErrorKind::Lua);
    assert!(e.message.contains("read-only"), "{e}");
    let e = fails_then_recovers("setmetatable(_G, nil)", BAD, RouteErrorKind::Lua);
    assert!(e.message.contains("protected metatable"), "{e}");
    let e = fails_then_recovers(
        "setmetatable({}, { __gc = function() end })",
        BAD,
        RouteErrorKind::Lua,
    );
    assert!(e.message.contains("__gc"), "{e}");
    assert_eq!(
        respond_body(call(&mut eval("getmetatable('')")).unwrap()),
        "false"
    );
}

#[test]
fn config_captured_values_stay_reachable_to_config_code() {
    // The config is trusted: what it captured at load time remains its own choice.
    let mut r =
        router("local io = io\nroute(function(req) return respond(200, type(io.open)) end)");
    assert_eq!(respond_body(call(&mut r).unwrap()), "function");
}

#[test]
fn fall_through_on_nil() {
    let mut r = router("route(function(req) end)");
    assert_eq!(call(&mut r).unwrap(), Decision::FallThrough);
}

#[test]
fn prepare_sandbox_is_idempotent() {
    let (lua, key) = state("route(function(req) return respond(200, 'x') end)");
    prepare_sandbox(&lua).unwrap();
    prepare_sandbox(&lua).unwrap();
    let mut r = Router::new(&lua, &key, Vec::<String>::new(), RouterLimits::default()).unwrap();
    assert_eq!(respond_body(call(&mut r).unwrap()), "x");
}

/// Not a timed test: `cargo test --release -- --ignored --nocapture bench_three_matches`.
#[test]
#[ignore]
fn bench_three_matches() {
    let mut r = router(
        r#"route(function(req)
  local p = req.path
  if p:find("^/api/") then return fastcgi("app") end
  if p:find("^/admin/") then return deny(403) end
  if p:find("%.php$") then return fastcgi("php") end
end)"#,
    );
    let mut r2 = router(
        r#"route(function(req)
  if req.path:find("^/api/") then return fastcgi("app") end
  if req.path:find("^/admin/") then return deny(403) end
  if req.path:find("%.php$") then return fastcgi("php") end
end)"#,
    );
    let req =
        request("GET /static/style.css HTTP/1.1\r\nHost: example.com\r\nUser-Agent: bench\r\n\r\n");
    let rr = route_request(&req);
    for (name, r) in [("local p", &mut r), ("req.path x3", &mut r2)] {
        assert_eq!(r.route(&rr).unwrap(), Decision::FallThrough);
        let ns = best_of(r, &rr);
        println!("{name}: {ns} ns per route call (fall-through after three matches)");
    }
}

/// Cost of the pieces (not a timed test): `cargo test --release -- --ignored --nocapture bench_parts`.
#[test]
#[ignore]
fn bench_parts() {
    let req =
        request("GET /static/style.css HTTP/1.1\r\nHost: example.com\r\nUser-Agent: bench\r\n\r\n");
    let rr = route_request(&req);
    for (name, src) in [
        ("empty", "route(function(req) end)"),
        ("one field", "route(function(req) local p = req.path end)"),
        ("three fields", "route(function(req) local p = req.path local q = req.path local r = req.path end)"),
        ("three finds on a local", "local s = '/static/style.css' route(function(req) s:find('^/api/') s:find('^/admin/') s:find('%.php$') end)"),
        ("respond", "route(function(req) return respond(200, 'ok') end)"),
        ("header", "route(function(req) local h = req.headers['user-agent'] end)"),
    ] {
        let mut r = router(src);
        println!("{name}: {} ns", best_of(&mut r, &rr));
    }
}

/// The fastest of 20 rounds of 50,000 calls, in ns per call (the machine may be shared).
fn best_of(r: &mut Router, rr: &RouteRequest<'_>) -> u128 {
    let n = 50_000;
    (0..20)
        .map(|_| {
            let t = std::time::Instant::now();
            for _ in 0..n {
                let _ = r.route(rr);
            }
            t.elapsed().as_nanos() / n
        })
        .min()
        .unwrap_or_default()
}
