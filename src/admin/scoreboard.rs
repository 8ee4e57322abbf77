//! The shared-memory scoreboard (Apache's scoreboard, php-fpm's status, nginx's stub_status).
//!
//! The watcher maps ONE shared anonymous region (`MAP_SHARED | MAP_ANONYMOUS`) before it forks
//! anything; every child inherits it at the same address. The region holds a header, then
//! `worker_slots` [`WorkerSlot`]s, then `proc_slots` [`ProcSlot`]s:
//!
//! ```text
//! offset 0                      Header (64 bytes: magic, version, counts, the timer lease)
//! offset 64                     ServerArea (128 bytes: retired totals, reloads; watcher only)
//! offset 192                    WorkerSlot[0 .. worker_slots]   448 bytes each (7 cache lines)
//! offset 192 + 448 * workers    ProcSlot[0 .. proc_slots]        64 bytes each (1 cache line)
//! then                          the restart gate: (1 + workers) rows of ceil(procs / 64) words
//! then, on a cache line         requests in flight: one row per worker slot, a u32 per proc
//!                               slot, each row padded to 64 bytes
//! ```
//!
//! Everything in the region is an atomic and all-zero bytes are a valid, meaningful value
//! (`State::Empty`, counters 0), so the fresh mapping needs no initialisation.
//!
//! * A worker slot is written only by the worker that claimed it (relaxed stores, no RMW, no
//!   syscall, no allocation) and read by the watcher. The text of the current request is
//!   written under a per-slot seqlock: the reader copies it and retries if the writer was
//!   in the middle of it, and never blocks the writer; after a few failed tries it gives up
//!   and reports the request as unavailable.
//! * A proc slot mirrors one FastCGI backend or HTTP upstream address (what
//!   `fastcgi::pool::Upstream` counts per worker) summed over all workers: every worker adds
//!   to its totals with atomic RMWs; the watcher writes its state and pid. [`ProcIndex`] maps
//!   (backend, address) to the slot. Its requests in flight are counted per worker
//!   (`proc_active.rs`), so a killed worker's requests go with its slot.
//! * The restart gate (`proc_gate.rs`) lets the watcher stop a spawned FastCGI process for a
//!   reload only when no worker has a request on it and none can begin one.
//! * The header's timer lease is the pid of the one process that runs the `{ worker = "one" }`
//!   timers (0: none), taken and given back by compare-and-swap: a slot-0 worker takes it at
//!   a due run, gives it back when it starts draining, and the watcher gives back the lease
//!   of a child that exited before it reaps it (its pid cannot be reused meanwhile).
//! * Retired counters live in the watcher only ([`Totals`]): when a worker is reaped the
//!   watcher folds its slot into them and resets the slot ([`Scoreboard::retire`]), so
//!   `retired + live slots` never goes backwards across respawns and reloads. The watcher
//!   also publishes them in the [`ServerArea`] (under a sequence counter, so that a worker
//!   answering a status request sees each reaped worker counted exactly once) with the
//!   respawn and reload counts: what `src/status_page.rs` serves.

use std::fmt;
use std::io;
use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::sys::mman::{mmap_anonymous, munmap, MapFlags, ProtFlags};

mod proc_active;
mod proc_gate;

// The slots are shared between processes through plain atomics: that is only sound if the
// atomics are lock-free (a lock-based fallback would use a per-process lock).
#[cfg(not(all(
    target_has_atomic = "64",
    target_has_atomic = "32",
    target_has_atomic = "8"
)))]
compile_error!("the scoreboard needs lock-free 8-, 32- and 64-bit atomics");

const MAGIC: u64 = u64::from_le_bytes(*b"LHSCORE\0");
const VERSION: u32 = 4;

/// Most bytes kept of the request method.
pub const METHOD_MAX: usize = 8;
/// Most bytes kept of the request host.
pub const HOST_MAX: usize = 64;
/// Most bytes kept of the request path (longer ones end with [`TRUNCATED`]).
pub const PATH_MAX: usize = 160;
/// Most bytes kept of the client address.
pub const CLIENT_MAX: usize = 48;
/// What ends a host, path or client address that was cut to fit its field.
pub const TRUNCATED: &str = "...";

const METHOD_WORDS: usize = METHOD_MAX / 8;
const HOST_WORDS: usize = HOST_MAX / 8;
const PATH_WORDS: usize = PATH_MAX / 8;
const CLIENT_WORDS: usize = CLIENT_MAX / 8;

/// How many times a reader retries a copy torn by a concurrent write before giving up.
const READ_TRIES: usize = 64;

/// Milliseconds since the Unix epoch (0 if the clock is before it): the time base of every
/// `*_ms` field. Cheap (vDSO `clock_gettime`).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// CLOCK_MONOTONIC in milliseconds: the clock of [`WorkerSlot::lua_started`], shared by every
/// process of the machine.
pub fn monotonic_ms() -> u64 {
    monotonic_nanos() / 1_000_000
}

/// CLOCK_MONOTONIC in nanoseconds. Async-signal-safe (the worker's backstop handler reads it).
pub fn monotonic_nanos() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write; clock_gettime is async-signal-safe and
    // CLOCK_MONOTONIC always exists on Linux.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// What a worker is doing, as it last said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum State {
    /// The slot is free (never claimed, or reset after its worker was reaped).
    Empty = 0,
    /// Forked, setting up (dropping privileges, registering listeners).
    Starting = 1,
    /// Waiting for connections or events.
    Idle = 2,
    /// Reading a request.
    Reading = 3,
    /// Writing a response.
    Writing = 4,
    /// Waiting for a FastCGI backend.
    WaitingBackend = 5,
    /// Holding keep-alive connections between requests.
    KeepAlive = 6,
    /// Told to stop: finishing its connections, accepting no new ones.
    Draining = 7,
    /// Left its loop; about to exit (or exited and not reaped yet).
    Exited = 8,
}

impl State {
    /// The state stored as `v` (None for a value no state has).
    pub fn from_u8(v: u8) -> Option<State> {
        Some(match v {
            0 => State::Empty,
            1 => State::Starting,
            2 => State::Idle,
            3 => State::Reading,
            4 => State::Writing,
            5 => State::WaitingBackend,
            6 => State::KeepAlive,
            7 => State::Draining,
            8 => State::Exited,
            _ => return None,
        })
    }

    /// A lower-case name, for the admin REPL.
    pub fn name(self) -> &'static str {
        match self {
            State::Empty => "empty",
            State::Starting => "starting",
            State::Idle => "idle",
            State::Reading => "reading",
            State::Writing => "writing",
            State::WaitingBackend => "backend",
            State::KeepAlive => "keepalive",
            State::Draining => "draining",
            State::Exited => "exited",
        }
    }

    /// Apache's one-letter scoreboard code (`_` idle, `R` reading, `W` writing, ...).
    pub fn code(self) -> char {
        match self {
            State::Empty => '.',
            State::Starting => 'S',
            State::Idle => '_',
            State::Reading => 'R',
            State::Writing => 'W',
            State::WaitingBackend => 'B',
            State::KeepAlive => 'K',
            State::Draining => 'G',
            State::Exited => 'X',
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the watcher knows of a backend process or address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ProcState {
    /// Not said yet (or an external address the watcher does not manage).
    Unknown = 0,
    /// Running.
    Up = 1,
    /// Exited, not respawned (yet).
    Down = 2,
    /// Exited and being respawned (back-off running).
    Respawning = 3,
}

impl ProcState {
    /// The state stored as `v` (None for a value no state has).
    pub fn from_u8(v: u8) -> Option<ProcState> {
        Some(match v {
            0 => ProcState::Unknown,
            1 => ProcState::Up,
            2 => ProcState::Down,
            3 => ProcState::Respawning,
            _ => return None,
        })
    }

    /// A lower-case name, for the admin REPL.
    pub fn name(self) -> &'static str {
        match self {
            ProcState::Unknown => "unknown",
            ProcState::Up => "up",
            ProcState::Down => "down",
            ProcState::Respawning => "respawning",
        }
    }
}

impl fmt::Display for ProcState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The first 64 bytes of the region: enough to recognise it in a core dump, and the lease of
/// the `{ worker = "one" }` timers.
#[repr(C, align(64))]
struct Header {
    magic: u64,
    version: u32,
    worker_slots: u32,
    proc_slots: u32,
    /// The pid of the one process running the `{ worker = "one" }` timers, 0 for none: the
    /// only field written after `new`, and only by compare-and-swap.
    timer_lease: AtomicU32,
}

/// The current request of a worker: the part of its slot under the seqlock.
#[repr(C, align(64))]
struct RequestArea {
    /// Seqlock sequence: odd while the worker is writing the fields below.
    seq: AtomicU32,
    /// Lengths in bytes: method | host << 8 | path << 16 | client << 24.
    lens: AtomicU32,
    /// When the request started (unix ms).
    start_ms: AtomicU64,
    method: [AtomicU64; METHOD_WORDS],
    host: [AtomicU64; HOST_WORDS],
    path: [AtomicU64; PATH_WORDS],
    client: [AtomicU64; CLIENT_WORDS],
}

/// What the watcher alone writes and every process may read: the retired totals (under a
/// seqlock, together with the resets of retired slots) and the reload figures.
#[repr(C, align(64))]
struct ServerArea {
    /// Odd while the watcher folds a reaped slot into the totals and resets it.
    seq: AtomicU32,
    /// The current generation.
    generation: AtomicU32,
    requests: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    respawns: AtomicU64,
    statuses: [AtomicU64; 5],
    /// Reloads attempted, and how many of them failed.
    reloads: AtomicU64,
    reload_failures: AtomicU64,
    /// When the last reload ended (unix ms, 0: none yet), and 1 if it succeeded.
    last_reload_ms: AtomicU64,
    last_reload_ok: AtomicU8,
}

/// One worker's slot in the shared region. Written only by the worker that claimed it (the
/// `claim` .. `exited` methods), read by the watcher (`snapshot`) and reset by the watcher once
/// that worker has been reaped (`reset`).
///
/// Layout (`repr(C)`, 64-byte aligned, 448 bytes): the first two cache lines hold the state
/// and counters (responses by status class, connections by state), the next five the current
/// request (seqlock, lengths, start, then the text packed
/// in little-endian 64-bit words).
#[repr(C, align(64))]
pub struct WorkerSlot {
    pid: AtomicU32,
    generation: AtomicU32,
    state: AtomicU8,
    connections: AtomicU32,
    started_ms: AtomicU64,
    heartbeat_ms: AtomicU64,
    requests: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    in_flight: AtomicU32,
    /// Responses by status class: 1xx, 2xx, 3xx, 4xx, 5xx.
    statuses: [AtomicU64; 5],
    /// Open connections by what they do: [`CONN_STATES`] order.
    conn_states: [AtomicU32; 4],
    /// When the Lua call running now (route, timer, response hook) started, CLOCK_MONOTONIC ms
    /// (the clock the worker reads for the call anyway; it is the same in every process); 0
    /// when none runs. The current request's start says nothing about Lua: it is the request
    /// started last, and stays while any other request of the worker is in flight.
    lua_since_ms: AtomicU64,
    req: RequestArea,
}

/// The states connections are counted by, in the order of [`WorkerSnapshot::conn_states`].
pub const CONN_STATES: [State; 4] = [
    State::Reading,
    State::Writing,
    State::WaitingBackend,
    State::KeepAlive,
];

/// Where `state` is counted in [`CONN_STATES`] (None: not a connection state).
fn conn_state_index(state: State) -> Option<usize> {
    CONN_STATES.iter().position(|s| *s == state)
}

/// One backend address's slot in the shared region: counters updated by every worker,
/// state and pid written by the watcher. 64 bytes, one cache line, so that two addresses
/// busy in different workers do not share a line.
#[repr(C, align(64))]
pub struct ProcSlot {
    pid: AtomicU32,
    state: AtomicU8,
    /// HTTP upstream addresses only: [`PROXY_DRAINED`] (REPL) | [`PROXY_UNHEALTHY`] (checks).
    flags: AtomicU8,
    total: AtomicU64,
    errors: AtomicU64,
    disabled_until_ms: AtomicU64,
}

/// Proc slot flag: the address was drained from the REPL (no new requests).
pub const PROXY_DRAINED: u8 = 1;
/// Proc slot flag: the watcher's active health checks took the address out.
pub const PROXY_UNHEALTHY: u8 = 2;

const HEADER_SIZE: usize = std::mem::size_of::<Header>();
const SERVER_SIZE: usize = std::mem::size_of::<ServerArea>();
/// Where the worker slots start.
const SLOTS_AT: usize = HEADER_SIZE + SERVER_SIZE;
/// Bytes per worker slot.
pub const WORKER_SLOT_SIZE: usize = std::mem::size_of::<WorkerSlot>();
/// Bytes per proc slot.
pub const PROC_SLOT_SIZE: usize = std::mem::size_of::<ProcSlot>();

// The layout the documentation promises; offsets stay multiples of 64 so every slot is aligned
// when the region starts on a page.
const _: () = assert!(HEADER_SIZE == 64);
const _: () = assert!(SERVER_SIZE == 128);
const _: () = assert!(WORKER_SLOT_SIZE == 448);
const _: () = assert!(PROC_SLOT_SIZE == 64);
const _: () = assert!(std::mem::align_of::<WorkerSlot>() == 64);
const _: () = assert!(std::mem::align_of::<ProcSlot>() == 64);
const _: () = assert!(METHOD_MAX.is_multiple_of(8) && HOST_MAX.is_multiple_of(8));
const _: () = assert!(PATH_MAX.is_multiple_of(8) && CLIENT_MAX.is_multiple_of(8));
const _: () = assert!(PATH_MAX <= 255 && HOST_MAX <= 255 && CLIENT_MAX <= 255);

/// The shared region: a pointer and the slot counts. Create it in the watcher before forking;
/// children inherit the mapping (same address, same physical pages).
///
/// Dropping it unmaps the region in the process that drops it only. A forked worker never
/// returns into the code that owns the watcher's `Scoreboard` (it leaves with `exit`/`_exit`
/// at the end of its loop), so it keeps its mapping until it exits; the borrow checker
/// already prevents dropping it while a `&WorkerSlot` or `&ProcSlot` is alive.
///
/// Not `Send`/`Sync`: the watcher and the workers are single-threaded and nothing needs to
/// move it between threads (the slots themselves are plain atomics, hence `Sync`).
pub struct Scoreboard {
    base: NonNull<u8>,
    len: usize,
    worker_slots: usize,
    proc_slots: usize,
}

impl fmt::Debug for Scoreboard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scoreboard")
            .field("worker_slots", &self.worker_slots)
            .field("proc_slots", &self.proc_slots)
            .field("bytes", &self.len)
            .finish()
    }
}

impl Scoreboard {
    /// Maps a zeroed region with room for `worker_slots` workers (the watcher asks for
    /// 2 × workers, so that a draining old generation keeps its slots during a reload) and
    /// `proc_slots` backend addresses.
    pub fn new(worker_slots: usize, proc_slots: usize) -> io::Result<Scoreboard> {
        let too_big = || io::Error::new(io::ErrorKind::InvalidInput, "scoreboard too large");
        let w = u32::try_from(worker_slots).map_err(|_| too_big())?;
        let p = u32::try_from(proc_slots).map_err(|_| too_big())?;
        let len = worker_slots
            .checked_mul(WORKER_SLOT_SIZE)
            .and_then(|a| {
                proc_slots
                    .checked_mul(PROC_SLOT_SIZE)
                    .and_then(|b| a.checked_add(b))
            })
            .and_then(|n| n.checked_add(SLOTS_AT))
            .and_then(|n| n.checked_add(proc_gate::gate_len(worker_slots, proc_slots)?))
            .and_then(|n| n.checked_next_multiple_of(64))
            .and_then(|n| n.checked_add(proc_active::active_len(worker_slots, proc_slots)?))
            .ok_or_else(too_big)?;
        let length = NonZeroUsize::new(len).ok_or_else(too_big)?;
        // SAFETY: an anonymous mapping with no requested address cannot overlap or alias any
        // existing Rust object; the kernel picks a fresh page-aligned range and zero-fills it.
        let ptr = unsafe {
            mmap_anonymous(
                None,
                length,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )
        }
        .map_err(io::Error::from)?;
        let base = ptr.cast::<u8>();
        // SAFETY: the region is ours alone until this function returns (no fork has happened
        // since it was mapped, no reference into it exists yet), at least HEADER_SIZE bytes
        // long and page-aligned, so a plain write of the header is neither racy nor misaligned.
        unsafe {
            base.cast::<Header>().as_ptr().write(Header {
                magic: MAGIC,
                version: VERSION,
                worker_slots: w,
                proc_slots: p,
                timer_lease: AtomicU32::new(0),
            });
        }
        Ok(Scoreboard {
            base,
            len,
            worker_slots,
            proc_slots,
        })
    }

    /// How many worker slots there are.
    pub fn worker_capacity(&self) -> usize {
        self.worker_slots
    }

    /// How many proc slots there are.
    pub fn proc_capacity(&self) -> usize {
        self.proc_slots
    }

    /// Bytes mapped.
    pub fn mapped_len(&self) -> usize {
        self.len
    }

    /// Whether the header still says what `new` wrote (a sanity check for the admin REPL).
    pub fn header_ok(&self) -> bool {
        let h = self.header();
        h.magic == MAGIC
            && h.version == VERSION
            && h.worker_slots as usize == self.worker_slots
            && h.proc_slots as usize == self.proc_slots
    }

    fn header(&self) -> &Header {
        // SAFETY: the region lives as long as `self` and starts with the header `new` wrote;
        // its plain fields are read-only afterwards, so plain reads do not race, and its one
        // shared-mutable field is an atomic.
        unsafe { &*self.base.cast::<Header>().as_ptr() }
    }

    /// Takes the lease of the `{ worker = "one" }` timers for `pid` if nobody holds it; whether
    /// `pid` holds it now. One process runs them at a time, whichever generation it is of: a
    /// new generation's candidate waits while the old one's still holds it.
    pub fn take_timer_lease(&self, pid: u32) -> bool {
        let lease = &self.header().timer_lease;
        match lease.compare_exchange(0, pid, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => true,
            Err(holder) => holder == pid,
        }
    }

    /// Gives the lease back if `pid` holds it (a worker that starts draining, or the watcher
    /// for a child that exited); whether it did.
    pub fn give_back_timer_lease(&self, pid: u32) -> bool {
        let lease = &self.header().timer_lease;
        lease
            .compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// All worker slots, by slot index.
    pub fn workers(&self) -> &[WorkerSlot] {
        // SAFETY: the region lives as long as `self` (unmapped only in Drop); the slots start
        // at offset 192 of a page-aligned mapping and are 448 bytes each, so each is 64-byte
        // aligned and the `worker_slots` of them lie inside the `len` bytes mapped. A
        // WorkerSlot is only atomics, for which all-zero bytes (the fresh mapping) and any
        // bytes later stored through them are valid, and atomics may be shared (`&`) and
        // mutated by other processes concurrently.
        unsafe {
            std::slice::from_raw_parts(
                self.base.as_ptr().add(SLOTS_AT).cast::<WorkerSlot>(),
                self.worker_slots,
            )
        }
    }

    /// All proc slots, by proc index ([`ProcIndex`]).
    pub fn procs(&self) -> &[ProcSlot] {
        // SAFETY: as in `workers`: the proc slots follow the worker slots (offset a multiple
        // of 64), lie inside the mapping, are only atomics valid for any bytes, and the region
        // outlives the borrow of `self`.
        unsafe {
            std::slice::from_raw_parts(
                self.base
                    .as_ptr()
                    .add(SLOTS_AT + self.worker_slots * WORKER_SLOT_SIZE)
                    .cast::<ProcSlot>(),
                self.proc_slots,
            )
        }
    }

    /// Worker slot `i`, if there is one.
    pub fn worker(&self, i: usize) -> Option<&WorkerSlot> {
        self.workers().get(i)
    }

    /// Proc slot `i`, if there is one.
    pub fn proc(&self, i: usize) -> Option<&ProcSlot> {
        self.procs().get(i)
    }

    /// The index of a slot that is free (`State::Empty`), for the watcher to give to the
    /// worker it is about to fork. The watcher owns the assignment; this is only a search.
    pub fn free_worker_slot(&self) -> Option<usize> {
        self.workers()
            .iter()
            .position(|s| s.state() == State::Empty)
    }

    /// A snapshot of every worker slot, by slot index.
    pub fn snapshots(&self, now_ms: u64) -> Vec<WorkerSnapshot> {
        self.workers().iter().map(|s| s.snapshot(now_ms)).collect()
    }

    /// A snapshot of every proc slot, by proc index.
    pub fn proc_snapshots(&self, now_ms: u64) -> Vec<ProcSnapshot> {
        (0..self.proc_slots)
            .filter_map(|p| self.proc_snapshot(p, now_ms))
            .collect()
    }

    /// The watcher's step after reaping the worker of slot `i`: folds the slot's counters into
    /// `retired`, resets the slot to `Empty` and returns its last snapshot (None if there is
    /// no slot `i`). Call it only once that worker is gone (waitpid returned it), so nothing
    /// writes the slot between the snapshot and the reset.
    pub fn retire(&self, i: usize, retired: &mut Totals, now_ms: u64) -> Option<WorkerSnapshot> {
        let slot = self.worker(i)?;
        let area = self.server();
        // Readers of `consistent` retry while the sequence is odd or moved: they never see the
        // slot's counters both in the retired totals and in the slot, nor in neither.
        let s = area.seq.load(Ordering::Relaxed) | 1;
        area.seq.store(s, Ordering::Relaxed);
        fence(Ordering::Release);
        let snap = slot.snapshot(now_ms);
        retired.fold(&snap);
        self.store_totals(retired);
        slot.reset();
        self.clear_holds(i);
        self.clear_active(i);
        area.seq.store(s.wrapping_add(1), Ordering::Release);
        Some(snap)
    }

    fn server(&self) -> &ServerArea {
        // SAFETY: the area lies at offset 64 of the page-aligned mapping (64-byte aligned),
        // inside it, lives as long as `self`, and is only atomics, valid for any bytes.
        unsafe { &*self.base.as_ptr().add(HEADER_SIZE).cast::<ServerArea>() }
    }

    fn store_totals(&self, t: &Totals) {
        let a = self.server();
        a.requests.store(t.requests, Ordering::Relaxed);
        a.bytes_in.store(t.bytes_in, Ordering::Relaxed);
        a.bytes_out.store(t.bytes_out, Ordering::Relaxed);
        a.respawns.store(t.respawns, Ordering::Relaxed);
        for (a, v) in a.statuses.iter().zip(t.statuses) {
            a.store(v, Ordering::Relaxed);
        }
    }

    /// The watcher publishes its retired totals (respawns included) and the generation, for
    /// the status page. Cheap: a dozen relaxed stores, once per turn of the watcher's loop.
    pub fn publish(&self, retired: &Totals, generation: u32) {
        let a = self.server();
        let s = a.seq.load(Ordering::Relaxed) | 1;
        a.seq.store(s, Ordering::Relaxed);
        fence(Ordering::Release);
        self.store_totals(retired);
        a.generation.store(generation, Ordering::Relaxed);
        a.seq.store(s.wrapping_add(1), Ordering::Release);
    }

    /// The watcher records the outcome of a reload (at `at_ms`, unix ms).
    pub fn reload_done(&self, ok: bool, at_ms: u64) {
        let a = self.server();
        a.reloads.fetch_add(1, Ordering::Relaxed);
        if !ok {
            a.reload_failures.fetch_add(1, Ordering::Relaxed);
        }
        a.last_reload_ok.store(u8::from(ok), Ordering::Relaxed);
        a.last_reload_ms.store(at_ms, Ordering::Release);
    }

    /// The server as a whole and every worker slot, read consistently (any process): the
    /// totals are the retired part plus the live slots, each reaped worker counted once.
    pub fn consistent(&self, now_ms: u64) -> ServerView {
        let a = self.server();
        let mut tries = 0;
        loop {
            tries += 1;
            let s1 = a.seq.load(Ordering::Acquire);
            if s1 & 1 == 1 && tries < READ_TRIES {
                std::hint::spin_loop();
                continue;
            }
            let retired = Totals {
                requests: a.requests.load(Ordering::Relaxed),
                bytes_in: a.bytes_in.load(Ordering::Relaxed),
                bytes_out: a.bytes_out.load(Ordering::Relaxed),
                respawns: a.respawns.load(Ordering::Relaxed),
                statuses: std::array::from_fn(|i| a.statuses[i].load(Ordering::Relaxed)),
            };
            let workers = self.snapshots(now_ms);
            fence(Ordering::Acquire);
            if a.seq.load(Ordering::Relaxed) != s1 && tries < READ_TRIES {
                continue;
            }
            let mut totals = retired;
            for w in &workers {
                totals.fold(w);
            }
            let last_ms = a.last_reload_ms.load(Ordering::Acquire);
            return ServerView {
                totals,
                generation: a.generation.load(Ordering::Relaxed),
                reloads: a.reloads.load(Ordering::Relaxed),
                reload_failures: a.reload_failures.load(Ordering::Relaxed),
                last_reload: (last_ms != 0)
                    .then(|| (last_ms, a.last_reload_ok.load(Ordering::Relaxed) == 1)),
                workers,
            };
        }
    }

    /// `retired` plus the counters of every live slot: what the server has done since start.
    /// Never decreases as long as reaped slots go through [`Scoreboard::retire`].
    pub fn totals(&self, retired: &Totals) -> Totals {
        let mut t = *retired;
        for s in self.workers() {
            t.requests = t.requests.wrapping_add(s.requests.load(Ordering::Relaxed));
            t.bytes_in = t.bytes_in.wrapping_add(s.bytes_in.load(Ordering::Relaxed));
            t.bytes_out = t
                .bytes_out
                .wrapping_add(s.bytes_out.load(Ordering::Relaxed));
            for (t, s) in t.statuses.iter_mut().zip(&s.statuses) {
                *t = t.wrapping_add(s.load(Ordering::Relaxed));
            }
        }
        t
    }
}

impl Drop for Scoreboard {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly the mapping made in `new`, unmapped nowhere else;
        // every reference into it borrows `self`, so none is alive now. Other processes keep
        // their own mapping of the pages. A failure leaves the mapping in place: a leak, not
        // unsoundness, so it is ignored.
        let _ = unsafe { munmap(self.base.cast(), self.len) };
    }
}

/// Adds one to a counter only this process writes (a load and a store: no locked RMW).
#[inline]
fn bump32(a: &AtomicU32) {
    a.store(a.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
}

/// Takes one from a counter only this process writes, stopping at 0.
#[inline]
fn drop32(a: &AtomicU32) {
    a.store(
        a.load(Ordering::Relaxed).saturating_sub(1),
        Ordering::Relaxed,
    );
}

/// Adds `n` to a counter only this process writes.
#[inline]
fn add64(a: &AtomicU64, n: u64) {
    a.store(a.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn prefix_len(s: &str, max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    let mut n = max;
    while n > 0 && !s.is_char_boundary(n) {
        n -= 1;
    }
    n
}

/// Copies `s` into `buf` (at most N bytes); if it does not fit and `marker`, it is cut on a
/// character boundary and ends with [`TRUNCATED`]. Returns the length used.
fn fit<const N: usize>(s: &str, buf: &mut [u8; N], marker: bool) -> usize {
    if s.len() <= N {
        buf[..s.len()].copy_from_slice(s.as_bytes());
        return s.len();
    }
    let room = if marker { N - TRUNCATED.len() } else { N };
    let n = prefix_len(s, room);
    buf[..n].copy_from_slice(&s.as_bytes()[..n]);
    if marker {
        buf[n..n + TRUNCATED.len()].copy_from_slice(TRUNCATED.as_bytes());
        n + TRUNCATED.len()
    } else {
        n
    }
}

/// Stores the first `len` bytes of `buf` into `words` (relaxed; inside the seqlock).
#[inline]
fn store_words<const N: usize>(words: &[AtomicU64], buf: &[u8; N], len: usize) {
    for (w, chunk) in words.iter().zip(buf.chunks(8)).take(len.div_ceil(8)) {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        w.store(u64::from_le_bytes(b), Ordering::Relaxed);
    }
}

/// Loads the first `len` bytes of `words` into `buf` (relaxed; validated by the seqlock).
#[inline]
fn load_words<const N: usize>(words: &[AtomicU64], buf: &mut [u8; N], len: usize) {
    for (w, chunk) in words.iter().zip(buf.chunks_mut(8)).take(len.div_ceil(8)) {
        chunk.copy_from_slice(&w.load(Ordering::Relaxed).to_le_bytes()[..chunk.len()]);
    }
}

/// A consistent copy of the request area, still as bytes.
struct RawRequest {
    start_ms: u64,
    lens: [usize; 4],
    method: [u8; METHOD_MAX],
    host: [u8; HOST_MAX],
    path: [u8; PATH_MAX],
    client: [u8; CLIENT_MAX],
}

impl WorkerSlot {
    // ---- writer side: only the worker that claimed the slot ----

    /// Takes the slot for this worker: pid, generation, start time, heartbeat; state
    /// `Starting`. Called by the worker itself first thing after fork (the watcher must not:
    /// it would race with the worker's own first writes). Counters are not touched: the
    /// watcher resets the slot when it retires the previous owner.
    pub fn claim(&self, pid: u32, generation: u32, now_ms: u64) {
        self.pid.store(pid, Ordering::Relaxed);
        self.generation.store(generation, Ordering::Relaxed);
        self.started_ms.store(now_ms, Ordering::Relaxed);
        self.heartbeat_ms.store(now_ms, Ordering::Relaxed);
        self.state.store(State::Starting as u8, Ordering::Release);
    }

    /// Says what the worker is doing now.
    #[inline]
    pub fn set_state(&self, state: State) {
        self.state.store(state as u8, Ordering::Release);
    }

    /// Says the worker is alive (its loop turned) at `now_ms`.
    #[inline]
    pub fn heartbeat(&self, now_ms: u64) {
        self.heartbeat_ms.store(now_ms, Ordering::Relaxed);
    }

    /// A Lua call (route, timer, response hook) starts at `mono_ms` (CLOCK_MONOTONIC ms, as
    /// [`monotonic_ms`] reads it).
    #[inline]
    pub fn lua_started(&self, mono_ms: u64) {
        self.lua_since_ms.store(mono_ms.max(1), Ordering::Relaxed);
    }

    /// The Lua call begun by [`WorkerSlot::lua_started`] returned.
    #[inline]
    pub fn lua_done(&self) {
        self.lua_since_ms.store(0, Ordering::Relaxed);
    }

    /// A client connection was accepted.
    #[inline]
    pub fn conn_opened(&self) {
        bump32(&self.connections);
    }

    /// A client connection was closed (stops at 0 if unpaired).
    #[inline]
    pub fn conn_closed(&self) {
        drop32(&self.connections);
    }

    /// A request started: records its method, host, path and client (cut to fit, see the
    /// `*_MAX` constants) and start time as the slot's current request, and counts it in
    /// flight until [`WorkerSlot::request_done`]. With several connections in one worker the
    /// current request is the one started last. No allocation, no syscall: about 40 relaxed
    /// stores and two fences.
    pub fn request_started(&self, method: &str, host: &str, path: &str, client: &str, now_ms: u64) {
        let mut m = [0u8; METHOD_MAX];
        let mut h = [0u8; HOST_MAX];
        let mut p = [0u8; PATH_MAX];
        let mut c = [0u8; CLIENT_MAX];
        let ml = fit(method, &mut m, false);
        let hl = fit(host, &mut h, true);
        let pl = fit(path, &mut p, true);
        let cl = fit(client, &mut c, true);
        // Lengths fit in a byte each (const-asserted above).
        let lens = ml as u32 | (hl as u32) << 8 | (pl as u32) << 16 | (cl as u32) << 24;

        bump32(&self.in_flight);
        let r = &self.req;
        // Seqlock write (single writer): odd, release fence, data, even with release. A reader
        // that saw any of the data stores also sees the odd value (or later) when it
        // re-reads the sequence after its acquire fence, and retries.
        let s = r.seq.load(Ordering::Relaxed) & !1;
        r.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        r.lens.store(lens, Ordering::Relaxed);
        r.start_ms.store(now_ms, Ordering::Relaxed);
        store_words(&r.method, &m, ml);
        store_words(&r.host, &h, hl);
        store_words(&r.path, &p, pl);
        store_words(&r.client, &c, cl);
        r.seq.store(s.wrapping_add(2), Ordering::Release);
    }

    /// A request finished: counts it and the bytes it read and wrote, and takes it out of
    /// flight. The text of the last request stays in the slot.
    #[inline]
    pub fn request_done(&self, bytes_in: u64, bytes_out: u64) {
        add64(&self.requests, 1);
        add64(&self.bytes_in, bytes_in);
        add64(&self.bytes_out, bytes_out);
        drop32(&self.in_flight);
    }

    /// A response of `status` was sent (counted by class; others are not counted).
    #[inline]
    pub fn response_status(&self, status: u16) {
        if let Some(a) = (status / 100)
            .checked_sub(1)
            .and_then(|i| self.statuses.get(usize::from(i)))
        {
            add64(a, 1);
        }
    }

    /// A connection moved from state `from` to `to` (None: not open, or not counted).
    #[inline]
    pub fn conn_moved(&self, from: Option<State>, to: Option<State>) {
        if from == to {
            return;
        }
        if let Some(i) = from.and_then(conn_state_index) {
            drop32(&self.conn_states[i]);
        }
        if let Some(i) = to.and_then(conn_state_index) {
            bump32(&self.conn_states[i]);
        }
    }

    /// The worker leaves its loop (state `Exited`); the watcher resets the slot after reaping.
    pub fn exited(&self) {
        self.set_state(State::Exited);
    }

    // ---- reader side: the watcher ----

    /// The state alone (one acquire load).
    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Acquire)).unwrap_or(State::Empty)
    }

    /// The pid that claimed the slot (0 if free).
    pub fn pid(&self) -> u32 {
        self.pid.load(Ordering::Relaxed)
    }

    /// Copies the request area if a write does not get in the way `READ_TRIES` times.
    fn read_request(&self) -> Option<RawRequest> {
        let r = &self.req;
        for _ in 0..READ_TRIES {
            let s1 = r.seq.load(Ordering::Acquire);
            if s1 & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let lens = r.lens.load(Ordering::Relaxed);
            // Lengths from a torn read may be anything: clamp before using them.
            let lens = [
                (lens & 0xff) as usize,
                (lens >> 8 & 0xff) as usize,
                (lens >> 16 & 0xff) as usize,
                (lens >> 24 & 0xff) as usize,
            ];
            let lens = [
                lens[0].min(METHOD_MAX),
                lens[1].min(HOST_MAX),
                lens[2].min(PATH_MAX),
                lens[3].min(CLIENT_MAX),
            ];
            let mut raw = RawRequest {
                start_ms: r.start_ms.load(Ordering::Relaxed),
                lens,
                method: [0; METHOD_MAX],
                host: [0; HOST_MAX],
                path: [0; PATH_MAX],
                client: [0; CLIENT_MAX],
            };
            load_words(&r.method, &mut raw.method, lens[0]);
            load_words(&r.host, &mut raw.host, lens[1]);
            load_words(&r.path, &mut raw.path, lens[2]);
            load_words(&r.client, &mut raw.client, lens[3]);
            fence(Ordering::Acquire);
            if r.seq.load(Ordering::Relaxed) == s1 {
                return Some(raw);
            }
            std::hint::spin_loop();
        }
        None
    }

    /// A copy of the slot as of now. Never blocks the worker; if the current request's text
    /// kept changing under the reader it is left out (`request: None`, `request_torn: true`).
    pub fn snapshot(&self, now_ms: u64) -> WorkerSnapshot {
        let state = self.state();
        let pid = self.pid.load(Ordering::Relaxed);
        let generation = self.generation.load(Ordering::Relaxed);
        let started_ms = self.started_ms.load(Ordering::Relaxed);
        let heartbeat_ms = self.heartbeat_ms.load(Ordering::Relaxed);
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        let lua_since = self.lua_since_ms.load(Ordering::Relaxed);
        let raw = self.read_request();
        let request_torn = raw.is_none();
        let request = raw.filter(|r| r.start_ms != 0).map(|r| {
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            RequestSnapshot {
                method: text(&r.method[..r.lens[0]]),
                host: text(&r.host[..r.lens[1]]),
                path: text(&r.path[..r.lens[2]]),
                client: text(&r.client[..r.lens[3]]),
                started_ms: r.start_ms,
                elapsed_ms: now_ms.saturating_sub(r.start_ms),
                in_flight: in_flight > 0,
            }
        });
        let since = |t: u64| if t == 0 { 0 } else { now_ms.saturating_sub(t) };
        WorkerSnapshot {
            state,
            pid,
            generation,
            started_ms,
            uptime_ms: since(started_ms),
            heartbeat_ms,
            heartbeat_age_ms: since(heartbeat_ms),
            connections: self.connections.load(Ordering::Relaxed),
            in_flight,
            requests: self.requests.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            statuses: std::array::from_fn(|i| self.statuses[i].load(Ordering::Relaxed)),
            conn_states: std::array::from_fn(|i| self.conn_states[i].load(Ordering::Relaxed)),
            request,
            request_torn,
            lua_ms: (lua_since != 0).then(|| monotonic_ms().saturating_sub(lua_since)),
        }
    }

    /// Zeroes the slot (state `Empty`). Watcher only, once the owner is gone: after
    /// [`Totals::fold`] (see [`Scoreboard::retire`]), or before forking into a slot that
    /// was never used. A sequence left odd by a worker that died mid-write becomes even.
    pub fn reset(&self) {
        self.state.store(State::Empty as u8, Ordering::Release);
        self.pid.store(0, Ordering::Relaxed);
        self.generation.store(0, Ordering::Relaxed);
        self.connections.store(0, Ordering::Relaxed);
        self.started_ms.store(0, Ordering::Relaxed);
        self.heartbeat_ms.store(0, Ordering::Relaxed);
        self.requests.store(0, Ordering::Relaxed);
        self.bytes_in.store(0, Ordering::Relaxed);
        self.bytes_out.store(0, Ordering::Relaxed);
        self.in_flight.store(0, Ordering::Relaxed);
        self.lua_since_ms.store(0, Ordering::Relaxed);
        for a in &self.statuses {
            a.store(0, Ordering::Relaxed);
        }
        for a in &self.conn_states {
            a.store(0, Ordering::Relaxed);
        }
        let r = &self.req;
        let s = r.seq.load(Ordering::Relaxed) | 1;
        r.seq.store(s, Ordering::Relaxed);
        fence(Ordering::Release);
        r.lens.store(0, Ordering::Relaxed);
        r.start_ms.store(0, Ordering::Relaxed);
        for w in r
            .method
            .iter()
            .chain(&r.host)
            .chain(&r.path)
            .chain(&r.client)
        {
            w.store(0, Ordering::Relaxed);
        }
        r.seq.store(s.wrapping_add(1), Ordering::Release);
    }
}

/// A worker's current (or last) request, as copied from its slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSnapshot {
    /// Method (at most [`METHOD_MAX`] bytes).
    pub method: String,
    /// Host (at most [`HOST_MAX`] bytes, cut ones end with [`TRUNCATED`]).
    pub host: String,
    /// Path (at most [`PATH_MAX`] bytes, cut ones end with [`TRUNCATED`]).
    pub path: String,
    /// Client address (at most [`CLIENT_MAX`] bytes).
    pub client: String,
    /// When it started (unix ms).
    pub started_ms: u64,
    /// How long ago it started (ms).
    pub elapsed_ms: u64,
    /// Whether the worker has requests in flight (if not, this is the last finished one).
    pub in_flight: bool,
}

/// A copy of one worker slot, owned by the watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSnapshot {
    /// What the worker last said it was doing.
    pub state: State,
    /// Its pid (0 if the slot is free, or while its worker is starting).
    pub pid: u32,
    /// Its config generation.
    pub generation: u32,
    /// When it claimed the slot (unix ms, 0 if free).
    pub started_ms: u64,
    /// How long ago that was (ms).
    pub uptime_ms: u64,
    /// Its last heartbeat (unix ms, 0 if free).
    pub heartbeat_ms: u64,
    /// How long ago that was (ms): large means hung.
    pub heartbeat_age_ms: u64,
    /// Client connections open.
    pub connections: u32,
    /// Requests started and not done.
    pub in_flight: u32,
    /// Requests done.
    pub requests: u64,
    /// Bytes read from clients by done requests.
    pub bytes_in: u64,
    /// Bytes written to clients by done requests.
    pub bytes_out: u64,
    /// Responses by status class (1xx .. 5xx).
    pub statuses: [u64; 5],
    /// Open connections by state, in [`CONN_STATES`] order.
    pub conn_states: [u32; 4],
    /// The current (or last) request, if any was started and could be copied.
    pub request: Option<RequestSnapshot>,
    /// Whether the request text could not be copied (it changed under every try).
    pub request_torn: bool,
    /// How long the Lua call running now has run (ms), None when the worker runs no Lua.
    pub lua_ms: Option<u64>,
}

/// Counters of the whole server. The watcher keeps one as the retired part (folded from
/// reaped workers); [`Scoreboard::totals`] adds the live slots to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Requests done.
    pub requests: u64,
    /// Bytes read from clients.
    pub bytes_in: u64,
    /// Bytes written to clients.
    pub bytes_out: u64,
    /// Workers respawned after dying (the watcher counts these itself: `respawns += 1`;
    /// `fold` does not, since a drained old-generation worker is not a respawn).
    pub respawns: u64,
    /// Responses by status class (1xx .. 5xx).
    pub statuses: [u64; 5],
}

/// The whole server as the status page shows it ([`Scoreboard::consistent`]).
#[derive(Debug, Clone)]
pub struct ServerView {
    /// Since start: retired workers plus live slots.
    pub totals: Totals,
    /// The current generation (as the watcher last published it).
    pub generation: u32,
    /// Reloads attempted.
    pub reloads: u64,
    /// Reloads that failed.
    pub reload_failures: u64,
    /// When the last reload ended (unix ms) and whether it succeeded.
    pub last_reload: Option<(u64, bool)>,
    /// Every worker slot, by index.
    pub workers: Vec<WorkerSnapshot>,
}

impl Totals {
    /// Adds a retired worker's counters.
    pub fn fold(&mut self, s: &WorkerSnapshot) {
        self.requests = self.requests.wrapping_add(s.requests);
        self.bytes_in = self.bytes_in.wrapping_add(s.bytes_in);
        self.bytes_out = self.bytes_out.wrapping_add(s.bytes_out);
        for (t, v) in self.statuses.iter_mut().zip(s.statuses) {
            *t = t.wrapping_add(v);
        }
    }
}

impl ProcSlot {
    // ---- every worker ----

    /// A request was sent to this address: `total` up by one (its `active` count is the
    /// worker's, [`Scoreboard::proc_started`]).
    #[inline]
    fn counted(&self) {
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    /// A failure talking to this address.
    #[inline]
    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// A worker leaves this address out until `until_ms` (unix ms); the latest deadline of
    /// all workers wins.
    #[inline]
    pub fn disable_until(&self, until_ms: u64) {
        self.disabled_until_ms
            .fetch_max(until_ms, Ordering::Relaxed);
    }

    // ---- watcher ----

    /// The watcher's view of the process behind this address (pid 0 if none / external).
    pub fn set_state(&self, state: ProcState, pid: u32) {
        self.pid.store(pid, Ordering::Relaxed);
        self.state.store(state as u8, Ordering::Release);
    }

    /// Sets or clears `flag` ([`PROXY_DRAINED`], [`PROXY_UNHEALTHY`]); the previous flags.
    pub fn set_flag(&self, flag: u8, on: bool) -> u8 {
        if on {
            self.flags.fetch_or(flag, Ordering::Relaxed)
        } else {
            self.flags.fetch_and(!flag, Ordering::Relaxed)
        }
    }

    /// The flags as of now (workers read them before each pick).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.flags.load(Ordering::Relaxed)
    }

    /// Zeroes the slot (when the proc index is reassigned after a reload); the requests in
    /// flight are the workers' to count down.
    pub fn reset(&self) {
        self.pid.store(0, Ordering::Relaxed);
        self.total.store(0, Ordering::Relaxed);
        self.errors.store(0, Ordering::Relaxed);
        self.disabled_until_ms.store(0, Ordering::Relaxed);
        self.flags.store(0, Ordering::Relaxed);
        self.state
            .store(ProcState::Unknown as u8, Ordering::Release);
    }

    /// A copy of the slot as of now, `active` 0: the workers hold that count, which
    /// [`Scoreboard::proc_snapshot`] adds.
    fn snapshot(&self, now_ms: u64) -> ProcSnapshot {
        let state =
            ProcState::from_u8(self.state.load(Ordering::Acquire)).unwrap_or(ProcState::Unknown);
        let disabled_until_ms = self.disabled_until_ms.load(Ordering::Relaxed);
        ProcSnapshot {
            state,
            pid: self.pid.load(Ordering::Relaxed),
            active: 0,
            total: self.total.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            disabled_until_ms,
            disabled_for_ms: disabled_until_ms.saturating_sub(now_ms),
            flags: self.flags.load(Ordering::Relaxed),
        }
    }
}

/// A copy of one proc slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcSnapshot {
    /// What the watcher said of the process.
    pub state: ProcState,
    /// Its pid (0 if none or external).
    pub pid: u32,
    /// Requests in flight, all workers together.
    pub active: u32,
    /// Requests sent, all workers together.
    pub total: u64,
    /// Failures, all workers together.
    pub errors: u64,
    /// Left out until then (unix ms; 0 never).
    pub disabled_until_ms: u64,
    /// How much longer it is left out (ms; 0 if enabled).
    pub disabled_for_ms: u64,
    /// [`PROXY_DRAINED`] | [`PROXY_UNHEALTHY`] (HTTP upstream addresses only).
    pub flags: u8,
}

/// Where each (backend, address) pair has its proc slot: backends in config order, each one's
/// addresses in the order of `fastcgi::pool::upstream_addrs` (the full list, not a worker's
/// share of it), packed one after the other from `base`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcIndex {
    base: usize,
    /// offsets[b] = first slot of backend b; offsets[len] = base + total.
    offsets: Vec<usize>,
}

impl ProcIndex {
    /// The layout for backends with `counts[b]` addresses each, starting at slot 0.
    pub fn new(counts: &[usize]) -> ProcIndex {
        ProcIndex::with_base(0, counts)
    }

    /// The same starting at slot `base` (e.g. to keep a draining generation's slots apart
    /// from the new generation's during a reload).
    pub fn with_base(base: usize, counts: &[usize]) -> ProcIndex {
        let mut offsets = Vec::with_capacity(counts.len() + 1);
        let mut at = base;
        offsets.push(at);
        for &c in counts {
            at = at.saturating_add(c);
            offsets.push(at);
        }
        ProcIndex { base, offsets }
    }

    /// The slot of address `u` of backend `b` (None if there is no such pair).
    pub fn index(&self, b: usize, u: usize) -> Option<usize> {
        let start = *self.offsets.get(b)?;
        let end = *self.offsets.get(b + 1)?;
        let i = start.checked_add(u)?;
        (i < end).then_some(i)
    }

    /// How many slots the layout uses.
    pub fn total(&self) -> usize {
        self.offsets.last().map_or(0, |end| end - self.base)
    }

    /// One past the last slot used (`base + total`): the proc capacity this layout needs.
    pub fn end(&self) -> usize {
        self.offsets.last().copied().unwrap_or(self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult, Pid};

    /// Runs `f` in a forked child that leaves with `_exit` (0, or 101 if `f` panicked).
    /// `f` must stick to atomics on the mapping and stack buffers: the test harness has other
    /// threads, whose locks (malloc's included) may be held forever in the child.
    fn in_child(f: impl FnOnce()) -> Pid {
        // SAFETY: the child runs only `f` (atomic stores on the shared mapping, stack
        // formatting, no allocation, no locks) and then `_exit`, which is async-signal-safe;
        // it never returns into the harness. The parent merely gets the child's pid.
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => {
                let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
                    Ok(()) => 0,
                    Err(_) => 101,
                };
                // SAFETY: `_exit` ends the child at once without running atexit handlers or
                // destructors that could touch state shared with the parent's threads.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => child,
        }
    }

    /// One holder at a time, seen by every process of the mapping; only the holder gives the
    /// lease back.
    #[test]
    fn the_timer_lease_has_one_holder_across_processes() {
        let sb = Scoreboard::new(2, 0).unwrap();
        assert!(sb.take_timer_lease(100));
        assert!(sb.take_timer_lease(100), "the holder keeps it");
        let child = in_child(|| {
            assert!(!sb.take_timer_lease(200), "held by 100");
            assert!(!sb.give_back_timer_lease(200), "200 does not hold it");
        });
        wait_ok(child);
        assert!(sb.give_back_timer_lease(100));
        assert!(!sb.give_back_timer_lease(100), "given back once");
        let child = in_child(|| assert!(sb.take_timer_lease(200)));
        wait_ok(child);
        assert!(!sb.take_timer_lease(100), "the child's take is seen here");
        assert!(sb.header_ok());
    }

    fn wait_ok(pid: Pid) {
        match waitpid(pid, None).expect("waitpid") {
            WaitStatus::Exited(_, 0) => {}
            other => panic!("child failed: {other:?}"),
        }
    }

    #[test]
    fn layout() {
        assert_eq!(WORKER_SLOT_SIZE, 448);
        assert_eq!(PROC_SLOT_SIZE, 64);
        let sb = Scoreboard::new(4, 3).unwrap();
        assert!(sb.header_ok());
        // The restart gate: a `closed` row and one row per worker, one word each; then, on
        // the next cache line, a row of in-flight counters per worker, 3 u32s padded to 64.
        let gate_end = 64 + 128 + 4 * 448 + 3 * 64 + (1 + 4) * 8;
        assert_eq!(
            sb.mapped_len(),
            (gate_end as usize).next_multiple_of(64) + 4 * 64
        );
        assert_eq!(sb.workers().len(), 4);
        assert_eq!(sb.procs().len(), 3);
        for s in sb.workers() {
            assert_eq!(s as *const WorkerSlot as usize % 64, 0);
        }
        let w_end = sb.workers().as_ptr_range().end as usize;
        assert_eq!(sb.procs().as_ptr() as usize, w_end);
        assert!(sb.worker(4).is_none() && sb.proc(3).is_none());
        let empty = Scoreboard::new(0, 0).unwrap();
        assert!(empty.workers().is_empty() && empty.procs().is_empty());
    }

    #[test]
    fn fresh_slots_are_empty() {
        let sb = Scoreboard::new(2, 1).unwrap();
        let s = sb.worker(1).unwrap().snapshot(1000);
        assert_eq!(s.state, State::Empty);
        assert_eq!((s.pid, s.requests, s.heartbeat_age_ms), (0, 0, 0));
        assert!(s.request.is_none() && !s.request_torn);
        assert_eq!(sb.free_worker_slot(), Some(0));
        let p = sb.proc(0).unwrap().snapshot(1000);
        assert_eq!((p.state, p.active, p.total), (ProcState::Unknown, 0, 0));
    }

    #[test]
    fn child_writes_parent_reads() {
        let sb = Scoreboard::new(4, 0).unwrap();
        let pid = in_child(|| {
            let slot = sb.worker(2).unwrap();
            slot.claim(4242, 7, 1_000);
            slot.conn_opened();
            slot.conn_opened();
            slot.conn_opened();
            slot.conn_closed();
            slot.request_started("GET", "example.com", "/a", "10.0.0.1", 1_500);
            slot.request_done(100, 2_000);
            slot.request_started("POST", "example.org", "/index.php?x=1", "::1", 1_900);
            slot.set_state(State::WaitingBackend);
            slot.heartbeat(1_950);
        });
        wait_ok(pid);
        let s = sb.worker(2).unwrap().snapshot(2_000);
        assert_eq!(s.state, State::WaitingBackend);
        assert_eq!((s.pid, s.generation), (4242, 7));
        assert_eq!((s.started_ms, s.uptime_ms), (1_000, 1_000));
        assert_eq!((s.heartbeat_ms, s.heartbeat_age_ms), (1_950, 50));
        assert_eq!((s.connections, s.in_flight), (2, 1));
        assert_eq!((s.requests, s.bytes_in, s.bytes_out), (1, 100, 2_000));
        let r = s.request.expect("request");
        assert_eq!(r.method, "POST");
        assert_eq!(r.host, "example.org");
        assert_eq!(r.path, "/index.php?x=1");
        assert_eq!(r.client, "::1");
        assert_eq!(
            (r.started_ms, r.elapsed_ms, r.in_flight),
            (1_900, 100, true)
        );
        assert_eq!(sb.worker(0).unwrap().state(), State::Empty);
        assert_eq!(sb.free_worker_slot(), Some(0));
    }

    #[test]
    fn long_fields_are_cut_with_a_marker() {
        let sb = Scoreboard::new(1, 0).unwrap();
        let slot = sb.worker(0).unwrap();
        let path = format!("/{}", "é".repeat(200)); // two-byte chars: cut on a boundary
        let host = "h".repeat(100);
        slot.request_started("PROPPATCHX", &host, &path, &"1".repeat(60), 5);
        let r = slot.snapshot(5).request.unwrap();
        assert_eq!(r.method, "PROPPATC");
        assert_eq!(r.host.len(), HOST_MAX);
        assert!(r.host.ends_with(TRUNCATED));
        assert!(r.path.len() <= PATH_MAX && r.path.len() >= PATH_MAX - 4);
        assert!(r.path.ends_with(TRUNCATED) && r.path.starts_with("/éé"));
        assert!(path.starts_with(r.path.trim_end_matches(TRUNCATED)));
        assert_eq!(r.client.len(), CLIENT_MAX);
        // A shorter request afterwards shows no leftovers of the longer one.
        slot.request_started("GET", "a", "/", "b", 6);
        let r = slot.snapshot(6).request.unwrap();
        assert_eq!(
            (&*r.method, &*r.host, &*r.path, &*r.client),
            ("GET", "a", "/", "b")
        );
        // Exactly full fields are kept whole.
        let p = format!("/{}", "x".repeat(PATH_MAX - 1));
        slot.request_started("GET", "a", &p, "b", 7);
        assert_eq!(slot.snapshot(7).request.unwrap().path, p);
    }

    #[test]
    fn reader_gives_up_on_a_writer_that_died_mid_write() {
        let sb = Scoreboard::new(1, 0).unwrap();
        let slot = sb.worker(0).unwrap();
        slot.claim(1, 1, 1);
        slot.request_started("GET", "h", "/p", "c", 2);
        slot.req.seq.fetch_add(1, Ordering::Relaxed); // odd forever
        let s = slot.snapshot(3);
        assert!(s.request.is_none() && s.request_torn);
        assert_eq!(s.pid, 1); // the rest of the slot is still shown
        slot.reset();
        let s = slot.snapshot(3);
        assert!(!s.request_torn && s.request.is_none());
        assert_eq!(s.state, State::Empty);
    }

    /// Writes `n` in decimal into `buf` at `at`; returns the end.
    fn put_num(buf: &mut [u8], at: usize, mut n: u64) -> usize {
        let mut digits = [0u8; 20];
        let mut k = digits.len();
        loop {
            k -= 1;
            digits[k] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let d = &digits[k..];
        buf[at..at + d.len()].copy_from_slice(d);
        at + d.len()
    }

    /// Version `i` of the request text: every field carries `i`; odd versions are long.
    fn version<'a>(
        i: u64,
        bufs: &'a mut [[u8; 200]; 3],
    ) -> (&'static str, &'a str, &'a str, &'a str) {
        let long = !i.is_multiple_of(2);
        let [h, p, c] = bufs;
        let mut hl = put_num(h, 0, i);
        let mut pl = {
            p[0] = b'/';
            put_num(p, 1, i)
        };
        let cl = put_num(c, 0, i);
        if long {
            h[hl..60].fill(b'h');
            hl = 60;
            p[pl] = b'/';
            p[pl + 1..150].fill(b'p');
            pl = 150;
        }
        let (h, p, c): (&'a [u8; 200], &'a [u8; 200], &'a [u8; 200]) = (h, p, c);
        let s = |b: &'a [u8]| std::str::from_utf8(b).unwrap_or("?");
        let method = if long { "DELETE" } else { "GET" };
        (method, s(&h[..hl]), s(&p[..pl]), s(&c[..cl]))
    }

    #[test]
    fn seqlock_never_shows_a_mix() {
        let sb = Scoreboard::new(1, 1).unwrap();
        let slot = sb.worker(0).unwrap();
        let stop = sb.proc(0).unwrap();
        let pid = in_child(|| {
            let mut bufs = [[0u8; 200]; 3];
            let mut i = 1u64;
            // Until the parent says stop (or a bound, should it die).
            while stop.state.load(Ordering::Relaxed) == 0 && i < 200_000_000 {
                let (m, h, p, c) = version(i, &mut bufs);
                slot.request_started(m, h, p, c, i);
                if i == 1 {
                    slot.heartbeat(1); // tell the parent we are running
                }
                i += 1;
            }
        });
        while slot.heartbeat_ms.load(Ordering::Relaxed) == 0 {
            std::hint::spin_loop();
        }
        let (mut short, mut long, mut torn) = (0u32, 0u32, 0u32);
        let mut bufs = [[0u8; 200]; 3];
        let mut last = 0;
        for _ in 0..100_000 {
            let s = slot.snapshot(0);
            let Some(r) = s.request else {
                torn += 1;
                continue;
            };
            let i = r.started_ms;
            assert!(i >= last, "went backwards: {i} after {last}");
            last = i;
            let (m, h, p, c) = version(i, &mut bufs);
            assert_eq!(
                (&*r.method, &*r.host, &*r.path, &*r.client),
                (m, h, p, c),
                "version {i}"
            );
            if i % 2 == 1 {
                long += 1;
            } else {
                short += 1;
            }
        }
        stop.state.store(1, Ordering::Relaxed);
        wait_ok(pid);
        eprintln!("seqlock: {short} short, {long} long, {torn} given up, last version {last}");
        assert!(short + long > 0);
    }

    #[test]
    fn totals_survive_two_generations() {
        let sb = Scoreboard::new(2, 0).unwrap();
        let mut retired = Totals::default();
        let sb = &sb;
        let work = |gen: u32, n: u64| {
            in_child(move || {
                let slot = sb.worker(0).unwrap();
                slot.claim(100 + gen, gen, 10);
                for _ in 0..n {
                    slot.request_started("GET", "h", "/", "c", 11);
                    slot.request_done(10, 1000);
                }
                slot.exited();
            })
        };
        wait_ok(work(1, 30));
        let live = sb.totals(&retired);
        assert_eq!(
            (live.requests, live.bytes_in, live.bytes_out),
            (30, 300, 30_000)
        );
        let last = sb.retire(0, &mut retired, 20).unwrap();
        assert_eq!(
            (last.state, last.generation, last.requests),
            (State::Exited, 1, 30)
        );
        assert_eq!(sb.worker(0).unwrap().state(), State::Empty);
        assert_eq!(sb.totals(&retired), live);
        retired.respawns += 1;

        wait_ok(work(2, 12));
        let t = sb.totals(&retired);
        assert_eq!(
            (t.requests, t.bytes_in, t.bytes_out, t.respawns),
            (42, 420, 42_000, 1)
        );
        sb.retire(0, &mut retired, 30);
        assert_eq!(sb.totals(&retired), t);
        assert!(sb.retire(2, &mut retired, 30).is_none());
    }

    #[test]
    fn proc_counters_from_two_children() {
        let sb = Scoreboard::new(2, 2).unwrap();
        let idx = &ProcIndex::new(&[1, 1]);
        let sb = &sb;
        let hammer = |w: u64| {
            in_child(move || {
                let i = idx.index(1, 0).unwrap();
                let p = sb.proc(i).unwrap();
                let me = w as usize - 1;
                for k in 0..10_000u64 {
                    sb.proc_started(me, i);
                    if k % 10 == 0 {
                        p.error();
                    }
                    sb.proc_finished(me, i);
                }
                sb.proc_started(me, i); // one left in flight per child
                p.disable_until(1_000 + w);
            })
        };
        let (a, b) = (hammer(1), hammer(2));
        wait_ok(a);
        wait_ok(b);
        sb.proc(1).unwrap().set_state(ProcState::Up, 77);
        let s = sb.proc_snapshot(1, 1_000).unwrap();
        assert_eq!(s.state, ProcState::Up);
        assert_eq!(s.pid, 77);
        assert_eq!((s.active, s.total, s.errors), (2, 20_002, 2_000));
        assert_eq!((s.disabled_until_ms, s.disabled_for_ms), (1_002, 2));
        assert_eq!(sb.proc_snapshot(0, 0).unwrap().total, 0);
        sb.proc(1).unwrap().reset();
        let s = sb.proc_snapshot(1, 0).unwrap();
        assert_eq!((s.state, s.total), (ProcState::Unknown, 0));
        assert_eq!(
            s.active, 2,
            "a reset leaves the workers' requests in flight counted"
        );
        sb.retire(0, &mut Totals::default(), 0);
        sb.retire(1, &mut Totals::default(), 0);
        assert_eq!(
            sb.proc_active(1),
            0,
            "both children gone: nothing in flight"
        );
    }

    #[test]
    fn proc_index() {
        let idx = ProcIndex::new(&[2, 0, 3]);
        assert_eq!(idx.total(), 5);
        assert_eq!(idx.index(0, 0), Some(0));
        assert_eq!(idx.index(0, 1), Some(1));
        assert_eq!(idx.index(0, 2), None);
        assert_eq!(idx.index(1, 0), None);
        assert_eq!(idx.index(2, 0), Some(2));
        assert_eq!(idx.index(2, 2), Some(4));
        assert_eq!(idx.index(2, 3), None);
        assert_eq!(idx.index(3, 0), None);
        let shifted = ProcIndex::with_base(5, &[2, 3]);
        assert_eq!((shifted.total(), shifted.end()), (5, 10));
        assert_eq!(shifted.index(1, 2), Some(9));
        assert_eq!(ProcIndex::new(&[]).total(), 0);
    }

    #[test]
    fn unpaired_closes_stop_at_zero() {
        let sb = Scoreboard::new(1, 0).unwrap();
        let slot = sb.worker(0).unwrap();
        slot.conn_closed();
        slot.request_done(1, 2);
        let s = slot.snapshot(0);
        assert_eq!((s.connections, s.in_flight, s.requests), (0, 0, 1));
    }

    #[test]
    fn status_classes_conn_states_and_the_published_totals() {
        let sb = Scoreboard::new(2, 0).unwrap();
        let slot = sb.worker(0).unwrap();
        slot.claim(1, 1, 0);
        for st in [200, 204, 304, 404, 503, 99, 600] {
            slot.response_status(st);
        }
        slot.request_done(10, 20);
        slot.conn_moved(None, Some(State::Reading));
        slot.conn_moved(None, Some(State::Reading));
        slot.conn_moved(Some(State::Reading), Some(State::KeepAlive));
        slot.conn_moved(Some(State::Idle), Some(State::Writing));
        let v = sb.consistent(0);
        assert_eq!(v.totals.statuses, [0, 2, 1, 1, 1]);
        assert_eq!(v.workers[0].conn_states, [1, 1, 0, 1]);
        assert_eq!((v.totals.requests, v.reloads, v.last_reload), (1, 0, None));
        // Retiring moves the counters from the slot to the published totals: same sums.
        let mut retired = Totals::default();
        sb.retire(0, &mut retired, 0);
        retired.respawns = 1;
        sb.publish(&retired, 3);
        sb.reload_done(false, 1234);
        let v = sb.consistent(0);
        assert_eq!(v.totals.statuses, [0, 2, 1, 1, 1]);
        assert_eq!((v.totals.requests, v.totals.bytes_out), (1, 20));
        assert_eq!((v.totals.respawns, v.generation), (1, 3));
        assert_eq!((v.reloads, v.reload_failures), (1, 1));
        assert_eq!(v.last_reload, Some((1234, false)));
        assert_eq!(v.workers[0].conn_states, [0; 4]);
    }
}
