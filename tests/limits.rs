//! Route limits end to end: the backstop that kills a worker stuck in code the limits cannot
//! interrupt, and a worker's memory over many routed requests (issue 8, defects 2-4).

mod admin_common;
mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn config(rest: &str) -> String {
    format!("server {{ {BASE} }}\n{rest}")
}

fn start(rest: &str) -> Server {
    let dir = TempDir::new("limits");
    std::fs::create_dir_all(dir.path().join("www")).expect("mkdir www");
    Server::start_config(dir, &config(rest))
}

/// A `__close` added to a metatable after `setmetatable` runs inside the hook when a stop
/// unwinds its block, with hooks off: only the backstop ends it. The worker is killed within
/// deadline + bound, the log names the request, and a new worker serves.
#[test]
fn a_stuck_route_call_is_killed_by_the_backstop_and_logged() {
    let s = start(
        r#"
route(function(req)
  if req.path == "/stuck" then
    local mt = {}
    local obj = setmetatable({}, mt)
    mt.__close = function() while true do end end
    local x <close> = obj
    while true do end
  end
  return respond(200, "ok\n")
end)
"#,
    );
    let before = s.worker_pids();
    let started = Instant::now();
    let mut c = s.connect();
    c.send(b"GET /stuck HTTP/1.1\r\nHost: example.com\r\n\r\n");
    // The connection ends without an answer when the worker dies.
    let _ = c.try_response(false);
    let took = started.elapsed();
    // 50 ms deadline + 1 s bound, with room for a loaded machine; it used to run forever.
    assert!(took < Duration::from_secs(10), "took {took:?}");
    wait_for("the backstop log line", Duration::from_secs(10), || {
        s.log_text().lines().any(|l| {
            l.contains("killed by the route backstop")
                && l.contains("GET /stuck")
                && l.contains("site.lua:3")
        })
    });
    wait_for("a respawned worker", Duration::from_secs(10), || {
        let now = s.worker_pids();
        now.len() == before.len() && now != before
    });
    let r = s.get("/ok");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "ok\n");
}

/// A loop inside a coroutine is stopped by the budget (issue 13: the hook was mlua's, which
/// left coroutines unhooked, so only the backstop ended it by killing the worker).
#[test]
fn a_loop_inside_a_coroutine_is_stopped_by_the_budget() {
    let s = start(
        r#"
local co = coroutine
route(function(req)
  if req.path == "/spin" then co.wrap(function() while true do end end)() end
  return respond(200, "ok\n")
end)
"#,
    );
    let before = s.worker_pids();
    let started = Instant::now();
    assert_eq!(s.get("/spin").status, 500);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(s.worker_pids(), before);
    wait_for("the budget's log line", Duration::from_secs(5), || {
        s.log_text().contains("instruction budget exceeded")
    });
    assert!(!s.log_text().contains("killed by the route backstop"));
    assert_eq!(s.get("/ok").text(), "ok\n");
}

/// A 10 KB body built once and answered per request: the workers' RSS stays flat (it grew
/// ~10 KB per request before: 5.3 GB after 1.38 M requests).
#[test]
fn worker_rss_stays_flat_over_many_routed_requests() {
    let s = start(
        r#"
local body = string.rep("x", 10240)
route(function(req) return respond(200, body) end)
"#,
    );
    // A new connection per 50 requests (a kept connection has a request limit).
    let ask = |n: usize| {
        for _ in 0..n / 50 {
            let mut c = s.connect();
            for _ in 0..50 {
                c.send(b"GET /b HTTP/1.1\r\nHost: example.com\r\n\r\n");
                let r = c.response(false);
                assert_eq!(r.status, 200);
            }
        }
    };
    ask(2_000);
    let pids = s.worker_pids();
    let before: u64 = pids.iter().map(|p| common::rss_kib(*p)).sum();
    ask(40_000);
    let after: u64 = pids.iter().map(|p| common::rss_kib(*p)).sum();
    // 40,000 × 10 KB = 400 MB if the bodies were kept; allow GC slack.
    assert!(
        after < before + 16 * 1024,
        "worker RSS grew from {before} KB to {after} KB"
    );
}

/// The access-log lines a worker still buffers when the backstop kills it are written on its
/// way out (it buffers up to a second of them; a worker killed again and again lost them all,
/// which made a log rotation look as if it had not taken effect).
#[test]
fn a_backstopped_worker_writes_its_buffered_access_lines() {
    let dir = TempDir::new("limits-log");
    std::fs::create_dir_all(dir.path().join("www")).expect("mkdir www");
    dir.write("www/a.txt", b"a");
    let s = Server::start_config(
        dir,
        &format!(
            "server {{ {BASE}, access_log = \"access.log\" }}\n{}",
            r#"
route(function(req)
  if req.path == "/stuck" then
    local mt = {}
    local obj = setmetatable({}, mt)
    mt.__close = function() while true do end end
    local x <close> = obj
    while true do end
  end
end)
"#
        ),
    );
    let log = s.dir.path().join("access.log");
    // Past the start-up probe's flush, so that our lines sit in the buffer.
    std::thread::sleep(Duration::from_millis(1200));
    let mut c = s.connect();
    for i in 0..3 {
        c.send(format!("GET /a.txt?n={i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        assert_eq!(c.response(false).status, 200);
    }
    c.send(b"GET /stuck HTTP/1.1\r\nHost: x\r\n\r\n");
    let _ = c.try_response(false);
    wait_for("the backstop log line", Duration::from_secs(10), || {
        s.log_text().contains("killed by the route backstop")
    });
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    for i in 0..3 {
        assert!(
            text.contains(&format!("/a.txt?n={i}")),
            "line {i} lost: {text}"
        );
    }
}

/// The only worker's `workers()` row.
fn worker_row(s: &Server) -> Value {
    let rows = admin_common::workers(&s.dir.path().join("admin.sock"));
    assert_eq!(rows.len(), 1, "{rows:?}");
    rows[0].clone()
}

/// `workers()` tells a Lua call past its limits (`lua_ms`) from a row whose current request is
/// only the one started last (issue 9: the soak counted a worker "busy on /adv/pcall for
/// 3.2 s" whose route had answered 500 within milliseconds; another request of that worker was
/// still in flight, so the slot kept showing /adv/pcall with its elapsed time growing).
#[test]
fn workers_shows_when_lua_runs_not_only_the_last_request() {
    let dir = TempDir::new("limits-lua-ms");
    std::fs::create_dir_all(dir.path().join("www")).expect("mkdir www");
    // Bigger than every socket buffer of a loopback connection: a client that reads none of
    // it keeps the request in flight.
    let big = std::fs::File::create(dir.path().join("www/big.bin")).expect("big.bin");
    big.set_len(64 << 20).expect("set_len");
    let s = Server::start_config(
        dir,
        &format!(
            "server {{ {}, admin = \"admin.sock\" }}\n{}",
            BASE.replace("workers = 2", "workers = 1"),
            r#"
route(function(req)
  if req.path == "/adv/pcall" then
    while true do pcall(function() while true do end end) end
  end
  if req.path == "/stuck" then
    local mt = {}
    local obj = setmetatable({}, mt)
    mt.__close = function() while true do end end
    local x <close> = obj
    while true do end
  end
end)
"#
        ),
    );

    // A request in flight on one connection, a budget-stopped route on another.
    let mut slow = TcpStream::connect(&s.addr).expect("connect");
    slow.write_all(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    wait_for("the slow request in flight", Duration::from_secs(5), || {
        worker_row(&s)["request"]
            .as_str()
            .is_some_and(|r| r.ends_with("/big.bin"))
    });
    let started = Instant::now();
    assert_eq!(s.get("/adv/pcall").status, 500);
    let answered = started.elapsed();
    std::thread::sleep(Duration::from_millis(1500));
    let row = worker_row(&s);
    // The slot still names /adv/pcall, in flight for longer than the backstop's bound...
    assert!(
        row["request"]
            .as_str()
            .is_some_and(|r| r.ends_with("/adv/pcall")),
        "{row}"
    );
    let elapsed = row["elapsed_ms"].as_u64().expect("elapsed_ms");
    assert!(elapsed >= 1400, "{row}");
    // ...though its route answered long ago and no Lua runs.
    assert!(answered < Duration::from_millis(1000), "{answered:?}");
    assert_eq!(row["lua_ms"], Value::Null, "{row}");
    drop(slow);

    // A call the limits cannot stop: lua_ms counts it until the backstop kills the worker.
    let before = s.worker_pids();
    let mut c = s.connect();
    c.send(b"GET /stuck HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut seen = 0;
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until && seen == 0 {
        let row = worker_row(&s);
        if row["request"]
            .as_str()
            .is_some_and(|r| r.ends_with("/stuck"))
        {
            seen = row["lua_ms"].as_u64().unwrap_or(0);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(seen > 0, "lua_ms never showed the stuck call");
    let _ = c.try_response(false);
    wait_for("a respawned worker", Duration::from_secs(10), || {
        let now = s.worker_pids();
        now.len() == before.len() && now != before
    });
}

/// The backstop's timer is left armed after a call (armed lazily, not twice per call): its
/// spare alarm in an idle worker, or during a later quick call, kills no one, and a call that
/// runs away after many quick ones (the timer still due for an earlier call's end) is killed.
#[test]
fn the_lazily_armed_backstop_spares_quick_calls_and_still_kills_a_stuck_one() {
    let s = start(
        r#"
route(function(req)
  if req.path == "/stuck" then
    local mt = {}
    local obj = setmetatable({}, mt)
    mt.__close = function() while true do end end
    local x <close> = obj
    while true do end
  end
  return respond(200, "ok\n")
end)
"#,
    );
    let before = s.worker_pids();
    for _ in 0..20 {
        assert_eq!(s.get("/ok").text(), "ok\n");
    }
    // Past deadline + bound of the last call: its alarm went off in an idle worker.
    std::thread::sleep(Duration::from_millis(1500));
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1300) {
        assert_eq!(s.get("/ok").text(), "ok\n", "quick calls across an alarm");
    }
    assert_eq!(s.worker_pids(), before, "no worker killed by a spare alarm");
    assert!(!s.log_text().contains("killed by the route backstop"));
    let mut c = s.connect();
    c.send(b"GET /stuck HTTP/1.1\r\nHost: example.com\r\n\r\n");
    let _ = c.try_response(false);
    wait_for("the backstop log line", Duration::from_secs(10), || {
        s.log_text()
            .lines()
            .any(|l| l.contains("killed by the route backstop") && l.contains("GET /stuck"))
    });
    wait_for("a respawned worker", Duration::from_secs(10), || {
        let now = s.worker_pids();
        now.len() == before.len() && now != before
    });
    assert_eq!(s.get("/ok").text(), "ok\n");
}
