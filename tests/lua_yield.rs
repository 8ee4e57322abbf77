//! The route as a coroutine (issue 13): `sleep` suspends it while the worker serves other
//! connections; `limits.lua_wall` ends a route that waits too long with a 504; a client that
//! leaves cancels the wait.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

const ROUTE: &str = r#"
shared "y" { size = "64k" }
route(function(req)
  if req.path == "/sleep" then
    local before = shared.y:incr("started", 1, 0)
    sleep(0.5)
    shared.y:incr("finished", 1, 0)
    return respond(200, "slept " .. before)
  elseif req.path == "/long" then
    sleep(10)
    return respond(200, "never")
  elseif req.path == "/count" then
    return respond(200, tostring(shared.y:get("finished")))
  elseif req.path == "/plain" then
    return respond(200, "plain")
  end
end)
"#;

fn start() -> Server {
    let dir = TempDir::new("lua-yield");
    std::fs::create_dir_all(dir.path().join("www")).expect("mkdir www");
    // One worker: whatever it serves while routes sleep, it serves concurrently.
    let config = format!(
        "server {{ listen = \"127.0.0.1:0\", workers = 1, root = \"www\", error_log = \"stderr\", \
         limits = {{ lua_wall = 1 }} }}\n{ROUTE}"
    );
    Server::start_config(dir, &config)
}

fn send(addr: &str, path: &str) -> TcpStream {
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    c
}

fn read_all(mut c: TcpStream) -> String {
    let mut buf = Vec::new();
    let _ = c.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

#[test]
fn sleeping_routes_do_not_block_the_worker() {
    let s = start();
    let started = Instant::now();
    let sleepers: Vec<TcpStream> = (0..50).map(|_| send(&s.addr, "/sleep")).collect();
    // While fifty routes sleep in the one worker, plain requests are answered at once.
    std::thread::sleep(Duration::from_millis(100));
    for _ in 0..10 {
        let t = Instant::now();
        let r = s.get("/plain");
        assert_eq!(r.text(), "plain");
        assert!(
            t.elapsed() < Duration::from_millis(300),
            "{:?}",
            t.elapsed()
        );
    }
    for c in sleepers {
        let text = read_all(c);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains("slept "), "{text}");
    }
    let took = started.elapsed();
    // Concurrent, not one after the other (50 × 0.5 s).
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(s.get("/count").text(), "50");
}

#[test]
fn a_route_past_lua_wall_gets_504() {
    let s = start();
    let t = Instant::now();
    let r = s.get("/long");
    assert_eq!(r.status, 504);
    assert!(t.elapsed() >= Duration::from_millis(900) && t.elapsed() < Duration::from_secs(5));
    wait_for("the lua_wall log line", Duration::from_secs(5), || {
        s.log_text().contains("limits.lua_wall")
    });
    assert_eq!(s.get("/plain").text(), "plain");
}

#[test]
fn a_client_leaving_mid_wait_cancels_the_route() {
    let s = start();
    let c = send(&s.addr, "/sleep");
    std::thread::sleep(Duration::from_millis(100));
    drop(c);
    std::thread::sleep(Duration::from_millis(900));
    // The route never went past its sleep.
    assert_eq!(s.get("/count").text(), "nil");
    // And the next one does.
    let text = read_all(send(&s.addr, "/sleep"));
    assert!(text.contains("slept 2"), "{text}");
}

const BODY_ROUTE: &str = r#"
route(function(req)
  if req.path == "/echo" then
    local b, err = req:body()
    if not b then return respond(413, "refused: " .. err) end
    return respond(200, "got " .. #b .. ": " .. b:sub(1, 20))
  elseif req.path == "/small" then
    local b, err = req:body(5)
    return respond(200, tostring(b) .. " " .. tostring(err))
  elseif req.path == "/form" then
    local f = req:form()
    return respond(200, (f.name or "?") .. "|" .. (f.city or "?"))
  elseif req.path:find("%.php$") then
    local b = req:body()
    if b and b:find("forbidden") then return deny(403) end
    return nil
  end
end)
"#;

fn start_body(extra: &str) -> Server {
    let dir = TempDir::new("lua-body");
    std::fs::create_dir_all(dir.path().join("www")).expect("mkdir www");
    let config = format!(
        "server {{ listen = \"127.0.0.1:0\", workers = 1, root = \"www\", error_log = \"stderr\", \
         limits = {{ lua_body_bytes = 1000 }} }}\n{extra}{BODY_ROUTE}"
    );
    Server::start_config(dir, &config)
}

fn post(s: &Server, path: &str, headers: &str, body: &[u8]) -> Response {
    let mut c = s.connect();
    let mut req = format!("POST {path} HTTP/1.1\r\nHost: t\r\n{headers}\r\n").into_bytes();
    req.extend_from_slice(body);
    c.send(&req);
    c.response(false)
}

#[test]
fn req_body_reads_content_length_and_chunked_bodies_within_the_limit() {
    let s = start_body("");
    let r = post(&s, "/echo", "Content-Length: 11\r\n", b"hello world");
    assert_eq!(r.text(), "got 11: hello world");
    let r = post(
        &s,
        "/echo",
        "Transfer-Encoding: chunked\r\n",
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    );
    assert_eq!(r.text(), "got 11: hello world");
    // No body at all: the empty string.
    assert_eq!(s.get("/echo").text(), "got 0: ");
    // Over limits.lua_body_bytes (1000), and over the route's own max.
    let big = vec![b'x'; 1500];
    let r = post(&s, "/echo", "Content-Length: 1500\r\n", &big);
    assert_eq!(r.text(), "refused: too large");
    let r = post(&s, "/small", "Content-Length: 6\r\n", b"123456");
    assert_eq!(r.text(), "nil too large");
    let r = post(
        &s,
        "/echo",
        "Transfer-Encoding: chunked\r\n",
        format!("5dc\r\n{}\r\n0\r\n\r\n", "y".repeat(1500)).as_bytes(),
    );
    assert_eq!(r.text(), "refused: too large");
    // A body sent in two parts, the route waiting in between.
    let mut c = s.connect();
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nfirst");
    std::thread::sleep(Duration::from_millis(200));
    c.send(b"-half");
    assert_eq!(c.response(false).text(), "got 10: first-half");
    // Expect: 100-continue gets its go-ahead when the route asks for the body.
    let mut c = s.connect();
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n");
    let mut buf = [0u8; 64];
    let n = c.stream.read(&mut buf).unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 100 Continue"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    c.send(b"abc");
    assert_eq!(c.response(false).text(), "got 3: abc");
}

#[test]
fn req_form_decodes_an_urlencoded_body() {
    let s = start_body("");
    let body = b"name=Ada+Lovelace&city=London%21&name=second";
    let r = post(
        &s,
        "/form",
        &format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ),
        body,
    );
    assert_eq!(r.text(), "Ada Lovelace|London!");
}

#[test]
fn limit_conn_counts_requests_in_flight_and_gives_them_back() {
    let dir = TempDir::new("lua-limit-conn");
    std::fs::create_dir_all(dir.path().join("www")).expect("mkdir www");
    let config = r#"server { listen = "127.0.0.1:0", workers = 2, root = "www", error_log = "stderr" }
shared "conns" { size = "64k" }
route(function(req)
  if req.path == "/count" then return respond(200, tostring(shared.conns:get("limit_conn:all"))) end
  if req.path ~= "/slow" then return nil end
  local d = limit_conn{ zone = "conns", key = "all", max = 2 }
  if d then return d end
  sleep(0.5)
  return respond(200, "ok")
end)
"#;
    let s = Server::start_config(dir, config);
    let started: Vec<TcpStream> = (0..3).map(|_| send(&s.addr, "/slow")).collect();
    let answers: Vec<String> = started.into_iter().map(read_all).collect();
    let ok = answers
        .iter()
        .filter(|a| a.starts_with("HTTP/1.1 200"))
        .count();
    let refused = answers
        .iter()
        .filter(|a| a.starts_with("HTTP/1.1 503"))
        .count();
    assert_eq!((ok, refused), (2, 1), "{answers:?}");
    // All given back, also by a client that left mid-wait.
    let c = send(&s.addr, "/slow");
    std::thread::sleep(Duration::from_millis(100));
    drop(c);
    wait_for("the counts given back", Duration::from_secs(3), || {
        s.get("/count").text() == "0"
    });
}
