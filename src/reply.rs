//! What a handler answers: a status, its own header lines, and a body the worker can send
//! without holding large files in memory.

use crate::http::range::ByteRange;
use std::fs::File;
use std::rc::Rc;

/// The body of a reply.
#[derive(Debug, Default)]
pub enum Body {
    /// No body (Content-Length: 0, or none at all for 204/304).
    #[default]
    Empty,
    /// A small body held in memory.
    Bytes(Vec<u8>),
    /// A part of bytes shared with a cache.
    Shared {
        /// The bytes.
        bytes: Rc<[u8]>,
        /// Where the part starts.
        offset: usize,
        /// How many bytes.
        len: usize,
    },
    /// A range of an open file, sent with sendfile.
    File {
        /// The open file.
        file: Rc<File>,
        /// Where the range starts.
        offset: u64,
        /// How many bytes.
        len: u64,
    },
    /// Several ranges of one file as multipart/byteranges.
    Multipart {
        /// The open file.
        file: Rc<File>,
        /// Each part's head and its range.
        parts: Vec<(Vec<u8>, ByteRange)>,
        /// The closing boundary.
        trailer: Vec<u8>,
    },
    /// A file compressed while it is sent (its coded length is unknown: chunked on HTTP/1.1,
    /// close-delimited on HTTP/1.0).
    Coded(Box<crate::compress::stream::FileCoder>),
}

impl Body {
    /// The body's length in bytes (0 for a coded stream, whose length is not known).
    pub fn len(&self) -> u64 {
        match self {
            Body::Empty | Body::Coded(_) => 0,
            Body::Bytes(b) => b.len() as u64,
            Body::Shared { len, .. } => *len as u64,
            Body::File { len, .. } => *len,
            Body::Multipart { parts, trailer, .. } => {
                parts
                    .iter()
                    .map(|(h, r)| h.len() as u64 + (r.end - r.start + 1))
                    .sum::<u64>()
                    + trailer.len() as u64
            }
        }
    }

    /// Whether the body has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The first allocation of a reply's header lines.
const HEADERS_ROOM: usize = 256;

/// A handler's answer. The worker adds Date, Server, Content-Length and Connection.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// Header lines already formatted, each ending in CRLF.
    pub headers: Vec<u8>,
    /// The body (dropped by the worker for HEAD, keeping its length).
    pub body: Body,
    /// A route decision's header lines: they replace the handler's (and Date or Server) of
    /// the same names.
    pub overrides: Vec<u8>,
}

impl Reply {
    /// A reply with no headers yet.
    pub fn new(status: u16, body: Body) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            body,
            overrides: Vec::new(),
        }
    }

    /// Appends a header line; the caller guarantees no CR, LF or NUL in either part.
    pub fn header(&mut self, name: &str, value: &str) -> &mut Self {
        if self.headers.capacity() == 0 {
            // Room for a static file's lines (type, validators, ranges) in one allocation,
            // instead of a reallocation per line.
            self.headers.reserve(HEADERS_ROOM);
        }
        write_line(&mut self.headers, name, value);
        self
    }

    /// Appends header lines already formatted (each ending in CRLF, with no NUL), such as a
    /// cached file's.
    pub fn header_lines(&mut self, lines: &[u8]) -> &mut Self {
        if self.headers.capacity() == 0 {
            self.headers.reserve(HEADERS_ROOM.max(lines.len()));
        }
        self.headers.extend_from_slice(lines);
        self
    }

    /// Adds a route decision's header line (see `overrides`).
    pub fn override_header(&mut self, name: &str, value: &str) -> &mut Self {
        write_line(&mut self.overrides, name, value);
        self
    }

    /// A short HTML error page for `status`.
    pub fn error(status: u16) -> Self {
        let reason = crate::http::status::reason(status);
        let body = format!(
            "<!DOCTYPE html>\n<html><head><title>{status} {reason}</title></head>\
             <body><h1>{status} {reason}</h1></body></html>\n"
        );
        let mut r = Reply::new(status, Body::Bytes(body.into_bytes()));
        r.header("Content-Type", "text/html; charset=utf-8");
        r
    }
}

fn write_line(buf: &mut Vec<u8>, name: &str, value: &str) {
    buf.extend_from_slice(name.as_bytes());
    buf.extend_from_slice(b": ");
    buf.extend_from_slice(value.as_bytes());
    buf.extend_from_slice(b"\r\n");
}
