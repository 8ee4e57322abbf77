//! The reverse proxy end to end: the real luahttpd in front of test upstreams (a small HTTP
//! server on threads in this process, with misbehaving paths). Each test asserts statuses and
//! exact bytes.

mod common;
mod proxy_common;

use common::{Server, TempDir};
use proxy_common::{header, pattern, Client as C, Upstream};
use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A luahttpd with `upstreams` (Lua text) and a route sending /api/... to "app" with the
/// prefix cut, everything else the upstream's prefix or static.
fn start(upstreams: &str) -> Server {
    let dir = TempDir::new("proxy");
    std::fs::create_dir_all(dir.path().join("www")).unwrap();
    dir.write("www/static.txt", b"static file");
    let config = format!(
        r#"server {{ listen = "127.0.0.1:0", workers = 1, root = "www", error_log = "stderr",
  access_log = "access.log", limits = {{ body_bytes = 64 * 1024 * 1024 }} }}
{upstreams}
route(function(req)
  if req.path:find("^/api/") then
    return proxy("app", {{ path = req.path:sub(5), headers = {{ ["X-Route"] = "yes" }} }})
  end
  if req.path:find("^/host/") then
    return proxy("app", {{ path = req.path:sub(6), host = "backend.test" }})
  end
end)
"#
    );
    Server::start_config(dir, &config)
}

fn one(addr: &str) -> String {
    format!(
        r#"upstream "app" {{ address = "{addr}", keepalive = 4, read_timeout = 1, connect_timeout = 1 }}"#
    )
}

#[test]
fn forwards_with_path_headers_and_forwarding_fields() {
    let up = Upstream::start("a");
    let srv = start(&one(&up.addr));
    let mut c = C::new(&srv.addr);
    c.send(
        b"GET /api/head?q=1 HTTP/1.1\r\nHost: example.test\r\nConnection: keep-alive, X-Hop\r\n\
          X-Hop: secret\r\nX-Forwarded-For: 10.1.1.1\r\nX-Route: client\r\nTE: trailers\r\n\r\n",
    );
    let r = c.resp();
    assert_eq!(r.0, 200);
    let seen = String::from_utf8_lossy(&r.2).into_owned();
    assert!(
        seen.starts_with("GET /head?q=1 HTTP/1.1\r\nHost: example.test\r\n"),
        "{seen}"
    );
    assert!(
        seen.contains("X-Forwarded-For: 10.1.1.1, 127.0.0.1\r\n"),
        "{seen}"
    );
    assert!(seen.contains("X-Forwarded-Proto: http\r\n"), "{seen}");
    assert!(
        seen.contains("X-Forwarded-Host: example.test\r\n"),
        "{seen}"
    );
    assert!(
        seen.contains("Forwarded: for=127.0.0.1;proto=http;host=\"example.test\"\r\n"),
        "{seen}"
    );
    assert!(
        seen.contains("X-Route: yes\r\n") && !seen.contains("client"),
        "{seen}"
    );
    for hop in ["X-Hop", "secret", "TE:", "Connection"] {
        assert!(!seen.contains(hop), "{hop} crossed the proxy: {seen}");
    }
    // The upstream's Server is replaced by ours; the route set Host for /host/.
    assert_eq!(header(&r, "server"), Some("luahttpd"));
    let r = c.get("/host/head");
    let seen = String::from_utf8_lossy(&r.2).into_owned();
    assert!(seen.contains("Host: backend.test\r\n"), "{seen}");
    assert!(seen.contains("X-Forwarded-Host: test\r\n"), "{seen}");
    // Not proxied: static.
    assert_eq!(c.get("/static.txt").2, b"static file");
}

#[test]
fn bodies_of_0_1k_and_50m_go_both_ways_byte_exact() {
    let up = Upstream::start("a");
    // The test upstream is unoptimised test code: give it time for 50 MiB.
    let srv = start(&format!(
        r#"upstream "app" {{ address = "{}", read_timeout = 30 }}"#,
        up.addr
    ));
    let mut c = C::new(&srv.addr);
    for n in [0usize, 1024, 50 * 1024 * 1024] {
        let body = pattern(n);
        c.send(
            format!("POST /api/echo HTTP/1.1\r\nHost: t\r\nContent-Length: {n}\r\n\r\n").as_bytes(),
        );
        c.send(&body);
        let r = c.resp();
        if r.0 != 200 {
            std::thread::sleep(Duration::from_millis(500));
        }
        assert_eq!(r.0, 200, "upload {n}; log:\n{}", srv.log_text());
        assert_eq!(r.2.len(), n, "upload {n}");
        assert!(r.2 == body, "upload {n} not byte-exact");
        let r = c.get(&format!("/api/big?n={n}"));
        assert_eq!(r.0, 200);
        assert_eq!(header(&r, "content-length"), Some(n.to_string().as_str()));
        assert!(r.2 == body, "download {n} not byte-exact");
    }
    // One kept upstream connection served all six.
    assert_eq!(up.conns.load(Ordering::SeqCst), 1);
}

#[test]
fn chunked_goes_both_ways_and_close_delimited_becomes_chunked() {
    let up = Upstream::start("a");
    let srv = start(&one(&up.addr));
    let mut c = C::new(&srv.addr);
    let body = pattern(70_000);
    let mut req =
        b"PUT /api/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for part in body.chunks(7000) {
        req.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        req.extend_from_slice(part);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    c.send(&req);
    let r = c.resp();
    assert_eq!(r.0, 200);
    assert!(
        r.2 == body,
        "chunked upload not byte-exact ({} bytes)",
        r.2.len()
    );
    let r = c.get("/api/chunked?n=5000");
    assert_eq!(header(&r, "transfer-encoding"), Some("chunked"));
    assert!(r.2 == pattern(5000));
    let r = c.get("/api/close?n=3000");
    assert_eq!(header(&r, "transfer-encoding"), Some("chunked"));
    assert!(r.2 == pattern(3000));
    // Still the same client connection: it goes on.
    assert_eq!(c.get("/api/name").2, b"a");
    // HTTP/1.0 gets a close-delimited body.
    let mut c = C::new(&srv.addr);
    c.send(b"GET /api/chunked?n=2500 HTTP/1.0\r\nHost: t\r\n\r\n");
    let r = c.resp();
    assert_eq!(header(&r, "transfer-encoding"), None);
    assert!(r.2 == pattern(2500));
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let up = Upstream::start("a");
    let srv = start(&one(&up.addr));
    let mut c = C::new(&srv.addr);
    c.send(
        b"GET /api/big?n=10 HTTP/1.1\r\nHost: t\r\n\r\nGET /api/name HTTP/1.1\r\nHost: t\r\n\r\n\
          POST /api/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nxyzGET /static.txt HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert_eq!(c.resp().2, pattern(10));
    assert_eq!(c.resp().2, b"a");
    assert_eq!(c.resp().2, b"xyz");
    assert_eq!(c.resp().2, b"static file");
}

#[test]
fn head_and_304_carry_no_body() {
    let up = Upstream::start("a");
    let srv = start(&one(&up.addr));
    let mut c = C::new(&srv.addr);
    c.send(b"HEAD /api/big?n=100 HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.try_resp(true).unwrap();
    assert_eq!(header(&r, "content-length"), Some("100"));
    c.send(b"GET /api/status?code=304 HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.try_resp(false).unwrap();
    assert_eq!(r.0, 304);
    // The 304 the upstream sent claimed 5 body bytes: none reached us, and the next response
    // on this connection is whole.
    assert_eq!(c.get("/api/name").2, b"a");
}

#[test]
fn failures_answer_502_504_or_close() {
    // A port nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    let srv = start(&one(&dead_addr));
    assert_eq!(C::new(&srv.addr).get("/api/name").0, 502, "refused connect");
    drop(srv);

    let up = Upstream::start("a");
    let srv = start(&one(&up.addr));
    let t = Instant::now();
    assert_eq!(
        C::new(&srv.addr).get("/api/sleep").0,
        504,
        "no head in read_timeout"
    );
    assert!(t.elapsed() < Duration::from_secs(5));
    for kind in ["cl-cl", "cl-te", "te-gzip", "bare-lf", "http2", "junk"] {
        let r = C::new(&srv.addr).get(&format!("/api/bad?kind={kind}"));
        assert_eq!(r.0, 502, "{kind}");
    }
    // Bad chunked framing after the head: the client connection closes (truncation shows).
    let mut c = C::new(&srv.addr);
    c.send(b"GET /api/bad?kind=bad-chunk HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(c
        .try_resp(false)
        .is_none_or(|r| r.0 == 200 && r.2.is_empty()));
    // Death mid-body: what arrived, then the client connection closes.
    let mut c = C::new(&srv.addr);
    c.send(b"GET /api/die-mid HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut got = Vec::new();
    let _ = c.s.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("Content-Length: 1000\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\n0123456789"), "{text}");
    let log = srv.log_text();
    assert!(log.contains("upstream 'app'"), "{log}");
}

#[test]
fn a_smuggled_response_never_reaches_the_next_request() {
    let up = Upstream::start("a");
    let srv = start(&one(&up.addr));
    let mut c = C::new(&srv.addr);
    let r = c.get("/api/smuggle");
    assert_eq!((r.0, r.2.as_slice()), (200, &b"ok"[..]));
    let r = c.get("/api/name");
    assert_eq!(
        (r.0, r.2.as_slice()),
        (200, &b"a"[..]),
        "the glued response leaked"
    );
    // The connection that carried the extra bytes was dropped, not reused.
    assert_eq!(up.conns.load(Ordering::SeqCst), 2);
}

#[test]
fn connect_failure_moves_to_the_next_address() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    let up = Upstream::start("live");
    let srv = start(&format!(
        r#"upstream "app" {{ address = {{ "{dead_addr}", "{}" }}, keepalive = 0 }}"#,
        up.addr
    ));
    for _ in 0..6 {
        let r = C::new(&srv.addr).get("/api/name");
        assert_eq!((r.0, r.2.as_slice()), (200, &b"live"[..]));
    }
}

#[test]
fn balancing_spreads_as_configured() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let count = |srv: &Server, n: usize| {
        let mut seen = std::collections::HashMap::new();
        for _ in 0..n {
            let r = C::new(&srv.addr).get("/api/name");
            *seen.entry(String::from_utf8(r.2).unwrap()).or_insert(0) += 1;
        }
        seen
    };
    let srv = start(&format!(
        r#"upstream "app" {{ address = {{ {{ "{}", weight = 3 }}, "{}" }} }}"#,
        a.addr, b.addr
    ));
    let seen = count(&srv, 8);
    assert_eq!(
        (seen.get("a"), seen.get("b")),
        (Some(&6), Some(&2)),
        "{seen:?}"
    );
    drop(srv);
    let srv = start(&format!(
        r#"upstream "app" {{ balance = "hash", address = {{ "{}", "{}" }} }}"#,
        a.addr, b.addr
    ));
    let seen = count(&srv, 6);
    assert_eq!(
        seen.len(),
        1,
        "one client address sticks to one upstream: {seen:?}"
    );
    drop(srv);
    let srv = start(&format!(
        r#"upstream "app" {{ balance = "least_conn", address = {{ "{}", "{}" }} }}"#,
        a.addr, b.addr
    ));
    let seen = count(&srv, 6);
    assert_eq!(seen.len(), 2, "idle upstreams share the load: {seen:?}");
}

#[test]
fn prefix_routes_without_a_decision_and_logs_the_upstream() {
    let up = Upstream::start("a");
    let srv = start(&format!(
        r#"upstream "pre" {{ address = "{}", prefix = "/head" }}
upstream "app" {{ address = "{}" }}"#,
        up.addr, up.addr
    ));
    let r = C::new(&srv.addr).get("/head?x");
    assert_eq!(r.0, 200);
    assert!(String::from_utf8_lossy(&r.2).starts_with("GET /head?x HTTP/1.1\r\n"));
    let log_path = srv.dir.path().join("access.log");
    common::wait_for("the access log line", Duration::from_secs(5), || {
        std::fs::read_to_string(&log_path)
            .is_ok_and(|t| t.contains(&format!("upstream={} upstream_time=", up.addr)))
    });
}

#[test]
fn websocket_upgrade_is_spliced_both_ways() {
    let up = Upstream::start("a");
    let srv = start(&one(&up.addr));
    let mut c = C::new(&srv.addr);
    c.send(
        b"GET /api/ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    let r = c.try_resp(true).unwrap();
    assert_eq!(r.0, 101);
    assert_eq!(header(&r, "upgrade"), Some("websocket"));
    assert_eq!(header(&r, "connection"), Some("upgrade"));
    // A masked text frame "hi" and a close frame; the test upstream echoes bytes.
    let frames: &[u8] = b"\x81\x82\x01\x02\x03\x04\x69\x6b\x88\x80\x01\x02\x03\x04";
    c.send(frames);
    let mut got = c.buf.clone();
    while got.len() < frames.len() {
        let mut tmp = [0u8; 64];
        let n = c.s.read(&mut tmp).unwrap();
        assert!(n > 0, "tunnel closed early");
        got.extend_from_slice(&tmp[..n]);
    }
    assert_eq!(got, frames);
    // 4 MiB each way at once (a writer thread, so neither side waits on the other): the
    // upstream-to-client direction is spliced through a pipe, with backpressure.
    let data = pattern(4 * 1024 * 1024);
    let mut w = c.s.try_clone().unwrap();
    let sent = data.clone();
    let writer = std::thread::spawn(move || w.write_all(&sent).unwrap());
    let mut back = vec![0u8; data.len()];
    c.s.read_exact(&mut back).unwrap();
    writer.join().unwrap();
    assert!(back == data, "the tunnel changed bytes");
    c.s.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(c.closed());
}

#[test]
fn expect_100_continue_goes_end_to_end() {
    let up = Upstream::start("a");
    let srv = start(&one(&up.addr));
    let mut c = C::new(&srv.addr);
    c.send(
        b"POST /api/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    );
    let r = c.try_resp(false).unwrap();
    assert_eq!(r.0, 100, "the upstream's 100 Continue is relayed");
    c.send(b"hello");
    let r = c.resp();
    assert_eq!((r.0, r.2.as_slice()), (200, &b"hello"[..]));
}

#[test]
fn an_upstream_closing_a_kept_connection_costs_no_request() {
    let up = Upstream::start("a");
    let srv = start(&one(&up.addr));
    let mut c = C::new(&srv.addr);
    assert_eq!(c.get("/api/bye").2, b"bye");
    std::thread::sleep(Duration::from_millis(100));
    let r = c.get("/api/name");
    assert_eq!((r.0, r.2.as_slice()), (200, &b"a"[..]));
    assert_eq!(up.conns.load(Ordering::SeqCst), 2);
    // A response that says Connection: close is not kept either.
    let r = c.get("/api/close?n=10");
    assert_eq!(r.2, pattern(10));
    assert_eq!(c.get("/api/name").2, b"a");
    assert_eq!(up.conns.load(Ordering::SeqCst), 3);
}

/// The upstream shuts its side of a kept connection while it sits in the pool but keeps the
/// socket open (a lingering close): its EOF came as an event while no request held the
/// connection, so the next request must read it before sending (and go to a new connection)
/// rather than send to a socket that will never answer.
///
/// The shut comes 100 ms after the response (its event reaches the pool: the `idle_event`
/// mark) or at once (then it may come in the response's own event: `Wire::peer_closed`).
#[test]
fn a_kept_connection_the_upstream_shut_while_idle_is_not_sent_to() {
    for path in ["/api/bye-linger?after=100", "/api/bye-linger"] {
        let up = Upstream::start("a");
        let srv = start(&one(&up.addr));
        let mut c = C::new(&srv.addr);
        assert_eq!(c.get(path).2, b"bye", "{path}");
        std::thread::sleep(Duration::from_millis(300));
        let t = std::time::Instant::now();
        let r = c.get("/api/name");
        assert_eq!((r.0, r.2.as_slice()), (200, &b"a"[..]), "after {path}");
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "after {path} the request waited {:?} on the shut connection",
            t.elapsed()
        );
        assert_eq!(up.conns.load(Ordering::SeqCst), 2, "after {path}");
    }
}

#[test]
fn a_client_leaving_closes_its_upstream_connection() {
    let up = Upstream::start("a");
    let srv = start(&format!(
        r#"upstream "app" {{ address = "{}", read_timeout = 30 }}"#,
        up.addr
    ));
    let mut c = C::new(&srv.addr);
    c.send(b"GET /api/hold HTTP/1.1\r\nHost: t\r\n\r\n");
    common::wait_for("the upstream request", Duration::from_secs(5), || {
        up.requests.load(Ordering::SeqCst) == 1
    });
    drop(c);
    common::wait_for(
        "the upstream connection to close",
        Duration::from_secs(5),
        || up.hold_closed.load(Ordering::SeqCst) == 1,
    );
}

#[test]
fn a_graceful_stop_lets_a_tunnel_run_until_it_ends() {
    let up = Upstream::start("a");
    let mut srv = start(&one(&up.addr));
    let mut c = C::new(&srv.addr);
    c.send(b"GET /api/ws HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n");
    assert_eq!(c.try_resp(true).unwrap().0, 101);
    srv.signal(3); // SIGQUIT: graceful stop
    std::thread::sleep(Duration::from_millis(300));
    // The tunnel still carries bytes both ways.
    c.send(b"ping");
    let mut got = [0u8; 4];
    c.s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    assert!(
        srv.child.try_wait().unwrap().is_none(),
        "stopped with a tunnel open"
    );
    c.s.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(c.closed());
    assert!(
        srv.wait_exit(Duration::from_secs(10)).is_some(),
        "did not stop after the tunnel ended"
    );
}

#[test]
fn luahttpd_itself_as_the_upstream_serves_a_50m_file_byte_exact() {
    let big = pattern(50 * 1024 * 1024);
    let origin = Server::start("", &[("big.bin", &big), ("small.txt", b"small")]);
    let srv = start(&format!(
        r#"upstream "app" {{ address = "{}", read_timeout = 30 }}"#,
        origin.addr
    ));
    let mut c = C::new(&srv.addr);
    let r = c.get("/api/big.bin");
    assert_eq!(r.0, 200);
    assert!(
        r.2 == big,
        "50 MiB through the proxy not byte-exact ({} bytes)",
        r.2.len()
    );
    let r = c.get("/api/small.txt");
    assert_eq!((r.0, r.2.as_slice()), (200, &b"small"[..]));
    // A conditional request passes through: the origin's 304 has no body.
    let etag = header(&r, "etag")
        .expect("an ETag from the origin")
        .to_string();
    c.send(
        format!("GET /api/small.txt HTTP/1.1\r\nHost: t\r\nIf-None-Match: {etag}\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(c.resp().0, 304);
    assert_eq!(c.get("/api/small.txt").2, b"small");
}

#[test]
fn a_client_that_does_not_read_holds_bounded_memory() {
    let up = Upstream::start("a");
    let srv = start(&format!(
        r#"upstream "app" {{ address = "{}", read_timeout = 30 }}"#,
        up.addr
    ));
    let worker = srv.worker_pids()[0];
    let n = 50 * 1024 * 1024;
    let before = common::rss_kib(worker);
    let mut c = C::new(&srv.addr);
    c.send(format!("GET /api/big?n={n} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    // The upstream has written all it can; the proxy must not have buffered it.
    std::thread::sleep(Duration::from_millis(1500));
    let during = common::rss_kib(worker);
    assert!(
        during < before + 8 * 1024,
        "worker RSS grew from {before} KiB to {during} KiB while the client read nothing"
    );
    let r = c.resp();
    assert!(r.2 == pattern(n), "not byte-exact after the pause");
}
