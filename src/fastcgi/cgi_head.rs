//! The CGI response head at the start of a FastCGI STDOUT stream (RFC 3875 §6).
//!
//! The application writes header lines, an empty line, then the body. We turn the head into a
//! status and the header lines to forward; the server adds its own framing (Content-Length or
//! chunked), Date, Server and Connection, so the application's versions of those are dropped.
//! Anything we cannot read with confidence is `Malformed`, which the server answers with 502.

use thiserror::Error;

use crate::http::chunked::is_tchar;

/// The longest head we wait for; an application that has not ended its head by then is broken.
pub const MAX_HEAD: usize = 64 * 1024;

/// A parsed CGI response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgiHead {
    /// From `Status:`, else 302 when `Location:` is present, else 200.
    pub status: u16,
    /// The header lines to forward, each `Name: value\r\n`.
    pub headers: Vec<u8>,
    /// The application's Content-Length, if it sent one (not forwarded).
    pub content_length: Option<u64>,
    /// Bytes of the input taken by the head, up to and including the empty line.
    pub head_len: usize,
}

/// Why a CGI head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum HeadError {
    /// No end of head within [`MAX_HEAD`] bytes.
    #[error("CGI response head longer than 64 KiB")]
    TooLarge,
    /// A head we cannot read; the reason is for the error log.
    #[error("malformed CGI response head: {0}")]
    Malformed(&'static str),
}

/// Headers the server writes itself or that only concern one hop.
const DROPPED: &[&[u8]] = &[
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

/// Parses the head at the start of `buf`. `Ok(None)`: not complete yet, read more.
///
/// Lines may end with CRLF or a bare LF (CGI scripts often write bare LF).
pub fn parse(buf: &[u8]) -> Result<Option<CgiHead>, HeadError> {
    // Only look at what may still be head: the end must be found within MAX_HEAD bytes.
    let window = &buf[..buf.len().min(MAX_HEAD)];
    let mut lines = Vec::new();
    let mut pos = 0;
    let head_len = loop {
        let Some(nl) = memchr::memchr(b'\n', &window[pos..]) else {
            return if buf.len() >= MAX_HEAD {
                Err(HeadError::TooLarge)
            } else {
                Ok(None)
            };
        };
        let mut line = &window[pos..pos + nl];
        if let [rest @ .., b'\r'] = line {
            line = rest;
        }
        pos += nl + 1;
        if line.is_empty() {
            break pos;
        }
        lines.push(line);
    };

    let mut status = None;
    let mut location = false;
    let mut content_length = None;
    let mut headers = Vec::new();
    for line in lines {
        let colon = memchr::memchr(b':', line).ok_or(HeadError::Malformed("line without ':'"))?;
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(HeadError::Malformed("bad header name"));
        }
        let value = trim_ows(&line[colon + 1..]);
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(HeadError::Malformed("control byte in header value"));
        }
        if name.eq_ignore_ascii_case(b"status") {
            if status.is_some() {
                return Err(HeadError::Malformed("repeated Status"));
            }
            status = Some(parse_status(value)?);
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_length(value)?;
            if content_length.is_some_and(|old| old != n) {
                return Err(HeadError::Malformed("conflicting Content-Length"));
            }
            content_length = Some(n);
        } else if DROPPED.iter().any(|d| name.eq_ignore_ascii_case(d)) {
            continue;
        } else {
            location |= name.eq_ignore_ascii_case(b"location");
            headers.extend_from_slice(name);
            headers.extend_from_slice(b": ");
            headers.extend_from_slice(value);
            headers.extend_from_slice(b"\r\n");
        }
    }
    let status = status.unwrap_or(if location { 302 } else { 200 });
    Ok(Some(CgiHead {
        status,
        headers,
        content_length,
        head_len,
    }))
}

/// `404` or `404 Not Found`: three digits, 100..=999, then nothing or a space and a reason
/// (the reason is ours to choose, so it is not kept).
fn parse_status(value: &[u8]) -> Result<u16, HeadError> {
    const BAD: HeadError = HeadError::Malformed("bad Status");
    let (code, rest) = value.split_at_checked(3).ok_or(BAD)?;
    if !code.iter().all(u8::is_ascii_digit) || !(rest.is_empty() || rest[0] == b' ') {
        return Err(BAD);
    }
    let n = code.iter().fold(0u16, |n, &d| n * 10 + u16::from(d - b'0'));
    // 1xx is interim and cannot end a CGI response: forwarding it as the final status would
    // pair every later pipelined response with the wrong request.
    if !(200..=599).contains(&n) {
        return Err(BAD);
    }
    Ok(n)
}

/// Content-Length: one or more digits that fit u64.
fn parse_length(value: &[u8]) -> Result<u64, HeadError> {
    const BAD: HeadError = HeadError::Malformed("bad Content-Length");
    if value.is_empty() {
        return Err(BAD);
    }
    value.iter().try_fold(0u64, |n, &d| {
        if !d.is_ascii_digit() {
            return Err(BAD);
        }
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
            .ok_or(BAD)
    })
}

/// Strips spaces and tabs at both ends.
fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(input: &[u8]) -> CgiHead {
        parse(input).unwrap().unwrap()
    }

    fn hdrs(h: &CgiHead) -> &str {
        std::str::from_utf8(&h.headers).unwrap()
    }

    #[test]
    fn simple_crlf_and_lf() {
        let input = b"Content-Type: text/html\r\nX-A:  b c \t\r\n\r\nbody";
        let h = ok(input);
        assert_eq!(h.status, 200);
        assert_eq!(hdrs(&h), "Content-Type: text/html\r\nX-A: b c\r\n");
        assert_eq!(h.head_len, input.len() - 4);
        assert_eq!(h.content_length, None);

        let h = ok(b"Content-Type: text/plain\nX: 1\n\nbody");
        assert_eq!(hdrs(&h), "Content-Type: text/plain\r\nX: 1\r\n");
        assert_eq!(h.head_len, 31);
        // Mixed line ends.
        let h = ok(b"A: 1\r\nB: 2\n\r\n");
        assert_eq!(hdrs(&h), "A: 1\r\nB: 2\r\n");
        assert_eq!(h.head_len, 13);
    }

    #[test]
    fn incomplete_at_every_prefix() {
        let input = b"Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\n";
        for n in 0..input.len() {
            assert_eq!(parse(&input[..n]), Ok(None), "prefix {n}");
        }
        let h = ok(input);
        assert_eq!(h.status, 404);
        assert_eq!(hdrs(&h), "Content-Type: text/plain\r\n");
    }

    #[test]
    fn status_rules() {
        assert_eq!(ok(b"Status: 404\r\n\r\n").status, 404);
        assert_eq!(ok(b"status:201 Created\n\n").status, 201);
        assert_eq!(ok(b"Status: 599\n\n").status, 599);
        for bad in [
            // Interim or out of range: a CGI response ends with a final status.
            &b"Status: 100\n\n"[..],
            b"Status: 199\n\n",
            b"Status: 600\n\n",
            b"Status: 999\n\n",
            b"Status: abc\n\n",
            b"Status: 99\n\n",
            b"Status: 099\n\n",
            b"Status: 4044\n\n",
            b"Status: 404x\n\n",
            b"Status:\n\n",
            b"Status: 200\nStatus: 200\n\n",
        ] {
            assert!(
                matches!(parse(bad), Err(HeadError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn location() {
        let h = ok(b"Location: http://example.test/x\r\n\r\n");
        assert_eq!(h.status, 302);
        assert_eq!(hdrs(&h), "Location: http://example.test/x\r\n");
        let h = ok(b"Status: 301\r\nLocation: /y\r\n\r\n");
        assert_eq!(h.status, 301);
    }

    #[test]
    fn dropped_and_length() {
        let h = ok(b"Connection: close\nKeep-Alive: 5\nProxy-Connection: x\n\
            Transfer-Encoding: chunked\nTE: trailers\nTrailer: X\nUpgrade: h2c\n\
            Date: now\nServer: php\nContent-Length: 12\nContent-Length: 12\nX-Powered-By: PHP\n\n");
        assert_eq!(hdrs(&h), "X-Powered-By: PHP\r\n");
        assert_eq!(h.content_length, Some(12));
        assert_eq!(ok(b"Content-Length: 0\n\n").content_length, Some(0));
        for bad in [
            &b"Content-Length: 1x\n\n"[..],
            b"Content-Length: -1\n\n",
            b"Content-Length: \n\n",
            b"Content-Length: 1 2\n\n",
            b"Content-Length: 99999999999999999999999\n\n",
            b"Content-Length: 1\nContent-Length: 2\n\n",
        ] {
            assert!(matches!(parse(bad), Err(HeadError::Malformed(_))));
        }
    }

    #[test]
    fn malformed_lines() {
        for bad in [
            &b"no colon\n\n"[..],
            b": empty name\n\n",
            b"Bad Name: x\n\n",
            b"Name : x\n\n",
            b" folded: x\n\n",
            b"X: a\rb\n\n",
            b"X: a\x00b\n\n",
            b"X: a\x7f\n\n",
            b"X\x80: a\n\n",
        ] {
            assert!(
                matches!(parse(bad), Err(HeadError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // HTAB and obs-text in values are fine.
        assert_eq!(ok(b"X: a\tb\xe9\n\n").headers, b"X: a\tb\xe9\r\n");
    }

    #[test]
    fn empty_head() {
        let h = ok(b"\r\nbody");
        assert_eq!((h.status, h.head_len, h.headers.len()), (200, 2, 0));
        assert_eq!(ok(b"\nbody").head_len, 1);
    }

    #[test]
    fn too_large() {
        let mut big = b"X: ".to_vec();
        big.resize(MAX_HEAD - 1, b'a');
        assert_eq!(parse(&big), Ok(None));
        big.push(b'a');
        assert_eq!(parse(&big), Err(HeadError::TooLarge));
        // An end just inside the limit is fine, even with more data after it.
        let mut fits = b"X: ".to_vec();
        fits.resize(MAX_HEAD - 2, b'a');
        fits.extend_from_slice(b"\n\nmore body");
        assert_eq!(ok(&fits).head_len, MAX_HEAD);
    }
}
