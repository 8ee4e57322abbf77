//! The admin socket against the real server: the socket itself, who may connect, every admin
//! function, reload (also under load), and the `luahttpd repl` client (one-shot and through a
//! pseudo-terminal).

mod admin_common;
mod common;

use admin_common::{
    config_text, eval_ok, repl, repl_as_nobody, site, sock, start, status, text, total_requests,
    wait_for, workers, Admin,
};
use common::{alive, Client, Server};
use luahttpd::admin::protocol::{eval_request, read_frame, FUNCTIONS};
use serde_json::Value;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn kill9(pid: i32) {
    let st = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
}

// ---------------------------------------------------------------------------------------------
// The socket
// ---------------------------------------------------------------------------------------------

#[test]
fn socket_is_mode_0600_owned_by_us_and_removed_on_exit() {
    let mut s = start("workers = 1", &[]);
    let path = sock(&s);
    let meta = std::fs::symlink_metadata(&path).expect("admin socket exists");
    assert!(meta.file_type().is_socket(), "{meta:?}");
    assert_eq!(
        meta.permissions().mode() & 0o7777,
        0o600,
        "mode {:o}",
        meta.permissions().mode()
    );
    assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw());
    // It answers with a hello naming every function.
    let a = Admin::connect(&path);
    assert_eq!(a.hello["hello"], "luahttpd", "{}", a.hello);
    let names: Vec<&str> = a.hello["functions"]
        .as_array()
        .expect("functions")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(names, FUNCTIONS);
    drop(a);
    s.signal(2);
    let st = s
        .wait_exit(Duration::from_secs(10))
        .expect("exits on SIGINT");
    assert!(st.success(), "{st:?}");
    assert!(
        std::fs::symlink_metadata(&path).is_err(),
        "admin socket still exists after exit"
    );
}

#[test]
fn stale_socket_file_is_replaced_at_start() {
    let dir = site("admin-stale", &[]);
    let path = dir.path().join("admin.sock");
    drop(UnixListener::bind(&path).expect("bind a stale socket"));
    assert!(path.exists(), "the stale file stays");
    let s = Server::start_config(dir, &config_text("workers = 1", ""));
    let st = status(&sock(&s));
    assert_eq!(st["pid"], s.pid(), "{st}");
    let meta = std::fs::symlink_metadata(sock(&s)).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
}

/// Runs `luahttpd -c site.lua` in `dir` expecting it to refuse to start.
fn refused_start(dir: &std::path::Path) -> std::process::Output {
    let child = Command::new(common::bin())
        .arg("-c")
        .arg(dir.join("site.lua"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn luahttpd");
    admin_common::wait_output(child, Duration::from_secs(15))
}

#[test]
fn live_socket_makes_the_server_refuse_to_start() {
    let dir = site("admin-live", &[]);
    let path = dir.path().join("admin.sock");
    let listener = UnixListener::bind(&path).expect("bind a live socket");
    dir.write("site.lua", config_text("workers = 1", "").as_bytes());
    let out = refused_start(dir.path());
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("{} is in use by a running server", path.display())),
        "{err}"
    );
    // The other server's socket is untouched and still answers.
    listener.set_nonblocking(true).unwrap();
    let _c = std::os::unix::net::UnixStream::connect(&path).expect("still live");
}

#[test]
fn refused_start_leaves_no_pid_file_and_no_backend_sockets() {
    let dir = site("admin-live2", &[("t.php", b"")]);
    let path = dir.path().join("admin.sock");
    let _listener = UnixListener::bind(&path).expect("bind a live socket");
    let config = config_text(
        r#"workers = 1, pid_file = "run.pid""#,
        &fcgi_block(dir.path(), 1),
    );
    dir.write("site.lua", config.as_bytes());
    let out = refused_start(dir.path());
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = text(&out.stderr);
    assert!(err.contains("is in use by a running server"), "{err}");
    // The admin socket is checked before any backend is spawned; if one was spawned all the
    // same, it must not outlive the refused start.
    let backend: Option<i32> = err
        .split("(pid ")
        .nth(1)
        .and_then(|t| t.split(')').next())
        .and_then(|p| p.parse().ok());
    if let Some(backend) = backend {
        wait_for(
            "the spawned backend to exit",
            Duration::from_secs(3),
            || !alive(backend),
        );
    }
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("run.pid") || n.starts_with("t.sock"))
        .collect();
    assert!(
        left.is_empty(),
        "a refused start left files behind: {left:?}\n{}",
        text(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// Who may connect
// ---------------------------------------------------------------------------------------------

#[test]
fn client_of_another_uid_is_refused() {
    let s = start("workers = 1", &[]);
    let path = sock(&s);
    // The socket's directory must be searchable by uid 65534, whatever the umask, so that
    // only the socket's own mode and the peer check decide.
    std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // Mode 0600: the file system refuses uid 65534.
    let out = repl_as_nobody(&path, &["-e", "status()"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out.stderr).contains("Permission denied"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), "");

    // Reachable by everyone: SO_PEERCRED must refuse it.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = repl_as_nobody(&path, &["-e", "status()"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = text(&out.stderr);
    assert!(err.contains("permission denied"), "{err}");
    assert!(err.contains("65534"), "{err}");
    assert_eq!(text(&out.stdout), "", "nothing evaluated for uid 65534");
    let out = repl_as_nobody(&path, &["-e", "shutdown{now=true}"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        s.log_text().contains("admin: refused a client"),
        "{}",
        s.log_text()
    );

    // Root still gets in, and the refused shutdown did nothing.
    std::thread::sleep(Duration::from_millis(200));
    let st = status(&path);
    assert_eq!(st["state"], "running", "{st}");
    assert_eq!(s.get("/").status, 403);
}

// ---------------------------------------------------------------------------------------------
// status() and workers()
// ---------------------------------------------------------------------------------------------

#[test]
fn status_reports_the_watcher_and_counts_requests_exactly() {
    let s = start("workers = 2", &[("a.txt", b"hello")]);
    let path = sock(&s);
    let mut admin = Admin::connect(&path);
    let st = admin.ok("status()");
    assert_eq!(st["pid"], s.pid(), "{st}");
    assert_eq!(st["generation"], 1, "{st}");
    assert_eq!(st["state"], "running", "{st}");
    assert_eq!(st["workers"], 2, "{st}");
    assert_eq!(st["last_reload"], Value::Null, "{st}");
    let listeners: Vec<&str> = st["listeners"]
        .as_array()
        .expect("listeners")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(listeners, [s.addr.as_str()], "{st}");

    // The harness's readiness probe is the only request so far.
    let before = admin_common::settled_requests(&path);
    assert_eq!(before, 1, "{st}");
    const N: u64 = 25;
    let mut c = s.connect();
    for i in 0..N {
        if i % 5 == 0 {
            c = s.connect();
        }
        c.send(b"GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n");
        let r = c.response(false);
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
    }
    drop(c);
    // The count is published once a response is sent: allow a moment, then it must be exact.
    wait_for(
        "totals.requests to grow by N",
        Duration::from_secs(3),
        || admin.ok("status()")["totals"]["requests"].as_u64() >= Some(before + N),
    );
    std::thread::sleep(Duration::from_millis(300));
    let after = admin.ok("status()");
    assert_eq!(
        after["totals"]["requests"].as_u64(),
        Some(before + N),
        "admin queries must not count as requests: {after}"
    );
    assert!(after["totals"]["bytes_out"].as_u64() > st["totals"]["bytes_out"].as_u64());
}

#[test]
fn workers_rows_match_the_processes_and_a_killed_one_is_respawned() {
    let s = start("workers = 3", &[("a.txt", b"hello")]);
    let path = sock(&s);
    let pids = {
        let mut p = s.worker_pids();
        p.sort();
        p
    };
    assert_eq!(pids.len(), 3, "{pids:?}");
    wait_for("every worker idle", Duration::from_secs(3), || {
        workers(&path).iter().all(|w| w["state"] == "idle")
    });
    let rows = workers(&path);
    assert_eq!(rows.len(), 3, "{rows:?}");
    let mut row_pids: Vec<i32> = rows
        .iter()
        .map(|w| w["pid"].as_i64().expect("pid") as i32)
        .collect();
    row_pids.sort();
    assert_eq!(row_pids, pids, "{rows:?}");
    for w in &rows {
        assert_eq!(w["generation"], 1, "{w}");
        assert_eq!(w["respawns"], 0, "{w}");
    }

    for _ in 0..20 {
        assert_eq!(s.get("/a.txt").status, 200);
    }
    wait_for("20 more requests counted", Duration::from_secs(3), || {
        // wait_ready's request plus ours.
        total_requests(&path) >= 21
    });
    let before = status(&path);
    let requests_before = before["totals"]["requests"].as_u64().unwrap();
    assert_eq!(before["totals"]["respawns"], 0, "{before}");

    let victim = &rows[1];
    let victim_pid = victim["pid"].as_i64().unwrap() as i32;
    let victim_slot = victim["slot"].clone();
    kill9(victim_pid);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = requests_before;
    let respawned = loop {
        let st = status(&path);
        let r = st["totals"]["requests"].as_u64().unwrap();
        assert!(
            r >= last,
            "totals.requests went backwards across the respawn: {last} -> {r}"
        );
        last = r;
        let rows = workers(&path);
        let row = rows
            .iter()
            .find(|w| w["slot"] == victim_slot)
            .cloned()
            .unwrap_or_else(|| panic!("slot {victim_slot} gone: {rows:?}"));
        if row["pid"].as_i64().is_some_and(|p| p as i32 != victim_pid) && row["state"] == "idle" {
            break (st, row, rows);
        }
        assert!(Instant::now() < deadline, "no respawn: {rows:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let (st, row, rows) = respawned;
    assert_eq!(row["respawns"], 1, "{row}");
    assert_eq!(st["totals"]["respawns"], 1, "{st}");
    assert_eq!(
        st["totals"]["requests"].as_u64(),
        Some(requests_before),
        "no request was made meanwhile: {st}"
    );
    assert_eq!(rows.len(), 3, "{rows:?}");
    for w in rows.iter().filter(|w| w["slot"] != victim_slot) {
        assert_eq!(w["respawns"], 0, "{w}");
    }
    let new_pid = row["pid"].as_i64().unwrap() as i32;
    assert!(s.worker_pids().contains(&new_pid));
    assert!(!alive(victim_pid));
}

// ---------------------------------------------------------------------------------------------
// backends()
// ---------------------------------------------------------------------------------------------

/// `fastcgi "t" { … }` spawning the test backend with `procs` processes on `<dir>/t.sock-i`.
fn fcgi_block(dir: &std::path::Path, procs: u32) -> String {
    format!(
        "fastcgi \"t\" {{ spawn = \"{}\", procs = {procs}, socket = \"unix:{}/t.sock\", \
         extensions = {{ \".php\" }} }}\n",
        env!("CARGO_BIN_EXE_luahttpd-fcgi-test"),
        dir.display()
    )
}

#[test]
fn backends_lists_spawned_processes_and_counts_their_requests() {
    let dir = site("admin-fcgi", &[("t.php", b"")]);
    let config = config_text("workers = 2", &fcgi_block(dir.path(), 2));
    let s = Server::start_config(dir, &config);
    let path = sock(&s);
    let rows = match eval_ok(&path, "backends()") {
        Value::Array(a) => a,
        other => panic!("{other}"),
    };
    assert_eq!(rows.len(), 2, "{rows:?}");
    let mut backend_pids = Vec::new();
    for r in &rows {
        assert_eq!(r["name"], "t", "{r}");
        assert_eq!(r["state"], "up", "{r}");
        let pid = r["pid"].as_i64().unwrap_or_else(|| panic!("no pid: {r}")) as i32;
        assert!(alive(pid), "{r}");
        backend_pids.push(pid);
        assert_eq!(r["total"], 0, "{r}");
    }
    assert_ne!(backend_pids[0], backend_pids[1]);

    // workers() lists the workers, not the backends.
    let mut worker_pids: Vec<i32> = s
        .worker_pids()
        .into_iter()
        .filter(|p| !backend_pids.contains(p))
        .collect();
    worker_pids.sort();
    let mut rows_pids: Vec<i32> = workers(&path)
        .iter()
        .map(|w| w["pid"].as_i64().unwrap() as i32)
        .collect();
    rows_pids.sort();
    assert_eq!(rows_pids, worker_pids);

    const N: u64 = 12;
    for i in 0..N {
        let mut c = s.connect();
        c.send(format!("GET /t.php?mode=pid&i={i} HTTP/1.0\r\nHost: t\r\n\r\n").as_bytes());
        let r = c.response(false);
        assert_eq!(r.status, 200, "{}", r.text());
        let pid: i32 = r.text().trim().parse().expect("a pid");
        assert!(backend_pids.contains(&pid), "{pid} not in {backend_pids:?}");
    }
    let mut rows = Vec::new();
    wait_for("backend totals to reach N", Duration::from_secs(3), || {
        rows = match eval_ok(&path, "backends()") {
            Value::Array(a) => a,
            _ => Vec::new(),
        };
        rows.iter().filter_map(|r| r["total"].as_u64()).sum::<u64>() >= N
    });
    std::thread::sleep(Duration::from_millis(200));
    let rows = match eval_ok(&path, "backends()") {
        Value::Array(a) => a,
        other => panic!("{other}"),
    };
    let total: u64 = rows.iter().filter_map(|r| r["total"].as_u64()).sum();
    assert_eq!(total, N, "{rows:?}");
    for r in &rows {
        assert_eq!(r["active"], 0, "{r}");
        assert_eq!(r["errors"], 0, "{r}");
    }
}

// ---------------------------------------------------------------------------------------------
// shutdown()
// ---------------------------------------------------------------------------------------------

#[test]
fn shutdown_drains_a_slow_download_then_exits_and_removes_the_socket() {
    let data: Vec<u8> = (0..20 * 1024 * 1024u32)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let mut s = start("workers = 1", &[("big.bin", &data)]);
    let path = sock(&s);
    let mut c = s.connect();
    c.send(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while got.len() < 256 * 1024 {
        let n = c.stream.read(&mut buf).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }

    let mut admin = Admin::connect(&path);
    let asked = Instant::now();
    let answer = admin.ok("shutdown()");
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "the answer took {:?}",
        asked.elapsed()
    );
    assert_eq!(answer["draining"], 1, "{answer}");
    assert_eq!(answer["workers"], 1, "{answer}");
    assert_eq!(answer["deadline_seconds"].as_f64(), Some(30.0), "{answer}");

    // The socket stays up while the workers drain.
    let mut rows = Vec::new();
    wait_for("workers() shows draining", Duration::from_secs(3), || {
        rows = workers(&path);
        rows.len() == 1 && rows[0]["state"] == "draining"
    });
    assert_eq!(status(&path)["state"], "draining");
    assert!(s.child.try_wait().unwrap().is_none(), "still draining");

    // Read the rest slowly.
    loop {
        let n = c.stream.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        std::thread::sleep(Duration::from_millis(1));
    }
    let head_end = common::find(&got, b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&got[..head_end]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(got.len() - head_end, data.len(), "whole body received");
    assert!(got[head_end..] == data[..], "body is byte-exact");
    let st = s
        .wait_exit(Duration::from_secs(10))
        .expect("server exits after the drain");
    assert_eq!(st.code(), Some(0), "{st:?}");
    assert!(
        std::fs::symlink_metadata(&path).is_err(),
        "admin socket removed"
    );
}

#[test]
fn shutdown_now_stops_at_once_despite_a_stalled_download() {
    let data = vec![b'x'; 8 * 1024 * 1024];
    let mut s = start(
        "workers = 2, timeouts = { graceful = 30 }",
        &[("big", &data)],
    );
    let path = sock(&s);
    let workers_before = s.worker_pids();
    let mut c = s.connect();
    c.send(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut buf = [0u8; 1024];
    assert!(c.stream.read(&mut buf).unwrap() > 0);
    let answer = eval_ok(&path, "shutdown{now=true}");
    assert_eq!(answer["stopping"], "now", "{answer}");
    assert_eq!(answer["workers"], 2, "{answer}");
    let t = Instant::now();
    let st = s
        .wait_exit(Duration::from_secs(4))
        .expect("shutdown{now=true} stops at once");
    assert_eq!(st.code(), Some(0), "{st:?}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(std::fs::symlink_metadata(&path).is_err(), "socket removed");
    wait_for("workers gone", Duration::from_secs(3), || {
        workers_before.iter().all(|&p| !alive(p))
    });
}

#[test]
fn shutdown_with_a_timeout_cuts_a_stalled_download_at_the_deadline() {
    let data = vec![b'x'; 8 * 1024 * 1024];
    let mut s = start(
        "workers = 1, timeouts = { graceful = 30 }",
        &[("big", &data)],
    );
    let path = sock(&s);
    let mut c = s.connect();
    c.send(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut buf = [0u8; 1024];
    assert!(c.stream.read(&mut buf).unwrap() > 0);
    let answer = eval_ok(&path, "shutdown{timeout=1}");
    assert_eq!(answer["deadline_seconds"].as_f64(), Some(1.0), "{answer}");
    let t = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    assert!(s.child.try_wait().unwrap().is_none(), "still draining");
    let st = s
        .wait_exit(Duration::from_secs(5))
        .expect("stops at the deadline");
    assert_eq!(st.code(), Some(0), "{st:?}");
    let took = t.elapsed();
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert!(std::fs::symlink_metadata(&path).is_err(), "socket removed");
    drop(c);
}

// ---------------------------------------------------------------------------------------------
// reload()
// ---------------------------------------------------------------------------------------------

fn server_header(s: &Server) -> String {
    let r = s.get("/a.txt");
    assert_eq!(r.status, 200);
    r.header("server").unwrap_or("").to_string()
}

/// Waits until the reload that made `generation` is confirmed (state running, ok).
fn wait_reloaded(path: &std::path::Path, generation: u64) -> Value {
    let mut st = Value::Null;
    wait_for(
        &format!("generation {generation} running"),
        Duration::from_secs(5),
        || {
            st = status(path);
            st["generation"] == generation
                && st["state"] == "running"
                && st["last_reload"]["ok"] == true
        },
    );
    st
}

#[test]
fn reload_keeps_the_old_config_on_error_and_applies_a_good_one() {
    let dir = site("admin-reload", &[("a.txt", b"hello")]);
    let good = |name: &str| config_text(&format!("workers = 2, server_name = \"{name}\""), "");
    let s = Server::start_config(dir, &good("first"));
    let path = sock(&s);
    let site_lua = s.dir.path().join("site.lua");
    assert_eq!(server_header(&s), "first");

    // Broken: a syntax error on line 3.
    std::fs::write(
        &site_lua,
        format!("{}-- two\nthis is not lua\n", good("broken")),
    )
    .unwrap();
    let mut admin = Admin::connect(&path);
    let err = admin.eval("reload()").expect_err("reload of a broken file");
    assert!(err.contains("site.lua:3"), "{err}");
    assert!(err.contains("the running configuration stays"), "{err}");
    for _ in 0..5 {
        assert_eq!(server_header(&s), "first");
    }
    let st = admin.ok("status()");
    assert_eq!(st["generation"], 1, "{st}");
    assert_eq!(st["state"], "running", "{st}");
    assert_eq!(st["last_reload"]["ok"], false, "{st}");
    let recorded = st["last_reload"]["error"].as_str().unwrap_or("");
    assert!(recorded.contains("site.lua:3"), "{st}");
    let rows = admin.ok("workers()");
    assert_eq!(rows.as_array().map(Vec::len), Some(2), "{rows}");

    // Good: a new server_name.
    std::fs::write(&site_lua, good("second")).unwrap();
    let answer = admin.ok("reload()");
    assert_eq!(answer["ok"], true, "{answer}");
    wait_for("Server: second", Duration::from_secs(3), || {
        server_header(&s) == "second"
    });
    let st = wait_reloaded(&path, 2);
    assert_eq!(st["last_reload"]["error"], Value::Null, "{st}");
    // Once the old generation drained, only the new workers are listed.
    wait_for("old generation gone", Duration::from_secs(5), || {
        let rows = workers(&path);
        rows.len() == 2 && rows.iter().all(|w| w["generation"] == 2)
    });
    assert!(config_contains(&path, "second"));

    // SIGUSR1 does the same.
    std::fs::write(&site_lua, good("third")).unwrap();
    s.signal(10);
    wait_for("Server: third", Duration::from_secs(3), || {
        server_header(&s) == "third"
    });
    wait_reloaded(&path, 3);

    // And a broken file under SIGUSR1 is recorded too.
    std::fs::write(&site_lua, "server {\n  workers = \n").unwrap();
    s.signal(10);
    wait_for("the failed reload recorded", Duration::from_secs(3), || {
        status(&path)["last_reload"]["ok"] == false
    });
    assert_eq!(status(&path)["generation"], 3);
    assert_eq!(server_header(&s), "third");
}

#[test]
fn a_second_reload_while_one_is_starting_is_refused() {
    let dir = site("admin-reload2", &[("a.txt", b"hello")]);
    let s = Server::start_config(dir, &config_text("workers = 2", ""));
    let path = sock(&s);
    let mut admin = Admin::connect(&path);
    // Both requests in one write, so that the second is evaluated before the first reload
    // can possibly have completed (a new generation may come up within a millisecond).
    let mut both = luahttpd::admin::protocol::encode_frame(&eval_request("reload()")).unwrap();
    both.extend(luahttpd::admin::protocol::encode_frame(&eval_request("reload()")).unwrap());
    admin.stream.write_all(&both).unwrap();
    let first = read_frame(&mut admin.stream).unwrap();
    let second = read_frame(&mut admin.stream).unwrap();
    assert_eq!(first["ok"], true, "{first}");
    assert_eq!(first["value"]["ok"], true, "{first}");
    assert_eq!(second["ok"], false, "{second}");
    let err = second["error"].as_str().unwrap_or("");
    assert!(err.contains("a reload is already in progress"), "{second}");
    let st = wait_reloaded(&path, 2);
    assert_eq!(st["generation"], 2, "{st}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(status(&path)["generation"], 2, "only one reload happened");
    // Once settled, the next one is accepted.
    assert_eq!(admin.ok("reload()")["ok"], true);
    wait_reloaded(&path, 3);
    assert_eq!(s.get("/a.txt").status, 200);
}

#[test]
fn reload_changes_the_number_of_workers() {
    let dir = site("admin-reload-n", &[("a.txt", b"hello")]);
    let s = Server::start_config(dir, &config_text("workers = 2", ""));
    let path = sock(&s);
    std::fs::write(
        s.dir.path().join("site.lua"),
        config_text("workers = 3", ""),
    )
    .unwrap();
    assert_eq!(eval_ok(&path, "reload()")["ok"], true);
    wait_reloaded(&path, 2);
    let mut rows = Vec::new();
    wait_for(
        "three workers of generation 2",
        Duration::from_secs(5),
        || {
            rows = workers(&path);
            rows.len() == 3 && rows.iter().all(|w| w["generation"] == 2)
        },
    );
    let mut listed: Vec<i32> = rows
        .iter()
        .map(|w| w["pid"].as_i64().unwrap() as i32)
        .collect();
    listed.sort();
    let mut real = s.worker_pids();
    real.sort();
    assert_eq!(listed, real, "{rows:?}");
    let st = status(&path);
    assert_eq!(
        (st["workers"].clone(), st["live_workers"].clone()),
        (3.into(), 3.into()),
        "{st}"
    );
    assert_eq!(s.get("/a.txt").status, 200);
}

#[test]
fn bad_shutdown_arguments_are_errors_and_stop_nothing() {
    let s = start("workers = 1", &[]);
    let path = sock(&s);
    let mut admin = Admin::connect(&path);
    for chunk in ["shutdown{timeout=-1}", "shutdown{timeout=0/0}"] {
        let err = admin
            .eval(chunk)
            .expect_err(&format!("{chunk} must be refused"));
        assert!(
            err.contains("timeout must be a number of seconds >= 0"),
            "{chunk}: {err}"
        );
    }
    // A misspelled option or a non-boolean `now` must not become a default stop.
    for (chunk, why) in [
        ("shutdown{timout=5}", "unknown option 'timout'"),
        ("shutdown{now='yes'}", "now must be true or false"),
    ] {
        let err = admin.eval(chunk).expect_err(chunk);
        assert!(err.contains(why), "{chunk}: {err}");
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(admin.ok("status().state"), "running");
    assert_eq!(s.get("/").status, 403);
}

fn config_contains(path: &std::path::Path, needle: &str) -> bool {
    eval_ok(path, "config()")
        .as_str()
        .is_some_and(|t| t.contains(needle))
}

/// Outcome of one load thread.
#[derive(Default, Debug)]
struct LoadStats {
    ok: u64,
    connections: u64,
    failures: Vec<String>,
    /// The `Server` headers seen, in the order first seen.
    servers: Vec<String>,
}

/// Requests `/a.txt` until `stop`; with `keepalive` on one connection until the server says
/// `Connection: close`, else a fresh connection per request. Never retries: every failure is
/// recorded.
fn load_thread(
    addr: String,
    keepalive: bool,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    start: Instant,
) -> LoadStats {
    let mut st = LoadStats::default();
    let mut conn: Option<(std::net::TcpStream, Vec<u8>, u64)> = None;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if conn.is_none() {
            match std::net::TcpStream::connect(&addr) {
                Ok(s) => {
                    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    st.connections += 1;
                    conn = Some((s, Vec::new(), 0));
                }
                Err(e) => {
                    st.failures
                        .push(format!("{:?}: connect: {e}", start.elapsed()));
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            }
        }
        let (stream, buf, n) = conn.as_mut().unwrap();
        *n += 1;
        let req: &[u8] = if keepalive {
            b"GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n"
        } else {
            b"GET /a.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        };
        let outcome = stream
            .write_all(req)
            .map_err(|e| format!("write: {e}"))
            .and_then(|_| read_response(stream, buf));
        match outcome {
            Ok((status, body, close, server)) if status == 200 && body == b"hello" => {
                st.ok += 1;
                if !st.servers.contains(&server) {
                    st.servers.push(server);
                }
                if close || !keepalive {
                    conn = None;
                }
            }
            Ok((status, body, _, _)) => {
                st.failures.push(format!(
                    "{:?}: request {n} on connection {}: status {status}, body {:?}",
                    start.elapsed(),
                    st.connections,
                    String::from_utf8_lossy(&body)
                ));
                conn = None;
            }
            Err(e) => {
                st.failures.push(format!(
                    "{:?}: request {n} on connection {}: {e}",
                    start.elapsed(),
                    st.connections
                ));
                conn = None;
            }
        }
    }
    st
}

/// One response with a Content-Length body: (status, body, Connection: close, Server).
fn read_response(
    s: &mut std::net::TcpStream,
    buf: &mut Vec<u8>,
) -> Result<(u16, Vec<u8>, bool, String), String> {
    let mut tmp = [0u8; 16 * 1024];
    let mut fill = |s: &mut std::net::TcpStream, buf: &mut Vec<u8>| match s.read(&mut tmp) {
        Ok(0) => Err(format!(
            "connection closed by the server (had {:?})",
            String::from_utf8_lossy(buf)
        )),
        Ok(n) => {
            buf.extend_from_slice(&tmp[..n]);
            Ok(())
        }
        Err(e) => Err(format!("read: {e}")),
    };
    let head_end = loop {
        if let Some(i) = common::find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        fill(s, buf)?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|x| x.parse().ok())
        .ok_or_else(|| format!("bad status line: {head:?}"))?;
    let mut len = None;
    let mut close = false;
    let mut server = String::new();
    for line in head.split("\r\n").skip(1) {
        if let Some((k, v)) = line.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
            if k == "server" {
                server = v;
            } else if k == "content-length" {
                len = v.parse::<usize>().ok();
            } else if k == "connection" && v == "close" {
                close = true;
            }
        }
    }
    let len = len.ok_or_else(|| format!("no Content-Length: {head:?}"))?;
    while buf.len() < head_end + len {
        fill(s, buf)?;
    }
    let body = buf[head_end..head_end + len].to_vec();
    buf.drain(..head_end + len);
    if close && !buf.is_empty() {
        return Err("bytes after a Connection: close response".into());
    }
    Ok((status, body, close, server))
}

#[test]
fn reload_under_continuous_load_loses_nothing() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let dir = site("admin-load", &[("a.txt", b"hello")]);
    // No keep-alive request limit: keep-alive clients reconnect only because of the reloads.
    let conf = |name: &str| {
        config_text(
            &format!(
                "workers = 2, server_name = \"{name}\", limits = {{ keepalive_requests = 1000000 }}"
            ),
            "",
        )
    };
    let s = Server::start_config(dir, &conf("g1"));
    let path = sock(&s);
    let site_lua = s.dir.path().join("site.lua");
    let requests_before = admin_common::settled_requests(&path);

    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let threads: Vec<_> = (0..5)
        .map(|i| {
            let (addr, stop) = (s.addr.clone(), stop.clone());
            std::thread::spawn(move || load_thread(addr, i < 4, stop, start))
        })
        .collect();

    let mut admin = Admin::connect(&path);
    let mut reload_times = Vec::new();
    std::thread::sleep(Duration::from_millis(600));
    for generation in 2..=4u64 {
        std::fs::write(&site_lua, conf(&format!("g{generation}"))).unwrap();
        reload_times.push(start.elapsed());
        let answer = admin.ok("reload()");
        assert_eq!(answer["ok"], true, "{answer}");
        wait_reloaded(&path, generation);
        std::thread::sleep(Duration::from_millis(800));
    }
    stop.store(true, Ordering::Relaxed);
    let stats: Vec<LoadStats> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let elapsed = start.elapsed();

    let ok: u64 = stats.iter().map(|s| s.ok).sum();
    let failures: Vec<String> = stats
        .iter()
        .enumerate()
        .flat_map(|(i, s)| s.failures.iter().map(move |f| format!("thread {i}: {f}")))
        .collect();
    let summary = format!(
        "{ok} requests ok in {elapsed:?}; reloads at {reload_times:?}; \
         per thread (ok, connections, failures, servers) {:?}",
        stats
            .iter()
            .map(|s| (s.ok, s.connections, s.failures.len(), &s.servers))
            .collect::<Vec<_>>()
    );
    assert!(
        failures.is_empty(),
        "{} failed requests during reloads:\n{}\n{summary}\nserver log:\n{}",
        failures.len(),
        failures.join("\n"),
        s.log_text()
    );
    for (i, st) in stats.iter().take(4).enumerate() {
        // Each reload drains the generation the connection is on: at least one reconnect each.
        assert!(
            st.connections >= 4,
            "keep-alive thread {i} did not reconnect after every reload: {summary}"
        );
        assert_eq!(
            (st.servers.first(), st.servers.last()),
            (Some(&"g1".to_string()), Some(&"g4".to_string())),
            "thread {i} crossed every reload: {summary}"
        );
    }
    let mut fresh = stats[4].servers.clone();
    fresh.sort();
    assert_eq!(fresh, ["g1", "g2", "g3", "g4"], "{summary}");
    eprintln!("{summary}");
    assert!(ok > 200, "too little load to mean anything: {summary}");
    assert_eq!(server_header(&s), "g4");

    // Every request was counted once, old generations included.
    let expected = requests_before + ok + 1;
    let mut got = 0;
    wait_for(
        "totals.requests to account for every request",
        Duration::from_secs(5),
        || {
            got = total_requests(&path);
            got >= expected
        },
    );
    std::thread::sleep(Duration::from_millis(300));
    got = total_requests(&path);
    assert_eq!(got, expected, "{summary}");
}

#[test]
fn idle_keepalive_connection_gets_its_next_answer_after_a_reload() {
    let dir = site("admin-idle", &[("a.txt", b"hello")]);
    let conf = |name: &str| config_text(&format!("workers = 1, server_name = \"{name}\""), "");
    let s = Server::start_config(dir, &conf("old"));
    let path = sock(&s);
    let mut c = s.connect();
    c.send(b"GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.response(false);
    assert_eq!((r.status, r.header("server")), (200, Some("old")));
    std::fs::write(s.dir.path().join("site.lua"), conf("new")).unwrap();
    assert_eq!(eval_ok(&path, "reload()")["ok"], true);
    wait_reloaded(&path, 2);
    // Idle for less than the linger time: the request is still answered, by the old
    // generation, with Connection: close.
    std::thread::sleep(Duration::from_millis(500));
    c.send(b"GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c
        .try_response(false)
        .expect("the idle keep-alive connection was closed without an answer");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("server"), Some("old"));
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed());
    assert_eq!(server_header(&s), "new");
}

// ---------------------------------------------------------------------------------------------
// reopen_logs(), config(), help()
// ---------------------------------------------------------------------------------------------

#[test]
fn reopen_logs_reopens_the_access_log_after_a_rename() {
    let s = start(r#"workers = 2, access_log = "access.log""#, &[("a", b"a")]);
    let path = sock(&s);
    common::assert_access_log_reopens(&s, || {
        assert_eq!(eval_ok(&path, "reopen_logs()"), Value::Bool(true));
    });
}

#[test]
fn config_and_help() {
    let s = start("workers = 1", &[]);
    let path = sock(&s);
    let mut admin = Admin::connect(&path);
    let config = admin.ok("config()");
    let config = config.as_str().expect("config() is text");
    assert!(config.contains("server {"), "{config}");
    let root = s.dir.path().join("www");
    let root = root.to_string_lossy();
    assert!(config.contains(root.as_ref()), "root {root} in:\n{config}");
    assert!(config.contains("admin.sock"), "{config}");

    let help = admin.ok("help()");
    let help = help.as_str().expect("help() is text");
    for f in FUNCTIONS {
        assert!(help.contains(&format!("{f}(")), "{f} missing from:\n{help}");
    }
    // The admin state is sandboxed and errors are answers, not disconnections.
    let err = admin.eval("io.open('/etc/passwd')").expect_err("no io");
    assert!(err.starts_with("repl:1:"), "{err}");
    assert_eq!(admin.ok("1 + 1"), 2);
    let err = admin
        .eval("while true do end")
        .expect_err("instruction limit");
    assert!(err.contains("instruction limit"), "{err}");
    assert_eq!(admin.ok("status().generation"), 1);
}

#[test]
fn help_lists_shared_and_every_shared_dict_method() {
    let s = start("workers = 1", &[]);
    let path = sock(&s);
    let mut admin = Admin::connect(&path);
    let help = admin.ok("help()");
    let help = help.as_str().expect("help() is text");
    let lines: Vec<&str> = help.lines().collect();
    let has_line = |start: &str| lines.iter().any(|l| l.starts_with(start));
    assert!(has_line("shared() "), "shared() missing from:\n{help}");
    for m in [
        "get",
        "set",
        "add",
        "replace",
        "incr",
        "delete",
        "ttl",
        "keys",
        "flush",
        "free_space",
        "leaky_bucket",
    ] {
        let start = format!("shared.NAME:{m}(");
        assert!(has_line(&start), "{start} missing from:\n{help}");
    }
    assert!(help.contains(":expire("), "expire missing from:\n{help}");
}

// ---------------------------------------------------------------------------------------------
// The command-line client
// ---------------------------------------------------------------------------------------------

#[test]
fn cli_prints_an_aligned_workers_table() {
    let s = start("workers = 2", &[]);
    let path = sock(&s);
    let out = repl(&path, &["-e", "workers()"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(text(&out.stderr), "");
    let shown = text(&out.stdout);
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 3, "{shown}");
    let header = lines[0];
    assert!(header.starts_with("slot"), "{shown}");
    // The pid column is numeric: right-aligned under its header.
    let pid_end = header.find(" pid ").expect("pid column") + 4;
    let mut pids: Vec<i32> = Vec::new();
    for row in &lines[1..] {
        let cell = row.get(..pid_end).unwrap_or("").rsplit(' ').next().unwrap();
        pids.push(
            cell.parse()
                .unwrap_or_else(|_| panic!("pid not aligned under its header:\n{shown}")),
        );
        assert_eq!(row.as_bytes().get(pid_end), Some(&b' '), "{shown}");
    }
    pids.sort();
    let mut real = s.worker_pids();
    real.sort();
    assert_eq!(pids, real, "{shown}");
    for col in ["generation", "state", "respawns", "requests"] {
        assert!(header.contains(col), "{col} missing: {shown}");
    }
}

#[test]
fn cli_reports_errors_and_prints_json() {
    let s = start("workers = 1", &[]);
    let path = sock(&s);
    let out = repl(&path, &["-e", "nosuch()"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(text(&out.stdout), "");
    let err = text(&out.stderr);
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains("nosuch"), "{err}");

    let out = repl(&path, &["-e", "status()", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(v["pid"], s.pid(), "{v}");
    assert_eq!(v["generation"], 1, "{v}");

    let out = repl(&path, &["--json", "-e", "workers()"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let rows = v.as_array().expect("an array");
    assert_eq!(rows.len(), 1, "{v}");
    // Key order on the wire: slot, pid, generation, state first.
    let keys: Vec<&String> = rows[0].as_object().unwrap().keys().take(4).collect();
    assert_eq!(keys, ["slot", "pid", "generation", "state"], "{v}");
}

#[test]
fn interactive_client_against_the_real_server() {
    let s = start("workers = 1", &[]);
    let path = sock(&s);
    let state = common::TempDir::new("admin-pty-state");
    let mut pty = admin_common::Pty::spawn(
        &["repl".as_ref(), path.as_os_str()],
        &[("XDG_STATE_HOME", state.path())],
    );
    let banner = pty.expect("luahttpd> ");
    assert!(
        admin_common::plain(&banner).contains("connected to luahttpd"),
        "{banner:?}"
    );
    pty.send(b"sta\t");
    pty.expect("status(");
    pty.send(b")\r");
    let shown = admin_common::plain(&pty.expect("luahttpd> "));
    assert!(shown.contains("generation"), "{shown:?}");
    assert!(shown.contains(&s.pid().to_string()), "{shown:?}");
    pty.send(b"\x04");
    assert_eq!(pty.wait_exit(), Some(0));
}

#[test]
fn one_connection_serves_many_requests_and_bad_requests_keep_it() {
    let s = start("workers = 1", &[]);
    let path = sock(&s);
    let mut admin = Admin::connect(&path);
    for i in 0..20 {
        assert_eq!(admin.ok(&format!("{i} * 2")), i * 2);
    }
    // A request without "eval" gets an error, and the connection stays usable.
    luahttpd::admin::protocol::write_frame(&mut admin.stream, &serde_json::json!({"x": 1}))
        .unwrap();
    let answer = luahttpd::admin::protocol::read_frame(&mut admin.stream).unwrap();
    assert_eq!(answer["ok"], false, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or("")
            .starts_with("bad request"),
        "{answer}"
    );
    assert_eq!(admin.ok("status().state"), "running");
    // Many clients at once.
    let clients: Vec<Admin> = (0..10).map(|_| Admin::connect(&path)).collect();
    for mut c in clients {
        assert_eq!(c.ok("status().pid"), s.pid());
    }
    // The server still serves HTTP.
    let mut c = Client::connect(&s.addr);
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response(false).status, 403);
}

#[test]
fn a_chunk_cannot_escape_the_instruction_limit_with_pcall() {
    let s = start("workers = 1", &[]);
    let path = sock(&s);
    let mut admin = Admin::connect(&path);
    let t0 = std::time::Instant::now();
    let err = admin
        .eval("while true do pcall(function() while true do end end) end")
        .expect_err("the limit must end the chunk");
    assert!(err.contains("instruction limit"), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    // The watcher is still supervising and answering.
    assert_eq!(admin.ok("status().state"), "running");
    let err = admin
        .eval("return string.rep('x', 1024 * 1024 * 1024)")
        .expect_err("the memory limit must refuse a 1 GiB string");
    assert!(!err.is_empty());
    assert_eq!(admin.ok("status().state"), "running");
}

#[test]
fn reload_is_refused_while_the_server_stops() {
    let s = start("workers = 1", &[]);
    let path = sock(&s);
    let mut admin = Admin::connect(&path);
    // A request still arriving keeps the draining worker, and so the server, alive.
    let mut busy = std::net::TcpStream::connect(&s.addr).unwrap();
    std::io::Write::write_all(&mut busy, b"GET / HTTP/1.1\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    admin.ok("shutdown{timeout = 5}");
    let err = admin
        .eval("reload()")
        .expect_err("no reload while stopping");
    assert!(err.contains("stopping"), "{err}");
    assert_eq!(admin.ok("status().generation"), 1);
}

/// The pids of backend `name` as backends() shows them.
fn backend_pids(path: &std::path::Path, name: &str) -> Vec<i64> {
    match eval_ok(path, "backends()") {
        Value::Array(rows) => rows
            .iter()
            .filter(|r| r["name"] == name)
            .filter_map(|r| r["pid"].as_i64())
            .collect(),
        other => panic!("{other}"),
    }
}

#[test]
fn reload_replaces_changed_backends_after_the_old_workers_drain() {
    let dir = site("admin-fcgi-reload", &[("t.php", b""), ("u.phx", b"")]);
    let root = dir.path().to_path_buf();
    let block = |env: &str| {
        format!(
            "fastcgi \"t\" {{ spawn = \"{}\", procs = 1, socket = \"unix:{}/t.sock\", \
             extensions = {{ \".php\" }}, env = {{ V = \"{env}\" }} }}\n",
            env!("CARGO_BIN_EXE_luahttpd-fcgi-test"),
            root.display()
        )
    };
    let s = Server::start_config(dir, &config_text("workers = 1", &block("1")));
    let path = sock(&s);
    let get = |target: &str| {
        common::raw(
            &s.addr,
            format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
    };
    assert_eq!(get("/t.php?mode=pid").status, 200);
    let before = backend_pids(&path, "t");
    assert_eq!(before.len(), 1);

    // A changed environment and a new backend.
    let extra = format!(
        "fastcgi \"u\" {{ spawn = \"{}\", procs = 1, socket = \"unix:{}/u.sock\", \
         extensions = {{ \".phx\" }} }}\n",
        env!("CARGO_BIN_EXE_luahttpd-fcgi-test"),
        root.display()
    );
    std::fs::write(
        root.join("site.lua"),
        config_text("workers = 1", &(block("2") + &extra)),
    )
    .unwrap();
    eval_ok(&path, "reload()");
    wait_for("the new backend to serve", Duration::from_secs(5), || {
        get("/u.phx?mode=pid").status == 200
    });
    wait_for(
        "t restarted with its new definition",
        Duration::from_secs(5),
        || {
            let now = backend_pids(&path, "t");
            now.len() == 1 && now != before
        },
    );
    assert_eq!(get("/t.php?mode=pid").status, 200);
    let u = backend_pids(&path, "u");
    assert_eq!(u.len(), 1);

    // Dropping a backend stops its processes once the old workers drained.
    std::fs::write(
        root.join("site.lua"),
        config_text("workers = 1", &block("2")),
    )
    .unwrap();
    eval_ok(&path, "reload()");
    wait_for("u to stop", Duration::from_secs(5), || !alive(u[0] as i32));
    assert!(backend_pids(&path, "u").is_empty());
    assert_eq!(get("/t.php?mode=pid").status, 200);
    // No backend takes .phx any more: it is the plain (empty) file.
    let r = get("/u.phx?mode=pid");
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty(), "{:?}", r.text());
}
