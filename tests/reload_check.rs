//! A reload evaluates the new config file in a forked checker with a wall-clock limit: a file
//! that loops, or stalls in one C call, fails the reload with a clear error while the watcher
//! goes on reaping, respawning and handling signals.

mod admin_common;
mod common;

use admin_common::{config_text, site, sock, status, wait_for, Admin};
use common::{alive, Server};
use std::process::Command;
use std::time::{Duration, Instant};

/// The checker's limit (src/watcher/config_check.rs `CHECK_LIMIT`).
const LIMIT: Duration = Duration::from_secs(5);

fn kill(sig: &str, pid: i32) {
    let st = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
}

/// The checker processes among the watcher's children.
fn checkers(s: &Server) -> Vec<i32> {
    let path = format!("/proc/{}/task/{}/children", s.pid(), s.pid());
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|c| c.trim() == "luahttpd-check")
        })
        .collect()
}

fn log_count(s: &Server, needle: &str) -> usize {
    s.log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(needle))
        .count()
}

#[test]
fn a_looping_config_fails_the_reload_while_workers_respawn_and_signals_work() {
    let dir = site("reload-loop", &[("a.txt", b"hello")]);
    let good = config_text("workers = 2", "");
    let s = Server::start_config(dir, &good);
    let path = sock(&s);
    std::fs::write(
        s.dir.path().join("site.lua"),
        format!("{good}-- spins forever\nwhile true do end\n"),
    )
    .unwrap();
    let started = Instant::now();
    s.signal(10);
    wait_for("the checker runs", Duration::from_secs(2), || {
        !checkers(&s).is_empty()
    });
    // The watcher answers while the checker spins.
    assert_eq!(status(&path)["state"], "reloading");

    // A killed worker is respawned during the check.
    let before = s.worker_pids();
    let checker = checkers(&s);
    let victim = *before
        .iter()
        .find(|p| !checker.contains(p))
        .expect("a worker");
    kill("-9", victim);
    wait_for("the worker respawned", Duration::from_secs(3), || {
        let now = s.worker_pids();
        !now.contains(&victim) && now.iter().filter(|p| !checker.contains(p)).count() == 2
    });
    // And SIGHUP is handled during the check.
    let reopens = log_count(&s, "reopening log files");
    s.signal(1);
    wait_for("SIGHUP handled", Duration::from_secs(2), || {
        log_count(&s, "reopening log files") > reopens
    });
    assert!(
        started.elapsed() < LIMIT,
        "the check ended before supervision was shown to go on: {:?}",
        started.elapsed()
    );
    assert_eq!(s.get("/a.txt").status, 200);

    // At the limit the checker is killed and the reload fails with that reason.
    wait_for("the reload failed", LIMIT + Duration::from_secs(5), || {
        status(&path)["last_reload"]["ok"] == false
    });
    assert!(started.elapsed() >= LIMIT, "{:?}", started.elapsed());
    let st = status(&path);
    let err = st["last_reload"]["error"].as_str().unwrap_or("");
    assert!(err.contains("took longer than 5s"), "{st}");
    assert_eq!(st["generation"], 1, "{st}");
    assert_eq!(st["state"], "running", "{st}");
    assert!(s
        .log_text()
        .contains("reload failed, the running configuration stays"));
    wait_for("the checker reaped", Duration::from_secs(2), || {
        checker.iter().all(|p| !alive(*p))
    });
    assert_eq!(s.get("/a.txt").status, 200);
}

#[test]
fn a_config_stalled_in_a_pattern_match_fails_reload_and_a_fixed_one_then_loads() {
    let dir = site("reload-pattern", &[("a.txt", b"hello")]);
    let good = config_text("workers = 2, server_name = \"first\"", "");
    let s = Server::start_config(dir, &good);
    let path = sock(&s);
    let site_lua = s.dir.path().join("site.lua");
    std::fs::write(
        &site_lua,
        format!("{good}local _ = (\"a\"):rep(1e6):find(\".-.-.-b\")\n"),
    )
    .unwrap();
    let started = Instant::now();
    let reloader = std::thread::spawn(move || {
        let mut admin = Admin::connect(&path);
        admin
            .stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        admin.eval("reload()")
    });
    // Requests are served and signals handled while the checker is stuck in C.
    wait_for("the checker runs", Duration::from_secs(2), || {
        !checkers(&s).is_empty()
    });
    let reopens = log_count(&s, "reopening log files");
    s.signal(1);
    wait_for("SIGHUP handled", Duration::from_secs(2), || {
        log_count(&s, "reopening log files") > reopens
    });
    assert_eq!(s.get("/a.txt").status, 200);
    assert!(started.elapsed() < LIMIT, "{:?}", started.elapsed());

    let answer = reloader.join().unwrap();
    let err = answer.expect_err("reload() of a stalling config");
    assert!(err.contains("took longer than"), "{err}");
    assert!(err.contains("the running configuration stays"), "{err}");
    assert!(started.elapsed() >= LIMIT, "{:?}", started.elapsed());
    let r = s.get("/a.txt");
    assert_eq!(r.header("server"), Some("first"));

    // The same server then reloads a good file.
    std::fs::write(
        &site_lua,
        config_text("workers = 2, server_name = \"second\"", ""),
    )
    .unwrap();
    let answer = Admin::connect(&sock(&s)).ok("reload()");
    assert_eq!(answer["ok"], true, "{answer}");
    wait_for("Server: second", Duration::from_secs(5), || {
        s.get("/a.txt").header("server") == Some("second")
    });
}
