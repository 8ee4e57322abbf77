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
