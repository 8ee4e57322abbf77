//! Reverse-proxy features beyond tests/proxy.rs: `via = true`, a tunnel's bytes in the access
//! log, and addresses a reload adds getting their scoreboard slots (`backends()`, the status
//! page, health checks).

mod admin_common;
mod common;
mod proxy_common;

use admin_common::{config_text, site, sock, Admin};
use common::{wait_for, Server, TempDir};
use proxy_common::{header, pattern, read_response, Upstream};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One luahttpd worker proxying everything to upstream "app" (`upstream` is its Lua text).
fn start(upstream: &str) -> Server {
    let dir = TempDir::new("proxy-extras");
    std::fs::create_dir_all(dir.path().join("www")).unwrap();
    let config = format!(
        r#"server {{ listen = "127.0.0.1:0", workers = 1, root = "www", error_log = "stderr",
  access_log = "access.log" }}
{upstream}
route(function(req) return proxy("app") end)
"#
    );
    Server::start_config(dir, &config)
}

fn conn(srv: &Server) -> TcpStream {
    let s = TcpStream::connect(&srv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s
}

#[test]
fn via_true_adds_this_proxy_both_ways_and_is_off_by_default() {
    let up = Upstream::start("a");
    let srv = start(&format!(
        r#"upstream "app" {{ address = "{}", via = true }}"#,
        up.addr
    ));
    let mut s = conn(&srv);
    let mut buf = Vec::new();
    s.write_all(b"GET /head HTTP/1.1\r\nHost: t\r\nVia: 1.1 edge\r\n\r\n")
        .unwrap();
    let r = read_response(&mut s, &mut buf, false).unwrap();
    assert_eq!(r.0, 200);
    let sent = String::from_utf8_lossy(&r.2).into_owned();
    let edge = sent.find("Via: 1.1 edge\r\n").expect(&sent);
    let ours = sent.find("Via: 1.1 luahttpd\r\n").expect(&sent);
    assert!(edge < ours, "our entry comes after the client's: {sent}");
    assert_eq!(header(&r, "via"), Some("1.1 luahttpd"));
    // An HTTP/1.0 client's request is received as 1.0.
    s.write_all(b"GET /head HTTP/1.0\r\nHost: t\r\n\r\n")
        .unwrap();
    let r = read_response(&mut s, &mut buf, false).unwrap();
    assert!(String::from_utf8_lossy(&r.2).contains("Via: 1.0 luahttpd\r\n"));

    let plain = start(&format!(r#"upstream "app" {{ address = "{}" }}"#, up.addr));
    let mut s = conn(&plain);
    let mut buf = Vec::new();
    s.write_all(b"GET /head HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let r = read_response(&mut s, &mut buf, false).unwrap();
    assert!(!String::from_utf8_lossy(&r.2).contains("Via:"));
    assert_eq!(header(&r, "via"), None);
}

/// The access log's text once it has `lines` lines (within 5 s).
fn log_lines(srv: &Server, lines: usize) -> Vec<String> {
    let path = srv.dir.path().join("access.log");
    let mut text = String::new();
    wait_for("the access log lines", Duration::from_secs(5), || {
        text = std::fs::read_to_string(&path).unwrap_or_default();
        text.lines().count() >= lines
    });
    text.lines().map(str::to_string).collect()
}

#[test]
fn a_tunnel_is_logged_when_it_ends_with_the_bytes_the_client_got() {
    let up = Upstream::start("a");
    let srv = start(&format!(r#"upstream "app" {{ address = "{}" }}"#, up.addr));
    let mut s = conn(&srv);
    let mut buf = Vec::new();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .unwrap();
    let r = read_response(&mut s, &mut buf, true).unwrap();
    assert_eq!(r.0, 101);
    assert!(buf.is_empty());
    // 3 MiB each way at once; the test upstream echoes, so the client gets what it sent.
    let data = pattern(3 * 1024 * 1024 + 7);
    let mut w = s.try_clone().unwrap();
    let sent = data.clone();
    let writer = std::thread::spawn(move || w.write_all(&sent).unwrap());
    let mut back = vec![0u8; data.len()];
    s.read_exact(&mut back).unwrap();
    writer.join().unwrap();
    assert!(back == data, "the tunnel changed bytes");
    // Still open: nothing logged yet.
    std::thread::sleep(Duration::from_millis(300));
    let log = std::fs::read_to_string(srv.dir.path().join("access.log")).unwrap_or_default();
    assert!(
        !log.contains("GET /ws"),
        "logged before the tunnel ended: {log}"
    );
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let lines = log_lines(&srv, 1);
    let line = lines
        .iter()
        .find(|l| l.contains("GET /ws"))
        .expect("the tunnel's line");
    assert!(
        line.contains(&format!("\" 101 {} ", data.len())),
        "the bytes the client got: {line}"
    );
}

#[test]
fn a_tunnels_line_has_both_directions_bytes() {
    let up = Upstream::start("a");
    let dir = TempDir::new("proxy-extras");
    std::fs::create_dir_all(dir.path().join("www")).unwrap();
    let config = format!(
        r#"server {{ listen = "127.0.0.1:0", workers = 1, root = "www", error_log = "stderr",
  access_log = "access.log",
  access_log_format = "$request_uri $status sent=$body_bytes_sent received=$bytes_received" }}
upstream "app" {{ address = "{}" }}
route(function(req) return proxy("app") end)
"#,
        up.addr
    );
    let srv = Server::start_config(dir, &config);
    let mut s = conn(&srv);
    let mut buf = Vec::new();
    s.write_all(
        b"GET /ws-sink HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .unwrap();
    let r = read_response(&mut s, &mut buf, true).unwrap();
    assert_eq!(r.0, 101);
    assert!(buf.is_empty());
    // 2 MiB + 5 up; the upstream answers a dot per KiB, so 2048 come down once it has
    // them all (the last 5 bytes get none).
    let data = pattern(2 * 1024 * 1024 + 5);
    s.write_all(&data).unwrap();
    let mut dots = vec![0u8; 2048];
    s.read_exact(&mut dots).unwrap();
    assert!(dots.iter().all(|b| *b == b'.'));
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let lines = log_lines(&srv, 1);
    let line = lines
        .iter()
        .find(|l| l.starts_with("/ws-sink "))
        .expect("the tunnel's line");
    assert_eq!(
        line,
        &format!(
            "/ws-sink 101 sent={} received={}",
            2048 + rest.len(),
            data.len()
        )
    );
    // A request without a tunnel received nothing through one.
    let mut s = conn(&srv);
    let mut buf = Vec::new();
    s.write_all(b"GET /name HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let r = read_response(&mut s, &mut buf, false).unwrap();
    assert_eq!(r.0, 200);
    let path = srv.dir.path().join("access.log");
    wait_for("the /name line", Duration::from_secs(5), || {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        text.lines().any(|l| l.starts_with("/name "))
    });
    let lines = log_lines(&srv, 1);
    assert!(
        lines.iter().any(|l| l == "/name 200 sent=1 received=0"),
        "{lines:?}"
    );
}

fn rows(admin: &mut Admin) -> Vec<Value> {
    match admin.ok("backends()") {
        Value::Array(a) => a,
        other => panic!("backends() is not an array: {other}"),
    }
}

fn row(rows: &[Value], addr: &str) -> Option<Value> {
    rows.iter().find(|r| r["address"] == addr).cloned()
}

/// GET /name on a fresh connection: the upstream's name, or None on any failure.
fn name(addr: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(b"GET /name HTTP/1.1\r\nHost: t\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    let (status, _, body) = read_response(&mut s, &mut buf, false)?;
    (status == 200).then(|| String::from_utf8_lossy(&body).into_owned())
}

#[test]
fn addresses_a_reload_adds_get_scoreboard_slots() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    // An address nobody listens on (bound, then closed).
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    let dir = site("proxy-reload-slots", &[]);
    let text = |addrs: &str| {
        config_text(
            "workers = 1, status_path = \"/status\"",
            &format!(
                "upstream \"app\" {{ address = {{ {addrs} }}, health = {{ path = \"/healthz\", interval = 0.2, fails = 1, passes = 1 }} }}\n\
                 route(function(req) if req.path ~= \"/status\" then return proxy('app') end end)\n"
            ),
        )
    };
    let srv = Server::start_config(dir, &text(&format!("\"{}\"", a.addr)));
    for _ in 0..3 {
        assert_eq!(name(&srv.addr).as_deref(), Some("a"));
    }
    let mut admin = Admin::connect(&sock(&srv));
    // Three, and the start-up probe of the test harness (proxied too).
    let before = row(&rows(&mut admin), &a.addr).unwrap()["total"]
        .as_u64()
        .unwrap();
    assert!(before >= 3, "{before}");
    // b goes first, the dead one last: every slot of the new layout stands for another
    // address than before.
    srv.dir.write(
        "site.lua",
        text(&format!("\"{}\", \"{}\", \"{dead_addr}\"", b.addr, a.addr)).as_bytes(),
    );
    let v = admin.ok("return reload()");
    assert_eq!(v["ok"], true, "{v}");
    // The dead address's checks fail and take it out; requests spread over a and b.
    wait_for(
        "the dead address unhealthy",
        Duration::from_secs(10),
        || row(&rows(&mut admin), &dead_addr).is_some_and(|r| r["state"] == "unhealthy"),
    );
    let mut seen = std::collections::HashSet::new();
    for _ in 0..10 {
        seen.insert(name(&srv.addr).expect("no request fails"));
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    let r = rows(&mut admin);
    let rb = row(&r, &b.addr).expect("b has a row");
    assert!(
        rb["total"].as_u64().unwrap() >= 1,
        "b's requests counted: {rb}"
    );
    assert_eq!(rb["health"], "passing");
    let ra = row(&r, &a.addr).unwrap();
    let total = ra["total"].as_u64().unwrap() + rb["total"].as_u64().unwrap();
    assert_eq!(total, 10, "a's old count did not move to b's slot: {r:?}");
    // A drain of an added address works (it has a slot to hold the flag).
    let v = admin.ok(&format!("return drain('app', '{}')", b.addr));
    assert_eq!(v["state"], "drained", "{v}");
    for _ in 0..4 {
        assert_eq!(name(&srv.addr).as_deref(), Some("a"));
    }
    // The status page lists the added addresses too.
    let mut s = TcpStream::connect(&srv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /status HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let page = read_response(&mut s, &mut buf, false).unwrap();
    let page = String::from_utf8_lossy(&page.2).into_owned();
    assert!(
        page.contains(&format!("address=\"{dead_addr}\",state=\"unhealthy\"")),
        "{page}"
    );
    assert!(
        page.contains(&format!("address=\"{}\",state=\"drained\"", b.addr)),
        "{page}"
    );
}

/// An origin that closes kept connections after 1 s idle: after a pause every connection in the
/// proxy's pool is stale, and each request must still get its 200 (a stale kept connection is
/// retried, and the retry checks the next kept one before using it), never a 502.
#[test]
fn kept_connections_the_upstream_closed_while_idle_cost_no_request() {
    let odir = TempDir::new("proxy-extras-origin");
    std::fs::create_dir_all(odir.path().join("www")).unwrap();
    std::fs::write(odir.path().join("www/f.txt"), b"file\n").unwrap();
    let origin = Server::start_config(
        odir,
        r#"server { listen = "127.0.0.1:0", workers = 1, root = "www", error_log = "stderr",
  timeouts = { keepalive_idle = 1 } }
route(function(req) if req.path == "/slow" then sleep(0.3) return respond(200, "slow\n") end end)
"#,
    );
    let srv = start(&format!(
        r#"upstream "app" {{ address = "{}", keepalive = 8 }}"#,
        origin.addr
    ));
    // Four requests at once: four upstream connections, all kept afterwards.
    let mut clients: Vec<TcpStream> = (0..4).map(|_| conn(&srv)).collect();
    for c in &mut clients {
        c.write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
    }
    for c in &mut clients {
        let mut buf = Vec::new();
        let r = read_response(c, &mut buf, false).expect("a response to /slow");
        assert_eq!(r.0, 200);
    }
    // The origin closes all four while they wait in the pool.
    std::thread::sleep(Duration::from_millis(2500));
    let mut s = conn(&srv);
    let mut buf = Vec::new();
    for i in 0..6 {
        s.write_all(b"GET /f.txt HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let r = read_response(&mut s, &mut buf, false).expect("a response");
        assert_eq!(r.0, 200, "request {i} after the pause");
        assert_eq!(r.2, b"file\n");
    }
}
