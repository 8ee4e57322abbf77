//! FastCGI hardening end to end: a request the backend may have started is never run twice,
//! slow uploads do not pin backend processes, and the params agree on the host.

mod common;
mod fcgi_common;

use fcgi_common::*;

fn modes(f: &Fcgi) -> Vec<String> {
    f.backend_requests().into_iter().map(|(m, _)| m).collect()
}

/// One kept backend connection (1 worker, 1 process), warmed by a first request.
fn start_kept() -> Fcgi {
    let f = Fcgi::start(Opts::default());
    assert_eq!(f.get("/t.php?mode=params").status, 200);
    f
}

#[test]
fn post_on_a_kept_connection_that_dies_after_starting_is_502_not_run_twice() {
    let f = start_kept();
    let mut c = Conn::connect(f.addr());
    // `diehead` logs the request (its side effect), then closes without answering: to the
    // server this is a kept connection whose php-cgi was killed mid-request.
    c.send(b"POST /t.php?mode=diehead HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n");
    let r = c.response(false);
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(
        modes(&f),
        ["params", "diehead"],
        "the POST ran exactly once"
    );
}

#[test]
fn get_on_a_kept_connection_that_dies_is_retried_once() {
    let f = start_kept();
    let mut c = Conn::connect(f.addr());
    c.send(b"GET /t.php?mode=diehead HTTP/1.1\r\nHost: test\r\n\r\n");
    let r = c.response(false);
    assert_eq!(r.status, 502, "{}", r.text());
    // Idempotent: one more try on a fresh connection, and no more.
    assert_eq!(modes(&f), ["params", "diehead", "diehead"]);
}

#[test]
fn absolute_form_target_sets_http_host_too() {
    let f = Fcgi::start(Opts::default());
    let mut c = Conn::connect(f.addr());
    c.send(b"GET http://a.example/t.php?mode=params HTTP/1.1\r\nHost: b.example\r\n\r\n");
    let r = c.response(false);
    assert_eq!(r.status, 200, "{}", r.text());
    let p = r.params();
    assert_eq!(p.get("SERVER_NAME").map(String::as_str), Some("a.example"));
    assert_eq!(p.get("HTTP_HOST").map(String::as_str), Some("a.example"));
}

/// A POST of `body` with Content-Length whose last byte is held back: the upload stalls.
fn stalled_upload(f: &Fcgi, body: &[u8]) -> Conn {
    let mut c = Conn::connect(f.addr());
    let mut req = format!(
        "POST /t.php?mode=sha256 HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body[..body.len() - 1]);
    c.send(&req);
    c
}

#[test]
fn slow_uploads_do_not_pin_the_backend_processes() {
    // One worker, one process, a short backend read timeout: were the stalled uploads holding
    // the process, the GET would wait for it and get 504.
    let f = Fcgi::start(Opts {
        fcgi_extra: "read_timeout = 2",
        ..Opts::default()
    });
    let small = b"hello".to_vec();
    let large = body_bytes(200 * 1024); // beyond the memory threshold: spooled to a file
    let mut slow = [stalled_upload(&f, &small), stalled_upload(&f, &large)];
    std::thread::sleep(std::time::Duration::from_millis(300));
    let t0 = std::time::Instant::now();
    let r = f.get("/t.php?mode=params");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(modes(&f), ["params"], "no upload reached the backend yet");
    // Each upload completes and reaches the backend whole.
    for (c, body) in slow.iter_mut().zip([&small, &large]) {
        c.send(&body[body.len() - 1..]);
        let r = c.response(false);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), sha_answer(body));
    }
}

#[test]
fn request_buffering_false_streams_the_body_to_the_backend() {
    let f = Fcgi::start(Opts {
        fcgi_extra: "request_buffering = false, read_timeout = 2",
        ..Opts::default()
    });
    let body = b"hello".to_vec();
    let mut slow = stalled_upload(&f, &body);
    // Streaming: the backend took the request before its body ended.
    wait_for(
        "the streamed request at the backend",
        std::time::Duration::from_secs(5),
        || modes(&f) == ["sha256"],
    );
    slow.send(&body[body.len() - 1..]);
    let r = slow.response(false);
    assert_eq!((r.status, r.text()), (200, sha_answer(&body)));
}

fn sha_answer(body: &[u8]) -> String {
    format!("sha256={}\nlength={}\n", sha256_hex(body), body.len())
}

#[test]
fn a_stalled_buffered_upload_is_cut_after_read_idle() {
    let f = Fcgi::start(Opts {
        server_extra: "timeouts = { read_idle = 1 }",
        ..Opts::default()
    });
    let mut c = stalled_upload(&f, b"hello");
    let t0 = std::time::Instant::now();
    assert!(
        c.closed_within(std::time::Duration::from_secs(4)),
        "the stalled upload was not cut"
    );
    assert!(
        t0.elapsed() >= std::time::Duration::from_millis(700),
        "{:?}",
        t0.elapsed()
    );
    assert!(
        modes(&f).is_empty(),
        "the backend never saw it: {:?}",
        modes(&f)
    );
}

#[test]
fn posts_survive_a_backend_that_exits_after_its_max_requests() {
    // The scripted backend reads PHP_FCGI_MAX_REQUESTS as php-cgi does: after the 3rd
    // request it sends END_REQUEST and exits. Keep-alive POSTs cannot be retried once sent,
    // so the server must stop reusing the connection after the 3rd response.
    let dir = site_dir();
    let config = config_text(dir.path(), &Opts::default())
        .replace("env = { ", "env = { PHP_FCGI_MAX_REQUESTS = \"3\", ");
    let f = Fcgi::start_in(dir, &config);
    let mut c = Conn::connect(f.addr());
    for i in 0..30 {
        c.send(b"POST /t.php?mode=params HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n");
        let r = c.response(false);
        assert_eq!(
            r.status,
            200,
            "POST {i}: {}\nserver log:\n{}",
            r.text(),
            f.server.log_text()
        );
    }
}
