//! Tests of loading whole config files: good configs, each kind of problem with its line,
//! includes, and the print round trip.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::*;

#[path = "no_feature_tests.rs"]
mod no_feature_tests;
#[cfg(feature = "tls")]
#[path = "tls_tests.rs"]
mod tls_tests;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("luahttpd-config-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // The folders the configs below put logs and sockets in: the server creates none.
        for sub in ["www", "run", "logs"] {
            std::fs::create_dir_all(dir.join(sub)).expect("create temp dir");
        }
        TempDir(dir)
    }

    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.0.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("create dir");
        }
        std::fs::write(&p, text).expect("write file");
        p
    }

    fn executable(&self, rel: &str) -> PathBuf {
        let p = self.write(rel, "#!/bin/sh\nexit 0\n");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        p
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Loads `text` as `site.lua` in `dir`, expecting errors; returns them as `file:line: message`
/// with the temp dir prefix removed from file names.
fn errors(dir: &TempDir, text: &str) -> Vec<String> {
    let p = dir.write("site.lua", text);
    match load_file(&p) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => {
            let prefix = format!("{}/", dir.path().display());
            e.0.iter()
                .map(|e| e.to_string().replace(&prefix, ""))
                .collect()
        }
    }
}

fn load_ok(dir: &TempDir, text: &str) -> Loaded {
    let p = dir.write("site.lua", text);
    match load_file(&p) {
        Ok(l) => l,
        Err(e) => panic!("unexpected errors:\n{e}"),
    }
}

/// True when some error is at `line` and contains `needle`.
fn has(errs: &[String], line: u32, needle: &str) -> bool {
    errs.iter()
        .any(|e| e.contains(&format!("site.lua:{line}: ")) && e.contains(needle))
}

#[test]
fn good_config() {
    let dir = TempDir::new();
    let php = dir.executable("bin/php-cgi");
    let loaded = load_ok(
        &dir,
        r#"
local port = 8000 + 80
server {
  listen   = { "127.0.0.1:" .. port, "[::1]:8080", "*:9090", "unix:run/site.sock" },
  workers  = 4,
  root     = "www",
  index    = "index.htm",
  server_name = "test",
  mime     = { [".WEBP"] = "image/webp" },
  error_log = "logs/error.log",
  access_log = "logs/access.log",
  pid_file = "run/luahttpd.pid",
  daemon   = true,
  limits   = { connections = 100, body_bytes = 1048576 * 16 },
  timeouts = { read_idle = 1.5, graceful = 10 },
}
fastcgi "php" {
  spawn = "bin/php-cgi -d x=1",
  procs = 3,
  socket = "unix:run/php.sock",
  env = { PHP_FCGI_CHILDREN = 0, MODE = "test" },
  extensions = { ".php" },
}
fastcgi "app" { address = { "127.0.0.1:9000", "unix:/run/app.sock" }, prefix = "/app/" }
route(function(req) return nil end)
"#,
    );
    let c = &loaded.config;
    let base = dir.path().canonicalize().expect("canonical temp dir");
    assert_eq!(c.file, base.join("site.lua"));
    assert_eq!(
        c.listen,
        vec![
            ListenAddr::Tcp("127.0.0.1:8080".parse().expect("addr")),
            ListenAddr::Tcp("[::1]:8080".parse().expect("addr")),
            ListenAddr::Tcp("0.0.0.0:9090".parse().expect("addr")),
            ListenAddr::Unix(base.join("run/site.sock")),
        ]
    );
    assert_eq!(c.workers, 4);
    assert_eq!(c.root, base.join("www"));
    assert_eq!(c.index, vec!["index.htm"]);
    assert_eq!(c.server_name, "test");
    assert_eq!(c.mime.get(".webp").map(String::as_str), Some("image/webp"));
    assert_eq!(c.error_log, LogTarget::File(base.join("logs/error.log")));
    assert_eq!(c.access_log, Some(base.join("logs/access.log")));
    assert_eq!(c.pid_file, Some(base.join("run/luahttpd.pid")));
    assert!(c.daemon);
    assert_eq!(c.limits.connections, 100);
    assert_eq!(c.limits.header_bytes, 8192);
    assert_eq!(c.limits.body_bytes, 16 * 1024 * 1024);
    assert_eq!(c.timeouts.read_idle, Duration::from_millis(1500));
    assert_eq!(c.timeouts.write_idle, Duration::from_secs(360));
    assert_eq!(c.timeouts.graceful, Duration::from_secs(10));
    assert!(c.has_route);
    assert!(loaded.route.is_some());

    assert_eq!(c.fastcgi.len(), 2);
    let php_def = &c.fastcgi[0];
    assert_eq!(php_def.name, "php");
    assert_eq!(
        php_def.defined_at,
        format!("{}:17", dir.path().join("site.lua").display())
    );
    let php_path = php.canonicalize().expect("canonical php");
    assert_eq!(
        php_def.spawn.as_deref().map(|a| a.len()),
        Some(3),
        "argv split on whitespace"
    );
    assert_eq!(
        php_def
            .spawn
            .as_ref()
            .map(|a| PathBuf::from(&a[0]).canonicalize().ok()),
        Some(Some(php_path))
    );
    assert_eq!(php_def.procs, 3);
    assert_eq!(
        php_def.socket,
        Some(ListenAddr::Unix(base.join("run/php.sock")))
    );
    assert_eq!(
        php_def.env.get("PHP_FCGI_CHILDREN").map(String::as_str),
        Some("0")
    );
    assert_eq!(php_def.extensions, vec![".php"]);
    assert!(php_def.check_local && php_def.keepalive);
    assert!(php_def.request_buffering, "buffering is the default");
    assert_eq!(php_def.connect_timeout, Duration::from_secs(2));
    assert_eq!(php_def.read_timeout, Duration::from_secs(30));
    assert_eq!(php_def.disable_time, Duration::from_secs(1));
    let app = &c.fastcgi[1];
    assert_eq!(app.address.len(), 2);
    assert_eq!(app.prefix.as_deref(), Some("/app/"));
    assert_eq!(app.spawn, None);

    // The route function is callable from the registry.
    let f: mlua::Function = loaded
        .lua
        .registry_value(loaded.route.as_ref().expect("route key"))
        .expect("route function");
    let r: mlua::Value = f.call(()).expect("route runs");
    assert!(r.is_nil());
}

#[test]
fn defaults() {
    let dir = TempDir::new();
    let c = load_ok(&dir, "server { root = 'www' }").config;
    assert_eq!(
        c.listen,
        vec![ListenAddr::Tcp("127.0.0.1:8080".parse().expect("addr"))]
    );
    assert_eq!(c.workers, 2);
    assert_eq!(c.index, vec!["index.html"]);
    assert_eq!(c.server_name, "luahttpd");
    assert_eq!(c.error_log, LogTarget::Stderr);
    assert_eq!(c.access_log, None);
    assert_eq!(c.pid_file, None);
    assert!(!c.daemon && !c.has_route && c.fastcgi.is_empty());
    assert_eq!(c.limits, validate::default_limits());
    assert_eq!(c.timeouts, validate::default_timeouts());
}

#[test]
fn config_time_helpers() {
    let dir = TempDir::new();
    dir.write("data.txt", "from-a-file");
    let c = load_ok(
        &dir,
        r#"
assert(exists("www") and exists("data.txt") and not exists("nope"))
local text = assert(read_file("data.txt"))
local missing, err = read_file("nope")
assert(missing == nil and err:find("nope"))
server { root = "www", server_name = text .. "-" .. string.upper("x") .. math.floor(2.5) }
"#,
    )
    .config;
    assert_eq!(c.server_name, "from-a-file-X2");
}

#[test]
fn default_config_loads() {
    // The embedded default resolves against the current directory, which is the crate root
    // under `cargo test`.
    let loaded = match load_default() {
        Ok(l) => l,
        Err(e) => panic!("default config: {e}"),
    };
    assert_eq!(loaded.config.file, PathBuf::from(DEFAULT_CONFIG_NAME));
    assert!(loaded.config.root.is_absolute());
}

#[test]
fn unknown_key_did_you_mean() {
    let dir = TempDir::new();
    let errs = errors(
        &dir,
        "server {\n  root = 'www',\n  wokers = 4,\n  limits = { conections = 1 },\n}\n",
    );
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert_eq!(
        errs[0],
        "site.lua:3: unknown key 'wokers' in server{}; did you mean 'workers'?"
    );
    assert_eq!(
        errs[1],
        "site.lua:4: unknown key 'conections' in limits; did you mean 'connections'?"
    );
}

#[test]
fn wrong_types_and_ranges() {
    let dir = TempDir::new();
    let errs = errors(
        &dir,
        r#"server {
  root = "www",
  workers = "2",
  daemon = 1,
  index = { "a/b" },
  limits = {
    connections = 0,
    header_bytes = 1.5,
  },
  timeouts = { read_idle = 0, graceful = "x" },
  access_log = true,
  mime = { webp = "image/webp", [".x"] = "a\nb" },
  server_name = "a\rb",
}
"#,
    );
    assert!(
        has(&errs, 3, "workers must be an integer, got string"),
        "{errs:?}"
    );
    assert!(
        has(&errs, 4, "daemon must be true or false, got 1"),
        "{errs:?}"
    );
    assert!(
        has(&errs, 5, "index names are file names without '/'"),
        "{errs:?}"
    );
    assert!(
        has(&errs, 7, "limits.connections must be at least 1, got 0"),
        "{errs:?}"
    );
    assert!(
        has(&errs, 8, "limits.header_bytes must be an integer, got 1.5"),
        "{errs:?}"
    );
    assert!(
        has(
            &errs,
            10,
            "timeouts.read_idle must be a number of seconds > 0"
        ),
        "{errs:?}"
    );
    assert!(
        has(
            &errs,
            10,
            "timeouts.graceful must be a number of seconds, got string"
        ),
        "{errs:?}"
    );
    assert!(
        has(
            &errs,
            11,
            "access_log must be a path or false, got boolean true"
        ),
        "{errs:?}"
    );
    assert!(
        has(&errs, 12, "mime key 'webp' must be a suffix"),
        "{errs:?}"
    );
    assert!(has(&errs, 12, "mime type for '.x'"), "{errs:?}");
    assert!(
        has(&errs, 13, "server_name must not contain control characters"),
        "{errs:?}"
    );
    assert_eq!(errs.len(), 11, "{errs:?}");
}

#[test]
fn workers_below_one() {
    let dir = TempDir::new();
    let errs = errors(&dir, "server { root = 'www', workers = 0 }");
    assert_eq!(errs, vec!["site.lua:1: workers must be at least 1, got 0"]);
}

#[test]
fn listen_problems() {
    let dir = TempDir::new();
    let errs = errors(
        &dir,
        "server {\n  root = 'www',\n  listen = {\n    '127.0.0.1:80',\n    'localhost:80',\n    '*:99999',\n    '0.0.0.0:80',\n    '*:80',\n  },\n}\n",
    );
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert!(
        has(
            &errs,
            5,
            "'localhost:80': host names are not resolved; use an IP"
        ),
        "{errs:?}"
    );
    assert!(
        has(&errs, 6, "'*:99999': port 99999 is out of range"),
        "{errs:?}"
    );
    assert!(
        has(&errs, 8, "listen address '*:80' given twice"),
        "{errs:?}"
    );
}

#[test]
fn root_problems() {
    let dir = TempDir::new();
    dir.write("file.txt", "x");
    assert_eq!(errors(&dir, "server { root = 'nope' }").len(), 1);
    assert!(errors(&dir, "server { root = 'nope' }")[0]
        .starts_with("site.lua:1: root 'nope' does not exist"));
    assert!(errors(&dir, "server {\n root = 'file.txt' }")[0]
        .starts_with("site.lua:2: root 'file.txt' is not a directory"));
    assert_eq!(
        errors(&dir, "\nserver { workers = 1 }"),
        vec!["site.lua:2: server{} needs root (the document root directory)"]
    );
}

#[test]
fn structural_problems() {
    let dir = TempDir::new();
    assert_eq!(
        errors(&dir, "local x = 1\n"),
        vec!["site.lua: no server{} block"]
    );
    assert_eq!(
        errors(&dir, "server { root = 'www' }\n\nserver { root = 'www' }\n"),
        vec!["site.lua:3: server{} given twice, first at site.lua:1"]
    );
    assert_eq!(
        errors(&dir, "server 'www'"),
        vec!["site.lua:1: server{} expects a table, got string"]
    );
    let errs = errors(
        &dir,
        "server { root = 'www' }\nroute(function() end)\nroute(function() end)\nroute(42)\n",
    );
    assert_eq!(
        errs,
        vec![
            "site.lua:3: route given twice, first at site.lua:2",
            "site.lua:4: route given twice, first at site.lua:2"
        ]
    );
    let errs = errors(&dir, "server { root = 'www' }\nroute({})\n");
    assert_eq!(
        errs,
        vec!["site.lua:2: route expects a function, got table"]
    );
    let errs = errors(&dir, "server { root = 'www', 'oops' }\n");
    assert!(
        has(&errs, 1, "server{} has an entry without a name"),
        "{errs:?}"
    );
}

#[test]
fn fastcgi_problems() {
    let dir = TempDir::new();
    dir.executable("bin/ok-cgi");
    dir.write("bin/not-exec", "x");
    let errs = errors(
        &dir,
        r#"server { root = "www" }
fastcgi "a" { prefix = "/a/" }
fastcgi "b" { spawn = "bin/ok-cgi", socket = "unix:b.sock", address = "127.0.0.1:9000" }
fastcgi "c" {
  spawn = "bin/missing-cgi",
  socket = "unix:c.sock",
}
fastcgi "d" {
  spawn = { "bin/not-exec" },
  socket = "unix:d.sock",
  extensions = { "php", ".ok" },
  prefix = "app",
}
fastcgi "e" { address = { "127.0.0.1:9000", "nowhere" } }
fastcgi "a" { address = "127.0.0.1:9001" }
fastcgi "f" { spawn = "bin/ok-cgi" }
fastcgi "g" {
  address = "127.0.0.1:9002",
  read_timeout = -1,
  keepalive = "yes",
  procs = 2,
}
fastcgi (42) { address = "127.0.0.1:9003" }
"#,
    );
    assert!(has(&errs, 2, "fastcgi 'a': needs spawn"), "{errs:?}");
    assert!(
        has(&errs, 3, "fastcgi 'b': give spawn or address, not both"),
        "{errs:?}"
    );
    assert!(has(&errs, 5, "fastcgi 'c': spawn program"), "{errs:?}");
    assert!(
        has(&errs, 9, "fastcgi 'd': spawn program") && has(&errs, 9, "is not an executable file"),
        "{errs:?}"
    );
    assert!(
        has(
            &errs,
            11,
            "extensions must start with '.', like \".php\", got 'php'"
        ),
        "{errs:?}"
    );
    assert!(
        has(
            &errs,
            12,
            "prefix must be a URL path starting with '/', got 'app'"
        ),
        "{errs:?}"
    );
    assert!(
        has(&errs, 14, "fastcgi 'e': address 'nowhere' is not IP:port"),
        "{errs:?}"
    );
    assert!(
        has(&errs, 15, "fastcgi 'a' defined twice, first at"),
        "{errs:?}"
    );
    assert!(
        has(&errs, 16, "fastcgi 'f': spawn needs socket"),
        "{errs:?}"
    );
    assert!(
        has(
            &errs,
            19,
            "fastcgi 'g': read_timeout must be a number of seconds > 0"
        ),
        "{errs:?}"
    );
    assert!(
        has(
            &errs,
            20,
            "fastcgi 'g': keepalive must be true or false, got string"
        ),
        "{errs:?}"
    );
    assert!(
        has(&errs, 21, "fastcgi 'g': procs only applies with spawn"),
        "{errs:?}"
    );
    assert!(has(&errs, 23, "fastcgi needs a name"), "{errs:?}");
    assert_eq!(errs.len(), 13, "{errs:?}");
}

#[test]
fn several_errors_then_a_lua_error() {
    let dir = TempDir::new();
    let errs = errors(
        &dir,
        "server {\n  root = 'missing',\n  workers = -1,\n}\nfastcgi 'x' {}\nlocal t = nil\nprint(t.field)\nserver {}\n",
    );
    assert_eq!(errs.len(), 4, "{errs:?}");
    assert!(
        errs[0].starts_with("site.lua:2: root 'missing' does not exist"),
        "{errs:?}"
    );
    assert_eq!(errs[1], "site.lua:3: workers must be at least 1, got -1");
    assert!(
        errs[2].starts_with("site.lua:5: fastcgi 'x': needs spawn"),
        "{errs:?}"
    );
    assert!(
        errs[3].starts_with("site.lua:7: attempt to index a nil value"),
        "{errs:?}"
    );
    assert!(!errs[3].contains("traceback"), "{errs:?}");
}

#[test]
fn lua_syntax_and_error_calls() {
    let dir = TempDir::new();
    let errs = errors(&dir, "server { root = 'www' }\n\nlocal = 3\n");
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("site.lua:3: "), "{errs:?}");
    assert!(!errs[0].contains("syntax error:"), "{errs:?}");
    let errs = errors(&dir, "\nerror('custom problem')\n");
    assert_eq!(errs, vec!["site.lua:2: custom problem"]);
    let errs = errors(&dir, "error('no position', 0)\n");
    assert_eq!(errs, vec!["site.lua: no position"]);
}

#[test]
fn errors_have_structured_fields() {
    let dir = TempDir::new();
    let p = dir.write("site.lua", "server { root = 'www',\n workers = 'x' }\n");
    let e = match load_file(&p) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    };
    assert_eq!(e.0.len(), 1);
    assert_eq!(e.0[0].file, p.display().to_string());
    assert_eq!(e.0[0].line, Some(2));
    assert_eq!(e.0[0].message, "workers must be an integer, got string");
}

#[test]
fn include_glob_and_errors_inside() {
    let dir = TempDir::new();
    // Paths in included files resolve against the main config's folder, not conf.d.
    dir.write("conf.d/10-server.lua", "server {\n  root = 'www',\n}\n");
    dir.write(
        "conf.d/20-app.lua",
        "fastcgi 'app' {\n  address = '127.0.0.1:9000',\n}\n",
    );
    dir.write("conf.d/README", "not lua");
    let c = load_ok(&dir, "include 'conf.d/*.lua'\ninclude 'empty.d/*.lua'\n").config;
    assert_eq!(
        c.root,
        dir.path().canonicalize().expect("canonical").join("www")
    );
    assert_eq!(c.fastcgi.len(), 1);
    assert!(c.fastcgi[0].defined_at.ends_with("conf.d/20-app.lua:1"));

    dir.write(
        "conf.d/10-server.lua",
        "server {\n  root = 'www',\n  workers = 'many',\n}\n",
    );
    dir.write(
        "conf.d/30-broken.lua",
        "fastcgi 'x' {\n  address = '127.0.0.1:1',\n}\nlocal y = nil + 1\n",
    );
    let errs = errors(&dir, "include 'conf.d/*.lua'\n");
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert_eq!(
        errs[0],
        "conf.d/10-server.lua:3: workers must be an integer, got string"
    );
    assert!(
        errs[1].starts_with("conf.d/30-broken.lua:4: attempt to perform arithmetic"),
        "{errs:?}"
    );
}

#[test]
fn include_syntax_error_and_missing_file() {
    let dir = TempDir::new();
    dir.write(
        "inc/bad.lua",
        "server {\n  root = 'www'\n  workers = 2\n}\n",
    );
    let errs = errors(&dir, "-- main\ninclude 'inc/bad.lua'\n");
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("inc/bad.lua:3: "), "{errs:?}");

    let errs = errors(&dir, "server { root = 'www' }\ninclude 'inc/nope.lua'\n");
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("site.lua:2: include 'inc/nope.lua': no such file"),
        "{errs:?}"
    );
}

#[test]
fn include_nested_and_recursive() {
    let dir = TempDir::new();
    dir.write("a/one.lua", "include 'b/two.lua'\n");
    dir.write("a/b/two.lua", "server { root = 'www' }\n");
    let c = load_ok(&dir, "include 'a/one.lua'\n").config;
    assert_eq!(
        c.root,
        dir.path().canonicalize().expect("canonical").join("www")
    );

    dir.write("loop.lua", "include 'loop.lua'\n");
    let errs = errors(&dir, "include 'loop.lua'\n");
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("nested more than 16 deep"), "{errs:?}");
    assert!(errs[0].starts_with("loop.lua:1: "), "{errs:?}");
}

#[test]
fn helpers_refuse_after_loading() {
    let dir = TempDir::new();
    let loaded = load_ok(
        &dir,
        "server { root = 'www' }\nroute(function() server { root = 'www' } end)\n",
    );
    let f: mlua::Function = loaded
        .lua
        .registry_value(loaded.route.as_ref().expect("route key"))
        .expect("route function");
    let err = match f.call::<()>(()) {
        Ok(()) => panic!("server{{}} should refuse at request time"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("only be used while the config file loads"),
        "{err}"
    );
}

#[test]
fn print_round_trip() {
    let dir = TempDir::new();
    dir.executable("bin/php-cgi");
    let original = load_ok(
        &dir,
        r#"server {
  listen = { "*:8080", "[::1]:8081", "unix:run/s.sock" },
  workers = 3, root = "www", dotfiles = "deny", index = { "index.html", "index.php" },
  server_name = 'quote " and \\ and é',
  mime = { [".WEBP"] = "image/webp", [".md"] = "text/markdown; charset=utf-8" },
  error_log = "logs/error.log", access_log = "logs/access.log", pid_file = "run/pid",
  limits = { connections = 5, header_bytes = 2048, keepalive_requests = 7, body_bytes = 0,
             connections_per_ip = 3 },
  timeouts = { read_idle = 0.125, write_idle = 1e-9, keepalive_idle = 3, graceful = 86400 },
}
fastcgi "php" {
  spawn = { "bin/php-cgi", "-c", "x y" }, procs = 2, socket = "127.0.0.1:9001",
  env = { A = "1", ["B C"] = "two\nlines" }, extensions = { ".php", ".phtml" },
  check_local = false, keepalive = false, request_buffering = false, connect_timeout = 0.5, read_timeout = 10, disable_time = 0,
}
fastcgi "app" { address = { "127.0.0.1:9000", "unix:/run/app.sock" }, prefix = "/app/" }
"#,
    )
    .config;
    let text = print(&original);
    let again_path = dir.write("printed.lua", &text);
    let again = match load_file(&again_path) {
        Ok(l) => l.config,
        Err(e) => panic!("printed config does not load:\n{e}\n---\n{text}"),
    };
    // Provenance differs by construction (another file, other lines); everything else is equal.
    let neutral = |c: &Config| {
        let mut c = c.clone();
        c.file = PathBuf::new();
        for d in &mut c.fastcgi {
            d.defined_at.clear();
        }
        c
    };
    assert_eq!(neutral(&original), neutral(&again), "printed:\n{text}");
    // Printing is deterministic and a fixed point.
    assert_eq!(print(&neutral(&again)), print(&neutral(&original)));
}

#[test]
fn print_notes_the_route() {
    let dir = TempDir::new();
    let c = load_ok(&dir, "server { root = 'www' }\nroute(function() end)\n").config;
    let text = print(&c);
    assert!(text.contains("-- route("), "{text}");
    assert!(text.contains("  workers = 2,"), "{text}");
}

#[test]
fn odd_calls_are_reported_not_panicking() {
    let dir = TempDir::new();
    // A helper called through pcall still reports the config line, not the C function.
    let errs = errors(
        &dir,
        "server { root = 'www' }\n\nlocal ok = pcall(fastcgi 'x', {})\n",
    );
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("site.lua:3: fastcgi 'x': needs spawn"),
        "{errs:?}"
    );
    // A table passed through a variable: the call line.
    let errs = errors(
        &dir,
        "local t = {\n  root = 'www',\n  workers = 0,\n}\nserver(t)\n",
    );
    assert_eq!(errs, vec!["site.lua:5: workers must be at least 1, got 0"]);
    // Errors that are not strings, and chunks with names of their own.
    let errs = errors(&dir, "error({})\n");
    assert_eq!(errs.len(), 1, "{errs:?}");
    let errs = errors(
        &dir,
        "server { root = 'www' }\nload(\"x = (\", \"=inline\")()\n",
    );
    assert_eq!(errs.len(), 1, "{errs:?}");
    let errs = errors(
        &dir,
        "server { root = 'www' }\nassert(load(\"server{}\", \"=inline\"))()\n",
    );
    assert_eq!(
        errs,
        vec!["inline:1: server{} given twice, first at site.lua:1"]
    );
    let errs = errors(&dir, "server()\n");
    assert_eq!(errs, vec!["site.lua:1: server{} expects a table, got nil"]);
    let errs = errors(&dir, "exists(1)\n");
    assert_eq!(
        errs,
        vec!["site.lua:1: exists expects a path string, got integer"]
    );
    let errs = errors(&dir, "include(nil)\n");
    assert_eq!(
        errs,
        vec!["site.lua:1: include expects a file pattern, got nil"]
    );
    let errs = errors(&dir, "include 'conf.d/[*.lua'\n");
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("site.lua:1: include 'conf.d/[*.lua': bad pattern"),
        "{errs:?}"
    );
}

#[test]
fn string_keyed_tables_report_bad_shapes() {
    let dir = TempDir::new();
    let errs = errors(
        &dir,
        "server {\n  root = 'www',\n  mime = 'text/plain',\n}\n\
         fastcgi 'a' {\n  address = '127.0.0.1:9000',\n  env = { [1] = 'x' },\n}\n",
    );
    assert!(
        has(
            &errs,
            3,
            "mime must be a table of [\".ext\"] = \"type\", got"
        ),
        "{errs:?}"
    );
    assert!(
        has(&errs, 7, "env keys must be variable names, got"),
        "{errs:?}"
    );
}

#[test]
fn backend_socket_may_be_a_bare_path() {
    let dir = TempDir::new();
    dir.executable("bin/php-cgi");
    let loaded = load_ok(
        &dir,
        r#"server { root = "www" }
fastcgi "php" { spawn = "bin/php-cgi", socket = "/tmp/php.sock", extensions = ".php" }
fastcgi "rel" { spawn = "bin/php-cgi", socket = "run/rel.sock", prefix = "/rel/" }
fastcgi "app" { address = { "./app.sock", "unix:/run/app.sock" }, prefix = "/app/" }
"#,
    );
    let base = dir.path().canonicalize().expect("canonical temp dir");
    let f = &loaded.config.fastcgi;
    assert_eq!(f[0].socket, Some(ListenAddr::Unix("/tmp/php.sock".into())));
    assert_eq!(
        f[1].socket,
        Some(ListenAddr::Unix(base.join("run/rel.sock")))
    );
    assert_eq!(
        f[2].address,
        vec![
            ListenAddr::Unix(base.join("app.sock")),
            ListenAddr::Unix("/run/app.sock".into())
        ]
    );
}

#[test]
fn backend_address_errors_say_what_is_wrong() {
    let dir = TempDir::new();
    let errs = errors(
        &dir,
        r#"server { root = "www" }
fastcgi "a" { address = "9000", prefix = "/a/" }
fastcgi "b" { address = "127.0.0.1:99999", prefix = "/b/" }
fastcgi "c" { address = "localhost:9000", prefix = "/c/" }
fastcgi "d" { address = "127.0.0.1:0", prefix = "/d/" }
fastcgi "e" { address = "0.0.0.0:9000", prefix = "/e/" }
"#,
    );
    assert!(has(&errs, 2, "did you mean '127.0.0.1:9000'"), "{errs:?}");
    assert!(has(&errs, 3, "port 99999 is out of range"), "{errs:?}");
    assert!(has(&errs, 4, "host names are not resolved"), "{errs:?}");
    assert!(has(&errs, 5, "port 0"), "{errs:?}");
    assert!(has(&errs, 6, "every address of this host"), "{errs:?}");
    assert_eq!(errs.len(), 5, "{errs:?}");
}

#[test]
fn files_the_server_creates_need_an_existing_folder() {
    let dir = TempDir::new();
    dir.executable("bin/php-cgi");
    dir.write("afile", "x");
    let errs = errors(
        &dir,
        r#"server {
  root = "www",
  error_log = "nologs/error.log",
  access_log = "nologs/access.log",
  pid_file = "norun/luahttpd.pid",
  admin = "afile/admin.sock",
  listen = { "127.0.0.1:8080", "unix:norun/site.sock" },
}
fastcgi "php" { spawn = "bin/php-cgi", socket = "norun/php.sock", extensions = ".php" }
"#,
    );
    assert!(
        has(&errs, 3, "error_log: the folder of")
            && has(&errs, 3, "nologs/error.log does not exist"),
        "{errs:?}"
    );
    assert!(has(&errs, 4, "access_log: the folder of"), "{errs:?}");
    assert!(has(&errs, 5, "pid_file: the folder of"), "{errs:?}");
    assert!(
        has(&errs, 6, "admin: the folder of") && has(&errs, 6, "is not a directory"),
        "{errs:?}"
    );
    assert!(has(&errs, 7, "listen: the folder of"), "{errs:?}");
    assert!(
        has(&errs, 9, "fastcgi 'php': socket: the folder of"),
        "{errs:?}"
    );
    assert_eq!(errs.len(), 6, "{errs:?}");
}

#[test]
fn a_failing_include_does_not_also_report_its_backends_as_unknown() {
    let dir = TempDir::new();
    // The include that would define "php" fails: only its own error is true.
    dir.write(
        "inc/php.lua",
        "error('boom in include')\nfastcgi 'php' { address = '127.0.0.1:9000' }\n",
    );
    let errs = errors(
        &dir,
        "server { root = 'www' }\ninclude 'inc/php.lua'\nlocal d = fastcgi('php', {})\n",
    );
    assert!(
        errs.iter().any(|e| e.contains("boom in include")),
        "{errs:?}"
    );
    assert!(
        !errs.iter().any(|e| e.contains("unknown backend")),
        "{errs:?}"
    );
}

#[test]
fn a_decision_built_at_config_time_must_name_a_defined_backend() {
    let dir = TempDir::new();
    let errs = errors(
        &dir,
        r#"server { root = "www" }
local nope = fastcgi("nope", {})
local pph = fastcgi("pph", { script = "/x.php" })
fastcgi "php" { address = "127.0.0.1:9000", extensions = ".php" }
local ok = fastcgi("php", {})
route(function(req) return nope end)
"#,
    );
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        has(&errs, 2, "fastcgi: unknown backend 'nope' (defined: php)"),
        "{errs:?}"
    );
    assert!(
        has(&errs, 3, "unknown backend 'pph'; did you mean 'php'?"),
        "{errs:?}"
    );
    // Defined after the decision that names it: fine.
    load_ok(
        &dir,
        "server { root = 'www' }\nlocal d = fastcgi('app', {})\nfastcgi 'app' { address = '127.0.0.1:9000' }\nroute(function() return d end)\n",
    );
}

#[test]
fn every_failing_helper_call_and_included_file_is_reported() {
    let dir = TempDir::new();
    dir.write("conf.d/10-bad.lua", "local x = nil + 1\n");
    dir.write("conf.d/20-also-bad.lua", "error('second file')\n");
    dir.write(
        "conf.d/30-good.lua",
        "fastcgi 'app' { address = '127.0.0.1:9000', prefix = '/app/' }\n",
    );
    let errs = errors(
        &dir,
        r#"local r = redirect(999, "/x")
include "conf.d/*.lua"
include "missing.lua"
local d = respond(204, "body")
server { root = "www", workers = 0 }
local ok = deny(200)
route(function() return r end)
"#,
    );
    assert!(has(&errs, 1, "redirect: status must be"), "{errs:?}");
    assert!(
        errs.iter()
            .any(|e| e.starts_with("conf.d/10-bad.lua:1: attempt to perform arithmetic")),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|e| e == "conf.d/20-also-bad.lua:1: second file"),
        "{errs:?}"
    );
    assert!(
        has(&errs, 3, "include 'missing.lua': no such file"),
        "{errs:?}"
    );
    assert!(
        has(&errs, 4, "respond: status 204 cannot have a body"),
        "{errs:?}"
    );
    assert!(has(&errs, 5, "workers must be at least 1"), "{errs:?}");
    assert!(has(&errs, 6, "deny:"), "{errs:?}");
    assert_eq!(errs.len(), 7, "{errs:?}");
}

#[test]
fn dotfiles_key() {
    let dir = TempDir::new();
    let c = load_ok(&dir, "server { root = 'www' }").config;
    assert_eq!(c.dotfiles, Dotfiles::Allow);
    let c = load_ok(&dir, "server { root = 'www', dotfiles = 'deny' }").config;
    assert_eq!(c.dotfiles, Dotfiles::Deny);
    // The issue's spelling: true / false are "allow" / "deny".
    let c = load_ok(&dir, "server { root = 'www', dotfiles = false }").config;
    assert_eq!(c.dotfiles, Dotfiles::Deny);
    let c = load_ok(&dir, "server { root = 'www', dotfiles = true }").config;
    assert_eq!(c.dotfiles, Dotfiles::Allow);
    let errs = errors(&dir, "server { root = 'www',\n dotfiles = 1 }");
    assert_eq!(errs, vec!["site.lua:2: dotfiles must be a string, got 1"]);
    let errs = errors(&dir, "server { root = 'www',\n dotfiles = 'hide' }");
    assert_eq!(
        errs,
        vec!["site.lua:2: dotfiles must be \"allow\" or \"deny\", got 'hide'"]
    );
}

#[test]
fn the_default_config_refuses_dotfiles() {
    let loaded = match load_default() {
        Ok(l) => l,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(loaded.config.dotfiles, Dotfiles::Deny);
}

#[test]
fn every_spawned_process_socket_must_fit() {
    let dir = TempDir::new();
    dir.executable("bin/php-cgi");
    // 100 characters of folder name: with "-9" the last proc's path passes 107 bytes.
    let long = format!("/tmp/{}/php.sock", "d".repeat(92));
    assert!(long.len() <= 107 && long.len() + 2 > 107);
    let errs = errors(
        &dir,
        &format!(
            r#"server {{ root = "www" }}
fastcgi "a" {{ spawn = "bin/php-cgi", procs = 10, socket = "127.0.0.1:65530", prefix = "/a/" }}
fastcgi "b" {{ spawn = "bin/php-cgi", procs = 10, socket = "unix:{long}", prefix = "/b/" }}
fastcgi "c" {{ spawn = "bin/php-cgi", procs = 6, socket = "127.0.0.1:65530", prefix = "/c/" }}
"#
        ),
    );
    assert!(
        has(&errs, 2, "10 procs from port 65530 run past port 65535"),
        "{errs:?}"
    );
    assert!(
        has(
            &errs,
            3,
            "php.sock-9 (proc i listens on socket-i) is 108 bytes long"
        ),
        "{errs:?}"
    );
    // The folder does not exist either; that is reported too.
    assert!(has(&errs, 3, "does not exist"), "{errs:?}");
    assert_eq!(errs.len(), 3, "{errs:?}");
}

#[test]
fn connections_per_ip_is_off_by_default_and_validated() {
    let dir = TempDir::new();
    let l = load_ok(&dir, "server { root = 'www' }\n");
    assert_eq!(l.config.limits.connections_per_ip, 0);
    let l = load_ok(
        &dir,
        "server { root = 'www', limits = { connections_per_ip = 8 } }\n",
    );
    assert_eq!(l.config.limits.connections_per_ip, 8);
    let errs = errors(
        &dir,
        "server { root = 'www',\n limits = { connections_per_ip = -1 } }\n",
    );
    assert!(
        has(
            &errs,
            2,
            "limits.connections_per_ip must be at least 0, got -1"
        ),
        "{errs:?}"
    );
    let errs = errors(
        &dir,
        "server { root = 'www',\n limits = { connections_per_ip = 1.5 } }\n",
    );
    assert!(
        has(&errs, 2, "limits.connections_per_ip must be an integer"),
        "{errs:?}"
    );
}

#[test]
fn request_buffering_must_be_a_boolean() {
    let dir = TempDir::new();
    let errs = errors(
        &dir,
        "server { root = 'www' }\nfastcgi 'p' { address = '127.0.0.1:9000',\n request_buffering = 1 }\n",
    );
    assert!(
        has(
            &errs,
            3,
            "fastcgi 'p': request_buffering must be true or false, got 1"
        ),
        "{errs:?}"
    );
}
