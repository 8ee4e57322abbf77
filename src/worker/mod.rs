//! A worker process: one mio loop over the inherited listeners, its client connections and a
//! signalfd. See `conn.rs` for a connection's life.

mod auth_check;
pub mod backstop;
mod bufs;
mod cgi;
mod cgi_admit;
mod cgi_procs;
mod conn;
#[cfg(test)]
mod conn_tests;
mod dispatch;
mod exchange;
mod fcgi;
mod fcgi_admit;
mod fcgi_compress;
mod fcgi_error;
mod https_redirect;
mod inbuf;
mod lua_http;
mod lua_timers;
#[cfg(test)]
mod lua_timers_tests;
pub mod lua_wait;
pub mod net;
mod out;
mod peer;
mod per_ip;
mod proxy;
mod real_peer;
mod respond_hook;
mod site_headers;
mod splice;
mod spool;
pub mod timers;
mod vhost;

pub use net::Listener;

use crate::access_line;
use crate::admin::scoreboard::{now_ms, Scoreboard, State as WorkerState, WorkerSlot};
use crate::config::Config;
use crate::fastcgi::pool::Pool;
use crate::http::date::DateCache;
use crate::log::{AccessLog, ErrorLog};
use crate::script::Router;
use crate::static_files::Site;
use crate::transport::Stream;
use conn::{Conn, Ctx, Ready, Verdict};
use dispatch::OtherSites;
use fcgi::StderrLimit;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::Signal;
use nix::sys::signalfd::{SfdFlags, SigSet, SignalFd};
use per_ip::PerIp;
use slab::Slab;
use std::io::Read as _;
use std::io::{self, Write as _};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};
use timers::Timers;

/// How long a closing connection's unread input is drained before the final close.
const LINGER: Duration = Duration::from_secs(2);
/// How long accepting pauses when the process runs out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

const SIGNAL: Token = Token(usize::MAX - 1);
/// Listener i has token LISTENER_BASE + i; connections have their slab key, and the backend
/// socket of connection k has BACKEND_BASE + k.
const LISTENER_BASE: usize = usize::MAX / 2;
const BACKEND_BASE: usize = usize::MAX / 4;

/// What a worker is handed by the watcher after fork.
pub struct WorkerSetup<'a> {
    /// The configuration.
    pub config: &'a Config,
    /// The listening sockets, in the config's order.
    pub listeners: Vec<Listener>,
    /// Which listeners (by index) expect a PROXY protocol header first.
    pub proxied: Vec<bool>,
    /// The error log (inherited; reopened on SIGHUP).
    pub error_log: &'a ErrorLog,
    /// The access log (inherited; reopened on SIGHUP).
    pub access_log: Option<AccessLog>,
    /// The document root.
    pub site: Site,
    /// This worker's slot (0-based), which decides its share of spawned FastCGI processes.
    pub index: usize,
    /// The route function, prepared for this worker.
    pub router: Option<Router>,
    /// The shared scoreboard, its slot for this worker, and the worker's generation.
    pub board: Option<(Rc<Scoreboard>, usize, u32)>,
}

/// Why accepting is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accepting {
    Yes,
    /// At `limits.connections`: resumes when a connection closes.
    Full,
    /// Out of descriptors: resumes at this time.
    Backoff(Instant),
    /// Draining: never again.
    Stopped,
}

struct Worker<'a> {
    config: &'a Config,
    poll: Poll,
    listeners: Vec<Listener>,
    conns: Slab<Conn>,
    timers: Timers,
    date: DateCache,
    site: Site,
    error_log: &'a ErrorLog,
    access: Option<AccessLog>,
    accepting: Accepting,
    draining: bool,
    signals: SignalFd,
    pool: Pool,
    upstreams: crate::proxy::pool::Upstreams,
    stderr: StderrLimit,
    router: Option<Router>,
    listener_names: Vec<String>,
    /// Which listeners expect a PROXY protocol header first.
    proxied: Vec<bool>,
    other_sites: OtherSites,
    board: Option<(Rc<Scoreboard>, usize)>,
    now_ms: u64,
    bufs: bufs::Bufs,
    per_ip: PerIp,
    /// When to resume route calls that wait.
    lua_wakes: lua_wait::Wakes,
    /// Connections to run again: they spent their send budget (`Flush::Yield`).
    again: Vec<usize>,
}

/// Runs a worker until it is told to stop; returns the exit code.
pub fn run(setup: WorkerSetup<'_>) -> i32 {
    match Worker::new(setup) {
        Ok(mut w) => w.run(),
        Err(e) => {
            tracing::error!("worker start-up failed: {e}");
            1
        }
    }
}

impl<'a> Worker<'a> {
    fn new(setup: WorkerSetup<'a>) -> io::Result<Worker<'a>> {
        backstop::install();
        let poll = Poll::new()?;
        let mut mask = SigSet::empty();
        for s in [
            Signal::SIGINT,
            Signal::SIGQUIT,
            Signal::SIGTERM,
            Signal::SIGHUP,
            Signal::SIGCHLD,
        ] {
            mask.add(s);
        }
        // The watcher blocked these before forking; the mask is inherited.
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        poll.registry().register(
            &mut SourceFd(&signals.as_raw_fd()),
            SIGNAL,
            Interest::READABLE,
        )?;
        let mut listeners = setup.listeners;
        let listener_names = listeners.iter().map(Listener::name).collect();
        for (i, l) in listeners.iter_mut().enumerate() {
            l.prepare()?;
            l.register(poll.registry(), Token(LISTENER_BASE + i))?;
        }
        let t = &setup.config.timeouts;
        let mut backend_timeouts: Vec<_> = setup
            .config
            .fastcgi
            .iter()
            .map(|d| (d.connect_timeout, d.read_timeout))
            .collect();
        // Upstreams' timers follow the FastCGI backends' (proxy::Kinds).
        for u in &setup.config.upstreams {
            backend_timeouts.extend(proxy::Kinds::durations(u));
        }
        // CGI's time limit is the kind after the backends' (cgi_admit::timer_kind).
        if let Some(cgi) = &setup.config.cgi {
            backend_timeouts.push((cgi.timeout, cgi.timeout));
        }
        Ok(Worker {
            config: setup.config,
            poll,
            listeners,
            conns: Slab::with_capacity(1024),
            timers: {
                let mut timers = Timers::new(
                    t.read_idle,
                    t.write_idle,
                    t.keepalive_idle,
                    LINGER,
                    &backend_timeouts,
                );
                timers.set_handshake(t.handshake);
                timers
            },
            date: DateCache::new(),
            site: setup.site,
            error_log: setup.error_log,
            access: setup.access_log,
            accepting: Accepting::Yes,
            draining: false,
            signals,
            pool: Pool::new(
                setup.config,
                setup.index,
                setup.config.workers,
                setup.board.as_ref().map(|(b, slot, _)| (b.clone(), *slot)),
            ),
            upstreams: {
                let mut u = crate::proxy::pool::Upstreams::new(setup.config);
                if let Some((b, slot, _)) = &setup.board {
                    u.attach_board(
                        b.clone(),
                        *slot,
                        crate::proxy::pool::proc_index(setup.config),
                    );
                }
                u
            },
            stderr: StderrLimit::default(),
            router: setup.router.map(|mut r| {
                // at_worker_start, and this worker's share of the `every` timers.
                r.start_timers(setup.index, Instant::now());
                r
            }),
            listener_names,
            proxied: setup.proxied,
            other_sites: OtherSites::default(),
            board: setup.board.map(|(b, slot, generation)| {
                if let Some(s) = b.worker(slot) {
                    s.claim(std::process::id(), generation, now_ms());
                    // Set up and about to poll: this is what a reload waits for.
                    s.set_state(WorkerState::Idle);
                }
                backstop::report_to(b.clone(), slot);
                (b, slot)
            }),
            now_ms: now_ms(),
            bufs: bufs::Bufs::default(),
            per_ip: PerIp::new(setup.config.limits.connections_per_ip),
            lua_wakes: lua_wait::Wakes::default(),
            again: Vec::new(),
        })
    }

    fn run(&mut self) -> i32 {
        let mut events = Events::with_capacity(1024);
        let mut last_flush = Instant::now();
        loop {
            let now = Instant::now();
            let mut timeout = Duration::from_secs(1);
            if let Some(d) = self.timers.next_deadline() {
                timeout = timeout.min(d.saturating_duration_since(now));
            }
            if let Accepting::Backoff(at) = self.accepting {
                timeout = timeout.min(at.saturating_duration_since(now));
            }
            if let Some(at) = self.lua_wakes.next() {
                timeout = timeout.min(at.saturating_duration_since(now));
            }
            if let Some(at) = self.pool.next_recheck() {
                timeout = timeout.min(at.saturating_duration_since(now));
            }
            if let Some(at) = self.router.as_ref().and_then(|r| r.next_timer()) {
                timeout = timeout.min(at.saturating_duration_since(now));
            }
            if !self.again.is_empty() {
                // Connections that yielded their pass: look for events, but do not wait.
                timeout = Duration::ZERO;
            }
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!("poll: {e}");
                    return 1;
                }
            }
            let now = Instant::now();
            let wall = SystemTime::now();
            self.date.refresh(wall);
            self.now_ms = wall
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            if let Some(slot) = self.slot() {
                slot.heartbeat(self.now_ms);
            }
            for event in events.iter() {
                match event.token() {
                    SIGNAL => {
                        if let Some(code) = self.on_signals() {
                            return code;
                        }
                    }
                    Token(t) if t >= LISTENER_BASE => self.accept(t - LISTENER_BASE, now),
                    Token(t) if t >= BACKEND_BASE => {
                        let read_closed = event.is_read_closed();
                        let readable = event.is_readable() || read_closed;
                        let writable = event.is_writable() || event.is_write_closed();
                        self.on_conn(t - BACKEND_BASE, now, |c, ctx| {
                            c.backend_ready(ctx, readable, writable, read_closed)
                        });
                    }
                    Token(key) => {
                        let ready = Ready {
                            readable: event.is_readable(),
                            writable: event.is_writable() || event.is_write_closed(),
                            read_closed: event.is_read_closed(),
                        };
                        self.on_conn(key, now, |c, ctx| c.ready(ctx, ready));
                    }
                }
            }
            self.expire_timers(now);
            if self.pool.recheck_due(now) {
                self.wake_waiters(now);
            }
            // Those that yielded last pass go on now, after every connection that had an event.
            // A connection that yielded and then had an event too is listed twice: run it once.
            let mut again = std::mem::take(&mut self.again);
            again.sort_unstable();
            again.dedup();
            for key in again {
                self.on_conn(key, now, |c, ctx| c.resume(ctx));
            }
            if let Some(r) = self.router.as_mut() {
                lua_timers::run_due(r, self.board.as_ref().map(|(b, _)| &**b), now);
            }
            while let Some((key, ticket)) = self.lua_wakes.pop_due(now) {
                let waits = self.conns.get(key).is_some_and(|c| c.waits_on(ticket));
                if waits {
                    self.on_conn(key, now, |c, ctx| c.lua_wake(ctx, ticket));
                } else if let Some(r) = self.router.as_mut() {
                    r.cancel_route(ticket);
                }
            }
            if let Accepting::Backoff(at) = self.accepting {
                if now >= at {
                    self.resume_accepting();
                }
            }
            if now.duration_since(last_flush) >= Duration::from_secs(1) {
                if let Some(a) = &mut self.access {
                    a.flush();
                }
                last_flush = now;
            }
            if self.draining && self.conns.is_empty() {
                return self.exit(0);
            }
            if let Some(slot) = self.slot() {
                if self.draining {
                    slot.set_state(WorkerState::Draining);
                } else if self.conns.is_empty() {
                    slot.set_state(WorkerState::Idle);
                }
            }
        }
    }

    /// Runs `f` on the connection at `key`, closes it if it says so, then runs whatever that
    /// freed up.
    fn on_conn(
        &mut self,
        key: usize,
        now: Instant,
        f: impl FnOnce(&mut Conn, &mut Ctx<'_>) -> Verdict,
    ) {
        self.with_conn(key, now, f);
        self.wake_waiters(now);
    }

    /// Runs `f` on the connection at `key` and closes it if it says so.
    fn with_conn(
        &mut self,
        key: usize,
        now: Instant,
        f: impl FnOnce(&mut Conn, &mut Ctx<'_>) -> Verdict,
    ) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let mut ctx = Ctx {
            site: &mut self.site,
            limits: &self.config.limits,
            server_name: &self.config.server_name,
            date: &self.date,
            timers: &mut self.timers,
            access: self.access.as_mut(),
            draining: self.draining,
            now,
            token: key,
            config: self.config,
            pool: &mut self.pool,
            upstreams: &mut self.upstreams,
            registry: self.poll.registry(),
            stderr: &mut self.stderr,
            slot: self.board.as_ref().and_then(|(b, i)| b.worker(*i)),
            board: self.board.as_ref().map(|(b, _)| &**b),
            now_ms: self.now_ms,
            router: self.router.as_mut(),
            listener_names: &self.listener_names,
            other_sites: &mut self.other_sites,
            bufs: &mut self.bufs,
            lua_wakes: &mut self.lua_wakes,
            again: &mut self.again,
        };
        if f(conn, &mut ctx) == Verdict::Close {
            conn.abort(&mut ctx);
            self.close(key);
        } else if let Some(slot) = ctx.slot {
            let now = conn.activity();
            slot.set_state(now);
            slot.conn_moved(conn.shown, Some(now));
            conn.shown = Some(now);
        }
    }

    /// Runs the connections that waited for a busy FastCGI process and may go on now.
    fn wake_waiters(&mut self, now: Instant) {
        loop {
            let waiters = self.pool.take_wakeups();
            if waiters.is_empty() {
                return;
            }
            for key in waiters {
                self.with_conn(key, now, |c, ctx| c.resume(ctx));
            }
        }
    }

    fn close(&mut self, key: usize) {
        // Closing the socket removes it from the epoll set; no deregister call needed.
        let conn = self.conns.remove(key);
        self.per_ip.closed(conn.peer_ip());
        let shown = conn.shown;
        drop(conn);
        if let Some(slot) = self.slot() {
            slot.conn_closed();
            slot.conn_moved(shown, None);
        }
        if self.accepting == Accepting::Full {
            self.resume_accepting();
        }
    }

    fn accept(&mut self, index: usize, now: Instant) {
        while self.accepting == Accepting::Yes {
            if self.conns.len() >= self.config.limits.connections {
                self.pause_accepting(Accepting::Full);
                return;
            }
            let Some(listener) = self.listeners.get(index) else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => {
                    let Some(mut stream) = tls_wrap(self.config, index, stream) else {
                        continue;
                    };
                    if !self.per_ip.opened(&peer.ip) {
                        self.per_ip.closed(&peer.ip);
                        self.refuse(&mut stream, &peer.ip);
                        continue;
                    }
                    let entry = self.conns.vacant_entry();
                    let key = entry.key();
                    let conn = entry.insert(Conn::new(stream, peer, index, now));
                    if self.proxied.get(index) == Some(&true) {
                        conn.expect_proxy_header();
                    }
                    if let Some((b, i)) = &self.board {
                        if let Some(slot) = b.worker(*i) {
                            slot.conn_opened();
                        }
                    }
                    // Read at once, as lighttpd does: a client that connects and sends at once
                    // (most do) is answered in this pass, and one that closes after it never
                    // costs an epoll_ctl or a wakeup. A request not there yet costs one
                    // EAGAIN read; registering afterwards reports whatever arrived since (the
                    // kernel checks readiness when the socket is added).
                    let fresh = Ready {
                        readable: true,
                        writable: true,
                        read_closed: false,
                    };
                    self.on_conn(key, now, |c, ctx| c.ready(ctx, fresh));
                    let Some(conn) = self.conns.get_mut(key) else {
                        continue;
                    };
                    if let Err(e) = conn.stream_mut().register(self.poll.registry(), Token(key)) {
                        tracing::error!("register connection: {e}");
                        self.close(key);
                        continue;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM: the pending connection stays queued and
                    // the listener would report it again at once; pause instead of spinning.
                    tracing::warn!("accept: {e}; pausing accepts for {ACCEPT_BACKOFF:?}");
                    self.pause_accepting(Accepting::Backoff(now + ACCEPT_BACKOFF));
                    return;
                }
            }
        }
    }

    /// Over limits.connections_per_ip: 503 in one non-blocking write, then close at once (as
    /// nginx's limit_conn answers), with no slab entry or linger. What the client already sent
    /// is read first, so the close does not reset the connection over unread bytes.
    fn refuse(&mut self, stream: &mut Stream, ip: &str) {
        if stream.is_tls() {
            // No 503 can reach a TLS client before a handshake, and a flood must not cost
            // handshakes: the connection just closes.
            tracing::debug!(client = %ip, "over limits.connections_per_ip: closed (TLS)");
            return;
        }
        tracing::debug!(client = %ip, "over limits.connections_per_ip: 503");
        let mut sink = [0u8; 4096];
        let _ = stream.read(&mut sink);
        let answer = per_ip::refusal(self.date.http(), &self.config.server_name);
        let _ = stream.write(&answer);
        if let Some(a) = &mut self.access {
            let format = &self.config.ops.access_log_format;
            access_line::write_refusal(a, format, (ip, 0), self.date.clf(), 503, answer.len());
        }
        stream.shutdown_write();
    }

    fn pause_accepting(&mut self, why: Accepting) {
        for l in &mut self.listeners {
            let _ = l.deregister(self.poll.registry());
        }
        self.accepting = why;
    }

    fn resume_accepting(&mut self) {
        if self.draining {
            return;
        }
        // Registering again reports connections already queued (the events are edge-triggered,
        // so a mere flag change would not).
        for (i, l) in self.listeners.iter_mut().enumerate() {
            let _ = l.register(self.poll.registry(), Token(LISTENER_BASE + i));
        }
        self.accepting = Accepting::Yes;
    }

    fn expire_timers(&mut self, now: Instant) {
        while let Some((key, gen)) = self.timers.pop_expired(now) {
            let Some(conn) = self.conns.get(key) else {
                continue;
            };
            if conn.owns_timer(gen) {
                self.on_conn(key, now, |c, ctx| c.on_timer(ctx, gen));
            }
        }
    }

    /// Handles queued signals; Some(code) when the worker must exit now.
    fn on_signals(&mut self) -> Option<i32> {
        loop {
            match self.signals.read_signal() {
                Ok(Some(info)) => match Signal::try_from(info.ssi_signo as i32) {
                    // A terminal's Ctrl-C reaches the worker as SIGINT together with the
                    // watcher's SIGQUIT: the same stop, not a second one. A second Ctrl-C
                    // makes the watcher send SIGTERM.
                    Ok(Signal::SIGINT) | Ok(Signal::SIGQUIT) if !self.draining => self.drain(),
                    Ok(Signal::SIGTERM) => return Some(self.exit(0)),
                    Ok(Signal::SIGHUP) => self.reopen_logs(),
                    Ok(Signal::SIGCHLD) => {
                        // A CGI process ended: its run learns the exit status.
                        let now = Instant::now();
                        for key in cgi_procs::reap() {
                            self.on_conn(key, now, |c, ctx| c.resume(ctx));
                        }
                    }
                    _ => {}
                },
                Ok(None) => return None,
                Err(e) => {
                    tracing::error!("signalfd: {e}");
                    return None;
                }
            }
        }
    }

    fn drain(&mut self) {
        self.draining = true;
        self.pause_accepting(Accepting::Stopped);
        // The next generation's worker of slot 0 takes the `{ worker = "one" }` timers over.
        if let Some(r) = self.router.as_mut() {
            r.stop_one_timers();
        }
        if let Some((b, _)) = &self.board {
            b.give_back_timer_lease(std::process::id());
        }
        // Dropping our copies of the listeners: once every process has, the kernel refuses
        // new connections instead of queueing them for nobody.
        self.listeners.clear();
        let now = Instant::now();
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.on_conn(key, now, |c, ctx| c.drain(ctx));
        }
    }

    fn reopen_logs(&mut self) {
        if let Err(e) = self.error_log.reopen() {
            tracing::error!("reopen error log: {e}");
        }
        if let Some(a) = &mut self.access {
            if let Err(e) = a.reopen() {
                tracing::error!("reopen access log: {e}");
            }
        }
    }

    fn exit(&mut self, code: i32) -> i32 {
        if let Some(a) = &mut self.access {
            a.flush();
        }
        if let Some(slot) = self.slot() {
            slot.exited();
        }
        code
    }

    fn slot(&self) -> Option<&WorkerSlot> {
        self.board.as_ref().and_then(|(b, i)| b.worker(*i))
    }
}

/// A connection accepted on a `tls = true` listener becomes a TLS stream; others pass through.
/// None (the connection is dropped) if rustls cannot make a session.
fn tls_wrap(config: &Config, listener: usize, stream: Stream) -> Option<Stream> {
    if config.tls.kind(listener) != crate::config::ListenKind::Tls {
        return Some(stream);
    }
    let (Stream::Tcp(tcp), Some(server)) = (stream, &config.tls.server) else {
        return None;
    };
    match crate::tls::TlsStream::new(tcp, server.0.clone()) {
        Ok(s) => Some(Stream::Tls(Box::new(s))),
        Err(e) => {
            tracing::error!("TLS session: {e}");
            None
        }
    }
}
