//! FastCGI end to end: the real luahttpd with spawned (or standalone) luahttpd-fcgi-test
//! backends. Each test asserts exact statuses and bytes.

mod common;
mod fcgi_common;

use fcgi_common::*;
use std::io::Read;
use std::time::{Duration, Instant};

fn start_default() -> Fcgi {
    Fcgi::start(Opts::default())
}

// ---------------------------------------------------------------------------------------------
// Params

#[test]
fn params_as_the_backend_sees_them() {
    let f = start_default();
    let mut c = Conn::connect(f.addr());
    c.send(
        b"GET /t.php/foo/bar?mode=params&x=1 HTTP/1.1\r\nHost: test\r\nX-Custom: hello there\r\n\
          Proxy: http://evil.test:3128\r\n\r\n",
    );
    let r = c.response(false);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let p = r.params();
    let port = f.addr().rsplit(':').next().unwrap().to_string();
    let root = f.root.to_string_lossy().into_owned();
    let expect = [
        ("SCRIPT_NAME", "/t.php".to_string()),
        ("PATH_INFO", "/foo/bar".to_string()),
        ("QUERY_STRING", "mode=params&x=1".to_string()),
        ("REQUEST_URI", "/t.php/foo/bar?mode=params&x=1".to_string()),
        ("REQUEST_METHOD", "GET".to_string()),
        ("SERVER_PROTOCOL", "HTTP/1.1".to_string()),
        ("SCRIPT_FILENAME", format!("{root}/t.php")),
        ("DOCUMENT_ROOT", root.clone()),
        ("REMOTE_ADDR", "127.0.0.1".to_string()),
        ("SERVER_PORT", port),
        ("REDIRECT_STATUS", "200".to_string()),
        ("GATEWAY_INTERFACE", "CGI/1.1".to_string()),
        ("HTTP_X_CUSTOM", "hello there".to_string()),
        ("HTTP_HOST", "test".to_string()),
    ];
    for (k, v) in expect {
        assert_eq!(p.get(k), Some(&v), "param {k}; all: {p:#?}");
    }
    assert!(!p.contains_key("HTTP_PROXY"), "httpoxy: {p:#?}");
    assert!(!p.contains_key("CONTENT_LENGTH"), "GET has no body: {p:#?}");
    assert_eq!(f.backend_requests().len(), 1);
}

#[test]
fn post_params_have_content_length_and_type() {
    let f = start_default();
    let mut c = Conn::connect(f.addr());
    c.send(
        b"POST /t.php?mode=params HTTP/1.1\r\nHost: test\r\n\
          Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 7\r\n\r\na=1&b=2",
    );
    let r = c.response(false);
    assert_eq!(r.status, 200, "{}", r.text());
    let p = r.params();
    assert_eq!(p.get("REQUEST_METHOD").map(String::as_str), Some("POST"));
    assert_eq!(p.get("CONTENT_LENGTH").map(String::as_str), Some("7"));
    assert_eq!(
        p.get("CONTENT_TYPE").map(String::as_str),
        Some("application/x-www-form-urlencoded")
    );
    assert!(!p.contains_key("HTTP_CONTENT_LENGTH"), "{p:#?}");
    assert!(!p.contains_key("HTTP_CONTENT_TYPE"), "{p:#?}");
    assert!(!p.contains_key("PATH_INFO"), "{p:#?}");
}

#[test]
fn headers_mapping_to_the_same_variable_are_refused() {
    let f = start_default();
    let mut c = Conn::connect(f.addr());
    c.send(b"GET /t.php?mode=params HTTP/1.1\r\nHost: test\r\nX-Foo: a\r\nX_Foo: b\r\n\r\n");
    let r = c.response(false);
    assert_eq!(r.status, 400, "{}", r.text());
    // The refusal happens before any backend sees the request.
    assert_eq!(f.backend_requests(), vec![]);
    // The worker still serves.
    assert_eq!(f.get("/t.php?mode=pid").status, 200);
}

#[test]
fn missing_script_is_404_without_reaching_the_backend() {
    let f = start_default();
    let r = f.get("/missing.php?mode=params");
    assert_eq!(r.status, 404, "{}", r.text());
    let r = f.get("/missing.php/x/y?mode=params");
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(f.backend_requests(), vec![]);
    // The log works: a real request shows up in it.
    let r = f.get("/t.php?mode=pid");
    assert_eq!(r.status, 200);
    let log = f.backend_requests();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].0, "pid");
}

// ---------------------------------------------------------------------------------------------
// Request bodies

fn sha_answer(body: &[u8]) -> String {
    format!("sha256={}\nlength={}\n", sha256_hex(body), body.len())
}

#[test]
fn post_10_mib_with_content_length_reaches_the_backend_intact() {
    let f = start_default();
    let body = body_bytes(10 << 20);
    let mut c = Conn::connect(f.addr());
    let head = format!(
        "POST /t.php?mode=sha256 HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    c.send(head.as_bytes());
    c.send(&body);
    let r = c.response(false);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), sha_answer(&body));
}

#[test]
fn post_body_sent_in_the_same_write_as_the_head_reaches_the_backend() {
    // The worker reads the head and the start of the body together.
    let f = start_default();
    let mut wrong = Vec::new();
    for len in [10usize, 100_000, 10 << 20] {
        let body = body_bytes(len);
        let mut req = format!(
            "POST /t.php?mode=sha256 HTTP/1.1\r\nHost: test\r\nContent-Length: {len}\r\n\r\n"
        )
        .into_bytes();
        req.extend_from_slice(&body);
        let mut c = Conn::connect(f.addr());
        c.send(&req);
        let got = match c.try_response(false) {
            Some(r) => format!("{} {}", r.status, r.text()),
            None => "no response".to_string(),
        };
        let want = format!("200 {}", sha_answer(&body));
        if got != want {
            wrong.push(format!("{len} bytes: got {got:?}, want {want:?}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn post_10_mib_chunked_reaches_the_backend_intact() {
    let f = start_default();
    let body = body_bytes(10 << 20);
    let enc = chunked(&body, &[1, 3, 100, 4096, 65536, 7, 1 << 20, 31337, 2]);
    let mut c = Conn::connect(f.addr());
    c.send(b"POST /t.php?mode=sha256 HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n");
    c.send(&enc);
    let r = c.response(false);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), sha_answer(&body));
    // Keep-alive goes on after a chunked body.
    c.send(b"GET /t.php?mode=pid HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_eq!(c.response(false).status, 200);
}

#[test]
fn chunked_post_with_params_gets_the_decoded_length() {
    let f = start_default();
    let body = b"hello, chunked world";
    let mut c = Conn::connect(f.addr());
    c.send(b"POST /t.php?mode=params HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n");
    c.send(&chunked(body, &[5, 1, 9]));
    let r = c.response(false);
    assert_eq!(r.status, 200, "{}", r.text());
    let p = r.params();
    assert_eq!(
        p.get("CONTENT_LENGTH").map(String::as_str),
        Some(body.len().to_string().as_str())
    );
}

#[test]
fn body_over_the_limit_is_413_before_it_is_sent() {
    let f = Fcgi::start(Opts {
        server_extra: "limits = { body_bytes = 1024 }",
        ..Opts::default()
    });
    let mut c = Conn::connect(f.addr());
    c.send(b"POST /t.php?mode=sha256 HTTP/1.1\r\nHost: test\r\nContent-Length: 100000000\r\n\r\n");
    // Nothing of the body is sent: the answer must come anyway.
    let r = c.response(false);
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(f.backend_requests(), vec![]);
    // At the limit exactly is fine.
    let body = body_bytes(1024);
    let mut c = Conn::connect(f.addr());
    c.send(b"POST /t.php?mode=sha256 HTTP/1.1\r\nHost: test\r\nContent-Length: 1024\r\n\r\n");
    c.send(&body);
    let r = c.response(false);
    assert_eq!((r.status, r.text()), (200, sha_answer(&body)));
}

#[test]
fn chunked_body_over_the_limit_is_413() {
    let f = Fcgi::start(Opts {
        server_extra: "limits = { body_bytes = 1024 }",
        ..Opts::default()
    });
    let mut c = Conn::connect(f.addr());
    c.send(b"POST /t.php?mode=sha256 HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n");
    c.send(&chunked(&body_bytes(4000), &[1000]));
    let r = c.response(false);
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(f.backend_requests(), vec![]);
}

#[test]
fn post_without_content_length_is_411() {
    let f = start_default();
    let mut c = Conn::connect(f.addr());
    c.send(b"POST /t.php?mode=sha256 HTTP/1.1\r\nHost: test\r\n\r\n");
    let r = c.response(false);
    assert_eq!(r.status, 411, "{}", r.text());
    assert_eq!(f.backend_requests(), vec![]);
}

#[test]
fn expect_100_continue_then_body() {
    let f = start_default();
    let body = body_bytes(1 << 20);
    let mut c = Conn::connect(f.addr());
    let head = format!(
        "POST /t.php?mode=sha256 HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    c.send(head.as_bytes());
    c.stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let interim = c.response(false);
    assert_eq!(interim.status_line, "HTTP/1.1 100 Continue");
    c.stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    c.send(&body);
    let r = c.response(false);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), sha_answer(&body));
}

#[test]
fn bad_chunk_size_is_400() {
    let f = start_default();
    let mut c = Conn::connect(f.addr());
    c.send(
        b"POST /t.php?mode=sha256 HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\nzz\r\nxx\r\n0\r\n\r\n",
    );
    let r = c.response(false);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        c.closed_within(Duration::from_secs(5)),
        "framing lost: close"
    );
    assert_eq!(f.backend_requests(), vec![]);
}

// ---------------------------------------------------------------------------------------------
// Responses

#[test]
fn location_without_status_is_302() {
    let f = start_default();
    let r = f.get("/t.php?mode=location");
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("http://example.test/x"));
    assert_eq!(r.body, b"moved\n");
}

#[test]
fn status_header_sets_the_status() {
    let f = start_default();
    let r = f.get("/t.php?mode=status&code=418");
    assert_eq!(r.status, 418);
    assert_eq!(r.body, b"status 418\n");
    assert_eq!(r.header("status"), None, "Status is not forwarded");
    let r = f.get("/t.php?mode=status&code=404");
    assert_eq!((r.status, r.text().as_str()), (404, "status 404\n"));
}

#[test]
fn bad_status_is_502() {
    let f = start_default();
    let r = f.get("/t.php?mode=badstatus");
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(f.get("/t.php?mode=pid").status, 200);
}

#[test]
fn huge_response_over_http11_is_chunked_and_exact() {
    let f = start_default();
    let n = 20_000_000;
    let r = f.get(&format!("/t.php?mode=huge&bytes={n}"));
    assert_eq!(r.status, 200);
    assert_eq!(r.framing, fcgi_common::Framing::Chunked);
    assert!(r.complete, "chunked body ended early");
    assert_eq!(r.header("content-length"), None);
    assert_eq!(r.body.len(), n);
    assert_eq!(check_pattern(&r.body), Ok(()));
}

#[test]
fn huge_response_over_http10_is_close_delimited_and_exact() {
    let f = start_default();
    let n = 20_000_000;
    let mut c = Conn::connect(f.addr());
    c.send(format!("GET /t.php?mode=huge&bytes={n} HTTP/1.0\r\n\r\n").as_bytes());
    let r = c.response(false);
    assert_eq!(r.status, 200);
    assert_eq!(r.framing, fcgi_common::Framing::Close);
    assert_eq!(r.header("transfer-encoding"), None);
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.body.len(), n);
    assert_eq!(check_pattern(&r.body), Ok(()));
}

#[test]
fn slow_reader_of_a_huge_response_keeps_worker_memory_bounded() {
    let f = start_default();
    let workers = f.workers();
    assert_eq!(workers.len(), 1, "one worker: {workers:?}");
    let worker = workers[0];
    let before = rss_kib(worker).unwrap();
    let n: u64 = 200_000_000;
    let mut c = Conn::connect(f.addr());
    c.send(format!("GET /t.php?mode=huge&bytes={n} HTTP/1.0\r\n\r\n").as_bytes());
    let mut total = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    let mut max_rss = before;
    // Slow phase: ~1 MB/s for 3 s while the backend could send far more.
    let slow_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < slow_until {
        let k = c.stream.read(&mut buf[..16 * 1024]).expect("read");
        assert!(k > 0, "early EOF");
        total += k as u64;
        std::thread::sleep(Duration::from_millis(15));
        max_rss = max_rss.max(rss_kib(worker).unwrap_or(0));
    }
    // Fast phase: the rest, counted.
    loop {
        match c.stream.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => total += k as u64,
            Err(e) => panic!("read: {e} after {total} bytes"),
        }
        if total % (8 << 20) < 65536 {
            max_rss = max_rss.max(rss_kib(worker).unwrap_or(0));
        }
    }
    // HTTP/1.0: close-delimited, so everything after the (short) head is the body.
    assert!(
        total > n && total - n < 1000,
        "{total} bytes received for a {n}-byte body"
    );
    assert!(
        max_rss < before + 100 * 1024,
        "worker RSS grew from {before} KiB to {max_rss} KiB"
    );
}

#[test]
fn backend_stderr_goes_to_the_error_log() {
    let f = start_default();
    let r = f.get("/t.php?mode=stderr");
    assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));
    wait_for("the stderr line in the log", Duration::from_secs(3), || {
        f.server.log_text().contains("test stderr line")
    });
}

#[test]
fn response_split_into_single_bytes() {
    let f = start_default();
    let r = f.get("/t.php?mode=split");
    assert_eq!((r.status, r.text().as_str()), (200, "split\n"));
    assert_eq!(r.header("content-type"), Some("text/plain"));
}

#[test]
fn head_gets_headers_only() {
    let f = start_default();
    let mut c = Conn::connect(f.addr());
    c.send(b"HEAD /t.php?mode=huge&bytes=1000000 HTTP/1.1\r\nHost: test\r\n\r\n");
    let r = c.response(true);
    assert_eq!(r.status, 200);
    // Then the next response on the same connection must start right after the head.
    c.send(b"GET /t.php?mode=split HTTP/1.1\r\nHost: test\r\n\r\n");
    let r2 = c.response(false);
    assert_eq!((r2.status, r2.text().as_str()), (200, "split\n"));
    // And a HEAD with Connection: close has nothing after the head.
    let mut c = Conn::connect(f.addr());
    c.send(b"HEAD /t.php?mode=pid HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    let r = c.response(true);
    assert_eq!(r.status, 200);
    while c.fill() > 0 {}
    assert_eq!(c.buf, b"", "bytes after a HEAD response");
}

// ---------------------------------------------------------------------------------------------
// Failures

fn address_config(dir: &std::path::Path, addresses: &[String], extra: &str) -> String {
    let _ = dir;
    let list: Vec<String> = addresses.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "server {{ listen = \"127.0.0.1:0\", workers = 1, root = \"www\", error_log = \"stderr\" }}\n\
         fastcgi \"app\" {{ address = {{ {} }}, prefix = \"/app/\"{extra} }}\n",
        list.join(", ")
    )
}

#[test]
fn nothing_listening_is_503() {
    let dir = site_dir();
    let config = address_config(dir.path(), &[format!("127.0.0.1:{}", closed_port())], "");
    let f = Fcgi::start_in(dir, &config);
    let r = f.get("/app/x");
    assert_eq!(r.status, 503, "{}", r.text());
    // Disabled now; still 503, still a worker.
    let r = f.get("/app/y");
    assert_eq!(r.status, 503, "{}", r.text());
}

#[test]
fn a_dead_first_address_is_skipped_for_a_live_second() {
    let dir = site_dir();
    let log = dir.path().join("standalone.log");
    let live = Standalone::start(Some(&log));
    let dead = format!("127.0.0.1:{}", closed_port());
    let config = address_config(dir.path(), &[dead, live.addr.clone()], "");
    let f = Fcgi::start_in(dir, &config);
    for i in 0..5 {
        let r = f.get(&format!("/app/x?mode=params&i={i}"));
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        let p = r.params();
        assert_eq!(p.get("SCRIPT_NAME").map(String::as_str), Some("/app"));
        assert_eq!(p.get("PATH_INFO").map(String::as_str), Some("/x"));
    }
    assert_eq!(backend_requests(&log).len(), 5);
}

#[test]
fn slow_head_times_out_with_504() {
    let f = Fcgi::start(Opts {
        fcgi_extra: "read_timeout = 1",
        ..Opts::default()
    });
    let worker = f.workers();
    let t0 = Instant::now();
    let r = f.get("/t.php?mode=slowhead&ms=5000");
    let took = t0.elapsed();
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(took < Duration::from_millis(2200), "took {took:?}");
    assert!(took >= Duration::from_millis(800), "took {took:?}");
    let r = f.get("/t.php?mode=pid");
    assert_eq!(r.status, 200);
    assert_eq!(f.workers(), worker, "same worker");
}

#[test]
fn backend_dying_before_the_head_is_502() {
    let f = start_default();
    let worker = f.workers();
    let mut c = Conn::connect(f.addr());
    c.send(b"GET /t.php?mode=diehead HTTP/1.1\r\nHost: test\r\n\r\n");
    let r = c.response(false);
    assert_eq!(r.status, 502, "{}", r.text());
    // The client connection stays usable; the worker too.
    c.send(b"GET /t.php?mode=split HTTP/1.1\r\nHost: test\r\n\r\n");
    let r = c.response(false);
    assert_eq!((r.status, r.text().as_str()), (200, "split\n"));
    assert_eq!(f.get("/t.php?mode=pid").status, 200);
    assert_eq!(f.workers(), worker, "same worker");
}

#[test]
fn backend_dying_mid_body_truncates_visibly() {
    let f = start_default();
    let worker = f.workers();
    let mut c = Conn::connect(f.addr());
    c.send(b"GET /t.php?mode=diemid HTTP/1.1\r\nHost: test\r\n\r\n");
    let r = c.response(false);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("1000000"));
    assert!(!r.complete, "the body cannot be complete");
    assert!(r.body.len() < 1_000_000);
    assert_eq!(check_pattern(&r.body), Ok(()));
    assert_eq!(r.body.len(), 1000, "what the backend sent");
    assert_eq!(f.get("/t.php?mode=pid").status, 200);
    assert_eq!(f.workers(), worker, "same worker");
}

// ---------------------------------------------------------------------------------------------
// Balancing and respawn

#[test]
fn concurrent_requests_are_spread_over_procs() {
    let f = Fcgi::start(Opts {
        procs: 2,
        ..Opts::default()
    });
    let addr = f.addr().to_string();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut c = Conn::connect(&addr);
                c.send(b"GET /t.php?mode=slowhead&ms=800 HTTP/1.1\r\nHost: test\r\n\r\n");
                c.response(false)
            })
        })
        .collect();
    for t in threads {
        let r = t.join().unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "slow\n"));
    }
    let log = f.backend_requests();
    assert_eq!(log.len(), 2, "{log:?}");
    assert_ne!(
        log[0].1, log[1].1,
        "both requests went to one process: {log:?}"
    );
}

#[test]
fn backends_exiting_after_n_requests_lose_nothing() {
    let f = Fcgi::start(Opts {
        procs: 2,
        args: &["--exit-after", "3"],
        ..Opts::default()
    });
    let mut kept: Option<Conn> = None;
    for i in 0..60 {
        let target = format!("/t.php?mode=pid&i={i}");
        let r = if i % 3 == 0 {
            f.get(&target)
        } else {
            let c = kept.get_or_insert_with(|| Conn::connect(f.addr()));
            c.send(format!("GET {target} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
            c.response(false)
        };
        assert_eq!(
            r.status,
            200,
            "request {i}: {}\nbackend log: {:?}\nserver log:\n{}",
            r.text(),
            f.backend_requests(),
            f.server.log_text()
        );
        if i % 10 == 9 {
            kept = None;
        }
    }
    let pids: std::collections::BTreeSet<i32> =
        f.backend_requests().into_iter().map(|(_, p)| p).collect();
    assert!(pids.len() >= 20, "60 requests, 3 per process: {pids:?}");
    let log = f.server.log_text();
    assert!(log.contains("respawning"), "log: {log}");
}

#[test]
fn spawn_program_that_cannot_execute() {
    let dir = site_dir();
    let prog = dir.write("not-exec.sh", b"#!/bin/sh\nexit 0\n");
    let config = format!(
        "server {{ listen = \"127.0.0.1:0\", workers = 1, root = \"www\", error_log = \"stderr\" }}\n\
         fastcgi \"t\" {{\n  spawn = \"{}\",\n  socket = \"unix:{}/t.sock\", extensions = {{ \".php\" }} }}\n",
        prog.display(),
        dir.path().display()
    );
    let conf = dir.write("site.lua", config.as_bytes());
    let out = std::process::Command::new(common::bin())
        .args(["-t", "-c"])
        .arg(&conf)
        .output()
        .unwrap();
    let stderr =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("site.lua:3:"), "file:line in {stderr:?}");
    assert!(stderr.contains("not an executable"), "{stderr:?}");
    // Starting it fails the same way, in words, with exit status 1.
    let out = std::process::Command::new(common::bin())
        .arg("-c")
        .arg(&conf)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not an executable"), "{stderr:?}");
}

// ---------------------------------------------------------------------------------------------
// Graceful stop

#[test]
fn graceful_stop_finishes_the_request_and_stops_the_backends() {
    let mut f = Fcgi::start(Opts {
        procs: 2,
        ..Opts::default()
    });
    let backends = f.backends();
    assert_eq!(backends.len(), 2, "two backend processes: {backends:?}");
    let socks = [f.dir().join("t.sock-0"), f.dir().join("t.sock-1")];
    for s in &socks {
        assert!(s.exists(), "{} exists while running", s.display());
    }
    let mut c = Conn::connect(f.addr());
    c.send(b"GET /t.php?mode=slowhead&ms=1500 HTTP/1.1\r\nHost: test\r\n\r\n");
    // The request is in flight once the backend logged it.
    wait_for(
        "the backend to get the request",
        Duration::from_secs(3),
        || !f.backend_requests().is_empty(),
    );
    f.server.signal(2);
    let r = c.response(false);
    assert_eq!((r.status, r.text().as_str()), (200, "slow\n"));
    let st = f
        .server
        .wait_exit(Duration::from_secs(8))
        .expect("the watcher exits");
    assert_eq!(
        st.code(),
        Some(0),
        "exit status; log:\n{}",
        f.server.log_text()
    );
    for pid in backends {
        assert!(!alive(pid), "backend {pid} still alive");
    }
    for s in &socks {
        assert!(!s.exists(), "{} removed at exit", s.display());
    }
}

#[test]
fn a_terminal_s_ctrl_c_stops_gracefully_without_killing_the_backend_s_request() {
    // Ctrl-C in a terminal sends SIGINT to the foreground process group: the watcher and its
    // workers drain. A spawned backend dies on SIGINT (php-cgi, and the test backend), so it
    // runs in its own group and the request it serves finishes.
    let dir = site_dir();
    let config = config_text(dir.path(), &Opts::default());
    let backend_log = dir.path().join("backend.log");
    let mut server = common::Server::start_with(dir, &config, |cmd| {
        use std::os::unix::process::CommandExt;
        // The server's own group, standing for the terminal's foreground group.
        cmd.process_group(0);
    });
    let group = server.child.id() as i32;
    let mut c = Conn::connect(&server.addr);
    c.send(b"GET /t.php?mode=slowhead&ms=1500 HTTP/1.1\r\nHost: test\r\n\r\n");
    wait_for(
        "the backend to get the request",
        Duration::from_secs(3),
        || !fcgi_common::backend_requests(&backend_log).is_empty(),
    );
    // The backend leads its own group, and ignores SIGTTOU (a background job of the terminal
    // writing to it under `stty tostop` would be stopped).
    let pid = fcgi_common::backend_requests(&backend_log)[0].1;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let ignored = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .expect("SigIgn");
    assert_ne!(ignored & (1 << (libc::SIGTTOU - 1)), 0, "{status}");
    // SAFETY: getpgid only reads the process's group id.
    assert_eq!(
        unsafe { libc::getpgid(pid) },
        pid,
        "the backend's own group"
    );
    // SAFETY: kill(2) with a negative pid signals the group the server leads (its own, made
    // by `process_group(0)`), never this test's.
    assert_eq!(unsafe { libc::kill(-group, libc::SIGINT) }, 0);
    let r = c.response(false);
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "slow\n"),
        "log:\n{}",
        server.log_text()
    );
    let st = server
        .wait_exit(Duration::from_secs(8))
        .expect("the watcher exits");
    let log = server.log_text();
    assert_eq!(st.code(), Some(0), "log:\n{log}");
    assert!(!log.contains("during the stop; respawned"), "{log}");
}

#[test]
fn a_backend_exit_during_the_drain_is_respawned_for_requests_already_accepted() {
    // One process that exits after each request (as php-cgi at PHP_FCGI_MAX_REQUESTS, or one
    // that got the terminal's Ctrl-C); three slow requests accepted before the stop. The
    // drain must respawn it, so the two queued behind the first get answers too, not 504.
    let mut f = Fcgi::start(Opts {
        args: &["--exit-after", "1"],
        fcgi_extra: "read_timeout = 5",
        ..Opts::default()
    });
    let mut conns: Vec<Conn> = (0..3)
        .map(|_| {
            let mut c = Conn::connect(f.addr());
            c.send(b"GET /t.php?mode=slowhead&ms=400 HTTP/1.1\r\nHost: test\r\n\r\n");
            c
        })
        .collect();
    wait_for(
        "the backend to get the first request",
        Duration::from_secs(3),
        || !f.backend_requests().is_empty(),
    );
    f.server.signal(2);
    for (i, c) in conns.iter_mut().enumerate() {
        let r = c.response(false);
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "slow\n"),
            "request {i}; log:\n{}",
            f.server.log_text()
        );
    }
    let st = f
        .server
        .wait_exit(Duration::from_secs(8))
        .expect("the watcher exits");
    let log = f.server.log_text();
    assert_eq!(st.code(), Some(0), "log:\n{log}");
    assert_eq!(f.backend_requests().len(), 3, "log:\n{log}");
    let exit = log
        .lines()
        .find(|l| l.contains("during the stop"))
        .unwrap_or_default();
    assert!(exit.contains("INFO"), "{log}");
    assert!(f.backends().is_empty(), "backends left: {:?}", f.backends());
}

// ---------------------------------------------------------------------------------------------
// Keep-alive to the backend

/// Established connections a process holds (sockets other than its listener on fd 0).
fn socket_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name() != "0")
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
                })
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn keepalive_to_the_backend_reuses_one_connection() {
    let f = Fcgi::start(Opts {
        fcgi_extra: "keepalive = true",
        ..Opts::default()
    });
    let backend = f.backends();
    assert_eq!(backend.len(), 1);
    let mut c = Conn::connect(f.addr());
    for i in 0..20 {
        c.send(format!("GET /t.php?mode=pid&i={i} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
        let r = c.response(false);
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(r.text(), format!("{}\n", backend[0]));
    }
    // The backend holds two descriptors (a reader and a writer) per open connection.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(socket_fds(backend[0]), 2, "one kept connection");
}

// ---------------------------------------------------------------------------------------------
// Connection handling around an exchange

#[test]
fn pipelined_requests_are_answered_in_order() {
    let f = start_default();
    let mut c = Conn::connect(f.addr());
    c.send(
        b"GET /t.php?mode=slowhead&ms=200 HTTP/1.1\r\nHost: test\r\n\r\n\
          GET /t.php?mode=status&code=201 HTTP/1.1\r\nHost: test\r\n\r\n\
          GET /t.php?mode=split HTTP/1.1\r\nHost: test\r\n\r\n",
    );
    let a = c.response(false);
    let b = c.response(false);
    let d = c.response(false);
    assert_eq!((a.status, a.text().as_str()), (200, "slow\n"));
    assert_eq!((b.status, b.text().as_str()), (201, "status 201\n"));
    assert_eq!((d.status, d.text().as_str()), (200, "split\n"));
}

#[test]
fn client_leaving_mid_response_does_not_hurt_the_worker() {
    let f = start_default();
    let worker = f.workers();
    for _ in 0..3 {
        let mut c = Conn::connect(f.addr());
        c.send(b"GET /t.php?mode=huge&bytes=50000000 HTTP/1.1\r\nHost: test\r\n\r\n");
        let (status, _, _) = c.head().expect("head");
        assert_eq!(status, 200);
        drop(c);
    }
    for _ in 0..5 {
        let r = f.get("/t.php?mode=split");
        assert_eq!((r.status, r.text().as_str()), (200, "split\n"));
    }
    assert_eq!(f.workers(), worker, "same worker");
}

#[test]
fn expect_100_continue_over_the_limit_gets_413_without_100() {
    let f = Fcgi::start(Opts {
        server_extra: "limits = { body_bytes = 1024 }",
        ..Opts::default()
    });
    let mut c = Conn::connect(f.addr());
    c.send(
        b"POST /t.php?mode=sha256 HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\n\
          Content-Length: 5000\r\n\r\n",
    );
    let r = c.response(false);
    assert_eq!(r.status, 413, "{}", r.status_line);
    // A missing script: 404, no 100 either.
    let mut c = Conn::connect(f.addr());
    c.send(
        b"POST /nope.php?mode=sha256 HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\n\
          Content-Length: 10\r\n\r\n",
    );
    let r = c.response(false);
    assert_eq!(r.status, 404, "{}", r.status_line);
}

// ---------------------------------------------------------------------------------------------
// Regressions found in review

#[test]
fn unread_body_after_an_early_answer_is_never_a_second_request() {
    let f = start_default();
    let smuggled = b"GET /t.php?mode=pid&smuggled=1 HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut req = format!(
        "POST /t.php?mode=early HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        smuggled.len()
    )
    .into_bytes();
    req.extend_from_slice(smuggled);
    req.extend_from_slice(b"GET /t.php?mode=params&real=1 HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut c = Conn::connect(f.addr());
    c.send(&req);
    let r = c.response(false);
    assert_eq!(r.status, 401, "{}", r.text());
    let r = c.response(false);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.params().get("QUERY_STRING").map(String::as_str),
        Some("mode=params&real=1")
    );
    let modes: Vec<String> = f.backend_requests().into_iter().map(|(m, _)| m).collect();
    assert_eq!(
        modes,
        ["early", "params"],
        "the body was taken for a request"
    );
}

#[test]
fn a_slow_backend_on_a_reused_connection_outlives_keepalive_idle() {
    let f = Fcgi::start(Opts {
        server_extra: "timeouts = { keepalive_idle = 1 }",
        ..Opts::default()
    });
    let mut c = Conn::connect(f.addr());
    c.send(b"GET /t.php?mode=pid HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.response(false).status, 200);
    c.send(b"GET /t.php?mode=slowhead&ms=2500 HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.response(false);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "slow\n");
}

#[test]
fn a_stalled_chunked_upload_is_cut_after_read_idle() {
    let f = Fcgi::start(Opts {
        server_extra: "timeouts = { read_idle = 1 }",
        ..Opts::default()
    });
    let mut c = Conn::connect(f.addr());
    c.send(
        b"POST /t.php?mode=sha256 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
    );
    let t0 = Instant::now();
    assert!(
        c.closed_within(Duration::from_secs(4)),
        "the stalled upload was not cut"
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(700),
        "{:?}",
        t0.elapsed()
    );
}

#[test]
fn a_slow_but_moving_upload_is_not_a_backend_timeout() {
    let f = Fcgi::start(Opts {
        fcgi_extra: "read_timeout = 1",
        ..Opts::default()
    });
    let body = body_bytes(30_000);
    let mut c = Conn::connect(f.addr());
    c.send(
        format!(
            "POST /t.php?mode=sha256 HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    // 6 pieces, 400 ms apart: 2.4 s in all, longer than read_timeout, but never idle for it.
    for piece in body.chunks(5_000) {
        std::thread::sleep(Duration::from_millis(400));
        c.send(piece);
    }
    let r = c.response(false);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains(&sha256_hex(&body)), "{}", r.text());
}

#[test]
fn an_interim_status_from_the_backend_is_a_502() {
    let f = start_default();
    let mut c = Conn::connect(f.addr());
    c.send(b"GET /t.php?mode=status&code=100 HTTP/1.1\r\nHost: x\r\n\r\nGET /t.php?mode=pid HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.response(false).status, 502);
    assert_eq!(c.response(false).status, 200);
}
