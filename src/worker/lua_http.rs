//! `http.request{...}` from a route (issue 13): one HTTP/1.1 exchange with a plain address,
//! driven by the worker's event loop on the connection's backend token while the route waits.
//!
//! [`Parser`] is the sans-IO part (response head, then a Content-Length, chunked or
//! close-delimited body, bounded); [`Call`] owns the socket. Plain `ip:port` addresses only
//! (no DNS: a lookup would block the worker); `upstream = "name"` of the reverse proxy is
//! meant to plug in here, choosing the address and reusing its pool.

use std::io::{self, Read};

use mio::{Registry, Token};

use crate::config::ListenAddr;
use crate::http::body::{BodyError, BodyReader};
use crate::http::request::BodyFraming;
use crate::script::{HttpReply, HttpSpec};
use crate::transport::Stream;

/// Largest response head.
const MAX_HEAD: usize = 64 * 1024;

/// What the parser has.
enum Parse {
    Head(Vec<u8>),
    Body {
        status: u16,
        headers: Vec<(String, String)>,
        framing: Framing,
        body: Vec<u8>,
    },
}

enum Framing {
    Reader(BodyReader),
    Close,
}

/// A response being parsed.
pub struct Parser {
    state: Parse,
    limit: u64,
    head_request: bool,
}

impl Parser {
    /// A parser for a response of at most `limit` body bytes.
    pub fn new(limit: u64, head_request: bool) -> Parser {
        Parser {
            state: Parse::Head(Vec::new()),
            limit,
            head_request,
        }
    }

    /// Feeds bytes; Some when the response is complete (or failed).
    pub fn feed(&mut self, mut input: &[u8]) -> Option<Result<HttpReply, String>> {
        if let Parse::Head(buf) = &mut self.state {
            buf.extend_from_slice(input);
            let mut hdrs = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut hdrs);
            let n = match resp.parse(buf) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                    return Some(Err("response head too large".into()))
                }
                Ok(httparse::Status::Partial) => return None,
                Err(e) => return Some(Err(format!("bad response head: {e}"))),
            };
            let status = resp.code.unwrap_or(0);
            let headers: Vec<(String, String)> = resp
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).trim().to_string(),
                    )
                })
                .collect();
            let has = |name: &str| headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name));
            let no_body = self.head_request || status / 100 == 1 || status == 204 || status == 304;
            let framing = if no_body {
                BodyFraming::Length(0)
            } else if has("transfer-encoding")
                .is_some_and(|(_, v)| v.to_ascii_lowercase().contains("chunked"))
            {
                BodyFraming::Chunked
            } else if let Some((_, v)) = has("content-length") {
                match v.parse::<u64>() {
                    Ok(n) => BodyFraming::Length(n),
                    Err(_) => return Some(Err("bad Content-Length in the response".into())),
                }
            } else {
                BodyFraming::None
            };
            let framing = match framing {
                BodyFraming::None => Framing::Close,
                f => match BodyReader::new(f, self.limit) {
                    Ok(r) => Framing::Reader(r),
                    Err(_) => return Some(Err("response too large".into())),
                },
            };
            let rest = buf.split_off(n);
            self.state = Parse::Body {
                status,
                headers,
                framing,
                body: Vec::new(),
            };
            let r = self.feed_body(&rest);
            if r.is_some() {
                return r;
            }
            input = &[];
        }
        self.feed_body(input)
    }

    fn feed_body(&mut self, input: &[u8]) -> Option<Result<HttpReply, String>> {
        let Parse::Body { framing, body, .. } = &mut self.state else {
            return None;
        };
        let done = match framing {
            Framing::Close => {
                body.extend_from_slice(input);
                if body.len() as u64 > self.limit {
                    return Some(Err("response too large".into()));
                }
                false
            }
            Framing::Reader(r) => match r.feed(input, &mut |b| body.extend_from_slice(b)) {
                Ok(f) => f.done,
                Err(BodyError::TooLarge { .. }) => return Some(Err("response too large".into())),
                Err(e) => return Some(Err(format!("bad response body: {e:?}"))),
            },
        };
        done.then(|| self.finish())
    }

    /// The peer closed: a close-delimited body ends here; anything else is cut short.
    pub fn eof(&mut self) -> Result<HttpReply, String> {
        match &self.state {
            Parse::Body {
                framing: Framing::Close,
                ..
            } => self.finish(),
            Parse::Head(b) if b.is_empty() => Err("connection closed before a response".into()),
            _ => Err("connection closed mid-response".into()),
        }
    }

    fn finish(&mut self) -> Result<HttpReply, String> {
        match std::mem::replace(&mut self.state, Parse::Head(Vec::new())) {
            Parse::Body {
                status,
                headers,
                body,
                ..
            } => Ok(HttpReply {
                status,
                headers,
                body,
            }),
            Parse::Head(_) => Err("no response".into()),
        }
    }
}

/// One call in flight.
pub struct Call {
    sock: Stream,
    out: Vec<u8>,
    sent: usize,
    parser: Parser,
    connected: bool,
}

impl Call {
    /// Starts the call: a non-blocking connect, registered for events on `token`.
    pub fn start(spec: &HttpSpec, registry: &Registry, token: Token) -> io::Result<Call> {
        let mut sock = Stream::connect(&ListenAddr::Tcp(spec.addr))?;
        sock.register(registry, token)?;
        let mut out = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\n",
            spec.method, spec.path, spec.host
        )
        .into_bytes();
        let mut has_len = false;
        for (n, v) in &spec.headers {
            has_len |= n.eq_ignore_ascii_case("content-length");
            out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        if !spec.body.is_empty() && !has_len {
            out.extend_from_slice(format!("Content-Length: {}\r\n", spec.body.len()).as_bytes());
        }
        out.extend_from_slice(b"Connection: close\r\n\r\n");
        out.extend_from_slice(&spec.body);
        Ok(Call {
            sock,
            out,
            sent: 0,
            parser: Parser::new(spec.max_body, spec.method == "HEAD"),
            connected: false,
        })
    }

    /// Moves the call on after socket readiness; Some once it ended.
    pub fn drive(&mut self) -> Option<Result<HttpReply, String>> {
        if !self.connected {
            match self.sock.connected() {
                Ok(()) => self.connected = true,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return None,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) => return Some(Err(format!("connect: {e}"))),
            }
        }
        while self.sent < self.out.len() {
            match self.sock.send(&self.out[self.sent..], false) {
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Some(Err(format!("send: {e}"))),
            }
        }
        let mut buf = [0u8; 16 * 1024];
        loop {
            match self.sock.read(&mut buf) {
                Ok(0) => return Some(self.parser.eof()),
                Ok(n) => {
                    if let Some(r) = self.parser.feed(&buf[..n]) {
                        return Some(r);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Some(Err(format!("read: {e}"))),
            }
        }
    }

    /// Stops its events (the socket closes when the call is dropped).
    pub fn stop(&mut self, registry: &Registry) {
        let _ = self.sock.deregister(registry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_length_chunked_and_close_delimited_responses() {
        let mut p = Parser::new(100, false);
        assert!(p.feed(b"HTTP/1.1 200 OK\r\nContent-Le").is_none());
        let r = p.feed(b"ngth: 5\r\nX-A: b\r\n\r\nhello").unwrap().unwrap();
        assert_eq!((r.status, &r.body[..]), (200, &b"hello"[..]));
        assert_eq!(r.headers[1], ("X-A".to_string(), "b".to_string()));

        let mut p = Parser::new(100, false);
        let r = p
            .feed(
                b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            )
            .unwrap()
            .unwrap();
        assert_eq!((r.status, &r.body[..]), (201, &b"abc"[..]));

        let mut p = Parser::new(100, false);
        assert!(p.feed(b"HTTP/1.0 200 OK\r\n\r\nuntil close").is_none());
        assert_eq!(p.eof().unwrap().body, b"until close");

        let mut p = Parser::new(4, false);
        assert!(p
            .feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
            .unwrap()
            .is_err());
        let mut p = Parser::new(100, false);
        assert!(p
            .feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab")
            .is_none());
        assert!(p.eof().is_err());
    }
}
