//! Request head parsing: httparse for the grammar plus the strict checks httparse leaves to us
//! (Host rules, Content-Length and Transfer-Encoding framing, bare LF, control bytes).

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
        todo!()
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
        todo!()
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

/// A parsed request head. Header values are kept as bytes in one owned copy of the head.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub version: Version,
    /// The request target exactly as received (for the access log and REQUEST_URI).
    pub target: String,
    /// The path part of the target, still percent-encoded (absolute-form reduced to its path).
    pub raw_path: String,
    /// The query string without '?', if there was a '?'.
    pub query: Option<String>,
    /// The path decoded once with dot segments removed; always starts with '/'.
    pub path: String,
    /// The host (lowercased, without port) from absolute-form or Host; None on HTTP/1.0 without Host.
    pub host: Option<String>,
    /// The port from the Host header, when given.
    pub host_port: Option<u16>,
    /// Body framing.
    pub body: BodyFraming,
    /// Whether the client wants the connection kept open after this response.
    pub keep_alive: bool,
    /// Whether the client sent `Expect: 100-continue`.
    pub expect_continue: bool,
    /// Length in bytes of the head in the input buffer (up to and including the empty line).
    pub head_len: usize,
    head: Vec<u8>,
    /// (name_start, name_end, value_start, value_end) offsets into `head`.
    fields: Vec<(u32, u32, u32, u32)>,
}

impl Request {
    /// The value of the first header named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        let _ = name;
        todo!()
    }

    /// Every header as (name as received, value).
    pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let _ = (&self.head, &self.fields);
        std::iter::empty::<(&[u8], &[u8])>()
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
}

/// Parses a request head from the start of `buf`.
///
/// `Ok(None)`: incomplete, read more (unless `buf.len() >= max_head`, which is reported as 431).
/// Leading empty lines before the request line (RFC 9112 §2.2) are skipped and counted in
/// `head_len`.
pub fn parse(buf: &[u8], max_head: usize) -> Result<Option<Request>, RequestError> {
    let _ = (buf, max_head);
    todo!()
}
