//! One request's exchange with an HTTP upstream, driven by its client connection.
//!
//! ```text
//! Connecting (Link::Connecting: a kept connection is Connected at once)
//!    → Sending (Link::Connected): the head, then the body as it arrives (Content-Length as
//!      is, chunked re-chunked), with backpressure
//!    → ReceivingHead (Response::Head): 1xx skipped (100 relayed to a client that expects it)
//!    → StreamingBody (Response::Body): Content-Length passed, chunked decoded and
//!      re-chunked, close-delimited chunked to an HTTP/1.1 client; or, when `compress` and
//!      Accept-Encoding allow it (`fcgi_compress::plan_lines`, the FastCGI rules), coded on
//!      the fly through a `fcgi_compress::CodedBody`, chunked (HTTP/1.1) or close-delimited
//!      (HTTP/1.0), the upstream's Content-Length dropped
//!    → done: the connection goes back to the pool when the response was framed, complete,
//!      with nothing after it, and the upstream keeps it
//!    or, after a 101 to an upgrade request: Tunnel (bytes both ways until one side closes,
//!      under the read timeout as idle timeout)
//! ```
//!
//! Failures: a connect refused or timed out tries the next address (nothing was sent), else
//! 502; no head within `read_timeout` → 504; a malformed or ambiguous response head → 502
//! and the connection is dropped, so nothing the upstream sent after it reaches the next
//! client; the upstream closing mid-body closes the client connection (the truncation
//! shows). A kept connection the upstream closed while idle is replaced once, before any
//! response byte, for an idempotent request or one with no body taken yet.

use super::exchange::Exchanging;
use super::fcgi::{Env, RequestBody, Step};
use super::fcgi_compress::{self, CodedBody, Offer};
use super::fcgi_error::ExchangeError;
use super::inbuf::InBuf;
use super::out::Out;
use super::splice::{Moved, Pipe};
use super::timers::{Kind, Slot};
use crate::http::body::BodyReader;
use crate::http::request::{BodyFraming, Method, Request, Version};
use crate::http::response::{connection_field, write_head, Connection, Framing, Head};
use crate::proxy::headers::{self, Forward};
use crate::proxy::response::{self, BodyFraming as UpFraming, ResponseHead};
use crate::proxy::ProxyTarget;
use crate::transport::Stream;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

/// Stop reading the client while this much waits for the upstream.
const TO_UPSTREAM_MAX: usize = 64 * 1024;
/// Stop reading the upstream while this much waits for the client.
const TO_CLIENT_MAX: usize = 256 * 1024;
/// Largest response head accepted from an upstream.
const MAX_RESPONSE_HEAD: usize = 32 * 1024;

/// The timer kinds of one upstream: connect, read, send.
#[derive(Debug, Clone, Copy)]
pub struct Kinds {
    connect: Kind,
    read: Kind,
    send: Kind,
}

impl Kinds {
    /// The kinds of upstream `u` in a config with `fastcgi` FastCGI backends: the worker's
    /// timers hold two backend pairs per upstream after the FastCGI ones, (connect, read)
    /// and (send, send).
    pub fn of(fastcgi: usize, u: usize) -> Kinds {
        let b = fastcgi + 2 * u;
        Kinds {
            connect: Kind::backend_connect(b),
            read: Kind::backend_read(b),
            send: Kind::backend_connect(b + 1),
        }
    }

    /// The durations to give the worker's timers for one upstream: two (connect, read) pairs.
    pub fn durations(d: &crate::config::UpstreamDef) -> [(Duration, Duration); 2] {
        [
            (d.connect_timeout, d.read_timeout),
            (d.send_timeout, d.send_timeout),
        ]
    }
}

/// What the request's connection tells the exchange.
pub struct ClientFacts<'a> {
    /// The client's address.
    pub ip: &'a str,
    /// The client's port (the respond hook's `req.remote_port`).
    pub port: u16,
    /// The local address and port the request came in on (the respond hook's listener).
    pub server_addr: (String, u16),
    /// The Host used when the client sent none (the local address).
    pub local: String,
    /// Whether the client connection is TLS (X-Forwarded-Proto, Forwarded proto).
    pub https: bool,
    /// The user an `auth` rule authenticated (the access log's `$remote_user`).
    pub user: Option<String>,
    /// The site's header lines for a response below 400 that lacks them
    /// (worker::site_headers).
    pub site_headers: Vec<u8>,
    /// The coding the response may get (the site's `compress` and Accept-Encoding allow one).
    pub compress: Option<Offer>,
}

/// The client's request body on its way to the upstream.
enum BodyIn {
    /// None, or all of it taken.
    None,
    /// Being read: forwarded as is (Content-Length) or re-chunked (chunked).
    Reading { reader: BodyReader, chunked: bool },
}

/// The exchange's hold on an upstream connection.
enum Link {
    /// None: about to pick an address, or let go of.
    None,
    /// A non-blocking connect is under way.
    Connecting(Wire),
    /// Connected.
    Connected(Wire),
}

struct Wire {
    addr: usize,
    sock: Stream,
    reused: bool,
    readable: bool,
    writable: bool,
    /// An event said the upstream shut its side: the connection is not kept, whatever the
    /// response said (its EOF may sit unread behind the response, and no event repeats it).
    peer_closed: bool,
}

/// The addresses an exchange tried, without an allocation for the first few.
#[derive(Default)]
struct Tried {
    inline: [usize; 4],
    len: usize,
    more: Vec<usize>,
}

impl Tried {
    fn as_slice(&self) -> &[usize] {
        if self.more.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.more
        }
    }

    fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }

    fn push(&mut self, a: usize) {
        if self.more.is_empty() && self.len < self.inline.len() {
            self.inline[self.len] = a;
            self.len += 1;
        } else {
            if self.more.is_empty() {
                self.more.extend_from_slice(&self.inline[..self.len]);
            }
            self.more.push(a);
        }
    }

    fn pop(&mut self) {
        if self.more.is_empty() {
            self.len = self.len.saturating_sub(1);
        } else {
            self.more.pop();
            if self.more.is_empty() {
                // Every address tried went back: start over inline.
                self.len = 0;
            }
        }
    }
}

/// How the upstream frames the response body.
enum UpBody {
    None,
    Length(u64),
    Chunked(BodyReader),
    Close,
}

/// How the body goes to the client.
enum ToClient {
    /// As the bytes come (Content-Length, or close-delimited to HTTP/1.0).
    Raw,
    /// Re-chunked.
    Chunked,
    /// Dropped (HEAD, 204, 304).
    Nothing,
    /// Compressed on the fly and framed by the coded body itself: chunked (HTTP/1.1) or
    /// close-delimited (HTTP/1.0), the upstream's Content-Length dropped. Boxed: an encoder
    /// is large and most responses have none.
    Coded(Box<CodedBody>),
}

enum Response {
    /// Receiving the head: the bytes so far.
    Head(Vec<u8>),
    /// The head went to the client; the body streams.
    Body { up: UpBody, to_client: ToClient },
    /// After a 101: bytes pass both ways as they are.
    Tunnel,
}

/// One request's exchange with an upstream.
pub struct ProxyExchange {
    req: Request,
    upstream: usize,
    kinds: Kinds,
    /// The request head until the first attempt moves it into `to_up` (where a retry finds
    /// it again: see `start`).
    head: Vec<u8>,
    hash_key: Vec<u8>,
    tried: Tried,
    stale_retry_used: bool,
    link: Link,
    to_up: Vec<u8>,
    to_pos: usize,
    /// Whether a request byte was written on the current connection.
    sent_any: bool,
    body: BodyIn,
    /// Whether body bytes were taken from the client (then no retry).
    body_consumed: bool,
    response: Response,
    /// Whether the upstream connection may be kept after the response.
    reusable: bool,
    status: Option<u16>,
    close_client: bool,
    keepalive_client: bool,
    upgrade: bool,
    /// Whether Via gets this proxy's entry both ways (`via = true`).
    via: bool,
    timer: Slot,
    started: Instant,
    /// The address of the last attempt, and the time to its response head.
    last_addr: Option<usize>,
    head_after: Option<Duration>,
    /// A tunnel's pipe for splicing upstream bytes to the client (None: copied).
    pipe: Option<Pipe>,
    /// The upstream closed a tunnel while the pipe still held bytes for the client.
    tunnel_eof: bool,
    /// A tunnel's pipe for splicing client bytes to the upstream (None: copied through the
    /// connection's input buffer).
    pipe_up: Option<Pipe>,
    /// Bytes taken from the client after a 101, whichever way they went (`$bytes_received`;
    /// the other direction is the connection's payload count, `$body_bytes_sent`).
    tunnel_in: u64,
    /// The real client and the listener's address, for the respond hook.
    remote: (String, u16),
    server_addr: (String, u16),
    /// Whether the client connection is TLS (the respond hook's `req.scheme`).
    https: bool,
    /// The user an `auth` rule authenticated, for the access log.
    user: Option<String>,
    /// The site's header lines for a response below 400 (worker::site_headers).
    site_headers: Vec<u8>,
    /// The coding the response may get (fcgi_compress::offer).
    compress: Option<Offer>,
}

impl ProxyExchange {
    /// Starts an exchange for `req` to `t.upstream`.
    pub fn new(
        req: Request,
        t: ProxyTarget,
        client: ClientFacts<'_>,
        body: RequestBody,
        keepalive_client: bool,
        kinds: Kinds,
        env: &Env<'_>,
    ) -> io::Result<ProxyExchange> {
        let reader = |framing, limit| {
            BodyReader::new(framing, limit).map_err(|e| io::Error::other(e.reason()))
        };
        let body = match body {
            RequestBody::None => BodyIn::None,
            RequestBody::Length(n) => BodyIn::Reading {
                reader: reader(BodyFraming::Length(n), n)?,
                chunked: false,
            },
            RequestBody::Chunked { limit } => BodyIn::Reading {
                reader: reader(BodyFraming::Chunked, limit)?,
                chunked: true,
            },
        };
        let def = env.upstreams.list.get(t.upstream).map(|u| &u.def);
        let keep_upstream = def.is_some_and(|d| d.keepalive > 0);
        let via = def.is_some_and(|d| d.via);
        let upgrade = headers::wants_upgrade(&req);
        let mut head = Vec::with_capacity(512);
        headers::write_request(
            &mut head,
            &req,
            &Forward {
                path: t.path.as_deref(),
                host: t.host.as_deref(),
                headers: &t.headers,
                client_ip: client.ip,
                proto: if client.https { "https" } else { "http" },
                default_host: &client.local,
                keep_upstream,
                via,
            },
        );
        let hash_key = env
            .upstreams
            .hash_key(t.upstream, client.ip.as_bytes(), |h| req.header(h))
            .to_vec();
        Ok(ProxyExchange {
            upstream: t.upstream,
            kinds,
            head,
            hash_key,
            tried: Tried::default(),
            stale_retry_used: false,
            link: Link::None,
            to_up: Vec::new(),
            to_pos: 0,
            sent_any: false,
            body,
            body_consumed: false,
            response: Response::Head(Vec::new()),
            reusable: keep_upstream,
            status: None,
            close_client: false,
            keepalive_client,
            upgrade,
            via,
            timer: Slot::new(env.now),
            started: env.now,
            last_addr: None,
            head_after: None,
            pipe: None,
            tunnel_eof: false,
            pipe_up: None,
            tunnel_in: 0,
            remote: (client.ip.to_string(), client.port),
            server_addr: client.server_addr,
            https: client.https,
            user: client.user,
            site_headers: client.site_headers,
            compress: client.compress,
            req,
        })
    }

    fn head_sent(&self) -> bool {
        !matches!(self.response, Response::Head(_))
    }

    fn nothing_received(&self) -> bool {
        matches!(&self.response, Response::Head(b) if b.is_empty())
    }

    fn reused(&self) -> bool {
        matches!(&self.link, Link::Connecting(w) | Link::Connected(w) if w.reused)
    }

    /// Whether a request body is still to be taken from the client.
    fn body_may_come(&self) -> bool {
        matches!(self.body, BodyIn::Reading { .. })
    }

    /// Whether the whole request (head and body) went out.
    fn request_out(&self) -> bool {
        matches!(self.body, BodyIn::None) && self.to_pos == self.to_up.len()
    }

    fn name(&self, env: &Env<'_>) -> String {
        env.upstreams
            .list
            .get(self.upstream)
            .map(|u| u.def.name.clone())
            .unwrap_or_default()
    }

    /// The upstream address of the last attempt and its time to the response head, for the
    /// access log.
    pub fn upstream_note<'e>(&self, env: &'e Env<'_>) -> Option<(&'e str, Option<Duration>)> {
        let a = self.last_addr?;
        Some((env.upstreams.addr_text(self.upstream, a), self.head_after))
    }

    /// Logs a failure once, lets go of the upstream, and says what the connection must do.
    fn failed(&mut self, env: &mut Env<'_>, e: ExchangeError, blame: bool) -> Step {
        let name = self.name(env);
        let addr = self
            .last_addr
            .map(|a| env.upstreams.addr_text(self.upstream, a).to_string())
            .unwrap_or_default();
        if e.is_client_fault() {
            tracing::info!("upstream '{name}' {addr}: {e}");
        } else {
            tracing::warn!("upstream '{name}' {addr}: {e}");
        }
        self.finish_upstream(env, blame);
        if self.head_sent() {
            Step::Abort(e)
        } else {
            Step::Fail(e)
        }
    }

    /// Picks an address and connects (a kept connection is ready at once).
    fn start(&mut self, env: &mut Env<'_>) -> Result<(), ExchangeError> {
        loop {
            let Some(a) = env.upstreams.pick(
                self.upstream,
                env.now,
                self.tried.as_slice(),
                &self.hash_key,
            ) else {
                return Err(if self.tried.is_empty() {
                    ExchangeError::NoAddress
                } else {
                    ExchangeError::Io(io::Error::new(
                        io::ErrorKind::ConnectionRefused,
                        "no address of the upstream answered",
                    ))
                });
            };
            self.tried.push(a);
            self.last_addr = Some(a);
            // A stale kept connection is retried (`may_retry`) when that is safe, so only a
            // request that cannot be sent twice pays for the check before reuse. The retry
            // checks too: the upstream may have closed every kept connection while idle, and
            // a second stale one must not turn into a 502.
            let peek =
                self.stale_retry_used || !self.req.method.is_idempotent() || self.body_may_come();
            let token = env.token;
            match env
                .upstreams
                .connect_registered(self.upstream, a, env.registry, token, peek)
            {
                Ok(c) => {
                    let sock = c.stream;
                    env.upstreams.begin(self.upstream, a);
                    let wire = Wire {
                        addr: a,
                        sock,
                        reused: c.reused,
                        // A kept connection is read before the request goes out only when
                        // it had an event while idle (the upstream closing it: its EOF sends
                        // the request to the next one at once). Without one it has nothing
                        // to read, and reading anyway cost an EAGAIN `recvfrom` on most
                        // proxied requests; if the upstream closed it unseen, the request
                        // sent to it raises an event (its RST), and `may_retry` goes on.
                        readable: c.readable,
                        writable: c.reused,
                        peer_closed: false,
                    };
                    let kind = if c.reused {
                        self.link = Link::Connected(wire);
                        self.kinds.send
                    } else {
                        self.link = Link::Connecting(wire);
                        self.kinds.connect
                    };
                    // The queue is the head alone until a body byte is taken, and no retry
                    // comes after that: a retry sends it again from the start.
                    if !self.head.is_empty() {
                        self.to_up = std::mem::take(&mut self.head);
                    }
                    self.to_pos = 0;
                    self.sent_any = false;
                    env.timers.arm(&mut self.timer, kind, env.key, env.now);
                    return Ok(());
                }
                Err(e) => {
                    let name = self.name(env);
                    tracing::warn!(
                        "upstream '{name}' {}: connect: {e}",
                        env.upstreams.addr_text(self.upstream, a)
                    );
                    env.upstreams.connect_failed(self.upstream, a, env.now);
                }
            }
        }
    }

    /// Takes the client's body (or tunnel bytes) into the upstream queue, within its room.
    fn take_input(&mut self, input: &mut InBuf) -> Result<bool, ExchangeError> {
        if !matches!(self.link, Link::Connected(_)) {
            return Ok(false);
        }
        let room = TO_UPSTREAM_MAX.saturating_sub(self.to_up.len() - self.to_pos);
        let n = input.len().min(room);
        if n == 0 {
            return Ok(false);
        }
        if matches!(self.response, Response::Tunnel) {
            compact(&mut self.to_up, &mut self.to_pos);
            self.to_up.extend_from_slice(&input.data()[..n]);
            input.consume(n);
            self.tunnel_in += n as u64;
            return Ok(true);
        }
        let BodyIn::Reading { reader, chunked } = &mut self.body else {
            return Ok(false);
        };
        compact(&mut self.to_up, &mut self.to_pos);
        let to_up = &mut self.to_up;
        let chunked = *chunked;
        let fed = reader
            .feed(&input.data()[..n], &mut |data| {
                if chunked {
                    let _ = write!(to_up, "{:x}\r\n", data.len());
                    to_up.extend_from_slice(data);
                    to_up.extend_from_slice(b"\r\n");
                } else {
                    to_up.extend_from_slice(data);
                }
            })
            .map_err(ExchangeError::Body)?;
        input.consume(fed.consumed);
        self.body_consumed |= fed.consumed > 0;
        if fed.done {
            if chunked {
                self.to_up.extend_from_slice(b"0\r\n\r\n");
            }
            self.body = BodyIn::None;
        }
        Ok(fed.consumed > 0)
    }

    fn write_upstream(&mut self) -> io::Result<bool> {
        let Link::Connected(w) = &mut self.link else {
            return Ok(false);
        };
        let mut progress = false;
        while w.writable && self.to_pos < self.to_up.len() {
            match w.sock.write(&self.to_up[self.to_pos..]) {
                Ok(n) => {
                    self.to_pos += n;
                    self.sent_any |= n > 0;
                    progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => w.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(progress)
    }

    fn read_upstream(&mut self, out: &mut Out, env: &mut Env<'_>) -> Result<Read_, ExchangeError> {
        let mut progress = false;
        // Upstream bytes taken in this call: a compressed body's output stays small while its
        // input may be huge (zeros, logs), so the output bound alone would let one call code
        // hundreds of MB; the connection's run is bounded in passes (LIFECYCLE rule 17) and
        // goes on later, the socket still marked readable.
        let mut taken = 0;
        loop {
            if out.buffered() >= TO_CLIENT_MAX || taken >= TO_CLIENT_MAX {
                break;
            }
            let Link::Connected(w) = &mut self.link else {
                break;
            };
            if !w.readable {
                break;
            }
            let mut data = env.bufs.take_backend();
            let n = match w.sock.read(&mut data) {
                Ok(0) => {
                    env.bufs.give_backend(data);
                    return Ok(Read_::Eof);
                }
                Ok(n) => n,
                Err(e) => {
                    env.bufs.give_backend(data);
                    match e.kind() {
                        io::ErrorKind::WouldBlock => {
                            w.readable = false;
                            break;
                        }
                        io::ErrorKind::Interrupted => continue,
                        _ => return Ok(Read_::Eof),
                    }
                }
            };
            progress = true;
            taken += n;
            env.timers
                .arm(&mut self.timer, self.kinds.read, env.key, env.now);
            let r = self.consume(&data[..n], out, env);
            env.bufs.give_backend(data);
            if r? {
                return Ok(Read_::Done);
            }
        }
        if progress {
            self.flush_coded(out);
        }
        Ok(if progress {
            Read_::Progress
        } else {
            Read_::Idle
        })
    }

    /// Takes response bytes; Ok(true) once the response is complete.
    fn consume(
        &mut self,
        data: &[u8],
        out: &mut Out,
        env: &mut Env<'_>,
    ) -> Result<bool, ExchangeError> {
        let Response::Head(buf) = &mut self.response else {
            return Ok(self.body_bytes(data, out));
        };
        if buf.is_empty() {
            // The usual case, a whole final head in one read: parsed where it was read, no
            // copy. Anything else (partial, interim, refused) takes the path below.
            let head_only = self.req.method == Method::Head;
            if let Ok(Some(head)) = response::parse(data, MAX_RESPONSE_HEAD, head_only) {
                if !head.is_interim() && (head.status != 101 || self.upgrade) {
                    self.head_after = Some(env.now.saturating_duration_since(self.started));
                    self.send_head(&head, out, env);
                    return Ok(self.body_bytes(&data[head.head_len..], out));
                }
            }
        }
        let Response::Head(buf) = &mut self.response else {
            return Ok(false);
        };
        buf.extend_from_slice(data);
        let rest = loop {
            let Response::Head(buf) = &mut self.response else {
                return Ok(false);
            };
            let head_only = self.req.method == Method::Head;
            let head = match response::parse(buf, MAX_RESPONSE_HEAD, head_only) {
                Ok(None) => return Ok(false),
                Ok(Some(h)) => h,
                Err(e) => return Err(ExchangeError::BadHead(e.reason().to_string())),
            };
            let rest = buf.split_off(head.head_len);
            if head.is_interim() {
                if head.status == 100
                    && self.req.expect_continue
                    && self.req.version == Version::Http11
                {
                    out.push_head(b"HTTP/1.1 100 Continue\r\n\r\n");
                }
                self.response = Response::Head(rest);
                continue;
            }
            if head.status == 101 && !self.upgrade {
                return Err(ExchangeError::BadHead(
                    "101 to a request that asked for no upgrade".into(),
                ));
            }
            self.head_after = Some(env.now.saturating_duration_since(self.started));
            self.send_head(&head, out, env);
            break rest;
        };
        Ok(self.body_bytes(&rest, out))
    }

    fn send_head(&mut self, h: &ResponseHead, out: &mut Out, env: &mut Env<'_>) {
        let version = self.req.version;
        let head_only = self.req.method == Method::Head;
        self.status = Some(h.status);
        self.reusable &= h.keep_alive;
        let no_body = crate::http::status::forbids_body(h.status) || h.status == 101;
        // Both head buffers come from the worker's free list (one request's worth each).
        let mut fields = env.bufs.take_bytes();
        headers::response_lines_into(&mut fields, h);
        if self.via {
            headers::put_via(&mut fields, h.minor);
        }
        // Never a tunnel: after a 101 the bytes are no body.
        let coded = if h.status == 101 {
            None
        } else {
            self.plan_coding(h, head_only, &mut fields, env)
        };
        let (up, to_client, framing) = match (h.framing, coded) {
            _ if h.status == 101 => (UpBody::None, ToClient::Nothing, Framing::Unframed),
            // A coded HEAD answer: the coded head (Content-Encoding, Vary, the variant's
            // ETag) without a length (the coded one is unknown), and no body.
            (_, Some(_)) if head_only => (UpBody::None, ToClient::Nothing, Framing::Unframed),
            (f, Some(body)) => {
                let framing = if body.framing == fcgi_compress::Framing::Chunked {
                    Framing::Chunked
                } else {
                    self.close_client = true;
                    Framing::Unframed
                };
                (up_body(f), ToClient::Coded(body), framing)
            }
            (UpFraming::None, None) => {
                let f = match h.content_length {
                    Some(n) if head_only && !no_body => Framing::Length(n),
                    _ => Framing::Unframed,
                };
                (UpBody::None, ToClient::Nothing, f)
            }
            (UpFraming::Length(n), None) => (UpBody::Length(n), ToClient::Raw, Framing::Length(n)),
            (f @ (UpFraming::Chunked | UpFraming::Close), None) => {
                if version == Version::Http11 {
                    (up_body(f), ToClient::Chunked, Framing::Chunked)
                } else {
                    self.close_client = true;
                    (up_body(f), ToClient::Raw, Framing::Unframed)
                }
            }
        };
        if !self.keepalive_client {
            self.close_client = true;
        }
        // The respond hook sees a proxied head as a FastCGI one (README: every response).
        let hooked = super::respond_hook::on_backend_head(
            env.router.as_deref_mut(),
            &self.req,
            super::respond_hook::BackendClient {
                remote: &self.remote,
                server_addr: &self.server_addr,
                https: self.https,
            },
            h.status,
            &fields,
            &[],
        );
        let (lines, overrides) = match &hooked {
            Some((l, o)) => (&l[..], &o[..]),
            None => (&fields[..], &[][..]),
        };
        let added =
            super::site_headers::add_missing(h.status, lines, overrides, &self.site_headers);
        let lines = added.as_deref().unwrap_or(lines);
        let connection = if h.status == 101 {
            Connection::Default
        } else {
            connection_field(self.close_client, version)
        };
        let mut buf = env.bufs.take_bytes();
        write_head(
            &mut buf,
            &Head {
                status: h.status,
                date: env.date,
                server: env.server_name,
                headers: lines,
                overrides,
                framing,
                connection,
            },
        );
        out.start(env.bufs);
        out.push_head(&buf);
        env.bufs.give_bytes(buf);
        env.bufs.give_bytes(fields);
        self.response = if h.status == 101 {
            self.close_client = true;
            Response::Tunnel
        } else {
            Response::Body { up, to_client }
        };
    }

    /// Passes body bytes on; true once the body is complete. Bytes after its end mean the
    /// connection is not reused (and they are never sent to anyone).
    fn body_bytes(&mut self, data: &[u8], out: &mut Out) -> bool {
        let mut extra = false;
        let mut coding_error = None;
        let done = match &mut self.response {
            Response::Head(_) => false,
            Response::Tunnel => {
                out.push_body(data);
                false
            }
            Response::Body { up, to_client } => {
                let mut sink = |d: &[u8]| {
                    if let Err(e) = pass(out, to_client, d) {
                        coding_error.get_or_insert(e);
                    }
                };
                match up {
                    UpBody::None => {
                        extra = !data.is_empty();
                        true
                    }
                    UpBody::Length(left) => {
                        let n = (*left).min(data.len() as u64) as usize;
                        sink(&data[..n]);
                        *left -= n as u64;
                        extra = n < data.len();
                        *left == 0
                    }
                    UpBody::Chunked(reader) => match reader.feed(data, &mut sink) {
                        Ok(fed) => {
                            extra = fed.consumed < data.len();
                            fed.done
                        }
                        Err(_) => {
                            // Bad chunked framing after the head went out: only closing
                            // shows the client the truncation.
                            self.close_client = true;
                            self.reusable = false;
                            return true;
                        }
                    },
                    UpBody::Close => {
                        sink(data);
                        false
                    }
                }
            }
        };
        if let Some(e) = coding_error {
            self.coding_failed(e);
        }
        if extra {
            tracing::warn!("upstream sent bytes after the response end; connection dropped");
            self.reusable = false;
        }
        done
    }

    /// Whether the response is to be coded (the site's `compress` and the client's
    /// Accept-Encoding allow it, and the head passes the FastCGI rules): then `fields` holds
    /// the head's lines rewritten for the coded variant, and the body's framing and encoder
    /// come back (a HEAD answer: no encoder, no body).
    fn plan_coding(
        &self,
        h: &ResponseHead,
        head_only: bool,
        fields: &mut Vec<u8>,
        env: &mut Env<'_>,
    ) -> Option<Box<CodedBody>> {
        let offer = self.compress.as_ref()?;
        let mut coded = env.bufs.take_bytes();
        let body =
            if fcgi_compress::plan_lines(offer, h.status, h.content_length, fields, &mut coded) {
                if head_only {
                    // The head a GET would get: coded only if an encoder can be made.
                    offer
                        .encoder()
                        .map(|_| CodedBody::new(fcgi_compress::Framing::None, None))
                } else {
                    let framing = if self.req.version == Version::Http11 {
                        fcgi_compress::Framing::Chunked
                    } else {
                        fcgi_compress::Framing::Close
                    };
                    offer.encoder().map(|e| CodedBody::new(framing, Some(e)))
                }
            } else {
                None
            };
        if body.is_some() {
            std::mem::swap(fields, &mut coded);
        }
        env.bufs.give_bytes(coded);
        body.map(Box::new)
    }

    /// Flushes the encoder at the end of a read burst, so a slowly streamed response reaches
    /// the client without waiting for more of it.
    fn flush_coded(&mut self, out: &mut Out) {
        if let Response::Body {
            to_client: ToClient::Coded(body),
            ..
        } = &mut self.response
        {
            if let Err(e) = body.push(&[], true, out) {
                self.coding_failed(e);
            }
        }
    }

    /// The encoder failed: the coded body is cut (nothing more goes out, no last chunk) and
    /// the client connection closes, which shows the truncation. The upstream's response is
    /// still read to its end, so its connection may be kept.
    fn coding_failed(&mut self, e: io::Error) {
        tracing::error!("compressing a proxied response: {e}");
        self.close_client = true;
    }

    /// The response is complete: ends the client's body and keeps or drops the connection.
    fn complete(&mut self, out: &mut Out, env: &mut Env<'_>, clean: bool) {
        match &mut self.response {
            Response::Body {
                to_client: ToClient::Chunked,
                ..
            } => out.push_framing(b"0\r\n\r\n"),
            Response::Body {
                to_client: ToClient::Coded(body),
                ..
            } => {
                // The encoder's last bytes, then the last chunk (when chunked).
                match body.end(out) {
                    Ok(short) => self.close_client |= short,
                    Err(e) => self.coding_failed(e),
                }
            }
            _ => {}
        }
        let keep = clean && self.reusable && self.request_out();
        if let Link::Connecting(w) | Link::Connected(w) =
            std::mem::replace(&mut self.link, Link::None)
        {
            env.upstreams.end(self.upstream, w.addr, false, env.now);
            if keep && !w.peer_closed {
                // Left registered: the next request of this client connection takes it
                // without an epoll_ctl (pool::Upstreams::release_registered).
                env.upstreams
                    .release_registered(self.upstream, w.addr, w.sock, env.token);
            }
        }
        env.timers.disarm(&mut self.timer);
    }

    fn may_retry(&self) -> bool {
        self.reused()
            && !self.stale_retry_used
            && self.nothing_received()
            && !self.body_consumed
            && (!self.sent_any || self.req.method.is_idempotent())
    }

    fn eof(&mut self, out: &mut Out, env: &mut Env<'_>) -> Step {
        match &self.response {
            Response::Body {
                up: UpBody::Close, ..
            } => {
                self.complete(out, env, false);
                return Step::Done;
            }
            Response::Tunnel => {
                self.complete(out, env, false);
                return Step::Done;
            }
            _ => {}
        }
        if self.may_retry() {
            // A kept connection the upstream had closed while idle: once more, fresh.
            self.stale_retry_used = true;
            self.finish_upstream(env, false);
            self.tried.pop();
            return Step::Progress;
        }
        let blame = !(self.reused() && self.nothing_received());
        let mid_response = self.head_sent();
        self.failed(env, ExchangeError::Closed { mid_response }, blame)
    }

    fn connect_failed(&mut self, e: io::Error, env: &mut Env<'_>) -> Step {
        let name = self.name(env);
        if let Link::Connecting(w) | Link::Connected(w) = &self.link {
            tracing::warn!(
                "upstream '{name}' {}: connect: {e}",
                env.upstreams.addr_text(self.upstream, w.addr)
            );
        }
        self.finish_upstream(env, true);
        // Nothing was sent: the next address may take it.
        Step::Progress
    }

    /// Drops the upstream connection (after a failure, or before a retry).
    fn finish_upstream(&mut self, env: &mut Env<'_>, failed: bool) {
        if let Link::Connecting(w) | Link::Connected(w) =
            std::mem::replace(&mut self.link, Link::None)
        {
            env.upstreams.end(self.upstream, w.addr, failed, env.now);
        }
        env.timers.disarm(&mut self.timer);
    }
}

impl ProxyExchange {
    /// A tunnel's upstream → client direction with splice, once the output queue (the 101
    /// head, bytes that came with it) is out: upstream socket → pipe → client socket.
    fn splice_tunnel(
        &mut self,
        out: &mut Out,
        client: &Stream,
        env: &mut Env<'_>,
    ) -> io::Result<Read_> {
        let (Some(pipe), Link::Connected(w)) = (&mut self.pipe, &mut self.link) else {
            return Ok(Read_::Idle);
        };
        let mut progress = false;
        loop {
            if out.pending() {
                break;
            }
            if pipe.held() > 0 {
                match pipe.drain_to(client)? {
                    Moved::Bytes(n) => {
                        out.sent_beside(n as u64);
                        progress = true;
                    }
                    _ => break,
                }
                if pipe.held() > 0 {
                    // The client's socket is full: its writable event comes back here.
                    break;
                }
            }
            if self.tunnel_eof {
                return Ok(Read_::Eof);
            }
            if !w.readable {
                break;
            }
            match pipe.fill_from(&w.sock)? {
                Moved::Bytes(_) => {
                    progress = true;
                    env.timers
                        .arm(&mut self.timer, self.kinds.read, env.key, env.now);
                }
                Moved::WouldBlock => w.readable = false,
                Moved::Eof => {
                    self.tunnel_eof = true;
                    if pipe.held() == 0 {
                        return Ok(Read_::Eof);
                    }
                }
            }
        }
        Ok(if progress {
            Read_::Progress
        } else {
            Read_::Idle
        })
    }
}

impl ProxyExchange {
    /// A tunnel's client → upstream direction with splice: what the up pipe holds goes
    /// first; once it, the input buffer and the upstream queue are empty, client socket →
    /// pipe → upstream socket (bytes the connection read into its buffer meanwhile follow
    /// through the queue, in order). Ok(true) on progress; Err when the tunnel ends (client
    /// EOF, or a socket failed).
    fn splice_up(&mut self, input: &InBuf, client: &Stream, env: &mut Env<'_>) -> Result<bool, ()> {
        let (Some(pipe), Link::Connected(w)) = (&mut self.pipe_up, &mut self.link) else {
            return Ok(false);
        };
        let mut progress = false;
        loop {
            if pipe.held() > 0 {
                if !w.writable {
                    break;
                }
                match pipe.drain_to(&w.sock).map_err(|_| ())? {
                    Moved::Bytes(_) => {
                        progress = true;
                        env.timers
                            .arm(&mut self.timer, self.kinds.send, env.key, env.now);
                    }
                    _ => w.writable = false,
                }
                if pipe.held() > 0 {
                    break;
                }
            }
            if !input.is_empty() || self.to_pos < self.to_up.len() {
                break;
            }
            match pipe.fill_from(client).map_err(|_| ())? {
                Moved::Bytes(n) => {
                    self.tunnel_in += n as u64;
                    progress = true;
                }
                Moved::WouldBlock => break,
                Moved::Eof => return Err(()),
            }
        }
        Ok(progress)
    }
}

/// How the upstream's body framing is read.
fn up_body(f: UpFraming) -> UpBody {
    match f {
        UpFraming::None => UpBody::None,
        UpFraming::Length(n) => UpBody::Length(n),
        UpFraming::Chunked => match BodyReader::new(BodyFraming::Chunked, u64::MAX) {
            Ok(r) => UpBody::Chunked(r),
            Err(_) => UpBody::Close,
        },
        UpFraming::Close => UpBody::Close,
    }
}

/// Body bytes to the client as `to` frames them; Err when the encoder of a coded body failed
/// (the body is cut then: nothing more of it goes out).
fn pass(out: &mut Out, to: &mut ToClient, data: &[u8]) -> io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    match to {
        ToClient::Raw => out.push_body(data),
        ToClient::Chunked => {
            // Framing is not body: `$body_bytes_sent` counts the data only.
            let mut size = [0u8; 20];
            let n = chunk_size_line(&mut size, data.len());
            out.push_framing(&size[..n]);
            out.push_body(data);
            out.push_framing(b"\r\n");
        }
        ToClient::Nothing => {}
        // Never more than announced: a coded body is chunked or close-delimited.
        ToClient::Coded(body) => {
            body.push(data, false, out)?;
        }
    }
    Ok(())
}

/// Writes `len` in hex and CRLF into `buf`; returns the length written.
fn chunk_size_line(buf: &mut [u8; 20], len: usize) -> usize {
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1) as usize;
    for (i, b) in buf[..digits].iter_mut().enumerate() {
        let shift = 4 * (digits - 1 - i);
        *b = b"0123456789abcdef"[(len >> shift) & 0xf];
    }
    buf[digits] = b'\r';
    buf[digits + 1] = b'\n';
    digits + 2
}

enum Read_ {
    Idle,
    Progress,
    Done,
    Eof,
}

fn compact(buf: &mut Vec<u8>, pos: &mut usize) {
    if *pos == buf.len() {
        buf.clear();
        *pos = 0;
    } else if *pos > 0 && *pos * 2 >= buf.len() {
        buf.drain(..*pos);
        *pos = 0;
    }
}

impl Exchanging for ProxyExchange {
    fn request(&self) -> &Request {
        &self.req
    }

    fn head_sent(&self) -> bool {
        ProxyExchange::head_sent(self)
    }

    fn remote_user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    fn status(&self) -> Option<u16> {
        self.status
    }

    fn closes_client(&self) -> bool {
        self.close_client
    }

    fn owns_timer(&self, gen: u64) -> bool {
        self.timer.is(gen)
    }

    fn wants_client_input(&self) -> bool {
        let room = self.to_up.len() - self.to_pos < TO_UPSTREAM_MAX;
        match (&self.body, &self.response) {
            (_, Response::Tunnel) => room,
            (BodyIn::Reading { reader, .. }, _) => !reader.is_done() && room,
            _ => false,
        }
    }

    fn backend_ready(&mut self, readable: bool, writable: bool, read_closed: bool) {
        if let Link::Connecting(w) | Link::Connected(w) = &mut self.link {
            w.readable |= readable;
            w.writable |= writable;
            w.peer_closed |= read_closed;
        }
    }

    fn body_left(&self) -> Option<u64> {
        match &self.body {
            BodyIn::Reading { reader, .. } => reader.remaining(),
            BodyIn::None => None,
        }
    }

    fn body_pending(&self) -> bool {
        matches!(self.body, BodyIn::Reading { .. }) || matches!(self.response, Response::Tunnel)
    }

    fn timed_out(&mut self, env: &mut Env<'_>) -> Step {
        match &self.link {
            Link::Connecting(_) => {
                let e = io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
                self.connect_failed(e, env)
            }
            _ if matches!(self.response, Response::Tunnel) => {
                self.failed(env, ExchangeError::Timeout("tunnel idle"), false)
            }
            _ if !self.request_out() => self.failed(env, ExchangeError::Timeout("send"), true),
            _ => self.failed(env, ExchangeError::Timeout("read"), true),
        }
    }

    fn drive(
        &mut self,
        input: &mut InBuf,
        out: &mut Out,
        client: &Stream,
        env: &mut Env<'_>,
    ) -> Step {
        let mut progress = false;
        if matches!(self.link, Link::None) {
            match self.start(env) {
                Ok(()) => progress = true,
                Err(e) => return self.failed(env, e, false),
            }
        }
        if let Link::Connecting(w) = &mut self.link {
            if !w.writable {
                return if progress { Step::Progress } else { Step::Idle };
            }
            // The event may be stale (Stream::connect_progress): then wait for the next.
            match w.sock.connect_progress(&mut w.writable) {
                Ok(true) => {}
                Ok(false) => return if progress { Step::Progress } else { Step::Idle },
                Err(e) => return self.connect_failed(e, env),
            }
            if let Link::Connecting(w) = std::mem::replace(&mut self.link, Link::None) {
                self.link = Link::Connected(w);
            }
            env.timers
                .arm(&mut self.timer, self.kinds.send, env.key, env.now);
            progress = true;
        }
        match self.splice_up(input, client, env) {
            Ok(true) => progress = true,
            Ok(false) => {}
            // The client closed the tunnel (or either socket failed): it ends.
            Err(()) => {
                self.complete(out, env, false);
                return Step::Done;
            }
        }
        // Bytes read into the input buffer came after what the up pipe holds.
        let up_held = self.pipe_up.as_ref().is_some_and(|p| p.held() > 0);
        match self.take_input(input) {
            _ if up_held => {}
            Ok(true) => progress = true,
            Ok(false) => {}
            Err(e) => return self.failed(env, e, false),
        }
        match self.write_upstream() {
            Ok(true) => {
                progress = true;
                let tunnel = matches!(self.response, Response::Tunnel);
                if self.to_pos < self.to_up.len() || tunnel {
                    env.timers
                        .arm(&mut self.timer, self.kinds.send, env.key, env.now);
                } else if self.request_out() {
                    env.timers
                        .arm(&mut self.timer, self.kinds.read, env.key, env.now);
                } else if !self.head_sent() {
                    // All sent, the rest of the body is the client's to send: its read
                    // timeout runs, the upstream is not late.
                    env.timers.disarm(&mut self.timer);
                }
            }
            Ok(false) => {}
            Err(e) => {
                if self.may_retry() {
                    self.stale_retry_used = true;
                    self.finish_upstream(env, false);
                    self.tried.pop();
                    return Step::Progress;
                }
                if self.head_sent() || !self.nothing_received() {
                    // The upstream stopped reading the body but answers: read on, and drop
                    // what was meant for it (the connection cannot be kept).
                    self.reusable = false;
                    self.to_up.clear();
                    self.to_pos = 0;
                } else {
                    return self.failed(env, ExchangeError::Io(e), true);
                }
            }
        }
        if out.buffered() >= TO_CLIENT_MAX {
            // Waiting on the client, whose write timeout applies, not on the upstream.
            env.timers
                .arm(&mut self.timer, self.kinds.read, env.key, env.now);
        }
        let tunnel = matches!(self.response, Response::Tunnel);
        if tunnel && self.pipe.is_none() && client.can_splice() {
            // Where the client's stream takes kernel-side reads and writes (not TLS):
            // zero-copy, both ways.
            self.pipe = Pipe::new().ok();
            self.pipe_up = Pipe::new().ok();
        }
        let read = if tunnel && self.pipe.is_some() {
            match self.splice_tunnel(out, client, env) {
                Ok(r) => Ok(r),
                // The client's side failed: the tunnel ends, which closes both.
                Err(_) => Ok(Read_::Eof),
            }
        } else {
            self.read_upstream(out, env)
        };
        match read {
            Ok(Read_::Progress) => progress = true,
            Ok(Read_::Idle) => {}
            Ok(Read_::Done) => {
                self.complete(out, env, true);
                return Step::Done;
            }
            Ok(Read_::Eof) => return self.eof(out, env),
            Err(e) => {
                self.reusable = false;
                return self.failed(env, e, true);
            }
        }
        if progress {
            Step::Progress
        } else {
            Step::Idle
        }
    }

    fn cancel(&mut self, env: &mut Env<'_>) {
        self.finish_upstream(env, false);
    }

    fn aborts_on_client_eof(&self) -> bool {
        true
    }

    fn is_tunnel(&self) -> bool {
        matches!(self.response, Response::Tunnel)
    }

    fn upstream(&self, env: &Env<'_>) -> Option<(String, Option<Duration>)> {
        self.upstream_note(env).map(|(a, d)| (a.to_string(), d))
    }

    fn bytes_received(&self) -> u64 {
        self.tunnel_in
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_size_lines_are_lower_hex() {
        let mut b = [0u8; 20];
        for (len, want) in [
            (0usize, "0\r\n"),
            (1, "1\r\n"),
            (15, "f\r\n"),
            (16, "10\r\n"),
            (1000, "3e8\r\n"),
            (65536, "10000\r\n"),
            (usize::MAX, "ffffffffffffffff\r\n"),
        ] {
            let n = chunk_size_line(&mut b, len);
            assert_eq!(&b[..n], want.as_bytes());
        }
    }

    #[test]
    fn tried_spills_past_four_and_pops_back() {
        let mut t = Tried::default();
        assert!(t.is_empty());
        for a in 0..6 {
            t.push(a * 10);
        }
        assert_eq!(t.as_slice(), &[0, 10, 20, 30, 40, 50]);
        t.pop();
        assert_eq!(t.as_slice(), &[0, 10, 20, 30, 40]);
        let mut t = Tried::default();
        t.push(7);
        t.push(8);
        t.pop();
        assert_eq!(t.as_slice(), &[7]);
    }
}
