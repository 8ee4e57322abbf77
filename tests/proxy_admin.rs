//! The proxy seen from the admin REPL: `backends()` rows for upstream addresses, `drain` and
//! `enable` without a reload (under load, with zero failed requests), and the watcher's
//! active health checks taking a failing address out and bringing it back.

mod admin_common;
mod common;
mod proxy_common;

use admin_common::{config_text, site, sock, Admin};
use common::{wait_for, Server};
use proxy_common::{read_response, Upstream};
use serde_json::Value;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn start(upstream: &str) -> Server {
    let dir = site("proxy-admin", &[]);
    let text = config_text(
        "workers = 2",
        &format!("{upstream}\nroute(function(req) return proxy('app') end)\n"),
    );
    Server::start_config(dir, &text)
}

/// GET /name on a fresh connection: the upstream's name, or None on any failure.
fn name(addr: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    std::io::Write::write_all(&mut s, b"GET /name HTTP/1.1\r\nHost: t\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    let (status, _, body) = read_response(&mut s, &mut buf, false)?;
    (status == 200).then(|| String::from_utf8_lossy(&body).into_owned())
}

fn rows(admin: &mut Admin) -> Vec<Value> {
    match admin.ok("backends()") {
        Value::Array(a) => a,
        other => panic!("backends() is not an array: {other}"),
    }
}

fn row<'a>(rows: &'a [Value], addr: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["address"] == addr)
        .unwrap_or_else(|| panic!("no row for {addr}: {rows:?}"))
}

#[test]
fn drain_and_enable_from_the_repl_under_load_lose_nothing() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let srv = start(&format!(
        r#"upstream "app" {{ address = {{ "{}", "{}" }} }}"#,
        a.addr, b.addr
    ));
    let mut admin = Admin::connect(&sock(&srv));
    let r = rows(&mut admin);
    assert_eq!(row(&r, &b.addr)["kind"], "upstream");
    assert_eq!(row(&r, &b.addr)["state"], "up");

    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (stop, failed, done, addr) =
                (stop.clone(), failed.clone(), done.clone(), srv.addr.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match name(&addr) {
                        Some(_) => done.fetch_add(1, Ordering::SeqCst),
                        None => failed.fetch_add(1, Ordering::SeqCst),
                    };
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let v = admin.ok(&format!("return drain('app', '{}')", b.addr));
    assert_eq!(v["state"], "drained", "{v}");
    // Requests in flight finish; then b gets nothing new.
    std::thread::sleep(Duration::from_millis(300));
    let before = b.requests.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        b.requests.load(Ordering::SeqCst),
        before,
        "a drained address got requests"
    );
    assert_eq!(row(&rows(&mut admin), &b.addr)["state"], "drained");
    admin.ok(&format!("return enable('app', '{}')", b.addr));
    wait_for("b to get requests again", Duration::from_secs(5), || {
        b.requests.load(Ordering::SeqCst) > before
    });
    stop.store(true, Ordering::SeqCst);
    for t in load {
        t.join().unwrap();
    }
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "failed requests during drain"
    );
    assert!(done.load(Ordering::SeqCst) > 20, "the load ran");
    // Mistakes are answered, not guessed.
    let e = admin.eval("return drain('app', '10.9.9.9:1')").unwrap_err();
    assert!(e.contains("has no address '10.9.9.9:1'"), "{e}");
    let e = admin.eval("return drain('nope', 'x')").unwrap_err();
    assert!(e.contains("no upstream 'nope'"), "{e}");
}

#[test]
fn active_health_checks_take_a_dead_address_out_and_bring_it_back() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let srv = start(&format!(
        r#"upstream "app" {{ address = {{ "{}", "{}" }},
  health = {{ path = "/healthz", interval = 0.2, fails = 2, passes = 2 }} }}"#,
        a.addr, b.addr
    ));
    let mut admin = Admin::connect(&sock(&srv));
    wait_for("checks to pass", Duration::from_secs(5), || {
        row(&rows(&mut admin), &b.addr)["health"] == "passing"
    });
    b.unhealthy.store(true, Ordering::SeqCst);
    wait_for("b taken out", Duration::from_secs(5), || {
        row(&rows(&mut admin), &b.addr)["state"] == "unhealthy"
    });
    let before = b.requests.load(Ordering::SeqCst);
    for _ in 0..10 {
        assert_eq!(name(&srv.addr).as_deref(), Some("a"));
    }
    // Only the watcher's checks reached b meanwhile (one per interval, not one per worker).
    let checks = b.requests.load(Ordering::SeqCst) - before;
    assert!(checks <= 3, "{checks} requests reached b while out");
    b.unhealthy.store(false, Ordering::SeqCst);
    wait_for("b back in", Duration::from_secs(5), || {
        row(&rows(&mut admin), &b.addr)["state"] == "up"
    });
    let seen: std::collections::HashSet<String> = (0..10).filter_map(|_| name(&srv.addr)).collect();
    assert!(seen.contains("b"), "{seen:?}");
    assert!(
        srv.log_text().contains("health checks failed; taken out"),
        "{}",
        srv.log_text()
    );
}

#[test]
fn a_reload_moves_the_upstream_and_restarts_its_checks() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let srv = start(&format!(r#"upstream "app" {{ address = "{}" }}"#, a.addr));
    assert_eq!(name(&srv.addr).as_deref(), Some("a"));
    let text = config_text(
        "workers = 2",
        &format!(
            "upstream \"app\" {{ address = \"{}\", health = {{ path = \"/healthz\", interval = 0.2 }} }}\nroute(function(req) return proxy('app') end)\n",
            b.addr
        ),
    );
    srv.dir.write("site.lua", text.as_bytes());
    let mut admin = Admin::connect(&sock(&srv));
    let v = admin.ok("return reload()");
    assert_eq!(v["ok"], true, "{v}");
    wait_for("requests to reach b", Duration::from_secs(10), || {
        name(&srv.addr).as_deref() == Some("b")
    });
    wait_for("b's checks", Duration::from_secs(5), || {
        row(&rows(&mut admin), &b.addr)["health"] == "passing"
    });
}

#[test]
fn a_killed_worker_s_proxied_request_is_not_left_counted_on_its_address() {
    // The workers count requests in flight in rows of their own, which go with a reaped
    // worker's slot; one count summed over the workers kept a killed worker's request for good.
    let hold = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = hold.local_addr().unwrap().to_string();
    let text = config_text(
        "workers = 2",
        &format!(
            "upstream \"app\" {{ address = {{ \"{addr}\" }} }}\n\
             route(function(req) if req.path == '/slow' then return proxy('app') end end)\n"
        ),
    );
    let srv = Server::start_config(site("proxy-admin-kill", &[]), &text);
    let mut admin = Admin::connect(&sock(&srv));
    let mut c = TcpStream::connect(&srv.addr).unwrap();
    std::io::Write::write_all(&mut c, b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    // The upstream takes the request and never answers.
    let (_held, _) = hold.accept().unwrap();
    wait_for("the request in flight", Duration::from_secs(5), || {
        row(&rows(&mut admin), &addr)["active"] == 1
    });
    for w in srv.worker_pids() {
        // SAFETY: kill(2) on the server's own workers.
        assert_eq!(unsafe { libc::kill(w, libc::SIGKILL) }, 0);
    }
    wait_for("nothing counted in flight", Duration::from_secs(5), || {
        row(&rows(&mut admin), &addr)["active"] == 0
    });
    drop(c);
}
