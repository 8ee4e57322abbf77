//! Shared dictionaries end to end (issue 13): one zone seen by every worker, the REPL and
//! across reloads; atomic `incr` and `add` between processes; workers SIGKILLed in the middle
//! of a tight `incr` loop leave a zone that still answers, with no increment of a finished
//! request lost.

mod admin_common;
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use admin_common::{config_text, sock, Admin};
use common::*;

const ROUTE: &str = r#"
shared "c" { size = "1m" }
route(function(req)
  local d = shared.c
  if req.path == "/hit" then
    return respond(200, tostring(d:incr("hits", 1, 0)))
  elseif req.path == "/count" then
    return respond(200, tostring(d:get("hits")))
  elseif req.path:sub(1, 5) == "/add/" then
    local ok, err = d:add(req.path:sub(6), "x")
    return respond(200, ok and "won" or err)
  elseif req.path == "/burn" then
    for _ = 1, 500 do d:incr("burn", 1, 0) end
    return respond(200, "burnt")
  elseif req.path == "/burnt" then
    return respond(200, tostring(d:get("burn")))
  elseif req.path:sub(1, 5) == "/get/" then
    return respond(200, tostring(d:get(req.path:sub(6))))
  elseif req.path == "/tamper" then
    local raw_ok, raw_err = pcall(rawset, shared, "c", 1)
    local set_ok = pcall(function() shared.c = 1 end)
    local _, unknown = pcall(function() return shared.nope end)
    return respond(200, table.concat({ tostring(raw_ok), tostring(raw_err), tostring(set_ok),
      tostring(getmetatable(shared)), tostring(shared), tostring(unknown) }, "|"))
  end
end)
"#;

fn start(workers: usize) -> Server {
    let dir = TempDir::new("lua-shared");
    std::fs::create_dir_all(dir.path().join("www")).expect("mkdir www");
    let config = format!(
        "server {{ listen = \"127.0.0.1:0\", workers = {workers}, root = \"www\", error_log = \"stderr\", admin = \"admin.sock\" }}\n{ROUTE}"
    );
    Server::start_config(dir, &config)
}

/// One request on a fresh connection that closes; None when the connection failed.
fn fetch(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut c = TcpStream::connect(addr).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .ok()?;
    let mut buf = Vec::new();
    c.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.get(9..12)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

fn body(s: &Server, path: &str) -> String {
    let (st, b) = fetch(&s.addr, path).expect("request");
    assert_eq!(st, 200, "{path}: {b}");
    b
}

#[test]
fn a_counter_incremented_by_every_request_equals_the_number_of_requests() {
    let s = start(4);
    let threads = 8;
    let each = 50;
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let addr = s.addr.clone();
            std::thread::spawn(move || {
                for _ in 0..each {
                    let (st, _) = fetch(&addr, "/hit").expect("hit");
                    assert_eq!(st, 200);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(body(&s, "/count"), (threads * each).to_string());
}

#[test]
fn add_races_between_workers_have_one_winner() {
    let s = start(4);
    for key in 0..10 {
        let handles: Vec<_> = (0..6)
            .map(|_| {
                let addr = s.addr.clone();
                std::thread::spawn(move || fetch(&addr, &format!("/add/k{key}")).expect("add").1)
            })
            .collect();
        let answers: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let won = answers.iter().filter(|a| *a == "won").count();
        assert_eq!(won, 1, "key {key}: {answers:?}");
        assert!(
            answers.iter().all(|a| a == "won" || a == "exists"),
            "{answers:?}"
        );
    }
}

/// Workers are SIGKILLed while requests each run 500 `incr`s: no worker hangs the others
/// (the robust lock is recovered), and every increment of a request that was answered is
/// counted (the total is at least 500 × answered, at most 500 × sent).
#[test]
fn workers_killed_during_an_incr_loop_leave_a_consistent_zone() {
    let s = start(3);
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let (addr, stop, answered, sent) =
                (s.addr.clone(), stop.clone(), answered.clone(), sent.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    sent.fetch_add(1, Ordering::Relaxed);
                    if let Some((200, b)) = fetch(&addr, "/burn") {
                        if b == "burnt" {
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    let started = Instant::now();
    let mut kills = 0;
    while started.elapsed() < Duration::from_secs(4) {
        std::thread::sleep(Duration::from_millis(150));
        if let Some(&pid) = s.worker_pids().first() {
            // SAFETY-free: kill(1) by pid of a child of our server.
            let _ = std::process::Command::new("kill")
                .arg("-9")
                .arg(pid.to_string())
                .status();
            kills += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    assert!(kills >= 10, "only {kills} kills");
    // The zone answers at once: nobody holds its lock.
    let t = Instant::now();
    let total: u64 = body(&s, "/burnt").parse().expect("a number");
    assert!(t.elapsed() < Duration::from_secs(2));
    let answered = answered.load(Ordering::Relaxed);
    let sent = sent.load(Ordering::Relaxed);
    assert!(answered > 0);
    assert!(
        total >= answered * 500,
        "total {total} < 500 × {answered} answered"
    );
    assert!(total <= sent * 500, "total {total} > 500 × {sent} sent");
    // And it keeps counting exactly.
    let before: u64 = body(&s, "/burnt").parse().unwrap();
    body(&s, "/burn");
    let after: u64 = body(&s, "/burnt").parse().unwrap();
    assert_eq!(after, before + 500);
}

#[test]
fn the_repl_reads_and_writes_and_data_survives_a_reload() {
    let s = start(2);
    for _ in 0..3 {
        body(&s, "/hit");
    }
    let path = sock(&s);
    let mut admin = Admin::connect(&path);
    assert_eq!(admin.ok("return (shared.c:get('hits'))"), 3);
    admin.ok("shared.c:set('note', 'from the repl', 60)");
    assert_eq!(body(&s, "/get/note"), "from the repl");
    let keys = admin.ok("return shared.c:keys(20)");
    let keys: Vec<&str> = keys
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|k| k.as_str())
        .collect();
    assert!(keys.contains(&"hits") && keys.contains(&"note"), "{keys:?}");
    // A dictionary names itself, not its twelve methods.
    let shown = admin.ok("return shared.c");
    assert!(
        shown
            .as_str()
            .is_some_and(|t| t.starts_with("shared dict 'c' (")),
        "{shown}"
    );
    let overview = admin.ok("return shared()");
    let row = &overview.as_array().expect("rows")[0];
    assert_eq!(row["name"], "c", "{overview}");
    assert_eq!(row["entries"], 2, "{overview}");
    let err = admin.eval("return shared.nope:get('x')").unwrap_err();
    assert!(
        err.contains("no shared dict 'nope'") && err.contains("defined: c"),
        "{err}"
    );

    // A reload keeps the data.
    let answer = admin.ok("reload()");
    assert_eq!(answer["ok"], true, "{answer}");
    wait_for("the new generation", Duration::from_secs(10), || {
        admin.ok("status()")["generation"] == 2
    });
    assert_eq!(body(&s, "/count"), "3");
    assert_eq!(body(&s, "/hit"), "4");

    // A changed size is refused, and the running zone goes on.
    let site_lua = s.dir.path().join("site.lua");
    let text = std::fs::read_to_string(&site_lua).unwrap();
    std::fs::write(&site_lua, text.replace("\"1m\"", "\"2m\"")).unwrap();
    let err = admin.eval("reload()").unwrap_err();
    assert!(
        err.contains("shared 'c'") && err.contains("changed size"),
        "{err}"
    );
    // The forked checker refuses it (its verdict is the "running configuration stays"
    // failure), rather than the watcher finding out after evaluating the file itself.
    assert!(
        err.contains("reload failed, the running configuration stays"),
        "{err}"
    );
    assert_eq!(body(&s, "/count"), "4");
    let _ = config_text;
}

#[test]
fn bad_shared_definitions_are_config_errors_with_their_line() {
    let dir = TempDir::new("lua-shared-bad");
    std::fs::create_dir_all(dir.path().join("www")).unwrap();
    let conf = dir.write(
        "site.lua",
        b"server { listen = \"127.0.0.1:0\", root = \"www\" }\nshared \"a\" { size = \"1k\" }\nshared \"b\" { sise = \"1m\" }\nshared \"a\" { size = \"1m\" }\n",
    );
    let out = std::process::Command::new(bin())
        .arg("-t")
        .arg("-c")
        .arg(&conf)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("site.lua:2") && err.contains("out of range"),
        "{err}"
    );
    assert!(
        err.contains("site.lua:3") && err.contains("unknown key 'sise'"),
        "{err}"
    );
    assert!(
        err.contains("site.lua:4") && err.contains("defined twice"),
        "{err}"
    );
}

#[test]
fn limit_req_answers_429_with_retry_after_past_rate_and_burst() {
    let dir = TempDir::new("lua-limit-req");
    std::fs::create_dir_all(dir.path().join("www")).expect("mkdir www");
    let config = "server { listen = \"127.0.0.1:0\", workers = 2, root = \"www\", error_log = \"stderr\" }\n\
        shared \"rl\" { size = \"64k\" }\n\
        route(function(req)\n\
          if req.path ~= \"/api\" then return respond(200, \"up\") end\n\
          local d = limit_req{ zone = \"rl\", key = req.remote_addr, rate = 1, burst = 4 }\n\
          if d then return d end\n\
          return respond(200, \"ok\")\n\
        end)\n";
    let s = Server::start_config(dir, config);
    let mut statuses = Vec::new();
    let mut retry = None;
    for _ in 0..8 {
        let r = s.get("/api");
        if r.status == 429 {
            retry = r.header("retry-after").map(str::to_string);
        }
        statuses.push(r.status);
    }
    // 1 + burst admitted at once (the requests take far less than a second), the rest refused.
    assert_eq!(
        statuses.iter().filter(|&&c| c == 200).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(&statuses[5..], &[429, 429, 429], "{statuses:?}");
    assert_eq!(retry.as_deref(), Some("1"));
}

/// Route code can neither replace a dictionary (assignment, `rawset`) nor reach the table
/// behind `shared`; an unknown name is an error that lists the defined ones; the dictionary
/// still counts afterwards.
#[test]
fn route_code_cannot_replace_or_shadow_a_dictionary() {
    let s = start(1);
    let text = body(&s, "/tamper");
    let parts: Vec<&str> = text.split('|').collect();
    assert_eq!(parts.len(), 6, "{text}");
    assert_eq!(parts[0], "false", "rawset was allowed: {text}");
    assert!(parts[1].contains("read-only"), "{text}");
    assert_eq!(parts[2], "false", "assignment was allowed: {text}");
    assert_eq!(parts[3], "false", "the metatable is visible: {text}");
    assert_eq!(parts[4], "shared dicts: c", "{text}");
    assert!(
        parts[5].contains("no shared dict 'nope'") && parts[5].contains("defined: c"),
        "{text}"
    );
    assert_eq!(body(&s, "/hit"), "1");
    assert_eq!(body(&s, "/count"), "1");
}
