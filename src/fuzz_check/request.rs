//! The request head: no panic, the accepted head's invariants, re-serialisation to the same
//! meaning, prefix-by-prefix parsing agreeing with the whole, and the head size limit.

use super::path::check_beneath;
use super::split::prefix_lengths;
use crate::http::request::{parse, BodyFraming, Method, Request, RequestError, Version};

/// The head size limit the checks parse with (the default `limits.header_bytes`).
pub(crate) const MAX_HEAD: usize = 8192;

/// What a request means, everything but where it sat in the input.
#[derive(Debug, PartialEq, Eq)]
struct Meaning {
    method: Method,
    version: Version,
    target: String,
    raw_path: String,
    query: Option<String>,
    path: String,
    host: Option<String>,
    host_port: Option<u16>,
    body: BodyFraming,
    keep_alive: bool,
    expect_continue: bool,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
}

fn meaning(r: &Request) -> Meaning {
    Meaning {
        method: r.method,
        version: r.version,
        target: r.target.to_string(),
        raw_path: r.raw_path.to_string(),
        query: r.query.as_deref().map(str::to_owned),
        path: r.path.to_string(),
        host: r.host.as_deref().map(str::to_owned),
        host_port: r.host_port,
        body: r.body,
        keep_alive: r.keep_alive,
        expect_continue: r.expect_continue,
        headers: r.headers().map(|(n, v)| (n.to_vec(), v.to_vec())).collect(),
    }
}

/// A refusal as the client sees it: everything but the reason, which is only for the error
/// log (a prefix may be refused for another reason than the whole, with the same answer).
#[derive(Debug, PartialEq, Eq)]
struct Refusal {
    status: u16,
    close: bool,
    head_len: usize,
    head_method: bool,
    version: Version,
}

/// A parse result reduced to something comparable.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Incomplete,
    Accepted(Meaning, usize),
    Refused(Refusal),
}

fn verdict(r: Result<Option<Request>, RequestError>) -> Verdict {
    match r {
        Ok(None) => Verdict::Incomplete,
        Ok(Some(r)) => Verdict::Accepted(meaning(&r), r.head_len),
        Err(e) => Verdict::Refused(Refusal {
            status: e.status,
            close: e.close,
            head_len: e.head_len,
            head_method: e.head_method,
            version: e.version,
        }),
    }
}

/// Writes a parsed request back as a canonical head: request line, one field per line, CRLF.
pub(crate) fn serialise(r: &Request) -> Vec<u8> {
    let mut out = Vec::with_capacity(r.head_len + 16);
    out.extend_from_slice(r.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(r.target.as_bytes());
    out.push(b' ');
    out.extend_from_slice(r.version.as_str().as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in r.headers() {
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Fuzz target `request_head`: `data` is the bytes a client sent.
pub fn request_head(data: &[u8]) {
    let whole = parse(data, MAX_HEAD);
    let accepted_len = match &whole {
        Ok(Some(r)) => {
            check_accepted(data, r);
            Some(r.head_len)
        }
        Ok(None) => {
            assert!(data.len() < MAX_HEAD, "incomplete at the size limit");
            None
        }
        Err(e) => {
            check_refusal(data, e);
            None
        }
    };
    let whole = verdict(whole);

    // Fed as it arrives (the worker re-parses its growing buffer): every prefix is either
    // still incomplete or already gives the final answer.
    for n in prefix_lengths(data.len()) {
        let v = verdict(parse(&data[..n], MAX_HEAD));
        if v != Verdict::Incomplete {
            assert_eq!(v, whole, "prefix of {n} bytes decided differently");
        }
        if accepted_len.is_some_and(|len| n < len) {
            assert_eq!(v, Verdict::Incomplete, "accepted head decided at {n} bytes");
        }
    }

    // A smaller limit refuses exactly the heads longer than it.
    if let Some(len) = accepted_len {
        for limit in [len.saturating_sub(1).max(1), len, len + 1] {
            let v = verdict(parse(data, limit));
            if len > limit {
                match v {
                    Verdict::Refused(e) => assert_eq!((e.status, e.close), (431, true)),
                    other => panic!("head of {len} bytes with limit {limit}: {other:?}"),
                }
            } else {
                assert_eq!(v, whole, "limit {limit} changed the verdict");
            }
        }
    }
}

/// Invariants of an accepted head, and parse(serialise(parse(x))) == parse(x).
fn check_accepted(data: &[u8], r: &Request) {
    assert!(r.head_len > 0 && r.head_len <= data.len());
    assert!(data[..r.head_len].ends_with(b"\r\n\r\n"));
    assert!(r.path.starts_with('/'));
    check_beneath(&r.path);
    if r.version == Version::Http11 {
        assert!(r.headers().any(|(n, _)| n.eq_ignore_ascii_case(b"host")));
    }
    if r.expect_continue {
        assert_eq!(r.version, Version::Http11);
    }
    match r.body {
        BodyFraming::Length(n) => assert!(n > 0),
        BodyFraming::Chunked => assert_eq!(r.version, Version::Http11),
        BodyFraming::None => {}
    }

    let again = serialise(r);
    match parse(&again, again.len().max(MAX_HEAD)) {
        Ok(Some(r2)) => {
            assert_eq!(
                meaning(&r2),
                meaning(r),
                "re-serialised head means something else"
            );
            assert_eq!(r2.head_len, again.len());
        }
        other => panic!(
            "re-serialised head {:?} not accepted: {other:?}",
            String::from_utf8_lossy(&again)
        ),
    }
}

/// Invariants of a refusal.
fn check_refusal(data: &[u8], e: &RequestError) {
    assert!(
        matches!(e.status, 400 | 417 | 431 | 501 | 505),
        "unexpected status {}",
        e.status
    );
    if e.close {
        assert_eq!(e.head_len, 0);
        assert!(!e.head_method);
    } else {
        // A refusal that keeps the connection must know exactly where the next request starts.
        assert!(e.head_len > 0 && e.head_len <= data.len());
        assert!(data[..e.head_len].ends_with(b"\r\n\r\n"));
        assert!(matches!(e.status, 400 | 417));
    }
}
