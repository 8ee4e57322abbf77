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
