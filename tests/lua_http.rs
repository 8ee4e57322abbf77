//! `http.request` from a route (issue 13): to a local upstream, to a dead one, to a slow one
//! (timeout), with the client leaving mid-wait, and many routes waiting on a slow upstream
//! while plain requests keep being served.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// A tiny upstream: answers each connection after `delay` with a fixed body (echoing the
/// request line in a header); counts connections that saw their client close first.
struct Upstream {
    port: u16,
    closed_early: Arc<AtomicUsize>,
}

fn upstream(delay: Duration) -> Upstream {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let closed_early = Arc::new(AtomicUsize::new(0));
    let ce = closed_early.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let ce = ce.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let n = c.read(&mut buf).unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                let line = head.lines().next().unwrap_or("").to_string();
                let _ = c.set_read_timeout(Some(delay.max(Duration::from_millis(1))));
                // Wait for the delay, noticing a client that closes meanwhile.
                if !delay.is_zero() {
                    let mut b = [0u8; 1];
                    if let Ok(0) = c.read(&mut b) {
                        ce.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                }
                let body = format!("upstream saw {line}");
                let _ = write!(
                    c,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Up: yes\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    Upstream { port, closed_early }
}

fn start(fast: u16, slow: u16, dead: u16) -> Server {
    let dir = TempDir::new("lua-http");
    std::fs::create_dir_all(dir.path().join("www")).expect("mkdir www");
    let config = format!(
        r#"server {{ listen = "127.0.0.1:0", workers = 1, root = "www", error_log = "stderr" }}
route(function(req)
  local url
  if req.path == "/fast" then url = "http://127.0.0.1:{fast}/x?y=1"
  elseif req.path == "/slow" then url = "http://127.0.0.1:{slow}/slow"
  elseif req.path == "/dead" then url = "http://127.0.0.1:{dead}/"
  elseif req.path == "/bad" then url = "http://example.com/"
  elseif req.path == "/plain" then return respond(200, "plain")
  else return nil end
  local r, err = http.request{{ url = url, timeout = tonumber(req:arg("t") or "5"),
                                headers = {{ ["X-From"] = "route" }} }}
  if not r then return respond(502, "error: " .. err) end
  return respond(200, r.status .. " " .. r.headers["x-up"] .. " " .. r.body)
end)
"#
    );
    Server::start_config(dir, &config)
}

fn dead_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn http_request_to_local_dead_and_slow_upstreams() {
    let fast = upstream(Duration::ZERO);
    let slow = upstream(Duration::from_secs(3));
    let s = start(fast.port, slow.port, dead_port());
    let r = s.get("/fast");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "200 yes upstream saw GET /x?y=1 HTTP/1.1");
    let r = s.get("/dead");
    assert_eq!(r.status, 502);
    assert!(r.text().starts_with("error: connect"), "{}", r.text());
    let t = Instant::now();
    let r = s.get("/slow?t=0.3");
    assert_eq!(r.text(), "error: timeout");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let r = s.get("/bad");
    assert!(r.text().contains("not an IP address"), "{}", r.text());
}

#[test]
fn a_client_leaving_mid_wait_closes_the_upstream_call() {
    let slow = upstream(Duration::from_secs(3));
    let s = start(dead_port(), slow.port, dead_port());
    let mut c = TcpStream::connect(&s.addr).unwrap();
    c.write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(c);
    wait_for("the upstream call closed", Duration::from_secs(2), || {
        slow.closed_early.load(Ordering::SeqCst) == 1
    });
    assert_eq!(s.get("/plain").text(), "plain");
}

#[test]
fn many_routes_waiting_on_a_slow_upstream_leave_plain_requests_fast() {
    let slow = upstream(Duration::from_millis(1500));
    let s = start(dead_port(), slow.port, dead_port());
    let n = 1000;
    let waiting: Vec<TcpStream> = (0..n)
        .map(|_| {
            let mut c = TcpStream::connect(&s.addr).unwrap();
            c.write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                .unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    for _ in 0..20 {
        assert_eq!(s.get("/plain").text(), "plain");
    }
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "20 plain requests took {:?}",
        t.elapsed()
    );
    let mut ok = 0;
    for mut c in waiting {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = Vec::new();
        let _ = c.read_to_end(&mut buf);
        if String::from_utf8_lossy(&buf).contains("upstream saw GET /slow") {
            ok += 1;
        }
    }
    assert_eq!(ok, n);
}

// ---------------------------------------------------------------------------------------------
// http.request{ upstream = "name" }: the reverse proxy's upstream blocks and their pool
// ---------------------------------------------------------------------------------------------

/// An upstream that keeps connections open: answers every request on a connection (after
/// `delay`) with "<name> <connection number> <request line>"; counts the connections it took.
struct KeptUpstream {
    port: u16,
    connections: Arc<AtomicUsize>,
}

fn kept_upstream(name: &'static str, delay: Duration) -> KeptUpstream {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            std::thread::spawn(move || {
                let mut pending = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head: Vec<u8> = pending.drain(..end + 4).collect();
                        let head = String::from_utf8_lossy(&head).into_owned();
                        let line = head.lines().next().unwrap_or("").to_string();
                        let host = head
                            .lines()
                            .find_map(|l| l.strip_prefix("Host: "))
                            .unwrap_or("-")
                            .to_string();
                        std::thread::sleep(delay);
                        let body = format!("{name} {n} {line} host={host}");
                        let close = head.contains("Connection: close");
                        let r = write!(
                            c,
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if r.is_err() || close {
                            return;
                        }
                    }
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(k) => pending.extend_from_slice(&buf[..k]),
                    }
                }
            });
        }
    });
    KeptUpstream { port, connections }
}

fn start_upstreams(a: u16, b: u16, slow: u16, dead: [u16; 2]) -> Server {
    let dir = TempDir::new("lua-http-upstream");
    std::fs::create_dir_all(dir.path().join("www")).expect("mkdir www");
    let [d1, d2] = dead;
    let config = format!(
        r#"server {{ listen = "127.0.0.1:0", workers = 1, root = "www", error_log = "stderr" }}
upstream "live" {{ address = {{ "127.0.0.1:{a}", "127.0.0.1:{b}" }}, keepalive = 8 }}
upstream "solo" {{ address = {{ "127.0.0.1:{a}" }}, keepalive = 0 }}
upstream "half" {{ address = {{ "127.0.0.1:{d1}", "127.0.0.1:{b}" }} }}
upstream "dead" {{ address = {{ "127.0.0.1:{d1}", "127.0.0.1:{d2}" }} }}
upstream "slow" {{ address = {{ "127.0.0.1:{slow}" }}, read_timeout = 0.4 }}
route(function(req)
  local name = req.path:match("^/up/(%a+)$")
  if not name then return nil end
  local r, err = http.request{{ upstream = name, path = "/p?q=1",
                                headers = req:arg("host") and {{ Host = req:arg("host") }} or nil,
                                timeout = tonumber(req:arg("t") or "5") }}
  if not r then return respond(502, "error: " .. err) end
  return respond(200, r.status .. " " .. r.body)
end)
"#
    );
    Server::start_config(dir, &config)
}

#[test]
fn http_request_to_an_upstream_balances_and_keeps_its_connections() {
    let a = kept_upstream("a", Duration::ZERO);
    let b = kept_upstream("b", Duration::ZERO);
    let s = start_upstreams(a.port, b.port, dead_port(), [dead_port(), dead_port()]);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..10 {
        let r = s.get("/up/live");
        assert_eq!(r.status, 200, "{}", r.text());
        let text = r.text();
        assert!(
            text.ends_with(" GET /p?q=1 HTTP/1.1 host=live"),
            "path, query and Host (the upstream's name): {text}"
        );
        seen.insert(text.split(' ').nth(1).unwrap().to_string());
    }
    assert_eq!(
        seen,
        ["a", "b"].iter().map(|s| s.to_string()).collect(),
        "round robin over both addresses"
    );
    // One worker, requests one after the other: each address served all on one connection.
    assert_eq!(
        a.connections.load(Ordering::SeqCst),
        1,
        "kept connection to a"
    );
    assert_eq!(
        b.connections.load(Ordering::SeqCst),
        1,
        "kept connection to b"
    );
    // keepalive = 0: a connection per call. A Host header replaces the name.
    let before = a.connections.load(Ordering::SeqCst);
    for _ in 0..3 {
        let r = s.get("/up/solo?host=app.example");
        assert!(r.text().ends_with("host=app.example"), "{}", r.text());
    }
    assert_eq!(a.connections.load(Ordering::SeqCst), before + 3);
    // An unknown upstream is the call's error, naming the defined ones.
    let r = s.get("/up/nosuch");
    assert_eq!(r.status, 502);
    assert!(r.text().contains("no upstream 'nosuch'"), "{}", r.text());
    assert!(r.text().contains("live"), "{}", r.text());
}

#[test]
fn http_request_skips_a_dead_address_and_fails_when_all_are_dead() {
    let b = kept_upstream("b", Duration::ZERO);
    let d1 = dead_port();
    let s = start_upstreams(dead_port(), b.port, dead_port(), [d1, dead_port()]);
    for _ in 0..8 {
        let r = s.get("/up/half");
        assert_eq!(r.status, 200, "the live address serves: {}", r.text());
        assert!(r.text().starts_with("200 b "), "{}", r.text());
    }
    // Round robin tried the dead address every other request until its third failure in a
    // row took it out (passive health): 3 attempts, not 4.
    let attempts = format!("http.request upstream 'half' 127.0.0.1:{d1}");
    wait_for("the error log", Duration::from_secs(2), || {
        s.log_text().contains("failures in a row; out for")
    });
    let log = s.log_text();
    assert_eq!(log.matches(&attempts).count(), 3, "{log}");
    for _ in 0..3 {
        let r = s.get("/up/dead");
        assert_eq!(r.status, 502);
        assert!(
            r.text()
                .starts_with("error: connect: no address of upstream 'dead' answered"),
            "{}",
            r.text()
        );
    }
}

#[test]
fn http_request_to_an_upstream_ends_at_its_read_timeout() {
    let slow = kept_upstream("slow", Duration::from_secs(3));
    let s = start_upstreams(
        dead_port(),
        dead_port(),
        slow.port,
        [dead_port(), dead_port()],
    );
    let t = Instant::now();
    let r = s.get("/up/slow");
    assert_eq!(r.text(), "error: timeout");
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "read_timeout 0.4 s, call timeout 5 s: {took:?}"
    );
    // The call's own timeout, shorter than read_timeout, ends it too.
    let t = Instant::now();
    assert_eq!(s.get("/up/slow?t=0.2").text(), "error: timeout");
    assert!(
        t.elapsed() < Duration::from_millis(390),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(s.get("/plain").status, 404);
}

/// An upstream that accepts and never reads: its receive buffer (small, set before the
/// accept) fills, then the request's sending stalls.
fn never_reading_upstream() -> u16 {
    use nix::sys::socket::{setsockopt, sockopt};
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    setsockopt(&l, sockopt::RcvBuf, &4096).unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in l.incoming().flatten() {
            held.push(c);
        }
    });
    port
}

/// An upstream that never accepts: a backlog of 0, filled by connections of its own, so
/// the kernel drops further SYNs and a connect to it hangs.
fn never_accepting_upstream() -> (u16, TcpListener, Vec<TcpStream>) {
    use nix::sys::socket::{listen, Backlog};
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    listen(&l, Backlog::new(0).unwrap()).unwrap();
    let addr = l.local_addr().unwrap();
    let mut fill = Vec::new();
    for _ in 0..8 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(c) => fill.push(c),
            Err(_) => break,
        }
    }
    // Proof that the queue is full: one more connect times out.
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err(),
        "the backlog did not fill"
    );
    (addr.port(), l, fill)
}

fn start_stalling(stall: u16, unaccepting: u16) -> Server {
    let dir = TempDir::new("lua-http-stall");
    std::fs::create_dir_all(dir.path().join("www")).expect("mkdir www");
    let config = format!(
        r#"server {{ listen = "127.0.0.1:0", workers = 1, root = "www", error_log = "stderr" }}
upstream "stall" {{ address = {{ "127.0.0.1:{stall}" }}, send_timeout = 0.4, read_timeout = 30 }}
upstream "stall_long" {{ address = {{ "127.0.0.1:{stall}" }}, send_timeout = 30, read_timeout = 30 }}
upstream "unaccepting" {{ address = {{ "127.0.0.1:{unaccepting}" }}, connect_timeout = 0.3 }}
local big = string.rep("x", 4 * 1024 * 1024)
route(function(req)
  local r, err
  if req.path == "/up/stall" then
    r, err = http.request{{ upstream = "stall", path = "/", body = big, timeout = 20 }}
  elseif req.path == "/up/stall_long" then
    r, err = http.request{{ upstream = "stall_long", path = "/", body = big, timeout = 20,
                            send_timeout = 0.3 }}
  elseif req.path == "/url/stall" then
    r, err = http.request{{ url = "http://127.0.0.1:{stall}/", body = big, timeout = 20,
                            send_timeout = 0.3 }}
  elseif req.path == "/up/unaccepting" then
    r, err = http.request{{ upstream = "unaccepting", path = "/", timeout = 20 }}
  elseif req.path == "/plain" then
    return respond(200, "plain")
  else
    return nil
  end
  if not r then return respond(502, "error: " .. err) end
  return respond(200, tostring(r.status))
end)
"#
    );
    Server::start_config(dir, &config)
}

/// Asserts that `path` ends in a 502 whose text starts with `prefix`, within `lo..hi`.
fn ends_in(s: &Server, path: &str, prefix: &str, lo: Duration, hi: Duration) -> String {
    let t = Instant::now();
    let r = s.get(path);
    let took = t.elapsed();
    assert_eq!(r.status, 502, "{path}: {}", r.text());
    assert!(r.text().starts_with(prefix), "{path}: {}", r.text());
    assert!(took >= lo && took < hi, "{path}: took {took:?}");
    r.text()
}

#[test]
fn http_request_to_a_peer_that_stops_reading_ends_at_send_timeout() {
    let stall = never_reading_upstream();
    let s = start_stalling(stall, dead_port());
    let lo = Duration::from_millis(250);
    let hi = Duration::from_secs(4);
    // The upstream's send_timeout (0.4 s), not its read_timeout (30 s) nor the call's 20 s.
    let text = ends_in(&s, "/up/stall", "error: timeout: ", lo, hi);
    assert!(text.contains("send_timeout"), "{text}");
    // A send_timeout in the call replaces the upstream's 30 s.
    ends_in(&s, "/up/stall_long", "error: timeout: ", lo, hi);
    // And bounds a plain url call's sending.
    ends_in(&s, "/url/stall", "error: timeout: ", lo, hi);
    assert_eq!(s.get("/plain").text(), "plain");
}

#[test]
fn http_request_to_an_upstream_that_never_accepts_ends_at_its_connect_timeout() {
    let (port, _listener, _fill) = never_accepting_upstream();
    let s = start_stalling(dead_port(), port);
    let text = ends_in(
        &s,
        "/up/unaccepting",
        "error: connect: no address of upstream 'unaccepting' answered",
        Duration::from_millis(250),
        Duration::from_secs(3),
    );
    assert!(text.contains("timed out"), "{text}");
    assert_eq!(s.get("/plain").text(), "plain");
}
