//! One client connection: the HTTP/1.1 lifecycle. LIFECYCLE.md beside this file maps the
//! phases, their entry points, which timeout runs in which phase, and the rules that hold.
//!
//! ```text
//!            ┌──────────────── next_request (keep alive) ─────────────┐
//!            ▼                                                        │
//! accept → Head ── head parsed / refused → Responding{handler, discard} ┤
//!            │                              │                         │ Ending ≠ KeepAlive
//!            │ EOF, timeout                 │ write error, EOF        ▼
//!            ▼                              ▼                       Linger (shutdown(WR),
//!          closed ◀──────────────────────── closed ◀─ EOF, timeout ─ read and drop input)
//! ```
//!
//! Every event is edge-triggered: reads and writes go on until the kernel says EAGAIN, and the
//! `readable`/`writable` hints remember whether it has said so since the last event.

use super::bufs::Bufs;
use super::cgi::CgiRun;
use super::dispatch::{self, Client, Dispatch, FcgiExtra, OtherSites, Routed};
use super::exchange::Exchanging;
use super::fcgi::{Env, Exchange, RequestBody, StderrLimit, Step};
use super::fcgi_admit;
use super::inbuf::{Filled, InBuf};
use super::out::{Flush, Out, PASS_BUDGET};
use super::peer::Peer;
use super::proxy::{ClientFacts, Kinds, ProxyExchange};
use super::real_peer::{self, ProxyHeader, RealPeer};
use super::timers::{Kind, Slot, Timers};
use super::BACKEND_BASE;
use crate::access_line::{Facts, PendingLine, Subject};
use crate::admin::scoreboard::{Scoreboard, State as WorkerState, WorkerSlot};
use crate::config::{Config, Limits};
use crate::fastcgi::pool::Pool;
use crate::fastcgi::rules::Target;
use crate::http::body::{BodyError, BodyReader};
use crate::http::date::DateCache;
use crate::http::request::{self, BodyFraming, Method, Request, RequestError, Version};
use crate::http::response::{connection_field, write_head, Framing, Head};
use crate::http::status;
use crate::log::AccessLog;
use crate::proxy::ProxyTarget;
use crate::reply::{Body, Reply};
use crate::script::Router;
use crate::static_files::Site;
use crate::transport::Stream;
use mio::{Registry, Token};
use std::time::Instant;

/// The most passes of a connection's loop in one run before it yields (LIFECYCLE rule 17):
/// a keep-alive request takes a few, so only a long pipelined burst or a backend that keeps
/// the exchange busy reaches it.
const MAX_PASSES: u32 = 64;

/// A body we do not want is read and dropped up to this size; a larger one closes the
/// connection after the response instead (and lingering close drops what still arrives).
const DISCARD_MAX: u64 = 64 * 1024;
/// Input buffered beyond a full head: room for a pipelined request or body bytes to drop.
const READ_AHEAD: usize = 16 * 1024;

/// What an event says about the client socket.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ready {
    /// Bytes (or EOF) can be read.
    pub readable: bool,
    /// Bytes can be written.
    pub writable: bool,
    /// The peer shut down its sending side (a read returns EOF after the data).
    pub read_closed: bool,
}

/// What the worker should do with a connection after an event.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Keep it.
    Open,
    /// Close it now.
    Close,
}

/// Everything a connection needs from its worker while it handles an event.
pub struct Ctx<'a> {
    /// The static site.
    pub site: &'a mut Site,
    /// Limits.
    pub limits: &'a Limits,
    /// The Server header value.
    pub server_name: &'a str,
    /// The cached Date.
    pub date: &'a DateCache,
    /// The worker's timer queues.
    pub timers: &'a mut Timers,
    /// The access log, when enabled.
    pub access: Option<&'a mut AccessLog>,
    /// Whether the worker is draining (graceful stop).
    pub draining: bool,
    /// The time of this loop iteration.
    pub now: Instant,
    /// This connection's token.
    pub token: usize,
    /// The configuration.
    pub config: &'a Config,
    /// The FastCGI backends.
    pub pool: &'a mut Pool,
    /// The HTTP upstreams.
    pub upstreams: &'a mut crate::proxy::pool::Upstreams,
    /// The poll registry (for backend sockets).
    pub registry: &'a Registry,
    /// The rate limit on backend STDERR lines.
    pub stderr: &'a mut StderrLimit,
    /// The route function, when the config has one.
    pub router: Option<&'a mut Router>,
    /// Each listener's address as text (`req.listener`).
    pub listener_names: &'a [String],
    /// Document roots chosen by route decisions.
    pub other_sites: &'a mut OtherSites,
    /// This worker's scoreboard slot.
    pub slot: Option<&'a WorkerSlot>,
    /// The whole scoreboard, for the status page.
    pub board: Option<&'a Scoreboard>,
    /// The worker's free buffers, lent to connections while they need one.
    pub bufs: &'a mut Bufs,
    /// When to resume route calls that wait (`sleep`).
    pub lua_wakes: &'a mut super::lua_wait::Wakes,
    /// Connections whose run spent its budget with work left (`Conn::yield_run`): the
    /// worker runs them again after the others.
    pub again: &'a mut Vec<usize>,
    /// Wall-clock time of this loop iteration, in unix milliseconds.
    pub now_ms: u64,
}

/// What a backend's (FastCGI, CGI, proxied) answer to `req` may be coded with: its site's
/// compression and the client's Accept-Encoding (None: sent as it is).
fn compress_offer(ctx: &mut Ctx<'_>, req: &Request) -> Option<super::fcgi_compress::Offer> {
    let settings = super::vhost::compress_for(ctx.other_sites, ctx.config, req);
    super::fcgi_compress::offer(req, settings)
}

impl Ctx<'_> {
    /// The poll token of this connection's backend sockets.
    fn backend_token(&self) -> Token {
        Token(BACKEND_BASE + self.token)
    }

    fn env(&mut self) -> Env<'_> {
        let token = self.backend_token();
        Env {
            pool: self.pool,
            timers: self.timers,
            registry: self.registry,
            token,
            key: self.token,
            now: self.now,
            stderr: self.stderr,
            date: self.date.http(),
            server_name: self.server_name,
            bufs: self.bufs,
            router: self.router.as_deref_mut(),
            upstreams: self.upstreams,
        }
    }
}

/// Where a connection is in its life (see LIFECYCLE.md beside this file). Closing is not a
/// phase: a `Verdict::Close` removes the connection.
enum Phase {
    /// Waiting for (the rest of) a request head.
    Head,
    /// A request is answered by its handler; an unwanted request body is read and dropped
    /// meanwhile (`discard`, only with a queued reply).
    Responding {
        /// What produces the response.
        handler: Handler,
        /// The unwanted body being dropped.
        discard: Option<BodyReader>,
    },
    /// Output is done and the write side shut; input is dropped until EOF or timeout.
    Linger,
}

/// What produces the response in flight. The connection drives it through its methods and
/// never reaches into its fields.
enum Handler {
    /// The response is whole in the output queue (a static file, an in-memory reply, an
    /// error): nothing is left to produce.
    Queued,
    /// A FastCGI exchange produces it as the backend answers.
    FastCgi(Box<Exchange>),
    /// A CGI process produces it (src/worker/cgi.rs).
    Cgi(Box<CgiRun>),
    /// An HTTP proxy exchange produces it as the upstream answers.
    Proxy(Box<ProxyExchange>),
    /// The route function waits (`sleep`): nothing is decided yet.
    Lua(Box<LuaWait>),
}

impl Handler {
    /// The exchange or run producing the response, if a backend or another process does.
    fn upstream(&self) -> Option<&dyn Exchanging> {
        match self {
            Handler::FastCgi(x) => Some(&**x),
            Handler::Cgi(x) => Some(&**x),
            Handler::Proxy(x) => Some(&**x),
            Handler::Queued | Handler::Lua(_) => None,
        }
    }

    fn upstream_mut(&mut self) -> Option<&mut dyn Exchanging> {
        match self {
            Handler::FastCgi(x) => Some(&mut **x),
            Handler::Cgi(x) => Some(&mut **x),
            Handler::Proxy(x) => Some(&mut **x),
            Handler::Queued | Handler::Lua(_) => None,
        }
    }
}

/// A request whose route call is suspended.
struct LuaWait {
    req: Request,
    ticket: crate::script::Ticket,
    /// When the wait ends.
    until: Instant,
    /// When `limits.lua_wall` ends the route with a 504.
    wall: Instant,
    /// Whether the connection closes after the response (decided when the request came).
    close: bool,
    /// `req:body(max)` waits for the body: the most bytes it takes (else a sleep waits).
    body: Option<u64>,
    /// `http.request` waits for this call (until `until`, its timeout).
    http: Option<HttpWait>,
}

impl LuaWait {
    /// When to wake the route: its wait's end, `limits.lua_wall`, or an upstream call's
    /// connect or read timeout.
    fn next_wake(&self) -> Instant {
        let call = match &self.http {
            Some(HttpWait::Running(c)) => c.deadline(),
            _ => None,
        };
        let at = self.until.min(self.wall);
        call.map_or(at, |d| at.min(d))
    }
}

impl Ctx<'_> {
    /// What an `http.request` call needs of the worker.
    fn call_env(&mut self) -> super::lua_http::CallEnv<'_> {
        let token = self.backend_token();
        super::lua_http::CallEnv {
            upstreams: self.upstreams,
            registry: self.registry,
            token,
            now: self.now,
        }
    }
}

/// An `http.request` of a waiting route.
enum HttpWait {
    /// Under way on the connection's backend token.
    Running(Box<super::lua_http::Call>),
    /// Failed before it started (bad options, connect error): resumed at the next wake.
    Failed(String),
}

/// Input a connection buffers for a `req:body` of at most `ceiling` bytes (chunked framing
/// included, generously).
fn body_read_max(limits: &Limits, ceiling: u64) -> usize {
    let c = usize::try_from(ceiling).unwrap_or(usize::MAX / 4);
    c.saturating_mul(2)
        .saturating_add(limits.header_bytes + READ_AHEAD)
}

/// How the connection ends once the response in flight is out. It only moves towards the
/// end (KeepAlive → Close → Drain), through `close_after_response` and `drain_before_close`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ending {
    /// Wait for the next request.
    KeepAlive,
    /// Close when the response is out.
    Close,
    /// Close when the response is out, after draining what the client may still send (an
    /// unread body, a refused head): closing with unread input makes the kernel reset the
    /// connection, and the client may lose the end of the response.
    Drain,
}

/// A client connection.
pub struct Conn {
    stream: Stream,
    peer: Peer,
    /// The listener's index (u16 keeps the connection within its size budget).
    listener: u16,
    input: InBuf,
    readable: bool,
    /// The kernel reported the peer's FIN: reads go on until they return EOF.
    peer_closed: bool,
    writable: bool,
    read_eof: bool,
    phase: Phase,
    ending: Ending,
    out: Out,
    served: u32,
    /// Bytes of the request in flight (head and announced body), for the scoreboard.
    bytes_in: u64,
    /// Whether the scoreboard was told a request started that it has not seen finish.
    in_request: bool,
    /// The connection's timeout.
    timer: Slot,
    /// The access log line of the response in flight: text before the byte count, and after.
    log_line: PendingLine,
    /// What the scoreboard counts this connection as (`Worker::with_conn` moves it).
    pub(super) shown: Option<WorkerState>,
    /// The real client behind a proxy (PROXY header, X-Forwarded-For), when there may be one.
    real: Option<Box<RealPeer>>,
}

impl Conn {
    /// A freshly accepted connection.
    pub fn new(stream: Stream, peer: Peer, listener: usize, now: Instant) -> Conn {
        Conn {
            stream,
            peer,
            listener: u16::try_from(listener).unwrap_or(u16::MAX),
            input: InBuf::default(),
            // Until the first event says so (see `Worker::accept`).
            readable: false,
            peer_closed: false,
            writable: true,
            read_eof: false,
            phase: Phase::Head,
            ending: Ending::KeepAlive,
            out: Out::default(),
            served: 0,
            bytes_in: 0,
            in_request: false,
            timer: Slot::new(now),
            log_line: PendingLine::default(),
            shown: None,
            real: None,
        }
    }

    /// The listener expects a PROXY protocol header before the first request.
    pub fn expect_proxy_header(&mut self) {
        self.real = Some(real_peer::awaiting(self.peer));
        self.stream.expect_proxy_header();
    }

    /// Reads the PROXY header if one is awaited: Ok(true) when it was read now, Ok(false)
    /// when none is awaited or it is incomplete, Err when it is malformed.
    fn read_proxy_header(&mut self, ctx: &mut Ctx<'_>) -> Result<bool, ()> {
        let Some(real) = self.real.as_mut() else {
            return Ok(false);
        };
        match crate::proxy_protocol::parse(self.input.data()) {
            Ok(Some((h, n))) => {
                self.input.consume(n);
                real.header_read(h, &self.peer, &ctx.config.ops.trusted_proxies);
                Ok(true)
            }
            Ok(None) => {
                ctx.timers
                    .arm_once(&mut self.timer, Kind::READ, ctx.token, ctx.now);
                Ok(false)
            }
            Err(e) => {
                tracing::debug!(client = %self.peer.ip, "{e}");
                Err(())
            }
        }
    }

    fn proxy_header_awaited(&self) -> bool {
        self.real
            .as_ref()
            .is_some_and(|r| r.header == ProxyHeader::Awaited)
    }

    /// The socket peer's address as text ("unix" for Unix sockets).
    pub fn peer_ip(&self) -> &str {
        &self.peer.ip
    }

    /// The socket, for registration.
    pub fn stream_mut(&mut self) -> &mut Stream {
        &mut self.stream
    }

    /// Whether the connection waits for a request with nothing buffered (safe to close on a
    /// graceful stop).
    pub fn is_idle(&self) -> bool {
        matches!(self.phase, Phase::Head) && self.input.is_empty() && !self.out.pending()
    }

    /// The exchange producing the response, if a FastCGI exchange or a CGI run does.
    fn exchange(&self) -> Option<&dyn Exchanging> {
        match &self.phase {
            Phase::Responding { handler, .. } => handler.upstream(),
            _ => None,
        }
    }

    fn exchange_mut(&mut self) -> Option<&mut dyn Exchanging> {
        match &mut self.phase {
            Phase::Responding { handler, .. } => handler.upstream_mut(),
            _ => None,
        }
    }

    /// The phase of the FastCGI exchange answering the request, if one does.
    #[cfg(test)]
    pub fn exchange_phase(&self) -> Option<super::fcgi::ExchangePhase> {
        match &self.phase {
            Phase::Responding {
                handler: Handler::FastCgi(x),
                ..
            } => Some(x.phase()),
            _ => None,
        }
    }

    /// Takes the exchange out of the handler, leaving the response as queued.
    fn take_exchange(&mut self) -> Option<Box<dyn Exchanging>> {
        match &mut self.phase {
            Phase::Responding { handler, .. } => {
                match std::mem::replace(handler, Handler::Queued) {
                    Handler::FastCgi(x) => Some(x),
                    Handler::Cgi(x) => Some(x),
                    Handler::Proxy(x) => Some(x),
                    other => {
                        *handler = other;
                        None
                    }
                }
            }
            _ => None,
        }
    }

    /// Transition: a handler starts answering a request (or a refusal is queued).
    fn start_responding(&mut self, handler: Handler, discard: Option<BodyReader>) {
        debug_assert!(
            discard.is_none() || matches!(handler, Handler::Queued),
            "only a queued reply drops a body meanwhile"
        );
        self.phase = Phase::Responding { handler, discard };
    }

    /// Transition: the response is out; wait for the next request (the head timeout if
    /// bytes of it are buffered, else the keep-alive timeout).
    fn next_request(&mut self, ctx: &mut Ctx<'_>) {
        self.phase = Phase::Head;
        let kind = if self.input.is_empty() {
            Kind::KEEPALIVE
        } else {
            Kind::READ
        };
        ctx.timers.arm(&mut self.timer, kind, ctx.token, ctx.now);
    }

    /// Transition: the response is out and the connection ends: shut the write side and drop
    /// input until the client closes or the linger time ends.
    fn start_lingering(&mut self, ctx: &mut Ctx<'_>) {
        self.phase = Phase::Linger;
        self.stream.shutdown_write();
        ctx.timers
            .arm(&mut self.timer, Kind::LINGER, ctx.token, ctx.now);
    }

    /// The connection closes once the response in flight is out.
    fn close_after_response(&mut self) {
        self.ending = self.ending.max(Ending::Close);
    }

    /// The connection closes once the response is out, after draining the client's input.
    fn drain_before_close(&mut self) {
        self.ending = Ending::Drain;
    }

    /// Checks what must hold between passes (debug builds only).
    fn check_invariants(&self, draining: bool) {
        debug_assert!(
            !self.is_idle() || !self.holds_buffers(),
            "an idle connection holds a buffer"
        );
        debug_assert!(
            !matches!(self.phase, Phase::Linger) || !self.out.pending(),
            "lingering starts only once the output is out"
        );
        debug_assert!(
            !matches!(self.phase, Phase::Linger) || self.ending != Ending::KeepAlive || draining,
            "a lingering connection was meant to close"
        );
        debug_assert!(
            !matches!(self.phase, Phase::Head) || !self.out.pending(),
            "a response is queued while waiting for a head"
        );
    }

    /// Whether the connection holds a buffer of its own (an idle one must not).
    pub fn holds_buffers(&self) -> bool {
        self.input.holds_buffer() || self.out.holds_buffer() || self.log_line.holds_buffer()
    }

    /// Handles readiness and runs the state machine as far as it goes.
    pub fn ready(&mut self, ctx: &mut Ctx<'_>, ready: Ready) -> Verdict {
        self.readable |= ready.readable || ready.read_closed;
        self.writable |= ready.writable;
        self.peer_closed |= ready.read_closed;
        self.run(ctx)
    }

    /// Runs the state machine with no new readiness (a FastCGI process got free).
    pub fn resume(&mut self, ctx: &mut Ctx<'_>) -> Verdict {
        self.run(ctx)
    }

    /// On a graceful stop or a reload: every connection closes after its next response, which
    /// says `Connection: close`. An idle one is not closed at once, because its client may be
    /// sending a request right now (wrk and browsers send the next request the moment a
    /// response ends); it gets the linger time to do so, then closes.
    pub fn drain(&mut self, ctx: &mut Ctx<'_>) -> Verdict {
        // A response whose head already went out told the client keep-alive: closing once it
        // is out would race the client's next request (a POST it cannot retry), so such a
        // connection waits the linger time for it instead, as an idle one does (`run`).
        let head_out = match &self.phase {
            Phase::Responding {
                handler: Handler::Queued,
                ..
            } => true,
            // FastCGI, CGI and proxy alike (a tunnel closes when it ends anyway).
            Phase::Responding { .. } => self.exchange().is_some_and(|x| x.head_sent()),
            _ => false,
        };
        if !head_out {
            self.close_after_response();
        }
        if self.is_idle() {
            ctx.timers
                .arm(&mut self.timer, Kind::LINGER, ctx.token, ctx.now);
        }
        Verdict::Open
    }

    /// Counts the request in flight as done in the scoreboard (once).
    fn request_finished(&mut self, ctx: &mut Ctx<'_>) {
        if std::mem::take(&mut self.in_request) {
            if let Some(slot) = ctx.slot {
                slot.request_done(self.bytes_in, self.out.payload_sent());
            }
        }
        // The `limit_conn` counts the request held (kept by the worker, so a connection
        // stays small).
        for (zone, key) in ctx.lua_wakes.release(ctx.token) {
            if let Some(z) = crate::shared::zone(&zone) {
                let _ = z.incr(&key, &crate::shared::Val::Int(-1), None, None);
            }
        }
    }

    /// Keeps the `limit_conn` counts the route just took, to release at the request's end.
    fn hold_releases(&mut self, ctx: &mut Ctx<'_>) {
        if let Some(r) = ctx.router.as_deref_mut() {
            let taken = r.take_releases();
            if !taken.is_empty() {
                ctx.lua_wakes.hold(ctx.token, taken);
            }
        }
    }

    /// Lets go of a backend and flushes the pending access log entry of a response cut
    /// short, before the connection closes.
    pub fn abort(&mut self, ctx: &mut Ctx<'_>) {
        self.request_finished(ctx);
        if let Phase::Responding {
            handler: Handler::Lua(w),
            ..
        } = &mut self.phase
        {
            // The client left while its route waited: the wait is cancelled.
            if let Some(HttpWait::Running(call)) = &mut w.http {
                call.give_up(&mut ctx.call_env());
            }
            if let Some(r) = ctx.router.as_deref_mut() {
                r.cancel_route(w.ticket);
            }
            if !self.log_line.is_pending() && ctx.access.is_some() {
                let req = w.req.clone();
                self.log_start(ctx, Some(&req), 499);
            }
        }
        if let Some(mut x) = self.take_exchange() {
            if !self.log_line.is_pending() {
                let status = x.status().unwrap_or(499);
                self.log_start_as(ctx, Some(x.request()), status, x.remote_user());
                self.log_upstream(ctx, &*x);
            }
            x.cancel(&mut ctx.env());
        }
        if matches!(self.phase, Phase::Responding { .. }) {
            self.log_done(ctx);
        }
        ctx.bufs.give_bytes(self.log_line.take_buffer());
        self.input.clear();
        self.input.release_if_empty(ctx.bufs);
        self.out.drop_all(ctx.bufs);
    }

    /// What the connection is doing, for the scoreboard.
    pub fn activity(&self) -> WorkerState {
        match (&self.phase, self.exchange()) {
            (Phase::Head, _) if self.input.is_empty() => WorkerState::KeepAlive,
            (Phase::Head, _) => WorkerState::Reading,
            // A body being read (buffered before the backend is asked, or streamed).
            (_, Some(x)) if x.wants_client_input() => WorkerState::Reading,
            (_, Some(_)) => WorkerState::WaitingBackend,
            _ => WorkerState::Writing,
        }
    }

    /// Records readiness of the backend socket and runs the state machine.
    pub fn backend_ready(
        &mut self,
        ctx: &mut Ctx<'_>,
        readable: bool,
        writable: bool,
        read_closed: bool,
    ) -> Verdict {
        match self.exchange_mut() {
            Some(x) => x.backend_ready(readable, writable, read_closed),
            // For a kept upstream connection still registered with this connection's token.
            None => {
                let token = ctx.backend_token();
                ctx.upstreams.idle_event(token)
            }
        }
        if self.lua_http_ready(ctx) == Verdict::Close {
            return Verdict::Close;
        }
        self.run(ctx)
    }

    /// Whether `gen` is the generation of a live timeout of this connection (its own, or its
    /// backend exchange's); expired entries of other generations are stale.
    pub fn owns_timer(&self, gen: u64) -> bool {
        self.timer.is(gen) || self.exchange().is_some_and(|x| x.owns_timer(gen))
    }

    /// The timeout of generation `gen` fired: the connection's own closes it; the backend's
    /// ends the exchange (504, or a cut response).
    pub fn on_timer(&mut self, ctx: &mut Ctx<'_>, gen: u64) -> Verdict {
        if self.timer.is(gen) {
            tracing::debug!(conn = ctx.token, kind = ?self.timer.kind(), "timeout");
            return Verdict::Close;
        }
        if self.exchange().is_some_and(|x| x.owns_timer(gen)) {
            return self.backend_timeout(ctx);
        }
        Verdict::Open
    }

    /// The backend timeout fired.
    fn backend_timeout(&mut self, ctx: &mut Ctx<'_>) -> Verdict {
        let mut env = ctx.env();
        let Some(x) = self.exchange_mut() else {
            return Verdict::Open;
        };
        let step = x.timed_out(&mut env);
        if self.on_step(ctx, step) == Verdict::Close {
            return Verdict::Close;
        }
        self.run(ctx)
    }

    /// Acts on what driving the exchange gave.
    fn on_step(&mut self, ctx: &mut Ctx<'_>, step: Step) -> Verdict {
        match step {
            Step::Idle | Step::Progress => {}
            Step::Done => {
                if let Some(x) = self.take_exchange() {
                    if x.closes_client() {
                        self.close_after_response();
                    }
                    // The backend answered before reading the whole body: what is left of it
                    // must never be taken for the next request.
                    let mut discard = None;
                    match x.body_left() {
                        Some(0) | None => {}
                        Some(n) => match BodyReader::new(BodyFraming::Length(n), DISCARD_MAX) {
                            Ok(reader) => discard = Some(reader),
                            Err(_) => self.drain_before_close(),
                        },
                    }
                    if x.body_pending() && x.body_left().is_none() {
                        self.drain_before_close();
                    }
                    let status = x.status().unwrap_or(200);
                    self.log_start_as(ctx, Some(x.request()), status, x.remote_user());
                    self.log_upstream(ctx, &*x);
                    self.start_responding(Handler::Queued, discard);
                }
            }
            Step::Fail(e) => {
                let status = e.status();
                if let Some(mut x) = self.take_exchange() {
                    x.cancel(&mut ctx.env());
                    let close = self.ending != Ending::KeepAlive
                        || !x.request().keep_alive
                        || x.body_pending();
                    if x.body_pending() {
                        self.drain_before_close();
                    }
                    self.log_start_as(ctx, Some(x.request()), status, x.remote_user());
                    self.log_upstream(ctx, &*x);
                    let head_only = x.request().method == Method::Head;
                    let version = x.request().version;
                    let mut reply = Reply::error(status);
                    // The backend's failure (502/503/504) passes the respond hook too.
                    self.hook_reply(ctx, Some(x.request()), &mut reply);
                    let host = x.request().host.as_deref();
                    self.send_reply(ctx, head_only, version, reply, close, None, host);
                }
            }
            Step::Abort(e) => {
                // The head went out: send what arrived, then close, which shows the client the
                // truncation (a short Content-Length body, or no last chunk).
                if let Some(mut x) = self.take_exchange() {
                    x.cancel(&mut ctx.env());
                    let status = x.status().unwrap_or(e.status());
                    self.log_start_as(ctx, Some(x.request()), status, x.remote_user());
                    self.log_upstream(ctx, &*x);
                }
                self.close_after_response();
            }
        }
        Verdict::Open
    }

    /// Ends a run that spent its budget with work left: the worker runs the connection again
    /// after the others (it may still be writable or hold input, so no event would come).
    fn yield_run(&mut self, ctx: &mut Ctx<'_>) -> Verdict {
        if self.writable && self.timer.kind() == Some(Kind::WRITE) {
            // The socket takes bytes: the write timeout, armed when it was last full, must
            // not cut a client that keeps up.
            ctx.timers.disarm(&mut self.timer);
        }
        ctx.again.push(ctx.token);
        Verdict::Open
    }

    /// Runs the state machine, then gives back the buffers this pass left empty: an idle
    /// connection holds none.
    fn run(&mut self, ctx: &mut Ctx<'_>) -> Verdict {
        let verdict = self.run_inner(ctx);
        self.input.release_if_empty(ctx.bufs);
        self.out.release_if_done(ctx.bufs);
        if verdict == Verdict::Open {
            self.check_invariants(ctx.draining);
        }
        verdict
    }

    fn run_inner(&mut self, ctx: &mut Ctx<'_>) -> Verdict {
        // Body bytes this run sent, and its passes of the loop: both are bounded, so that one
        // connection (pipelined requests, a fast backend, a fast reader) cannot hold the
        // worker's loop; past either, the run yields (LIFECYCLE rule 17).
        let mut sent: u64 = 0;
        let mut passes: u32 = 0;
        loop {
            passes += 1;
            if sent >= PASS_BUDGET || passes > MAX_PASSES {
                return self.yield_run(ctx);
            }
            let mut progress = false;

            // TLS records held back by a full socket (handshake messages) go first.
            if self.writable {
                match self.stream.flush_pending() {
                    Ok(true) => {}
                    Ok(false) => self.writable = false,
                    Err(_) => return Verdict::Close,
                }
            }

            if self.out.pending() && self.writable {
                let before = self.out.body_sent;
                let flushed = self.out.flush(&mut self.stream, PASS_BUDGET - sent);
                sent += self.out.body_sent.saturating_sub(before);
                match flushed {
                    Ok(Flush::Done) => progress = true,
                    Ok(Flush::Yield) => return self.yield_run(ctx),
                    Ok(Flush::Blocked) => {
                        self.writable = false;
                        ctx.timers
                            .arm(&mut self.timer, Kind::WRITE, ctx.token, ctx.now);
                    }
                    Err(_) => return Verdict::Close,
                }
            }

            let upstream = match &mut self.phase {
                Phase::Responding { handler, .. } => handler.upstream_mut(),
                _ => None,
            };
            if let Some(x) = upstream {
                let step = x.drive(&mut self.input, &mut self.out, &self.stream, &mut ctx.env());
                if !matches!(step, Step::Idle) {
                    progress = true;
                }
                if self.on_step(ctx, step) == Verdict::Close {
                    return Verdict::Close;
                }
                if self.read_eof
                    && self
                        .exchange()
                        .is_some_and(|x| x.body_pending() || x.aborts_on_client_eof())
                {
                    // The client went away mid-body: the backend connection closes with it.
                    return Verdict::Close;
                }
                // While the client's body is awaited the read timeout runs (armed on each
                // read); otherwise only the backend's timeouts and the write timeout apply.
                // A tunnel's idle time is the exchange's own timeout, not the client's.
                let awaiting = self
                    .exchange()
                    .is_some_and(|x| x.wants_client_input() && !x.is_tunnel());
                if !awaiting && matches!(self.timer.kind(), Some(Kind::READ | Kind::KEEPALIVE)) {
                    ctx.timers.disarm(&mut self.timer);
                }
            }

            // The client left while its route waits: the wait is cancelled (abort).
            if self.read_eof
                && matches!(
                    self.phase,
                    Phase::Responding {
                        handler: Handler::Lua(_),
                        ..
                    }
                )
            {
                return Verdict::Close;
            }

            // A route waiting in req:body: resume it once the body is in the buffer.
            if let Some(with) = self.lua_body_ready(ctx.limits) {
                if self.lua_continue(ctx, with) == Verdict::Close {
                    return Verdict::Close;
                }
                progress = true;
            }

            // A queued reply whose output is out: the request is done once its body is read.
            if let Phase::Responding {
                handler: Handler::Queued,
                discard,
            } = &self.phase
            {
                let body_left = discard.is_some();
                if self.out.pending() {
                    // Still sending: the write timeout (if blocked) runs.
                } else if body_left {
                    ctx.timers
                        .arm_once(&mut self.timer, Kind::READ, ctx.token, ctx.now);
                } else {
                    self.log_done(ctx);
                    self.request_finished(ctx);
                    progress = true;
                    if self.ending == Ending::KeepAlive && ctx.draining {
                        // The head said keep-alive and the drain began after it went out: the
                        // client may be sending its next request right now, and a POST it
                        // loses to our close cannot be retried. Wait for it the linger time,
                        // as `drain` does for an idle connection; it is answered with close.
                        self.next_request(ctx);
                        ctx.timers
                            .arm(&mut self.timer, Kind::LINGER, ctx.token, ctx.now);
                    } else if self.ending != Ending::KeepAlive {
                        if self.ending != Ending::Drain && self.input.is_empty() {
                            return Verdict::Close;
                        }
                        self.start_lingering(ctx);
                    } else {
                        self.next_request(ctx);
                    }
                }
            }

            if self.readable && !self.read_eof && self.wants_input(ctx.limits) {
                let max = match &self.phase {
                    Phase::Responding {
                        handler: Handler::Lua(w),
                        ..
                    } if w.body.is_some() => body_read_max(ctx.limits, w.body.unwrap_or(0)),
                    _ => ctx.limits.header_bytes + READ_AHEAD,
                };
                match self.input.read_from(&mut self.stream, max, ctx.bufs) {
                    Ok(Filled::Eof) => {
                        self.read_eof = true;
                        progress = true;
                    }
                    // Nothing read: whoever consumes the buffer makes the progress.
                    Ok(Filled::Full) => {}
                    Ok(Filled::Data { drained }) => {
                        // A short read drained the socket, unless the peer's FIN was reported:
                        // then the next read returns EOF, and no new event will say so.
                        self.readable = !drained || self.peer_closed;
                        progress = true;
                        let body = matches!(
                            self.phase,
                            Phase::Responding {
                                discard: Some(_),
                                ..
                            }
                        ) || self
                            .exchange()
                            .is_some_and(|x| x.wants_client_input() && !x.is_tunnel())
                            || matches!(
                                &self.phase,
                                Phase::Responding { handler: Handler::Lua(w), .. } if w.body.is_some()
                            );
                        if body {
                            ctx.timers
                                .arm(&mut self.timer, Kind::READ, ctx.token, ctx.now);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => self.readable = false,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        self.log_plain_http(ctx);
                        return Verdict::Close;
                    }
                }
            }

            match &self.phase {
                Phase::Linger => {
                    self.input.clear();
                    if self.read_eof {
                        return Verdict::Close;
                    }
                }
                Phase::Responding {
                    discard: Some(_), ..
                } => match self.feed_discard() {
                    Ok(true) => progress = true,
                    Ok(false) if !self.read_eof => {}
                    // The client stopped sending mid-body, or sent a malformed one: finish
                    // the response, then close.
                    Ok(false) | Err(_) => {
                        self.stop_discarding();
                        self.drain_before_close();
                        progress = true;
                    }
                },
                Phase::Responding { .. } => {}
                Phase::Head if self.proxy_header_awaited() => match self.read_proxy_header(ctx) {
                    Ok(true) => progress = true,
                    Ok(false) if self.read_eof => return Verdict::Close,
                    Ok(false) => {}
                    Err(()) => return Verdict::Close,
                },
                Phase::Head => {
                    if !self.input.is_empty() {
                        match request::parse(self.input.data(), ctx.limits.header_bytes) {
                            Ok(Some(req)) => {
                                self.respond(ctx, req);
                                progress = true;
                            }
                            Ok(None) => {
                                if self.read_eof {
                                    return Verdict::Close;
                                }
                                ctx.timers.arm_once(
                                    &mut self.timer,
                                    Kind::READ,
                                    ctx.token,
                                    ctx.now,
                                );
                            }
                            Err(e) => {
                                self.refuse(ctx, e);
                                progress = true;
                            }
                        }
                    } else if self.read_eof {
                        return Verdict::Close;
                    } else if self.timer.kind().is_none() {
                        // A connection that has sent nothing yet (fresh from accept): the head
                        // timeout starts now, or a silent client would hold the slot forever.
                        // A TLS one gets the handshake timeout first.
                        let kind = if self.stream.handshaking() {
                            Kind::HANDSHAKE
                        } else {
                            Kind::READ
                        };
                        ctx.timers.arm(&mut self.timer, kind, ctx.token, ctx.now);
                    } else if self.timer.kind() == Some(Kind::HANDSHAKE)
                        && !self.stream.handshaking()
                    {
                        // Handshake done, no request yet: now the head timeout runs.
                        ctx.timers
                            .arm(&mut self.timer, Kind::READ, ctx.token, ctx.now);
                    }
                }
            }

            if !progress {
                return Verdict::Open;
            }
        }
    }

    fn wants_input(&self, limits: &Limits) -> bool {
        let buffered = self.input.len();
        match &self.phase {
            Phase::Head => buffered <= limits.header_bytes,
            // Read ahead (pipelined requests, a body to drop) but never without bound.
            Phase::Responding { handler, discard } => {
                discard.is_some()
                    || handler.upstream().is_some_and(|x| x.wants_client_input())
                    || matches!(handler, Handler::Lua(w) if w.body.is_some())
                    || buffered < limits.header_bytes
            }
            Phase::Linger => true,
        }
    }

    /// Drops body bytes from the buffer. Ok(true): made progress.
    fn feed_discard(&mut self) -> Result<bool, BodyError> {
        let Phase::Responding {
            discard: Some(reader),
            ..
        } = &mut self.phase
        else {
            return Ok(false);
        };
        let input = self.input.data();
        if input.is_empty() {
            return Ok(false);
        }
        let fed = reader.feed(input, &mut |_| {})?;
        self.input.consume(fed.consumed);
        if fed.done {
            self.stop_discarding();
        }
        Ok(fed.consumed > 0 || fed.done)
    }

    /// The unwanted body is read (or given up on).
    fn stop_discarding(&mut self) {
        if let Phase::Responding { discard, .. } = &mut self.phase {
            *discard = None;
        }
    }

    fn respond(&mut self, ctx: &mut Ctx<'_>, req: Request) {
        self.input.consume(req.head_len);
        self.served = self.served.saturating_add(1);
        self.bytes_in = req.head_len as u64
            + match req.body {
                BodyFraming::Length(n) => n,
                _ => 0,
            };
        self.in_request = true;
        self.log_line.request_started(ctx.now_ms);
        real_peer::for_request(
            &mut self.real,
            &self.peer,
            &req,
            &ctx.config.ops.trusted_proxies,
        );
        if let Some(slot) = ctx.slot {
            let peer = real_peer::client(&self.real, &self.peer);
            let host = req.host.as_deref().unwrap_or("");
            slot.request_started(req.method.as_str(), host, &req.path, &peer.ip, ctx.now_ms);
        }
        let close = !req.keep_alive
            || self.ending != Ending::KeepAlive
            || ctx.draining
            || u64::from(self.served) >= ctx.limits.keepalive_requests;
        let (routed, user) = self.dispatch(ctx, &req, None);
        self.hold_releases(ctx);
        let wall = ctx.now + ctx.limits.lua_wall;
        self.carry_out(ctx, req, routed, close, wall, user);
    }

    /// Who asked, as dispatch and the route function see it (the real client, the listener).
    fn client_of<'a>(&'a self, listener_names: &'a [String], config: &Config) -> Client<'a> {
        let peer = real_peer::client(&self.real, &self.peer);
        let listener = usize::from(self.listener);
        Client {
            ip: &peer.ip,
            port: peer.port,
            listener: listener_names.get(listener).map_or("", String::as_str),
            https: self.stream.is_tls(),
            redirect_to_https: (config.tls.kind(listener)
                == crate::config::ListenKind::RedirectToHttps)
                .then(|| super::https_redirect::port(config, listener_names)),
        }
    }

    /// Where dispatch sends `req`: a first route call, or the resumption of a waiting one;
    /// with the user an auth rule authenticated.
    fn dispatch(
        &self,
        ctx: &mut Ctx<'_>,
        req: &Request,
        resume: Option<(crate::script::Ticket, crate::script::Resume)>,
    ) -> (Routed, Option<String>) {
        let mut user = None;
        let dispatch = Dispatch {
            router: ctx.router.as_deref_mut(),
            site: ctx.site,
            other_sites: ctx.other_sites,
            pool: ctx.pool,
            config: ctx.config,
            now: ctx.now,
            board: ctx.board,
            user: &mut user,
        };
        let client = self.client_of(ctx.listener_names, ctx.config);
        let routed = match resume {
            None => dispatch::route(dispatch, req, &client),
            Some((ticket, with)) => dispatch::resume(dispatch, req, &client, ticket, with),
        };
        (routed, user)
    }

    /// Takes the suspended route call out of the handler (None: the connection has none).
    fn take_lua_wait(&mut self) -> Option<Box<LuaWait>> {
        let Phase::Responding { handler, .. } = &mut self.phase else {
            return None;
        };
        match std::mem::replace(handler, Handler::Queued) {
            Handler::Lua(w) => Some(w),
            other => {
                *handler = other;
                None
            }
        }
    }

    /// Whether this connection's route call waits on `ticket`.
    pub fn waits_on(&self, ticket: crate::script::Ticket) -> bool {
        matches!(&self.phase, Phase::Responding { handler: Handler::Lua(w), .. } if w.ticket == ticket)
    }

    /// The wait of the route call ended (or `limits.lua_wall` passed): resume it.
    pub fn lua_wake(&mut self, ctx: &mut Ctx<'_>, ticket: crate::script::Ticket) -> Verdict {
        if !self.waits_on(ticket) {
            return Verdict::Open;
        }
        let Some(w) = self.take_lua_wait() else {
            return Verdict::Open;
        };
        let mut wait = *w;
        if ctx.now < wait.wall && ctx.now < wait.until {
            if let Some(HttpWait::Running(call)) = &mut wait.http {
                // The upstream's connect or read timeout: the next address, or the end.
                if call.deadline().is_some_and(|d| ctx.now >= d) {
                    if let Some(result) = call.expired(&mut ctx.call_env()) {
                        call.stop(ctx.registry);
                        wait.http = None;
                        self.start_responding(Handler::Lua(Box::new(wait)), None);
                        self.lua_continue(ctx, crate::script::Resume::Http(result));
                        return self.run(ctx);
                    }
                }
            }
        }
        if ctx.now < wait.wall && (wait.body.is_some() || ctx.now < wait.until) {
            // Early (or a body wait's wall-clock entry): keep waiting.
            let (wall, ticket) = (wait.wall, wait.ticket);
            if wait.body.is_none() {
                ctx.lua_wakes.push(wait.next_wake(), ctx.token, ticket);
            } else {
                ctx.lua_wakes.push(wall, ctx.token, ticket);
            }
            self.start_responding(Handler::Lua(Box::new(wait)), None);
            return Verdict::Open;
        }
        let LuaWait {
            req,
            ticket,
            until,
            wall,
            close,
            body: _,
            http,
        } = wait;
        let with = match http {
            None => crate::script::Resume::Nothing,
            Some(HttpWait::Failed(e)) => crate::script::Resume::Http(Err(e)),
            Some(HttpWait::Running(mut call)) => {
                call.give_up(&mut ctx.call_env());
                crate::script::Resume::Http(Err("timeout".into()))
            }
        };
        // A resumed route passes the site's auth rules again, which name the user to log.
        let (routed, user) = if ctx.now >= wall {
            if let Some(r) = ctx.router.as_deref_mut() {
                r.cancel_route(ticket);
            }
            tracing::error!(
                "route: the route function ran longer than limits.lua_wall ({:?}, waits included); request: {} {} from {}:{}",
                ctx.limits.lua_wall,
                req.method.as_str(),
                req.target,
                &*self.peer.ip,
                self.peer.port
            );
            (Routed::Reply(Reply::error(504)), None)
        } else if ctx.now < until {
            (Routed::Wait { ticket, until }, None)
        } else {
            self.dispatch(ctx, &req, Some((ticket, with)))
        };
        self.hold_releases(ctx);
        self.carry_out(ctx, req, routed, close, wall, user);
        self.run(ctx)
    }

    /// The socket of a route's `http.request` is ready: drive it; resume the route once done.
    fn lua_http_ready(&mut self, ctx: &mut Ctx<'_>) -> Verdict {
        let Phase::Responding {
            handler: Handler::Lua(w),
            ..
        } = &mut self.phase
        else {
            return Verdict::Open;
        };
        let Some(HttpWait::Running(call)) = &mut w.http else {
            return Verdict::Open;
        };
        let before = call.deadline();
        let Some(result) = call.drive(&mut ctx.call_env()) else {
            // A connect done moves the deadline to the (maybe shorter) send or read timeout,
            // or gives a `url` call with `send_timeout` one; a later one needs no new wake
            // (an early wake waits again until `next_wake`).
            let sooner = match (before, call.deadline()) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(b), Some(d)) => d < b,
            };
            if sooner {
                ctx.lua_wakes.push(w.next_wake(), ctx.token, w.ticket);
            }
            return Verdict::Open;
        };
        call.stop(ctx.registry);
        w.http = None;
        self.lua_continue(ctx, crate::script::Resume::Http(result))
    }

    /// What a route waiting in `req:body` gets, once the body is there (or cannot be).
    fn lua_body_ready(&self, limits: &Limits) -> Option<crate::script::Resume> {
        use crate::script::Resume;
        let Phase::Responding {
            handler: Handler::Lua(w),
            ..
        } = &self.phase
        else {
            return None;
        };
        let max = w.body?;
        let ceiling = max.min(limits.lua_body_bytes);
        let input = self.input.data();
        match w.req.body {
            BodyFraming::None => Some(Resume::Body(Vec::new())),
            BodyFraming::Length(n) if n > ceiling => Some(Resume::NoBody("too large")),
            BodyFraming::Length(n) => {
                let n = n as usize;
                (input.len() >= n).then(|| Resume::Body(input[..n].to_vec()))
            }
            BodyFraming::Chunked => {
                let mut reader = BodyReader::new(BodyFraming::Chunked, ceiling).ok()?;
                let mut out = Vec::new();
                match reader.feed(input, &mut |b| out.extend_from_slice(b)) {
                    Ok(f) if f.done => Some(Resume::Body(out)),
                    Ok(_) if input.len() >= body_read_max(limits, ceiling) => {
                        Some(Resume::NoBody("too large"))
                    }
                    Ok(_) => None,
                    Err(BodyError::TooLarge { .. }) => Some(Resume::NoBody("too large")),
                    Err(_) => Some(Resume::NoBody("bad body")),
                }
            }
        }
    }

    /// Resumes the route waiting in `req:body` with what it gets.
    fn lua_continue(&mut self, ctx: &mut Ctx<'_>, with: crate::script::Resume) -> Verdict {
        let Some(w) = self.take_lua_wait() else {
            return Verdict::Open;
        };
        let LuaWait {
            req,
            ticket,
            wall,
            close,
            ..
        } = *w;
        ctx.timers.disarm(&mut self.timer);
        let (routed, user) = self.dispatch(ctx, &req, Some((ticket, with)));
        self.hold_releases(ctx);
        self.carry_out(ctx, req, routed, close, wall, user);
        Verdict::Open
    }

    /// Carries out where dispatch sent a request: a backend, a wait, or a reply.
    fn carry_out(
        &mut self,
        ctx: &mut Ctx<'_>,
        req: Request,
        routed: Routed,
        close: bool,
        wall: Instant,
        user: Option<String>,
    ) {
        let mut close = close;
        let reply = match routed {
            Routed::FastCgi(target, extra) => {
                self.start_fastcgi(ctx, req, target, close, extra);
                return;
            }
            Routed::Cgi(target) => {
                self.start_cgi(ctx, req, target, close);
                return;
            }
            Routed::Proxy(target) => {
                self.start_proxy(ctx, req, target, close, user);
                return;
            }
            Routed::Wait { ticket, until } => {
                // Nothing to answer yet; the connection's own timeouts do not run meanwhile
                // (the wall-clock limit does).
                ctx.timers.disarm(&mut self.timer);
                ctx.lua_wakes.push(until.min(wall), ctx.token, ticket);
                let w = LuaWait {
                    req,
                    ticket,
                    until,
                    wall,
                    close,
                    body: None,
                    http: None,
                };
                self.start_responding(Handler::Lua(Box::new(w)), None);
                return;
            }
            Routed::Body { ticket, max } => {
                let mut req = req;
                let ceiling = max.unwrap_or(u64::MAX).min(ctx.limits.lua_body_bytes);
                // The client waits for a go-ahead before it sends the body; once given, no
                // later handler gives it again.
                if req.expect_continue && req.body != BodyFraming::None {
                    self.out.push_head(b"HTTP/1.1 100 Continue\r\n\r\n");
                    req.expect_continue = false;
                }
                // The body must arrive within the read timeout, and the whole route within
                // limits.lua_wall (the wake entry).
                ctx.timers
                    .arm(&mut self.timer, Kind::READ, ctx.token, ctx.now);
                ctx.lua_wakes.push(wall, ctx.token, ticket);
                let w = LuaWait {
                    req,
                    ticket,
                    until: wall,
                    wall,
                    close,
                    body: Some(ceiling),
                    http: None,
                };
                self.start_responding(Handler::Lua(Box::new(w)), None);
                return;
            }
            Routed::Http { ticket, spec } => {
                ctx.timers.disarm(&mut self.timer);
                let (http, until) = match spec {
                    Err(e) => (HttpWait::Failed(e), ctx.now),
                    Ok(mut spec) => {
                        spec.max_body = ctx.limits.lua_body_bytes;
                        let client = real_peer::client(&self.real, &self.peer).ip;
                        let mut env = ctx.call_env();
                        match super::lua_http::Call::start(&spec, &mut env, &client, &req) {
                            Ok(call) => (HttpWait::Running(Box::new(call)), ctx.now + spec.timeout),
                            Err(e) => (HttpWait::Failed(e), ctx.now),
                        }
                    }
                };
                let w = LuaWait {
                    req,
                    ticket,
                    until,
                    wall,
                    close,
                    body: None,
                    http: Some(http),
                };
                ctx.lua_wakes.push(w.next_wake(), ctx.token, ticket);
                self.start_responding(Handler::Lua(Box::new(w)), None);
                return;
            }
            Routed::Reply(reply) => reply,
        };
        let mut reply = reply;
        self.hook_reply(ctx, Some(&req), &mut reply);
        let mut discard = None;
        match req.body {
            BodyFraming::None => {}
            // After a final response to `Expect: 100-continue` the client may or may not send
            // the body; only closing keeps the framing of what follows certain.
            _ if req.expect_continue => {
                close = true;
                self.drain_before_close();
            }
            // A body up to DISCARD_MAX is dropped as it arrives; a larger one closes, unless
            // it is in the buffer already (read by `req:body`): dropping that costs nothing.
            framing => {
                match BodyReader::new(framing, DISCARD_MAX.max(self.input.data().len() as u64)) {
                    Ok(reader) => discard = Some(reader),
                    Err(_) => {
                        close = true;
                        self.drain_before_close();
                    }
                }
            }
        }
        self.log_start_as(ctx, Some(&req), reply.status, user.as_deref());
        let head_only = req.method == Method::Head;
        let host = req.host.as_deref();
        self.send_reply(ctx, head_only, req.version, reply, close, discard, host);
    }

    /// Hands the request to a FastCGI backend (or answers 404/411/413 first).
    fn start_fastcgi(
        &mut self,
        ctx: &mut Ctx<'_>,
        req: Request,
        t: Target,
        close: bool,
        extra: FcgiExtra,
    ) {
        let body = match fcgi_admit::admit(&req, &t, ctx.site, ctx.limits) {
            Ok(body) => body,
            Err(refusal) => {
                self.refuse_fastcgi(ctx, &req, refusal.status(), close);
                return;
            }
        };
        if req.expect_continue && req.body != BodyFraming::None {
            self.out.push_head(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        let backend = t.backend;
        let peer = real_peer::client(&self.real, &self.peer);
        let mut facts = fcgi_admit::facts(req, t, extra, ctx.config, self.stream.local(), peer);
        facts.https = self.stream.is_tls();
        facts.site_headers =
            super::site_headers::for_request(ctx.other_sites, ctx.config, &facts.req);
        facts.compress = compress_offer(ctx, &facts.req);
        // The keep-alive or head timeout of this connection does not bound the exchange: the
        // read timeout does while the body arrives, the backend's timeouts do after.
        ctx.timers.disarm(&mut self.timer);
        if !matches!(body, RequestBody::None) {
            ctx.timers
                .arm(&mut self.timer, Kind::READ, ctx.token, ctx.now);
        }
        // nginx's fastcgi_request_buffering: by default the whole body is read before a
        // backend process is taken, so a slow upload holds only its client connection.
        let buffer = ctx
            .config
            .fastcgi
            .get(backend)
            .is_none_or(|d| d.request_buffering);
        match Exchange::new(facts, backend, body, buffer, !close, ctx.now) {
            Ok(x) => {
                self.start_responding(Handler::FastCgi(Box::new(x)), None);
                if close {
                    self.close_after_response();
                }
            }
            Err(e) => {
                tracing::error!("fastcgi: cannot start an exchange: {e}");
                self.drain_before_close();
                let reply = Reply::error(500);
                self.send_reply(ctx, false, Version::Http11, reply, true, None, None);
            }
        }
    }

    /// Hands the request to a CGI process (or answers 411/413/503 first).
    fn start_cgi(
        &mut self,
        ctx: &mut Ctx<'_>,
        req: Request,
        target: super::cgi_admit::CgiTarget,
        close: bool,
    ) {
        let local = self.stream.local();
        // REMOTE_ADDR is the real client (PROXY header, trusted X-Forwarded-For), as FastCGI's.
        let peer = real_peer::client(&self.real, &self.peer);
        let admitted = super::cgi_admit::admit(req, target, ctx.config, ctx.site, local, peer);
        let (mut facts, cmd, body) = match admitted {
            Ok(admitted) => admitted,
            Err(refused) => {
                let (req, status) = *refused;
                self.refuse_fastcgi(ctx, &req, status, close);
                return;
            }
        };
        facts.https = self.stream.is_tls();
        facts.site_headers =
            super::site_headers::for_request(ctx.other_sites, ctx.config, &facts.req);
        facts.compress = compress_offer(ctx, &facts.req);
        if facts.req.expect_continue && facts.req.body != BodyFraming::None {
            self.out.push_head(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        ctx.timers.disarm(&mut self.timer);
        if !matches!(body, RequestBody::None) {
            ctx.timers
                .arm(&mut self.timer, Kind::READ, ctx.token, ctx.now);
        }
        match CgiRun::new(facts, cmd, body, !close, ctx.now) {
            Ok(x) => {
                self.start_responding(Handler::Cgi(Box::new(x)), None);
                if close {
                    self.close_after_response();
                }
            }
            Err(e) => {
                tracing::error!("cgi: cannot start a run: {e}");
                self.drain_before_close();
                let reply = Reply::error(500);
                self.send_reply(ctx, false, Version::Http11, reply, true, None, None);
            }
        }
    }

    /// Hands the request to an HTTP upstream (or answers 413 first).
    fn start_proxy(
        &mut self,
        ctx: &mut Ctx<'_>,
        req: Request,
        t: ProxyTarget,
        close: bool,
        user: Option<String>,
    ) {
        let body = match req.body {
            BodyFraming::None => RequestBody::None,
            BodyFraming::Length(n) if n > ctx.limits.body_bytes => {
                self.refuse_fastcgi(ctx, &req, 413, close);
                return;
            }
            BodyFraming::Length(n) => RequestBody::Length(n),
            BodyFraming::Chunked => RequestBody::Chunked {
                limit: ctx.limits.body_bytes,
            },
        };
        // As for FastCGI: the client's read timeout runs while its body arrives, the
        // upstream's timeouts bound the rest.
        ctx.timers.disarm(&mut self.timer);
        if !matches!(body, RequestBody::None) {
            ctx.timers
                .arm(&mut self.timer, Kind::READ, ctx.token, ctx.now);
        }
        // The listener's address costs a getsockname and two strings: only for a request
        // without Host (the upstream's Host then) or a respond hook (`req.server_addr`).
        let needs_local = req.header("host").is_none_or(|h| h.is_empty())
            || ctx.router.as_deref().is_some_and(|r| r.has_respond_hook());
        let (local, port) = if needs_local {
            self.stream.local()
        } else {
            (String::new(), 0)
        };
        // The real client (PROXY header or a trusted X-Forwarded-For) is who X-Forwarded-For
        // names next.
        let peer = real_peer::client(&self.real, &self.peer);
        let client = ClientFacts {
            ip: &peer.ip,
            port: peer.port,
            server_addr: (local.clone(), port),
            local: if port == 0 {
                local
            } else {
                format!("{local}:{port}")
            },
            https: self.stream.is_tls(),
            user,
            site_headers: super::site_headers::for_request(ctx.other_sites, ctx.config, &req),
            // The site's compression, as for FastCGI and CGI (None when the site does not
            // compress or the client takes no coding).
            compress: compress_offer(ctx, &req),
        };
        let kinds = Kinds::of(ctx.config.fastcgi.len(), t.upstream);
        let env = ctx.env();
        match ProxyExchange::new(req, t, client, body, !close, kinds, &env) {
            Ok(x) => {
                self.start_responding(Handler::Proxy(Box::new(x)), None);
                if close {
                    self.close_after_response();
                }
            }
            Err(e) => {
                tracing::error!("proxy: cannot start an exchange: {e}");
                self.drain_before_close();
                let reply = Reply::error(500);
                self.send_reply(ctx, false, Version::Http11, reply, true, None, None);
            }
        }
    }

    /// Answers a request refused before it reached a backend (404, 411, 413).
    fn refuse_fastcgi(&mut self, ctx: &mut Ctx<'_>, req: &Request, status: u16, close: bool) {
        // The body (if any) is not read: close, after draining what the client sends.
        let has_body = req.body != BodyFraming::None;
        if has_body {
            self.drain_before_close();
        }
        self.log_start(ctx, Some(req), status);
        let head_only = req.method == Method::Head;
        let mut reply = Reply::error(status);
        self.hook_reply(ctx, Some(req), &mut reply);
        let (version, host) = (req.version, req.host.as_deref());
        self.send_reply(
            ctx,
            head_only,
            version,
            reply,
            close || has_body,
            None,
            host,
        );
    }

    fn refuse(&mut self, ctx: &mut Ctx<'_>, e: RequestError) {
        self.in_request = true;
        self.log_line.request_started(ctx.now_ms);
        self.bytes_in = self.input.len() as u64;
        if let Some(slot) = ctx.slot {
            let peer = real_peer::client(&self.real, &self.peer);
            slot.request_started("-", "", "(refused)", &peer.ip, ctx.now_ms);
        }
        tracing::debug!(client = %self.peer.ip, status = e.status, "bad request: {}", e.reason);
        self.log_start(ctx, None, e.status);
        // A refused head keeps the connection only when the parser could frame it whole (no
        // body); otherwise what follows cannot be framed with confidence.
        let mut close = e.close || self.ending != Ending::KeepAlive || ctx.draining;
        if close {
            self.input.clear();
            self.drain_before_close();
        } else {
            self.input.consume(e.head_len);
            self.served = self.served.saturating_add(1);
            close = u64::from(self.served) >= ctx.limits.keepalive_requests;
        }
        let mut reply = Reply::error(e.status);
        self.hook_reply(ctx, None, &mut reply);
        self.send_reply(ctx, e.head_method, e.version, reply, close, None, None);
    }

    /// Queues a whole reply; `close` says whether the connection closes after it,
    /// `discard` drops the request's unwanted body meanwhile, and `host` (the request's Host)
    /// picks the site whose error page goes out.
    #[allow(clippy::too_many_arguments)]
    fn send_reply(
        &mut self,
        ctx: &mut Ctx<'_>,
        head_only: bool,
        version: Version,
        reply: Reply,
        close: bool,
        discard: Option<BodyReader>,
        host: Option<&str>,
    ) {
        // The site's own page for an error status (static, FastCGI, refusals alike), from
        // the root of the site the Host names.
        let mut reply =
            super::vhost::error_page(ctx.other_sites, ctx.config, ctx.site, host, reply, ctx.now);
        // A file coded as it goes has no length: chunked, or close-delimited for HTTP/1.0.
        let streamed = crate::compress::stream::set_framing(&mut reply.body, version);
        // The Connection field tells the truth: an ending decided earlier also closes. A
        // close-delimited body (HTTP/1.0) needs the close; a HEAD has no body to delimit, so
        // its connection stays for the next request, as after any other HEAD.
        let close_delimited = streamed == Some(false) && !head_only;
        let close = close || self.ending != Ending::KeepAlive || close_delimited;
        let no_body = status::forbids_body(reply.status);
        write_head(
            self.out.start(ctx.bufs),
            &Head {
                status: reply.status,
                date: ctx.date.http(),
                server: ctx.server_name,
                headers: &reply.headers,
                overrides: &reply.overrides,
                framing: match streamed {
                    _ if no_body => Framing::Unframed,
                    Some(true) => Framing::Chunked,
                    Some(false) => Framing::Unframed,
                    None => Framing::Length(reply.body.len()),
                },
                connection: connection_field(close, version),
            },
        );
        let body = if head_only || no_body {
            Body::Empty
        } else {
            reply.body
        };
        self.out.set_body(body);
        if close {
            self.close_after_response();
        }
        self.start_responding(Handler::Queued, discard);
    }

    /// Runs the respond hook on a whole reply, with the real client and the connection's
    /// scheme as the route function saw them.
    fn hook_reply(&self, ctx: &mut Ctx<'_>, req: Option<&Request>, reply: &mut Reply) {
        let listener = ctx
            .listener_names
            .get(usize::from(self.listener))
            .map_or("", String::as_str);
        let peer = real_peer::client(&self.real, &self.peer);
        super::respond_hook::on_reply(
            ctx.router.as_deref_mut(),
            req,
            &peer.ip,
            peer.port,
            listener,
            self.stream.is_tls(),
            reply,
        );
    }

    /// Starts the access-log line of a response (`req` None: a refused head, whose first
    /// line is logged from the input).
    fn log_start(&mut self, ctx: &mut Ctx<'_>, req: Option<&Request>, status: u16) {
        self.log_start_as(ctx, req, status, None);
    }

    /// As `log_start`, with the user an `auth` rule authenticated.
    fn log_start_as(
        &mut self,
        ctx: &mut Ctx<'_>,
        req: Option<&Request>,
        status: u16,
        user: Option<&str>,
    ) {
        // The scoreboard counts responses by class as they start, log or no log.
        if let Some(slot) = ctx.slot {
            slot.response_status(status);
        }
        if ctx.access.is_none() {
            return;
        }
        let subject = match req {
            Some(r) => Subject::Request(r),
            None => Subject::Refused(self.input.data()),
        };
        let buf = if self.log_line.holds_buffer() {
            Vec::new()
        } else {
            ctx.bufs.take_bytes()
        };
        let peer = real_peer::client(&self.real, &self.peer);
        let facts = Facts {
            peer_ip: &peer.ip,
            peer_port: peer.port,
            clf_date: ctx.date.clf(),
            subject,
            status,
            user,
            tls_version: self.stream.tls_version(),
        };
        self.log_line
            .start(buf, &ctx.config.ops.access_log_format, facts);
    }

    /// A plain HTTP request on a TLS port, which the TLS stream answered with nginx's 400
    /// page: logged as nginx logs it (status 400, the request when its head parsed, else its
    /// first line, and the page's size). A failed handshake has no head and logs nothing.
    fn log_plain_http(&mut self, ctx: &mut Ctx<'_>) {
        let Some(head) = self.stream.take_plain_http_head() else {
            return;
        };
        if let Some(slot) = ctx.slot {
            slot.response_status(400);
        }
        let Some(access) = ctx.access.as_deref_mut() else {
            return;
        };
        let req = request::parse(&head, ctx.limits.header_bytes)
            .ok()
            .flatten();
        let subject = match &req {
            Some(r) => Subject::Request(r),
            None => Subject::Refused(&head),
        };
        let peer = real_peer::client(&self.real, &self.peer);
        let facts = Facts {
            peer_ip: &peer.ip,
            peer_port: peer.port,
            clf_date: ctx.date.clf(),
            subject,
            status: 400,
            user: None,
            tls_version: None,
        };
        self.log_line.request_started(ctx.now_ms);
        let buf = if self.log_line.holds_buffer() {
            Vec::new()
        } else {
            ctx.bufs.take_bytes()
        };
        self.log_line
            .start(buf, &ctx.config.ops.access_log_format, facts);
        let page = crate::tls::stream::PLAIN_HTTP_BODY.len() as u64;
        self.log_line.finish(access, page, ctx.now_ms);
        ctx.bufs.give_bytes(self.log_line.take_buffer());
    }

    /// Adds the upstream of a proxied request to the pending access-log line.
    fn log_upstream(&mut self, ctx: &mut Ctx<'_>, x: &dyn Exchanging) {
        if ctx.access.is_some() {
            if let Some((addr, time)) = x.upstream(&ctx.env()) {
                self.log_line.add_upstream(&addr, time, x.bytes_received());
            }
        }
    }

    /// Writes the pending access-log line with the body bytes sent, and gives its buffer back.
    fn log_done(&mut self, ctx: &mut Ctx<'_>) {
        if let Some(access) = ctx.access.as_deref_mut() {
            self.log_line
                .finish(access, self.out.payload_sent(), ctx.now_ms);
        }
        ctx.bufs.give_bytes(self.log_line.take_buffer());
    }
}
