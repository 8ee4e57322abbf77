//! HTTP/1.1 strictness, framing and connection handling against the real binary.

mod common;

use common::{raw, Client, Response, Server};

const FILES: &[(&str, &[u8])] = &[
    ("a.txt", b"file a\n"),
    ("b.txt", b"file b, longer\n"),
    ("c.txt", b"c\n"),
];

fn server() -> Server {
    Server::start("workers = 1", FILES)
}

/// Sends `data` on a fresh connection and asserts the status.
fn expect_status(s: &Server, data: &[u8], status: u16) -> Response {
    let r = raw(&s.addr, data);
    assert_eq!(
        r.status,
        status,
        "request {:?} got {} {:?}",
        String::from_utf8_lossy(data),
        r.status,
        r.header_list
    );
    r
}

/// Sends `data`, asserts the status, then asserts that the server closes the connection.
fn expect_status_and_close(s: &Server, data: &[u8], status: u16) {
    let mut c = s.connect();
    c.send(data);
    let r = c.response(false);
    assert_eq!(
        r.status,
        status,
        "request {:?} got {:?}",
        String::from_utf8_lossy(data),
        r.header_list
    );
    assert_eq!(
        r.header("connection"),
        Some("close"),
        "request {:?}",
        String::from_utf8_lossy(data)
    );
    assert!(
        c.closed(),
        "server kept the connection after {:?}",
        String::from_utf8_lossy(data)
    );
}

/// Reads the next response on `c` and checks its status and body.
fn expect_response(c: &mut Client, head: bool, status: u16, body: &[u8]) -> Response {
    let r = c.response(head);
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.body, body);
    r
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes()
}

fn with_header(h: &str) -> Vec<u8> {
    format!("GET /a.txt HTTP/1.1\r\nHost: x\r\n{h}\r\n\r\n").into_bytes()
}

fn assert_common_headers(r: &Response, server_name: &str) {
    let date = r.header("date").expect("Date header");
    assert!(
        date.ends_with(" GMT") && date.len() == 29,
        "Date not an IMF-fixdate: {date:?}"
    );
    assert_eq!(r.header("server"), Some(server_name));
    assert_eq!(
        r.header("content-length"),
        Some(r.body.len().to_string().as_str()),
        "Content-Length must match the body"
    );
}

#[test]
fn http11_without_host_is_400() {
    let s = server();
    expect_status(&s, b"GET /a.txt HTTP/1.1\r\n\r\n", 400);
}

#[test]
fn two_host_headers_is_400() {
    let s = server();
    expect_status(
        &s,
        b"GET /a.txt HTTP/1.1\r\nHost: x\r\nHost: x\r\n\r\n",
        400,
    );
    expect_status(
        &s,
        b"GET /a.txt HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
        400,
    );
}

#[test]
fn content_length_with_transfer_encoding_is_400_and_closes() {
    let s = server();
    expect_status_and_close(
        &s,
        b"POST /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    );
    expect_status_and_close(
        &s,
        b"GET /a.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n0\r\n\r\n",
        400,
    );
}

#[test]
fn bad_content_length_is_400() {
    let s = server();
    for cl in [
        "Content-Length: 5\r\nContent-Length: 5",
        "Content-Length: 5\r\nContent-Length: 6",
        "Content-Length: 5, 5",
        "Content-Length: +5",
        "Content-Length: 5a",
        "Content-Length: -1",
        "Content-Length: ",
        "Content-Length: 0x5",
        "Content-Length: 99999999999999999999999",
    ] {
        let req = format!("POST /a.txt HTTP/1.1\r\nHost: x\r\n{cl}\r\n\r\nhello");
        expect_status_and_close(&s, req.as_bytes(), 400);
    }
}

#[test]
fn unknown_transfer_coding_is_501() {
    let s = server();
    expect_status_and_close(
        &s,
        b"POST /a.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
        501,
    );
}

#[test]
fn bad_transfer_encoding_lists_are_400() {
    let s = server();
    for te in [
        "Transfer-Encoding: chunked, gzip",
        "Transfer-Encoding: chunked, chunked",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: ",
    ] {
        let req = format!("POST /a.txt HTTP/1.1\r\nHost: x\r\n{te}\r\n\r\n0\r\n\r\n");
        expect_status_and_close(&s, req.as_bytes(), 400);
    }
    // Transfer-Encoding is not part of HTTP/1.0.
    expect_status_and_close(
        &s,
        b"POST /a.txt HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    );
}

#[test]
fn bare_lf_is_400() {
    let s = server();
    expect_status_and_close(&s, b"GET /a.txt HTTP/1.1\nHost: x\n\n", 400);
    expect_status_and_close(&s, b"GET /a.txt HTTP/1.1\r\nHost: x\n\r\n", 400);
    expect_status_and_close(&s, b"GET /a.txt HTTP/1.1\r\nHost: x\r\nX-A: b\n\r\n", 400);
}

#[test]
fn whitespace_before_colon_is_400() {
    let s = server();
    expect_status_and_close(&s, b"GET /a.txt HTTP/1.1\r\nHost : x\r\n\r\n", 400);
    expect_status_and_close(
        &s,
        b"GET /a.txt HTTP/1.1\r\nHost: x\r\nX-A\t: b\r\n\r\n",
        400,
    );
}

#[test]
fn obs_fold_is_400() {
    let s = server();
    expect_status_and_close(
        &s,
        b"GET /a.txt HTTP/1.1\r\nHost: x\r\nX-A: b\r\n  c\r\n\r\n",
        400,
    );
}

#[test]
fn control_byte_in_header_value_is_400() {
    let s = server();
    expect_status_and_close(&s, &with_header("X-A: a\x01b"), 400);
    expect_status_and_close(&s, &with_header("X-A: a\x7fb"), 400);
    expect_status_and_close(&s, &with_header("X-A: a\x00b"), 400);
    expect_status_and_close(&s, &with_header("X-A: a\rb"), 400);
    // HTAB is allowed.
    expect_status(&s, &with_header("X-A: a\tb"), 200);
}

#[test]
fn bad_host_is_400() {
    let s = server();
    for host in [
        "a:99999", "a:x", "[::1", "::1]", "a b", "a:80:80", "[zz]", "a@b", ":80",
    ] {
        let req = format!("GET /a.txt HTTP/1.1\r\nHost: {host}\r\n\r\n");
        expect_status(&s, req.as_bytes(), 400);
    }
    // Good ones for contrast.
    // An empty port is valid (RFC 3986: port = *DIGIT) and means no port.
    for host in [
        "a:80",
        "[::1]",
        "[::1]:8080",
        "127.0.0.1:1",
        "Example.COM",
        "example.com:",
        "[::1]:",
    ] {
        let req = format!("GET /a.txt HTTP/1.1\r\nHost: {host}\r\n\r\n");
        expect_status(&s, req.as_bytes(), 200);
    }
}

#[test]
fn head_over_header_bytes_is_431() {
    let s = Server::start("workers = 1, limits = { header_bytes = 1024 }", FILES);
    // A complete head over the limit.
    let big = format!(
        "GET /a.txt HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "y".repeat(2000)
    );
    expect_status_and_close(&s, big.as_bytes(), 431);
    // A head that never ends, growing past the limit.
    let endless = format!(
        "GET /a.txt HTTP/1.1\r\nHost: x\r\nX-Big: {}",
        "y".repeat(3000)
    );
    expect_status_and_close(&s, endless.as_bytes(), 431);
    // Just under the limit still works.
    let ok = format!(
        "GET /a.txt HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "y".repeat(900)
    );
    assert!(ok.len() <= 1024);
    expect_status(&s, ok.as_bytes(), 200);
}

#[test]
fn too_many_header_fields_is_431() {
    let s = server();
    let mut req = String::from("GET /a.txt HTTP/1.1\r\nHost: x\r\n");
    for i in 0..150 {
        req.push_str(&format!("X-{i}: v\r\n"));
    }
    req.push_str("\r\n");
    expect_status_and_close(&s, req.as_bytes(), 431);
}

#[test]
fn unknown_method_is_501() {
    let s = server();
    expect_status_and_close(&s, b"FOO /a.txt HTTP/1.1\r\nHost: x\r\n\r\n", 501);
    // Methods are case-sensitive.
    expect_status_and_close(&s, b"get /a.txt HTTP/1.1\r\nHost: x\r\n\r\n", 501);
    expect_status_and_close(&s, b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n", 501);
}

#[test]
fn unsupported_versions_are_505() {
    let s = server();
    expect_status_and_close(&s, b"GET /a.txt HTTP/2.0\r\nHost: x\r\n\r\n", 505);
    expect_status_and_close(&s, b"GET /a.txt HTTP/3.0\r\nHost: x\r\n\r\n", 505);
    // Not a version at all.
    expect_status_and_close(&s, b"GET /a.txt HTTX/1.1\r\nHost: x\r\n\r\n", 400);
}

#[test]
fn nul_and_bad_escapes_in_path_are_400() {
    let s = server();
    expect_status(&s, &get("/a.txt%00"), 400);
    expect_status(&s, &get("/a%00.txt"), 400);
    expect_status(&s, &get("/%zz"), 400);
    expect_status(&s, &get("/a.txt%2"), 400);
    expect_status(&s, &get("/a.txt%"), 400);
    expect_status(&s, &get("/%0a"), 400);
    // A correct escape works.
    expect_status(&s, &get("/a%2etxt"), 200);
}

#[test]
fn dot_segments_never_escape_root() {
    let s = server();
    // site.lua lives next to www/, in the server's temp dir.
    let secret = std::fs::read(s.dir.path().join("site.lua")).unwrap();
    assert!(!secret.is_empty());
    s.dir.write("secret.txt", b"TOP SECRET");
    for path in [
        "/../site.lua",
        "/%2e%2e/site.lua",
        "/..%2fsite.lua",
        "/%2e%2e%2fsite.lua",
        "/a/../../site.lua",
        "/./../site.lua",
        "/../secret.txt",
        "/%2E%2E/secret.txt",
        "/..%2F..%2Fsecret.txt",
        "/www/../../secret.txt",
        "//../secret.txt",
    ] {
        let r = raw(&s.addr, &get(path));
        assert_ne!(r.status, 200, "{path} was served: {:?}", r.text());
        assert!(
            !r.text().contains("TOP SECRET") && !r.text().contains("server {"),
            "{path} leaked {:?}",
            r.text()
        );
    }
    // Absolute-form too.
    let r = raw(
        &s.addr,
        b"GET http://x/../secret.txt HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_ne!(r.status, 200);
    // A dot segment that stays inside the root resolves normally.
    let r = raw(&s.addr, &get("/sub/../a.txt"));
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"file a\n");
}

#[test]
fn http10_without_host_is_200() {
    let s = server();
    let mut c = s.connect();
    c.send(b"GET /a.txt HTTP/1.0\r\n\r\n");
    expect_response(&mut c, false, 200, b"file a\n");
    // HTTP/1.0 closes by default.
    assert!(c.closed(), "HTTP/1.0 without keep-alive must close");
}

#[test]
fn http11_keeps_alive_by_default() {
    let s = server();
    let mut c = s.connect();
    c.send(&get("/a.txt"));
    let r1 = c.response(false);
    assert_eq!(r1.status, 200);
    assert_eq!(r1.body, b"file a\n");
    assert_ne!(r1.header("connection"), Some("close"));
    c.send(&get("/b.txt"));
    let r2 = c.response(false);
    assert_eq!(r2.status, 200);
    assert_eq!(r2.body, b"file b, longer\n");
}

#[test]
fn http10_keep_alive_on_request() {
    let s = server();
    let mut c = s.connect();
    c.send(b"GET /a.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let r1 = c.response(false);
    assert_eq!(r1.status, 200);
    assert_eq!(r1.header("connection"), Some("keep-alive"));
    assert_eq!(r1.body, b"file a\n");
    c.send(b"GET /b.txt HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
    let r2 = c.response(false);
    assert_eq!(r2.status, 200);
    assert_eq!(r2.header("connection"), Some("keep-alive"));
    assert_eq!(r2.body, b"file b, longer\n");
    // Without the token the next one closes.
    c.send(b"GET /c.txt HTTP/1.0\r\n\r\n");
    let r3 = c.response(false);
    assert_eq!(r3.status, 200);
    assert_eq!(r3.body, b"c\n");
    assert_eq!(r3.header("connection"), Some("close"));
    assert!(c.closed());
}

#[test]
fn connection_close_closes() {
    let s = server();
    let mut c = s.connect();
    c.send(b"GET /a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let r = c.response(false);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.body, b"file a\n");
    assert!(c.closed());
}

#[test]
fn pipelined_requests_answered_in_order() {
    let s = server();
    let mut c = s.connect();
    let mut all = Vec::new();
    for p in ["/b.txt", "/a.txt", "/missing", "/c.txt"] {
        all.extend_from_slice(&get(p));
    }
    c.send(&all);
    let r = c.response(false);
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"file b, longer\n"[..])
    );
    let r = c.response(false);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"file a\n"[..]));
    let r = c.response(false);
    assert_eq!(r.status, 404);
    let r = c.response(false);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"c\n"[..]));
}

#[test]
fn keepalive_requests_limit_closes_on_the_last() {
    let s = Server::start("workers = 1, limits = { keepalive_requests = 3 }", FILES);
    let mut c = s.connect();
    for (i, p) in ["/a.txt", "/b.txt", "/c.txt"].iter().enumerate() {
        c.send(&get(p));
        let r = c.response(false);
        assert_eq!(r.status, 200, "request {i}");
        if i < 2 {
            assert_ne!(r.header("connection"), Some("close"), "request {i}");
        } else {
            assert_eq!(r.header("connection"), Some("close"), "request {i}");
        }
    }
    assert!(c.closed(), "connection must close after the third response");
}

#[test]
fn keepalive_requests_limit_with_pipelining() {
    let s = Server::start("workers = 1, limits = { keepalive_requests = 2 }", FILES);
    let mut c = s.connect();
    let mut all = Vec::new();
    for p in ["/a.txt", "/b.txt", "/c.txt"] {
        all.extend_from_slice(&get(p));
    }
    c.send(&all);
    let r = c.response(false);
    assert_eq!(r.body, b"file a\n");
    let r = c.response(false);
    assert_eq!(r.body, b"file b, longer\n");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.try_response(false).is_none(), "no third response");
}

#[test]
fn every_response_has_date_server_content_length() {
    let s = server();
    for (req, status) in [
        (get("/a.txt"), 200),
        (get("/missing"), 404),
        (get("/"), 403),
        (b"GET /a.txt HTTP/1.1\r\n\r\n".to_vec(), 400),
        (b"FOO / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 501),
        (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n".to_vec(), 505),
    ] {
        let r = expect_status(&s, &req, status);
        assert_common_headers(&r, "luahttpd");
    }
}

#[test]
fn custom_server_name() {
    let s = Server::start(r#"workers = 1, server_name = "myserver/2.5""#, FILES);
    let r = expect_status(&s, &get("/a.txt"), 200);
    assert_common_headers(&r, "myserver/2.5");
    let r = expect_status(&s, &get("/nope"), 404);
    assert_common_headers(&r, "myserver/2.5");
    let r = expect_status(&s, b"GET / HTTP/1.1\r\n\r\n", 400);
    assert_common_headers(&r, "myserver/2.5");
}

#[test]
fn head_has_get_headers_and_no_body() {
    let s = server();
    let mut c = s.connect();
    c.send(b"HEAD /b.txt HTTP/1.1\r\nHost: x\r\n\r\n");
    let h = c.response(true);
    c.send(&get("/b.txt"));
    let g = c.response(false);
    assert_eq!(h.status, 200);
    assert_eq!(g.status, 200);
    assert_eq!(g.body, b"file b, longer\n");
    assert_eq!(h.header("content-length"), Some("15"));
    let strip = |r: &Response| {
        let mut v: Vec<(String, String)> = r
            .header_list
            .iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case("date"))
            .cloned()
            .collect();
        v.sort();
        v
    };
    assert_eq!(strip(&h), strip(&g));
    // HEAD and GET pipelined together: the GET parses right after the bodiless HEAD.
    let mut c = s.connect();
    let mut both = b"HEAD /a.txt HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    both.extend_from_slice(&get("/c.txt"));
    c.send(&both);
    let h = c.response(true);
    assert_eq!(h.status, 200);
    assert_eq!(h.header("content-length"), Some("7"));
    let g = c.response(false);
    assert_eq!(g.status, 200);
    assert_eq!(g.body, b"c\n");
}

#[test]
fn head_of_error_has_no_body() {
    let s = server();
    let mut c = s.connect();
    let mut both = b"HEAD /missing HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    both.extend_from_slice(&get("/a.txt"));
    c.send(&both);
    let h = c.response(true);
    assert_eq!(h.status, 404);
    let g = c.response(false);
    assert_eq!(g.status, 200);
    assert_eq!(g.body, b"file a\n");
}

#[test]
fn get_with_content_length_body_is_discarded() {
    let s = server();
    let mut c = s.connect();
    let mut data =
        b"GET /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world".to_vec();
    data.extend_from_slice(&get("/b.txt"));
    c.send(&data);
    expect_response(&mut c, false, 200, b"file a\n");
    expect_response(&mut c, false, 200, b"file b, longer\n");
}

#[test]
fn get_with_body_that_looks_like_a_request_is_discarded() {
    // The body is a request itself: it must not be answered.
    let s = server();
    let mut c = s.connect();
    let inner = get("/c.txt");
    let mut data = format!(
        "GET /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        inner.len()
    )
    .into_bytes();
    data.extend_from_slice(&inner);
    data.extend_from_slice(&get("/b.txt"));
    c.send(&data);
    assert_eq!(c.response(false).body, b"file a\n");
    assert_eq!(c.response(false).body, b"file b, longer\n");
}

#[test]
fn get_with_body_sent_later_is_discarded() {
    let s = server();
    let mut c = s.connect();
    c.send(b"GET /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n");
    let r = c.response(false);
    assert_eq!(r.body, b"file a\n");
    std::thread::sleep(std::time::Duration::from_millis(100));
    c.send(b"01234");
    std::thread::sleep(std::time::Duration::from_millis(50));
    let mut rest = b"56789".to_vec();
    rest.extend_from_slice(&get("/b.txt"));
    c.send(&rest);
    expect_response(&mut c, false, 200, b"file b, longer\n");
}

#[test]
fn get_with_chunked_body_is_discarded() {
    let s = server();
    let mut c = s.connect();
    let mut data = b"GET /a.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
        .to_vec();
    data.extend_from_slice(&get("/b.txt"));
    c.send(&data);
    expect_response(&mut c, false, 200, b"file a\n");
    expect_response(&mut c, false, 200, b"file b, longer\n");
}

#[test]
fn post_to_static_file_is_405_with_allow() {
    let s = server();
    let mut c = s.connect();
    let mut data = b"POST /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc".to_vec();
    data.extend_from_slice(&get("/c.txt"));
    c.send(&data);
    let r = c.response(false);
    assert_eq!(r.status, 405);
    let allow = r.header("allow").expect("Allow header on 405");
    assert!(allow.contains("GET") && allow.contains("HEAD"), "{allow}");
    assert!(!allow.contains("POST"), "{allow}");
    expect_response(&mut c, false, 200, b"c\n");
    for m in ["PUT", "DELETE", "PATCH"] {
        let r = raw(
            &s.addr,
            format!("{m} /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").as_bytes(),
        );
        assert_eq!(r.status, 405, "{m}");
        assert!(r.header("allow").is_some(), "{m}");
    }
}

#[test]
fn options_is_answered() {
    let s = server();
    let r = expect_status(&s, b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", 204);
    assert!(r.header("allow").is_some());
    assert!(r.body.is_empty());
    // The asterisk-form only with OPTIONS.
    expect_status(&s, b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400);
}

#[test]
fn bad_chunk_size_closes_after_the_response() {
    let s = server();
    for body in [
        &b"zz\r\nhello\r\n0\r\n\r\n"[..],
        b"-5\r\nhello\r\n0\r\n\r\n",
        b"ffffffffffffffffffff\r\n",
    ] {
        let mut c = s.connect();
        let mut data =
            b"GET /a.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        data.extend_from_slice(body);
        data.extend_from_slice(&get("/b.txt"));
        c.send(&data);
        let r = c.response(false);
        assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(body));
        assert_eq!(r.body, b"file a\n");
        assert!(
            c.closed(),
            "bad chunked body {:?} must close the connection",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn large_unwanted_body_closes_after_the_response() {
    let s = server();
    let mut c = s.connect();
    c.send(b"GET /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n");
    let r = c.response(false);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed());
}

#[test]
fn unsupported_expectation_is_417() {
    let s = server();
    expect_status(&s, &with_header("Expect: teapot"), 417);
}

#[test]
fn fragment_and_bad_target_are_400() {
    let s = server();
    expect_status(&s, &get("/a.txt#frag"), 400);
    expect_status(&s, &get("a.txt"), 400);
    expect_status(&s, b"GET http://u@x/a.txt HTTP/1.1\r\nHost: x\r\n\r\n", 400);
}

#[test]
fn soft_error_keeps_the_connection() {
    // A 400 for a bad Host on a bodiless request is framed whole: the next request works.
    let s = server();
    let mut c = s.connect();
    let mut data = b"GET /a.txt HTTP/1.1\r\nHost: a:x\r\n\r\n".to_vec();
    data.extend_from_slice(&get("/b.txt"));
    c.send(&data);
    assert_eq!(c.response(false).status, 400);
    expect_response(&mut c, false, 200, b"file b, longer\n");
}

#[test]
fn leading_empty_lines_are_skipped() {
    let s = server();
    let mut data = b"\r\n\r\n".to_vec();
    data.extend_from_slice(&get("/a.txt"));
    let r = expect_status(&s, &data, 200);
    assert_eq!(r.body, b"file a\n");
}

#[test]
fn request_split_across_writes() {
    let s = server();
    let mut c: Client = s.connect();
    let data = get("/a.txt");
    for b in data.chunks(3) {
        c.send(b);
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    expect_response(&mut c, false, 200, b"file a\n");
}

#[test]
fn pipelined_request_after_connection_close_is_not_answered() {
    let s = server();
    let mut c = s.connect();
    let mut data = b"GET /a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec();
    data.extend_from_slice(&get("/b.txt"));
    c.send(&data);
    let r = c.response(false);
    assert_eq!(r.body, b"file a\n");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(
        c.try_response(false).is_none(),
        "second request was answered"
    );
}

/// A refused HTTP/1.0 keep-alive request that the server keeps open must say so, as every
/// other HTTP/1.0 keep-alive response does; otherwise it must close.
#[test]
fn http10_keep_alive_refused_request_announces_connection() {
    let s = server();
    for bad in [
        &b"GET /%zz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"[..],
        b"GET /a.txt HTTP/1.0\r\nHost: a:x\r\nConnection: keep-alive\r\n\r\n",
        b"GET /a.txt HTTP/1.0\r\nExpect: foo\r\nConnection: keep-alive\r\n\r\n",
    ] {
        let mut c = s.connect();
        c.send(bad);
        let r = c.response(false);
        assert!(r.status == 400 || r.status == 417, "{}", r.status);
        match r.header("connection") {
            Some("keep-alive") => {
                c.send(b"GET /a.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
                expect_response(&mut c, false, 200, b"file a\n");
            }
            Some("close") => assert!(c.closed()),
            other => panic!(
                "{:?}: HTTP/1.0 keep-alive response has Connection: {other:?}, \
                 neither keep-alive nor close",
                String::from_utf8_lossy(bad)
            ),
        }
    }
}

/// A refused HEAD request (parsed whole, so the connection stays open) must not carry a
/// body: the client reads no body after a HEAD response, so the body's bytes would be taken
/// for the start of the next response.
#[test]
fn refused_head_request_has_no_body() {
    let s = server();
    for bad in [
        &b"HEAD /%zz HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"HEAD /a.txt HTTP/1.1\r\nHost: a:x\r\n\r\n",
        b"HEAD /a.txt HTTP/1.1\r\n\r\n",
        b"HEAD /a.txt HTTP/1.1\r\nHost: x\r\nExpect: foo\r\n\r\n",
    ] {
        let mut c = s.connect();
        let mut data = bad.to_vec();
        data.extend_from_slice(&get("/b.txt"));
        c.send(&data);
        let r = c.response(true);
        assert!(r.status == 400 || r.status == 417, "{}", r.status);
        if r.header("connection") == Some("close") {
            // Closing is also fine: then nothing else may follow.
            assert!(c.try_response(false).is_none_or(|r| r.body.is_empty()));
            continue;
        }
        let next = c.try_response(false);
        assert!(
            next.as_ref()
                .is_some_and(|n| n.status == 200 && n.body == b"file b, longer\n"),
            "{:?}: the response after the refused HEAD does not parse (HEAD response \
             carried a body?): {next:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

/// limits.keepalive_requests bounds the requests on a connection; refused requests that keep
/// the connection count too.
#[test]
fn keepalive_requests_limit_counts_refused_requests() {
    let s = Server::start("workers = 1, limits = { keepalive_requests = 2 }", FILES);
    let mut c = s.connect();
    let bad = b"GET /a.txt HTTP/1.1\r\nHost: a:x\r\n\r\n";
    c.send(bad);
    let r = c.response(false);
    assert_eq!(r.status, 400);
    assert_ne!(r.header("connection"), Some("close"));
    c.send(bad);
    let r = c.response(false);
    assert_eq!(r.status, 400);
    assert_eq!(
        r.header("connection"),
        Some("close"),
        "second response on a connection limited to 2 requests must close it"
    );
    assert!(c.closed());
}
