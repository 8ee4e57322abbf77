//! Request head parsing: httparse for the grammar plus the strict checks httparse leaves to us
//! (Host rules, Content-Length and Transfer-Encoding framing, bare LF, control bytes).
//!
//! httparse already refuses: whitespace between a field name and its colon, obs-fold (a line
//! starting with SP/HTAB is not a valid field name), control bytes other than HTAB in values,
//! a CR not followed by LF, and more than [`MAX_HEADERS`] fields. On top of it we refuse bare LF
//! line ends (httparse accepts them), unknown methods, versions other than 1.0 / 1.1, bad
//! targets, bad Host, and every ambiguous body framing.
//!
//! Which errors close the connection: everything found before the framing of the body is known
//! (syntax, method, version, Content-Length / Transfer-Encoding) closes. Errors found after that
//! (target, path, Host, Expect) keep the connection only when the request has no body and the
//! client did not ask to close; the caller then discards `RequestError::head_len` bytes.
//!
//! Asterisk-form (`OPTIONS *`): `target` and `raw_path` are "*", `path` is "/" (so that `path`
//! always starts with '/'); see [`Request::is_asterisk_form`].

use std::mem::MaybeUninit;

use super::chunked::is_tchar;
use super::text::Text;
use super::{host, path};

/// The most header fields accepted in a request head; more is answered with 431.
pub const MAX_HEADERS: usize = 100;

/// A request method we know. Unknown methods are refused with 501.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Connect,
    Options,
    Trace,
    Patch,
}

impl Method {
    /// The method's name as sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Connect => "CONNECT",
            Method::Options => "OPTIONS",
            Method::Trace => "TRACE",
            Method::Patch => "PATCH",
        }
    }

    /// Whether repeating the request has the same effect as sending it once (RFC 9110 §9.2.2),
    /// so that it may be retried after a backend may have started it.
    pub fn is_idempotent(self) -> bool {
        matches!(
            self,
            Method::Get
                | Method::Head
                | Method::Options
                | Method::Trace
                | Method::Put
                | Method::Delete
        )
    }

    /// The method with this exact (case-sensitive) name, if we know it.
    pub fn from_name(name: &str) -> Option<Method> {
        Some(match name {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "CONNECT" => Method::Connect,
            "OPTIONS" => Method::Options,
            "TRACE" => Method::Trace,
            "PATCH" => Method::Patch,
            _ => return None,
        })
    }
}

/// HTTP version of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

impl Version {
    /// "HTTP/1.0" or "HTTP/1.1".
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

/// How the request body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body.
    None,
    /// Exactly this many bytes (Content-Length, > 0).
    Length(u64),
    /// Transfer-Encoding: chunked.
    Chunked,
}

/// A parsed request head. Header values are kept as bytes in one owned copy of the head (the
/// field offsets behind them); the target's parts and the host are `Text`, held inline when
/// short, so a typical head costs one allocation.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub version: Version,
    /// The request target exactly as received (for the access log and REQUEST_URI).
    pub target: Text,
    /// The path part of the target, still percent-encoded (absolute-form reduced to its path).
    pub raw_path: Text,
    /// The query string without '?', if there was a '?'.
    pub query: Option<Text>,
    /// The path decoded once with dot segments removed; always starts with '/'.
    pub path: Text,
    /// The host (lowercased, without port) from absolute-form or Host; None on HTTP/1.0 without
    /// Host, and when Host is empty (allowed by RFC 9112 §3.2 for an origin-form target).
    /// IPv6 literals keep their brackets.
    pub host: Option<Text>,
    /// The port from the absolute-form authority or the Host header, when given.
    pub host_port: Option<u16>,
    /// Body framing.
    pub body: BodyFraming,
    /// Whether the client wants the connection kept open after this response.
    pub keep_alive: bool,
    /// Whether the client sent `Expect: 100-continue`.
    pub expect_continue: bool,
    /// Length in bytes of the head in the input buffer (up to and including the empty line).
    pub head_len: usize,
    /// The head's bytes (a Host rewritten from an absolute-form target appended), then from
    /// `fields_at` the field table: per field (name_start, name_end, value_start, value_end)
    /// as four little-endian u32 offsets into `head`. One allocation holds both.
    head: Vec<u8>,
    fields_at: usize,
}

/// The bytes of one field table entry.
const FIELD_ENTRY: usize = 16;

impl Request {
    /// The value of the first header named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.header_values(name.as_bytes()).next()
    }

    /// The values of every header named `name` (ASCII case-insensitive), in order. A field
    /// whose name has another length is skipped before its bytes are looked at.
    pub fn header_values<'a, 'n>(&'a self, name: &'n [u8]) -> HeaderValues<'a, 'n> {
        HeaderValues {
            head: &self.head,
            table: self.head.get(self.fields_at..).unwrap_or_default(),
            name,
        }
    }

    /// Every header as (name as received, value).
    pub fn headers(&self) -> Headers<'_> {
        Headers {
            head: &self.head,
            table: self.head.get(self.fields_at..).unwrap_or_default(),
        }
    }

    /// Whether the target was the asterisk-form `*` (only with OPTIONS). `path` is then "/".
    pub fn is_asterisk_form(&self) -> bool {
        self.raw_path == "*"
    }
}

/// One entry of the field table behind the head: the offsets of a name and of its value.
#[inline]
fn entry<'a>(head: &'a [u8], e: &[u8; FIELD_ENTRY]) -> (&'a [u8], &'a [u8]) {
    let at = |i: usize| u32::from_le_bytes([e[i], e[i + 1], e[i + 2], e[i + 3]]) as usize;
    (
        head.get(at(0)..at(4)).unwrap_or_default(),
        head.get(at(8)..at(12)).unwrap_or_default(),
    )
}

/// The iterator of [`Request::headers`].
pub struct Headers<'a> {
    head: &'a [u8],
    /// The field entries not looked at yet.
    table: &'a [u8],
}

impl<'a> Iterator for Headers<'a> {
    type Item = (&'a [u8], &'a [u8]);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let (e, rest) = self.table.split_first_chunk::<FIELD_ENTRY>()?;
        self.table = rest;
        Some(entry(self.head, e))
    }
}

/// The iterator of [`Request::header_values`].
pub struct HeaderValues<'a, 'n> {
    head: &'a [u8],
    /// The field entries not looked at yet.
    table: &'a [u8],
    name: &'n [u8],
}

impl<'a> Iterator for HeaderValues<'a, '_> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        while let Some((e, rest)) = self.table.split_first_chunk::<FIELD_ENTRY>() {
            self.table = rest;
            let at = |i: usize| u32::from_le_bytes([e[i], e[i + 1], e[i + 2], e[i + 3]]) as usize;
            let (start, end) = (at(0), at(4));
            if end.wrapping_sub(start) != self.name.len() {
                continue;
            }
            match self.head.get(start..end) {
                Some(n) if n.eq_ignore_ascii_case(self.name) => {}
                _ => continue,
            }
            if let Some(v) = self.head.get(at(8)..at(12)) {
                return Some(v);
            }
        }
        None
    }
}

/// Why a request head was refused: the status to answer with, and whether the connection
/// must be closed afterwards because the framing of what follows is in doubt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestError {
    pub status: u16,
    pub close: bool,
    /// A short reason for the error log.
    pub reason: &'static str,
    /// When `close` is false: the length of the refused head in the input, to discard before
    /// reading the next request (such a request never has a body). 0 when `close` is true.
    pub head_len: usize,
    /// Whether the refused request was HEAD, so the error response has no body (known only
    /// when `close` is false; otherwise false).
    pub head_method: bool,
    /// The refused request's version when `close` is false (HTTP/1.1 otherwise), so that an
    /// HTTP/1.0 keep-alive connection is told it stays open.
    pub version: Version,
}

impl RequestError {
    /// An error after which the connection is closed.
    fn fatal(status: u16, reason: &'static str) -> Self {
        RequestError {
            status,
            close: true,
            reason,
            head_len: 0,
            head_method: false,
            version: Version::Http11,
        }
    }
}

/// Parses a request head from the start of `buf`.
///
/// `Ok(None)`: incomplete, read more (unless `buf.len() >= max_head`, which is reported as 431).
/// Leading empty lines before the request line (RFC 9112 §2.2) are skipped and counted in
/// `head_len`.
pub fn parse(buf: &[u8], max_head: usize) -> Result<Option<Request>, RequestError> {
    let mut slots = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() >= max_head {
                return Err(RequestError::fatal(431, "request head too large"));
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(RequestError::fatal(431, "too many header fields"))
        }
        Err(httparse::Error::Version) => return version_error(buf, max_head),
        Err(_) => return Err(RequestError::fatal(400, "malformed request head")),
    };
    if head_len > max_head || u32::try_from(head_len).is_err() {
        return Err(RequestError::fatal(431, "request head too large"));
    }
    let head = &buf[..head_len];

    // httparse accepts a bare LF as a line end; we do not (request smuggling).
    for nl in memchr::memchr_iter(b'\n', head) {
        if nl == 0 || head[nl - 1] != b'\r' {
            return Err(RequestError::fatal(400, "bare LF in request head"));
        }
    }

    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(RequestError::fatal(400, "malformed request line"));
    };
    let method = match Method::from_name(method) {
        Some(Method::Connect) => return Err(RequestError::fatal(501, "CONNECT not supported")),
        Some(m) => m,
        None => return Err(RequestError::fatal(501, "unknown method")),
    };
    let version = if minor == 0 {
        Version::Http10
    } else {
        Version::Http11
    };

    // One pass over the fields: record offsets, pick out the ones we interpret.
    let base = buf.as_ptr() as usize;
    let offset = |p: *const u8| (p as usize - base) as u32;
    // On the stack: the table is copied behind the head in its one allocation at the end.
    let mut fields = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
    let mut nfields = 0usize;
    let mut hosts = 0u32;
    let mut host_value: &[u8] = b"";
    let mut host_field: Option<usize> = None;
    let mut content_lengths = 0u32;
    let mut content_length: &[u8] = b"";
    let mut te = TransferCodings::default();
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut expect_continue = false;
    let mut expect_other = false;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        let value = h.value;
        let ns = offset(name.as_ptr());
        let vs = offset(value.as_ptr());
        // httparse gives at most MAX_HEADERS fields (the slots above).
        if let Some(f) = fields.get_mut(nfields) {
            *f = (ns, ns + name.len() as u32, vs, vs + value.len() as u32);
            nfields += 1;
        }
        match name.len() {
            4 if name.eq_ignore_ascii_case(b"host") => {
                hosts += 1;
                host_value = value;
                host_field = nfields.checked_sub(1);
            }
            6 if name.eq_ignore_ascii_case(b"expect") => {
                let mut any = false;
                for item in list_items(value) {
                    any = true;
                    if item.eq_ignore_ascii_case(b"100-continue") {
                        expect_continue = true;
                    } else {
                        expect_other = true;
                    }
                }
                expect_other |= !any;
            }
            10 if name.eq_ignore_ascii_case(b"connection") => {
                for item in list_items(value) {
                    if item.eq_ignore_ascii_case(b"close") {
                        conn_close = true;
                    } else if item.eq_ignore_ascii_case(b"keep-alive") {
                        conn_keep_alive = true;
                    }
                }
            }
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                content_lengths += 1;
                content_length = value;
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => te.add(value),
            _ => {}
        }
    }

    // Body framing (RFC 9112 §6): anything doubtful closes the connection.
    let body = if te.present {
        if content_lengths > 0 {
            return Err(RequestError::fatal(
                400,
                "both Transfer-Encoding and Content-Length",
            ));
        }
        if version == Version::Http10 {
            return Err(RequestError::fatal(400, "Transfer-Encoding in HTTP/1.0"));
        }
        te.framing()?
    } else if content_lengths > 1 {
        return Err(RequestError::fatal(400, "more than one Content-Length"));
    } else if content_lengths == 1 {
        match parse_content_length(content_length) {
            Some(0) => BodyFraming::None,
            Some(n) => BodyFraming::Length(n),
            None => return Err(RequestError::fatal(400, "invalid Content-Length")),
        }
    } else {
        BodyFraming::None
    };

    let keep_alive = !conn_close && (version == Version::Http11 || conn_keep_alive);
    // From here on the framing is known: a request without a body can be answered and skipped.
    let soft = |status: u16, reason: &'static str| {
        let close = body != BodyFraming::None || !keep_alive;
        RequestError {
            status,
            close,
            reason,
            head_len: if close { 0 } else { head_len },
            head_method: !close && method == Method::Head,
            version: if close { Version::Http11 } else { version },
        }
    };

    let target_bytes = target.as_bytes();
    if !target_bytes.iter().all(|&b| (0x21..=0x7e).contains(&b)) {
        return Err(soft(400, "invalid byte in request target"));
    }
    if memchr::memchr(b'#', target_bytes).is_some() {
        return Err(soft(400, "fragment in request target"));
    }
    let form = split_target(target, method).ok_or_else(|| soft(400, "invalid request target"))?;
    let decoded = if form.raw_path == "*" {
        Text::from("/")
    } else {
        Text::from(path::decode(form.raw_path).map_err(|_| soft(400, "invalid request path"))?)
    };

    if hosts > 1 {
        return Err(soft(400, "more than one Host"));
    }
    if hosts == 0 && version == Version::Http11 {
        return Err(soft(400, "missing Host"));
    }
    let (header_host, header_port) =
        host::parse(host_value).map_err(|_| soft(400, "invalid Host"))?;
    let (host, host_port) = match form.authority {
        Some(authority) => {
            if hosts == 1 && host_value.is_empty() {
                return Err(soft(400, "empty Host with an absolute-form target"));
            }
            let (h, p) = host::parse(authority.as_bytes())
                .map_err(|_| soft(400, "invalid authority in request target"))?;
            if h.is_empty() {
                return Err(soft(400, "empty authority in request target"));
            }
            (Some(Text::from(h)), p)
        }
        None if header_host.is_empty() => (None, None),
        None => (Some(Text::from(header_host)), header_port),
    };

    if expect_other {
        return Err(soft(417, "unsupported expectation"));
    }
    // RFC 9110 §10.1.1: a 100-continue expectation in an HTTP/1.0 request is ignored.
    let expect_continue = expect_continue && version == Version::Http11;

    // One allocation: the head, a Host rewritten from the target, the field table.
    let extra = form.authority.map_or(0, |a| a.len() + 4 + FIELD_ENTRY);
    let mut owned = Vec::with_capacity(head_len + extra + nfields * FIELD_ENTRY);
    owned.extend_from_slice(head);
    let table = &mut fields[..nfields];
    // RFC 9112 §3.2.2: the target's authority wins over Host; rewrite Host to it so that
    // every view of the request (req.host, SERVER_NAME, HTTP_HOST, req.headers) agrees.
    let added = form
        .authority
        .and_then(|a| set_host(&mut owned, table, host_field, a.as_bytes()));
    let fields_at = owned.len();
    for &(ns, ne, vs, ve) in table.iter().chain(added.iter()) {
        for v in [ns, ne, vs, ve] {
            owned.extend_from_slice(&v.to_le_bytes());
        }
    }

    Ok(Some(Request {
        method,
        version,
        target: Text::from(target),
        raw_path: Text::from(form.raw_path),
        query: form.query.map(Text::from),
        path: decoded,
        host,
        host_port,
        body,
        keep_alive,
        expect_continue,
        head_len,
        head: owned,
        fields_at,
    }))
}

/// Points the Host field at `value`, appended to the owned head copy; when the request had no
/// Host (as HTTP/1.0 may), the field to add is returned.
fn set_host(
    head: &mut Vec<u8>,
    fields: &mut [(u32, u32, u32, u32)],
    field: Option<usize>,
    value: &[u8],
) -> Option<(u32, u32, u32, u32)> {
    let ns = head.len() as u32;
    if field.is_none() {
        head.extend_from_slice(b"Host");
    }
    let vs = head.len() as u32;
    head.extend_from_slice(value);
    let ve = head.len() as u32;
    match field.and_then(|i| fields.get_mut(i)) {
        Some(f) => {
            f.2 = vs;
            f.3 = ve;
            None
        }
        None => Some((ns, vs, vs, ve)),
    }
}

/// The parts of a request target.
struct TargetParts<'a> {
    /// The authority of an absolute-form target.
    authority: Option<&'a str>,
    /// The path, still encoded ("*" for asterisk-form).
    raw_path: &'a str,
    /// The query without '?'.
    query: Option<&'a str>,
}

/// Splits a target (already checked to be visible ASCII without '#') by its form.
fn split_target(target: &str, method: Method) -> Option<TargetParts<'_>> {
    if target == "*" {
        return (method == Method::Options).then_some(TargetParts {
            authority: None,
            raw_path: "*",
            query: None,
        });
    }
    if target.starts_with('/') {
        let (raw_path, query) = split_query(target);
        return Some(TargetParts {
            authority: None,
            raw_path,
            query,
        });
    }
    let rest = strip_prefix_ignore_case(target, "http://")
        .or_else(|| strip_prefix_ignore_case(target, "https://"))?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.contains('@') {
        // userinfo is deprecated in http(s) URIs and refused (RFC 9110 §4.2.4).
        return None;
    }
    let (raw_path, query) = split_query(&rest[end..]);
    Some(TargetParts {
        authority: Some(authority),
        raw_path: if raw_path.is_empty() { "/" } else { raw_path },
        query,
    })
}

/// Splits "path?query" at the first '?'. A plain byte loop: `split_once` goes through a char
/// searcher that costs more than the short targets it meets.
fn split_query(s: &str) -> (&str, Option<&str>) {
    match s.bytes().position(|b| b == b'?') {
        // '?' is ASCII, so both sides of it are char boundaries.
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    }
}

/// `s` without `prefix`, compared ASCII case-insensitively.
fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.as_bytes().get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix.as_bytes()) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// The non-empty elements of a comma-separated list, with OWS trimmed.
fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(|item| item.trim_ascii())
        .filter(|item| !item.is_empty())
}

/// Content-Length: one or more ASCII digits, nothing else, no overflow.
fn parse_content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &b in value {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(n)
}

/// The transfer codings of every Transfer-Encoding field, read as one list.
#[derive(Default)]
struct TransferCodings {
    present: bool,
    chunked: u32,
    /// The last coding seen was `chunked`.
    last_chunked: bool,
    other: bool,
    invalid: bool,
}

impl TransferCodings {
    /// Adds the codings of one Transfer-Encoding field.
    fn add(&mut self, value: &[u8]) {
        self.present = true;
        for item in list_items(value) {
            if item.eq_ignore_ascii_case(b"chunked") {
                self.chunked += 1;
                self.last_chunked = true;
            } else {
                self.last_chunked = false;
                if item.iter().all(|&b| is_tchar(b)) {
                    self.other = true;
                } else {
                    // Parameters or junk: not a coding we could know.
                    self.invalid = true;
                }
            }
        }
    }

    /// The framing these codings give, or the error.
    fn framing(&self) -> Result<BodyFraming, RequestError> {
        if self.invalid {
            return Err(RequestError::fatal(400, "invalid Transfer-Encoding"));
        }
        if self.chunked > 1 {
            return Err(RequestError::fatal(400, "chunked applied more than once"));
        }
        if self.chunked == 1 && !self.last_chunked {
            return Err(RequestError::fatal(400, "chunked is not the final coding"));
        }
        if self.other {
            return Err(RequestError::fatal(501, "unsupported transfer coding"));
        }
        if self.chunked == 0 {
            return Err(RequestError::fatal(400, "empty Transfer-Encoding"));
        }
        Ok(BodyFraming::Chunked)
    }
}

/// httparse refused the version: 505 for a well-formed `HTTP/d.d` we do not speak, 400 for
/// anything else, or wait when the request line is not complete yet.
fn version_error(buf: &[u8], max_head: usize) -> Result<Option<Request>, RequestError> {
    let bad = RequestError::fatal(400, "malformed HTTP version");
    let mut start = 0;
    loop {
        if buf[start..].starts_with(b"\r\n") {
            start += 2;
        } else if buf.get(start) == Some(&b'\n') {
            start += 1;
        } else {
            break;
        }
    }
    let rest = &buf[start..];
    let (line, complete) = match memchr::memchr(b'\n', rest) {
        Some(nl) => match rest[..nl].strip_suffix(b"\r") {
            Some(line) => (line, true),
            None => return Err(RequestError::fatal(400, "bare LF in request head")),
        },
        None => (rest.strip_suffix(b"\r").unwrap_or(rest), false),
    };
    // httparse got as far as the version, so the line is "method SP target SP version".
    let mut parts = line.splitn(3, |&b| b == b' ');
    let version = match (parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(_), Some(v)) => v,
        _ => return Err(bad),
    };
    const PATTERN: &[u8; 8] = b"HTTP/d.d";
    let fits = version.len() <= PATTERN.len()
        && version.iter().zip(PATTERN).all(|(&b, &p)| match p {
            b'd' => b.is_ascii_digit(),
            _ => b == p,
        });
    if !fits {
        return Err(bad);
    }
    if complete {
        if version.len() == PATTERN.len() {
            return Err(RequestError::fatal(505, "HTTP version not supported"));
        }
        return Err(bad);
    }
    if buf.len() >= max_head {
        return Err(RequestError::fatal(431, "request head too large"));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 8192;

    fn ok(input: &[u8]) -> Request {
        match parse(input, MAX) {
            Ok(Some(r)) => r,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
        }
    }

    fn err(input: &[u8]) -> RequestError {
        match parse(input, MAX) {
            Err(e) => e,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
        }
    }

    /// Asserts the status and the close flag of a refused head.
    fn refused(input: &[u8], status: u16, close: bool) {
        let e = err(input);
        assert_eq!(
            (e.status, e.close),
            (status, close),
            "{:?}: {e:?}",
            String::from_utf8_lossy(input)
        );
        if !close {
            assert!(e.head_len > 0 && e.head_len <= input.len());
        }
    }

    /// Ok(true) for a request, Ok(false) for "incomplete", Err(status) for a refusal.
    fn outcome(r: Result<Option<Request>, RequestError>) -> Result<bool, u16> {
        r.map(|r| r.is_some()).map_err(|e| e.status)
    }

    fn with_header(h: &str) -> Vec<u8> {
        format!("GET / HTTP/1.1\r\nHost: a\r\n{h}\r\n\r\n").into_bytes()
    }

    #[test]
    fn simple_get() {
        let input =
            b"GET /index.html?x=1&y=2 HTTP/1.1\r\nHost: Example.com:8080\r\nUser-Agent: t\r\n\r\n";
        let r = ok(input);
        assert_eq!(r.method, Method::Get);
        assert_eq!(r.version, Version::Http11);
        assert_eq!(r.target, "/index.html?x=1&y=2");
        assert_eq!(r.raw_path, "/index.html");
        assert_eq!(r.query.as_deref(), Some("x=1&y=2"));
        assert_eq!(r.path, "/index.html");
        assert_eq!(r.host.as_deref(), Some("example.com"));
        assert_eq!(r.host_port, Some(8080));
        assert_eq!(r.body, BodyFraming::None);
        assert!(r.keep_alive);
        assert!(!r.expect_continue);
        assert_eq!(r.head_len, input.len());
        assert!(!r.is_asterisk_form());
    }

    #[test]
    fn headers_lookup() {
        let r =
            ok(b"GET / HTTP/1.1\r\nHost: a\r\nX-One: 1\r\nx-one: 2\r\nEmpty:\r\nSp:  v v \r\n\r\n");
        assert_eq!(r.header("x-one"), Some(&b"1"[..]));
        assert_eq!(r.header("X-ONE"), Some(&b"1"[..]));
        assert_eq!(r.header("empty"), Some(&b""[..]));
        assert_eq!(r.header("sp"), Some(&b"v v"[..]));
        assert_eq!(r.header("missing"), None);
        let all: Vec<_> = r.headers().collect();
        assert_eq!(all.len(), 5);
        assert_eq!(all[0], (&b"Host"[..], &b"a"[..]));
        assert_eq!(all[2], (&b"x-one"[..], &b"2"[..]));
    }

    #[test]
    fn methods() {
        for (name, m) in [
            ("GET", Method::Get),
            ("HEAD", Method::Head),
            ("POST", Method::Post),
            ("PUT", Method::Put),
            ("DELETE", Method::Delete),
            ("OPTIONS", Method::Options),
            ("TRACE", Method::Trace),
            ("PATCH", Method::Patch),
        ] {
            let r = ok(format!("{name} / HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
            assert_eq!(r.method, m);
            assert_eq!(m.as_str(), name);
        }
        refused(
            b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n",
            501,
            true,
        );
        refused(b"BREW / HTTP/1.1\r\nHost: a\r\n\r\n", 501, true);
        refused(b"get / HTTP/1.1\r\nHost: a\r\n\r\n", 501, true);
        refused(b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400, true);
        refused(b"G\x01T / HTTP/1.1\r\nHost: a\r\n\r\n", 400, true);
        refused(b" GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400, true);
        refused(b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400, true);
    }

    #[test]
    fn versions() {
        assert_eq!(Version::Http10.as_str(), "HTTP/1.0");
        assert_eq!(Version::Http11.as_str(), "HTTP/1.1");
        let r = ok(b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!(r.version, Version::Http10);
        assert_eq!(r.host, None);
        assert!(!r.keep_alive);
        refused(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, true);
        refused(b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505, true);
        refused(b"GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505, true);
        refused(b"GET / HTTP/3.0\r\n", 505, true);
        refused(b"GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400, true);
        refused(b"GET / HTTP/11\r\nHost: a\r\n\r\n", 400, true);
        refused(b"GET / http/1.1\r\nHost: a\r\n\r\n", 400, true);
        refused(b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400, true);
        refused(b"GET / FOO\r\n", 400, true);
        refused(b"GET / HTTP/2.0\n\n", 400, true);
        refused(b"GET /\r\n\r\n", 400, true);
        refused(b"GET / HTTP/x", 400, true);
        // An unsupported version still being received: wait for the line end.
        assert_eq!(outcome(parse(b"GET / HTTP/2", MAX)), Ok(false));
        assert_eq!(outcome(parse(b"GET / HTTP/2.0", MAX)), Ok(false));
        assert_eq!(outcome(parse(b"GET / HTTP/2.0\r", MAX)), Ok(false));
        assert_eq!(outcome(parse(b"GET / HTTP/2.0\r", 10)), Err(431));
    }

    #[test]
    fn leading_empty_lines() {
        let input = b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let r = ok(input);
        assert_eq!(r.head_len, input.len());
        assert_eq!(r.path, "/");
        refused(b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400, true);
        refused(b"\r\rGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400, true);
        assert_eq!(outcome(parse(b"\r\n", MAX)), Ok(false));
    }

    #[test]
    fn bare_lf() {
        refused(b"GET / HTTP/1.1\nHost: a\r\n\r\n", 400, true);
        refused(b"GET / HTTP/1.1\r\nHost: a\n\r\n", 400, true);
        refused(b"GET / HTTP/1.1\r\nHost: a\r\n\n", 400, true);
        refused(b"GET / HTTP/1.1\nHost: a\n\n", 400, true);
        refused(b"GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n", 400, true);
    }

    #[test]
    fn field_syntax() {
        refused(&with_header("X-A : b"), 400, true);
        refused(&with_header("X-A\t: b"), 400, true);
        refused(&with_header("X-A: b\r\n  folded"), 400, true);
        refused(b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400, true);
        refused(&with_header("X-A: b\x01c"), 400, true);
        refused(&with_header("X-A: b\x00c"), 400, true);
        refused(&with_header("X-A: b\x7fc"), 400, true);
        refused(&with_header("X-A: b\x1bc"), 400, true);
        refused(&with_header(": b"), 400, true);
        refused(&with_header("X(A): b"), 400, true);
        let r = ok(&with_header("X-A: b\tc"));
        assert_eq!(r.header("x-a"), Some(&b"b\tc"[..]));
        let r = ok(&with_header("X-A: café"));
        assert_eq!(r.header("x-a"), Some("café".as_bytes()));
    }

    #[test]
    fn too_many_headers() {
        let mut s = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
        for i in 0..MAX_HEADERS - 1 {
            s.push_str(&format!("X-{i}: v\r\n"));
        }
        let exactly = format!("{s}\r\n");
        assert_eq!(ok(exactly.as_bytes()).headers().count(), MAX_HEADERS);
        s.push_str("X-Last: v\r\n\r\n");
        match parse(s.as_bytes(), 1 << 20) {
            Err(e) => assert_eq!((e.status, e.close), (431, true)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn head_too_large() {
        let input = b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: 0123456789\r\n\r\n";
        // Incomplete and already at the limit.
        assert_eq!(outcome(parse(&input[..20], 20)), Err(431));
        assert_eq!(outcome(parse(&input[..20], 21)), Ok(false));
        // Complete but longer than the limit.
        assert_eq!(outcome(parse(input, input.len() - 1)), Err(431));
        assert!(parse(input, input.len()).unwrap().is_some());
    }

    #[test]
    fn byte_at_a_time() {
        let input = b"\r\nPOST /up?x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
        let head_len = input.len() - 5;
        for n in 0..head_len {
            assert_eq!(
                parse(&input[..n], MAX).map(|r| r.is_some()),
                Ok(false),
                "at {n}"
            );
        }
        let r = ok(&input[..head_len]);
        assert_eq!(r.head_len, head_len);
        assert_eq!(r.body, BodyFraming::Length(5));
        assert_eq!(ok(input).head_len, head_len);
    }

    #[test]
    fn pipelined() {
        let input =
            b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: b\r\n\r\nGET /c HT";
        let r1 = ok(input);
        assert_eq!(r1.path, "/a");
        let rest = &input[r1.head_len..];
        assert!(rest.starts_with(b"GET /b"));
        let r2 = ok(rest);
        assert_eq!(r2.path, "/b");
        assert_eq!(r2.host.as_deref(), Some("b"));
        assert_eq!(outcome(parse(&rest[r2.head_len..], MAX)), Ok(false));
        // The head copy holds only this request's head.
        assert_eq!(r1.headers().count(), 1);
    }

    #[test]
    fn targets() {
        let r = ok(b"GET /a/./b/../c/%2e%2e/d%20e/ HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(r.raw_path, "/a/./b/../c/%2e%2e/d%20e/");
        assert_eq!(r.path, "/a/d e/");
        let r = ok(b"GET /p?a?b=c HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(
            (r.raw_path.as_str(), r.query.as_deref()),
            ("/p", Some("a?b=c"))
        );
        let r = ok(b"GET /p? HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(r.query.as_deref(), Some(""));
        let r = ok(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(r.is_asterisk_form());
        assert_eq!(
            (r.target.as_str(), r.raw_path.as_str(), r.path.as_str()),
            ("*", "*", "/")
        );
        refused(b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400, false);
        refused(b"GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n", 400, false);
        refused(b"GET a/b HTTP/1.1\r\nHost: a\r\n\r\n", 400, false);
        refused(b"GET ftp://a/b HTTP/1.1\r\nHost: a\r\n\r\n", 400, false);
        refused(b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", 400, false);
        refused(b"GET /\xff HTTP/1.1\r\nHost: a\r\n\r\n", 400, true);
        refused(b"GET /a%zz HTTP/1.1\r\nHost: a\r\n\r\n", 400, false);
        refused(b"GET /a%00 HTTP/1.1\r\nHost: a\r\n\r\n", 400, false);
        refused(b"GET /a%0d%0a HTTP/1.1\r\nHost: a\r\n\r\n", 400, false);
        refused(b"GET /a%ff HTTP/1.1\r\nHost: a\r\n\r\n", 400, false);
        // With a body or Connection: close the error closes.
        refused(
            b"POST /a%zz HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\n",
            400,
            true,
        );
        refused(
            b"GET /a%zz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            400,
            true,
        );
        refused(b"GET /a%zz HTTP/1.0\r\n\r\n", 400, true);
        let e = err(b"GET /a%zz HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\n");
        assert_eq!(e.head_len, 31);
    }

    #[test]
    fn absolute_form() {
        let r = ok(b"GET http://Example.COM:81/x/../y?q HTTP/1.1\r\nHost: other\r\n\r\n");
        assert_eq!(r.host.as_deref(), Some("example.com"));
        assert_eq!(r.host_port, Some(81));
        assert_eq!(r.raw_path, "/x/../y");
        assert_eq!(r.path, "/y");
        assert_eq!(r.query.as_deref(), Some("q"));
        assert_eq!(r.target, "http://Example.COM:81/x/../y?q");
        // The target's authority wins, and Host is rewritten to agree (RFC 9112 §3.2.2).
        assert_eq!(r.header("host"), Some(&b"Example.COM:81"[..]));
        assert_eq!(
            r.headers()
                .filter(|(n, _)| n.eq_ignore_ascii_case(b"host"))
                .count(),
            1
        );
        let r = ok(b"GET http://a.example/ HTTP/1.0\r\nX: 1\r\n\r\n");
        assert_eq!(r.header("host"), Some(&b"a.example"[..]));
        assert_eq!(r.header("x"), Some(&b"1"[..]));
        let r = ok(b"GET HTTPS://[::1] HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!((r.host.as_deref(), r.host_port), (Some("[::1]"), None));
        assert_eq!(r.raw_path, "/");
        let r = ok(b"GET http://a?q=1 HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(
            (r.raw_path.as_str(), r.query.as_deref()),
            ("/", Some("q=1"))
        );
        let r = ok(b"GET http://a/ HTTP/1.0\r\n\r\n");
        assert_eq!(r.host.as_deref(), Some("a"));
        refused(b"GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", 400, false);
        refused(b"GET http://u@a/x HTTP/1.1\r\nHost: a\r\n\r\n", 400, false);
        // An empty port is no port (RFC 3986: port = *DIGIT).
        let r = ok(b"GET http://a:/x HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!((r.host.as_deref(), r.host_port), (Some("a"), None));
        refused(b"GET http://a b/x HTTP/1.1\r\nHost: a\r\n\r\n", 400, true);
        refused(b"GET http:/a/x HTTP/1.1\r\nHost: a\r\n\r\n", 400, false);
        refused(b"GET http://a/x HTTP/1.1\r\nHost:\r\n\r\n", 400, false);
        refused(b"GET http://a/x HTTP/1.1\r\n\r\n", 400, false);
    }

    #[test]
    fn host_rules() {
        refused(b"GET / HTTP/1.1\r\n\r\n", 400, false);
        refused(b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400, false);
        refused(b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", 400, false);
        refused(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400, false);
        let r = ok(b"GET / HTTP/1.1\r\nHost: a:\r\n\r\n");
        assert_eq!((r.host.as_deref(), r.host_port), (Some("a"), None));
        refused(b"GET / HTTP/1.1\r\nHost: a:99999\r\n\r\n", 400, false);
        refused(b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", 400, false);
        refused(b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400, false);
        refused(b"GET / HTTP/1.1\r\nHost: a@b\r\n\r\n", 400, false);
        let r = ok(b"GET / HTTP/1.1\r\nHost:\r\n\r\n");
        assert_eq!(r.host, None);
        let r = ok(b"GET / HTTP/1.1\r\nHost: [2001:DB8::1]:8080\r\n\r\n");
        assert_eq!(
            (r.host.as_deref(), r.host_port),
            (Some("[2001:db8::1]"), Some(8080))
        );
        let r = ok(b"GET / HTTP/1.0\r\nHost: A.b\r\n\r\n");
        assert_eq!(r.host.as_deref(), Some("a.b"));
        refused(b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n", 400, true);
    }

    #[test]
    fn content_length() {
        let r = ok(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 42\r\n\r\n");
        assert_eq!(r.body, BodyFraming::Length(42));
        let r = ok(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(r.body, BodyFraming::None);
        let r = ok(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 007\r\n\r\n");
        assert_eq!(r.body, BodyFraming::Length(7));
        let r =
            ok(b"POST / HTTP/1.1\r\nHost: a\r\ncontent-length:   18446744073709551615  \r\n\r\n");
        assert_eq!(r.body, BodyFraming::Length(u64::MAX));
        for v in [
            "",
            "+1",
            "-1",
            "1 2",
            "1,1",
            "1, 1",
            "0x10",
            "1.0",
            "18446744073709551616",
            "99999999999999999999999",
            "١",
        ] {
            refused(&with_header(&format!("Content-Length: {v}")), 400, true);
        }
        refused(
            &with_header("Content-Length: 1\r\nContent-Length: 1"),
            400,
            true,
        );
        refused(
            &with_header("Content-Length: 1\r\nContent-Length: 2"),
            400,
            true,
        );
        let r = ok(b"POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(r.body, BodyFraming::Length(3));
    }

    #[test]
    fn transfer_encoding() {
        for v in [
            "chunked",
            "Chunked",
            "CHUNKED",
            "  chunked  ",
            ", chunked",
            "chunked,",
        ] {
            let r = ok(&with_header(&format!("Transfer-Encoding: {v}")));
            assert_eq!(r.body, BodyFraming::Chunked, "{v}");
        }
        refused(
            &with_header("Transfer-Encoding: chunked\r\nContent-Length: 3"),
            400,
            true,
        );
        refused(
            &with_header("Content-Length: 3\r\nTransfer-Encoding: chunked"),
            400,
            true,
        );
        refused(
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
            true,
        );
        refused(
            &with_header("Transfer-Encoding: chunked, chunked"),
            400,
            true,
        );
        refused(
            &with_header("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked"),
            400,
            true,
        );
        refused(&with_header("Transfer-Encoding: gzip"), 501, true);
        refused(&with_header("Transfer-Encoding: identity"), 501, true);
        refused(&with_header("Transfer-Encoding: gzip, chunked"), 501, true);
        refused(
            &with_header("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked"),
            501,
            true,
        );
        refused(&with_header("Transfer-Encoding: chunked, gzip"), 400, true);
        refused(
            &with_header("Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip"),
            400,
            true,
        );
        refused(&with_header("Transfer-Encoding:"), 400, true);
        refused(&with_header("Transfer-Encoding: ,"), 400, true);
        refused(&with_header("Transfer-Encoding: chunked;q=1"), 400, true);
        refused(&with_header("Transfer-Encoding: \"chunked\""), 400, true);
        refused(&with_header("Transfer-Encoding: chun ked"), 400, true);
    }

    #[test]
    fn connection() {
        assert!(ok(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").keep_alive);
        assert!(!ok(&with_header("Connection: close")).keep_alive);
        assert!(!ok(&with_header("Connection: Keep-Alive, CLOSE")).keep_alive);
        assert!(!ok(&with_header("Connection: upgrade\r\nConnection: close")).keep_alive);
        assert!(ok(&with_header("Connection: keep-alive")).keep_alive);
        assert!(ok(&with_header("Connection: closed")).keep_alive);
        assert!(!ok(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(ok(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(ok(b"GET / HTTP/1.0\r\nConnection: foo , keep-alive\r\n\r\n").keep_alive);
        assert!(!ok(b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n").keep_alive);
    }

    #[test]
    fn expect() {
        let r =
            ok(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n");
        assert!(r.expect_continue);
        let r = ok(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
        assert!(!r.expect_continue);
        refused(&with_header("Expect: 200-ok"), 417, false);
        refused(&with_header("Expect:"), 417, false);
        refused(&with_header("Expect: 100-continue, foo"), 417, false);
        refused(
            b"POST / HTTP/1.1\r\nHost: a\r\nExpect: foo\r\nContent-Length: 3\r\n\r\n",
            417,
            true,
        );
    }

    #[test]
    fn never_panics_on_random_input() {
        let seeds: [&[u8]; 4] = [
            b"GET /a/b?c HTTP/1.1\r\nHost: example.com:80\r\nConnection: keep-alive\r\n\r\n",
            b"\r\nPOST http://h/x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
            b"OPTIONS * HTTP/1.0\r\nContent-Length: 12\r\nHost: [::1]:8\r\n\r\n",
            b"PUT /%2e%2e/%41 HTTP/2.0\r\n\r\n",
        ];
        let alphabet = b"GET /%.?#:;,@[]0123456789aAzZ\r\n\t \x00\x01\x7f\x80\xff\"HTTP/1.";
        let mut m = crate::http::mutate::Mutator::new(0x2545_f491_4f6c_dd1du64);
        for round in 0..20_000 {
            let input = m.mutate(seeds[round % seeds.len()], alphabet, 8);
            let max = if round % 5 == 0 { 40 } else { MAX };
            if let Ok(Some(r)) = parse(&input, max) {
                assert!(r.head_len <= input.len());
                assert!(r.path.starts_with('/'));
                let _ = r.headers().count();
            }
            let cut = m.next() as usize % (input.len() + 1);
            let _ = parse(&input[..cut], max);
        }
        // Pure noise.
        for _ in 0..5_000 {
            let len = (m.next() % 64) as usize;
            let input: Vec<u8> = (0..len).map(|_| m.next() as u8).collect();
            let _ = parse(&input, MAX);
        }
    }
}
