//! The admin socket, watcher side: accepts REPL clients on a Unix socket, checks who they are,
//! passes their chunks to the admin evaluator process ([`super::link`]) and sends the answers
//! back in request order. No Lua runs here.
//!
//! Everything is non-blocking and bounded, so a slow or hostile admin client can never stall
//! supervision: frames are at most 1 MiB, a client's unsent output at most 8 MiB, at most
//! [`MAX_PENDING`] of its chunks are in the works at once, an idle client is dropped after 5
//! minutes, and a chunk runs at most [`CHUNK_LIMIT`] in the evaluator (which is then killed).

use super::link::{Link, LinkEvent};
use super::protocol::{self, FrameDecoder};
use super::wire::Call;
use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};
use nix::unistd::Pid;
use serde_json::Value;
use slab::Slab;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The watcher's token for the admin listener.
pub const LISTENER: Token = Token(1);
/// The watcher's token for the link to the admin evaluator.
pub use super::link::EVALUATOR;
/// Admin client `k` has token `CLIENT_BASE + k`.
pub const CLIENT_BASE: usize = 1000;
/// An admin client idle this long is dropped.
const IDLE: Duration = Duration::from_secs(300);
/// Unsent output beyond which a client that does not read is dropped.
const MAX_OUT: usize = 8 << 20;
/// Undecoded input beyond which a client that sends without waiting is dropped.
const MAX_IN: usize = 16 << 20;
/// A client's chunks queued or running at once; further requests wait in its buffer.
pub const MAX_PENDING: usize = 8;
/// The run time a chunk may use in the evaluator before the evaluator is killed.
pub const CHUNK_LIMIT: Duration = Duration::from_secs(5);

/// A request of one client: its id, and its response once known.
struct Pending {
    id: u64,
    answer: Option<Vec<u8>>,
}

struct Client {
    stream: UnixStream,
    decoder: FrameDecoder,
    out: Vec<u8>,
    out_pos: usize,
    last: Instant,
    /// Requests in arrival order; answers leave in that order.
    pending: VecDeque<Pending>,
    /// The client sent EOF or broke: drop it once its answers are out.
    closed: bool,
}

/// The admin socket, its clients and the evaluator link.
pub struct AdminServer {
    path: PathBuf,
    listener: UnixListener,
    clients: Slab<Client>,
    link: Link,
    next_id: u64,
}

impl AdminServer {
    /// Creates the socket with mode 0600 (under a tight umask, so it never exists with wider
    /// permissions), replacing a stale one only if nobody answers on it.
    pub fn bind(path: &Path, registry: &Registry) -> Result<AdminServer, String> {
        crate::sockets::remove_stale_socket(path)?;
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
        let bound = UnixListener::bind(path);
        nix::sys::stat::umask(old);
        let mut listener = bound.map_err(|e| format!("admin socket {}: {e}", path.display()))?;
        registry
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(|e| format!("admin socket: {e}"))?;
        Ok(AdminServer {
            path: path.to_path_buf(),
            listener,
            clients: Slab::new(),
            link: Link::new(CHUNK_LIMIT),
            next_id: 1,
        })
    }

    /// Whether any client is connected (the watcher then wakes at least once a second).
    pub fn has_clients(&self) -> bool {
        !self.clients.is_empty()
    }

    /// Whether a chunk is queued, running or waiting, or an answer is not written yet (the
    /// watcher lingers a little at exit for these).
    pub fn busy(&self) -> bool {
        self.link.busy()
            || self
                .clients
                .iter()
                .any(|(_, c)| !c.pending.is_empty() || c.out_pos < c.out.len())
    }

    /// Accepts pending clients; refuses those that are neither root nor our own user.
    pub fn accept(&mut self, registry: &Registry) {
        loop {
            let (mut stream, _) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!("admin accept: {e}");
                    return;
                }
            };
            if let Err(why) = peer_allowed(&stream) {
                tracing::warn!("admin: refused a client: {why}");
                let frame = protocol::encode_response(&protocol::error_response(&format!(
                    "permission denied: {why}"
                )));
                let _ = stream.write(&frame);
                continue;
            }
            let entry = self.clients.vacant_entry();
            let token = Token(CLIENT_BASE + entry.key());
            if registry
                .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                .is_err()
            {
                continue;
            }
            let hello = protocol::hello(env!("CARGO_PKG_VERSION"), protocol::FUNCTIONS);
            let out = protocol::encode_frame(&hello).unwrap_or_default();
            entry.insert(Client {
                stream,
                decoder: FrameDecoder::new(),
                out,
                out_pos: 0,
                last: Instant::now(),
                pending: VecDeque::new(),
                closed: false,
            });
        }
    }

    /// Handles an event of client `key`: reads its requests, queues them, writes answers.
    pub fn client_ready(&mut self, key: usize) {
        let Some(c) = self.clients.get_mut(key) else {
            return;
        };
        let mut buf = [0u8; 16 * 1024];
        while !c.closed {
            match c.stream.read(&mut buf) {
                Ok(0) => c.closed = true,
                Ok(n) => {
                    c.decoder.feed(&buf[..n]);
                    c.last = Instant::now();
                    if c.decoder.buffered() > MAX_IN {
                        c.closed = true;
                        c.pending.clear();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => c.closed = true,
            }
        }
        self.take_requests(key);
        self.write(key);
    }

    /// Moves a client's complete requests into the works, up to [`MAX_PENDING`].
    fn take_requests(&mut self, key: usize) {
        let Some(c) = self.clients.get_mut(key) else {
            return;
        };
        while c.pending.len() < MAX_PENDING {
            let id = self.next_id;
            let answer = match c.decoder.next_frame() {
                Ok(Some(v)) => match protocol::parse_request(&v) {
                    Ok(chunk) => {
                        self.link.submit(id, chunk);
                        None
                    }
                    Err(msg) => Some(protocol::error_response(&msg)),
                },
                Ok(None) => break,
                Err(protocol::ProtocolError::Json(e)) => {
                    Some(protocol::error_response(&format!("bad request: {e}")))
                }
                Err(_) => {
                    // The stream can no longer be framed.
                    c.closed = true;
                    c.pending.clear();
                    break;
                }
            };
            self.next_id += 1;
            c.pending.push_back(Pending {
                id,
                answer: answer.map(|r| protocol::encode_response(&r)),
            });
        }
    }

    /// Writes the answers that are ready, in order; drops a client that is done or stuck.
    fn write(&mut self, key: usize) {
        let Some(c) = self.clients.get_mut(key) else {
            return;
        };
        while let Some(Pending {
            answer: Some(_), ..
        }) = c.pending.front()
        {
            if let Some(Pending {
                answer: Some(bytes),
                ..
            }) = c.pending.pop_front()
            {
                c.out.extend_from_slice(&bytes);
            }
        }
        let mut open = c.out.len() - c.out_pos <= MAX_OUT;
        while open && c.out_pos < c.out.len() {
            match c.stream.write(&c.out[c.out_pos..]) {
                Ok(n) => c.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => open = false,
            }
        }
        if c.out_pos == c.out.len() {
            c.out.clear();
            c.out_pos = 0;
        }
        let done = c.closed && c.pending.is_empty() && c.out.is_empty();
        if !open || done {
            self.clients.remove(key);
        }
    }

    /// Handles readiness of the evaluator link; returns the calls the watcher must answer
    /// (with [`AdminServer::reply`]).
    pub fn evaluator_ready(&mut self, registry: &Registry) -> Vec<(u64, Call)> {
        let events = self.link.ready(registry, Instant::now());
        self.handle(events)
    }

    /// The watcher's answer to chunk `id`'s call.
    pub fn reply(&mut self, id: u64, result: Result<Value, String>) {
        self.link.reply(id, result);
    }

    /// Whether the answer to chunk `id`'s call waits to be sent to the evaluator.
    pub fn reply_queued(&self, id: u64) -> bool {
        self.link.reply_queued(id)
    }

    /// Whether an evaluator must be forked (chunks wait and none runs).
    pub fn needs_evaluator(&self) -> bool {
        self.link.needs_process()
    }

    /// Takes the evaluator the watcher forked.
    pub fn attach_evaluator(&mut self, pid: Pid, stream: UnixStream, registry: &Registry) {
        self.link.attach(pid, stream, registry);
    }

    /// The evaluator could not be forked: the waiting chunks fail with `why`.
    pub fn evaluator_failed(&mut self, why: &str) {
        let events = self.link.start_failed(why);
        self.handle(events);
    }

    /// A child exited; true if it was an evaluator (not a worker or a backend).
    pub fn reaped(&mut self, registry: &Registry, pid: Pid, how: &str) -> bool {
        let (ours, events) = self.link.reaped(registry, pid, how);
        self.handle(events);
        ours
    }

    /// Enforces the chunk limit and feeds the evaluator; call after the events of a loop turn.
    pub fn pump(&mut self, registry: &Registry, now: Instant) {
        // Each round sends at most one message; a chunk that ends without running (too large
        // to pass on) lets the next one go at once, so go on until nothing changes. Pumping
        // yields only ended chunks: calls come from the evaluator, through `evaluator_ready`.
        loop {
            let events = self.link.pump(registry, now);
            if events.is_empty() {
                return;
            }
            self.handle(events);
        }
    }

    /// When the watcher must wake for the running chunk's deadline.
    pub fn deadline(&self) -> Option<Instant> {
        self.link.deadline()
    }

    /// Delivers ended chunks to their clients; returns the calls for the watcher.
    fn handle(&mut self, events: Vec<LinkEvent>) -> Vec<(u64, Call)> {
        let mut calls = Vec::new();
        for event in events {
            match event {
                LinkEvent::Call(id, call) => calls.push((id, call)),
                LinkEvent::Done(id, response) => {
                    let key = self
                        .clients
                        .iter()
                        .find_map(|(k, c)| c.pending.iter().any(|p| p.id == id).then_some(k));
                    // The client may have gone; its answer goes nowhere.
                    let Some(key) = key else { continue };
                    if let Some(c) = self.clients.get_mut(key) {
                        if let Some(p) = c.pending.iter_mut().find(|p| p.id == id) {
                            p.answer = Some(protocol::encode_response(&response));
                        }
                    }
                    self.take_requests(key);
                    self.write(key);
                }
            }
        }
        calls
    }

    /// Drops clients idle for too long, telling them why.
    pub fn expire(&mut self, now: Instant) {
        let idle: Vec<usize> = self
            .clients
            .iter()
            .filter(|(_, c)| c.pending.is_empty() && now.duration_since(c.last) > IDLE)
            .map(|(k, _)| k)
            .collect();
        for k in idle {
            let mut c = self.clients.remove(k);
            say_closing(&mut c, "idle for 5 minutes");
        }
    }

    /// At exit: tells every client the server is stopping, closes them, stops the evaluator
    /// and removes the socket file.
    pub fn cleanup(&mut self, registry: &Registry) {
        for (_, c) in self.clients.iter_mut() {
            say_closing(c, "the server is stopping");
        }
        self.clients.clear();
        self.link.stop(registry);
        let _ = std::fs::remove_file(&self.path);
    }

    /// Removes the socket file only (a start that failed).
    pub fn remove_socket(&self) {
        let _ = std::fs::remove_file(&self.path);
    }

    /// Every descriptor of the admin side: closed in forked children.
    pub fn raw_fds(&self) -> Vec<i32> {
        let mut fds = vec![self.listener.as_raw_fd()];
        fds.extend(self.clients.iter().map(|(_, c)| c.stream.as_raw_fd()));
        fds.extend(self.link.raw_fd());
        fds
    }
}

/// Best effort: the unsent answers, then the closing notice, without blocking.
fn say_closing(c: &mut Client, reason: &str) {
    let notice = protocol::encode_response(&protocol::closing(reason));
    let mut bytes = c.out.split_off(c.out_pos);
    bytes.extend_from_slice(&notice);
    let mut sent = 0;
    while sent < bytes.len() {
        match c.stream.write(&bytes[sent..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => sent += n,
        }
    }
}

/// Root, or the user the server runs as.
fn peer_allowed(stream: &UnixStream) -> Result<(), String> {
    let cred = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| format!("SO_PEERCRED: {e}"))?;
    let me = nix::unistd::geteuid().as_raw();
    if cred.uid() == 0 || cred.uid() == me {
        Ok(())
    } else {
        Err(format!("uid {} is neither root nor uid {me}", cred.uid()))
    }
}
