//! The command line: -t, -p, --daemon with its pid file, --version.

mod common;

use common::{bin, Server, TempDir};
use std::process::Command;
use std::time::{Duration, Instant};

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin()).args(args).output().expect("run");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn test_flag_accepts_a_good_config() {
    let dir = TempDir::new("cli");
    std::fs::create_dir_all(dir.path().join("www")).unwrap();
    let conf = dir.write(
        "site.lua",
        b"server { listen = '127.0.0.1:8080', root = 'www' }\n",
    );
    let (code, out, err) = run(&["-t", "-c", conf.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "Syntax OK");
}

#[test]
fn test_flag_reports_every_problem_with_file_and_line() {
    let dir = TempDir::new("cli");
    let conf = dir.write(
        "site.lua",
        b"server {\n  listen = 'nonsense',\n  workers = 0,\n  root = 'missing',\n  wrokers = 2,\n}\n",
    );
    let (code, out, err) = run(&["-t", "-c", conf.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(!out.contains("Syntax OK"));
    let name = conf.to_str().unwrap();
    for (line, what) in [
        (2, "nonsense"),
        (3, "workers"),
        (4, "missing"),
        (5, "did you mean 'workers'"),
    ] {
        assert!(
            err.lines()
                .any(|l| l.starts_with(&format!("{name}:{line}:")) && l.contains(what)),
            "no {name}:{line}: … {what} in:\n{err}"
        );
    }
}

#[test]
fn test_flag_reports_lua_syntax_errors() {
    let dir = TempDir::new("cli");
    let conf = dir.write("site.lua", b"server {\n  root = 'www'\n  workers = 2\n}\n");
    let (code, _, err) = run(&["-t", "-c", conf.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("{}:3:", conf.display())), "{err}");
}

#[test]
fn test_flag_reports_what_would_fail_the_start() {
    let dir = TempDir::new("cli");
    std::fs::create_dir_all(dir.path().join("www")).unwrap();
    let conf = dir.write(
        "site.lua",
        b"server {\n  root = 'www',\n  error_log = 'logs/error.log',\n}\n\
          local php = fastcgi('nope', {})\n\
          include 'conf.d/*.lua'\n\
          route(function(req) return php end)\n",
    );
    dir.write("conf.d/a.lua", b"local x = nil .. 'x'\n");
    dir.write("conf.d/b.lua", b"server {}\n");
    let (code, out, err) = run(&["-t", "-c", conf.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    let name = conf.to_str().unwrap();
    assert!(
        err.contains(&format!("{name}:3: error_log: the folder of"))
            && err.contains("does not exist"),
        "{err}"
    );
    // An include failed, and it might have defined 'nope': "unknown backend" would be false.
    assert!(!err.contains("unknown backend 'nope'"), "{err}");
    // Both included files are reported: the first one's error did not stop the second.
    assert!(
        err.contains("conf.d/a.lua:1: attempt to concatenate"),
        "{err}"
    );
    assert!(
        err.contains("conf.d/b.lua:1: server{} given twice"),
        "{err}"
    );
}

#[test]
fn daemon_with_the_error_log_on_stderr_is_refused() {
    let dir = TempDir::new("cli");
    std::fs::create_dir_all(dir.path().join("www")).unwrap();
    let conf = dir.write(
        "site.lua",
        b"server {\n  listen = '127.0.0.1:0',\n  root = 'www',\n  daemon = true,\n}\n",
    );
    let name = conf.to_str().unwrap();
    for args in [vec!["-t", "-c", name], vec!["-c", name]] {
        let (code, out, err) = run(&args);
        assert_eq!(code, 1, "{args:?}: {out}");
        assert!(
            err.contains(&format!(
                "{name}:4: daemon = true: a daemon needs error_log set to a file"
            )),
            "{args:?}: {err}"
        );
    }
    // -d on the command line with a config logging to stderr: refused before detaching.
    let conf = dir.write(
        "fg.lua",
        b"server { listen = '127.0.0.1:0', root = 'www', error_log = 'stderr' }\n",
    );
    for args in [
        vec!["-t", "-d", "-c", conf.to_str().unwrap()],
        vec!["-d", "-c", conf.to_str().unwrap()],
    ] {
        let (code, out, err) = run(&args);
        assert_eq!(code, 1, "{args:?}: {out}");
        assert!(!out.contains("Syntax OK"), "{out}");
        assert!(
            err.contains("--daemon: a daemon needs error_log set to a file"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn daemon_with_the_error_log_on_a_standard_stream_path_is_refused() {
    // A daemon's stdout and stderr are /dev/null: these paths lose every line as "stderr" does.
    let dir = TempDir::new("cli");
    std::fs::create_dir_all(dir.path().join("www")).unwrap();
    for path in ["/dev/stderr", "/dev/stdout", "/dev/fd/2", "/proc/self/fd/1"] {
        let conf = dir.write(
            "site.lua",
            format!("server {{ listen = '127.0.0.1:0', root = 'www', error_log = '{path}' }}\n")
                .as_bytes(),
        );
        let (code, out, err) = run(&["-t", "-d", "-c", conf.to_str().unwrap()]);
        assert_eq!(code, 1, "{path}: {out}");
        assert!(!out.contains("Syntax OK"), "{path}: {out}");
        assert!(
            err.contains("--daemon: a daemon needs error_log set to a file"),
            "{path}: {err}"
        );
    }
}

#[test]
fn missing_config_file_is_an_error() {
    let (code, _, err) = run(&["-t", "-c", "/nonexistent/site.lua"]);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/site.lua"), "{err}");
}

#[test]
fn print_flag_prints_a_config_that_checks_again() {
    let dir = TempDir::new("cli");
    std::fs::create_dir_all(dir.path().join("www")).unwrap();
    let conf = dir.write(
        "site.lua",
        b"server { listen = '127.0.0.1:8080', root = 'www', workers = 3 }\n",
    );
    let (code, out, err) = run(&["-p", "-c", conf.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("workers = 3"), "{out}");
    let printed = dir.write("printed.lua", out.as_bytes());
    let (code, _, err) = run(&["-t", "-c", printed.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn print_flag_shows_shared_zones_timers_the_respond_hook_and_lua_limits() {
    let dir = TempDir::new("cli");
    std::fs::create_dir_all(dir.path().join("www")).unwrap();
    let conf = dir.write(
        "site.lua",
        br#"server { listen = '127.0.0.1:8080', root = 'www',
         limits = { lua_body_bytes = 4096, lua_wall = 2.5 } }
shared "flags" { size = "64k" }
shared "rl" { size = 131072 }
every(0.5, function() end, { worker = "one" })
every(2, function() end)
at_worker_start(function() end)
respond_hook(function(req, res) end)
"#,
    );
    let (code, out, err) = run(&["-p", "-c", conf.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    for want in [
        "lua_body_bytes = 4096",
        "lua_wall = 2.5",
        "shared \"flags\" { size = 65536 }",
        "shared \"rl\" { size = 131072 }",
        "-- every(0.5, function, { worker = \"one\" }) at ",
        "-- every(2, function) at ",
        "-- at_worker_start(function) at ",
        "-- respond_hook(function) at ",
    ] {
        assert!(out.contains(want), "{want} missing from:\n{out}");
    }
    assert!(
        out.contains("site.lua:5"),
        "where the timer was given:\n{out}"
    );
    // Without them, no such lines.
    let plain = dir.write(
        "plain.lua",
        b"server { listen = '127.0.0.1:8080', root = 'www' }\n",
    );
    let (_, out2, _) = run(&["-p", "-c", plain.to_str().unwrap()]);
    assert!(
        !out2.contains("-- every(") && !out2.contains("respond_hook"),
        "{out2}"
    );
    assert!(
        out2.contains("lua_wall = 30"),
        "the default lua_wall:\n{out2}"
    );
    // The printed config checks again, zones and limits included.
    let printed = dir.write("printed.lua", out.as_bytes());
    let (code, _, err) = run(&["-t", "-c", printed.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let (_, again, _) = run(&["-p", "-c", printed.to_str().unwrap()]);
    assert!(
        again.contains("shared \"flags\" { size = 65536 }"),
        "{again}"
    );
    assert!(again.contains("lua_wall = 2.5"), "{again}");
}

#[test]
fn version_and_help() {
    let (code, out, _) = run(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.contains(env!("CARGO_PKG_VERSION")));
    let (code, out, _) = run(&["-v"]);
    assert_eq!(
        (code, out.trim()),
        (0, concat!("luahttpd ", env!("CARGO_PKG_VERSION")))
    );
    let (code, out, _) = run(&["-V"]);
    assert_eq!(code, 0);
    assert!(
        out.contains(env!("CARGO_PKG_VERSION")) && out.contains("features:"),
        "{out}"
    );
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("-t") && out.contains("--daemon"), "{out}");
}

#[test]
fn embedded_default_config_checks() {
    let (code, out, err) = run(&["-t"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "Syntax OK");
    let (_, out, _) = run(&["-p"]);
    assert!(out.contains("127.0.0.1:8080"), "{out}");
}

fn read_pid(path: &std::path::Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[test]
fn daemon_starts_writes_its_pid_file_and_stops_cleanly() {
    let dir = TempDir::new("daemon");
    std::fs::create_dir_all(dir.path().join("www")).unwrap();
    dir.write("www/index.html", b"daemon");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let conf = dir.write(
        "site.lua",
        format!(
            "server {{ listen = '127.0.0.1:{port}', root = 'www', pid_file = 'run.pid', \
             error_log = 'error.log', workers = 1 }}\n"
        )
        .as_bytes(),
    );
    let start = Instant::now();
    let (code, _, err) = run(&["--daemon", "-c", conf.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let pid_path = dir.path().join("run.pid");
    let pid = read_pid(&pid_path).expect("pid file written before the launcher exits");
    assert!(start.elapsed() < Duration::from_secs(10));
    // It serves right away: the launcher waited until the listeners were bound.
    let r = common::raw(
        &format!("127.0.0.1:{port}"),
        b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"daemon");
    // The daemon is not our child and has its own session.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    assert!(stat.contains("luahttpd"), "{stat}");
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while pid_path.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(!pid_path.exists(), "pid file removed on exit");
}

#[test]
fn daemon_that_cannot_start_says_why_and_exits_nonzero() {
    // Occupy a port, then ask a daemon to listen on it.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let dir = TempDir::new("daemon");
    std::fs::create_dir_all(dir.path().join("www")).unwrap();
    let conf = dir.write(
        "site.lua",
        format!(
            "server {{ listen = '127.0.0.1:{port}', root = 'www', daemon = true, \
             error_log = 'error.log' }}\n"
        )
        .as_bytes(),
    );
    let (code, _, err) = run(&["-c", conf.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&port.to_string()) && err.contains("in use"),
        "{err}"
    );
}

#[test]
fn foreground_start_failure_is_reported() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let dir = TempDir::new("fg");
    std::fs::create_dir_all(dir.path().join("www")).unwrap();
    let conf = dir.write(
        "site.lua",
        format!("server {{ listen = '127.0.0.1:{port}', root = 'www' }}\n").as_bytes(),
    );
    let (code, _, err) = run(&["-c", conf.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("in use"), "{err}");
}

#[test]
fn unix_socket_listener_serves_and_is_removed_on_exit() {
    use std::io::{Read, Write};
    let dir = TempDir::new("unix");
    std::fs::create_dir_all(dir.path().join("www")).unwrap();
    dir.write("www/u.txt", b"over unix");
    let sock = dir.path().join("s.sock");
    let config = format!(
        "server {{ listen = {{ '127.0.0.1:0', 'unix:{}' }}, root = 'www', workers = 1 }}\n",
        sock.display()
    );
    let mut s = Server::start_config(dir, &config);
    let mut c = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    c.write_all(b"GET /u.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    c.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.starts_with("HTTP/1.1 200") && text.ends_with("over unix"),
        "{text}"
    );
    s.signal(15);
    s.wait_exit(Duration::from_secs(5)).expect("exit");
    assert!(!sock.exists(), "socket file removed");
}
