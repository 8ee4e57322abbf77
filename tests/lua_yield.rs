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
