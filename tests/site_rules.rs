//! Per-site rules against the real binary: a `site{}` block's own `auth` and `access` beside
//! `server{}`'s, checked by `-t` and shown by `-p`; `dotfiles = true | false` as well as
//! `"allow" | "deny"`.

mod common;
mod fcgi_common;
mod proxy_common;

use base64::Engine;
use common::{raw, Response, Server, TempDir, BASE};
use std::process::Command;

fn get(s: &Server, host: &str, path: &str, auth: Option<(&str, &str)>) -> Response {
    let auth = auth.map_or(String::new(), |(u, p)| {
        let b = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        format!("Authorization: Basic {b}\r\n")
    });
    raw(
        &s.addr,
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n")
            .as_bytes(),
    )
}

fn dir() -> TempDir {
    let dir = TempDir::new("site-rules");
    let hash = luahttpd::auth::apr1::hash(b"secret", b"s4ltS4lt");
    dir.write("a.htpasswd", format!("alice:{hash}\n").as_bytes());
    for root in ["www", "a", "b"] {
        for f in [
            "admin/x.txt",
            "lan/x.txt",
            "internal/x.txt",
            "open.txt",
            ".env",
        ] {
            dir.write(&format!("{root}/{f}"), format!("{root} {f}").as_bytes());
        }
    }
    dir
}

const CONFIG: &str = r#"
site "a.test" {
  root = "a",
  auth = { { prefix = "/admin/", realm = "Site A", users = "a.htpasswd" } },
  access = { { prefix = "/lan/", deny = { "127.0.0.0/8", "::1" } } },
  dotfiles = true,
}
site "b.test" { root = "b" }
"#;

fn config() -> String {
    format!(
        "server {{ {BASE}, workers = 1, dotfiles = false, \
         access = {{ {{ prefix = \"/internal/\", deny = {{ \"all\" }} }} }} }}\n{CONFIG}"
    )
}

#[test]
fn a_site_has_its_own_auth_and_access_beside_the_server_s() {
    let s = Server::start_config(dir(), &config());
    // Site a: its auth prefix asks for a user of its file.
    let r = get(&s, "a.test", "/admin/x.txt", None);
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"Site A\", charset=\"UTF-8\"")
    );
    assert_eq!(
        get(&s, "a.test", "/admin/x.txt", Some(("alice", "wrong"))).status,
        401
    );
    let r = get(&s, "a.test", "/admin/x.txt", Some(("alice", "secret")));
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "a admin/x.txt");
    // Its network rule refuses loopback under /lan/.
    assert_eq!(get(&s, "a.test", "/lan/x.txt", None).status, 403);
    assert_eq!(get(&s, "a.test", "/open.txt", None).status, 200);
    // The server's own rule still holds on the site.
    assert_eq!(get(&s, "a.test", "/internal/x.txt", None).status, 403);

    // Site b and the server's own site have none of site a's rules.
    for host in ["b.test", "unknown.test"] {
        let r = get(&s, host, "/admin/x.txt", None);
        assert_eq!(r.status, 200, "{host}");
        assert_eq!(get(&s, host, "/lan/x.txt", None).status, 200, "{host}");
        assert_eq!(get(&s, host, "/internal/x.txt", None).status, 403, "{host}");
    }
}

#[test]
fn dotfiles_takes_true_and_false() {
    let s = Server::start_config(dir(), &config());
    // server{} says dotfiles = false: denied (404), in site b too (it inherits).
    assert_eq!(get(&s, "unknown.test", "/.env", None).status, 404);
    assert_eq!(get(&s, "b.test", "/.env", None).status, 404);
    // Site a says dotfiles = true.
    let r = get(&s, "a.test", "/.env", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "a .env");
}

fn run(args: &[&str], conf: &std::path::Path) -> (bool, String) {
    let o = Command::new(common::bin())
        .args(args)
        .arg(conf)
        .output()
        .expect("run luahttpd");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

#[test]
fn check_reports_bad_site_rules_and_print_shows_them() {
    let d = dir();
    let conf = d.write("site.lua", config().as_bytes());
    let (ok, text) = run(&["-p", "-c"], &conf);
    assert!(ok, "{text}");
    assert!(text.contains("dotfiles = \"deny\""), "{text}");
    assert!(text.contains("dotfiles = \"allow\""), "{text}");
    assert!(
        text.contains("auth = { { prefix = \"/admin/\", realm = \"Site A\", users = "),
        "{text}"
    );
    assert!(
        text.contains("access = { { prefix = \"/lan/\", allow = {  }, deny = { \"127.0.0.0/8\", \"::1/128\" } } }"),
        "{text}"
    );

    // A site's rules are checked as the server's are: a missing file, a bad network, a
    // dotfiles value that is neither.
    let bad = format!(
        "server {{ {BASE} }}\n\
         site \"a.test\" {{ root = \"a\",\n\
           auth = {{ {{ prefix = \"/x/\", realm = \"X\", users = \"missing.htpasswd\" }} }},\n\
           access = {{ {{ prefix = \"/y/\", allow = {{ \"10.0.0.0/33\" }} }} }},\n\
           dotfiles = \"maybe\" }}\n"
    );
    let conf = d.write("bad.lua", bad.as_bytes());
    let (ok, text) = run(&["-t", "-c"], &conf);
    assert!(!ok, "{text}");
    assert!(text.contains("bad.lua:3"), "{text}");
    assert!(text.contains("missing.htpasswd"), "{text}");
    assert!(text.contains("bad.lua:4"), "{text}");
    assert!(text.contains("10.0.0.0/33"), "{text}");
    assert!(text.contains("dotfiles must be"), "{text}");
}

// ---------------------------------------------------------------------------------------------
// Headers on backend responses: server{}'s `headers` rules and a site's `headers`, on FastCGI,
// CGI and proxied answers below 400, never replacing what the backend sent.

const HEADERS_SERVER: &str =
    r#"headers = { ["/"] = { ["X-Frame-Options"] = "DENY" }, [".sh"] = { ["X-Script"] = "yes" } }"#;

fn header_site(root: &str) -> String {
    format!("site \"a.test\" {{ root = \"{root}\", headers = {{ [\"X-Site\"] = \"a\" }} }}\n")
}

#[test]
fn site_and_server_headers_reach_cgi_and_proxied_responses() {
    let up = proxy_common::Upstream::start("up");
    let d = TempDir::new("site-headers");
    d.write("www/index.html", b"main");
    d.write(
        "cgi-bin/ok.sh",
        b"printf 'Content-Type: text/plain\\r\\nX-Frame-Options: SAMEORIGIN\\r\\n\\r\\nok'\n",
    );
    d.write(
        "cgi-bin/missing.sh",
        b"printf 'Status: 404 Not Found\\r\\nContent-Type: text/plain\\r\\n\\r\\nno'\n",
    );
    let config = format!(
        "server {{ {BASE}, workers = 1, {HEADERS_SERVER} }}\n\
         cgi {{ root = \"cgi-bin\", interpreters = {{ [\".sh\"] = \"/bin/sh\" }} }}\n\
         upstream \"app\" {{ address = \"{}\", prefix = \"/name\" }}\n{}",
        up.addr,
        header_site("www")
    );
    let s = Server::start_config(d, &config);

    let r = get(&s, "a.test", "/cgi-bin/ok.sh", None);
    assert_eq!(r.status, 200, "{}", r.text());
    // The script's own X-Frame-Options stays, and is not doubled.
    assert_eq!(r.header("x-frame-options"), Some("SAMEORIGIN"));
    assert_eq!(
        r.header_list
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("x-frame-options"))
            .count(),
        1
    );
    assert_eq!(r.header("x-script"), Some("yes"));
    assert_eq!(r.header("x-site"), Some("a"));
    // Another host: the server's rules only.
    let r = get(&s, "other.test", "/cgi-bin/ok.sh", None);
    assert_eq!(r.header("x-site"), None);
    assert_eq!(r.header("x-script"), Some("yes"));
    // An error status gets none (nginx's add_header without `always`).
    let r = get(&s, "a.test", "/cgi-bin/missing.sh", None);
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-site"), None);
    assert_eq!(r.header("x-frame-options"), None);

    let r = get(&s, "a.test", "/name", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("x-site"), Some("a"));
    assert_eq!(r.header("x-script"), None);
}

#[test]
fn site_and_server_headers_reach_fastcgi_responses() {
    let dir = fcgi_common::site_dir();
    let mut config = fcgi_common::config_text(
        dir.path(),
        &fcgi_common::Opts {
            server_extra: HEADERS_SERVER,
            ..Default::default()
        },
    );
    config.push_str(&header_site("www"));
    let f = fcgi_common::Fcgi::start_in(dir, &config);
    let mut c = fcgi_common::Conn::connect(f.addr());
    c.send(b"GET /t.php HTTP/1.1\r\nHost: a.test\r\n\r\n");
    let r = c.response(false);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("x-site"), Some("a"));
    c.send(b"GET /t.php HTTP/1.1\r\nHost: b.test\r\n\r\n");
    let r = c.response(false);
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("x-site"), None);
}

// ---------------------------------------------------------------------------------------------
// A site's own `compress`, `error_pages`, path-rule `headers` and `expires`, in place of
// `server{}`'s for its requests; a site that sets none of them gets `server{}`'s.

/// A compressible page, well above compress.min_size.
fn page() -> String {
    "<p>a page of text that compresses well, well, well, well, well</p>\n".repeat(20)
}

/// Roots a/ and b/ with a compressible page, and each root's own error page.
fn statics_dir() -> TempDir {
    let d = TempDir::new("site-statics");
    let page = page();
    for root in ["www", "a", "b"] {
        d.write(&format!("{root}/page.html"), page.as_bytes());
        d.write(&format!("{root}/s.txt"), b"plain");
        d.write(
            &format!("{root}/e/site404.html"),
            format!("{root} site page").as_bytes(),
        );
        d.write(
            &format!("{root}/e/server404.html"),
            format!("{root} server page").as_bytes(),
        );
    }
    d
}

fn statics_server(server_extra: &str, sites: &str) -> Server {
    let d = statics_dir();
    let config = format!(
        "server {{ {BASE}, workers = 1, {server_extra} }}\n\
         {sites}\n\
         site \"b.test\" {{ root = \"b\" }}\n"
    );
    Server::start_config(d, &config)
}

fn get_ae(s: &Server, host: &str, path: &str, accept: &str) -> Response {
    raw(
        &s.addr,
        format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept-Encoding: {accept}\r\n\
             Connection: close\r\n\r\n"
        )
        .as_bytes(),
    )
}

#[test]
fn a_site_has_its_own_compress() {
    // The server does not compress; a.test does, b.test falls back to the server's (off).
    let s = statics_server(
        "",
        "site \"a.test\" { root = \"a\", compress = { encodings = { \"gzip\" } } }",
    );
    let a = get_ae(&s, "a.test", "/page.html", "gzip");
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-encoding"), Some("gzip"));
    let b = get_ae(&s, "b.test", "/page.html", "gzip");
    assert_eq!(b.header("content-encoding"), None);
    let main = get_ae(&s, "other.test", "/page.html", "gzip");
    assert_eq!(main.header("content-encoding"), None);

    // The server compresses; `compress = false` turns it off for a.test alone.
    let s = statics_server(
        "compress = { encodings = { \"gzip\" } }",
        "site \"a.test\" { root = \"a\", compress = false }",
    );
    let a = get_ae(&s, "a.test", "/page.html", "gzip");
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-encoding"), None);
    assert_eq!(a.body, page().as_bytes());
    let b = get_ae(&s, "b.test", "/page.html", "gzip");
    assert_eq!(b.header("content-encoding"), Some("gzip"));
}

#[test]
fn a_site_has_its_own_error_pages() {
    let s = statics_server(
        "error_pages = { [404] = \"/e/server404.html\" }",
        "site \"a.test\" { root = \"a\", error_pages = { [404] = \"/e/site404.html\" } }",
    );
    let a = get(&s, "a.test", "/missing", None);
    assert_eq!(a.status, 404);
    assert_eq!(a.text(), "a site page");
    // b.test sets none: the server's page, from b.test's own root.
    let b = get(&s, "b.test", "/missing", None);
    assert_eq!(b.status, 404);
    assert_eq!(b.text(), "b server page");

    // Only a site sets error pages: the server's own site keeps the built-in page.
    let s = statics_server(
        "",
        "site \"a.test\" { root = \"a\", error_pages = { [404] = \"/e/site404.html\" } }",
    );
    assert_eq!(get(&s, "a.test", "/missing", None).text(), "a site page");
    let main = get(&s, "other.test", "/missing", None);
    assert_eq!(main.status, 404);
    assert!(!main.text().contains("page"), "{}", main.text());
}

#[test]
fn a_site_has_its_own_header_rules() {
    let s = statics_server(
        "headers = { [\"/\"] = { [\"X-Frame-Options\"] = \"DENY\" } }",
        "site \"a.test\" { root = \"a\", headers = { [\".txt\"] = { [\"X-Txt\"] = \"a\" } } }",
    );
    let a = get(&s, "a.test", "/s.txt", None);
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-txt"), Some("a"));
    assert_eq!(
        a.header("x-frame-options"),
        None,
        "the site's rules replace the server's"
    );
    let a = get(&s, "a.test", "/page.html", None);
    assert_eq!(a.header("x-txt"), None);
    let b = get(&s, "b.test", "/s.txt", None);
    assert_eq!(b.header("x-frame-options"), Some("DENY"));
    assert_eq!(b.header("x-txt"), None);
}

#[test]
fn a_site_has_its_own_expires() {
    let s = statics_server(
        "expires = { [\".txt\"] = \"30d\" }",
        "site \"a.test\" { root = \"a\", expires = { [\".txt\"] = \"1h\" } }",
    );
    let a = get(&s, "a.test", "/s.txt", None);
    assert_eq!(a.header("cache-control"), Some("max-age=3600"));
    assert!(a.header("expires").is_some());
    let b = get(&s, "b.test", "/s.txt", None);
    assert_eq!(b.header("cache-control"), Some("max-age=2592000"));
}

#[test]
fn a_site_without_its_own_statics_gets_all_the_server_s() {
    let s = statics_server(
        "compress = { encodings = { \"gzip\" } }, \
         error_pages = { [404] = \"/e/server404.html\" }, \
         headers = { [\"/\"] = { [\"X-Frame-Options\"] = \"DENY\" } }, \
         expires = { [\".html\"] = \"2h\" }",
        "",
    );
    let b = get_ae(&s, "b.test", "/page.html", "gzip");
    assert_eq!(b.status, 200);
    assert_eq!(b.header("content-encoding"), Some("gzip"));
    assert_eq!(b.header("x-frame-options"), Some("DENY"));
    assert_eq!(b.header("cache-control"), Some("max-age=7200"));
    assert_eq!(get(&s, "b.test", "/nope", None).text(), "b server page");
}

#[test]
fn bad_site_statics_fail_the_check_with_their_line_and_print_shows_them() {
    let d = statics_dir();
    let good = format!(
        "server {{ {BASE} }}\n\
         site \"a.test\" {{ root = \"a\", compress = {{ encodings = {{ \"gzip\" }}, level = 2 }},\n\
           error_pages = {{ [404] = \"/e/site404.html\" }},\n\
           headers = {{ [\"/x/\"] = {{ [\"X-A\"] = \"1\" }} }}, expires = {{ [\".css\"] = \"1h\" }} }}\n"
    );
    let conf = d.write("good.lua", good.as_bytes());
    let (ok, text) = run(&["-p", "-c"], &conf);
    assert!(ok, "{text}");
    let site = &text[text.find("site \"a.test\"").expect("the site printed")..];
    assert!(site.contains("level = 2"), "{site}");
    assert!(
        site.contains("error_pages = { [404] = \"/e/site404.html\" }"),
        "{site}"
    );
    assert!(
        site.contains("headers = { [\"/x/\"] = { [\"X-A\"] = { \"1\" } } }"),
        "{site}"
    );
    assert!(site.contains("expires = { [\".css\"] = 3600 }"), "{site}");
    // What -p wrote loads back.
    let printed = d.write("printed.lua", text.as_bytes());
    let (ok, again) = run(&["-t", "-c"], &printed);
    assert!(ok, "{again}");

    let bad = format!(
        "server {{ {BASE} }}\n\
         site \"a.test\" {{ root = \"a\",\n\
           compress = {{ level = 12 }},\n\
           error_pages = {{ [200] = \"/e/x.html\" }},\n\
           headers = {{ [\"/x/\"] = {{ [\"Content-Length\"] = \"1\" }} }},\n\
           expires = {{ [\"x\"] = \"1h\" }} }}\n"
    );
    let conf = d.write("bad.lua", bad.as_bytes());
    let (ok, text) = run(&["-t", "-c"], &conf);
    assert!(!ok, "{text}");
    for line in ["bad.lua:3", "bad.lua:4", "bad.lua:5", "bad.lua:6"] {
        assert!(text.contains(line), "{line} missing in: {text}");
    }
    assert!(text.contains("site 'a.test'"), "{text}");
}

#[test]
fn a_site_s_compress_applies_to_its_fastcgi_responses() {
    let dir = fcgi_common::site_dir();
    let mut config = fcgi_common::config_text(dir.path(), &fcgi_common::Opts::default());
    config
        .push_str("site \"a.test\" { root = \"www\", compress = { encodings = { \"gzip\" } } }\n");
    let f = fcgi_common::Fcgi::start_in(dir, &config);
    let mut c = fcgi_common::Conn::connect(f.addr());
    for (host, coded) in [("a.test", Some("gzip")), ("b.test", None)] {
        c.send(
            format!(
                "GET /t.php?mode=huge&bytes=5000 HTTP/1.1\r\nHost: {host}\r\n\
                 Accept-Encoding: gzip\r\n\r\n"
            )
            .as_bytes(),
        );
        let r = c.response(false);
        assert_eq!(r.status, 200, "{host}");
        assert_eq!(r.header("content-encoding"), coded, "{host}");
    }
}
