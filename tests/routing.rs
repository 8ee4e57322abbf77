//! Per-request routing in Lua: `route(function(req) ... end)` run by the real server.
//!
//! Every server here has `workers = 1`, so "the next request" is served by the same worker,
//! and the same Lua state, as the one before it.

mod common;

use common::{bin, raw, wait_for, Client, Response, Server, TempDir};
use std::process::Command;
use std::time::{Duration, Instant};

/// Line 1 of every config below.
const HEAD: &str =
    r#"server { listen = "127.0.0.1:0", workers = 1, root = "www", error_log = "stderr" }"#;

/// A temporary directory with `www/` holding `files`.
fn site(files: &[(&str, &[u8])]) -> TempDir {
    let dir = TempDir::new("route");
    std::fs::create_dir_all(dir.path().join("www")).expect("mkdir www");
    for (name, data) in files {
        dir.write(&format!("www/{name}"), data);
    }
    dir
}

/// The config text: HEAD on line 1, then `rest`.
fn config(rest: &str) -> String {
    format!("{HEAD}\n{rest}")
}

fn start(dir: TempDir, rest: &str) -> Server {
    Server::start_config(dir, &config(rest))
}

/// The 1-based line of `config(rest)` that contains `marker`.
fn line_of(rest: &str, marker: &str) -> usize {
    config(rest)
        .lines()
        .position(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("no {marker:?} in the config"))
        + 1
}

/// GET `path` with `Host: test` on a fresh connection.
fn get(s: &Server, path: &str) -> Response {
    s.get(path)
}

/// Waits until the error log contains every one of `needles` on one line; returns that line.
fn wait_log_line(s: &Server, needles: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = s.log_text();
        if let Some(l) = log.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
            return l.to_string();
        }
        if Instant::now() > deadline {
            panic!("no log line with {needles:?}; log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The value of `name` in the test backend's JSON object of params (flat, string values).
fn param(json: &str, name: &str) -> Option<String> {
    let key = format!("\"{name}\":\"");
    let start = json.find(&key)? + key.len();
    let mut out = String::new();
    let mut chars = json[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

/// The body, with chunked framing removed (the harness reads a chunked body as it is).
fn body(r: &Response) -> String {
    if r.header("transfer-encoding") != Some("chunked") {
        return r.text();
    }
    let mut rest = &r.body[..];
    let mut out = Vec::new();
    loop {
        let eol = common::find(rest, b"\r\n").expect("chunk size line");
        let size_text = String::from_utf8_lossy(&rest[..eol]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .expect("chunk size");
        rest = &rest[eol + 2..];
        if size == 0 {
            break;
        }
        out.extend_from_slice(&rest[..size]);
        assert_eq!(&rest[size..size + 2], b"\r\n", "chunk end");
        rest = &rest[size + 2..];
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The status line of a response to `request` (sent on a fresh connection).
fn status_line(s: &Server, request: &str) -> String {
    let mut c = s.connect();
    c.send(request.as_bytes());
    let mut all = Vec::new();
    let _ = std::io::Read::read_to_end(&mut c.stream, &mut all);
    let text = String::from_utf8_lossy(&all).into_owned();
    text.split("\r\n").next().unwrap_or_default().to_string()
}

fn assert_ok(s: &Server) {
    let r = get(s, "/ok");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "ok\n");
}

/// The reply body luahttpd sends with an error or redirect status.
fn error_page(status: u16, reason: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html><head><title>{status} {reason}</title></head>\
         <body><h1>{status} {reason}</h1></body></html>\n"
    )
}

fn assert_500(r: &Response) {
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(r.text(), error_page(500, "Internal Server Error"));
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
}

fn run_cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin()).args(args).output().expect("run");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---------------------------------------------------------------------------------------------
// Decisions
// ---------------------------------------------------------------------------------------------

const RESPOND: &str = r#"
route(function(req)
  local p = req.path
  if p == "/ok" then return respond(200, "ok\n") end
  if p == "/respond" then return respond(201, "made\n", { ["x-custom"] = "yes" }) end
  if p == "/json" then
    return respond(200, '{"a":1}', { ["content-type"] = "application/json" })
  end
  if p == "/list" then return respond(200, "l", { ["x-list"] = { "one", "two" } }) end
  if p == "/nobody" then return respond(204) end
  if p == "/number" then return respond(418, 42) end
  if p == "/status-only" then return respond(503) end
end)
"#;

#[test]
fn respond_sets_status_body_headers_and_a_default_content_type() {
    let s = start(site(&[]), RESPOND);

    let r = get(&s, "/respond");
    assert_eq!(r.status, 201);
    assert_eq!(r.text(), "made\n");
    assert_eq!(r.header("x-custom"), Some("yes"));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.header("content-length"), Some("5"));
    assert_eq!(r.header("server"), Some("luahttpd"));
    assert!(r.header("date").is_some());

    // A content-type of the route's replaces the default: exactly one Content-Type.
    let r = get(&s, "/json");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), r#"{"a":1}"#);
    let types: Vec<_> = r
        .header_list
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(types, ["application/json"]);

    // A list value: one header line each.
    let r = get(&s, "/list");
    assert_eq!(r.status, 200);
    let list: Vec<_> = r
        .header_list
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("x-list"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(list, ["one", "two"]);

    let r = get(&s, "/nobody");
    assert_eq!(r.status, 204);
    assert_eq!(r.header("content-length"), None);
    assert!(r.body.is_empty());

    let r = get(&s, "/number");
    assert_eq!(r.status, 418);
    assert_eq!(r.text(), "42");

    let r = get(&s, "/status-only");
    assert_eq!(r.status, 503);
    assert_eq!(r.text(), "");
    assert_eq!(r.header("content-length"), Some("0"));

    // HEAD: the same head, no body.
    let mut c = s.connect();
    c.send(b"HEAD /respond HTTP/1.1\r\nHost: test\r\n\r\n");
    let r = c.response(true);
    assert_eq!(r.status, 201);
    assert_eq!(r.header("content-length"), Some("5"));
    assert_eq!(r.header("x-custom"), Some("yes"));
    // The connection stays usable: nothing stray was sent after the head.
    c.send(b"GET /ok HTTP/1.1\r\nHost: test\r\n\r\n");
    let r = c.response(false);
    assert_eq!(r.text(), "ok\n");
}

const REDIRECT: &str = r#"
route(function(req)
  local p = req.path
  if p == "/ok" then return respond(200, "ok\n") end
  if req.host == "old.example" then return redirect(301, "https://new.example" .. req.uri) end
  if p == "/found" then return redirect(302, "/target", { ["x-why"] = "moved" }) end
  if p == "/temp" then return redirect(307, "/t") end
  if p == "/perm" then return redirect(308, "/p") end
  if p == "/see" then return redirect(303, "/s") end
  if p == "/bad-status" then return redirect(200, "/x") end
  if p == "/bad-location" then return redirect(302, "/x\r\nInjected: 1") end
  if p == "/empty-location" then return redirect(302, "") end
end)
"#;

#[test]
fn redirect_sets_status_and_location_built_from_the_uri() {
    let s = start(site(&[]), REDIRECT);

    let r = raw(
        &s.addr,
        b"GET /a%20b/c?x=1&y=%2F HTTP/1.1\r\nHost: old.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location"),
        Some("https://new.example/a%20b/c?x=1&y=%2F")
    );
    assert_eq!(r.text(), error_page(301, "Moved Permanently"));

    // The host matches without its port and case-insensitively.
    let r = raw(
        &s.addr,
        b"GET /z HTTP/1.1\r\nHost: OLD.Example:8080\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("https://new.example/z"));

    let r = get(&s, "/found");
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("/target"));
    assert_eq!(r.header("x-why"), Some("moved"));

    for (path, status, loc) in [
        ("/temp", 307, "/t"),
        ("/perm", 308, "/p"),
        ("/see", 303, "/s"),
    ] {
        let r = get(&s, path);
        assert_eq!(r.status, status, "{path}");
        assert_eq!(r.header("location"), Some(loc), "{path}");
    }

    let r = get(&s, "/bad-status");
    assert_500(&r);
    assert_eq!(r.header("location"), None);
    let line = wait_log_line(&s, &["/bad-status", "redirect: status must be"]);
    let at = format!("site.lua:{}", line_of(REDIRECT, "/bad-status"));
    assert!(line.contains(&at), "no {at} in: {line}");
    assert_ok(&s);

    let r = get(&s, "/bad-location");
    assert_500(&r);
    assert_eq!(r.header("injected"), None);
    assert_eq!(r.header("location"), None);
    assert_ok(&s);

    let r = get(&s, "/empty-location");
    assert_500(&r);
    assert_ok(&s);
}

const DENY: &str = r#"
route(function(req)
  local p = req.path
  if p == "/ok" then return respond(200, "ok\n") end
  if p == "/deny" then return deny() end
  if p == "/deny403" then return deny(403) end
  if p == "/legal" then return deny(451, { ["x-reason"] = "legal" }) end
  if p == "/teapot" then return deny(418) end
  if p == "/bad-deny" then return deny(200) end
end)
"#;

#[test]
fn deny_answers_the_error_status_with_its_page() {
    let s = start(site(&[("deny", b"never served")]), DENY);

    for path in ["/deny", "/deny403"] {
        let r = get(&s, path);
        assert_eq!(r.status, 403, "{path}");
        assert_eq!(r.text(), error_page(403, "Forbidden"));
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    }

    let r = get(&s, "/legal");
    assert_eq!(r.status, 451);
    assert_eq!(r.header("x-reason"), Some("legal"));
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));

    let r = get(&s, "/teapot");
    assert_eq!(r.status, 418);

    let r = get(&s, "/bad-deny");
    assert_500(&r);
    wait_log_line(&s, &["/bad-deny", "deny: status must be in 400..599"]);
    assert_ok(&s);
}

/// Routes may answer any status in 200..599: the status line and the error page should carry
/// its registered reason phrase (RFC 7725 for 451), not "Unknown".
#[test]
fn deny_451_carries_its_reason_phrase() {
    let s = start(site(&[]), DENY);
    assert_eq!(
        status_line(
            &s,
            "GET /legal HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
        ),
        "HTTP/1.1 451 Unavailable For Legal Reasons"
    );
    let r = get(&s, "/legal");
    assert_eq!(r.text(), error_page(451, "Unavailable For Legal Reasons"));
}

#[test]
fn static_serves_from_another_root_or_the_main_root_with_extra_headers() {
    let dir = site(&[
        ("o.txt", b"main o\n"),
        ("m.txt", b"main m\n"),
        ("plain.txt", b"plain\n"),
    ]);
    dir.write("other/o.txt", b"other o\n");
    dir.write("other/sub/index.html", b"<p>sub</p>\n");
    let other = dir.path().join("other");
    let rest = r#"
local OTHER = "@OTHER@"
route(function(req)
  local p = req.path
  if p == "/ok" then return respond(200, "ok\n") end
  if p:find("^/o") or p:find("^/sub") then
    return static { root = OTHER, headers = { ["cache-control"] = "max-age=60" } }
  end
  if p == "/m.txt" then return static { headers = { ["x-served-by"] = "main" } } end
  if p == "/relative" then return static { root = "other" } end
  if p == "/missing-root" then return static { root = "/nonexistent/luahttpd-route-root" } end
end)
"#
    .replace("@OTHER@", other.to_str().unwrap());
    let s = start(dir, &rest);

    let r = get(&s, "/o.txt");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "other o\n");
    assert_eq!(r.header("cache-control"), Some("max-age=60"));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert!(r.header("etag").is_some());

    // A missing file in the other root: 404, not the main root's file of another name.
    let r = get(&s, "/o-missing.txt");
    assert_eq!(r.status, 404);
    assert_eq!(r.text(), error_page(404, "Not Found"));

    // Directory rules apply under the other root too.
    let r = get(&s, "/sub");
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/sub/"));
    let r = get(&s, "/sub/");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "<p>sub</p>\n");
    assert_eq!(r.header("cache-control"), Some("max-age=60"));

    // Without root: the main root, with the extra header.
    let r = get(&s, "/m.txt");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "main m\n");
    assert_eq!(r.header("x-served-by"), Some("main"));

    // nil: the default rules (main root), no extra header.
    let r = get(&s, "/plain.txt");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "plain\n");
    assert_eq!(r.header("cache-control"), None);
    assert_eq!(r.header("x-served-by"), None);

    // A relative root is refused where it is built; a root that does not exist is a 500.
    assert_500(&get(&s, "/relative"));
    wait_log_line(&s, &["/relative", "static: root must be an absolute path"]);
    assert_ok(&s);
    assert_500(&get(&s, "/missing-root"));
    assert_ok(&s);
}

/// A config with the test FastCGI backend "app" (also mapped to `.php` by extension).
fn fcgi_site(files: &[(&str, &[u8])]) -> (TempDir, String) {
    let dir = site(files);
    let backend = format!(
        "fastcgi \"app\" {{ spawn = {{ \"{}\" }}, socket = \"unix:{}/a.sock\", procs = 1, \
         extensions = {{ \".php\" }} }}\n",
        env!("CARGO_BIN_EXE_luahttpd-fcgi-test"),
        dir.path().display()
    );
    (dir, backend)
}

#[test]
fn fastcgi_decision_sets_script_path_info_params_and_response_headers() {
    let (dir, backend) = fcgi_site(&[]);
    let rest = backend
        + r#"
route(function(req)
  if req.path == "/ok" then return respond(200, "ok\n") end
  if req.path:find("^/api/") then
    return fastcgi("app", {
      script = "/srv/api/index.php",
      path_info = req.path:sub(5),
      params = { X_CUSTOM = "v", SERVER_SOFTWARE = "replaced" },
      headers = { ["x-backend"] = "app" },
    })
  end
  if req.path == "/plain" then return fastcgi("app", {}) end
end)
"#;
    let s = start(dir, &rest);

    let r = get(&s, "/api/users/7?mode=params");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-backend"), Some("app"));
    let j = body(&r);
    assert_eq!(
        param(&j, "SCRIPT_FILENAME").as_deref(),
        Some("/srv/api/index.php"),
        "{j}"
    );
    assert_eq!(param(&j, "PATH_INFO").as_deref(), Some("/users/7"), "{j}");
    assert_eq!(param(&j, "SCRIPT_NAME").as_deref(), Some("/api"), "{j}");
    assert_eq!(param(&j, "X_CUSTOM").as_deref(), Some("v"), "{j}");
    assert_eq!(
        param(&j, "SERVER_SOFTWARE").as_deref(),
        Some("replaced"),
        "{j}"
    );
    assert_eq!(param(&j, "QUERY_STRING").as_deref(), Some("mode=params"));
    assert_eq!(
        param(&j, "REQUEST_URI").as_deref(),
        Some("/api/users/7?mode=params")
    );
    assert_eq!(param(&j, "REQUEST_METHOD").as_deref(), Some("GET"));

    // No options: SCRIPT_NAME is the path, SCRIPT_FILENAME under the root, no PATH_INFO; no
    // local check (the file does not exist).
    let r = get(&s, "/plain?mode=params");
    assert_eq!(r.status, 200, "{}", r.text());
    let j = body(&r);
    assert_eq!(param(&j, "SCRIPT_NAME").as_deref(), Some("/plain"), "{j}");
    let sf = param(&j, "SCRIPT_FILENAME").unwrap_or_default();
    assert!(sf.ends_with("/www/plain"), "{j}");
    assert_eq!(param(&j, "PATH_INFO"), None, "{j}");
    assert_eq!(param(&j, "X_CUSTOM"), None, "{j}");
    assert_eq!(r.header("x-backend"), None);

    // The backend's own status passes through.
    let r = get(&s, "/api/x?mode=status&code=404");
    assert_eq!(r.status, 404);
    assert_eq!(body(&r), "status 404\n");
    assert_eq!(r.header("x-backend"), Some("app"));

    assert_ok(&s);
}

#[test]
fn nil_falls_through_to_static_files_and_fastcgi_extension_rules() {
    let (dir, backend) = fcgi_site(&[("hello.txt", b"hello\n"), ("x.php", b"<?php")]);
    let rest = backend
        + r#"
route(function(req)
  if req.path == "/ok" then return respond(200, "ok\n") end
  return nil
end)
"#;
    let s = start(dir, &rest);

    let r = get(&s, "/hello.txt");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello\n");
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));

    let r = get(&s, "/nothing-here.txt");
    assert_eq!(r.status, 404);

    let r = get(&s, "/x.php/more/info?mode=params");
    assert_eq!(r.status, 200, "{}", r.text());
    let j = body(&r);
    assert_eq!(param(&j, "SCRIPT_NAME").as_deref(), Some("/x.php"), "{j}");
    assert_eq!(param(&j, "PATH_INFO").as_deref(), Some("/more/info"), "{j}");
    let sf = param(&j, "SCRIPT_FILENAME").unwrap_or_default();
    assert!(sf.ends_with("/www/x.php"), "{j}");

    // The extension rule's local check still applies on fall-through.
    let r = get(&s, "/missing.php?mode=params");
    assert_eq!(r.status, 404);
}

/// A response must not carry two of a field defined as a single value (RFC 9110 §5.3):
/// headers a route adds should replace the server's, or be refused (500), never duplicate.
#[test]
fn route_headers_never_duplicate_single_value_fields() {
    let rest = r#"
route(function(req)
  local p = req.path
  if p == "/date" then return respond(200, "x", { date = "Mon, 01 Jan 2001 00:00:00 GMT" }) end
  if p == "/server" then return respond(200, "x", { server = "other" }) end
  if p == "/location" then return redirect(302, "/a", { location = "/b" }) end
  if p == "/static-type" then
    return static { headers = { ["content-type"] = "application/x-custom" } }
  end
  if p == "/deny-type" then return deny(403, { ["content-type"] = "text/plain" }) end
end)
"#;
    let s = start(site(&[("static-type", b"s")]), rest);
    let mut problems = Vec::new();
    for (path, field) in [
        ("/date", "date"),
        ("/server", "server"),
        ("/location", "location"),
        ("/static-type", "content-type"),
        ("/deny-type", "content-type"),
    ] {
        let r = get(&s, path);
        let values: Vec<_> = r
            .header_list
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(field))
            .map(|(_, v)| v.clone())
            .collect();
        if r.status != 500 && values.len() != 1 {
            problems.push(format!("{path}: {} {field} fields {values:?}", r.status));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn req_headers_can_be_listed_and_print_goes_to_the_error_log() {
    let rest = r#"
route(function(req)
  if req.path == "/pairs" then
    local t = {}
    for k, v in pairs(req.headers) do t[#t + 1] = k .. "=" .. v end
    table.sort(t)
    return respond(200, table.concat(t, "\n") .. "\n")
  end
  if req.path == "/print" then
    print("hello from route", 42, nil)
    return respond(200, "printed\n")
  end
end)
"#;
    let s = start(site(&[]), rest);
    let r = raw(
        &s.addr,
        b"GET /pairs HTTP/1.1\r\nHost: h.test\r\nX-A: 1\r\nx-a: 2\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "connection=close\nhost=h.test\nx-a=1, 2\n");
    let r = get(&s, "/print");
    assert_eq!(r.text(), "printed\n");
    wait_log_line(&s, &["INFO", "hello from route\t42\tnil"]);
}

// ---------------------------------------------------------------------------------------------
// req
// ---------------------------------------------------------------------------------------------

const FIELDS: &str = r#"
route(function(req)
  if req.path == "/ok" then return respond(200, "ok\n") end
  local s = tostring
  local out = {
    "method=" .. req.method,
    "path=" .. req.path,
    "raw_path=" .. req.raw_path,
    "query=" .. s(req.query),
    "uri=" .. req.uri,
    "version=" .. req.version,
    "host=" .. s(req.host),
    "scheme=" .. req.scheme,
    "remote_addr=" .. req.remote_addr,
    "remote_port=" .. s(req.remote_port),
    "remote_port_type=" .. math.type(req.remote_port),
    "h_lower=" .. s(req.headers["x-mixed-case"]),
    "h_upper=" .. s(req.headers["X-MIXED-CASE"]),
    "h_same=" .. s(req.headers["X-Mixed-Case"]),
    "h_multi=" .. s(req.headers["x-multi"]),
    "h_missing=" .. s(req.headers["x-none"]),
    "q=" .. s(req:arg("q")),
    "e=" .. s(req:arg("e")),
    "name sp=" .. s(req:arg("a b")),
    "empty=" .. s(req:arg("empty")),
    "flag=" .. s(req:arg("flag")),
    "nope=" .. s(req:arg("nope")),
  }
  return respond(200, table.concat(out, "\n") .. "\n")
end)
"#;

#[test]
fn req_fields_are_decoded_and_headers_are_case_insensitive() {
    let s = start(site(&[]), FIELDS);

    let mut c = s.connect();
    let port = c.stream.local_addr().unwrap().port();
    c.send(
        b"GET /a%20b/c+d/%E2%82%AC?q=hello+world&e=%E2%82%AC&a+b=1&empty=&flag&q=second HTTP/1.1\r\n\
          Host: Example.COM:8080\r\n\
          X-Mixed-Case: Val\r\n\
          X-Multi: a\r\n\
          X-Multi: b\r\n\r\n",
    );
    let r = c.response(false);
    assert_eq!(r.status, 200);
    let expected = format!(
        "method=GET\n\
         path=/a b/c+d/€\n\
         raw_path=/a%20b/c+d/%E2%82%AC\n\
         query=q=hello+world&e=%E2%82%AC&a+b=1&empty=&flag&q=second\n\
         uri=/a%20b/c+d/%E2%82%AC?q=hello+world&e=%E2%82%AC&a+b=1&empty=&flag&q=second\n\
         version=HTTP/1.1\n\
         host=example.com\n\
         scheme=http\n\
         remote_addr=127.0.0.1\n\
         remote_port={port}\n\
         remote_port_type=integer\n\
         h_lower=Val\n\
         h_upper=Val\n\
         h_same=Val\n\
         h_multi=a, b\n\
         h_missing=nil\n\
         q=hello world\n\
         e=€\n\
         name sp=1\n\
         empty=\n\
         flag=\n\
         nope=nil\n"
    );
    assert_eq!(r.text(), expected);

    // The same connection, the next request: fields are the new request's, not cached ones.
    c.send(b"POST /p HTTP/1.1\r\nHost: second.test\r\nContent-Length: 3\r\n\r\nabc");
    let r = c.response(false);
    assert_eq!(r.status, 200);
    let t = r.text();
    for want in [
        "method=POST\n",
        "path=/p\n",
        "raw_path=/p\n",
        "query=nil\n",
        "uri=/p\n",
        "host=second.test\n",
        "h_lower=nil\n",
        "h_multi=nil\n",
        "q=nil\n",
        "nope=nil\n",
    ] {
        assert!(t.contains(want), "no {want:?} in:\n{t}");
    }

    // HTTP/1.0 without Host: version 1.0, host nil.
    let r = raw(&s.addr, b"GET /x?q=%41 HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200);
    let t = r.text();
    for want in ["version=HTTP/1.0\n", "host=nil\n", "q=A\n", "query=q=%41\n"] {
        assert!(t.contains(want), "no {want:?} in:\n{t}");
    }

    // Absolute-form target: the host comes from it.
    let r = raw(
        &s.addr,
        b"GET http://Abs.Example:99/y?z HTTP/1.1\r\nHost: abs.example:99\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let t = r.text();
    for want in ["host=abs.example\n", "path=/y\n", "query=z\n"] {
        assert!(t.contains(want), "no {want:?} in:\n{t}");
    }
}

const LISTENER: &str = r#"
route(function(req)
  return respond(200, req.listener)
end)
"#;

#[test]
fn req_listener_names_the_configured_address() {
    // A fixed port: the listener is the address as configured.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = site(&[]);
    let text = format!(
        "server {{ listen = {{ \"127.0.0.1:{port}\" }}, workers = 1, root = \"www\", \
         error_log = \"stderr\" }}\n{LISTENER}"
    );
    let s = Server::start_config(dir, &text);
    let r = get(&s, "/");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), format!("127.0.0.1:{port}"));
}

#[test]
fn req_listener_is_the_bound_address_when_the_port_was_zero() {
    // `listen = "127.0.0.1:0"`: the request came in on the port the kernel chose, which the
    // start-up log names; req.listener should say the same.
    let s = start(site(&[]), LISTENER);
    let r = get(&s, "/");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), s.addr, "req.listener");
}

#[test]
fn req_is_read_only_and_unknown_fields_are_errors() {
    let rest = r#"
route(function(req)
  local p = req.path
  if p == "/ok" then return respond(200, "ok\n") end
  if p == "/set-field" then req.path = "/x" end
  if p == "/set-header" then req.headers["x-a"] = "1" end
  if p == "/unknown" then return respond(200, tostring(req.nosuchfield)) end
end)
"#;
    let s = start(site(&[]), rest);
    assert_500(&get(&s, "/set-field"));
    wait_log_line(&s, &["/set-field", "req is read-only"]);
    assert_ok(&s);
    assert_500(&get(&s, "/set-header"));
    wait_log_line(&s, &["/set-header", "req.headers is read-only"]);
    assert_ok(&s);
    assert_500(&get(&s, "/unknown"));
    wait_log_line(&s, &["/unknown", "req has no field 'nosuchfield'"]);
    assert_ok(&s);
}

// ---------------------------------------------------------------------------------------------
// Failures: each answers 500, logs, and leaves the worker serving
// ---------------------------------------------------------------------------------------------

const FAILURES: &str = r#"
route(function(req)
  local p = req.path
  if p == "/ok" then return respond(200, "ok\n") end
  if p == "/error" then error("boom") end -- ERROR_LINE
  if p == "/nil-index" then local t = nil; return t.x end -- NIL_LINE
  if p == "/loop" then while true do end end
  if p == "/pcall-loop" then
    pcall(function() while true do end end)
    return respond(200, "the loop was caught\n")
  end
  if p == "/slow" then
    local s = string.rep("a", 256 * 1024)
    for _ = 1, 1000000 do local _ = s:upper() end
    return respond(200, "slow\n")
  end
  if p == "/clock" then
    local t = os.clock() while os.clock() - t < 1 do end
    return respond(200, "clock\n")
  end
  if p == "/rep" then local s = string.rep("x", 200 * 1024 * 1024); return respond(200, #s) end
  if p == "/grow" then
    local t = {}
    -- 4 MiB strings (long strings are not interned: each is new), written 1 KiB at a time.
    local kb = string.rep("y", 1024)
    for i = 1, 1000 do t[i] = string.rep(kb, 4096) end
    return respond(200, #t)
  end
  if p == "/pcall-rep" then
    local ok = pcall(string.rep, "x", 200 * 1024 * 1024)
    return respond(200, "pcall: " .. tostring(ok) .. "\n")
  end
  if p == "/unknown-backend" then return fastcgi("nope", {}) end
  if p == "/inject-value" then return respond(200, "x", { ["x-a"] = "b\r\nInjected: 1" }) end
  if p == "/inject-lf" then return respond(200, "x", { ["x-a"] = "b\nInjected: 1" }) end
  if p == "/inject-name" then return respond(200, "x", { ["x-a\r\nInjected"] = "1" }) end
  if p == "/reserved" then return respond(200, "x", { ["Content-Length"] = "99" }) end
  if p == "/not-a-decision" then return "hello" end
  if p == "/table" then return {} end
  if p == "/global" then leaked = 1; return respond(200, "assigned\n") end -- GLOBAL_LINE
  if p == "/lib" then string.upper = nil; return respond(200, "assigned\n") end
  if p == "/gc" then setmetatable({}, { __gc = function() end }) end
end)
"#;

#[test]
fn runtime_error_is_500_logged_with_file_line_and_path() {
    let s = start(site(&[]), FAILURES);
    let pids = s.worker_pids();
    assert_eq!(pids.len(), 1);

    assert_500(&get(&s, "/error"));
    let line = wait_log_line(&s, &["GET /error", "boom"]);
    let at = format!("site.lua:{}", line_of(FAILURES, "ERROR_LINE"));
    assert!(line.contains(&at), "no {at} in: {line}");
    assert!(line.contains("ERROR"), "not at error level: {line}");
    assert_ok(&s);

    assert_500(&get(&s, "/nil-index?a=1"));
    let line = wait_log_line(&s, &["GET /nil-index?a=1"]);
    let at = format!("site.lua:{}", line_of(FAILURES, "NIL_LINE"));
    assert!(line.contains(&at), "no {at} in: {line}");
    assert_ok(&s);

    assert_eq!(s.worker_pids(), pids);
}

#[test]
fn runaway_loop_is_stopped_by_the_instruction_budget() {
    let s = start(site(&[]), FAILURES);
    let pids = s.worker_pids();

    assert_500(&get(&s, "/loop"));
    wait_log_line(&s, &["/loop", "instruction budget"]);
    assert_ok(&s);

    // pcall cannot swallow the stop.
    assert_500(&get(&s, "/pcall-loop"));
    wait_log_line(&s, &["/pcall-loop", "instruction budget"]);
    assert_ok(&s);

    assert_eq!(s.worker_pids(), pids);
}

#[test]
fn deadline_overrun_is_500() {
    let s = start(site(&[]), FAILURES);
    let pids = s.worker_pids();

    // Few VM instructions, each a costly C call: the deadline trips, not the budget.
    let t = Instant::now();
    assert_500(&get(&s, "/slow"));
    let line = wait_log_line(&s, &["/slow", "deadline exceeded"]);
    assert!(line.contains("50 ms"), "{line}");
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_ok(&s);

    // A busy loop on os.clock: stopped by one limit or the other, well before its 1 s.
    assert_500(&get(&s, "/clock"));
    wait_log_line(&s, &["/clock", "route: "]);
    assert_ok(&s);

    assert_eq!(s.worker_pids(), pids);
}

#[test]
fn memory_bomb_is_500_and_the_same_worker_serves_again() {
    let s = start(site(&[]), FAILURES);
    let pids = s.worker_pids();
    assert_eq!(pids.len(), 1);

    for path in ["/rep", "/grow", "/rep", "/grow"] {
        assert_500(&get(&s, path));
        if path == "/grow" {
            // Writing 64 MiB is close to the 50 ms deadline on a loaded machine, and string.rep
            // now reads the clock: either limit may come first, but one must, with its reason.
            wait_for("a /grow limit line", Duration::from_secs(5), || {
                s.log_text().lines().any(|l| {
                    l.contains(path)
                        && (l.contains("memory limit")
                            || (l.contains("deadline exceeded") && l.contains("50 ms")))
                })
            });
        } else {
            wait_log_line(&s, &[path, "memory limit"]);
        }
        assert_ok(&s);
        assert_eq!(s.worker_pids(), pids, "after {path}");
    }

    // pcall catching a memory error is allowed: the state is usable afterwards.
    let r = get(&s, "/pcall-rep");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "pcall: false\n");
    assert_ok(&s);
    assert_eq!(s.worker_pids(), pids);
}

#[test]
fn unknown_backend_is_500() {
    let s = start(site(&[]), FAILURES);
    assert_500(&get(&s, "/unknown-backend"));
    wait_log_line(&s, &["/unknown-backend", "unknown backend 'nope'"]);
    assert_ok(&s);
}

#[test]
fn a_config_time_decision_for_an_unknown_backend_refuses_the_start() {
    // It used to start and then fail every request it answered, with no config position.
    let dir = TempDir::new("route");
    std::fs::create_dir_all(dir.path().join("www")).unwrap();
    let conf = dir.write(
        "site.lua",
        format!(
            "server {{ {} }}\nlocal bad = fastcgi(\"nope\", {{}})\nroute(function() return bad end)\n",
            common::BASE
        )
        .as_bytes(),
    );
    let out = Command::new(bin())
        .arg("-c")
        .arg(&conf)
        .output()
        .expect("run luahttpd");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "{}:2: fastcgi: unknown backend 'nope'",
            conf.display()
        )),
        "{err}"
    );
}

#[test]
fn header_injection_is_500_and_never_reaches_the_client() {
    let s = start(site(&[]), FAILURES);
    for path in ["/inject-value", "/inject-lf", "/inject-name"] {
        let mut c = s.connect();
        c.send(
            format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        let mut all = Vec::new();
        let _ = std::io::Read::read_to_end(&mut c.stream, &mut all);
        let text = String::from_utf8_lossy(&all);
        assert!(
            text.starts_with("HTTP/1.1 500 Internal Server Error\r\n"),
            "{path}: {text}"
        );
        assert!(!text.contains("Injected"), "{path}: {text}");
        assert!(
            !text.to_ascii_lowercase().contains("x-a:"),
            "{path}: {text}"
        );
        assert_ok(&s);
    }
    assert_500(&get(&s, "/reserved"));
    wait_log_line(
        &s,
        &["/reserved", "header 'Content-Length' is set by the server"],
    );
    assert_ok(&s);
}

#[test]
fn returning_something_that_is_not_a_decision_is_500() {
    let s = start(site(&[]), FAILURES);
    assert_500(&get(&s, "/not-a-decision"));
    wait_log_line(&s, &["/not-a-decision", "returned a string"]);
    assert_ok(&s);
    assert_500(&get(&s, "/table"));
    wait_log_line(&s, &["/table", "returned a table"]);
    assert_ok(&s);
}

#[test]
fn assigning_a_global_or_a_library_field_is_500() {
    let s = start(site(&[]), FAILURES);
    assert_500(&get(&s, "/global"));
    let line = wait_log_line(&s, &["/global", "assignment to undeclared global 'leaked'"]);
    let at = format!("site.lua:{}", line_of(FAILURES, "GLOBAL_LINE"));
    assert!(line.contains(&at), "no {at} in: {line}");
    assert_ok(&s);

    assert_500(&get(&s, "/lib"));
    wait_log_line(&s, &["/lib", "libraries are read-only"]);
    assert_ok(&s);
    // Finalizers would run outside the limits: refused.
    assert_500(&get(&s, "/gc"));
    wait_log_line(&s, &["/gc", "__gc is not available"]);
    assert_ok(&s);
}

#[test]
fn sandbox_hides_io_os_execute_load_require_and_the_config_helpers() {
    let rest = r#"
local captured = "config-time value"
route(function(req)
  local p = req.path
  if p == "/ok" then return respond(200, "ok\n") end
  if p == "/globals" then
    local names = { "io", "load", "loadfile", "dofile", "require", "package", "debug",
                    "coroutine", "server", "include", "exists", "read_file", "route" }
    local out = {}
    for _, n in ipairs(names) do out[#out + 1] = n .. "=" .. tostring(_G[n]) end
    out[#out + 1] = "os.execute=" .. tostring(os.execute)
    out[#out + 1] = "os.exit=" .. tostring(os.exit)
    out[#out + 1] = "os.remove=" .. tostring(os.remove)
    out[#out + 1] = "os.getenv=" .. type(os.getenv)
    out[#out + 1] = "os.time=" .. type(os.time)
    out[#out + 1] = "string.dump=" .. tostring(string.dump)
    out[#out + 1] = "method dump=" .. tostring(("").dump)
    out[#out + 1] = "upper=" .. ("abc"):upper()
    out[#out + 1] = "captured=" .. captured
    return respond(200, table.concat(out, "\n") .. "\n")
  end
  if p == "/io-open" then return respond(200, tostring(io.open("/etc/passwd"))) end
  if p == "/execute" then return respond(200, tostring(os.execute("true"))) end
  if p == "/load" then return respond(200, tostring(load("return 1")())) end
  if p == "/require" then return respond(200, tostring(require("os"))) end
  if p == "/collect" then collectgarbage("collect") end
end)
"#;
    let s = start(site(&[]), rest);
    let r = get(&s, "/globals");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.text(),
        "io=nil\nload=nil\nloadfile=nil\ndofile=nil\nrequire=nil\npackage=nil\ndebug=nil\n\
         coroutine=nil\nserver=nil\ninclude=nil\nexists=nil\nread_file=nil\nroute=nil\n\
         os.execute=nil\nos.exit=nil\nos.remove=nil\nos.getenv=function\nos.time=function\n\
         string.dump=nil\nmethod dump=nil\nupper=ABC\ncaptured=config-time value\n"
    );
    for path in ["/io-open", "/execute", "/load", "/require", "/collect"] {
        assert_500(&get(&s, path));
        wait_log_line(&s, &[path, "route: Lua error"]);
        assert_ok(&s);
    }
}

// ---------------------------------------------------------------------------------------------
// Per-worker state
// ---------------------------------------------------------------------------------------------

#[test]
fn upvalue_counter_persists_across_requests_on_the_same_worker() {
    let rest = r#"
local hits = 0
route(function(req)
  if req.path == "/count" then
    hits = hits + 1
    return respond(200, tostring(hits))
  end
  if req.path == "/error" then hits = hits + 100; error("after the increment") end
  if req.path == "/loop" then while true do end end
  return respond(200, "ok\n")
end)
"#;
    let s = start(site(&[]), rest);
    let pids = s.worker_pids();
    // Fresh connections and one kept-alive connection: the same worker, the same state.
    assert_eq!(get(&s, "/count").text(), "1");
    assert_eq!(get(&s, "/count").text(), "2");
    let mut c: Client = s.connect();
    for want in ["3", "4", "5"] {
        c.send(b"GET /count HTTP/1.1\r\nHost: test\r\n\r\n");
        assert_eq!(c.response(false).text(), want);
    }
    // A failed call keeps what it changed before it failed; the state goes on.
    assert_500(&get(&s, "/error"));
    assert_500(&get(&s, "/loop"));
    assert_eq!(get(&s, "/count").text(), "106");
    assert_eq!(s.worker_pids(), pids);
}

// ---------------------------------------------------------------------------------------------
// The command line
// ---------------------------------------------------------------------------------------------

#[test]
fn check_flag_refuses_a_route_that_is_not_a_function() {
    let dir = site(&[]);
    let conf = dir.write(
        "site.lua",
        b"server { listen = '127.0.0.1:8080', root = 'www' }\nroute(42)\nroute({})\n",
    );
    let name = conf.to_str().unwrap();
    let (code, out, err) = run_cli(&["-t", "-c", name]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(!out.contains("Syntax OK"), "{out}");
    assert!(
        err.lines()
            .any(|l| l.starts_with(&format!("{name}:2:")) && l.contains("route expects a function")),
        "{err}"
    );
}

#[test]
fn check_flag_accepts_a_good_route() {
    let dir = site(&[]);
    let conf = dir.write(
        "site.lua",
        b"server { listen = '127.0.0.1:8080', root = 'www' }\n\
          route(function(req) return respond(200, 'x') end)\n",
    );
    let (code, out, err) = run_cli(&["-t", "-c", conf.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "Syntax OK");
}

/// Runs `luahttpd -t -c <example>` from the source tree with `env` added.
fn check_example(example: &str, env: &[(&str, &str)], remove: &[&str]) -> (i32, String, String) {
    let root = env!("CARGO_MANIFEST_DIR");
    let path = format!("{root}/{example}");
    let mut cmd = Command::new(bin());
    cmd.args(["-t", "-c", &path]).current_dir(root);
    for (k, v) in env {
        cmd.env(k, v);
    }
    for k in remove {
        cmd.env_remove(k);
    }
    let out = cmd.output().expect("run");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One `-t` run of an example: its path, variables to set, variables to remove.
type ExampleRun<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<&'a str>);

#[test]
fn check_flag_accepts_the_bundled_routing_examples() {
    let root = env!("CARGO_MANIFEST_DIR");
    let examples = format!("{root}/examples");
    // gateway.lua's admin socket, in a folder that exists (the check refuses a missing one).
    let admin_dir = TempDir::new("gateway-check");
    let admin_sock = admin_dir.path().join("gw.sock").display().to_string();
    let runs: [ExampleRun; 7] = [
        // routing.lua finds its folder from EXAMPLES_DIR, or from $PWD in the source tree.
        (
            "examples/routing.lua",
            vec![("EXAMPLES_DIR", &examples)],
            vec![],
        ),
        (
            "examples/routing.lua",
            vec![("PWD", root)],
            vec!["EXAMPLES_DIR"],
        ),
        // Without php-cgi the FastCGI parts are left out.
        (
            "examples/routing.lua",
            vec![
                ("EXAMPLES_DIR", &examples),
                ("PHP_CGI", "/nonexistent/php-cgi"),
            ],
            vec![],
        ),
        ("examples/appliance.lua", vec![], vec!["LISTEN"]),
        (
            "examples/appliance.lua",
            vec![
                ("LISTEN", "127.0.0.1:8080 [::1]:8080"),
                ("PHP_CGI", "/nonexistent/php-cgi"),
            ],
            vec![],
        ),
        // The rate-limited API gateway (issue 13): its root is examples/www; UPSTREAM,
        // PORT and ADMIN_SOCKET are optional (the check binds nothing and calls nothing, so
        // an upstream address nobody answers on is fine).
        (
            "examples/gateway.lua",
            vec![],
            vec!["PORT", "UPSTREAM", "ADMIN_SOCKET"],
        ),
        (
            "examples/gateway.lua",
            vec![
                ("PORT", "18080"),
                ("UPSTREAM", "http://127.0.0.1:9"),
                ("ADMIN_SOCKET", &admin_sock),
            ],
            vec![],
        ),
    ];
    for (example, env, remove) in &runs {
        let (code, out, err) = check_example(example, env, remove);
        assert_eq!(code, 0, "{example} {env:?}: {out}{err}");
        assert_eq!(out.trim(), "Syntax OK", "{example} {env:?}");
    }
}

#[test]
fn routing_example_without_its_folder_is_refused_by_the_check() {
    // No EXAMPLES_DIR and a $PWD that is not the source tree: a clear error, not a bad root.
    let (code, _, err) = check_example("examples/routing.lua", &[("PWD", "/")], &["EXAMPLES_DIR"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("set EXAMPLES_DIR"), "{err}");
}

#[test]
fn appliance_example_shows_the_maintenance_page_while_the_flag_exists() {
    // The example itself, included from a config that fakes its environment (os.getenv is
    // the example's only input); its relative paths then resolve in this temporary folder.
    let dir = site(&[("index.html", b"home\n"), ("x.php", b"<?php echo 1;")]);
    dir.write("maintenance/index.html", b"<h1>maintenance</h1>\n");
    let flag = dir.path().join("flag");
    let example = format!("{}/examples/appliance.lua", env!("CARGO_MANIFEST_DIR"));
    let text = r#"
local fake = { LISTEN = "127.0.0.1:0", WORKERS = "1", PHP_CGI = "/nonexistent/php-cgi",
               MAINTENANCE_FLAG = "@FLAG@" }
local real_getenv = os.getenv
os.getenv = function(k) return fake[k] or real_getenv(k) end
include "@EXAMPLE@"
"#
    .replace("@FLAG@", flag.to_str().unwrap())
    .replace("@EXAMPLE@", &example);
    let s = Server::start_config(dir, &text);

    let r = get(&s, "/");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "home\n");
    // Without PHP, PHP sources are never served as files.
    let r = get(&s, "/x.php");
    assert_eq!(r.status, 404);

    std::fs::write(&flag, b"").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let r = loop {
        let r = get(&s, "/");
        if r.status != 200 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(r.status, 503);
    assert_eq!(r.text(), "<h1>maintenance</h1>\n");
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(r.header("retry-after"), Some("120"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let r = get(&s, "/health");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "ok\n");

    std::fs::remove_file(&flag).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let r = loop {
        let r = get(&s, "/");
        if r.status != 503 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "home\n");
}
