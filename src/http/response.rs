//! Response head encoding.

use super::request::Version;
use super::status;
use std::io::Write;

/// A response head being written into one buffer.
#[derive(Debug)]
pub struct ResponseHead {
    buf: Vec<u8>,
}

impl ResponseHead {
    /// Starts a head with the status line; HTTP/1.0 requests get an HTTP/1.1 status line too
    /// (RFC 9110 §6.2: we send our own version).
    pub fn new(status: u16, _version: Version) -> Self {
        let mut buf = Vec::with_capacity(256);
        let _ = write!(buf, "HTTP/1.1 {} {}\r\n", status, status::reason(status));
        Self { buf }
    }

    /// Adds a header line; the caller guarantees no CR, LF or NUL in either part.
    pub fn header(&mut self, name: &str, value: &str) -> &mut Self {
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.extend_from_slice(b": ");
        self.buf.extend_from_slice(value.as_bytes());
        self.buf.extend_from_slice(b"\r\n");
        self
    }

    /// Adds a header whose value is a number.
    pub fn header_u64(&mut self, name: &str, value: u64) -> &mut Self {
        self.buf.extend_from_slice(name.as_bytes());
        let _ = write!(self.buf, ": {value}\r\n");
        self
    }

    /// Ends the head with the empty line and returns its bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(b"\r\n");
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_status_line_and_headers() {
        let mut h = ResponseHead::new(404, Version::Http10);
        h.header("Server", "x").header_u64("Content-Length", 12);
        assert_eq!(
            h.finish(),
            b"HTTP/1.1 404 Not Found\r\nServer: x\r\nContent-Length: 12\r\n\r\n".to_vec()
        );
    }
}
