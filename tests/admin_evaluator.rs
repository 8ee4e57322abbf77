//! Admin chunks run in the admin evaluator process, never in the watcher: chunks that stall
//! (a looping xpcall handler, pattern matching on 1 MiB, a long sort) must not stop the watcher
//! from respawning workers, serving other admin clients, or stopping on SIGINT. Also: reload()
//! answers with its outcome, print() reaches the client, a stopping server says so, and
//! `--json` errors are JSON.

mod admin_common;
mod common;

use admin_common::{config_text, repl, site, sock, start, text, wait_for, Admin};
use common::{alive, Server};
use luahttpd::admin::client::Client;
use luahttpd::admin::protocol::{encode_frame, eval_request, read_frame, ProtocolError};
use serde_json::Value;
use std::io::Write;
use std::time::{Duration, Instant};

/// A looping message handler: the hook's error re-enters the handler.
const XPCALL_LOOP: &str = "xpcall(error, function() while true do end end)";
/// One pattern match on 1 MiB that never finishes (one C call: no hook runs inside it).
const FIND_LOOP: &str = "local s = ('x'):rep(1 << 20) while true do s:find('.-y') end";
/// Sorting a million numbers over and over: C calls, a few instructions each.
const SORT_LOOP: &str = "local t = {} for i = 1, 1e6 do t[i] = (i * 7919) % 1000003 end \
                         while true do table.sort(t) end";

const LIMIT_ERROR: &str = "chunk exceeded its 5 s limit; the admin Lua state was reset";

/// Sends `chunk` without waiting for its answer.
fn send(admin: &mut Admin, chunk: &str) {
    let frame = encode_frame(&eval_request(chunk)).expect("frame");
    admin.stream.write_all(&frame).expect("send chunk");
}

/// The admin evaluator's pid, once it runs.
fn evaluator_pid(s: &Server) -> i32 {
    let mut pid = None;
    wait_for("the admin evaluator", Duration::from_secs(5), || {
        pid = s.admin_evaluator_pid();
        pid.is_some()
    });
    pid.unwrap_or_default()
}

/// While `attack` keeps the evaluator busy: a SIGKILLed worker is respawned within about a
/// second, HTTP is served, another admin client gets its hello at once and its answer once
/// the attack is killed at the chunk limit, with the state reset.
fn attack_does_not_stall_the_watcher(tag: &str, attack: &str) {
    let s = start("workers = 1", &[("a.txt", b"hello")]);
    let path = sock(&s);
    let mut attacker = Admin::connect(&path);
    attacker
        .stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    assert_eq!(attacker.ok("x = 41 return x + 1"), 42, "{tag}");
    let evaluator = evaluator_pid(&s);
    let t_attack = Instant::now();
    send(&mut attacker, attack);
    // Let the chunk get into its stall.
    std::thread::sleep(Duration::from_millis(500));

    let old = s.worker_pids();
    assert_eq!(old.len(), 1, "{tag}: {old:?}");
    let t0 = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the worker");
    wait_for(
        &format!("{tag}: the killed worker respawned"),
        Duration::from_millis(1500),
        || {
            let now = s.worker_pids();
            now.len() == 1 && now != old
        },
    );
    let respawned_in = t0.elapsed();
    assert!(
        respawned_in < Duration::from_millis(1200),
        "{tag}: respawn took {respawned_in:?}"
    );
    assert_eq!(s.get("/a.txt").status, 200, "{tag}");

    // Another client is greeted at once (the watcher is not stuck), and answered once the
    // stalled chunk is stopped.
    let t1 = Instant::now();
    let mut other = Admin::connect(&path);
    assert!(
        t1.elapsed() < Duration::from_secs(1),
        "{tag}: hello took {:?}",
        t1.elapsed()
    );
    other
        .stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    send(&mut other, "status().state");

    let answer = read_frame(&mut attacker.stream).expect("the attack's answer");
    assert_eq!(answer["ok"], false, "{tag}: {answer}");
    let err = answer["error"].as_str().unwrap_or("");
    assert!(
        err == LIMIT_ERROR || err.contains("instruction limit"),
        "{tag}: {answer}"
    );
    let took = t_attack.elapsed();
    assert!(
        took < Duration::from_secs(9),
        "{tag}: the chunk ran {took:?}"
    );
    let other_answer = read_frame(&mut other.stream).expect("the other client's answer");
    assert_eq!(other_answer["value"], "running", "{tag}: {other_answer}");
    if err == LIMIT_ERROR {
        // A fresh evaluator: the old one is gone and so is its state.
        wait_for("the old evaluator reaped", Duration::from_secs(3), || {
            !alive(evaluator)
        });
        assert_eq!(attacker.ok("x"), Value::Null, "{tag}: state reset");
        assert_ne!(s.admin_evaluator_pid(), Some(evaluator), "{tag}");
    }
    assert_eq!(attacker.ok("1 + 1"), 2, "{tag}");
    // The watcher counted one respawn: the evaluator's death is no worker's.
    let st = attacker.ok("status()");
    assert_eq!(st["totals"]["respawns"], 1, "{tag}: {st}");
    assert_eq!(st["live_workers"], 1, "{tag}: {st}");
}

#[test]
fn xpcall_with_a_looping_handler_does_not_stall_the_watcher() {
    attack_does_not_stall_the_watcher("xpcall", XPCALL_LOOP);
}

#[test]
fn find_on_one_mib_does_not_stall_the_watcher() {
    attack_does_not_stall_the_watcher("find", FIND_LOOP);
}

#[test]
fn a_long_table_sort_does_not_stall_the_watcher() {
    attack_does_not_stall_the_watcher("sort", SORT_LOOP);
}

#[test]
fn sigint_stops_the_server_while_a_chunk_stalls() {
    let mut s = start("workers = 1", &[]);
    let path = sock(&s);
    let mut attacker = Admin::connect(&path);
    send(&mut attacker, FIND_LOOP);
    let evaluator = evaluator_pid(&s);
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    s.signal(2);
    let st = s
        .wait_exit(Duration::from_secs(5))
        .expect("SIGINT stops the server while a chunk stalls");
    assert!(st.success(), "{st:?}");
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    // The evaluator does not outlive the server.
    wait_for("the evaluator gone", Duration::from_secs(3), || {
        !alive(evaluator)
    });
    // The client was told why its connection closed.
    let notice = read_frame(&mut attacker.stream).expect("closing notice");
    assert_eq!(notice["closing"], "the server is stopping", "{notice}");
}

#[test]
fn the_evaluator_holds_no_listener_of_the_watcher() {
    let s = start("workers = 1", &[]);
    let path = sock(&s);
    assert_eq!(Admin::connect(&path).ok("1"), 1);
    let evaluator = evaluator_pid(&s);
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{evaluator}/fd"))
        .expect("fd dir")
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|l| l.display().to_string())
        .collect();
    // stdin, stdout, stderr (the error log here) and the link to the watcher; nothing else.
    let sockets = fds.iter().filter(|l| l.starts_with("socket:")).count();
    assert!(fds.len() <= 4, "{fds:?}");
    assert!(sockets <= 2, "{fds:?}");
    assert!(
        !fds.iter()
            .any(|l| l.contains("eventpoll") || l.contains("signalfd")),
        "{fds:?}"
    );
    // And it is not reported as a worker.
    let rows = Admin::connect(&path).ok("workers()");
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{rows}");
}

// ---------------------------------------------------------------------------------------------
// reload() answers with the outcome
// ---------------------------------------------------------------------------------------------

fn fcgi_block(dir: &std::path::Path, procs: u32) -> String {
    format!(
        "fastcgi \"t\" {{ spawn = \"{}\", procs = {procs}, socket = \"unix:{}/t.sock\", \
         extensions = {{ \".php\" }} }}\n",
        env!("CARGO_BIN_EXE_luahttpd-fcgi-test"),
        dir.display()
    )
}

#[test]
fn a_refused_reload_is_an_error_with_its_reason_and_repl_exits_1() {
    let dir = site("admin-reload-refused", &[("t.php", b"")]);
    let config = |procs| config_text("workers = 1", &fcgi_block(dir.path(), procs));
    let first = config(1);
    let second = config(2);
    let s = Server::start_config(dir, &first);
    let path = sock(&s);
    std::fs::write(s.dir.path().join("site.lua"), second).unwrap();
    let err = Admin::connect(&path)
        .eval("reload()")
        .expect_err("a reload changing procs is refused");
    assert!(
        err.contains("fastcgi 't' changed its addresses or processes; restart to apply"),
        "{err}"
    );
    let out = repl(&path, &["-e", "reload()"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stderr).contains("restart to apply"), "{out:?}");
    assert_eq!(text(&out.stdout), "");
    let st = Admin::connect(&path).ok("status()");
    assert_eq!(st["generation"], 1, "{st}");
    assert_eq!(st["last_reload"]["ok"], false, "{st}");
}

#[test]
fn a_good_reload_answers_once_the_new_generation_runs() {
    let s = start("workers = 2", &[("a.txt", b"hello")]);
    let path = sock(&s);
    let answer = Admin::connect(&path).ok("reload()");
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["generation"], 2, "{answer}");
    // Answered after the fact: the new generation is the one running.
    let st = Admin::connect(&path).ok("status()");
    assert_eq!(st["generation"], 2, "{st}");
    assert_eq!(st["last_reload"]["ok"], true, "{st}");
    // A chunk that waits for a reload holds up no other client.
    let mut waiting = Admin::connect(&path);
    let mut other = Admin::connect(&path);
    send(&mut waiting, "reload()");
    assert_eq!(other.ok("status().pid"), s.pid());
    let r = read_frame(&mut waiting.stream).expect("reload answer");
    assert_eq!(r["value"]["generation"], 3, "{r}");
}

// ---------------------------------------------------------------------------------------------
// The REPL items
// ---------------------------------------------------------------------------------------------

#[test]
fn print_output_goes_to_the_client_as_lua_prints() {
    let s = start("workers = 1", &[]);
    let path = sock(&s);
    let out = repl(
        &path,
        &["-e", "print(1, 'a', nil, 2.5) print(true) return 7"],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(text(&out.stdout), "1\ta\tnil\t2.5\ntrue\n7\n");
    // A chunk that only prints shows only what it printed.
    let out = repl(&path, &["-e", "for i = 1, 2 do print(i) end"]);
    assert_eq!(text(&out.stdout), "1\n2\n", "{out:?}");
    // On the wire, the output comes with the response.
    let mut a = Admin::connect(&path);
    send(&mut a, "print('x') return 1");
    let v = read_frame(&mut a.stream).expect("answer");
    assert_eq!(v["output"], "x\n", "{v}");
    assert_eq!(v["value"], 1, "{v}");
    // Nothing of it lands in the error log.
    std::thread::sleep(Duration::from_millis(200));
    let log = s.log_text();
    assert!(!log.contains("admin print"), "{log}");
}

#[test]
fn after_shutdown_the_next_chunk_says_the_server_is_stopping() {
    let mut s = start("workers = 1", &[]);
    let path = sock(&s);
    let mut client = Client::connect(&path).expect("connect");
    let answer = client.eval("shutdown()").expect("answered");
    assert!(answer.result.is_ok(), "{answer:?}");
    s.wait_exit(Duration::from_secs(10))
        .expect("the server stops");
    match client.eval("status()") {
        Err(ProtocolError::Closing(why)) => assert_eq!(why, "the server is stopping"),
        other => panic!("expected the closing notice, got {other:?}"),
    }
}

#[test]
fn json_mode_errors_are_json() {
    let s = start("workers = 1", &[]);
    let path = sock(&s);
    let out = repl(&path, &["-e", "nosuch()", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(text(&out.stdout), "");
    let err: Value = serde_json::from_slice(&out.stderr).expect("stderr is JSON");
    assert!(
        err["error"].as_str().unwrap_or("").contains("nosuch"),
        "{err}"
    );
    let out = repl(&path, &["-e", "print('hi') return 1", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(text(&out.stdout), "1\n");
    let printed: Value = serde_json::from_slice(&out.stderr).expect("stderr is JSON");
    assert_eq!(printed["output"], "hi\n");
    let missing = s.dir.path().join("nope.sock");
    let out = repl(&missing, &["-e", "1", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err: Value = serde_json::from_slice(&out.stderr).expect("stderr is JSON");
    assert!(
        err["error"]
            .as_str()
            .unwrap_or("")
            .contains("cannot connect"),
        "{err}"
    );
}

#[test]
fn interactive_session_after_shutdown_says_the_server_is_stopping() {
    let mut s = start("workers = 1", &[]);
    let path = sock(&s);
    let state = common::TempDir::new("admin-ev-pty-state");
    let mut pty = admin_common::Pty::spawn(
        &["repl".as_ref(), path.as_os_str()],
        &[("XDG_STATE_HOME", state.path())],
    );
    pty.expect("luahttpd> ");
    pty.send(b"shutdown()\r");
    let shown = admin_common::plain(&pty.expect("luahttpd> "));
    assert!(shown.contains("draining"), "{shown:?}");
    s.wait_exit(Duration::from_secs(10))
        .expect("the server stops");
    pty.send(b"status()\r");
    let shown = admin_common::plain(&pty.expect("luahttpd> "));
    assert!(
        shown.contains("closed the connection: the server is stopping"),
        "{shown:?}"
    );
    assert!(!shown.contains("Broken pipe"), "{shown:?}");
    pty.send(b"\x04");
    assert_eq!(pty.wait_exit(), Some(0));
}
