//! One request's exchange with a FastCGI backend, driven by its client connection.
//!
//! ```text
//! Buffering (the whole body → memory or a temporary file, before a process is taken: always
//!           for chunked, to learn CONTENT_LENGTH; for Content-Length unless the backend has
//!           `request_buffering = false`, so a slow upload never pins a process)
//!    → Queued (Link::Queued: every process busy; Link::Retiring: a process past its last
//!      request has not closed its connection yet) → Connecting (Link::Connecting)
//!    → Sending (Link::Connected): PARAMS, STDIN (streamed from the client, or the spool)
//!    → ReceivingHead (Response::Head) → StreamingBody (Response::Body: chunked on 1.1
//!      without Content-Length, close-delimited on 1.0), with backpressure both ways
//!    → END_REQUEST → the connection goes back to the pool (FCGI_KEEP_CONN) → done
//! ```
//!
//! Failures are an `ExchangeError` (status and log reason); before anything reached the
//! client they become 400/413/500/502/503/504; a refused connect
//! disables that address for `disable_time` and tries another. A kept connection is probed
//! before reuse (the pool's peek), so one the backend closed while idle is replaced before
//! anything is written. A kept connection that fails after request bytes were written is retried
//! once on a fresh one only for an idempotent method whose body, if any, can be sent again (a
//! spooled body is rewound; one streamed from the client cannot be): a POST the backend may
//! have started (and run its side effect for) gets 502, never a second run. Before any byte
//! went out, a spooled POST is retried as well.
//! After the response head went out, a failure can
//! only close the client connection, which makes the truncation visible.

use super::bufs::Bufs;
use super::fcgi_compress::{CodedBody, Framing};
use super::fcgi_error::ExchangeError;
use super::inbuf::InBuf;
use super::out::Out;
use super::spool::Spool;
use super::timers::{Kind, Slot, Timers};
use crate::fastcgi::cgi_head::{self, CgiHead};
use crate::fastcgi::params::{self, ParamsInput};
use crate::fastcgi::pool::{NoUpstream, Pool};
use crate::fastcgi::record::{self, Decoder, Event};
use crate::http::body::BodyReader;
use crate::http::request::{BodyFraming, Method, Request, Version};
use crate::http::response::{connection_field, write_head, Framing as HeadFraming, Head};
use crate::transport::Stream;
use mio::{Registry, Token};
use std::io::{self, Read, Write};
use std::time::Instant;

/// The request id used on every backend connection (one request per connection at a time).
const REQUEST_ID: u16 = 1;
/// Stop reading the client's body while this much is queued for the backend.
const TO_BACKEND_MAX: usize = 64 * 1024;
/// Stop reading the backend while this much is queued for the client.
const TO_CLIENT_MAX: usize = 256 * 1024;
/// STDERR lines logged per worker and second, beyond which they are counted only.
const STDERR_LINES_PER_SECOND: u32 = 20;

/// What the exchange needs from its connection and worker.
pub struct Env<'a> {
    /// The backends.
    pub pool: &'a mut Pool,
    /// The worker's timers.
    pub timers: &'a mut Timers,
    /// To register backend sockets.
    pub registry: &'a Registry,
    /// The token backend events for this connection carry.
    pub token: Token,
    /// The connection's slab key (timer entries).
    pub key: usize,
    /// Now.
    pub now: Instant,
    /// STDERR rate limit state of the worker.
    pub stderr: &'a mut StderrLimit,
    /// The Date header value.
    pub date: &'a str,
    /// The Server header value.
    pub server_name: &'a str,
    /// The worker's free buffers.
    pub bufs: &'a mut Bufs,
    /// The route function's router, for the respond hook.
    pub router: Option<&'a mut crate::script::Router>,
    /// The HTTP upstreams (for proxy exchanges).
    pub upstreams: &'a mut crate::proxy::pool::Upstreams,
}

/// The worker-wide rate limit on backend STDERR lines in the error log.
#[derive(Debug, Default)]
pub struct StderrLimit {
    second: u64,
    lines: u32,
    suppressed: u64,
}

impl StderrLimit {
    fn log(&mut self, backend: &str, data: &[u8]) {
        let sec = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if sec != self.second {
            if self.suppressed > 0 {
                tracing::warn!(
                    "fastcgi: {} STDERR lines not logged (rate limit)",
                    self.suppressed
                );
            }
            self.second = sec;
            self.lines = 0;
            self.suppressed = 0;
        }
        for line in String::from_utf8_lossy(data).lines() {
            if line.trim().is_empty() {
                continue;
            }
            if self.lines < STDERR_LINES_PER_SECOND {
                self.lines += 1;
                tracing::warn!("fastcgi '{backend}' stderr: {}", line.trim_end());
            } else {
                self.suppressed += 1;
            }
        }
    }
}

/// What the caller learns from driving the exchange.
#[derive(Debug)]
pub enum Step {
    /// Waiting for events.
    Idle,
    /// Something moved; drive again.
    Progress,
    /// The whole response is queued in the client's output; the exchange is over.
    Done,
    /// Failed before the response head: answer with the error's status.
    Fail(ExchangeError),
    /// Failed after the head went out: close the client connection.
    Abort(ExchangeError),
}

/// How the request body reaches the backend.
enum BodyIn {
    /// No body, or all of it sent.
    None,
    /// A Content-Length body forwarded as it arrives.
    Streaming(BodyReader),
    /// A body being read whole before the backend is contacted.
    Spooling { reader: BodyReader, spool: Spool },
    /// A spooled body with this much left to send; kept after it is all queued (`left` 0),
    /// so that a retry on a fresh connection can send it again from the start.
    Spooled { spool: Spool, left: u64 },
}

/// Where an exchange is; it is done when its connection lets go of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangePhase {
    /// The client's body is read whole before a backend is taken.
    Buffering,
    /// Waiting for a process of the backend with room (or about to pick one).
    Queued,
    /// A connect is under way.
    Connecting,
    /// Request records (params, body) are going out.
    Sending,
    /// The request is out; the CGI head is awaited.
    ReceivingHead,
    /// The head went to the client; the body streams.
    StreamingBody,
}

/// The exchange's hold on a backend connection, from queued to connected. The exchange is
/// done when its connection dropped it (`Step::Done`, `Fail`, `Abort`).
enum Link {
    /// No connection: the body is still being buffered, a retry is about to pick an address
    /// again, or the connection was let go of.
    None,
    /// Queued in the pool until a process of the backend has room.
    Queued(QueueWait),
    /// A non-blocking connect to an upstream is under way.
    Connecting(Wire),
    /// Connected: request records go out (sending), response records come in.
    Connected(Wire),
    /// Holding the last connection of a process that served its PHP_FCGI_MAX_REQUESTS
    /// until the process closes it: only then is the new connection made, so the exiting
    /// process cannot accept it and drop the request unread (`Pool::take_retiring`).
    Retiring(Wire),
}

/// How far a queued exchange's wait has gone. It waits the backend's read timeout, then its
/// connect timeout once more: the exchange holding the process may have been still connecting
/// when this one queued, and its read timeout starts only once it is connected, so a wait of
/// the read timeout alone could end a moment before the holder's own timeout frees the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QueueWait {
    /// Within the backend's read timeout from the moment it queued.
    ReadTimeout,
    /// The read timeout passed; the connect timeout runs once more before the 504.
    ConnectGrace,
}

/// A connection to one upstream (address) of the backend.
struct Wire {
    /// The upstream's index within the backend.
    upstream: usize,
    sock: Stream,
    /// Kept from an earlier request (it may have gone stale).
    reused: bool,
    readable: bool,
    writable: bool,
}

/// Where the response is: its CGI head being received, then its body streaming.
enum Response {
    /// Receiving the CGI head: the bytes so far.
    Head(Vec<u8>),
    /// The head went to the client; the body streams, framed and coded (shared with CGI).
    Body(CodedBody),
}

/// Facts about the request the params and the response need.
pub struct Facts {
    /// The request.
    pub req: Request,
    /// SCRIPT_NAME.
    pub script_name: String,
    /// PATH_INFO.
    pub path_info: Option<String>,
    /// SCRIPT_FILENAME.
    pub script_filename: String,
    /// DOCUMENT_ROOT.
    pub document_root: String,
    /// SERVER_ADDR and SERVER_PORT.
    pub server_addr: (String, u16),
    /// REMOTE_ADDR and REMOTE_PORT.
    pub remote: (String, u16),
    /// SERVER_SOFTWARE and the Server header.
    pub server_software: String,
    /// Extra params (from a route decision).
    pub extra: Vec<(String, String)>,
    /// Extra response header lines (from a route decision), each ending in CRLF.
    pub extra_headers: Vec<u8>,
    /// The coding the response may get (compress and Accept-Encoding allow one).
    pub compress: Option<super::fcgi_compress::Offer>,
    /// Whether the client connection is TLS (HTTPS=on, REQUEST_SCHEME=https).
    pub https: bool,
    /// The site's header lines added to a response below 400 that lacks them
    /// (worker::site_headers).
    pub site_headers: Vec<u8>,
}

/// One request's exchange with a backend.
pub struct Exchange {
    facts: Facts,
    backend: usize,
    tried: Vec<usize>,
    stale_retry_used: bool,
    link: Link,
    to_backend: Vec<u8>,
    to_pos: usize,
    /// Whether any byte of the request was written on the current backend connection (then
    /// the backend may have started it).
    sent_any: bool,
    /// The PARAMS records (and BEGIN_REQUEST), kept to replay on a retry.
    preamble: Vec<u8>,
    body: BodyIn,
    /// Whether body bytes were taken from the client's stream (then a retry is impossible,
    /// unless the body was spooled).
    body_consumed: bool,
    stdin_ended: bool,
    decoder: Decoder,
    response: Response,
    head_only: bool,
    /// Response status, once the head is known.
    status: Option<u16>,
    /// Whether the client connection must close after this response.
    close_client: bool,
    /// The backend-side timeout (connect, then read).
    timer: Slot,
    keepalive_client: bool,
    version: Version,
    /// CONTENT_LENGTH: the body's length (for a chunked body, known once it is spooled).
    content_length: Option<u64>,
}

impl Exchange {
    /// Starts an exchange for `body`; `buffer` reads a Content-Length body whole before the
    /// backend is contacted (a chunked one always is), instead of streaming it.
    pub fn new(
        facts: Facts,
        backend: usize,
        body: RequestBody,
        buffer: bool,
        keepalive_client: bool,
        now: Instant,
    ) -> io::Result<Exchange> {
        let content_length = match body {
            RequestBody::Length(n) => Some(n),
            _ => None,
        };
        // The connection checked a Content-Length against the limit already.
        let reader = |framing, limit| {
            BodyReader::new(framing, limit).map_err(|e| io::Error::other(e.reason()))
        };
        let body = match body {
            RequestBody::None => BodyIn::None,
            RequestBody::Length(n) if buffer => BodyIn::Spooling {
                reader: reader(BodyFraming::Length(n), n)?,
                spool: Spool::default(),
            },
            RequestBody::Length(n) => BodyIn::Streaming(reader(BodyFraming::Length(n), n)?),
            RequestBody::Chunked { limit } => BodyIn::Spooling {
                reader: reader(BodyFraming::Chunked, limit)?,
                spool: Spool::default(),
            },
        };
        let head_only = facts.req.method == Method::Head;
        let version = facts.req.version;
        Ok(Exchange {
            facts,
            backend,
            tried: Vec::new(),
            stale_retry_used: false,
            link: Link::None,
            to_backend: Vec::new(),
            to_pos: 0,
            sent_any: false,
            preamble: Vec::new(),
            body,
            body_consumed: false,
            stdin_ended: false,
            decoder: Decoder::new(REQUEST_ID),
            response: Response::Head(Vec::new()),
            head_only,
            status: None,
            close_client: false,
            timer: Slot::new(now),
            keepalive_client,
            version,
            content_length,
        })
    }

    /// The request (for the access log).
    pub fn request(&self) -> &Request {
        &self.facts.req
    }

    /// The extra params (an `auth` rule's REMOTE_USER among them).
    pub fn extra_params(&self) -> &[(String, String)] {
        &self.facts.extra
    }

    /// The response status, once the backend's head is known.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// Whether the client connection must close after this response (a close-delimited or
    /// cut body, or a client that did not ask to keep it).
    pub fn closes_client(&self) -> bool {
        self.close_client
    }

    /// Whether `gen` is the exchange's live backend timeout.
    pub fn owns_timer(&self, gen: u64) -> bool {
        self.timer.is(gen)
    }

    /// Whether the client's body is still being read.
    pub fn wants_client_input(&self) -> bool {
        match &self.body {
            BodyIn::Streaming(r) => {
                !r.is_done() && self.to_backend.len() - self.to_pos < TO_BACKEND_MAX
            }
            BodyIn::Spooling { .. } => true,
            _ => false,
        }
    }

    /// Records readiness of the backend socket.
    pub fn backend_ready(&mut self, readable: bool, writable: bool) {
        if let Link::Connecting(w) | Link::Connected(w) | Link::Retiring(w) = &mut self.link {
            w.readable |= readable;
            w.writable |= writable;
        }
    }

    /// Where the exchange is (its `Link` and `Response` together).
    pub fn phase(&self) -> ExchangePhase {
        match (&self.link, &self.response) {
            (_, Response::Body(_)) => ExchangePhase::StreamingBody,
            (Link::None, _) if matches!(self.body, BodyIn::Spooling { .. }) => {
                ExchangePhase::Buffering
            }
            (Link::None | Link::Queued(_) | Link::Retiring(_), _) => ExchangePhase::Queued,
            (Link::Connecting(_), _) => ExchangePhase::Connecting,
            (Link::Connected(_), _) if !self.stdin_ended || self.to_pos < self.to_backend.len() => {
                ExchangePhase::Sending
            }
            (Link::Connected(_), _) => ExchangePhase::ReceivingHead,
        }
    }

    /// Whether the response head went to the client (after that a failure can only cut the
    /// response short).
    fn head_sent(&self) -> bool {
        matches!(self.response, Response::Body(_))
    }

    /// Whether nothing of the response was received yet.
    fn nothing_received(&self) -> bool {
        matches!(&self.response, Response::Head(b) if b.is_empty())
    }

    /// Whether the backend connection was kept from an earlier request.
    fn reused(&self) -> bool {
        matches!(&self.link, Link::Connecting(w) | Link::Connected(w) if w.reused)
    }

    /// The Content-Length body bytes not yet taken from the client (None for other bodies).
    pub fn body_left(&self) -> Option<u64> {
        match &self.body {
            BodyIn::Streaming(r) => r.remaining(),
            _ => None,
        }
    }

    /// Whether body bytes may still arrive from the client (then the connection cannot be
    /// reused after an error answer).
    pub fn body_pending(&self) -> bool {
        matches!(self.body, BodyIn::Streaming(_) | BodyIn::Spooling { .. })
    }

    /// The backend-side timeout fired.
    pub fn timed_out(&mut self, env: &mut Env<'_>) -> Step {
        if let Link::Retiring(_) = self.link {
            // The process kept its last connection open past connect_timeout: it is not
            // exiting after all (its limit is not the one counted), so connect as usual.
            self.end_retiring(env);
            return Step::Progress;
        }
        if let Link::Queued(QueueWait::ReadTimeout) = self.link {
            self.link = Link::Queued(QueueWait::ConnectGrace);
            let kind = Kind::backend_connect(self.backend);
            env.timers.arm(&mut self.timer, kind, env.key, env.now);
            return Step::Idle;
        }
        let what = match self.phase() {
            ExchangePhase::Queued => "waiting for a free process",
            ExchangePhase::Connecting => "connect",
            _ => "read",
        };
        self.failed(env, ExchangeError::Timeout(what))
    }

    /// Logs a failure once, lets go of the backend and says what the connection must do:
    /// answer with the error's status, or (the head went out) close.
    fn failed(&mut self, env: &mut Env<'_>, e: ExchangeError) -> Step {
        let name = self.backend_name(env);
        if e.is_client_fault() {
            tracing::info!("fastcgi '{name}': {e}");
        } else {
            tracing::warn!("fastcgi '{name}': {e}");
        }
        self.finish_upstream(env, !e.is_client_fault());
        if self.head_sent() {
            Step::Abort(e)
        } else {
            Step::Fail(e)
        }
    }

    /// Moves bytes as far as possible between client, exchange and backend.
    pub fn drive(&mut self, input: &mut InBuf, out: &mut Out, env: &mut Env<'_>) -> Step {
        let mut progress = false;
        // The client's body first: a spool must complete before anything is sent.
        match self.take_body(input) {
            Ok(true) => progress = true,
            Ok(false) => {}
            Err(e) => return self.failed(env, e),
        }
        if matches!(self.body, BodyIn::Spooling { .. }) {
            return if progress { Step::Progress } else { Step::Idle };
        }
        if let Link::Retiring(w) = &mut self.link {
            if !w.readable || crate::fastcgi::pool::still_open(&w.sock) {
                w.readable = false;
                return if progress { Step::Progress } else { Step::Idle };
            }
            // The process closed its last connection: it is gone, connect afresh.
            self.end_retiring(env);
        }
        if matches!(self.link, Link::None | Link::Queued(_)) {
            match self.start(env) {
                Ok(()) if matches!(self.link, Link::Queued(_)) => {
                    return if progress { Step::Progress } else { Step::Idle };
                }
                Ok(()) => progress = true,
                Err(e) => return self.failed(env, e),
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
            env.timers.arm(
                &mut self.timer,
                Kind::backend_read(self.backend),
                env.key,
                env.now,
            );
        }
        match self.write_backend() {
            Ok(true) => {
                progress = true;
                // An upload moving to a backend that waits for the end of STDIN is progress
                // too: the read timeout counts from the last byte in either direction.
                env.timers.arm(
                    &mut self.timer,
                    Kind::backend_read(self.backend),
                    env.key,
                    env.now,
                );
            }
            Ok(false) => {}
            Err(e) => return self.io_failed(e, env),
        }
        match self.read_backend(out, env) {
            Ok(ReadOutcome::Progress) => progress = true,
            Ok(ReadOutcome::Idle) => {}
            Ok(ReadOutcome::Done) => return Step::Done,
            Ok(ReadOutcome::Eof) => return self.eof(env),
            Err(e) => return self.failed(env, e),
        }
        if progress {
            Step::Progress
        } else {
            Step::Idle
        }
    }

    fn backend_name(&self, env: &Env<'_>) -> String {
        env.pool
            .backends
            .get(self.backend)
            .map(|b| b.name.clone())
            .unwrap_or_default()
    }

    /// Takes body bytes from the client: into STDIN records, or into the spool.
    fn take_body(&mut self, input: &mut InBuf) -> Result<bool, ExchangeError> {
        match &mut self.body {
            BodyIn::Streaming(reader) => {
                // Body records follow the params: nothing is taken before the connection and
                // its preamble exist.
                if !matches!(self.link, Link::Connected(_)) {
                    return Ok(false);
                }
                let room = TO_BACKEND_MAX.saturating_sub(self.to_backend.len() - self.to_pos);
                let n = input.len().min(room);
                if n == 0 {
                    return Ok(false);
                }
                compact(&mut self.to_backend, &mut self.to_pos);
                let to_backend = &mut self.to_backend;
                let fed = reader
                    .feed(&input.data()[..n], &mut |data| {
                        record::stdin(to_backend, REQUEST_ID, data)
                    })
                    .map_err(ExchangeError::Body)?;
                input.consume(fed.consumed);
                self.body_consumed = true;
                if fed.done {
                    record::stdin_end(&mut self.to_backend, REQUEST_ID);
                    self.stdin_ended = true;
                    self.body = BodyIn::None;
                }
                Ok(fed.consumed > 0)
            }
            BodyIn::Spooling { reader, spool } => {
                let (progress, whole) = super::spool::fill(spool, reader, input)?;
                if let Some(len) = whole {
                    if let BodyIn::Spooling { spool, .. } =
                        std::mem::replace(&mut self.body, BodyIn::None)
                    {
                        self.content_length = Some(len);
                        self.body = BodyIn::Spooled { spool, left: len };
                    }
                }
                Ok(progress)
            }
            BodyIn::Spooled { spool, left } => {
                let room = TO_BACKEND_MAX.saturating_sub(self.to_backend.len() - self.to_pos);
                if *left == 0 || room == 0 || !matches!(self.link, Link::Connected(_)) {
                    return Ok(false);
                }
                let n = (*left).min(room as u64).min(32 * 1024) as usize;
                // Sent records cannot be replayed on another connection.
                self.body_consumed = true;
                let mut chunk = vec![0u8; n];
                spool.read_exact(&mut chunk).map_err(ExchangeError::Spool)?;
                compact(&mut self.to_backend, &mut self.to_pos);
                record::stdin(&mut self.to_backend, REQUEST_ID, &chunk);
                *left -= n as u64;
                if *left == 0 {
                    record::stdin_end(&mut self.to_backend, REQUEST_ID);
                    self.stdin_ended = true;
                }
                Ok(n > 0)
            }
            BodyIn::None => Ok(false),
        }
    }

    /// Picks an upstream and connects; builds the params on the first attempt.
    fn start(&mut self, env: &mut Env<'_>) -> Result<(), ExchangeError> {
        if self.preamble.is_empty() {
            self.build_preamble(env)?;
        }
        // Processes the watcher closed for a restart: passed over for now, waited for if no
        // other has room.
        let mut closed: Vec<usize> = Vec::new();
        loop {
            let picked = if closed.is_empty() {
                env.pool.pick(self.backend, env.now, &self.tried)
            } else {
                let skip: Vec<usize> = self.tried.iter().chain(&closed).copied().collect();
                env.pool.pick(self.backend, env.now, &skip)
            };
            let u = match picked {
                Ok(u) => u,
                // Busy, or only closed processes left: they come back.
                Err(why) if why == NoUpstream::Busy || !closed.is_empty() => {
                    self.queue(env);
                    return Ok(());
                }
                Err(_) => return Err(ExchangeError::NoAddress),
            };
            // Before anything reaches the process: see `Pool::admit`.
            if !env.pool.admit(self.backend, u, env.now) {
                closed.push(u);
                continue;
            }
            self.tried.push(u);
            if let Some(mut sock) = env.pool.take_retiring(self.backend, u) {
                env.pool.unadmit(self.backend, u);
                if matches!(self.link, Link::Queued(_)) {
                    env.pool.unwait(self.backend, env.key);
                }
                if let Err(e) = sock.register(env.registry, env.token) {
                    env.pool.retired(self.backend, u);
                    return Err(ExchangeError::Register(e));
                }
                // Registering reports a close that happened meanwhile.
                self.link = Link::Retiring(Wire {
                    upstream: u,
                    sock,
                    reused: false,
                    readable: false,
                    writable: false,
                });
                let kind = Kind::backend_connect(self.backend);
                env.timers.arm(&mut self.timer, kind, env.key, env.now);
                return Ok(());
            }
            match env.pool.connect(self.backend, u) {
                Ok(c) => {
                    if matches!(self.link, Link::Queued(_)) {
                        env.pool.unwait(self.backend, env.key);
                    }
                    let mut stream = c.stream;
                    if let Err(e) = stream.register(env.registry, env.token) {
                        env.pool.unadmit(self.backend, u);
                        return Err(ExchangeError::Register(e));
                    }
                    env.pool.begin(self.backend, u);
                    let wire = Wire {
                        upstream: u,
                        sock: stream,
                        reused: c.reused,
                        readable: c.reused,
                        writable: c.reused,
                    };
                    // A kept connection is connected already; a new one connects first.
                    let kind = if c.reused {
                        self.link = Link::Connected(wire);
                        Kind::backend_read(self.backend)
                    } else {
                        self.link = Link::Connecting(wire);
                        Kind::backend_connect(self.backend)
                    };
                    self.to_backend.clear();
                    self.to_pos = 0;
                    self.sent_any = false;
                    self.to_backend.extend_from_slice(&self.preamble);
                    self.rewind_spooled_body()?;
                    self.decoder = Decoder::new(REQUEST_ID);
                    env.timers.arm(&mut self.timer, kind, env.key, env.now);
                    return Ok(());
                }
                Err(e) => {
                    env.pool.unadmit(self.backend, u);
                    tracing::warn!(
                        "fastcgi '{}': connect to address {u}: {e}; disabled for a while",
                        self.backend_name(env)
                    );
                    env.pool.disable(self.backend, u, env.now);
                }
            }
        }
    }

    /// Every process is serving, or closed for a restart: queue until one is free (bounded
    /// by the backend's read and connect timeouts, `QueueWait`). A wait woken for a process
    /// another request took first queues again with its deadline kept.
    fn queue(&mut self, env: &mut Env<'_>) {
        env.pool.wait(self.backend, env.key);
        if !matches!(self.link, Link::Queued(_)) {
            self.link = Link::Queued(QueueWait::ReadTimeout);
            let kind = Kind::backend_read(self.backend);
            env.timers.arm(&mut self.timer, kind, env.key, env.now);
        }
    }

    /// On a fresh connection after a retry: a spooled body goes out again from its start.
    fn rewind_spooled_body(&mut self) -> Result<(), ExchangeError> {
        if let (BodyIn::Spooled { spool, left }, Some(len)) = (&mut self.body, self.content_length)
        {
            if *left != len {
                spool.rewind().map_err(ExchangeError::Spool)?;
                *left = len;
                self.stdin_ended = false;
            }
        }
        Ok(())
    }

    fn build_preamble(&mut self, env: &mut Env<'_>) -> Result<(), ExchangeError> {
        let f = &self.facts;
        let content_length = self.content_length;
        let host = f
            .req
            .host
            .as_deref()
            .map_or_else(|| f.server_addr.0.clone(), str::to_owned);
        let input = ParamsInput {
            req: &f.req,
            script_name: &f.script_name,
            path_info: f.path_info.as_deref(),
            script_filename: &f.script_filename,
            document_root: &f.document_root,
            server_name: &host,
            server_addr: &f.server_addr.0,
            server_port: f.server_addr.1,
            remote_addr: &f.remote.0,
            remote_port: f.remote.1,
            https: f.https,
            content_length,
            server_software: &f.server_software,
            extra: &f.extra,
        };
        let keep = env
            .pool
            .backends
            .get(self.backend)
            .is_some_and(|b| b.keepalive);
        let mut pre = Vec::with_capacity(1024);
        record::begin_request(&mut pre, REQUEST_ID, keep);
        params::build(&input, &mut pre, REQUEST_ID)
            .map_err(|e| ExchangeError::Params(format!("{e:?}")))?;
        if content_length.is_none() {
            record::stdin_end(&mut pre, REQUEST_ID);
            self.stdin_ended = true;
        }
        self.preamble = pre;
        Ok(())
    }

    fn write_backend(&mut self) -> io::Result<bool> {
        let Link::Connected(w) = &mut self.link else {
            return Ok(false);
        };
        let mut progress = false;
        while w.writable && self.to_pos < self.to_backend.len() {
            match w.sock.write(&self.to_backend[self.to_pos..]) {
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

    fn read_backend(
        &mut self,
        out: &mut Out,
        env: &mut Env<'_>,
    ) -> Result<ReadOutcome, ExchangeError> {
        let mut progress = false;
        // Backend bytes taken in this call: a compressed body (or a HEAD's dropped one) adds
        // little or nothing to the output, so the output bound alone would let one call take
        // a whole large body; the connection's run is bounded in passes (LIFECYCLE rule 17)
        // and goes on later, the socket still marked readable.
        let mut taken = 0;
        loop {
            if (!self.head_only && out.buffered() >= TO_CLIENT_MAX) || taken >= TO_CLIENT_MAX {
                break;
            }
            let Link::Connected(w) = &mut self.link else {
                break;
            };
            if !w.readable {
                break;
            }
            // Read into the worker's scratch buffer: what is read is decoded into the client's
            // output at once, so no exchange holds a read buffer of its own.
            let mut data = env.bufs.take_backend();
            let n = match w.sock.read(&mut data) {
                Ok(0) => {
                    env.bufs.give_backend(data);
                    return Ok(ReadOutcome::Eof);
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
                        _ => return Ok(ReadOutcome::Eof),
                    }
                }
            };
            progress = true;
            taken += n;
            env.timers.arm(
                &mut self.timer,
                Kind::backend_read(self.backend),
                env.key,
                env.now,
            );
            let r = self.consume_records(&data[..n], out, env);
            env.bufs.give_backend(data);
            if r? {
                return Ok(ReadOutcome::Done);
            }
        }
        Ok(if progress {
            ReadOutcome::Progress
        } else {
            ReadOutcome::Idle
        })
    }

    /// Decodes records; Ok(true) at END_REQUEST.
    fn consume_records(
        &mut self,
        mut data: &[u8],
        out: &mut Out,
        env: &mut Env<'_>,
    ) -> Result<bool, ExchangeError> {
        while !data.is_empty() {
            let (used, event) = self
                .decoder
                .decode(data)
                .map_err(|e| ExchangeError::BadRecord(format!("{e:?}")))?;
            data = &data[used..];
            match event {
                Some(Event::Stdout(bytes)) => self.stdout(bytes, out, env)?,
                Some(Event::Stderr(bytes)) => {
                    let name = self.backend_name(env);
                    env.stderr.log(&name, bytes);
                }
                Some(Event::End { .. }) => {
                    if !self.head_sent() {
                        return Err(ExchangeError::NoHead);
                    }
                    self.end_body(out);
                    // Anything after END_REQUEST on this connection would be a protocol
                    // error; only a clean end keeps the connection.
                    let clean = data.is_empty() && self.to_pos == self.to_backend.len();
                    self.release_upstream(env, clean);
                    return Ok(true);
                }
                None => {
                    if used == 0 {
                        break;
                    }
                }
            }
        }
        if matches!(&self.response, Response::Body(b) if b.is_coded()) {
            self.coded_bytes(&[], true, out);
        }
        Ok(false)
    }

    fn stdout(
        &mut self,
        bytes: &[u8],
        out: &mut Out,
        env: &mut Env<'_>,
    ) -> Result<(), ExchangeError> {
        let Response::Head(buf) = &mut self.response else {
            self.body_bytes(bytes, out);
            return Ok(());
        };
        buf.extend_from_slice(bytes);
        match cgi_head::parse(buf) {
            Ok(None) => Ok(()),
            Ok(Some(mut head)) => {
                let rest = buf.split_off(head.head_len.min(buf.len()));
                let encoder = super::fcgi_compress::plan(self.facts.compress.as_ref(), &mut head);
                self.send_head(&head, encoder, out, env);
                self.body_bytes(&rest, out);
                Ok(())
            }
            Err(e) => Err(ExchangeError::BadHead(format!("{e:?}"))),
        }
    }

    fn send_head(
        &mut self,
        head: &CgiHead,
        encoder: Option<crate::compress::encoder::Encoder>,
        out: &mut Out,
        env: &mut Env<'_>,
    ) {
        let body_framing = Framing::choose(head, self.head_only, self.version);
        if body_framing == Framing::Close {
            self.close_client = true;
        }
        self.status = Some(head.status);
        let framing = body_framing.head(head, self.head_only);
        self.response = Response::Body(CodedBody::new(body_framing, encoder));
        if !self.keepalive_client {
            self.close_client = true;
        }
        push_backend_head(
            &self.facts,
            head,
            framing,
            self.close_client,
            self.version,
            out,
            env,
        );
    }

    /// Body bytes from the backend: through the encoder when the response is coded.
    fn body_bytes(&mut self, bytes: &[u8], out: &mut Out) {
        self.coded_bytes(bytes, false, out);
    }

    /// Feeds the encoder (if any) and frames what it gives (`fcgi_compress::CodedBody`,
    /// shared with CGI); `flush` at the end of a read, so a streamed response reaches the
    /// client without waiting for more input.
    fn coded_bytes(&mut self, bytes: &[u8], flush: bool, out: &mut Out) {
        let Response::Body(body) = &mut self.response else {
            return;
        };
        match body.push(bytes, flush, out) {
            Ok(over) => self.close_client |= over,
            Err(e) => self.coding_failed(e),
        }
    }

    /// The encoder failed mid-body: nothing more goes out (no last chunk either), and the
    /// connection closes, which shows the client the truncation.
    fn coding_failed(&mut self, e: io::Error) {
        tracing::error!("compressing a FastCGI response: {e}");
        self.close_client = true;
    }

    fn end_body(&mut self, out: &mut Out) {
        let Response::Body(body) = &mut self.response else {
            return;
        };
        // Fewer bytes than announced: only closing shows the client the truncation.
        match body.end(out) {
            Ok(short) => self.close_client |= short,
            Err(e) => self.coding_failed(e),
        }
    }

    /// Whether a failed kept connection may be replaced by a fresh one for another try: only
    /// once, with no response byte seen and no client body taken that cannot be sent again (a
    /// spooled one is rewound), and, once any request byte went out, only for an idempotent
    /// method (the backend may have run the request).
    fn may_retry(&self) -> bool {
        self.reused()
            && !self.stale_retry_used
            && self.nothing_received()
            && (!self.body_consumed || matches!(self.body, BodyIn::Spooled { .. }))
            && (!self.sent_any || self.facts.req.method.is_idempotent())
    }

    /// The backend closed its connection.
    fn eof(&mut self, env: &mut Env<'_>) -> Step {
        if let Link::Connecting(w) | Link::Connected(w) = &self.link {
            // Its process is likely gone: the count of requests it served starts again.
            env.pool.closed_by_backend(self.backend, w.upstream);
        }
        if self.may_retry() {
            // A kept connection the backend had closed: once more on a fresh one. A stale
            // kept connection is no error of the address.
            self.finish_upstream(env, false);
            self.stale_retry_used = true;
            self.tried.pop();
            return Step::Progress;
        }
        if self.reused() && self.nothing_received() {
            // A stale kept connection is no fault of the address: end it uncounted.
            self.finish_upstream(env, false);
        }
        let mid_response = self.head_sent();
        self.failed(env, ExchangeError::Closed { mid_response })
    }

    fn connect_failed(&mut self, e: io::Error, env: &mut Env<'_>) -> Step {
        tracing::warn!(
            "fastcgi '{}': connect: {e}; address disabled for a while",
            self.backend_name(env)
        );
        if let Link::Connecting(w) | Link::Connected(w) = &self.link {
            env.pool.disable(self.backend, w.upstream, env.now);
        }
        self.finish_upstream(env, true);
        // Nothing was sent: another address may take it.
        Step::Progress
    }

    fn io_failed(&mut self, e: io::Error, env: &mut Env<'_>) -> Step {
        if self.may_retry() {
            self.stale_retry_used = true;
            self.finish_upstream(env, false);
            self.tried.pop();
            return Step::Progress;
        }
        self.failed(env, ExchangeError::Io(e))
    }

    /// Drops the backend connection (after a failure, or before a retry).
    fn finish_upstream(&mut self, env: &mut Env<'_>, failed: bool) {
        match std::mem::replace(&mut self.link, Link::None) {
            Link::None => {}
            Link::Queued(_) => env.pool.unwait(self.backend, env.key),
            // Dropping the wire closes its socket.
            Link::Connecting(w) | Link::Connected(w) => {
                env.pool.end(self.backend, w.upstream, failed)
            }
            Link::Retiring(w) => env.pool.retired(self.backend, w.upstream),
        }
        env.timers.disarm(&mut self.timer);
    }

    /// Ends the wait for an exiting process (its last connection closed, or the wait timed
    /// out): the next `start` connects afresh, to the same address if it is still the best.
    fn end_retiring(&mut self, env: &mut Env<'_>) {
        self.finish_upstream(env, false);
        self.tried.pop();
    }

    /// Ends the request on its upstream, keeping the connection when it ended cleanly.
    fn release_upstream(&mut self, env: &mut Env<'_>, clean: bool) {
        if let Link::Connecting(w) | Link::Connected(w) =
            std::mem::replace(&mut self.link, Link::None)
        {
            env.pool.end(self.backend, w.upstream, false);
            if clean && self.stdin_ended {
                let mut sock = w.sock;
                let _ = sock.deregister(env.registry);
                env.pool.release(self.backend, w.upstream, sock);
            }
        }
        env.timers.disarm(&mut self.timer);
    }

    /// On client disconnect or worker exit: let go of the backend.
    pub fn cancel(&mut self, env: &mut Env<'_>) {
        self.finish_upstream(env, false);
    }
}

/// The request body, as the connection knows it when the exchange starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestBody {
    /// None.
    None,
    /// Content-Length.
    Length(u64),
    /// Chunked, spooled up to `limit` bytes.
    Chunked {
        /// limits.body_bytes.
        limit: u64,
    },
}

enum ReadOutcome {
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

/// Writes a backend's response head (FastCGI or CGI) into `out`, after the respond hook had
/// its say; a route decision's headers (`facts.extra_headers`) replace the backend's of the
/// same name.
pub(super) fn push_backend_head(
    facts: &Facts,
    head: &CgiHead,
    framing: HeadFraming,
    close_client: bool,
    version: Version,
    out: &mut Out,
    env: &mut Env<'_>,
) {
    let hooked = super::respond_hook::on_backend_head(
        env.router.as_deref_mut(),
        &facts.req,
        super::respond_hook::BackendClient {
            remote: &facts.remote,
            server_addr: &facts.server_addr,
            https: facts.https,
        },
        head.status,
        &head.headers,
        &facts.extra_headers,
    );
    let (headers, overrides) = match &hooked {
        Some((h, o)) => (&h[..], &o[..]),
        None => (&head.headers[..], &facts.extra_headers[..]),
    };
    let added =
        super::site_headers::add_missing(head.status, headers, overrides, &facts.site_headers);
    let headers = added.as_deref().unwrap_or(headers);
    let mut h = Vec::with_capacity(256 + head.headers.len());
    write_head(
        &mut h,
        &Head {
            status: head.status,
            date: env.date,
            server: env.server_name,
            headers,
            overrides,
            framing,
            connection: connection_field(close_client, version),
        },
    );
    out.start(env.bufs);
    out.push_head(&h);
}
