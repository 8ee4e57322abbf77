//! The CGI response head: prefixes agree with the whole, what is forwarded is clean header
//! lines, the head written back out parses to the same thing, and bare LF reads like CRLF.

use super::split::prefix_lengths;
use crate::fastcgi::cgi_head::{parse, CgiHead, MAX_HEAD};
use crate::http::chunked::is_tchar;

/// Header names the parser must never forward.
const NEVER_FORWARDED: &[&[u8]] = &[
    b"status",
    b"content-length",
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"transfer-encoding",
    b"te",
    b"trailer",
    b"upgrade",
    b"date",
    b"server",
];

/// Fuzz target `cgi_head`: `data` is the start of a FastCGI STDOUT stream.
pub fn cgi_head(data: &[u8]) {
    let whole = parse(data);
    for n in prefix_lengths(data.len()) {
        let v = parse(&data[..n]);
        if v != Ok(None) {
            // An answer from a prefix is final, except for where the head ends.
            assert_eq!(v, whole, "prefix of {n} bytes decided differently");
        }
    }
    let Ok(Some(h)) = whole else {
        return;
    };
    assert!((200..=599).contains(&h.status));
    assert!(h.head_len <= data.len() && h.head_len <= MAX_HEAD);
    assert!(data[..h.head_len].ends_with(b"\n"));
    check_lines(&h);

    // Written back as a head of our own, it parses to the same status, fields and length.
    let mut again = format!("Status: {}\r\n", h.status).into_bytes();
    again.extend_from_slice(&h.headers);
    if let Some(n) = h.content_length {
        again.extend_from_slice(format!("Content-Length: {n}\r\n").as_bytes());
    }
    again.extend_from_slice(b"\r\n");
    let h2 = parse(&again)
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("{:?} not accepted", String::from_utf8_lossy(&again)));
    assert_eq!(
        CgiHead {
            head_len: h.head_len,
            ..h2
        },
        h
    );

    // Bare LF line ends read exactly like CRLF.
    let head = &data[..h.head_len];
    let mut crlf = Vec::with_capacity(head.len() * 2);
    for (i, &b) in head.iter().enumerate() {
        if b == b'\n' && (i == 0 || head[i - 1] != b'\r') {
            crlf.push(b'\r');
        }
        crlf.push(b);
    }
    if crlf.len() <= MAX_HEAD {
        let h3 = parse(&crlf)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("CRLF form refused"));
        assert_eq!(h3.head_len, crlf.len());
        assert_eq!(
            CgiHead {
                head_len: h.head_len,
                ..h3
            },
            h
        );
    }
}

/// The forwarded fields are `Name: value\r\n` lines with token names, trimmed values without
/// control bytes, and none of the names the server writes itself.
fn check_lines(h: &CgiHead) {
    let mut rest = h.headers.as_slice();
    while !rest.is_empty() {
        let end = memchr::memmem::find(rest, b"\r\n").unwrap_or_else(|| panic!("unended line"));
        let line = &rest[..end];
        rest = &rest[end + 2..];
        let colon = memchr::memchr(b':', line).unwrap_or_else(|| panic!("line without ':'"));
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        assert!(!name.is_empty() && name.iter().all(|&b| is_tchar(b)));
        assert!(!NEVER_FORWARDED.iter().any(|d| name.eq_ignore_ascii_case(d)));
        let value = value
            .strip_prefix(b" ")
            .unwrap_or_else(|| panic!("no space after ':'"));
        assert!(!value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f));
        assert_eq!(value, value.trim_ascii(), "value not trimmed");
    }
}
