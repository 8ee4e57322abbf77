//! Differential check of the request head: our verdict against httparse's, with our stricter
//! rules written out a second time, independently, as the oracle below. Any disagreement is
//! then either one of these documented rules or a bug.
//!
//! The rules we add to httparse (see `src/http/request.rs` and README "HTTP strictness"):
//! - 431 for a head over the limit or more than `MAX_HEADERS` fields;
//! - 400 for a bare LF anywhere in the head;
//! - 501 for CONNECT and for methods we do not know (names are case-sensitive);
//! - 505 for a well-formed version other than 1.0 / 1.1 (and we wait, rather than refuse,
//!   while such a request line is still arriving);
//! - framing (400, or 501 for an unknown transfer coding): Transfer-Encoding with
//!   Content-Length, Transfer-Encoding in HTTP/1.0, chunked not once and last, an empty or
//!   malformed coding list, more than one Content-Length (even equal ones), a Content-Length
//!   that is not 1*DIGIT within u64;
//! - after the framing is known (the connection may stay open when there is no body and the
//!   client keeps it alive): bytes outside visible ASCII or a '#' in the target, a target that
//!   is not origin-, absolute- (http/https, no userinfo) or asterisk-form (OPTIONS only), a
//!   path that does not decode, a missing Host in HTTP/1.1, more than one Host, an invalid
//!   Host or authority, an empty Host with an absolute-form target (all 400); an expectation
//!   other than 100-continue (417).

use crate::http::request::{parse, BodyFraming, Request, RequestError, Version, MAX_HEADERS};
use crate::http::{host, path};

use super::request::MAX_HEAD;

/// What the oracle expects of a head httparse accepted.
#[derive(Debug)]
enum Expected {
    /// Accepted, with this framing, keep-alive, host and port.
    Accept {
        body: BodyFraming,
        keep_alive: bool,
        host: Option<String>,
        host_port: Option<u16>,
        expect_continue: bool,
    },
    /// Refused before the framing is known: close, with one of these statuses.
    Fatal(Vec<u16>),
    /// Refused after: one of these statuses, closing exactly when `close`.
    Soft(Vec<u16>, bool),
}

/// Fuzz target `request_differential`: `data` is the bytes a client sent.
pub fn request_differential(data: &[u8]) {
    let ours = parse(data, MAX_HEAD);
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut theirs = httparse::Request::new(&mut slots);
    let status = theirs.parse(data);
    let show = || String::from_utf8_lossy(data).into_owned();
    match status {
        Err(httparse::Error::TooManyHeaders) => expect_refusal(&ours, &[431], true, &show()),
        Err(httparse::Error::Version) => version_case(data, &ours),
        Err(_) => expect_refusal(&ours, &[400], true, &show()),
        Ok(httparse::Status::Partial) => match &ours {
            Ok(None) => assert!(data.len() < MAX_HEAD),
            Err(e) if e.status == 431 && e.close => assert!(data.len() >= MAX_HEAD),
            other => panic!("httparse waits, we answered {other:?} for {:?}", show()),
        },
        Ok(httparse::Status::Complete(n)) => {
            let expected = oracle(&theirs, &data[..n]);
            match (&expected, &ours) {
                (
                    Expected::Accept {
                        body,
                        keep_alive,
                        host,
                        host_port,
                        expect_continue,
                    },
                    Ok(Some(r)),
                ) => {
                    assert_eq!(r.head_len, n);
                    assert_eq!(Some(r.method.as_str()), theirs.method);
                    assert_eq!(Some(r.target.as_str()), theirs.path);
                    let minor = if r.version == Version::Http10 { 0 } else { 1 };
                    assert_eq!(Some(minor), theirs.version);
                    let ours_h: Vec<_> = r.headers().collect();
                    let theirs_h: Vec<_> = theirs
                        .headers
                        .iter()
                        .map(|h| (h.name.as_bytes(), h.value))
                        .collect();
                    match absolute_authority(r.target.as_bytes()) {
                        // RFC 9112 §3.2.2: the target's authority replaces (or supplies) Host,
                        // so Host is compared against it and the other fields as they came.
                        Some(authority) => {
                            let not_host = |h: &&(&[u8], &[u8])| !h.0.eq_ignore_ascii_case(b"host");
                            let ours_rest: Vec<_> = ours_h.iter().filter(not_host).collect();
                            let theirs_rest: Vec<_> = theirs_h.iter().filter(not_host).collect();
                            assert_eq!(ours_rest, theirs_rest);
                            let hosts: Vec<_> = ours_h
                                .iter()
                                .filter(|h| h.0.eq_ignore_ascii_case(b"host"))
                                .map(|h| h.1)
                                .collect();
                            assert_eq!(hosts, vec![authority]);
                        }
                        None => assert_eq!(ours_h, theirs_h),
                    }
                    assert_eq!(
                        (
                            &r.body,
                            &r.keep_alive,
                            &r.host.as_deref().map(str::to_owned),
                            &r.host_port,
                            &r.expect_continue
                        ),
                        (body, keep_alive, host, host_port, expect_continue),
                        "{:?}",
                        show()
                    );
                }
                (Expected::Fatal(statuses), _) => expect_refusal(&ours, statuses, true, &show()),
                (Expected::Soft(statuses, close), _) => {
                    expect_refusal(&ours, statuses, *close, &show());
                    if let Err(e) = &ours {
                        if !e.close {
                            assert_eq!(e.head_len, n);
                            assert_eq!(e.head_method, theirs.method == Some("HEAD"));
                        }
                    }
                }
                (Expected::Accept { .. }, other) => {
                    panic!("oracle accepts {:?}, we answered {other:?}", show())
                }
            }
        }
    }
}

fn expect_refusal(
    ours: &Result<Option<Request>, RequestError>,
    statuses: &[u16],
    close: bool,
    input: &str,
) {
    match ours {
        Err(e) => assert!(
            statuses.contains(&e.status) && e.close == close,
            "expected one of {statuses:?} (close {close}), got {e:?} for {input:?}"
        ),
        other => panic!("expected one of {statuses:?}, got {other:?} for {input:?}"),
    }
}

/// httparse refused the version: we answer 400 or 505, or wait while the request line is
/// incomplete and could still become `HTTP/d.d`.
fn version_case(data: &[u8], ours: &Result<Option<Request>, RequestError>) {
    let mut line = data;
    while let Some(rest) = line
        .strip_prefix(b"\r\n")
        .or_else(|| line.strip_prefix(b"\n"))
    {
        line = rest;
    }
    let complete = memchr::memchr(b'\n', line).is_some();
    match ours {
        Ok(None) => assert!(
            !complete && data.len() < MAX_HEAD,
            "waiting on a complete line"
        ),
        Err(e) if e.close && e.status == 400 => {}
        Err(e) if e.close && e.status == 505 => {
            assert!(complete);
            let end = memchr::memchr(b'\n', line).unwrap_or(line.len());
            let l = line[..end].strip_suffix(b"\r").unwrap_or(&line[..end]);
            let v = l.rsplit(|&b| b == b' ').next().unwrap_or_default();
            assert!(
                v.len() == 8
                    && v.starts_with(b"HTTP/")
                    && v[5].is_ascii_digit()
                    && v[6] == b'.'
                    && v[7].is_ascii_digit(),
                "505 for version {:?}",
                String::from_utf8_lossy(v)
            );
        }
        Err(e) if e.close && e.status == 431 => assert!(data.len() >= MAX_HEAD),
        other => panic!("httparse refused the version, we answered {other:?}"),
    }
}

/// The elements of a comma-separated field value, OWS trimmed, empty ones dropped.
fn items(value: &[u8]) -> Vec<&[u8]> {
    fn ows(b: &u8) -> bool {
        *b == b' ' || *b == b'\t'
    }
    value
        .split(|&b| b == b',')
        .map(|i| {
            let start = i.iter().position(|b| !ows(b)).unwrap_or(i.len());
            let end = i.iter().rposition(|b| !ows(b)).map_or(start, |e| e + 1);
            &i[start..end.max(start)]
        })
        .filter(|i| !i.is_empty())
        .collect()
}

fn is_token(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The oracle: what our rules say about a head httparse parsed completely.
fn oracle(req: &httparse::Request<'_, '_>, head: &[u8]) -> Expected {
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Expected::Fatal(vec![400]);
    };
    let mut fatal = Vec::new();
    if head.len() > MAX_HEAD {
        fatal.push(431);
    }
    if head
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || head[i - 1] != b'\r'))
    {
        fatal.push(400);
    }
    let known = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH",
    ];
    if !known.contains(&method) {
        fatal.push(501);
    }
    let http10 = minor == 0;

    let named = |name: &'static str| {
        req.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let te: Vec<&[u8]> = named("transfer-encoding").collect();
    let cl: Vec<&[u8]> = named("content-length").collect();
    let mut body = BodyFraming::None;
    if !te.is_empty() {
        let codings: Vec<&[u8]> = te.iter().flat_map(|v| items(v)).collect();
        let chunked = |c: &[u8]| c.eq_ignore_ascii_case(b"chunked");
        let n_chunked = codings.iter().filter(|c| chunked(c)).count();
        let bad_list = codings.is_empty() || codings.iter().any(|c| !is_token(c));
        let misplaced =
            n_chunked > 1 || (n_chunked == 1 && !codings.last().is_some_and(|c| chunked(c)));
        if !cl.is_empty() || http10 || bad_list || misplaced {
            fatal.push(400);
        } else if n_chunked < codings.len() {
            fatal.push(501);
        } else {
            body = BodyFraming::Chunked;
        }
    } else if cl.len() > 1 {
        fatal.push(400);
    } else if let Some(v) = cl.first() {
        let digits = !v.is_empty() && v.iter().all(u8::is_ascii_digit);
        match std::str::from_utf8(v)
            .ok()
            .filter(|_| digits)
            .map(str::parse::<u64>)
        {
            Some(Ok(0)) => {}
            Some(Ok(n)) => body = BodyFraming::Length(n),
            _ => fatal.push(400),
        }
    }
    if !fatal.is_empty() {
        return Expected::Fatal(fatal);
    }

    let connection: Vec<&[u8]> = named("connection").flat_map(items).collect();
    let has = |t: &[u8]| connection.iter().any(|c| c.eq_ignore_ascii_case(t));
    let keep_alive = !has(b"close") && (!http10 || has(b"keep-alive"));
    let close = body != BodyFraming::None || !keep_alive;

    let mut soft = Vec::new();
    let tb = target.as_bytes();
    let mut authority = None;
    if !tb.iter().all(|b| b.is_ascii_graphic()) || tb.contains(&b'#') {
        soft.push(400);
    } else if target == "*" {
        if method != "OPTIONS" {
            soft.push(400);
        }
    } else {
        let lower = target.to_ascii_lowercase();
        let after_scheme = ["http://", "https://"]
            .iter()
            .find(|s| lower.starts_with(*s))
            .map(|s| &target[s.len()..]);
        let path_part = match after_scheme {
            Some(rest) => {
                let end = rest.find(['/', '?']).unwrap_or(rest.len());
                if rest[..end].contains('@') {
                    soft.push(400);
                }
                authority = Some(&rest[..end]);
                let p = rest[end..].split('?').next().unwrap_or("");
                if p.is_empty() {
                    "/"
                } else {
                    p
                }
            }
            None if target.starts_with('/') => target.split('?').next().unwrap_or(""),
            None => {
                soft.push(400);
                "/"
            }
        };
        if path::decode(path_part).is_err() {
            soft.push(400);
        }
    }

    let hosts: Vec<&[u8]> = named("host").collect();
    let host_value = hosts.first().copied().unwrap_or(b"");
    if hosts.len() > 1 || (hosts.is_empty() && !http10) {
        soft.push(400);
    }
    let header_host = host::parse(host_value);
    if header_host.is_err() {
        soft.push(400);
    }
    let (mut h, mut p) = (None, None);
    match authority {
        Some(a) => {
            if hosts.len() == 1 && host_value.is_empty() {
                soft.push(400);
            }
            match host::parse(a.as_bytes()) {
                Ok((name, port)) if !name.is_empty() => (h, p) = (Some(name.into_owned()), port),
                _ => soft.push(400),
            }
        }
        None => {
            if let Ok((name, port)) = header_host {
                if !name.is_empty() {
                    (h, p) = (Some(name.into_owned()), port);
                }
            }
        }
    }

    let expect: Vec<&[u8]> = named("expect").collect();
    let mut expect_continue = false;
    for value in &expect {
        let list = items(value);
        if list.is_empty()
            || list
                .iter()
                .any(|i| !i.eq_ignore_ascii_case(b"100-continue"))
        {
            soft.push(417);
        }
        expect_continue |= !list.is_empty();
    }
    if !soft.is_empty() {
        return Expected::Soft(soft, close);
    }
    Expected::Accept {
        body,
        keep_alive,
        host: h,
        host_port: p,
        expect_continue: expect_continue && !http10,
    }
}

/// The authority of an absolute-form target (`http://authority/...`), if it is one.
fn absolute_authority(target: &[u8]) -> Option<&[u8]> {
    let rest = if target.len() >= 7 && target[..7].eq_ignore_ascii_case(b"http://") {
        &target[7..]
    } else if target.len() >= 8 && target[..8].eq_ignore_ascii_case(b"https://") {
        &target[8..]
    } else {
        return None;
    };
    let end = rest
        .iter()
        .position(|&b| b == b'/' || b == b'?' || b == b'#')
        .unwrap_or(rest.len());
    Some(&rest[..end])
}
