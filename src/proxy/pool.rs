//! A worker's view of the HTTP upstreams: each address's state (requests in flight, totals,
//! failures, down or drained), the balancing methods, and the kept idle connections.
//!
//! Workers share nothing here: balancing and passive health are per worker (as nginx's are
//! without a shared zone). What must be shared — an address drained from the REPL, or taken
//! out by the watcher's active checks — arrives through [`Upstreams::set_admin_state`], which
//! the worker feeds from the scoreboard.

use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::admin::scoreboard::{
    now_ms, ProcIndex, ProcSlot, Scoreboard, PROXY_DRAINED, PROXY_UNHEALTHY,
};
use crate::config::{Balance, Config, HashKey, ListenAddr, UpstreamDef};
use crate::transport::Stream;
use mio::event::Source;
use mio::{Interest, Registry, Token};

/// How long an address stays out after `fails` passive failures in a row.
pub const PASSIVE_BACKOFF: Duration = Duration::from_secs(10);

/// One address of an upstream, as this worker sees it.
#[derive(Debug)]
pub struct AddrState {
    /// Where to connect.
    pub addr: ListenAddr,
    /// The address as written in messages and the access log.
    pub text: String,
    /// Its weight.
    pub weight: u32,
    /// Requests in flight.
    pub active: u32,
    /// Requests sent.
    pub total: u64,
    /// Failures (connect, bad or missing response).
    pub errors: u64,
    /// Failures in a row.
    fails: u32,
    /// Out (passive check) until then.
    down_until: Option<Instant>,
    /// Drained from the REPL: no new requests.
    pub drained: bool,
    /// Taken out by the active checks.
    pub unhealthy: bool,
    /// Smooth weighted round robin's running weight.
    current: i64,
}

impl AddrState {
    /// Whether a request may go here now.
    fn usable(&self, now: Instant) -> bool {
        !self.drained && !self.unhealthy && self.down_until.is_none_or(|t| now >= t)
    }
}

/// An idle kept connection.
struct Idle {
    addr: usize,
    stream: Stream,
    /// The poll token it is still registered with (kept by the proxy exchange, so reusing it
    /// costs no epoll_ctl when the same client connection asks again); None: deregistered.
    token: Option<Token>,
    /// An event came for it while it was idle (the upstream closing it, most likely): whoever
    /// takes it again with the same token must read it before waiting for one.
    event: bool,
}

/// One upstream.
pub struct Upstream {
    /// Its definition.
    pub def: UpstreamDef,
    /// Its addresses, in config order.
    pub addrs: Vec<AddrState>,
    idle: Vec<Idle>,
    /// Rotates the start of least_conn's scan so ties spread.
    turn: usize,
}

/// A connection handed out for one request.
pub struct Conn {
    /// The socket (connected, or connecting when `reused` is false).
    pub stream: Stream,
    /// Whether it was kept from an earlier request (it may have gone stale).
    pub reused: bool,
    /// Whether bytes or an EOF may be waiting that no event will announce again (a kept
    /// connection that had an event while idle): read it before waiting for one. A fresh or
    /// re-registered stream is false: the poll reports what it has anew.
    pub readable: bool,
}

/// A worker's upstreams.
pub struct Upstreams {
    /// By config index.
    pub list: Vec<Upstream>,
    /// The shared scoreboard, this worker's slot in it and where each address has its proc
    /// slot.
    board: Option<(Rc<Scoreboard>, usize, ProcIndex)>,
}

/// The scoreboard's proc slots of the HTTP upstreams: one per address, after the FastCGI
/// backends' slots (`fastcgi::pool::proc_index`).
pub fn proc_index(config: &Config) -> ProcIndex {
    let base = crate::fastcgi::pool::proc_index(config).end();
    let counts: Vec<usize> = config.upstreams.iter().map(|u| u.address.len()).collect();
    ProcIndex::with_base(base, &counts)
}

impl Upstreams {
    /// The upstreams of `config`, with no connection yet.
    pub fn new(config: &Config) -> Upstreams {
        let list = config
            .upstreams
            .iter()
            .map(|def| Upstream {
                addrs: def
                    .address
                    .iter()
                    .map(|a| AddrState {
                        text: addr_text(&a.addr),
                        addr: a.addr.clone(),
                        weight: a.weight.max(1),
                        active: 0,
                        total: 0,
                        errors: 0,
                        fails: 0,
                        down_until: None,
                        drained: false,
                        unhealthy: false,
                        current: 0,
                    })
                    .collect(),
                def: def.clone(),
                idle: Vec::new(),
                turn: 0,
            })
            .collect();
        Upstreams { list, board: None }
    }

    /// Publishes counters to the scoreboard (as worker slot `me`) and takes the drained and
    /// unhealthy flags from it.
    pub fn attach_board(&mut self, board: Rc<Scoreboard>, me: usize, index: ProcIndex) {
        self.board = Some((board, me, index));
    }

    fn slot(&self, u: usize, a: usize) -> Option<&ProcSlot> {
        let (board, _, index) = self.board.as_ref()?;
        board.proc(index.index(u, a)?)
    }

    /// The scoreboard, this worker's slot and address `a`'s proc slot.
    fn counted(&self, u: usize, a: usize) -> Option<(&Scoreboard, usize, usize)> {
        let (board, me, index) = self.board.as_ref()?;
        Some((board, *me, index.index(u, a)?))
    }

    /// Takes the shared flags of upstream `u`'s addresses from the scoreboard.
    fn refresh(&mut self, u: usize) {
        let Some(n) = self.list.get(u).map(|up| up.addrs.len()) else {
            return;
        };
        for a in 0..n {
            let Some(flags) = self.slot(u, a).map(ProcSlot::flags) else {
                return;
            };
            let drained = flags & PROXY_DRAINED != 0;
            let unhealthy = flags & PROXY_UNHEALTHY != 0;
            let s = &self.list[u].addrs[a];
            if s.drained != drained || s.unhealthy != unhealthy {
                self.set_admin_state(u, a, drained, unhealthy);
            }
        }
    }

    /// The index of the upstream called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.list.iter().position(|u| u.def.name == name)
    }

    /// Picks an address of upstream `u` not in `tried`: by the balancing method among the
    /// usable ones; when every untried one is out only by passive checks, the least recently
    /// failed of them is tried anyway (a guess of "down" must not stop all traffic). `key`
    /// is the hash input for `balance = "hash"`.
    pub fn pick(&mut self, u: usize, now: Instant, tried: &[usize], key: &[u8]) -> Option<usize> {
        self.refresh(u);
        let up = self.list.get_mut(u)?;
        // No list of candidates is built (this runs once per request): they are counted,
        // then walked again.
        let ok = |addrs: &[AddrState], i: usize| !tried.contains(&i) && addrs[i].usable(now);
        let n = (0..up.addrs.len()).filter(|&i| ok(&up.addrs, i)).count();
        if n == 0 {
            return (0..up.addrs.len())
                .filter(|i| {
                    let a = &up.addrs[*i];
                    !tried.contains(i) && !a.drained && !a.unhealthy
                })
                .min_by_key(|i| up.addrs[*i].down_until);
        }
        if n == 1 {
            return (0..up.addrs.len()).find(|&i| ok(&up.addrs, i));
        }
        let candidates = |addrs: &[AddrState]| {
            (0..addrs.len())
                .filter(|&i| ok(addrs, i))
                .collect::<Vec<usize>>()
        };
        Some(match &up.def.balance {
            Balance::RoundRobin => {
                let c = candidates(&up.addrs);
                smooth_round_robin(&mut up.addrs, &c)
            }
            Balance::LeastConn => {
                let c = candidates(&up.addrs);
                up.turn = up.turn.wrapping_add(1);
                let n = c.len();
                let mut best = c[up.turn % n];
                for k in 0..n {
                    let i = c[(up.turn + k) % n];
                    let (a, b) = (&up.addrs[i], &up.addrs[best]);
                    // active/weight smaller, compared without division.
                    if u64::from(a.active) * u64::from(b.weight)
                        < u64::from(b.active) * u64::from(a.weight)
                    {
                        best = i;
                    }
                }
                best
            }
            Balance::Hash(_) => {
                // Over all addresses, so one key keeps its address while that one is up;
                // when it is not, the next in the ring that is.
                let total: u64 = up.addrs.iter().map(|a| u64::from(a.weight)).sum();
                let mut point = fnv1a(key) % total.max(1);
                let mut start = 0;
                for (i, a) in up.addrs.iter().enumerate() {
                    if point < u64::from(a.weight) {
                        start = i;
                        break;
                    }
                    point -= u64::from(a.weight);
                }
                let len = up.addrs.len();
                (0..len)
                    .map(|k| (start + k) % len)
                    .find(|&i| ok(&up.addrs, i))
                    .unwrap_or(0)
            }
        })
    }

    /// What `balance = "hash"` hashes for a request, when the upstream hashes.
    pub fn hash_key<'a>(
        &self,
        u: usize,
        remote_addr: &'a [u8],
        header: impl Fn(&str) -> Option<&'a [u8]>,
    ) -> &'a [u8] {
        match self.list.get(u).map(|up| &up.def.balance) {
            Some(Balance::Hash(HashKey::RemoteAddr)) => remote_addr,
            Some(Balance::Hash(HashKey::Header(h))) => header(h).unwrap_or(b""),
            _ => b"",
        }
    }

    /// A connection to address `a` of upstream `u`: a kept one that is still open, else a
    /// new non-blocking connect. Its stream is registered with no poll (kept connections
    /// still registered, see [`Upstreams::connect_registered`], are left to that).
    pub fn connect(&mut self, u: usize, a: usize) -> std::io::Result<Conn> {
        let Some(up) = self.list.get_mut(u) else {
            return Err(std::io::Error::other("no such upstream"));
        };
        while let Some(pos) = up
            .idle
            .iter()
            .rposition(|c| c.addr == a && c.token.is_none())
        {
            let idle = up.idle.remove(pos);
            if still_open(&idle.stream) {
                return Ok(Conn {
                    stream: idle.stream,
                    reused: true,
                    readable: false,
                });
            }
        }
        Ok(Conn {
            stream: Self::dial(up, a)?,
            reused: false,
            readable: false,
        })
    }

    fn dial(up: &Upstream, a: usize) -> std::io::Result<Stream> {
        let addr = up
            .addrs
            .get(a)
            .ok_or_else(|| std::io::Error::other("no such address"))?;
        Stream::connect(&addr.addr)
    }

    /// As [`Upstreams::connect`], with the stream registered for events on `token`: a kept
    /// connection last used with `token` costs no system call, one used with another token a
    /// re-registration (a deregister and register otherwise). `peek` checks that a kept
    /// connection is still open first (one `recv`); without it, the caller must be able to
    /// send the request again on a fresh connection when the kept one turns out closed.
    pub fn connect_registered(
        &mut self,
        u: usize,
        a: usize,
        registry: &Registry,
        token: Token,
        peek: bool,
    ) -> std::io::Result<Conn> {
        let Some(up) = self.list.get_mut(u) else {
            return Err(std::io::Error::other("no such upstream"));
        };
        // This client connection's own kept connection first: it needs no re-registration.
        while let Some(pos) = up
            .idle
            .iter()
            .rposition(|c| c.addr == a && c.token == Some(token))
            .or_else(|| up.idle.iter().rposition(|c| c.addr == a))
        {
            let mut idle = up.idle.remove(pos);
            if peek && !still_open(&idle.stream) {
                continue;
            }
            let interest = Interest::READABLE | Interest::WRITABLE;
            match idle.token {
                Some(t) if t == token => {}
                Some(_) => Source::reregister(&mut idle.stream, registry, token, interest)?,
                None => idle.stream.register(registry, token)?,
            }
            let readable = match idle.token {
                Some(t) if t == token => idle.event,
                _ => false,
            };
            return Ok(Conn {
                stream: idle.stream,
                reused: true,
                readable,
            });
        }
        let mut stream = Self::dial(up, a)?;
        stream.register(registry, token)?;
        Ok(Conn {
            stream,
            reused: false,
            readable: false,
        })
    }

    /// A request starts on address `a`.
    pub fn begin(&mut self, u: usize, a: usize) {
        if let Some((board, me, p)) = self.counted(u, a) {
            board.proc_started(me, p);
        }
        if let Some(s) = self.addr_mut(u, a) {
            s.active += 1;
            s.total += 1;
        }
    }

    /// A request on address `a` ended; `failed` counts a failure of the address, and after
    /// `fails` in a row it is out for [`PASSIVE_BACKOFF`]. A success clears the count.
    pub fn end(&mut self, u: usize, a: usize, failed: bool, now: Instant) {
        let max = self.list.get(u).map_or(3, |up| up.def.max_fails());
        if let Some((board, me, p)) = self.counted(u, a) {
            board.proc_finished(me, p);
        }
        if let Some(slot) = self.slot(u, a).filter(|_| failed) {
            slot.error();
        }
        let mut out_until = None;
        if let Some(s) = self.addr_mut(u, a) {
            s.active = s.active.saturating_sub(1);
            if failed {
                s.errors += 1;
                s.fails += 1;
                if s.fails >= max {
                    if s.down_until.is_none_or(|t| now >= t) {
                        tracing::warn!(
                            "upstream address {}: {} failures in a row; out for {:?}",
                            s.text,
                            s.fails,
                            PASSIVE_BACKOFF
                        );
                    }
                    s.down_until = Some(now + PASSIVE_BACKOFF);
                    out_until = Some(now_ms() + PASSIVE_BACKOFF.as_millis() as u64);
                }
            } else {
                s.fails = 0;
                s.down_until = None;
            }
        }
        if let (Some(until), Some(slot)) = (out_until, self.slot(u, a)) {
            slot.disable_until(until);
        }
    }

    /// A connect failed before any request started on it.
    pub fn connect_failed(&mut self, u: usize, a: usize, now: Instant) {
        self.begin(u, a);
        self.end(u, a, true, now);
    }

    /// Keeps an idle connection for the next request to address `a`, within `keepalive`
    /// (the oldest goes when full). The stream must be deregistered from the poll.
    pub fn release(&mut self, u: usize, a: usize, stream: Stream) {
        self.keep(u, a, stream, None);
    }

    /// As [`Upstreams::release`] for a stream still registered with `token` (for
    /// [`Upstreams::connect_registered`]). Until it is taken again its events, if any (the
    /// upstream closing it), reach whoever holds `token` then, who must take them as hints
    /// only: a read or write that would block, a connect still under way.
    pub fn release_registered(&mut self, u: usize, a: usize, stream: Stream, token: Token) {
        self.keep(u, a, stream, Some(token));
    }

    /// An event came for `token` while no exchange held it: marks the kept connections still
    /// registered with it (see [`Conn::readable`]).
    pub fn idle_event(&mut self, token: Token) {
        for up in &mut self.list {
            for c in up.idle.iter_mut().filter(|c| c.token == Some(token)) {
                c.event = true;
            }
        }
    }

    fn keep(&mut self, u: usize, a: usize, stream: Stream, token: Option<Token>) {
        let Some(up) = self.list.get_mut(u) else {
            return;
        };
        if up.def.keepalive == 0 || up.addrs.get(a).is_none_or(|s| s.drained) {
            return;
        }
        if up.idle.len() >= up.def.keepalive {
            up.idle.remove(0);
        }
        up.idle.push(Idle {
            addr: a,
            stream,
            token,
            event: false,
        });
    }

    /// Applies the shared state of address `a` (REPL drain, active health): a drained or
    /// unhealthy address takes no new request, and its kept connections are closed.
    pub fn set_admin_state(&mut self, u: usize, a: usize, drained: bool, unhealthy: bool) {
        let Some(up) = self.list.get_mut(u) else {
            return;
        };
        if let Some(s) = up.addrs.get_mut(a) {
            s.drained = drained;
            s.unhealthy = unhealthy;
            if drained || unhealthy {
                up.idle.retain(|c| c.addr != a);
            }
        }
    }

    fn addr_mut(&mut self, u: usize, a: usize) -> Option<&mut AddrState> {
        self.list.get_mut(u)?.addrs.get_mut(a)
    }

    /// Address `a` of upstream `u`, as text.
    pub fn addr_text(&self, u: usize, a: usize) -> &str {
        self.list
            .get(u)
            .and_then(|up| up.addrs.get(a))
            .map_or("-", |s| s.text.as_str())
    }

    /// Kept idle connections of upstream `u` (for tests and the REPL).
    pub fn idle_count(&self, u: usize) -> usize {
        self.list.get(u).map_or(0, |up| up.idle.len())
    }
}

/// nginx's smooth weighted round robin: each pick adds every weight to its running value,
/// takes the largest, and subtracts the total from it — weights 5,1,1 give a a b a c a a.
fn smooth_round_robin(addrs: &mut [AddrState], candidates: &[usize]) -> usize {
    let mut total = 0i64;
    let mut best = candidates[0];
    for &i in candidates {
        addrs[i].current += i64::from(addrs[i].weight);
        total += i64::from(addrs[i].weight);
        if addrs[i].current > addrs[best].current {
            best = i;
        }
    }
    addrs[best].current -= total;
    best
}

/// FNV-1a, 64 bits: stable across workers and restarts, so a key maps to one address.
fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// An address as written in the config (`127.0.0.1:3000`, `unix:/run/app.sock`).
pub fn addr_text(a: &ListenAddr) -> String {
    match a {
        ListenAddr::Tcp(s) => s.to_string(),
        ListenAddr::Unix(p) => format!("unix:{}", p.display()),
    }
}

/// Whether an idle kept connection is still open: a non-blocking peek sees EOF, an error, or
/// stray bytes (which no idle HTTP/1.1 connection may carry) on one that is not reusable.
fn still_open(stream: &Stream) -> bool {
    use nix::sys::socket::{recv, MsgFlags};
    use std::os::fd::AsRawFd;
    let mut b = [0u8; 1];
    matches!(
        recv(
            stream.as_raw_fd(),
            &mut b,
            MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
        ),
        Err(nix::errno::Errno::EAGAIN)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ups(src: &str) -> Upstreams {
        let cfg = crate::config::load_source_for_tests(&format!(
            "server {{ root = '.', listen = '127.0.0.1:1' }}\n{src}"
        ));
        Upstreams::new(&cfg)
    }

    #[test]
    fn round_robin_follows_weights_smoothly() {
        let mut u = ups(
            "upstream 'a' { address = { { '127.0.0.1:1', weight = 5 }, '127.0.0.1:2', '127.0.0.1:3' } }",
        );
        let now = Instant::now();
        let seq: Vec<usize> = (0..7).map(|_| u.pick(0, now, &[], b"").unwrap()).collect();
        assert_eq!(seq, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn least_conn_takes_the_least_busy() {
        let mut u = ups(
            "upstream 'a' { balance = 'least_conn', address = { '127.0.0.1:1', '127.0.0.1:2' } }",
        );
        let now = Instant::now();
        let first = u.pick(0, now, &[], b"").unwrap();
        u.begin(0, first);
        let second = u.pick(0, now, &[], b"").unwrap();
        assert_ne!(first, second);
        u.begin(0, second);
        u.begin(0, second);
        assert_eq!(u.pick(0, now, &[], b"").unwrap(), first);
    }

    #[test]
    fn hash_sticks_and_moves_only_when_out() {
        let mut u = ups(
            "upstream 'a' { balance = 'hash', address = { '127.0.0.1:1', '127.0.0.1:2', '127.0.0.1:3' } }",
        );
        let now = Instant::now();
        let a = u.pick(0, now, &[], b"10.0.0.1").unwrap();
        for _ in 0..5 {
            assert_eq!(u.pick(0, now, &[], b"10.0.0.1").unwrap(), a);
        }
        let spread: std::collections::HashSet<usize> = (0..50)
            .map(|i| {
                u.pick(0, now, &[], format!("10.0.0.{i}").as_bytes())
                    .unwrap()
            })
            .collect();
        assert_eq!(spread.len(), 3, "keys spread over every address");
        u.set_admin_state(0, a, true, false);
        let b = u.pick(0, now, &[], b"10.0.0.1").unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn passive_failures_take_an_address_out_then_back() {
        let mut u = ups("upstream 'a' { address = { '127.0.0.1:1', '127.0.0.1:2' } }");
        let now = Instant::now();
        for _ in 0..3 {
            u.connect_failed(0, 0, now);
        }
        for _ in 0..4 {
            assert_eq!(u.pick(0, now, &[], b""), Some(1));
        }
        // Everything else tried: the down one is tried anyway.
        assert_eq!(u.pick(0, now, &[1], b""), Some(0));
        let later = now + PASSIVE_BACKOFF;
        let seen: std::collections::HashSet<usize> = (0..4)
            .map(|_| u.pick(0, later, &[], b"").unwrap())
            .collect();
        assert_eq!(seen.len(), 2);
        assert_eq!(u.list[0].addrs[0].errors, 3);
        // Drained is never tried.
        u.set_admin_state(0, 1, true, false);
        assert_eq!(u.pick(0, later, &[0], b""), None);
    }
}
