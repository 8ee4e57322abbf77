//! Virtual hosts against the real binary: Host matched without case, port and trailing dot,
//! aliases, unknown hosts to `server{}` or `default_site`, a site's route function and
//! headers, reload swapping sites, and `-t`/`-p`.

mod common;

use common::{raw, wait_for, Response, Server, TempDir, BASE};
use std::process::Command;
use std::time::Duration;

fn get(s: &Server, host: Option<&str>, path: &str) -> Response {
    let host = host.map_or(String::new(), |h| format!("Host: {h}\r\n"));
    raw(
        &s.addr,
        format!("GET {path} HTTP/1.1\r\n{host}Connection: close\r\n\r\n").as_bytes(),
    )
}

fn dir() -> TempDir {
    let dir = TempDir::new("vhosts");
    dir.write("www/index.html", b"main site");
    dir.write("one/index.html", b"site one");
    dir.write("one/page.txt", b"one page");
    dir.write("two/index.html", b"site two files");
    dir
}

const SITES: &str = r#"
site "example.com" {
  root = "one",
  aliases = { "www.example.com", "*.apps.example.com" },
  headers = { ["X-Site"] = "one" },
}
site "other.test" {
  root = "two",
  route = function(req)
    if req.path == "/hello" then return respond(200, "hello from two") end
  end,
}
"#;

fn server(extra_server: &str) -> Server {
    let config = format!("server {{ {BASE}, workers = 1, {extra_server} }}\n{SITES}");
    Server::start_config(dir(), &config)
}

#[test]
fn host_is_matched_without_case_port_and_trailing_dot() {
    let s = server("");
    for host in [
        "example.com",
        "EXAMPLE.com",
        "example.com.",
        "example.com:8080",
        "Example.COM.:80",
        "www.example.com",
        "x.apps.example.com",
    ] {
        let r = get(&s, Some(host), "/");
        assert_eq!(r.status, 200, "{host}");
        assert_eq!(r.body, b"site one", "{host}");
        assert_eq!(r.header("x-site"), Some("one"), "{host}");
    }
    let r = get(&s, Some("example.com"), "/page.txt");
    assert_eq!(r.body, b"one page");
    // A site's file is not in the main site, and the other way round.
    assert_eq!(get(&s, Some("unknown.test"), "/page.txt").status, 404);
    let r = get(&s, Some("unknown.test"), "/");
    assert_eq!(r.body, b"main site");
    assert_eq!(r.header("x-site"), None);
    // HTTP/1.0 without Host: the main site.
    let r = raw(&s.addr, b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(r.body, b"main site");
}

#[test]
fn a_site_has_its_own_route_function() {
    let s = server("");
    let r = get(&s, Some("other.test:8080"), "/hello");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"hello from two");
    // Falling through the route: the site's own files.
    assert_eq!(get(&s, Some("other.test"), "/").body, b"site two files");
    // The route belongs to other.test only.
    assert_eq!(get(&s, Some("example.com"), "/hello").status, 404);
    assert_eq!(get(&s, Some("nowhere"), "/hello").status, 404);
}

#[test]
fn unknown_hosts_go_to_default_site_when_set() {
    let s = server(r#"default_site = "other.test""#);
    assert_eq!(get(&s, Some("unknown.test"), "/").body, b"site two files");
    assert_eq!(
        get(&s, Some("unknown.test"), "/hello").body,
        b"hello from two"
    );
    assert_eq!(get(&s, Some("example.com"), "/").body, b"site one");
}

#[test]
fn reload_swaps_the_sites() {
    let s = server("");
    assert_eq!(get(&s, Some("new.test"), "/").body, b"main site");
    s.dir.write("three/index.html", b"site three");
    let config = format!(
        "server {{ {BASE}, workers = 1 }}\n{SITES}\nsite \"new.test\" {{ root = \"three\" }}\n"
    );
    s.dir.write("site.lua", config.as_bytes());
    s.signal(libc::SIGUSR1);
    wait_for(
        "the new site after the reload",
        Duration::from_secs(10),
        || get(&s, Some("new.test"), "/").body == b"site three",
    );
    assert_eq!(get(&s, Some("example.com"), "/").body, b"site one");
}

#[test]
fn check_reports_each_site_and_print_shows_them() {
    let d = dir();
    let conf = d.write(
        "site.lua",
        b"server { root = \"www\" }\n\
          site \"good.test\" { root = \"one\", aliases = { \"alias.test\" } }\n\
          site \"bad.test\" {\n  root = \"missing\",\n}\n\
          site \"dup.test\" { root = \"two\", aliases = { \"alias.test\" } }\n",
    );
    let out = Command::new(common::bin())
        .args(["-t", "-c"])
        .arg(&conf)
        .output()
        .expect("-t");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("site.lua:4: site 'bad.test': root"), "{err}");
    let conf = d.write(
        "ok.lua",
        b"server { root = \"www\", default_site = \"good.test\" }\n\
          site \"good.test\" { root = \"one\", aliases = { \"Alias.Test.\" }, headers = { [\"X-A\"] = \"1\" } }\n",
    );
    let out = Command::new(common::bin())
        .args(["-p", "-c"])
        .arg(&conf)
        .output()
        .expect("-p");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("site \"good.test\" {"), "{text}");
    assert!(text.contains("aliases = { \"alias.test\" }"), "{text}");
    assert!(text.contains("headers = { [\"X-A\"] = \"1\" }"), "{text}");
    // Duplicate hosts across sites are refused.
    let conf = d.write(
        "dup.lua",
        b"server { root = \"www\" }\n\
          site \"a.test\" { root = \"one\", aliases = { \"b.test\" } }\n\
          site \"b.test\" { root = \"two\" }\n",
    );
    let out = Command::new(common::bin())
        .args(["-t", "-c"])
        .arg(&conf)
        .output()
        .expect("-t");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("host 'b.test' is already site 'a.test'"),
        "{err}"
    );
}

#[test]
fn a_site_without_a_route_uses_the_server_route() {
    let config = format!(
        "server {{ {BASE}, workers = 1 }}\n\
         route(function(req) if req.path == \"/main\" then return respond(200, \"main route\") end end)\n\
         {SITES}"
    );
    let s = Server::start_config(dir(), &config);
    assert_eq!(get(&s, Some("nowhere"), "/main").body, b"main route");
    assert_eq!(get(&s, Some("example.com"), "/main").body, b"main route");
    // other.test has its own route, which replaces server{}'s.
    assert_eq!(get(&s, Some("other.test"), "/main").status, 404);
    assert_eq!(
        get(&s, Some("other.test"), "/hello").body,
        b"hello from two"
    );
}

/// Review item 5: a site's error page comes from its own root, not `server{}`'s; a site
/// without the page file gets the built-in page, never the main site's.
#[test]
fn a_site_s_error_page_comes_from_its_own_root() {
    let dir = dir();
    dir.write("www/404.html", b"main not found");
    dir.write("one/404.html", b"one not found");
    let config = format!(
        "server {{ {BASE}, workers = 1, error_pages = {{ [404] = \"/404.html\" }} }}\n{SITES}"
    );
    let s = Server::start_config(dir, &config);
    let r = get(&s, Some("example.com"), "/nope");
    assert_eq!(r.status, 404);
    assert_eq!(r.body, b"one not found");
    let r = get(&s, Some("unknown.test"), "/nope");
    assert_eq!(r.status, 404);
    assert_eq!(r.body, b"main not found");
    let r = get(&s, Some("other.test"), "/nope");
    assert_eq!(r.status, 404);
    assert_ne!(r.body, b"main not found");
}
