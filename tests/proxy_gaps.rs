//! Reverse-proxy behaviour of issue 12 that tests/proxy.rs and tests/proxy_extras.rs leave
//! out: connect timeouts, send_timeout, no resend of a POST that went out, passive health
//! through `proxy()`, Unix-socket upstreams, `hash_key` as a header, a kept upstream
//! connection after the client leaves, a tunnel's idle timeout, and bounded memory for a
//! slowly read upload. The real luahttpd in front of upstreams written here (or
//! tests/proxy_common's), all on loopback; each test stops its server on drop and is bounded
//! in time.

mod common;
mod proxy_common;

use common::{wait_for, Server, TempDir};
use proxy_common::{pattern, read_response, Client as C, Resp, Upstream};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A luahttpd with `upstreams` (Lua text), one worker: `/u/NAME/REST` goes to upstream NAME
/// with path REST (query kept), `/plain` is answered by the route itself.
fn start(upstreams: &str) -> Server {
    let dir = TempDir::new("proxy-gaps");
    std::fs::create_dir_all(dir.path().join("www")).unwrap();
    let config = format!(
        r#"server {{ listen = "127.0.0.1:0", workers = 1, root = "www", error_log = "stderr",
  access_log = "access.log", limits = {{ body_bytes = 64 * 1024 * 1024 }} }}
{upstreams}
route(function(req)
  local name, rest = req.path:match("^/u/([%w_]+)(/.*)$")
  if name then return proxy(name, {{ path = rest }}) end
  if req.path == "/plain" then return respond(200, "plain") end
end)
"#
    );
    Server::start_config(dir, &config)
}

/// One request on a fresh connection.
fn get(srv: &Server, path: &str) -> Resp {
    C::new(&srv.addr).get(path)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A request as a test upstream reads it: the method, the target and the Content-Length.
struct Head {
    method: String,
    target: String,
    length: usize,
}

/// Reads one request head from `s` (bytes after it stay in `buf`); None at EOF.
fn read_head(s: &mut impl Read, buf: &mut Vec<u8>) -> Option<Head> {
    let end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        let mut tmp = [0u8; 16384];
        match s.read(&mut tmp) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    };
    let head: Vec<u8> = buf.drain(..end).collect();
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut parts = text.split(' ');
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let length = text
        .split("\r\n")
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    Some(Head {
        method,
        target,
        length,
    })
}

/// Reads a body of `n` bytes (what `buf` holds first).
fn read_body(s: &mut impl Read, buf: &mut Vec<u8>, n: usize) -> Option<Vec<u8>> {
    while buf.len() < n {
        let mut tmp = [0u8; 65536];
        match s.read(&mut tmp) {
            Ok(0) | Err(_) => return None,
            Ok(k) => buf.extend_from_slice(&tmp[..k]),
        }
    }
    let rest = buf.split_off(n);
    Some(std::mem::replace(buf, rest))
}

fn respond(s: &mut impl Write, body: &[u8]) -> bool {
    let head = format!("HTTP/1.1 200 X\r\nContent-Length: {}\r\n\r\n", body.len());
    s.write_all(head.as_bytes()).is_ok() && s.write_all(body).is_ok()
}

/// Accepts connections on `l` on a thread, each served by `serve` on a thread of its own.
fn serve_each(l: TcpListener, serve: impl Fn(TcpStream) + Send + Sync + 'static) {
    let serve = Arc::new(serve);
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let serve = serve.clone();
            std::thread::spawn(move || serve(c));
        }
    });
}

/// An address that never answers a connect: a backlog of 0 filled by connections of its
/// own, so the kernel drops further SYNs (as tests/lua_http.rs does). Keep the listener and
/// the connections alive for as long as the address must stay silent.
fn never_accepting() -> (String, TcpListener, Vec<TcpStream>) {
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
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err(),
        "the backlog did not fill"
    );
    (addr.to_string(), l, fill)
}

// 1. A connect that times out goes to the next address; with none left, 502 in about
//    connect_timeout.
#[test]
fn a_connect_that_times_out_goes_to_the_next_address_then_502() {
    let (silent, _l, _fill) = never_accepting();
    let live = Upstream::start("live");
    // The silent address weighs more, so the first picks go to it.
    let srv = start(&format!(
        r#"upstream "two" {{ address = {{ {{ "{silent}", weight = 5 }}, "{}" }}, keepalive = 0,
  connect_timeout = 0.3, read_timeout = 30 }}
upstream "one" {{ address = "{silent}", connect_timeout = 0.3, read_timeout = 30 }}"#,
        live.addr
    ));
    // Three requests try the silent address first (then it is out for its back-off): each
    // waits for the connect timeout, then the live address answers.
    for i in 0..3 {
        let t = Instant::now();
        let r = get(&srv, "/u/two/name");
        let took = t.elapsed();
        assert_eq!((r.0, r.2.as_slice()), (200, &b"live"[..]), "request {i}");
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(3),
            "request {i} took {took:?}, not about the 0.3 s connect timeout"
        );
    }
    assert_eq!(live.requests.load(Ordering::SeqCst), 3);
    // No other address: 502 after about the connect timeout, never a hang.
    for i in 0..2 {
        let t = Instant::now();
        let r = get(&srv, "/u/one/name");
        let took = t.elapsed();
        assert_eq!(r.0, 502, "request {i}");
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(3),
            "502 {i} took {took:?}"
        );
    }
    assert_eq!(get(&srv, "/plain").2, b"plain");
    assert!(
        srv.log_text().contains("connect timed out"),
        "{}",
        srv.log_text()
    );
}

// 2. send_timeout: an upstream that accepts and stops reading a large POST body.
#[test]
fn an_upstream_that_stops_reading_a_post_ends_at_send_timeout_with_504() {
    use nix::sys::socket::{setsockopt, sockopt};
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    // A small receive buffer, set before the accept, so the body stalls early.
    setsockopt(&l, sockopt::RcvBuf, &4096).unwrap();
    let stall = l.local_addr().unwrap().to_string();
    let held = Arc::new(Mutex::new(Vec::new()));
    let h = held.clone();
    serve_each(l, move |c| h.lock().unwrap().push(c));
    let up = Upstream::start("a");
    let srv = start(&format!(
        r#"upstream "stall" {{ address = "{stall}", send_timeout = 0.5, read_timeout = 30 }}
upstream "ok" {{ address = "{}" }}"#,
        up.addr
    ));
    let n = 16 * 1024 * 1024;
    let mut c = C::new(&srv.addr);
    let mut w = c.s.try_clone().unwrap();
    w.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let t = Instant::now();
    let writer = std::thread::spawn(move || {
        let head = format!("POST /u/stall/ HTTP/1.1\r\nHost: t\r\nContent-Length: {n}\r\n\r\n");
        if w.write_all(head.as_bytes()).is_err() {
            return;
        }
        let chunk = vec![b'x'; 65536];
        for _ in 0..n / chunk.len() {
            if w.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let r = read_response(&mut c.s, &mut c.buf, false);
    let took = t.elapsed();
    let r = r.expect("a response to the stalled POST");
    assert_eq!(r.0, 504, "{:?}", String::from_utf8_lossy(&r.2));
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(5),
        "504 after {took:?}, not about the 0.5 s send_timeout"
    );
    drop(c);
    writer.join().unwrap();
    // The worker serves on: a plain answer, and a proxied one.
    assert_eq!(get(&srv, "/plain").2, b"plain");
    let r = get(&srv, "/u/ok/name");
    assert_eq!((r.0, r.2.as_slice()), (200, &b"a"[..]));
    assert!(
        srv.log_text().contains("send timed out"),
        "{}",
        srv.log_text()
    );
}

// 3. A POST whose body went out is not sent again when the upstream closes unanswered.
#[test]
fn a_post_sent_to_an_upstream_that_closes_unanswered_is_not_resent() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let posts = Arc::new(AtomicUsize::new(0));
    let conns = Arc::new(AtomicUsize::new(0));
    let (p, k) = (posts.clone(), conns.clone());
    // GET is answered (the connection kept); a POST is read whole, then the connection
    // closes without a response.
    serve_each(l, move |mut s| {
        k.fetch_add(1, Ordering::SeqCst);
        let mut buf = Vec::new();
        while let Some(h) = read_head(&mut s, &mut buf) {
            let Some(body) = read_body(&mut s, &mut buf, h.length) else {
                return;
            };
            if h.method == "POST" {
                assert_eq!(body, pattern(h.length));
                p.fetch_add(1, Ordering::SeqCst);
                return;
            }
            if !respond(&mut s, b"got") {
                return;
            }
        }
    });
    let srv = start(&format!(
        r#"upstream "up" {{ address = "{addr}", keepalive = 4, read_timeout = 5 }}"#
    ));
    let n = 200 * 1024;
    let post = |c: &mut C| {
        let mut req = format!("POST /u/up/form HTTP/1.1\r\nHost: t\r\nContent-Length: {n}\r\n\r\n")
            .into_bytes();
        req.extend_from_slice(&pattern(n));
        c.send(&req);
        c.resp()
    };
    // On a fresh upstream connection.
    let r = post(&mut C::new(&srv.addr));
    assert_eq!(r.0, 502);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(posts.load(Ordering::SeqCst), 1, "the POST was sent again");
    assert_eq!(conns.load(Ordering::SeqCst), 1);
    // On a kept one (a GET left it idle in the pool): taken, the POST goes out on it, and
    // its close is not mistaken for a stale kept connection to retry on.
    let mut c = C::new(&srv.addr);
    assert_eq!(c.get("/u/up/x").2, b"got");
    assert_eq!(conns.load(Ordering::SeqCst), 2);
    let r = post(&mut c);
    assert_eq!(r.0, 502);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(posts.load(Ordering::SeqCst), 2, "the POST was sent again");
    assert_eq!(conns.load(Ordering::SeqCst), 2, "a retry connected again");
}

// 4. Passive health through proxy(): `fails` failures take an address out for its back-off.
#[test]
fn passive_failures_take_an_address_out_for_its_backoff_then_it_comes_back() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let flaky = l.local_addr().unwrap().to_string();
    let broken = Arc::new(AtomicBool::new(true));
    let seen = Arc::new(AtomicUsize::new(0));
    let (br, sn) = (broken.clone(), seen.clone());
    // While broken: reads the request and closes unanswered (a 502, counted against it).
    serve_each(l, move |mut s| {
        let mut buf = Vec::new();
        while read_head(&mut s, &mut buf).is_some() {
            sn.fetch_add(1, Ordering::SeqCst);
            if br.load(Ordering::SeqCst) || !respond(&mut s, b"a") {
                return;
            }
        }
    });
    let b = Upstream::start("b");
    let srv = start(&format!(
        r#"upstream "app" {{ address = {{ "{flaky}", "{}" }}, keepalive = 0, read_timeout = 5 }}"#,
        b.addr
    ));
    // Round robin alternates until the default `fails` (3) failures in a row: 3 502s.
    let mut failures = 0;
    let mut last_failure = Instant::now();
    for _ in 0..12 {
        let r = get(&srv, "/u/app/name");
        if r.0 == 502 {
            failures += 1;
            last_failure = Instant::now();
        } else {
            assert_eq!((r.0, r.2.as_slice()), (200, &b"b"[..]));
        }
    }
    assert_eq!(failures, 3, "not out after 3 failures");
    assert_eq!(seen.load(Ordering::SeqCst), 3);
    // Healthy again, but still out for its back-off (10 s): every request goes to b.
    broken.store(false, Ordering::SeqCst);
    for _ in 0..6 {
        let r = get(&srv, "/u/app/name");
        assert_eq!((r.0, r.2.as_slice()), (200, &b"b"[..]));
    }
    assert_eq!(seen.load(Ordering::SeqCst), 3, "picked during its back-off");
    assert!(last_failure.elapsed() < Duration::from_secs(9));
    // After the back-off it takes requests again.
    let back = last_failure + Duration::from_millis(10_500);
    std::thread::sleep(back.saturating_duration_since(Instant::now()));
    let mut names = Vec::new();
    for _ in 0..4 {
        let r = get(&srv, "/u/app/name");
        assert_eq!(r.0, 200);
        names.push(String::from_utf8(r.2).unwrap());
    }
    assert!(names.iter().any(|n| n == "a"), "never back: {names:?}");
    assert!(names.iter().any(|n| n == "b"), "{names:?}");
    assert!(seen.load(Ordering::SeqCst) > 3);
}

// 5. A `unix:/path` upstream address.
#[test]
fn a_unix_socket_upstream_serves_byte_exact_bodies() {
    use std::os::unix::net::UnixListener;
    let sockdir = TempDir::new("proxy-gaps-sock");
    let path = sockdir.path().join("up.sock");
    let l = UnixListener::bind(&path).unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let k = conns.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            k.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = Vec::new();
                while let Some(h) = read_head(&mut s, &mut buf) {
                    let Some(body) = read_body(&mut s, &mut buf, h.length) else {
                        return;
                    };
                    // /echo: the body back; /big?n=N: N pattern bytes.
                    let out = match h.target.split_once("?n=") {
                        Some((_, n)) => pattern(n.parse().unwrap()),
                        None => body,
                    };
                    if !respond(&mut s, &out) {
                        return;
                    }
                }
            });
        }
    });
    let srv = start(&format!(
        r#"upstream "sock" {{ address = "unix:{}", keepalive = 4 }}"#,
        path.display()
    ));
    let mut c = C::new(&srv.addr);
    let n = 1024 * 1024 + 7;
    let r = c.get(&format!("/u/sock/big?n={n}"));
    assert_eq!(r.0, 200);
    assert!(
        r.2 == pattern(n),
        "GET not byte-exact ({} bytes)",
        r.2.len()
    );
    let m = 300 * 1024 + 3;
    let mut req = format!("POST /u/sock/echo HTTP/1.1\r\nHost: t\r\nContent-Length: {m}\r\n\r\n")
        .into_bytes();
    req.extend_from_slice(&pattern(m));
    c.send(&req);
    let r = c.resp();
    assert_eq!(r.0, 200);
    assert!(
        r.2 == pattern(m),
        "POST not byte-exact ({} bytes)",
        r.2.len()
    );
    // Both on one kept connection.
    assert_eq!(conns.load(Ordering::SeqCst), 1);
}

// 6. balance = "hash" with hash_key a header name.
#[test]
fn hash_on_a_header_keeps_each_value_on_one_address_and_spreads_values() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let srv = start(&format!(
        r#"upstream "app" {{ balance = "hash", hash_key = "X-User", address = {{ "{}", "{}" }} }}"#,
        a.addr, b.addr
    ));
    let name = |user: &str| {
        let mut c = C::new(&srv.addr);
        c.send(format!("GET /u/app/name HTTP/1.1\r\nHost: t\r\nX-User: {user}\r\n\r\n").as_bytes());
        let r = c.resp();
        assert_eq!(r.0, 200);
        String::from_utf8(r.2).unwrap()
    };
    let mut per_value = Vec::new();
    for i in 0..16 {
        let user = format!("user{i}");
        let first = name(&user);
        for _ in 0..3 {
            assert_eq!(name(&user), first, "{user} moved");
        }
        per_value.push(first);
    }
    // One client address, yet both upstreams: the header is what is hashed.
    assert!(
        per_value.iter().any(|n| n == "a") && per_value.iter().any(|n| n == "b"),
        "values do not spread: {per_value:?}"
    );
}

// 7. The client leaving right after a complete response: the upstream connection is kept.
#[test]
fn a_client_leaving_after_a_complete_response_leaves_the_upstream_connection_kept() {
    let up = Upstream::start("a");
    let srv = start(&format!(
        r#"upstream "app" {{ address = "{}", keepalive = 4 }}"#,
        up.addr
    ));
    // A large response (the client still reading when the upstream is done) and a small one,
    // each client closing at once after the last byte.
    let n = 1024 * 1024;
    let mut c = C::new(&srv.addr);
    let r = c.get(&format!("/u/app/big?n={n}"));
    assert!(r.0 == 200 && r.2 == pattern(n));
    drop(c);
    let mut c = C::new(&srv.addr);
    assert_eq!(c.get("/u/app/name").2, b"a");
    drop(c);
    // A client that leaves without reading, once the upstream's whole response (100 KB, less
    // than the proxy holds for a client) has reached the proxy.
    let mut c = C::new(&srv.addr);
    c.send(b"GET /u/app/big?n=100000 HTTP/1.1\r\nHost: t\r\n\r\n");
    wait_for("the upstream request", Duration::from_secs(5), || {
        up.requests.load(Ordering::SeqCst) == 3
    });
    std::thread::sleep(Duration::from_millis(300));
    drop(c);
    std::thread::sleep(Duration::from_millis(100));
    let r = get(&srv, "/u/app/name");
    assert_eq!((r.0, r.2.as_slice()), (200, &b"a"[..]));
    assert_eq!(up.requests.load(Ordering::SeqCst), 4);
    assert_eq!(
        up.conns.load(Ordering::SeqCst),
        1,
        "the upstream connection was not kept after the client left"
    );
}

// 8. An idle tunnel closes after its idle timeout, both sockets.
#[test]
fn an_idle_tunnel_is_closed_after_its_idle_timeout_on_both_sides() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let closed_at: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let ca = closed_at.clone();
    // 101, then an echo until the proxy closes (never closing first).
    serve_each(l, move |mut s| {
        let mut buf = Vec::new();
        if read_head(&mut s, &mut buf).is_none() {
            return;
        }
        let _ = s.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        );
        let _ = s.write_all(&buf);
        let mut tmp = [0u8; 4096];
        loop {
            match s.read(&mut tmp) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if s.write_all(&tmp[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        *ca.lock().unwrap() = Some(Instant::now());
    });
    let srv = start(&format!(
        r#"upstream "ws" {{ address = "{addr}", read_timeout = 1, send_timeout = 1 }}"#
    ));
    let mut c = C::new(&srv.addr);
    c.send(
        b"GET /u/ws/chat HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    );
    let r = read_response(&mut c.s, &mut c.buf, true).expect("the 101");
    assert_eq!(r.0, 101);
    c.send(b"ping");
    let mut got = [0u8; 4];
    c.s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    // Idle from here: both sides close after about 1 s.
    let idle = Instant::now();
    assert!(
        c.closed_within(Duration::from_secs(6)),
        "the idle tunnel was not closed"
    );
    let took = idle.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(5),
        "closed after {took:?} idle, not about the 1 s idle timeout"
    );
    wait_for(
        "the upstream side of the tunnel to close",
        Duration::from_secs(3),
        || closed_at.lock().unwrap().is_some(),
    );
    let up_closed = closed_at.lock().unwrap().unwrap();
    assert!(up_closed.duration_since(idle) >= Duration::from_millis(800));
    // The worker serves on.
    assert_eq!(get(&srv, "/plain").2, b"plain");
}

// 9. A large upload read very slowly by the upstream: the worker's memory stays bounded.
#[test]
fn a_slowly_read_50m_upload_holds_bounded_worker_memory() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let fast = Arc::new(AtomicBool::new(false));
    let f = fast.clone();
    // Reads 16 KiB every 50 ms until told to go fast; checks the body against the pattern
    // as it goes and answers with what it found.
    serve_each(l, move |mut s| {
        let mut buf = Vec::new();
        let Some(h) = read_head(&mut s, &mut buf) else {
            return;
        };
        let mut got = 0usize;
        let mut bad = None;
        let mut check = |bytes: &[u8], got: &mut usize| {
            for (i, b) in bytes.iter().enumerate() {
                if bad.is_none() && *b != ((*got + i) % 251) as u8 {
                    bad = Some(*got + i);
                }
            }
            *got += bytes.len();
        };
        check(&std::mem::take(&mut buf), &mut got);
        let mut tmp = vec![0u8; 65536];
        while got < h.length {
            let want = if f.load(Ordering::SeqCst) {
                65536
            } else {
                std::thread::sleep(Duration::from_millis(50));
                16384
            };
            let want = want.min(h.length - got);
            match s.read(&mut tmp[..want]) {
                Ok(0) | Err(_) => return,
                Ok(n) => check(&tmp[..n], &mut got),
            }
        }
        let _ = respond(
            &mut s,
            format!("{got} bytes, mismatch at {bad:?}").as_bytes(),
        );
    });
    let srv = start(&format!(
        r#"upstream "slow" {{ address = "{addr}", send_timeout = 30, read_timeout = 30 }}"#
    ));
    assert_eq!(get(&srv, "/plain").2, b"plain");
    let worker = srv.worker_pids()[0];
    let before = common::rss_kib(worker);
    let n = 50 * 1024 * 1024;
    let mut c = C::new(&srv.addr);
    let mut w = c.s.try_clone().unwrap();
    w.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
    let writer = std::thread::spawn(move || {
        let mut req = format!("POST /u/slow/up HTTP/1.1\r\nHost: t\r\nContent-Length: {n}\r\n\r\n")
            .into_bytes();
        req.extend_from_slice(&pattern(n));
        w.write_all(&req).is_ok()
    });
    // The client sends as fast as it can while the upstream takes 320 KiB/s.
    let mut most = 0;
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(2500) {
        std::thread::sleep(Duration::from_millis(100));
        most = most.max(common::rss_kib(worker));
    }
    assert!(
        most < before + 8 * 1024,
        "worker RSS grew from {before} KiB to {most} KiB while the upstream read slowly"
    );
    fast.store(true, Ordering::SeqCst);
    let r = c.resp();
    assert!(writer.join().unwrap(), "the client could not send its body");
    assert_eq!(
        (r.0, String::from_utf8_lossy(&r.2).into_owned()),
        (200, format!("{n} bytes, mismatch at None"))
    );
}
