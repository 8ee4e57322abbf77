//! Timeouts as FIFO queues, one per kind.
//!
//! Every entry of a queue has the same duration, so entries pushed later expire later and the
//! next expiry is always at the front: arming and expiring are O(1), with no scan over all
//! connections. A connection re-armed since an entry was pushed is recognised by a generation
//! number and the stale entry is skipped. To keep queues short under load, re-arming within
//! `granularity` of the queued deadline only moves the connection's own deadline; the entry
//! already queued then fires up to `granularity` early, so a timeout of d is enforced within
//! [d - granularity, d].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A kind of timeout, each with its own queue and duration: the five fixed kinds (read, write,
/// keep-alive, linger, handshake), then pairs whose durations the config sets: one (connect,
/// read) pair per FastCGI backend, two pairs per HTTP upstream ((connect, read), (send, send):
/// `proxy::Kinds`), then one pair whose read kind is the CGI run's limit
/// (`cgi_admit::timer_kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind(usize);

impl Kind {
    /// Receiving a request head (from its first wait) or body bytes.
    pub const READ: Kind = Kind(0);
    /// A response that makes no progress because the client does not read.
    pub const WRITE: Kind = Kind(1);
    /// An idle keep-alive connection.
    pub const KEEPALIVE: Kind = Kind(2);
    /// A closing connection whose unread input is drained before the final close.
    pub const LINGER: Kind = Kind(3);
    /// A TLS client that has not finished its handshake (`timeouts.handshake`).
    pub const HANDSHAKE: Kind = Kind(4);
    const FIXED: usize = 5;

    /// Connecting to FastCGI backend `b` (its index in the config).
    pub fn backend_connect(b: usize) -> Kind {
        Kind(Self::FIXED + 2 * b)
    }

    /// Waiting for bytes from FastCGI backend `b`.
    pub fn backend_read(b: usize) -> Kind {
        Kind(Self::FIXED + 2 * b + 1)
    }
}

/// A connection's handle on its current timeout.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    kind: Option<Kind>,
    gen: u64,
    queued: Instant,
}

impl Slot {
    /// A slot with no timeout armed.
    pub fn new(now: Instant) -> Slot {
        Slot {
            kind: None,
            gen: 0,
            queued: now,
        }
    }

    /// The kind armed, if any.
    pub fn kind(&self) -> Option<Kind> {
        self.kind
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    deadline: Instant,
    token: usize,
    gen: u64,
}

/// The timer queues of one worker.
#[derive(Debug)]
pub struct Timers {
    queues: Vec<VecDeque<Entry>>,
    durations: Vec<Duration>,
    granularity: Vec<Duration>,
    next_gen: u64,
}

impl Timers {
    /// Queues for the given durations (read, write, keep-alive, linger), and the connect and
    /// read timeouts of each backend in config order.
    pub fn new(
        read: Duration,
        write: Duration,
        keepalive: Duration,
        linger: Duration,
        backends: &[(Duration, Duration)],
    ) -> Timers {
        // The handshake timeout starts as the read timeout; `set_handshake` sets its own.
        let mut durations = vec![read, write, keepalive, linger, read];
        for (connect, read) in backends {
            durations.push(*connect);
            durations.push(*read);
        }
        let granularity = durations
            .iter()
            .map(|d| (*d / 8).min(Duration::from_secs(1)))
            .collect();
        Timers {
            queues: vec![VecDeque::new(); durations.len()],
            durations,
            granularity,
            next_gen: 1,
        }
    }

    /// Sets the TLS handshake timeout (before any connection is armed with it).
    pub fn set_handshake(&mut self, d: Duration) {
        self.durations[Kind::HANDSHAKE.0] = d;
        self.granularity[Kind::HANDSHAKE.0] = (d / 8).min(Duration::from_secs(1));
    }

    /// Arms `kind` for the connection at `token`, replacing whatever it had armed.
    pub fn arm(&mut self, slot: &mut Slot, kind: Kind, token: usize, now: Instant) {
        let k = kind.0;
        let deadline = now + self.durations[k];
        if slot.kind == Some(kind) && deadline < slot.queued + self.granularity[k] {
            return;
        }
        let gen = self.next_gen;
        self.next_gen += 1;
        *slot = Slot {
            kind: Some(kind),
            gen,
            queued: deadline,
        };
        self.queues[k].push_back(Entry {
            deadline,
            token,
            gen,
        });
    }

    /// Arms `kind` unless that kind is already armed (a deadline that must not move).
    pub fn arm_once(&mut self, slot: &mut Slot, kind: Kind, token: usize, now: Instant) {
        if slot.kind != Some(kind) {
            self.arm(slot, kind, token, now);
        }
    }

    /// Cancels the slot's timeout; its queued entry becomes stale.
    pub fn disarm(&mut self, slot: &mut Slot) {
        slot.kind = None;
        slot.gen = 0;
    }

    /// The earliest queued deadline, stale entries included (waking for one is harmless).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.queues
            .iter()
            .filter_map(|q| q.front().map(|e| e.deadline))
            .min()
    }

    /// Pops one expired entry: (token, generation). The caller checks the generation against
    /// the connection's slot with `Slot::is` and skips stale ones.
    pub fn pop_expired(&mut self, now: Instant) -> Option<(usize, u64)> {
        for q in &mut self.queues {
            if let Some(e) = q.front() {
                if e.deadline <= now {
                    let e = *e;
                    q.pop_front();
                    return Some((e.token, e.gen));
                }
            }
        }
        None
    }
}

impl Slot {
    /// Whether an expired entry's generation is this slot's live timeout.
    pub fn is(&self, gen: u64) -> bool {
        self.kind.is_some() && self.gen == gen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timers() -> Timers {
        let s = Duration::from_secs(1);
        Timers::new(s * 8, s * 16, s * 4, s * 2, &[])
    }

    #[test]
    fn expires_in_deadline_order_and_skips_rearmed() {
        let mut t = timers();
        let t0 = Instant::now();
        let mut a = Slot::new(t0);
        let mut b = Slot::new(t0);
        t.arm(&mut a, Kind::READ, 1, t0);
        t.arm(&mut b, Kind::READ, 2, t0 + Duration::from_secs(1));
        // Re-armed far enough later: a new entry, the old one goes stale.
        t.arm(&mut a, Kind::READ, 1, t0 + Duration::from_secs(3));
        assert_eq!(t.next_deadline(), Some(t0 + Duration::from_secs(8)));
        let (tok, gen) = t.pop_expired(t0 + Duration::from_secs(8)).unwrap();
        assert_eq!(tok, 1);
        assert!(!a.is(gen));
        let (tok, gen) = t.pop_expired(t0 + Duration::from_secs(9)).unwrap();
        assert_eq!(tok, 2);
        assert!(b.is(gen));
        assert!(t.pop_expired(t0 + Duration::from_secs(10)).is_none());
        let (tok, gen) = t.pop_expired(t0 + Duration::from_secs(11)).unwrap();
        assert_eq!(tok, 1);
        assert!(a.is(gen));
    }

    #[test]
    fn rearm_within_granularity_pushes_nothing() {
        let mut t = timers();
        let t0 = Instant::now();
        let mut a = Slot::new(t0);
        t.arm(&mut a, Kind::WRITE, 1, t0);
        t.arm(&mut a, Kind::WRITE, 1, t0 + Duration::from_millis(500));
        assert_eq!(t.queues[Kind::WRITE.0].len(), 1);
        t.arm(&mut a, Kind::WRITE, 1, t0 + Duration::from_millis(1500));
        assert_eq!(t.queues[Kind::WRITE.0].len(), 2);
    }

    #[test]
    fn disarm_and_kind_change_make_entries_stale() {
        let mut t = timers();
        let t0 = Instant::now();
        let mut a = Slot::new(t0);
        t.arm(&mut a, Kind::KEEPALIVE, 1, t0);
        t.arm(&mut a, Kind::READ, 1, t0);
        let (_, gen) = t.pop_expired(t0 + Duration::from_secs(4)).unwrap();
        assert!(!a.is(gen));
        t.disarm(&mut a);
        let (_, gen) = t.pop_expired(t0 + Duration::from_secs(8)).unwrap();
        assert!(!a.is(gen));
    }
}
