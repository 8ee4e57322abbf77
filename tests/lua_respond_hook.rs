//! `respond_hook(function(req, res) ... end)` on every kind of response (issue 13): static
//! files, in-memory replies, 404s, refused heads (400, with req = nil), FastCGI responses and
//! a dead backend's 502; an error in the hook leaves the response unchanged and is logged.

mod common;
mod fcgi_common;
mod proxy_common;

use common::*;
use fcgi_common::{config_text, site_dir, Fcgi, Opts};

const HOOK: &str = r#"
respond_hook(function(req, res)
  res.headers["X-Hooked"] = tostring(res.status) .. " " .. (req and req.path or "no-req")
  if res.headers["x-remove-me"] then res.headers["X-Remove-Me"] = nil end
  if req and req.path == "/fails" then error("hook failed on purpose") end
  if req and req.path == "/list" then res.headers["X-Two"] = { "a", "b" } end
  if req and req.path == "/bad-header" then res.headers["Content-Length"] = "1" end
end)
"#;

const ROUTE: &str = r#"
route(function(req)
  if req.path == "/mem" or req.path == "/fails" or req.path == "/list" or req.path == "/bad-header" then
    return respond(200, "mem\n", { ["X-Remove-Me"] = "yes", ["X-Kept"] = "k" })
  end
end)
"#;

fn start() -> Server {
    let dir = TempDir::new("lua-hook");
    dir.write("www/a.txt", b"static\n");
    let config = format!("server {{ {BASE} }}\n{HOOK}{ROUTE}");
    Server::start_config(dir, &config)
}

#[test]
fn the_hook_sees_and_edits_every_response_kind() {
    let s = start();
    let r = s.get("/a.txt");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "static\n");
    assert_eq!(r.header("x-hooked"), Some("200 /a.txt"));
    assert!(r.header("last-modified").is_some());

    let r = s.get("/mem");
    assert_eq!(r.text(), "mem\n");
    assert_eq!(r.header("x-hooked"), Some("200 /mem"));
    assert_eq!(r.header("x-remove-me"), None, "{:?}", r.header_list);
    assert_eq!(r.header("x-kept"), Some("k"));

    let r = s.get("/missing");
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-hooked"), Some("404 /missing"));

    let r = s.get("/list");
    let twos: Vec<&str> = r
        .header_list
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("x-two"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(twos, ["a", "b"]);

    // A head refused before it was parsed: req is nil.
    let r = raw(&s.addr, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
    assert_eq!(r.status, 400);
    assert_eq!(r.header("x-hooked"), Some("400 no-req"));
}

#[test]
fn a_failing_hook_leaves_the_response_unchanged_and_is_logged() {
    let s = start();
    let r = s.get("/fails");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "mem\n");
    // The hook's edits before the error are dropped with it.
    assert_eq!(r.header("x-hooked"), None);
    assert_eq!(r.header("x-remove-me"), Some("yes"));
    let r = s.get("/bad-header");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-hooked"), None);
    assert_eq!(r.header("content-length"), Some("4"));
    wait_for(
        "the hook errors logged",
        std::time::Duration::from_secs(5),
        || {
            let log = s.log_text();
            log.contains("respond_hook (GET /fails)")
                && log.contains("hook failed on purpose")
                && log.contains("site.lua:6: hook failed on purpose")
                && log.contains("'Content-Length' is set by the server")
        },
    );
    // The worker goes on serving.
    assert_eq!(s.get("/mem").status, 200);
}

#[test]
fn fastcgi_responses_and_backend_errors_pass_the_hook() {
    let dir = site_dir();
    let mut config = config_text(dir.path(), &Opts::default());
    config.push_str(HOOK);
    let f = Fcgi::start_in(dir, &config);
    let r = f.server.get("/t.php?mode=status&code=201");
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("x-hooked"), Some("201 /t.php"));
    assert!(r.text().contains("status 201\n"), "{}", r.text());
    // The backend closes before its head: 502, hooked too.
    let r = f.server.get("/t.php?mode=diehead");
    assert_eq!(r.status, 502);
    assert_eq!(r.header("x-hooked"), Some("502 /t.php"));
}

/// Review item 2: CGI and proxied responses pass the hook too, and the hook's `req` names the
/// real client (a trusted X-Forwarded-For), not the socket's peer. Item 4: CGI's REMOTE_ADDR is
/// that client as well.
#[test]
fn cgi_and_proxied_responses_pass_the_hook_with_the_real_client() {
    let up = proxy_common::Upstream::start("app");
    let dir = TempDir::new("lua-hook-backends");
    dir.write("www/a.txt", b"static\n");
    dir.write(
        "cgi-bin/who.sh",
        b"#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\necho \"remote=$REMOTE_ADDR\"\n",
    );
    let config = format!(
        "server {{ {BASE}, trusted_proxies = {{ \"127.0.0.1\" }} }}\n\
         cgi {{ prefix = \"/cgi-bin/\", root = \"cgi-bin\", interpreters = {{ [\".sh\"] = \"/bin/sh\" }} }}\n\
         upstream \"app\" {{ address = \"{}\" }}\n\
         route(function(req)\n  if req.path == \"/api/name\" then return proxy(\"app\", {{ path = \"/name\" }}) end\nend)\n\
         respond_hook(function(req, res)\n  res.headers[\"X-Who\"] = tostring(res.status) .. \" \" .. req.remote_addr .. \" \" .. req.scheme\nend)\n",
        up.addr
    );
    let s = Server::start_config(dir, &config);
    let xff = "X-Forwarded-For: 203.0.113.9\r\n";
    let ask = |target: &str| {
        raw(
            &s.addr,
            format!("GET {target} HTTP/1.1\r\nHost: t\r\n{xff}Connection: close\r\n\r\n")
                .as_bytes(),
        )
    };
    let r = ask("/a.txt");
    assert_eq!(r.header("x-who"), Some("200 203.0.113.9 http"));
    let r = ask("/cgi-bin/who.sh");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-who"), Some("200 203.0.113.9 http"));
    assert!(r.text().contains("remote=203.0.113.9"), "{}", r.text());
    let r = ask("/api/name");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "app");
    assert_eq!(r.header("x-who"), Some("200 203.0.113.9 http"));
}
