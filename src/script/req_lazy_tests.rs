//! Tests of `req`'s lazy reader (`req_raw::lazy_fn`, called by the VM when a read of a
//! read-only table misses): what it answers, what it leaves to `__index`, and that the
//! route and the respond hook share the one `req` it answers for.

use std::cell::RefCell;

use mlua::Function;

use super::tests::{call, call_head, respond_body, router, state, BAD};
use super::*;

/// `req` holds `headers`, `arg`, `body` and `form` in itself: no statement can replace them
/// or the headers, and after each refusal they are all still there.
#[test]
fn what_req_holds_cannot_be_replaced() {
    let stmts = [
        ("req.headers = {}", "req is read-only"),
        ("req.arg = nil", "req is read-only"),
        ("req.body = print", "req is read-only"),
        ("req.headers.host = 'x'", "req.headers is read-only"),
        ("rawset(req, 'headers', 1)", "req is read-only in route"),
        (
            "rawset(req.headers, 'host', 'x')",
            "req.headers is read-only in route",
        ),
    ];
    for (stmt, why) in stmts {
        let mut r = router(&format!(
            "route(function(req)\n  if req.path == '/bad' then {stmt} end\n  \
             return respond(200, type(req.headers) .. type(req.arg) .. type(req.body) \
             .. type(req.form) .. req.headers.host .. tostring(req:arg('a')))\nend)"
        ));
        let e = call_head(&mut r, BAD).unwrap_err();
        assert!(e.message.contains(why), "{stmt}: {e}");
        let got = respond_body(
            call_head(&mut r, "GET /?a=1 HTTP/1.1\r\nHost: example.com\r\n\r\n").unwrap(),
        );
        assert_eq!(
            got, "tablefunctionfunctionfunctionexample.com1",
            "after {stmt}"
        );
    }
}

/// The respond hook gets the same `req` as the route, and reads its fields.
#[test]
fn route_and_respond_hook_share_one_req() {
    let (lua, key) = state(
        "local last\n\
         route(function(req) last = req return nil end)\n\
         function make_hook()\n\
           return function(req, res)\n\
             res.headers['x-same'] = tostring(rawequal(req, last))\n\
             res.headers['x-path'] = req.path .. ' ' .. req.headers['x-a']\n\
           end\n\
         end",
    );
    let make: Function = lua.globals().get("make_hook").unwrap();
    let hook: Function = make.call(()).unwrap();
    lua.set_named_registry_value(RESPOND_HOOK, hook).unwrap();
    let mut r = Router::new(&lua, &key, ["app"], RouterLimits::default()).unwrap();
    let head = super::tests::request("GET /h HTTP/1.1\r\nHost: example.com\r\nX-A: b\r\n\r\n");
    let rr = RouteRequest {
        req: &head,
        remote_addr: "192.0.2.7",
        remote_port: 40000,
        listener: "127.0.0.1:8080",
        scheme: "http",
    };
    assert_eq!(r.route(&rr).unwrap(), Decision::FallThrough);
    let mut lines = b"Content-Type: text/plain\r\n".to_vec();
    let mut overrides = Vec::new();
    r.respond_hook(Some(&rr), 200, &mut lines, &mut overrides);
    let lines = String::from_utf8(lines).unwrap().to_ascii_lowercase();
    assert!(lines.contains("x-same: true\r\n"), "{lines}");
    assert!(lines.contains("x-path: /h b\r\n"), "{lines}");
}

/// A field read through the reader while the route allocates enough to run collections (and
/// with them the finalizers of earlier decisions, which call Lua on the route's stack) answers
/// each request with its own values, at every depth of the route's stack.
#[test]
fn reads_stay_right_while_collections_run() {
    let mut r = router(
        "local function deep(req, n, acc)\n\
           if n == 0 then return acc .. req.path .. '|' .. req.headers['x-n'] end\n\
           return deep(req, n - 1, acc .. string.rep('.', 40) .. n)\n\
         end\n\
         route(function(req)\n\
           local s = deep(req, #req.path % 37, '')\n\
           return respond(200, s:sub(-40))\n\
         end)",
    );
    for i in 0..3000u32 {
        let path = format!("/p{}", i * 7919 % 100_003);
        let head = format!("GET {path} HTTP/1.1\r\nHost: a\r\nX-N: n{i}\r\n\r\n");
        let body = respond_body(call_head(&mut r, &head).unwrap());
        let want = format!("{path}|n{i}");
        assert!(body.ends_with(&want), "request {i}: {body}");
    }
}

/// A second router made over the same state takes the reader over; the first one's `req`
/// then reads through `__index`, with the same answers.
#[test]
fn a_second_router_over_the_state_leaves_the_first_one_right() {
    let (lua, key) = state(
        "route(function(req) return respond(200, req.path .. ' ' .. tostring(req.host) .. ' ' \
         .. tostring(req.headers['x-a'])) end)",
    );
    let mut first = Router::new(&lua, &key, ["app"], RouterLimits::default()).unwrap();
    let mut second = Router::new(&lua, &key, ["app"], RouterLimits::default()).unwrap();
    for n in 1..=3 {
        let r = if n == 2 { &mut second } else { &mut first };
        let head = format!("GET /r{n} HTTP/1.1\r\nHost: h{n}\r\nX-A: v{n}\r\n\r\n");
        assert_eq!(
            respond_body(call_head(r, &head).unwrap()),
            format!("/r{n} h{n} v{n}")
        );
    }
    drop(second);
    lua.gc_collect().unwrap();
    let head = "GET /again HTTP/1.1\r\nHost: h\r\n\r\n";
    assert_eq!(
        respond_body(call_head(&mut first, head).unwrap()),
        "/again h nil"
    );
}

/// Closing a state whose finalizers read a kept `req` (the reader's own finalizer runs
/// first: it was made last) makes each read raise, as outside a call, never read freed data.
#[test]
fn finalizers_at_close_read_req_safely() {
    let (lua, key) = state(
        "local last, kept = nil, {}\n\
         route(function(req) last = req return kept[1] end)\n\
         function arm(note)\n\
           for i = 1, 20 do\n\
             kept[i + 1] = setmetatable({}, { __gc = function()\n\
               note('before')\n\
               note('read ' .. tostring(last.path))\n\
             end })\n\
           end\n\
         end",
    );
    // SAFETY: `note_fn` follows the rules of raw functions (crate::lua_raw).
    let note = unsafe { lua.create_c_function(note_fn) }.unwrap();
    let arm: Function = lua.globals().get("arm").unwrap();
    arm.call::<()>(note).unwrap();
    drop(arm);
    let mut r = Router::new(&lua, &key, ["app"], RouterLimits::default()).unwrap();
    assert_eq!(call(&mut r).unwrap(), Decision::FallThrough);
    drop(r);
    drop(lua);
    // Each read raised (the sandbox's `pcall` is an mlua function, which cannot run while the
    // state closes, so the error is not caught; Lua drops a finalizer's error).
    let notes = NOTES.take();
    assert_eq!(notes, vec!["before".to_string(); 20]);
}

thread_local! {
    /// What [`note_fn`] was given, on this test's thread.
    static NOTES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// `note(s)`: keeps `s` in [`NOTES`]. A raw C function, since mlua cannot call its own
/// callbacks while the state closes (finalizers at close are what the test is about).
unsafe extern "C-unwind" fn note_fn(l: *mut mlua::ffi::lua_State) -> std::ffi::c_int {
    // SAFETY: called by Lua as a C function; the bytes are copied while the argument is on
    // the stack, and nothing here raises.
    let [a] = unsafe { crate::lua_raw::args::<1>(l, 1) };
    // SAFETY: as above.
    let s = unsafe { a.bytes() }.map(|b| String::from_utf8_lossy(b).into_owned());
    NOTES.with_borrow_mut(|n| n.push(s.unwrap_or_else(|| "(not a string)".into())));
    0
}

/// The fields the VM answers itself (`path`, `method`, `host`, `uri`, `remote_addr`) are
/// each call's own, nil where the request has none, and raise once the call is over, as the
/// fields read through `__index` do.
#[test]
fn fields_the_vm_answers_are_each_calls_own() {
    let mut r = router(
        "local kept\n\
         route(function(req)\n\
           kept = req\n\
           return respond(200, table.concat({ req.path, req.method, tostring(req.host), \
             req.uri, req.remote_addr, tostring(req.query), req.scheme }, ' '))\n\
         end)\n\
         function later() return kept.path end",
    );
    let cases = [
        (
            "GET /a?x=1 HTTP/1.1\r\nHost: one.example\r\n\r\n",
            "/a GET one.example /a?x=1 192.0.2.7 x=1 http",
        ),
        (
            "HEAD /b HTTP/1.0\r\n\r\n",
            "/b HEAD nil /b 192.0.2.7 nil http",
        ),
        (
            "POST /a HTTP/1.1\r\nHost: two.example\r\nContent-Length: 0\r\n\r\n",
            "/a POST two.example /a 192.0.2.7 nil http",
        ),
    ];
    for (head, want) in cases {
        assert_eq!(
            respond_body(call_head(&mut r, head).unwrap()),
            want,
            "{head:?}"
        );
    }
    let later: Function = r.lua.globals().get("later").unwrap();
    let e = later.call::<String>(()).unwrap_err().to_string();
    assert!(
        e.contains("req is only available during a route call"),
        "{e}"
    );
}
