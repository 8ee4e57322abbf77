//! `http.request{...}` from a route (issue 13): one HTTP/1.1 exchange with a plain address,
//! driven by the worker's event loop on the connection's backend token while the route waits.
//!
//! [`Parser`] is the sans-IO part (response head, then a Content-Length, chunked or
//! close-delimited body, bounded); [`Call`] owns the socket. A `url` is a plain `ip:port`
//! (no DNS: a lookup would block the worker) and a fresh connection per call. With
//! `upstream = "name"` the reverse proxy's pool (`proxy::pool::Upstreams`) picks the address
//! (its balancing; passive health: a failed connect tries the next address and counts against
//! the failed one), its `connect_timeout`, `send_timeout` and `read_timeout` apply (the worker
//! wakes the call at [`Call::deadline`]; a `send_timeout` given in the call replaces the
//! upstream's, and bounds a `url` call's sending too), and a complete, framed response leaves the connection in the pool
//! for the next request, proxied or `http.request`, when the upstream has `keepalive`.

use std::io::{self, Read};
use std::time::{Duration, Instant};

use mio::{Registry, Token};

use crate::config::ListenAddr;
use crate::http::body::{BodyError, BodyReader};
use crate::http::request::{BodyFraming, Request};
use crate::proxy::pool::Upstreams;
use crate::script::{HttpReply, HttpSpec, HttpTarget};
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
    /// HTTP/1.1 without `Connection: close`: the peer may keep the connection.
    peer_keeps: bool,
    /// Bytes came after the end of the response (the connection must not be reused).
    extra: bool,
}

impl Parser {
    /// A parser for a response of at most `limit` body bytes.
    pub fn new(limit: u64, head_request: bool) -> Parser {
        Parser {
            state: Parse::Head(Vec::new()),
            limit,
            head_request,
            peer_keeps: false,
            extra: false,
        }
    }

    /// Whether no response byte arrived yet.
    pub fn nothing_received(&self) -> bool {
        matches!(&self.state, Parse::Head(b) if b.is_empty())
    }

    /// Whether the connection may carry another request after this (complete) response: it
    /// was framed (not close-delimited), nothing followed it, and the peer keeps it.
    pub fn reusable(&self) -> bool {
        self.peer_keeps && !self.extra
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
            self.peer_keeps = resp.version == Some(1)
                && !has("connection").is_some_and(|(_, v)| {
                    v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close"))
                });
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
                BodyFraming::None => {
                    self.peer_keeps = false;
                    Framing::Close
                }
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
                Ok(f) => {
                    self.extra |= f.done && f.consumed < input.len();
                    f.done
                }
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

/// What a call needs of the worker.
pub struct CallEnv<'a> {
    /// The worker's upstreams (`upstream = "name"`).
    pub upstreams: &'a mut Upstreams,
    /// The poll registry.
    pub registry: &'a Registry,
    /// The connection's backend token.
    pub token: Token,
    /// The time of this loop iteration.
    pub now: Instant,
}

/// Why an attempt failed.
enum Failure {
    /// The connect failed: nothing was sent, the next address may take the request.
    Connect(String),
    /// A kept connection failed before any response byte: it may have gone stale while idle.
    Stale(String),
    /// The exchange failed; `blame` counts it against the address (passive health).
    Exchange { msg: String, blame: bool },
}

impl Failure {
    fn text(self) -> String {
        match self {
            Failure::Connect(m) | Failure::Stale(m) | Failure::Exchange { msg: m, .. } => m,
        }
    }
}

/// A call to an upstream block: the address it holds, and what is left to try.
struct Via {
    u: usize,
    name: String,
    /// The address in use.
    addr: usize,
    tried: Vec<usize>,
    key: Vec<u8>,
    reused: bool,
    /// A stale kept connection was replaced once already.
    stale_retry_used: bool,
    /// The request lets the upstream keep the connection (its `keepalive` is not 0).
    keep: bool,
    idempotent: bool,
    connect_timeout: Duration,
    send_timeout: Duration,
    read_timeout: Duration,
    /// When the connect under way, or the wait for the upstream's next bytes, times out.
    deadline: Instant,
    /// The pool counts a request in flight on `addr` (begin without end yet).
    open: bool,
    last_error: String,
}

impl Via {
    /// Picks an address not tried yet and connects (a kept connection is ready at once).
    fn open(&mut self, env: &mut CallEnv<'_>) -> Result<Stream, String> {
        loop {
            let Some(a) = env.upstreams.pick(self.u, env.now, &self.tried, &self.key) else {
                return Err(if self.tried.is_empty() {
                    format!(
                        "upstream '{}' has no address in service (drained, or failing its health checks)",
                        self.name
                    )
                } else {
                    format!(
                        "connect: no address of upstream '{}' answered ({})",
                        self.name, self.last_error
                    )
                });
            };
            self.tried.push(a);
            match env.upstreams.connect(self.u, a) {
                Ok(c) => {
                    let mut sock = c.stream;
                    sock.register(env.registry, env.token)
                        .map_err(|e| format!("register: {e}"))?;
                    env.upstreams.begin(self.u, a);
                    self.addr = a;
                    self.open = true;
                    self.reused = c.reused;
                    let wait = if c.reused {
                        self.read_timeout
                    } else {
                        self.connect_timeout
                    };
                    self.deadline = env.now + wait;
                    return Ok(sock);
                }
                Err(e) => {
                    self.last_error = format!("{}: {e}", env.upstreams.addr_text(self.u, a));
                    tracing::warn!("http.request upstream '{}' {}", self.name, self.last_error);
                    env.upstreams.connect_failed(self.u, a, env.now);
                }
            }
        }
    }

    /// The request on the address in use ended.
    fn end(&mut self, env: &mut CallEnv<'_>, failed: bool) {
        if std::mem::take(&mut self.open) {
            env.upstreams.end(self.u, self.addr, failed, env.now);
        }
    }
}

/// One call in flight.
pub struct Call {
    /// The socket (None once handed back to the upstream pool).
    sock: Option<Stream>,
    out: Vec<u8>,
    sent: usize,
    parser: Parser,
    connected: bool,
    /// `upstream = "name"`: the upstream's part.
    via: Option<Via>,
    max_body: u64,
    head_request: bool,
    /// The longest the peer may take no request bytes while the request is being sent.
    send_timeout: Option<Duration>,
    /// While sending: when `send_timeout` ends the call (moved by each byte sent).
    send_deadline: Instant,
}

impl Call {
    /// Starts the call: a non-blocking connect (for an upstream, to the address its balancing
    /// picks, or one of its kept connections), registered for events on the env's token.
    /// `client` and `req` give `balance = "hash"` its key.
    pub fn start(
        spec: &HttpSpec,
        env: &mut CallEnv<'_>,
        client: &str,
        req: &Request,
    ) -> Result<Call, String> {
        let (sock, via) = match &spec.target {
            HttpTarget::Addr(a) => {
                let mut sock =
                    Stream::connect(&ListenAddr::Tcp(*a)).map_err(|e| format!("connect: {e}"))?;
                sock.register(env.registry, env.token)
                    .map_err(|e| format!("connect: {e}"))?;
                (sock, None)
            }
            HttpTarget::Upstream(name) => {
                let Some(u) = env.upstreams.index_of(name) else {
                    let names: Vec<&str> = env
                        .upstreams
                        .list
                        .iter()
                        .map(|u| u.def.name.as_str())
                        .collect();
                    return Err(format!(
                        "no upstream '{name}' (defined: {})",
                        if names.is_empty() {
                            "none".to_string()
                        } else {
                            names.join(", ")
                        }
                    ));
                };
                let def = &env.upstreams.list[u].def;
                let mut via = Via {
                    u,
                    name: name.clone(),
                    addr: 0,
                    tried: Vec::new(),
                    key: env
                        .upstreams
                        .hash_key(u, client.as_bytes(), |h| req.header(h))
                        .to_vec(),
                    reused: false,
                    stale_retry_used: false,
                    keep: def.keepalive > 0,
                    idempotent: matches!(
                        spec.method.as_str(),
                        "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
                    ),
                    connect_timeout: def.connect_timeout,
                    send_timeout: def.send_timeout,
                    read_timeout: def.read_timeout,
                    deadline: env.now,
                    open: false,
                    last_error: String::new(),
                };
                let sock = via.open(env)?;
                (sock, Some(via))
            }
        };
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
        if via.as_ref().is_some_and(|v| v.keep) {
            out.extend_from_slice(b"\r\n");
        } else {
            out.extend_from_slice(b"Connection: close\r\n\r\n");
        }
        out.extend_from_slice(&spec.body);
        let head_request = spec.method == "HEAD";
        let send_timeout = spec
            .send_timeout
            .or_else(|| via.as_ref().map(|v| v.send_timeout));
        Ok(Call {
            send_timeout,
            send_deadline: env.now + send_timeout.unwrap_or_default(),
            connected: via.as_ref().is_some_and(|v| v.reused),
            sock: Some(sock),
            out,
            sent: 0,
            parser: Parser::new(spec.max_body, head_request),
            via,
            max_body: spec.max_body,
            head_request,
        })
    }

    /// When the connect, send or read timeout ends the attempt under way (None for a plain
    /// `url` call without `send_timeout`, or past its sending: only its own `timeout` bounds
    /// it).
    pub fn deadline(&self) -> Option<Instant> {
        if self.sending() && self.send_timeout.is_some() {
            return Some(self.send_deadline);
        }
        self.via.as_ref().map(|v| v.deadline)
    }

    /// Connected, with request bytes still to send: `send_timeout` applies, not `read_timeout`.
    fn sending(&self) -> bool {
        self.connected && self.sent < self.out.len()
    }

    /// Moves the call on after socket readiness; Some once it ended.
    pub fn drive(&mut self, env: &mut CallEnv<'_>) -> Option<Result<HttpReply, String>> {
        loop {
            let r = self.step(env.now)?;
            if self.via.is_none() {
                return Some(r.map_err(Failure::text));
            }
            match r {
                Ok(reply) => {
                    self.finish(env);
                    return Some(Ok(reply));
                }
                Err(f) => {
                    if let Err(msg) = self.recover(f, env) {
                        return Some(Err(msg));
                    }
                }
            }
        }
    }

    /// The upstream's connect or read timeout passed (see [`Call::deadline`]): a connect
    /// moves on to the next address (None while that one is under way); a wait for the
    /// response ends the call with "timeout".
    pub fn expired(&mut self, env: &mut CallEnv<'_>) -> Option<Result<HttpReply, String>> {
        if let Some(t) = self.send_timeout.filter(|_| self.sending()) {
            if env.now < self.send_deadline {
                return None;
            }
            // A peer that stopped reading the request (its buffers full): nginx's
            // proxy_send_timeout, between two successful writes.
            let msg = format!(
                "timeout: the upstream took no request bytes for send_timeout ({}s; {} of {} sent)",
                t.as_secs_f64(),
                self.sent,
                self.out.len()
            );
            if let Some(via) = &mut self.via {
                tracing::warn!(
                    "http.request upstream '{}' {}: {msg}",
                    via.name,
                    env.upstreams.addr_text(via.u, via.addr)
                );
                via.end(env, true);
            }
            return Some(Err(msg));
        }
        let via = self.via.as_mut()?;
        if env.now < via.deadline {
            return None;
        }
        if !self.connected {
            let msg = format!(
                "connect: {}: timed out",
                env.upstreams.addr_text(via.u, via.addr)
            );
            return self.recover(Failure::Connect(msg), env).err().map(Err);
        }
        tracing::warn!(
            "http.request upstream '{}' {}: no response within read_timeout",
            via.name,
            env.upstreams.addr_text(via.u, via.addr)
        );
        via.end(env, true);
        Some(Err("timeout".into()))
    }

    /// Ends the call before its response (its own `timeout`, `limits.lua_wall`, the client
    /// left): not held against the upstream's address.
    pub fn give_up(&mut self, env: &mut CallEnv<'_>) {
        self.stop(env.registry);
        if let Some(via) = &mut self.via {
            via.end(env, false);
        }
    }

    /// Stops its events (the socket closes when the call is dropped).
    pub fn stop(&mut self, registry: &Registry) {
        if let Some(sock) = &mut self.sock {
            let _ = sock.deregister(registry);
        }
    }

    /// The response is complete: the address did well, and a reusable connection goes back
    /// to the upstream's pool.
    fn finish(&mut self, env: &mut CallEnv<'_>) {
        let Some(via) = &mut self.via else { return };
        via.end(env, false);
        if via.keep && self.parser.reusable() {
            if let Some(mut sock) = self.sock.take() {
                let _ = sock.deregister(env.registry);
                env.upstreams.release(via.u, via.addr, sock);
            }
        }
    }

    /// After a failed attempt: the next address (a connect failed), a fresh connection (a kept
    /// one had gone stale), or the error.
    fn recover(&mut self, f: Failure, env: &mut CallEnv<'_>) -> Result<(), String> {
        let Some(via) = &mut self.via else {
            return Err(f.text());
        };
        let addr = env.upstreams.addr_text(via.u, via.addr).to_string();
        match f {
            Failure::Connect(msg) => {
                tracing::warn!("http.request upstream '{}' {addr}: {msg}", via.name);
                via.last_error = msg;
                via.end(env, true);
            }
            Failure::Stale(msg) if !via.stale_retry_used && (self.sent == 0 || via.idempotent) => {
                tracing::debug!(
                    "http.request upstream '{}' {addr}: kept connection: {msg}",
                    via.name
                );
                via.stale_retry_used = true;
                via.end(env, false);
                via.tried.pop();
            }
            Failure::Stale(msg) => {
                via.end(env, false);
                return Err(msg);
            }
            Failure::Exchange { msg, blame } => {
                if blame {
                    tracing::warn!("http.request upstream '{}' {addr}: {msg}", via.name);
                }
                via.end(env, blame);
                return Err(msg);
            }
        }
        if let Some(mut old) = self.sock.take() {
            let _ = old.deregister(env.registry);
        }
        let sock = via.open(env)?;
        self.sock = Some(sock);
        self.connected = via.reused;
        self.send_deadline = env.now + self.send_timeout.unwrap_or_default();
        self.sent = 0;
        self.parser = Parser::new(self.max_body, self.head_request);
        Ok(())
    }

    /// One pass over the socket: connect, send, read.
    fn step(&mut self, now: Instant) -> Option<Result<HttpReply, Failure>> {
        let sock = self.sock.as_mut()?;
        let reused = self.via.as_ref().is_some_and(|v| v.reused);
        // A failure on a kept connection before any response byte may be its staleness.
        let lost = |parser: &Parser, msg: String| {
            if reused && parser.nothing_received() {
                Failure::Stale(msg)
            } else {
                Failure::Exchange { msg, blame: true }
            }
        };
        if !self.connected {
            match sock.connected() {
                Ok(()) => {
                    self.connected = true;
                    self.send_deadline = now + self.send_timeout.unwrap_or_default();
                    if let Some(v) = &mut self.via {
                        v.deadline = now + v.read_timeout;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return None,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) => return Some(Err(Failure::Connect(format!("connect: {e}")))),
            }
        }
        let mut progress = false;
        while self.sent < self.out.len() {
            match sock.send(&self.out[self.sent..], false) {
                Ok(n) => {
                    self.sent += n;
                    progress = true;
                    self.send_deadline = now + self.send_timeout.unwrap_or_default();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Some(Err(lost(&self.parser, format!("send: {e}")))),
            }
        }
        let mut buf = [0u8; 16 * 1024];
        let r = loop {
            if self.sent < self.out.len() {
                break None;
            }
            match sock.read(&mut buf) {
                Ok(0) => {
                    break Some(match self.parser.eof() {
                        Ok(r) => Ok(r),
                        Err(msg) => Err(lost(&self.parser, msg)),
                    })
                }
                Ok(n) => {
                    progress = true;
                    if let Some(r) = self.parser.feed(&buf[..n]) {
                        // A bad or oversized response says nothing of the connection's age.
                        break Some(r.map_err(|msg| Failure::Exchange {
                            blame: msg != "response too large",
                            msg,
                        }));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Some(Err(lost(&self.parser, format!("read: {e}")))),
            }
        };
        if progress {
            if let Some(v) = &mut self.via {
                v.deadline = now + v.read_timeout;
            }
        }
        r
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

    #[test]
    fn only_a_framed_clean_response_leaves_its_connection_reusable() {
        let mut p = Parser::new(100, false);
        assert!(p.nothing_received());
        p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .unwrap()
            .unwrap();
        assert!(p.reusable());
        let mut p = Parser::new(100, false);
        p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA")
            .unwrap()
            .unwrap();
        assert!(!p.reusable(), "bytes after the end");
        let mut p = Parser::new(100, false);
        p.feed(b"HTTP/1.1 204 No\r\nConnection: keep-alive, close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!p.reusable(), "Connection: close");
        let mut p = Parser::new(100, false);
        p.feed(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!p.reusable(), "HTTP/1.0");
        let mut p = Parser::new(100, false);
        assert!(p.feed(b"HTTP/1.1 200 OK\r\n\r\nclose-delimited").is_none());
        assert!(!p.nothing_received());
        p.eof().unwrap();
        assert!(!p.reusable(), "close-delimited");
    }
}
