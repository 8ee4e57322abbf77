//! The upstream response head (`proxy::response::parse`) and the fields the proxy passes on
//! (`proxy::headers::response_lines`): prefixes agree with the whole, an accepted head is
//! framed one way only, written back out it parses to the same thing, and nothing hop-by-hop
//! or framing-related is ever passed to a client.

use super::split::prefix_lengths;
use crate::proxy::headers::response_lines;
use crate::proxy::response::{parse, BodyFraming, ResponseHead};

/// Field names the proxy must never pass from an upstream to a client.
const NEVER_PASSED: &[&[u8]] = &[
    b"content-length",
    b"transfer-encoding",
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"upgrade",
    b"date",
    b"server",
];

/// Fuzz target `response_head`: `data` is the start of what an upstream sent.
pub fn response_head(data: &[u8]) {
    let whole = parse(data, 8192, false);
    for n in prefix_lengths(data.len()) {
        let v = parse(&data[..n], 8192, false);
        if v != Ok(None) {
            assert_eq!(v, whole, "prefix of {n} bytes decided differently");
        }
    }
    let Ok(Some(h)) = whole else {
        return;
    };
    assert!((100..=599).contains(&h.status));
    assert!(h.minor <= 1);
    assert!(h.head_len <= data.len());
    let head = &data[..h.head_len];
    assert!(head.ends_with(b"\r\n\r\n"), "head ends with an empty line");
    for (i, &b) in head.iter().enumerate() {
        if b == b'\n' {
            assert!(i > 0 && head[i - 1] == b'\r', "bare LF accepted");
        }
    }
    // One framing only.
    match h.framing {
        BodyFraming::Chunked => assert_eq!(h.content_length, None, "CL with chunked"),
        BodyFraming::Length(n) => assert_eq!(h.content_length, Some(n)),
        BodyFraming::Close => {
            assert_eq!(h.content_length, None);
            assert!(!h.keep_alive, "a close-delimited body keeps the connection");
        }
        BodyFraming::None => assert!(
            (100..200).contains(&h.status) || h.status == 204 || h.status == 304,
            "no body for status {}",
            h.status
        ),
    }
    // The answer to a HEAD never has a body.
    let as_head = parse(data, 8192, true);
    let Ok(Some(hh)) = as_head else {
        panic!("accepted for GET but not for HEAD: {as_head:?}");
    };
    assert_eq!(hh.framing, BodyFraming::None);
    // Written back out, it parses to the same.
    let again = serialise(&h);
    let h2 = parse(&again, 16384, false)
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("{:?} not accepted", String::from_utf8_lossy(&again)));
    assert_eq!(
        (
            h2.status,
            h2.fields().collect::<Vec<_>>(),
            h2.framing,
            h2.keep_alive
        ),
        (
            h.status,
            h.fields().collect::<Vec<_>>(),
            h.framing,
            h.keep_alive
        )
    );
    check_passed(&h);
}

fn serialise(h: &ResponseHead) -> Vec<u8> {
    let mut out = format!("HTTP/1.{} {} X\r\n", h.minor, h.status).into_bytes();
    for (n, v) in h.fields() {
        out.extend_from_slice(n);
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn check_passed(h: &ResponseHead) {
    let lines = response_lines(h);
    assert!(lines.is_empty() || lines.ends_with(b"\r\n"));
    for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        assert!(line.ends_with(b"\r"), "line without CRLF");
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .unwrap_or_else(|| panic!("line without a name: {line:?}"));
        let name = &line[..colon];
        assert!(!name.is_empty() && name.iter().all(|&b| crate::http::chunked::is_tchar(b)));
        let is_101_pair = h.status == 101
            && (name.eq_ignore_ascii_case(b"upgrade") || name.eq_ignore_ascii_case(b"connection"));
        if !is_101_pair {
            assert!(
                !NEVER_PASSED.iter().any(|n| name.eq_ignore_ascii_case(n)),
                "{} passed to the client",
                String::from_utf8_lossy(name)
            );
        }
        let value = &line[colon + 1..line.len() - 1];
        assert!(
            !value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0),
            "control byte in a passed value"
        );
    }
}
