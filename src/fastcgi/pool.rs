//! A worker's view of its FastCGI backends: addresses, balancing by least active requests,
//! addresses left out for a while after they refused, and idle kept-alive connections.

use crate::admin::scoreboard::{ProcIndex, Scoreboard};
use crate::config::{Config, FastcgiDef, ListenAddr};
use crate::transport::Stream;
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Idle connections kept per address.
const MAX_IDLE: usize = 32;
/// How soon a request waiting for a process the watcher closed for a restart looks again.
const RESTART_RECHECK: Duration = Duration::from_millis(5);

/// One address of a backend (a spawned proc or a configured address).
#[derive(Debug)]
pub struct Upstream {
    /// Where to connect.
    pub addr: ListenAddr,
    /// Requests in flight from this worker.
    pub active: u32,
    /// Requests sent from this worker.
    pub total: u64,
    /// Failures seen by this worker.
    pub errors: u64,
    /// Left out until then after a refused connection.
    pub disabled_until: Option<Instant>,
    /// Most requests in flight at once from this worker (None: no limit).
    pub capacity: Option<u32>,
    /// The scoreboard's proc slot for this address, shared by every worker.
    slot: Option<usize>,
    idle: Vec<Stream>,
    /// Requests a spawned process serves before it exits (PHP_FCGI_MAX_REQUESTS), when this
    /// worker is its only client; None: no limit known.
    max_requests: Option<u32>,
    /// Requests this worker began on the current process (reset when it is seen to go).
    served: u32,
    /// The connection of a process that served its last request, kept until the process
    /// closes it: until it is gone it may still accept a new connection, then drop it unread.
    retiring: Option<Stream>,
}

/// One `fastcgi "name" {}` as a worker uses it.
#[derive(Debug)]
pub struct Backend {
    /// The backend's name.
    pub name: String,
    /// Its addresses.
    pub upstreams: Vec<Upstream>,
    /// Whether connections are kept for reuse (FCGI_KEEP_CONN).
    pub keepalive: bool,
    disable_time: Duration,
    /// Connections (slab keys) waiting for an upstream with room.
    waiting: VecDeque<usize>,
    /// A process of this backend refused a request for a restart: its waiting connections
    /// run again at the pool's `recheck_at`.
    recheck: bool,
}

/// Every backend of the config, in config order.
#[derive(Default)]
pub struct Pool {
    /// The backends.
    pub backends: Vec<Backend>,
    /// Waiting connections to wake because an upstream got room.
    wake: Vec<usize>,
    /// Where the per-address counters are published for the admin REPL, and this worker's
    /// slot there (its row of the restart gate).
    board: Option<(Rc<Scoreboard>, usize)>,
    /// When the waiting connections look again for a process closed for a restart.
    recheck_at: Option<Instant>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("backends", &self.backends)
            .finish()
    }
}

/// The scoreboard's proc slot layout for a config: one slot per address of every backend, in
/// config order.
pub fn proc_index(config: &Config) -> ProcIndex {
    let counts: Vec<usize> = config
        .fastcgi
        .iter()
        .map(|d| upstream_addrs(d).len())
        .collect();
    ProcIndex::new(&counts)
}

/// Why no upstream was picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoUpstream {
    /// Every address is disabled or was tried: 503.
    Unavailable,
    /// Every usable address is busy: wait for one (`wait`).
    Busy,
}

/// A connection to an upstream: fresh (connecting) or reused (idle until now).
pub struct Conn {
    /// The socket.
    pub stream: Stream,
    /// Whether it was kept from an earlier request (it may have gone stale).
    pub reused: bool,
}

/// The addresses workers connect to for a definition: its spawned procs' sockets, or its
/// configured addresses.
pub fn upstream_addrs(def: &FastcgiDef) -> Vec<ListenAddr> {
    if def.spawn.is_some() {
        crate::fastcgi::spawn::proc_addrs(def).unwrap_or_default()
    } else {
        def.address.clone()
    }
}

impl Pool {
    /// The backends of `config` as worker `worker` of `workers` uses them.
    ///
    /// A spawned process (php-cgi with PHP_FCGI_CHILDREN=0) serves one connection at a time
    /// and, with FCGI_KEEP_CONN, waits on that connection for its next request. So each
    /// worker gets its own share of the processes (process i belongs to worker i % workers)
    /// and holds at most one connection to each, kept open between requests; a request
    /// finding all of them busy waits for one. With fewer processes than workers they are
    /// shared, one request at a time each, and connections are not kept (a kept idle
    /// connection would block the other workers). External addresses take any number of
    /// connections.
    pub fn new(
        config: &Config,
        worker: usize,
        workers: usize,
        board: Option<(Rc<Scoreboard>, usize)>,
    ) -> Pool {
        let index = proc_index(config);
        let workers = workers.max(1);
        let backends = config
            .fastcgi
            .iter()
            .enumerate()
            .map(|(b, d)| {
                let all = upstream_addrs(d);
                let spawned = d.spawn.is_some();
                let partition = spawned && all.len() >= workers;
                let addrs: Vec<(usize, ListenAddr)> = all
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| !partition || i % workers == worker % workers)
                    .collect();
                Backend {
                    name: d.name.clone(),
                    upstreams: addrs
                        .into_iter()
                        .map(|(u, addr)| Upstream {
                            slot: index.index(b, u),
                            addr,
                            active: 0,
                            total: 0,
                            errors: 0,
                            disabled_until: None,
                            capacity: spawned.then_some(1),
                            idle: Vec::new(),
                            max_requests: if partition { max_requests(d) } else { None },
                            served: 0,
                            retiring: None,
                        })
                        .collect(),
                    keepalive: d.keepalive && (!spawned || partition),
                    disable_time: d.disable_time,
                    waiting: VecDeque::new(),
                    recheck: false,
                }
            })
            .collect();
        Pool {
            backends,
            wake: Vec::new(),
            board,
            recheck_at: None,
        }
    }

    /// The index of the backend named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.backends.iter().position(|b| b.name == name)
    }

    /// The enabled upstream of backend `b` with room and the fewest requests in flight,
    /// skipping those in `exclude` (already tried for this request).
    pub fn pick(&mut self, b: usize, now: Instant, exclude: &[usize]) -> Result<usize, NoUpstream> {
        let backend = self.backends.get_mut(b).ok_or(NoUpstream::Unavailable)?;
        let mut best: Option<(usize, u32)> = None;
        let mut busy = false;
        for (i, u) in backend.upstreams.iter_mut().enumerate() {
            if exclude.contains(&i) {
                continue;
            }
            if let Some(t) = u.disabled_until {
                if now < t {
                    continue;
                }
                u.disabled_until = None;
            }
            if u.capacity.is_some_and(|c| u.active >= c) {
                busy = true;
                continue;
            }
            if best.is_none_or(|(_, a)| u.active < a) {
                best = Some((i, u.active));
            }
        }
        match best {
            Some((i, _)) => Ok(i),
            None if busy => Err(NoUpstream::Busy),
            None => Err(NoUpstream::Unavailable),
        }
    }

    /// Queues connection `key` until an upstream of backend `b` has room.
    pub fn wait(&mut self, b: usize, key: usize) {
        if let Some(backend) = self.backends.get_mut(b) {
            if !backend.waiting.contains(&key) {
                backend.waiting.push_back(key);
            }
        }
    }

    /// Forgets a waiting connection (it went away or timed out).
    pub fn unwait(&mut self, b: usize, key: usize) {
        if let Some(backend) = self.backends.get_mut(b) {
            backend.waiting.retain(|&k| k != key);
        }
    }

    /// The waiting connections to run again because an upstream got room.
    pub fn take_wakeups(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.wake)
    }

    /// A connection to upstream `u` of backend `b`: an idle one that is still open, else a
    /// new non-blocking connect.
    pub fn connect(&mut self, b: usize, u: usize) -> io::Result<Conn> {
        let up = self
            .backends
            .get_mut(b)
            .and_then(|x| x.upstreams.get_mut(u))
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        while let Some(stream) = up.idle.pop() {
            if still_open(&stream) {
                return Ok(Conn {
                    stream,
                    reused: true,
                });
            }
            // The process went away: the next connection reaches a fresh one.
            up.served = 0;
        }
        let stream = Stream::connect(&up.addr)?;
        Ok(Conn {
            stream,
            reused: false,
        })
    }

    /// Counts a request starting on upstream `u`.
    pub fn begin(&mut self, b: usize, u: usize) {
        if let Some(up) = self.upstream(b, u) {
            up.active += 1;
            up.total += 1;
            up.served = up.served.saturating_add(1);
        }
        if let Some((board, me, p)) = self.proc_slot(b, u) {
            board.proc_started(me, p);
        }
    }

    /// The scoreboard, this worker's slot and upstream `u`'s proc slot.
    fn proc_slot(&self, b: usize, u: usize) -> Option<(&Scoreboard, usize, usize)> {
        let i = self.backends.get(b)?.upstreams.get(u)?.slot?;
        let (board, me) = self.board.as_ref()?;
        Some((board, *me, i))
    }

    /// Takes upstream `u` of backend `b` for a request about to begin, before anything is
    /// sent to it: a spawned process the watcher closed for a restart refuses (the request
    /// then waits, and looks again within [`RESTART_RECHECK`]). Pair each `true` with `end`,
    /// or `unadmit` if the request does not begin after all.
    pub fn admit(&mut self, b: usize, u: usize, now: Instant) -> bool {
        let Some((board, me, p)) = self.gated(b, u) else {
            return true;
        };
        if board.hold_proc(me, p) {
            return true;
        }
        self.recheck_at.get_or_insert(now + RESTART_RECHECK);
        if let Some(backend) = self.backends.get_mut(b) {
            backend.recheck = true;
        }
        false
    }

    /// Gives back an `admit` whose request did not begin (its connect failed).
    pub fn unadmit(&mut self, b: usize, u: usize) {
        if let Some((board, me, p)) = self.gated(b, u) {
            board.release_proc(me, p);
        }
    }

    /// The scoreboard, this worker's slot and the proc slot of upstream `u`, when it is a
    /// spawned process (one request at a time from each worker: what the gate's bits hold).
    fn gated(&self, b: usize, u: usize) -> Option<(&Scoreboard, usize, usize)> {
        let up = self.backends.get(b)?.upstreams.get(u)?;
        let (board, me) = self.board.as_ref()?;
        (up.capacity == Some(1)).then_some(())?;
        Some((board, *me, up.slot?))
    }

    /// When [`Pool::recheck_due`] has work.
    pub fn next_recheck(&self) -> Option<Instant> {
        self.recheck_at
    }

    /// At [`Pool::next_recheck`]: the waiting connections of each backend a closed process
    /// refused run again (those that wait for it look again; the others queue again with their
    /// deadlines). Whether it was due (then `take_wakeups` has them).
    pub fn recheck_due(&mut self, now: Instant) -> bool {
        if self.recheck_at.is_none_or(|t| now < t) {
            return false;
        }
        self.recheck_at = None;
        for backend in self.backends.iter_mut().filter(|b| b.recheck) {
            backend.recheck = false;
            self.wake.extend(backend.waiting.drain(..));
        }
        true
    }

    /// Counts a request ending on upstream `u`; `failed` counts an error. A connection
    /// waiting for room is woken.
    pub fn end(&mut self, b: usize, u: usize, failed: bool) {
        if let Some(up) = self.upstream(b, u) {
            up.active = up.active.saturating_sub(1);
            if failed {
                up.errors += 1;
            }
        }
        if let Some((board, me, p)) = self.proc_slot(b, u) {
            board.proc_finished(me, p);
            if failed {
                if let Some(slot) = board.proc(p) {
                    slot.error();
                }
            }
        }
        self.unadmit(b, u);
        if let Some(key) = self.backends.get_mut(b).and_then(|x| x.waiting.pop_front()) {
            self.wake.push(key);
        }
    }

    /// Leaves upstream `u` out for the backend's `disable_time`.
    pub fn disable(&mut self, b: usize, u: usize, now: Instant) {
        let Some(backend) = self.backends.get_mut(b) else {
            return;
        };
        let until = now + backend.disable_time;
        if let Some(up) = backend.upstreams.get_mut(u) {
            up.disabled_until = Some(until);
            up.idle.clear();
        }
        if let Some(p) = self.proc_slot(b, u).and_then(|(board, _, p)| board.proc(p)) {
            let ms = crate::admin::scoreboard::now_ms()
                + until.saturating_duration_since(now).as_millis() as u64;
            p.disable_until(ms);
        }
    }

    /// Keeps a connection whose request completed cleanly, for the next request; except
    /// after a process's last request (PHP_FCGI_MAX_REQUESTS): php-cgi sends END_REQUEST and
    /// then exits, and a request written on that connection in between would be lost. The
    /// next request connects fresh and waits in the listen queue across the respawn, but
    /// only once the process closed this connection (`take_retiring`): a backend still
    /// running could accept the new connection and exit with the request unread.
    pub fn release(&mut self, b: usize, u: usize, stream: Stream) {
        let keep = self.backends.get(b).is_some_and(|x| x.keepalive);
        if let Some(up) = self.upstream(b, u) {
            if up.max_requests.is_some_and(|m| up.served >= m) {
                up.served = 0;
                up.retiring = Some(stream);
                return;
            }
            if keep && up.idle.len() < MAX_IDLE {
                up.idle.push(stream);
            }
        }
    }

    /// The last connection of upstream `u`'s process (see `release`), if the process has not
    /// closed it yet: the caller waits for its end before connecting, so that the connection
    /// reaches the respawned process, not one that is exiting. The wait counts as a request
    /// in flight until `retired`.
    pub fn take_retiring(&mut self, b: usize, u: usize) -> Option<Stream> {
        let up = self.upstream(b, u)?;
        let stream = up.retiring.take().filter(still_open)?;
        up.active += 1;
        Some(stream)
    }

    /// Ends a wait that `take_retiring` began (the process closed its last connection, or
    /// the wait was given up); a connection waiting for room is woken.
    pub fn retired(&mut self, b: usize, u: usize) {
        if let Some(up) = self.upstream(b, u) {
            up.active = up.active.saturating_sub(1);
        }
        if let Some(key) = self.backends.get_mut(b).and_then(|x| x.waiting.pop_front()) {
            self.wake.push(key);
        }
    }

    /// The backend closed a connection of upstream `u`: its process is likely gone, so the
    /// count of requests it served starts again.
    pub fn closed_by_backend(&mut self, b: usize, u: usize) {
        if let Some(up) = self.upstream(b, u) {
            up.served = 0;
        }
    }

    fn upstream(&mut self, b: usize, u: usize) -> Option<&mut Upstream> {
        self.backends.get_mut(b)?.upstreams.get_mut(u)
    }
}

/// How many requests each spawned process of `def` serves before it exits: its env's
/// PHP_FCGI_MAX_REQUESTS, or php-cgi's default of 500 for a program named php*; 0 or an
/// unreadable value means no limit.
pub fn max_requests(def: &FastcgiDef) -> Option<u32> {
    let program = def.spawn.as_ref()?.first()?;
    let value = match def.env.get("PHP_FCGI_MAX_REQUESTS") {
        Some(v) => v.trim().parse::<u32>().ok()?,
        None => {
            let name = std::path::Path::new(program).file_name()?.to_str()?;
            if !name.starts_with("php") {
                return None;
            }
            500
        }
    };
    (value > 0).then_some(value)
}

/// Whether an idle backend connection is still open: a non-blocking peek sees EOF or an
/// error on one the backend closed (php-cgi closes after PHP_FCGI_MAX_REQUESTS).
pub fn still_open(stream: &Stream) -> bool {
    use nix::sys::socket::{recv, MsgFlags};
    use std::os::fd::AsRawFd;
    let mut b = [0u8; 1];
    match recv(
        stream.as_raw_fd(),
        &mut b,
        MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
    ) {
        Err(nix::errno::Errno::EAGAIN) => true,
        // EOF, an error, or stray bytes from a finished exchange: not reusable.
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn def(spawn: Option<&str>, env: &[(&str, &str)]) -> FastcgiDef {
        FastcgiDef {
            name: "t".into(),
            defined_at: String::new(),
            spawn: spawn.map(|p| vec![p.to_string()]),
            procs: 1,
            socket: None,
            address: Vec::new(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            extensions: Vec::new(),
            prefix: None,
            check_local: true,
            keepalive: true,
            request_buffering: true,
            connect_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(30),
            disable_time: Duration::from_secs(1),
            user: None,
            socket_owner: None,
        }
    }

    #[test]
    fn max_requests_comes_from_the_env_or_php_cgi_default() {
        let env = [("PHP_FCGI_MAX_REQUESTS", "5")];
        assert_eq!(max_requests(&def(Some("/usr/bin/php-cgi"), &env)), Some(5));
        assert_eq!(max_requests(&def(Some("/opt/app"), &env)), Some(5));
        assert_eq!(
            max_requests(&def(Some("/usr/bin/php-cgi8.2"), &[])),
            Some(500)
        );
        assert_eq!(max_requests(&def(Some("/opt/app"), &[])), None);
        let off = [("PHP_FCGI_MAX_REQUESTS", "0")];
        assert_eq!(max_requests(&def(Some("/usr/bin/php-cgi"), &off)), None);
        // An external address: the limit is not ours to know.
        assert_eq!(max_requests(&def(None, &env)), None);
    }
}
