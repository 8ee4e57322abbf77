//! The request head sent to an upstream, and the response fields passed to the client: the
//! hop-by-hop fields removed both ways (RFC 9110 §7.6.1, with those `Connection` names), the
//! forwarding fields set, the framing fields written by the proxy itself.

use super::response::ResponseHead;
use crate::http::request::{BodyFraming, Request};

/// Fields that belong to one connection and never cross the proxy.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// What the upstream request says beyond the client's request.
#[derive(Debug, Clone, Copy)]
pub struct Forward<'a> {
    /// The path sent instead of the request's (`proxy{ path = ... }`); the query is kept.
    pub path: Option<&'a str>,
    /// The Host sent instead of the client's.
    pub host: Option<&'a str>,
    /// Fields that replace the client's of the same names.
    pub headers: &'a [(String, String)],
    /// The client's address (X-Forwarded-For, Forwarded for=).
    pub client_ip: &'a str,
    /// "http" or "https" (X-Forwarded-Proto).
    pub proto: &'a str,
    /// The Host when the client sent none (the listener's address).
    pub default_host: &'a str,
    /// Whether the upstream connection is to be kept for another request.
    pub keep_upstream: bool,
    /// Whether `Via` gets this proxy's entry (the upstream's `via = true`).
    pub via: bool,
}

/// This proxy's pseudonym in `Via` entries (RFC 9110 §7.6.3).
pub const VIA_NAME: &str = "luahttpd";

/// Appends a `Via` line naming this proxy for a message received as HTTP/1.`minor`: after
/// the message's own Via lines, so the list keeps its order (one list across lines, RFC 9110
/// §5.3).
pub fn put_via(buf: &mut Vec<u8>, minor: u8) {
    buf.extend_from_slice(if minor == 0 {
        b"Via: 1.0 "
    } else {
        b"Via: 1.1 "
    });
    buf.extend_from_slice(VIA_NAME.as_bytes());
    buf.extend_from_slice(b"\r\n");
}

/// Whether the request asks for a protocol upgrade (`Connection: upgrade` and `Upgrade`).
pub fn wants_upgrade(req: &Request) -> bool {
    req.header("upgrade").is_some_and(|v| !v.is_empty())
        && connection_tokens(values(req, b"connection"))
            .iter()
            .any(|t| t.eq_ignore_ascii_case(b"upgrade"))
}

/// The tokens of every Connection field value.
fn connection_tokens<'a>(values: impl Iterator<Item = &'a [u8]>) -> Vec<&'a [u8]> {
    values
        .flat_map(|v| v.split(|&b| b == b','))
        .map(trim)
        .filter(|t| !t.is_empty())
        .collect()
}

/// The values of every field named `name`.
fn values<'a>(req: &'a Request, name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> {
    req.headers()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

fn is_hop_by_hop(name: &[u8], listed: &[&[u8]]) -> bool {
    HOP_BY_HOP
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h.as_bytes()))
        || listed.iter().any(|l| name.eq_ignore_ascii_case(l))
}

/// Appends the upstream request head for `req` to `buf`. Written with plain appends (no
/// formatting machinery, no allocation of its own beyond `buf`): it runs once per request.
pub fn write_request(buf: &mut Vec<u8>, req: &Request, f: &Forward<'_>) {
    let target: &str = if req.is_asterisk_form() {
        "*"
    } else {
        f.path.unwrap_or(&req.raw_path)
    };
    buf.extend_from_slice(req.method.as_str().as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(target.as_bytes());
    if let (Some(q), false) = (&req.query, req.is_asterisk_form()) {
        buf.push(b'?');
        buf.extend_from_slice(q.as_bytes());
    }
    buf.extend_from_slice(b" HTTP/1.1\r\n");
    let client_host = req.header("host").filter(|h| !h.is_empty());
    let host: &[u8] = match (f.host, client_host) {
        (Some(h), _) => h.as_bytes(),
        (None, Some(h)) => h,
        (None, None) => f.default_host.as_bytes(),
    };
    put(buf, b"Host", host);
    let listed = connection_tokens(values(req, b"connection"));
    let replaced = |name: &[u8]| {
        f.headers
            .iter()
            .any(|(n, _)| name.eq_ignore_ascii_case(n.as_bytes()))
    };
    let mut has_xff = false;
    let mut has_forwarded = false;
    for (name, value) in req.headers() {
        if is_hop_by_hop(name, &listed)
            || name.eq_ignore_ascii_case(b"host")
            || name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"x-forwarded-proto")
            || name.eq_ignore_ascii_case(b"x-forwarded-host")
            || replaced(name)
        {
            continue;
        }
        // Several lines of a list field are one list (RFC 9110 §5.3): appended in order,
        // below.
        if name.eq_ignore_ascii_case(b"x-forwarded-for") {
            has_xff = true;
        } else if name.eq_ignore_ascii_case(b"forwarded") {
            has_forwarded = true;
        } else {
            put(buf, name, value);
        }
    }
    for (name, value) in f.headers {
        put(buf, name.as_bytes(), value.as_bytes());
    }
    buf.extend_from_slice(b"X-Forwarded-For: ");
    if has_xff {
        push_list(buf, req, b"x-forwarded-for");
    }
    buf.extend_from_slice(f.client_ip.as_bytes());
    buf.extend_from_slice(b"\r\n");
    put(buf, b"X-Forwarded-Proto", f.proto.as_bytes());
    put(buf, b"X-Forwarded-Host", client_host.unwrap_or(host));
    buf.extend_from_slice(b"Forwarded: ");
    if has_forwarded {
        push_list(buf, req, b"forwarded");
    }
    buf.extend_from_slice(b"for=");
    if f.client_ip.contains(':') {
        buf.extend_from_slice(b"\"[");
        buf.extend_from_slice(f.client_ip.as_bytes());
        buf.extend_from_slice(b"]\"");
    } else {
        buf.extend_from_slice(f.client_ip.as_bytes());
    }
    buf.extend_from_slice(b";proto=");
    buf.extend_from_slice(f.proto.as_bytes());
    if let Some(h) = client_host.filter(|h| h.iter().all(|&b| b.is_ascii_graphic() && b != b'"')) {
        buf.extend_from_slice(b";host=\"");
        buf.extend_from_slice(h);
        buf.push(b'"');
    }
    buf.extend_from_slice(b"\r\n");
    if f.via {
        put_via(
            buf,
            u8::from(req.version != crate::http::request::Version::Http10),
        );
    }
    match req.body {
        BodyFraming::None => {}
        BodyFraming::Length(n) => {
            buf.extend_from_slice(b"Content-Length: ");
            push_decimal(buf, n);
            buf.extend_from_slice(b"\r\n");
        }
        BodyFraming::Chunked => buf.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
    }
    if wants_upgrade(req) {
        if let Some(u) = req.header("upgrade") {
            put(buf, b"Upgrade", u);
        }
        buf.extend_from_slice(b"Connection: upgrade\r\n");
    } else if !f.keep_upstream {
        buf.extend_from_slice(b"Connection: close\r\n");
    }
    buf.extend_from_slice(b"\r\n");
}

/// Appends every value of the list field `name`, each followed by ", ".
fn push_list(buf: &mut Vec<u8>, req: &Request, name: &[u8]) {
    for v in values(req, name).filter(|v| !v.is_empty()) {
        buf.extend_from_slice(v);
        buf.extend_from_slice(b", ");
    }
}

/// Appends `n` in decimal.
fn push_decimal(buf: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[i..]);
}

/// The upstream's response fields to pass to the client, as lines ending in CRLF: without
/// hop-by-hop fields, framing (the proxy frames the body itself), Date and Server (the
/// proxy's own go out). For a 101 the `Upgrade` field passes, with `Connection: upgrade`.
pub fn response_lines(head: &ResponseHead) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    response_lines_into(&mut out, head);
    out
}

/// As [`response_lines`], appended to `out` (a buffer the caller reuses).
pub fn response_lines_into(out: &mut Vec<u8>, head: &ResponseHead) {
    let listed = connection_tokens(
        head.fields()
            .filter(|(n, _)| n.eq_ignore_ascii_case(b"connection"))
            .map(|(_, v)| v),
    );
    for (name, value) in head.fields() {
        if is_hop_by_hop(name, &listed)
            || name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"date")
            || name.eq_ignore_ascii_case(b"server")
        {
            continue;
        }
        put(out, name, value);
    }
    if head.status == 101 {
        if let Some(u) = head.field("upgrade") {
            put(out, b"Upgrade", u);
        }
        out.extend_from_slice(b"Connection: upgrade\r\n");
    }
}

fn put(buf: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    buf.extend_from_slice(name);
    buf.extend_from_slice(b": ");
    buf.extend_from_slice(value);
    buf.extend_from_slice(b"\r\n");
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |e| e + 1);
    &v[start..end.max(start)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::parse;

    fn fwd<'a>(headers: &'a [(String, String)]) -> Forward<'a> {
        Forward {
            path: None,
            host: None,
            headers,
            client_ip: "10.0.0.9",
            proto: "http",
            default_host: "127.0.0.1:8080",
            keep_upstream: true,
            via: false,
        }
    }

    fn text(b: &[u8]) -> String {
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[test]
    fn hop_by_hop_goes_forwarding_fields_come() {
        let raw = b"POST /a%20b?x=1 HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive, X-Secret\r\n\
X-Secret: s\r\nKeep-Alive: 5\r\nTE: trailers\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\n\
Content-Length: 3\r\nAccept: */*\r\n\r\n";
        let req = parse(raw, 8192).unwrap().unwrap();
        let mut buf = Vec::new();
        write_request(&mut buf, &req, &fwd(&[]));
        let s = text(&buf);
        assert!(
            s.starts_with("POST /a%20b?x=1 HTTP/1.1\r\nHost: example.com\r\n"),
            "{s}"
        );
        for gone in ["X-Secret", "Keep-Alive", "TE:", "https", "Connection"] {
            assert!(!s.contains(gone), "{gone} in {s}");
        }
        assert!(s.contains("Accept: */*\r\n"));
        assert!(s.contains("X-Forwarded-For: 1.2.3.4, 10.0.0.9\r\n"));
        assert!(s.contains("X-Forwarded-Proto: http\r\n"));
        assert!(s.contains("X-Forwarded-Host: example.com\r\n"));
        assert!(s.contains("Forwarded: for=10.0.0.9;proto=http;host=\"example.com\"\r\n"));
        assert!(s.contains("Content-Length: 3\r\n"));
        assert!(s.ends_with("\r\n\r\n"));
    }

    #[test]
    fn decision_sets_path_host_and_headers() {
        let raw = b"GET /api/users?id=2 HTTP/1.1\r\nHost: example.com\r\nX-User: client\r\n\r\n";
        let req = parse(raw, 8192).unwrap().unwrap();
        let headers = vec![("X-User".to_string(), "route".to_string())];
        let f = Forward {
            path: Some("/users"),
            host: Some("backend.local"),
            keep_upstream: false,
            ..fwd(&headers)
        };
        let mut buf = Vec::new();
        write_request(&mut buf, &req, &f);
        let s = text(&buf);
        assert!(
            s.starts_with("GET /users?id=2 HTTP/1.1\r\nHost: backend.local\r\n"),
            "{s}"
        );
        assert!(
            s.contains("X-User: route\r\n") && !s.contains("client"),
            "{s}"
        );
        assert!(s.contains("X-Forwarded-Host: example.com\r\n"));
        assert!(s.contains("Connection: close\r\n"));
    }

    #[test]
    fn upgrade_passes_and_chunked_stays_chunked() {
        let raw =
            b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
        let req = parse(raw, 8192).unwrap().unwrap();
        assert!(wants_upgrade(&req));
        let mut buf = Vec::new();
        write_request(&mut buf, &req, &fwd(&[]));
        let s = text(&buf);
        assert!(
            s.contains("Upgrade: websocket\r\nConnection: upgrade\r\n"),
            "{s}"
        );
        let raw = b"PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
        let req = parse(raw, 8192).unwrap().unwrap();
        let mut buf = Vec::new();
        write_request(&mut buf, &req, &fwd(&[]));
        let s = text(&buf);
        assert_eq!(
            s.matches("Transfer-Encoding: chunked\r\n").count(),
            1,
            "{s}"
        );
    }

    #[test]
    fn via_is_appended_after_the_clients_own() {
        let raw = b"GET / HTTP/1.0\r\nHost: h\r\nVia: 1.1 edge\r\n\r\n";
        let req = parse(raw, 8192).unwrap().unwrap();
        let mut buf = Vec::new();
        write_request(
            &mut buf,
            &req,
            &Forward {
                via: true,
                ..fwd(&[])
            },
        );
        let s = text(&buf);
        let edge = s
            .find("Via: 1.1 edge\r\n")
            .expect("the client's Via passes");
        let ours = s
            .find("Via: 1.0 luahttpd\r\n")
            .expect("ours, as received (1.0)");
        assert!(edge < ours, "{s}");
        let mut buf = Vec::new();
        write_request(&mut buf, &req, &fwd(&[]));
        assert!(!text(&buf).contains("luahttpd"), "off by default");
    }

    #[test]
    fn response_fields_lose_hop_by_hop_and_framing() {
        let raw = b"HTTP/1.1 200 OK\r\nDate: x\r\nServer: up\r\nConnection: X-Up\r\nX-Up: 1\r\n\
Content-Length: 2\r\nSet-Cookie: a=1\r\nKeep-Alive: timeout=5\r\n\r\n";
        let head = super::super::response::parse(raw, 8192, false)
            .unwrap()
            .unwrap();
        let s = text(&response_lines(&head));
        assert_eq!(s, "Set-Cookie: a=1\r\n");
    }
}
