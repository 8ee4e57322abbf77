//! Virtual hosts, the parts tests/vhosts.rs leaves out: a site's own proxy rules (`proxy = {
//! ["/prefix"] = "upstream" }`, in place of the upstreams' `prefix` rules), swapped by a
//! reload and checked by `-t`/`-p`; a site's `index`, its `mime` overrides, and its FastCGI
//! selection with SCRIPT_FILENAME and DOCUMENT_ROOT beneath its own root.

mod common;
mod fcgi_common;
mod proxy_common;

use common::{raw, wait_for, Response, Server, TempDir, BASE};
use fcgi_common::{fcgi_bin, lua_str};
use std::process::Command;
use std::time::Duration;

fn get(s: &Server, host: &str, path: &str) -> Response {
    raw(
        &s.addr,
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// `upstream "a"`, `"b"` (no prefix) and `"main"` (prefix `/name`, the server-wide rule), and
/// the sites: a.test and b.test proxy `/name` to a and b, c.test has no `proxy` (the
/// server-wide rule), d.test has `proxy = {}` (none at all).
fn proxy_config(a: &str, b: &str, main: &str, a_to: &str, b_to: &str) -> String {
    format!(
        "server {{ {BASE}, workers = 1 }}\n\
         upstream \"a\" {{ address = \"{a}\" }}\n\
         upstream \"b\" {{ address = \"{b}\" }}\n\
         upstream \"main\" {{ address = \"{main}\", prefix = \"/name\" }}\n\
         site \"a.test\" {{ root = \"one\", proxy = {{ [\"/name\"] = \"{a_to}\" }} }}\n\
         site \"b.test\" {{ root = \"two\", proxy = {{ [\"/name\"] = \"{b_to}\", [\"/static/\"] = \"{b_to}\" }} }}\n\
         site \"c.test\" {{ root = \"two\" }}\n\
         site \"d.test\" {{ root = \"two\", proxy = {{}} }}\n"
    )
}

#[test]
fn each_site_proxies_the_same_prefix_to_its_own_upstream() {
    let (ua, ub, um) = (
        proxy_common::Upstream::start("upstream a"),
        proxy_common::Upstream::start("upstream b"),
        proxy_common::Upstream::start("upstream main"),
    );
    let d = TempDir::new("vhost-proxy");
    d.write("www/index.html", b"main site");
    d.write("one/index.html", b"site one");
    d.write("two/name", b"two's own name file");
    d.write("two/static/x.txt", b"two static");
    let config = proxy_config(&ua.addr, &ub.addr, &um.addr, "a", "b");
    let s = Server::start_config(d, &config);

    let body = |host: &str, path: &str| {
        let r = get(&s, host, path);
        assert_eq!(r.status, 200, "{host}{path}: {}", r.text());
        r.body
    };
    // The same prefix, a different upstream per site: the upstream's name is the body.
    assert_eq!(body("a.test", "/name"), b"upstream a");
    assert_eq!(body("A.test.:8080", "/name"), b"upstream a");
    assert_eq!(body("b.test", "/name"), b"upstream b");
    // Outside its prefixes a site serves its own files.
    assert_eq!(body("a.test", "/"), b"site one");
    // The default site (an unknown host, or none) keeps the server-wide rule, as does a site
    // without `proxy`; `proxy = {}` turns proxying by prefix off for its site.
    assert_eq!(body("unknown.test", "/name"), b"upstream main");
    let r = raw(&s.addr, b"GET /name HTTP/1.0\r\n\r\n");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"upstream main"[..]));
    assert_eq!(body("c.test", "/name"), b"upstream main");
    assert_eq!(body("d.test", "/name"), b"two's own name file");
    assert_eq!(body("d.test", "/static/x.txt"), b"two static");
    // b.test's own `/static/` rule: to its upstream, which has no such path (404 from it).
    let r = get(&s, "b.test", "/static/x.txt");
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.header("server"), Some("luahttpd"));
    assert_eq!(ua.requests.load(std::sync::atomic::Ordering::SeqCst), 2);

    // A reload swaps the rules: a.test now goes to b and b.test to a.
    let config = proxy_config(&ua.addr, &ub.addr, &um.addr, "b", "a");
    s.dir.write("site.lua", config.as_bytes());
    let old = s.worker_pids();
    s.signal(libc::SIGUSR1);
    wait_for("a.test proxied to b", Duration::from_secs(10), || {
        get(&s, "a.test", "/name").body == b"upstream b"
    });
    // Until the old workers have stopped accepting, a new connection may still reach one of
    // them and its old rules: the checks below are of the new generation alone.
    wait_for("the old workers to exit", Duration::from_secs(10), || {
        old.iter().all(|p| !common::alive(*p))
    });
    assert_eq!(body("a.test", "/name"), b"upstream b");
    assert_eq!(body("b.test", "/name"), b"upstream a");
    assert_eq!(body("unknown.test", "/name"), b"upstream main");
}

fn run(args: &[&str], conf: &std::path::Path) -> (bool, String, String) {
    let out = Command::new(common::bin())
        .args(args)
        .arg(conf)
        .output()
        .expect("run luahttpd");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_reports_an_unknown_upstream_of_a_site_and_print_shows_its_rules() {
    let d = TempDir::new("vhost-proxy-check");
    d.write("www/index.html", b"main");
    d.write("one/index.html", b"one");
    let conf = d.write(
        "site.lua",
        b"server { root = \"www\" }\n\
          upstream \"app\" { address = \"127.0.0.1:9\" }\n\
          site \"one.test\" {\n  root = \"one\",\n  proxy = {\n    [\"/api/\"] = \"ap\",\n  },\n}\n",
    );
    let (ok, _, err) = run(&["-t", "-c"], &conf);
    assert!(!ok, "{err}");
    assert!(
        err.contains(
            "site.lua:6: site 'one.test': proxy: unknown upstream 'ap' for '/api/'; did you mean 'app'?"
        ),
        "{err}"
    );
    let conf = d.write(
        "ok.lua",
        b"server { root = \"www\" }\n\
          upstream \"app\" { address = \"127.0.0.1:9\" }\n\
          site \"one.test\" { root = \"one\", proxy = { [\"/api/\"] = \"app\", [\"/\"] = \"app\" } }\n",
    );
    let (ok, _, err) = run(&["-t", "-c"], &conf);
    assert!(ok, "{err}");
    let (ok, text, err) = run(&["-p", "-c"], &conf);
    assert!(ok, "{err}");
    assert!(
        text.contains("proxy = { [\"/\"] = \"app\", [\"/api/\"] = \"app\" }"),
        "{text}"
    );
    // What -p prints loads again.
    let again = d.write("printed.lua", text.as_bytes());
    let (ok, _, err) = run(&["-t", "-c"], &again);
    assert!(ok, "{err}");
}

#[test]
fn a_site_has_its_own_index_and_mime_types() {
    let d = TempDir::new("vhost-index-mime");
    d.write("www/index.html", b"main index");
    d.write("www/home.html", b"main home");
    d.write("www/f.foo", b"main foo");
    d.write("www/f.x", b"main x");
    d.write("one/index.html", b"one index");
    d.write("one/home.html", b"one home");
    d.write("one/sub/home.html", b"one sub home");
    d.write("one/only-index/index.html", b"one only index");
    d.write("one/f.foo", b"one foo");
    d.write("one/f.x", b"one x");
    d.write("one/f.css", b"one css");
    let config = format!(
        "server {{ {BASE}, workers = 1, mime = {{ [\".foo\"] = \"application/x-foo\" }} }}\n\
         site \"one.test\" {{ root = \"one\", index = {{ \"home.html\" }},\n\
           mime = {{ [\".x\"] = \"text/x-one\", [\".css\"] = \"text/x-one-css\" }} }}\n\
         site \"two.test\" {{ root = \"one\", mime = {{ [\".FOO\"] = \"text/x-two-foo\" }} }}\n"
    );
    let s = Server::start_config(d, &config);

    // index: the site's list in place of server{}'s.
    let r = get(&s, "one.test", "/");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"one home"[..]));
    assert_eq!(get(&s, "one.test", "/sub/").body, b"one sub home");
    // index.html is not the site's index: that directory has none (403, no listing).
    assert_eq!(get(&s, "one.test", "/only-index/").status, 403);
    assert_eq!(get(&s, "main.test", "/").body, b"main index");
    // Same root, no `index` of its own: server{}'s.
    assert_eq!(get(&s, "two.test", "/").body, b"one index");
    assert_eq!(get(&s, "two.test", "/only-index/").body, b"one only index");

    let ct = |host: &str, path: &str| {
        let r = get(&s, host, path);
        assert_eq!(r.status, 200, "{host}{path}");
        r.header("content-type").map(str::to_string)
    };
    // mime: the site's entries on top of server{}'s, overriding a built-in type too.
    assert_eq!(
        ct("one.test", "/f.x").as_deref(),
        Some("text/x-one; charset=utf-8")
    );
    assert_eq!(
        ct("one.test", "/f.css").as_deref(),
        Some("text/x-one-css; charset=utf-8")
    );
    assert_eq!(
        ct("one.test", "/f.foo").as_deref(),
        Some("application/x-foo")
    );
    // Another site's override (its suffix written in upper case) is its own.
    assert_eq!(
        ct("two.test", "/f.foo").as_deref(),
        Some("text/x-two-foo; charset=utf-8")
    );
    let builtin_css = ct("two.test", "/f.css");
    assert!(
        builtin_css.as_deref().unwrap_or("").starts_with("text/css"),
        "{builtin_css:?}"
    );
    assert_ne!(
        ct("two.test", "/f.x").as_deref(),
        Some("text/x-one; charset=utf-8")
    );
    // The server's own site has neither site's types.
    assert_eq!(
        ct("main.test", "/f.foo").as_deref(),
        Some("application/x-foo")
    );
    assert_ne!(
        ct("main.test", "/f.x").as_deref(),
        Some("text/x-one; charset=utf-8")
    );
    assert!(ct("main.test", "/home.html")
        .unwrap_or_default()
        .starts_with("text/html"));
}

/// Two spawned test backends: "t" for `.php`, "u" mounted on `/app/`; sites pick them.
fn fcgi_config(dir: &std::path::Path) -> String {
    let mut config = fcgi_common::config_text(dir, &fcgi_common::Opts::default());
    config.push_str(&format!(
        "fastcgi \"u\" {{ spawn = {{ {} }}, socket = {} , prefix = \"/app/\" }}\n\
         site \"t.test\" {{ root = \"tsite\", fastcgi = {{ \"t\" }} }}\n\
         site \"u.test\" {{ root = \"usite\", fastcgi = {{ \"u\" }}, aliases = {{ \"www.u.test\" }} }}\n\
         site \"none.test\" {{ root = \"usite\", fastcgi = {{}} }}\n",
        lua_str(fcgi_bin()),
        lua_str(&format!("unix:{}", dir.join("u.sock").display())),
    ));
    config
}

fn fcgi_get(f: &fcgi_common::Fcgi, host: &str, target: &str) -> fcgi_common::Resp {
    let mut c = fcgi_common::Conn::connect(f.addr());
    c.send(format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
    c.response(false)
}

#[test]
fn a_site_picks_its_fastcgi_backends_and_gets_its_own_root_in_the_params() {
    let d = fcgi_common::site_dir();
    d.write("tsite/t.php", b"");
    d.write("tsite/app/t.php", b"");
    d.write("tsite/app/plain.txt", b"t site app file");
    d.write("usite/t.php", b"<?php usite source");
    d.write("usite/index.html", b"usite index");
    let config = fcgi_config(d.path());
    let f = fcgi_common::Fcgi::start_in(d, &config);
    let canon = |sub: &str| {
        std::fs::canonicalize(f.dir().join(sub))
            .expect("canonical")
            .to_string_lossy()
            .into_owned()
    };
    let (troot, uroot) = (canon("tsite"), canon("usite"));

    // t.test: .php scripts go to "t", with its own root as DOCUMENT_ROOT and SCRIPT_FILENAME.
    let r = fcgi_get(&f, "t.test", "/t.php/more?mode=params");
    assert_eq!(r.status, 200, "{}", r.text());
    let p = r.params();
    assert_eq!(p.get("DOCUMENT_ROOT"), Some(&troot), "{p:#?}");
    assert_eq!(p.get("SCRIPT_FILENAME"), Some(&format!("{troot}/t.php")));
    assert_eq!(p.get("SCRIPT_NAME").map(String::as_str), Some("/t.php"));
    assert_eq!(p.get("PATH_INFO").map(String::as_str), Some("/more"));
    assert_eq!(p.get("HTTP_HOST").map(String::as_str), Some("t.test"));
    // `check_local` looks beneath the site's root: www/ has t.php, tsite/ has no x.php.
    assert_eq!(fcgi_get(&f, "t.test", "/x.php").status, 404);
    // "u" is not t.test's: its /app/ prefix does not apply there, so the site's files are
    // served, and a .php script under /app/ still goes to "t" (not served as its source).
    let r = fcgi_get(&f, "t.test", "/app/plain.txt");
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"t site app file"[..])
    );
    let r = fcgi_get(&f, "t.test", "/app/t.php?mode=params");
    assert_eq!(r.status, 200, "{}", r.text());
    let p = r.params();
    assert_eq!(
        p.get("SCRIPT_FILENAME"),
        Some(&format!("{troot}/app/t.php"))
    );

    // u.test (and its alias): /app/ goes to "u", under its own root; .php is not its backend.
    for host in ["u.test", "www.u.test:8080"] {
        let r = fcgi_get(&f, host, "/app/users/1?mode=params");
        assert_eq!(r.status, 200, "{}", r.text());
        let p = r.params();
        assert_eq!(p.get("DOCUMENT_ROOT"), Some(&uroot), "{p:#?}");
        assert_eq!(p.get("SCRIPT_NAME").map(String::as_str), Some("/app"));
        assert_eq!(p.get("PATH_INFO").map(String::as_str), Some("/users/1"));
        assert_eq!(p.get("SCRIPT_FILENAME"), Some(&format!("{uroot}/app")));
    }
    let r = fcgi_get(&f, "u.test", "/t.php?mode=params");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"<?php usite source");
    assert_eq!(fcgi_get(&f, "u.test", "/").body, b"usite index");
    // `fastcgi = {}`: no backend at all.
    assert_eq!(fcgi_get(&f, "none.test", "/app/x").status, 404);

    // The server's own site: every backend's rules, beneath server{}'s root.
    let root = f.root.to_string_lossy().into_owned();
    let p = fcgi_get(&f, "other.test", "/t.php?mode=params").params();
    assert_eq!(p.get("DOCUMENT_ROOT"), Some(&root), "{p:#?}");
    assert_eq!(p.get("SCRIPT_FILENAME"), Some(&format!("{root}/t.php")));
    let p = fcgi_get(&f, "other.test", "/app/x?mode=params").params();
    assert_eq!(p.get("SCRIPT_NAME").map(String::as_str), Some("/app"));
    assert_eq!(p.get("DOCUMENT_ROOT"), Some(&root), "{p:#?}");
}
