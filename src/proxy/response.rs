//! A sans-IO, strict parser of an upstream's HTTP/1.x response head.
//!
//! The upstream is parsed as strictly as a client's request is, because a response framed one
//! way by us and another way by the upstream would let the upstream (or whoever controls part
//! of its output) smuggle a response into the next client's: conflicting `Content-Length`,
//! `Content-Length` with `Transfer-Encoding`, a transfer coding other than `chunked`, a bare LF,
//! a status line that is not `HTTP/1.x NNN`, control bytes in values → an error (502 and the
//! connection is not reused). Framing follows RFC 9112 §6.3: a response to HEAD, any 1xx, 204
//! and 304 has no body whatever the upstream sends.

use std::mem::MaybeUninit;

/// The most header fields accepted in a response head.
pub const MAX_HEADERS: usize = 100;

/// Why a response head is refused (always answered 502, the connection dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseError {
    /// httparse could not read it (bad status line, bad field syntax, obs-fold…).
    Malformed,
    /// Not HTTP/1.0 or HTTP/1.1.
    Version,
    /// A status outside 100..=599.
    Status,
    /// A line ending in LF without CR.
    BareLf,
    /// Larger than the limit, or more than [`MAX_HEADERS`] fields.
    TooLarge,
    /// Two Content-Length values that differ, or one that is not a number.
    BadLength,
    /// Content-Length and Transfer-Encoding together.
    LengthAndChunked,
    /// A Transfer-Encoding other than exactly `chunked`.
    BadTransferEncoding,
}

impl ResponseError {
    /// A short reason for the error log.
    pub fn reason(self) -> &'static str {
        match self {
            ResponseError::Malformed => "malformed response head",
            ResponseError::Version => "response is not HTTP/1.x",
            ResponseError::Status => "response status out of range",
            ResponseError::BareLf => "bare LF in response head",
            ResponseError::TooLarge => "response head too large",
            ResponseError::BadLength => "bad or conflicting Content-Length",
            ResponseError::LengthAndChunked => "Content-Length with Transfer-Encoding",
            ResponseError::BadTransferEncoding => "Transfer-Encoding other than chunked",
        }
    }
}

/// How the response body is framed (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body: HEAD, 1xx, 204, 304 (whatever the fields say).
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked.
    Chunked,
    /// Until the upstream closes the connection.
    Close,
}

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The status code.
    pub status: u16,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    /// The head's length in the input (up to and including the empty line).
    pub head_len: usize,
    /// Every field, in order: name and (trimmed) value as offsets into `raw` (two
    /// allocations per head instead of two per field).
    spans: Vec<[u32; 4]>,
    /// The head's bytes.
    raw: Vec<u8>,
    /// Body framing.
    pub framing: BodyFraming,
    /// The Content-Length value, even where the body is None (a HEAD answer passes it on).
    pub content_length: Option<u64>,
    /// Whether the upstream keeps the connection open after this response.
    pub keep_alive: bool,
}

impl ResponseHead {
    /// Whether the status is an interim 1xx other than 101.
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }

    /// The value of the first field named `name` (ASCII case-insensitive).
    pub fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// Every field, in order, as (name, value).
    pub fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.spans.iter().map(|&[ns, ne, vs, ve]| {
            let at = |a: u32, b: u32| self.raw.get(a as usize..b as usize).unwrap_or(&[]);
            (at(ns, ne), at(vs, ve))
        })
    }
}

/// Parses a response head from the start of `buf`: `Ok(None)` while incomplete (and under
/// `max_head`). `head_request` says the request was HEAD (then there is no body).
pub fn parse(
    buf: &[u8],
    max_head: usize,
    head_request: bool,
) -> Result<Option<ResponseHead>, ResponseError> {
    // A response starts with "HTTP/1." and nothing else: no leading empty lines (httparse
    // skips them; RFC 9112 allows that before a request only), so a start that cannot become
    // one is refused at once, whatever follows (the same answer for every prefix).
    let n = buf.len().min(7);
    if buf[..n] != b"HTTP/1."[..n] {
        return Err(ResponseError::Version);
    }
    let mut slots = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let mut config = httparse::ParserConfig::default();
    // Strict: no obs-fold, no spaces before the colon, no multiple spaces in the status line.
    config.allow_obsolete_multiline_headers_in_responses(false);
    config.allow_spaces_after_header_name_in_responses(false);
    config.allow_multiple_spaces_in_response_status_delimiters(false);
    let head_len = match config.parse_response_with_uninit_headers(&mut resp, buf, &mut slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() >= max_head {
                return Err(ResponseError::TooLarge);
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(ResponseError::TooLarge),
        Err(httparse::Error::Version) => return Err(ResponseError::Version),
        Err(_) => return Err(ResponseError::Malformed),
    };
    if head_len > max_head {
        return Err(ResponseError::TooLarge);
    }
    let head = &buf[..head_len];
    if !every_lf_ends_a_crlf(head) {
        return Err(ResponseError::BareLf);
    }
    let (Some(minor), Some(status)) = (resp.version, resp.code) else {
        return Err(ResponseError::Malformed);
    };
    if !(100..=599).contains(&status) {
        return Err(ResponseError::Status);
    }
    let mut spans = Vec::with_capacity(resp.headers.len());
    // Where a slice of `buf` starts in it (httparse's fields and their trimmed values are).
    let offset = |part: &[u8]| (part.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize) as u32;
    let mut length: Option<u64> = None;
    let mut te = false;
    let mut te_chunked_last = false;
    let mut close = false;
    let mut keep_alive_token = false;
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        // httparse refused control bytes (but HTAB) and DEL in values already, and cut the
        // whitespace around them: scanning each value again here was 8% of a proxied 1 KiB
        // request's instructions.
        let value = h.value;
        if name.eq_ignore_ascii_case(b"content-length") {
            // A list "5, 5" of one value is one value (RFC 9110 §8.6); anything else conflicts.
            for part in value.split(|&b| b == b',') {
                let n = parse_length(trim(part)).ok_or(ResponseError::BadLength)?;
                match length {
                    Some(m) if m != n => return Err(ResponseError::BadLength),
                    _ => length = Some(n),
                }
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            for part in value.split(|&b| b == b',') {
                let coding = trim(part);
                if coding.is_empty() {
                    continue;
                }
                if te_chunked_last || !coding.eq_ignore_ascii_case(b"chunked") {
                    // Only one chunked, and nothing else: a gzip, chunked pair or a chunked
                    // chunked pair is framed differently by different parsers.
                    return Err(ResponseError::BadTransferEncoding);
                }
                te_chunked_last = true;
            }
            te = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for part in value.split(|&b| b == b',') {
                let t = trim(part);
                close |= t.eq_ignore_ascii_case(b"close");
                keep_alive_token |= t.eq_ignore_ascii_case(b"keep-alive");
            }
        }
        let (n, v) = (offset(name), offset(value));
        spans.push([n, n + name.len() as u32, v, v + value.len() as u32]);
    }
    if te && !te_chunked_last {
        return Err(ResponseError::BadTransferEncoding);
    }
    if te && length.is_some() {
        return Err(ResponseError::LengthAndChunked);
    }
    let no_body = head_request || (100..200).contains(&status) || status == 204 || status == 304;
    let framing = if no_body {
        BodyFraming::None
    } else if te {
        BodyFraming::Chunked
    } else if let Some(n) = length {
        BodyFraming::Length(n)
    } else {
        BodyFraming::Close
    };
    let keep_alive = !close && framing != BodyFraming::Close && (minor == 1 || keep_alive_token);
    Ok(Some(ResponseHead {
        status,
        minor,
        head_len,
        spans,
        raw: buf[..head_len].to_vec(),
        framing,
        content_length: length,
        keep_alive,
    }))
}

/// Whether each LF in `head` follows a CR: one branch-free pass over (byte, next byte) pairs,
/// which the compiler vectorises (a memchr per line cost ten calls per head).
fn every_lf_ends_a_crlf(head: &[u8]) -> bool {
    if head.first() == Some(&b'\n') {
        return false;
    }
    let Some(rest) = head.get(1..) else {
        return true;
    };
    let bare = head.iter().zip(rest).fold(false, |bare, (&prev, &cur)| {
        bare | ((cur == b'\n') & (prev != b'\r'))
    });
    !bare
}

fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
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

    fn ok(s: &str) -> ResponseHead {
        parse(s.as_bytes(), 8192, false).unwrap().unwrap()
    }

    fn err(s: &str) -> ResponseError {
        parse(s.as_bytes(), 8192, false).unwrap_err()
    }

    #[test]
    fn frames_by_length_chunked_or_close() {
        let h = ok("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello");
        assert_eq!(h.status, 200);
        assert_eq!(h.framing, BodyFraming::Length(5));
        assert_eq!(h.head_len, 46);
        assert!(h.keep_alive);
        assert_eq!(h.field("x-a"), Some(&b"b"[..]));
        let h = ok("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(h.framing, BodyFraming::Chunked);
        let h = ok("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(h.framing, BodyFraming::Close);
        assert!(!h.keep_alive);
        let h = ok("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n");
        assert!(!h.keep_alive, "1.0 without keep-alive closes");
        let h = ok("HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n");
        assert!(h.keep_alive);
        let h = ok("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n");
        assert!(!h.keep_alive);
        let h = ok("HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n");
        assert_eq!(h.framing, BodyFraming::Length(7));
    }

    #[test]
    fn control_bytes_in_a_value_are_refused_and_blanks_around_it_cut() {
        for bad in ["a\x01b", "a\x7fb", "a\x00b", "a\rb", "\x1b[0m"] {
            let head = format!("HTTP/1.1 200 OK\r\nX-A: {bad}\r\nContent-Length: 0\r\n\r\n");
            assert_eq!(err(&head), ResponseError::Malformed, "{bad:?}");
        }
        let h = ok("HTTP/1.1 200 OK\r\nX-A: \t a\tb \t\r\nContent-Length:  3 \r\n\r\n");
        assert_eq!(h.field("x-a"), Some(&b"a\tb"[..]));
        assert_eq!(h.framing, BodyFraming::Length(3));
        let h = ok("HTTP/1.1 200 OK\r\nX-A: café\r\n\r\n");
        assert_eq!(h.field("x-a"), Some("café".as_bytes()));
    }

    #[test]
    fn head_1xx_204_304_have_no_body() {
        let h = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n", 8192, true)
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, BodyFraming::None);
        assert_eq!(h.content_length, Some(50));
        assert!(h.keep_alive);
        for s in [
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n",
            "HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 100 Continue\r\n\r\n",
        ] {
            assert_eq!(ok(s).framing, BodyFraming::None, "{s}");
        }
        assert!(ok("HTTP/1.1 100 Continue\r\n\r\n").is_interim());
        assert!(!ok("HTTP/1.1 101 Switching Protocols\r\n\r\n").is_interim());
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        assert_eq!(
            err("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
            ResponseError::BadLength
        );
        assert_eq!(
            err("HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n"),
            ResponseError::BadLength
        );
        assert_eq!(
            err("HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n"),
            ResponseError::BadLength
        );
        assert_eq!(
            err("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
            ResponseError::LengthAndChunked
        );
        for te in ["gzip", "chunked, gzip", "chunked, chunked", "xchunked"] {
            assert_eq!(
                err(&format!(
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: {te}\r\n\r\n"
                )),
                ResponseError::BadTransferEncoding,
                "{te}"
            );
        }
    }

    #[test]
    fn bad_lines_and_versions_are_refused() {
        assert_eq!(
            err("HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n"),
            ResponseError::BareLf
        );
        assert_eq!(
            err("HTTP/1.1 200 OK\r\nContent-Length: 0\n\r\n"),
            ResponseError::BareLf
        );
        assert_eq!(
            err("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\n"),
            ResponseError::BareLf
        );
        assert_eq!(err("HTTP/2 200 OK\r\n\r\n"), ResponseError::Version);
        assert_eq!(err("HTTP/2.0 200 OK\r\n\r\n"), ResponseError::Version);
        assert_eq!(err("ICY 200 OK\r\n\r\n"), ResponseError::Version);
        assert_eq!(
            parse(b"SSH-2.0", 8192, false).unwrap_err(),
            ResponseError::Version
        );
        // Leading empty lines are no response (httparse would skip them).
        assert_eq!(err("\r\nHTTP/1.1 200 OK\r\n\r\n"), ResponseError::Version);
        assert_eq!(
            parse(b"\n", 8192, false).unwrap_err(),
            ResponseError::Version
        );
        assert_eq!(err("HTTP/1.1 099 Low\r\n\r\n"), ResponseError::Status);
        assert_eq!(err("HTTP/1.1 600 High\r\n\r\n"), ResponseError::Status);
        assert_eq!(err("HTTP/1.1 2000 OK\r\n\r\n"), ResponseError::Malformed);
        assert_eq!(
            err("HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n"),
            ResponseError::Malformed,
            "obs-fold"
        );
        assert_eq!(
            err("HTTP/1.1 200 OK\r\nContent-Length : 1\r\n\r\n"),
            ResponseError::Malformed
        );
    }

    #[test]
    fn incomplete_waits_and_large_is_refused() {
        for cut in [1, 5, 12, 20, 30] {
            let s = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
            assert_eq!(parse(&s[..cut], 8192, false), Ok(None), "{cut}");
        }
        let big = format!("HTTP/1.1 200 OK\r\nX: {}\r\n", "a".repeat(200));
        assert_eq!(
            parse(big.as_bytes(), 100, false).unwrap_err(),
            ResponseError::TooLarge
        );
    }
}
