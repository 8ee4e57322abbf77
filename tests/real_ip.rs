//! The real client address: X-Forwarded-For from trusted and untrusted peers (the rightmost
//! untrusted entry wins), and the PROXY protocol v1 and v2 on a marked listener, believed from
//! a trusted peer only. Checked in `req.remote_addr`, the access log and FastCGI's REMOTE_ADDR.

mod common;
mod fcgi_common;

use std::path::Path;
use std::time::Duration;

use common::*;

const ROUTE: &str =
    "route(function(req)\n  if req.path == '/who' then return respond(200, req.remote_addr) end\nend)\n";

/// A server with the FastCGI test backend, `server_extra` in server{}, and the /who route.
fn start(server_extra: &str) -> fcgi_common::Fcgi {
    let dir = fcgi_common::site_dir();
    let extra = format!(r#"access_log = "access.log", {server_extra}"#);
    let o = fcgi_common::Opts {
        server_extra: &extra,
        ..Default::default()
    };
    let config = fcgi_common::config_text(dir.path(), &o) + ROUTE;
    fcgi_common::Fcgi::start_in(dir, &config)
}

fn who(addr: &str, extra_head: &str) -> String {
    let mut c = Client::connect(addr);
    c.send(
        format!("GET /who HTTP/1.1\r\nHost: t\r\n{extra_head}Connection: close\r\n\r\n").as_bytes(),
    );
    let r = c.response(false);
    assert_eq!(r.status, 200);
    r.text()
}

fn remote_addr_param(addr: &str, extra_head: &str) -> String {
    params(addr, b"", extra_head)["REMOTE_ADDR"].clone()
}

/// The FastCGI params of a request sent after `preamble` (a PROXY header, or nothing).
fn params(
    addr: &str,
    preamble: &[u8],
    extra_head: &str,
) -> std::collections::BTreeMap<String, String> {
    let mut c = fcgi_common::Conn::connect(addr);
    c.send(preamble);
    c.send(
        format!(
            "GET /t.php?mode=params HTTP/1.1\r\nHost: t\r\n{extra_head}Connection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    let r = c.response(false);
    assert_eq!(r.status, 200);
    r.params()
}

fn access_log_has(path: &Path, needle: &str) {
    wait_for(
        &format!("an access log line starting with {needle}"),
        Duration::from_secs(5),
        || {
            std::fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .any(|l| l.starts_with(needle))
        },
    );
}

#[test]
fn forwarded_for_from_a_trusted_peer_gives_the_rightmost_untrusted_address() {
    let f = start(r#"trusted_proxies = { "127.0.0.1", "10.0.0.0/8" }"#);
    let xff = "X-Forwarded-For: 198.51.100.1, 203.0.113.7, 10.1.2.3\r\n";
    assert_eq!(who(f.addr(), xff), "203.0.113.7");
    assert_eq!(remote_addr_param(f.addr(), xff), "203.0.113.7");
    access_log_has(&f.dir().join("access.log"), "203.0.113.7 - - [");
    // Without the header, or with one that is all trusted hops, or garbage.
    assert_eq!(who(f.addr(), ""), "127.0.0.1");
    assert_eq!(
        who(f.addr(), "X-Forwarded-For: 10.9.9.9, 10.0.0.1\r\n"),
        "10.9.9.9"
    );
    assert_eq!(who(f.addr(), "X-Forwarded-For: not-an-ip\r\n"), "127.0.0.1");
    // Two header lines are one list: the last line holds the nearest hop.
    let two = "X-Forwarded-For: 198.51.100.1\r\nX-Forwarded-For: 203.0.113.9, 10.0.0.2\r\n";
    assert_eq!(who(f.addr(), two), "203.0.113.9");
    let two = "X-Forwarded-For: 198.51.100.1, 10.0.0.3\r\nX-Forwarded-For: 10.0.0.2\r\n";
    assert_eq!(who(f.addr(), two), "198.51.100.1");
    // Per request: the next request on the same connection without the header is the peer.
    let mut c = Client::connect(f.addr());
    c.send(format!("GET /who HTTP/1.1\r\nHost: t\r\n{xff}\r\n").as_bytes());
    assert_eq!(c.response(false).text(), "203.0.113.7");
    c.send(b"GET /who HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(c.response(false).text(), "127.0.0.1");
}

#[test]
fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    let f = start(r#"trusted_proxies = { "10.0.0.0/8" }"#);
    let xff = "X-Forwarded-For: 203.0.113.7\r\n";
    assert_eq!(who(f.addr(), xff), "127.0.0.1");
    assert_eq!(remote_addr_param(f.addr(), xff), "127.0.0.1");
}

/// The PROXY listener's address (the second `listening on` line).
fn proxy_listener(f: &fcgi_common::Fcgi) -> String {
    let mut addr = String::new();
    wait_for("two listeners", Duration::from_secs(5), || {
        let log = f.server.log_text();
        let found: Vec<&str> = log
            .lines()
            .filter_map(|l| l.split("listening on ").nth(1))
            .collect();
        if let Some(a) = found.iter().find(|a| a.starts_with("127.0.0.2:")) {
            addr = a.trim().to_string();
        }
        !addr.is_empty()
    });
    addr
}

fn v2_tcp4(src: [u8; 4], port: u16) -> Vec<u8> {
    let mut b = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    b.extend_from_slice(&[0x21, 0x11, 0, 12]);
    b.extend_from_slice(&src);
    b.extend_from_slice(&[127, 0, 0, 2]);
    b.extend_from_slice(&port.to_be_bytes());
    b.extend_from_slice(&80u16.to_be_bytes());
    b
}

fn over_proxy(addr: &str, header: &[u8], path: &str) -> Option<Response> {
    let mut c = Client::connect(addr);
    c.send(header);
    c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes());
    c.try_response(false)
}

const PROXY_LISTEN: &str =
    r#"listen = { "127.0.0.1:0", { "127.0.0.2:0", proxy_protocol = true } }"#;

#[test]
fn proxy_protocol_v1_and_v2_from_a_trusted_peer() {
    // No trusted_proxies: the listener's mark is the trust.
    let f = start(PROXY_LISTEN);
    let p = proxy_listener(&f);
    let v1 = b"PROXY TCP4 192.0.2.1 127.0.0.2 5555 80\r\n";
    let r = over_proxy(&p, v1, "/who").expect("an answer after a v1 header");
    assert_eq!(r.text(), "192.0.2.1");
    let r = over_proxy(&p, &v2_tcp4([192, 0, 2, 7], 4444), "/who").expect("v2");
    assert_eq!(r.text(), "192.0.2.7");
    let params = params(&p, &v2_tcp4([192, 0, 2, 8], 1), "");
    assert_eq!(params["REMOTE_ADDR"], "192.0.2.8");
    assert_eq!(params["REMOTE_PORT"], "1");
    access_log_has(&f.dir().join("access.log"), "192.0.2.1 - - [");
    // A connection without the header, or with a broken one, is closed unanswered.
    assert!(over_proxy(&p, b"", "/who").is_none());
    assert!(over_proxy(&p, b"PROXY TCP4 nonsense\r\n", "/who").is_none());
    // The plain listener takes no header.
    assert_eq!(who(f.addr(), ""), "127.0.0.1");
}

#[test]
fn proxy_protocol_from_an_untrusted_peer_keeps_the_socket_address() {
    let f = start(&format!(
        r#"{PROXY_LISTEN}, trusted_proxies = {{ "10.0.0.0/8" }}"#
    ));
    let p = proxy_listener(&f);
    let c = std::net::TcpStream::connect(&p).unwrap();
    let own = c.local_addr().unwrap().ip().to_string();
    drop(c);
    let r = over_proxy(&p, b"PROXY TCP4 192.0.2.1 127.0.0.2 5555 80\r\n", "/who").expect("v1");
    assert_eq!(r.text(), own);
    let r = over_proxy(&p, &v2_tcp4([192, 0, 2, 7], 4444), "/who").expect("v2");
    assert_eq!(r.text(), own);
}

#[test]
fn a_proxy_header_may_arrive_in_pieces_and_is_bounded_by_the_head_timeout() {
    let f = start(&format!("{PROXY_LISTEN}, timeouts = {{ read_idle = 1 }}"));
    let p = proxy_listener(&f);
    // v2 split inside the signature and inside the address block, then the request.
    let h = v2_tcp4([198, 51, 100, 4], 7);
    let mut c = Client::connect(&p);
    for piece in [&h[..5], &h[5..18], &h[18..]] {
        c.send(piece);
        std::thread::sleep(Duration::from_millis(50));
    }
    c.send(b"GET /who HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(c.response(false).text(), "198.51.100.4");
    // Half a header and silence: closed by the head timeout, unanswered.
    let mut c = Client::connect(&p);
    c.send(b"PROXY TCP4 192.0.2.1 ");
    let t0 = std::time::Instant::now();
    assert!(c.try_response(false).is_none());
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(8),
        "{took:?}"
    );
}
