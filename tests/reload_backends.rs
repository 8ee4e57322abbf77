//! A reload that changes a spawned backend restarts its processes only once no request is in
//! flight on them: php-cgi dies at once on SIGTERM, with the request it runs, and a POST cut
//! that way cannot be retried (the soak saw these around reloads).

mod admin_common;
mod common;

use admin_common::{config_text, eval_ok, site, sock, wait_for};
use common::{Client, Server};
use serde_json::Value;
use std::time::{Duration, Instant};

fn backend_pids(path: &std::path::Path) -> Vec<i64> {
    match eval_ok(path, "backends()") {
        Value::Array(rows) => rows
            .iter()
            .filter(|r| r["name"] == "t")
            .filter_map(|r| r["pid"].as_i64())
            .collect(),
        other => panic!("{other}"),
    }
}

/// Backend `name`: `procs` processes of the test backend for files ending in `ext`, with
/// `V = env`, its socket in `root`.
fn backend_text(root: &std::path::Path, name: &str, ext: &str, procs: usize, env: &str) -> String {
    format!(
        "fastcgi \"{name}\" {{ spawn = \"{}\", procs = {procs}, \
         socket = \"unix:{}/{name}.sock\", extensions = {{ \"{ext}\" }}, \
         env = {{ V = \"{env}\" }} }}\n",
        env!("CARGO_BIN_EXE_luahttpd-fcgi-test"),
        root.display()
    )
}

/// One worker and backend "t" (one process of the test backend, `.php`) with `V = env`.
fn one_backend(root: &std::path::Path, env: &str) -> String {
    config_text("workers = 1", &backend_text(root, "t", ".php", 1, env))
}

/// The server's one worker (its children but the backend processes `backends`).
fn the_worker(s: &Server, backends: &[i64]) -> i32 {
    s.worker_pids()
        .into_iter()
        .find(|p| {
            !backends.contains(&i64::from(*p))
                && std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.trim() == "luahttpd")
        })
        .expect("the worker")
}

/// Waits until t's one process is another than `before`, which then answers.
fn restarted_and_serving(s: &Server, path: &std::path::Path, before: &[i64]) {
    wait_for("t restarted", Duration::from_secs(10), || {
        let now = backend_pids(path);
        now.len() == 1 && now != before
    });
    let r = common::raw(
        &s.addr,
        b"GET /t.php?mode=pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
}

#[test]
fn a_changed_backend_is_restarted_only_after_its_request_in_flight_ends() {
    let dir = site("reload-backend-busy", &[("t.php", b""), ("a.txt", b"a")]);
    let root = dir.path().to_path_buf();
    let config = |env: &str| one_backend(&root, env);
    let s = Server::start_config(dir, &config("1"));
    let path = sock(&s);
    let before = backend_pids(&path);
    assert_eq!(before.len(), 1);

    // A keep-alive connection holds the old worker: the changed backend's processes are
    // restarted only once the old generation has drained.
    let mut old = s.connect();
    old.send(b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(old.response(false).status, 200);

    std::fs::write(root.join("site.lua"), config("2")).unwrap();
    assert_eq!(eval_ok(&path, "reload()")["ok"], true);
    // A POST on the new generation's worker that is still running when the old one has
    // drained.
    let mut c = Client::connect(&s.addr);
    let t0 = Instant::now();
    c.send(
        b"POST /t.php?mode=slowhead&ms=4000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
          Content-Length: 2\r\n\r\nab",
    );
    // The old worker drains once its last connection closes: while the POST runs.
    std::thread::sleep(Duration::from_millis(1000));
    drop(old);
    wait_for("the old worker gone", Duration::from_secs(2), || {
        s.log_text().contains("worker of generation 1 (pid")
    });
    let r = c.response(false);
    assert!(
        t0.elapsed() >= Duration::from_millis(3900),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("slow\n"), "{}", r.text());
    // Then the process is restarted with its new definition.
    restarted_and_serving(&s, &path, &before);
}

fn backend_rows(path: &std::path::Path, name: &str) -> Vec<Value> {
    match eval_ok(path, "backends()") {
        Value::Array(rows) => rows.into_iter().filter(|r| r["name"] == name).collect(),
        other => panic!("{other}"),
    }
}

#[test]
fn a_backend_a_reload_adds_is_listed_with_its_counters() {
    let dir = site("reload-backend-add", &[("t.php", b""), ("u.cgi", b"")]);
    let root = dir.path().to_path_buf();
    let backend = |name: &str, ext: &str| {
        format!(
            "fastcgi \"{name}\" {{ spawn = \"{}\", procs = 1, socket = \"unix:{}/{name}.sock\", \
             extensions = {{ \"{ext}\" }} }}\n",
            env!("CARGO_BIN_EXE_luahttpd-fcgi-test"),
            root.display()
        )
    };
    let s = Server::start_config(dir, &config_text("workers = 1", &backend("t", ".php")));
    let path = sock(&s);
    let get = |target: &str| {
        common::raw(
            &s.addr,
            format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
    };
    assert_eq!(get("/t.php?mode=pid").status, 200);

    // The added backend comes first, so every slot of the start layout now stands for
    // another address than before.
    let both = format!("{}{}", backend("u", ".cgi"), backend("t", ".php"));
    std::fs::write(root.join("site.lua"), config_text("workers = 1", &both)).unwrap();
    assert_eq!(eval_ok(&path, "reload()")["ok"], true);
    wait_for("u spawned", Duration::from_secs(5), || {
        backend_rows(&path, "u")
            .first()
            .is_some_and(|r| r["state"] == "up")
    });
    for _ in 0..3 {
        assert_eq!(get("/u.cgi?mode=pid").status, 200);
    }
    assert_eq!(get("/t.php?mode=pid").status, 200);
    wait_for("the counters", Duration::from_secs(5), || {
        let u = backend_rows(&path, "u");
        let t = backend_rows(&path, "t");
        u.len() == 1 && t.len() == 1 && u[0]["total"] == 3 && u[0]["active"] == 0
    });
    // t's figures did not move to u's slot: u counts only its own.
    let u = backend_rows(&path, "u");
    assert_eq!(u[0]["errors"], 0, "{u:?}");
    assert_eq!(backend_rows(&path, "t").len(), 1);
}

/// One POST on its own connection: the status, or what went wrong.
fn post_once(addr: &str, body: &[u8]) -> Result<u16, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let head = format!(
        "POST /t.php?mode=sha256 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())
        .and_then(|()| s.write_all(body))
        .map_err(|e| format!("send: {e}"))?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("no status in {text:?}"))?;
    if status == 200 && !text.contains(&format!("length={}\n", body.len())) {
        return Err(format!("200 without the body's digest: {text:?}"));
    }
    Ok(status)
}

/// Four clients POST back to back while six reloads change backend "t" (`procs` processes,
/// `workers` workers); every second reload also adds or drops a backend defined before it,
/// which renumbers t's scoreboard slots, and every third is followed at once by another
/// (whose start may find the first's restarts pending, as timing has it). Every POST must succeed, none
/// may wait long, and t's processes must each be restarted.
fn posts_through_changed_reloads(tag: &str, workers: u32, procs: usize) {
    let dir = site(tag, &[("t.php", b""), ("a.a", b"")]);
    let root = dir.path().to_path_buf();
    let config = |round: usize| {
        let before = if round % 2 == 1 {
            backend_text(&root, "a", ".a", 1, "0")
        } else {
            String::new()
        };
        config_text(
            &format!("workers = {workers}"),
            &format!(
                "{before}{}",
                backend_text(&root, "t", ".php", procs, &round.to_string())
            ),
        )
    };
    let s = Server::start_config(dir, &config(0));
    let path = sock(&s);
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let done = std::sync::Arc::new(AtomicU32::new(0));
    let clients: Vec<_> = (0..4)
        .map(|k| {
            let (addr, stop, done) = (s.addr.clone(), stop.clone(), done.clone());
            std::thread::spawn(move || {
                let body = vec![b'a' + k as u8; 3000];
                let (mut failed, mut slowest) = (Vec::new(), Duration::ZERO);
                while !stop.load(SeqCst) {
                    let t = Instant::now();
                    match post_once(&addr, &body) {
                        Ok(200) => {}
                        other => failed.push(format!("{other:?}")),
                    }
                    done.fetch_add(1, SeqCst);
                    slowest = slowest.max(t.elapsed());
                }
                (failed, slowest)
            })
        })
        .collect();
    // POSTs keep coming while each restart happens.
    let under_way = || {
        let start = done.load(SeqCst);
        wait_for("POSTs under way", Duration::from_secs(10), || {
            done.load(SeqCst) >= start + 50
        });
    };
    let mut round = 0;
    while round < 6 {
        under_way();
        let before = backend_pids(&path);
        round += 1;
        std::fs::write(s.dir.path().join("site.lua"), config(round)).unwrap();
        assert_eq!(eval_ok(&path, "reload()")["ok"], true, "reload {round}");
        if round % 3 == 1 {
            round += 1;
            std::fs::write(s.dir.path().join("site.lua"), config(round)).unwrap();
            assert_eq!(eval_ok(&path, "reload()")["ok"], true, "reload {round}");
        }
        wait_for("t's processes restarted", Duration::from_secs(10), || {
            let now = backend_pids(&path);
            now.len() == procs && now.iter().all(|p| !before.contains(p))
        });
    }
    under_way();
    stop.store(true, SeqCst);
    let (mut failed, mut slowest) = (Vec::new(), Duration::ZERO);
    for c in clients {
        let (f, s) = c.join().unwrap();
        failed.extend(f);
        slowest = slowest.max(s);
    }
    let total = done.load(SeqCst);
    assert!(
        failed.is_empty(),
        "{} of {total} failed: {failed:?}",
        failed.len()
    );
    // A request queued behind a closed process that is never opened again would wait its
    // backend's timeouts (30 s and more) and fail.
    assert!(slowest < Duration::from_secs(5), "a POST took {slowest:?}");
}

#[test]
fn posts_running_through_changed_reloads_all_succeed() {
    // The soak's failed POST: a changed reload restarted each process once the count of
    // requests in flight on it read zero, and a worker could begin one between that read and
    // the SIGTERM (5-9 of ~2,500 POSTs cut in each of five runs of this test). Now the
    // process is closed to new requests first (the scoreboard's restart gate). Two workers,
    // two processes: each worker has its own, kept alive between requests.
    posts_through_changed_reloads("reload-posts-own", 2, 2);
}

#[test]
fn posts_to_a_process_the_workers_share_survive_changed_reloads() {
    // One process for two workers: they take turns on it, a connection each time.
    posts_through_changed_reloads("reload-posts-shared", 2, 1);
}

#[test]
fn a_reload_while_a_worker_awaits_its_respawn_still_restarts_changed_backends() {
    // A worker killed soon after its start is respawned after a back-off (100 ms). A reload
    // in that window used to move its empty slot into the draining generation, where it
    // waited for an exit that never came: the old generation never emptied, and a changed
    // backend was never restarted.
    let dir = site("reload-backend-backoff", &[("t.php", b"")]);
    let root = dir.path().to_path_buf();
    let config = |env: &str| one_backend(&root, env);
    let s = Server::start_config(dir, &config("1"));
    let path = sock(&s);
    let before = backend_pids(&path);
    let worker = the_worker(&s, &before);
    std::fs::write(root.join("site.lua"), config("2")).unwrap();
    // SAFETY: kill(2) on the server's own worker.
    assert_eq!(unsafe { libc::kill(worker, libc::SIGKILL) }, 0);
    // Reaped at once; the reload comes within its back-off.
    std::thread::sleep(Duration::from_millis(30));
    s.signal(libc::SIGUSR1);
    restarted_and_serving(&s, &path, &before);
}

#[test]
fn a_killed_worker_s_request_is_not_left_counted_on_its_process() {
    // `backends()` and the status page show requests in flight from the workers' own rows of
    // counters, which go with a reaped worker's slot; the proc slot's summed count kept a
    // killed worker's request for good.
    let dir = site("backend-active-kill", &[("t.php", b"")]);
    let root = dir.path().to_path_buf();
    let s = Server::start_config(dir, &one_backend(&root, "1"));
    let path = sock(&s);
    let backends = backend_pids(&path);
    let active = || backend_rows(&path, "t")[0]["active"].as_u64();
    let mut c = s.connect();
    c.send(b"GET /t.php?mode=slowhead&ms=3000 HTTP/1.1\r\nHost: x\r\n\r\n");
    wait_for("the request in flight", Duration::from_secs(5), || {
        active() == Some(1)
    });
    let worker = the_worker(&s, &backends);
    // SAFETY: kill(2) on the server's own worker.
    assert_eq!(unsafe { libc::kill(worker, libc::SIGKILL) }, 0);
    wait_for("nothing counted in flight", Duration::from_secs(5), || {
        active() == Some(0)
    });
    drop(c);
}
