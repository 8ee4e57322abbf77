//! One shared dictionary zone: a fixed-size region of shared memory holding a hash table of
//! fixed-size entries, guarded by an [`OwnerLock`] (a process-shared lock whose holder's death
//! is detected).
//!
//! Layout (all offsets from the page-aligned base):
//!
//! ```text
//! 0      Header: magic, total size, entry count, LRU tick, eviction count, the lock
//! 256    Index: `entries` × 40-byte Slot (state, key and value lengths, type, hash, expiry, last use)
//! ...    Data:  `entries` × 472 bytes: the value (numbers as 8 aligned bytes), then the key
//! ```
//!
//! A key lives within [`WINDOW`] slots of its home slot (hash modulo entries), so every
//! operation reads at most that many index entries. Inserting into a window with no free or
//! expired slot evicts the least recently used entry of that window (LRU among the keys that
//! compete for the same place; with 32 candidates this is close to global LRU, and costs no
//! list to keep consistent).
//!
//! Robust to a holder killed mid-operation: every write that spans more than one aligned store
//! first marks its slot `WRITING` and marks it `LIVE` last; the next process to lock takes the
//! lock over from the dead holder ([`Taken::FromDead`]) and drops every `WRITING` slot (the
//! interrupted write is lost, nothing else). An `incr` of a number is one aligned 8-byte store,
//! so a kill loses no increment that completed, and every completed one is seen.

use std::ffi::c_void;
use std::io;
use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, Ordering};

use nix::sys::mman::{mmap_anonymous, munmap, MapFlags, ProtFlags};

use super::owner_lock::{OwnerLock, Taken};

/// Bytes before the index.
const HEADER_BYTES: usize = 256;
/// Bytes of one index slot.
const SLOT_BYTES: usize = 40;
/// Bytes of one entry's data: key and value together.
pub const DATA_BYTES: usize = 472;
/// Bytes one entry takes in all.
pub const ENTRY_BYTES: usize = SLOT_BYTES + DATA_BYTES;
/// Longest key, in bytes.
pub const MAX_KEY: usize = 250;
/// Slots a key may live in, from its home slot on.
pub const WINDOW: usize = 32;
/// Smallest zone (`size`): room for a few windows.
pub const MIN_SIZE: usize = 64 * 1024;
/// Largest zone.
pub const MAX_SIZE: usize = 1 << 32;

const MAGIC: u64 = 0x6c75_6168_7364_6963; // "luahsdic"

const EMPTY: u32 = 0;
const LIVE: u32 = 1;
const DEAD: u32 = 2;
const WRITING: u32 = 3;

const T_STR: u8 = 1;
const T_INT: u8 = 2;
const T_FLOAT: u8 = 3;
const T_BOOL: u8 = 4;

#[repr(C)]
struct Header {
    magic: u64,
    size: u64,
    entries: u64,
    tick: u64,
    evictions: u64,
    lock: OwnerLock,
}

#[repr(C)]
struct Slot {
    state: AtomicU32,
    klen: u16,
    vtype: u8,
    _pad: u8,
    vlen: u32,
    _pad2: u32,
    hash: u64,
    /// Monotonic milliseconds at which the entry expires; 0: never.
    expires: u64,
    /// The header's tick at the entry's last use (LRU).
    used: u64,
}

const _: () = assert!(std::mem::size_of::<Header>() <= HEADER_BYTES);
const _: () = assert!(std::mem::size_of::<Slot>() == SLOT_BYTES);
const _: () = assert!(DATA_BYTES.is_multiple_of(8));

/// A value stored in a zone.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    /// A byte string.
    Str(Vec<u8>),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
}

impl Val {
    fn encoded_len(&self) -> usize {
        match self {
            Val::Str(s) => s.len(),
            _ => 8,
        }
    }
}

/// Why an operation did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpError {
    /// The key is empty or longer than [`MAX_KEY`].
    BadKey,
    /// Key and value do not fit in one entry ([`DATA_BYTES`]).
    TooLarge,
    /// `add` of a key present.
    Exists,
    /// `replace` or `incr` (without initial value) of a key absent.
    NotFound,
    /// `incr` of a value that is not a number.
    NotANumber,
}

impl OpError {
    /// The message Lua gets as the second result.
    pub fn message(self) -> &'static str {
        match self {
            OpError::BadKey => "bad key",
            OpError::TooLarge => "too large",
            OpError::Exists => "exists",
            OpError::NotFound => "not found",
            OpError::NotANumber => "not a number",
        }
    }
}

/// How a store went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// Whether a live entry was evicted to make room.
    pub evicted: bool,
}

/// Fill level of a zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fill {
    /// Entries the zone has room for.
    pub capacity: usize,
    /// Live, unexpired entries.
    pub live: usize,
    /// Entries evicted since the zone was mapped.
    pub evictions: u64,
}

/// One mapped zone. The mapping is shared with every process forked after it was made.
pub struct Zone {
    base: NonNull<u8>,
    len: usize,
    entries: usize,
}

impl Zone {
    /// Maps a zone of `size` bytes (clamped into [`MIN_SIZE`]..=[`MAX_SIZE`] by the config)
    /// and initialises it (zero-filled: every slot empty, the lock free).
    pub fn map(size: usize) -> io::Result<Zone> {
        let len = size.max(HEADER_BYTES + WINDOW * ENTRY_BYTES);
        let entries = (len - HEADER_BYTES) / ENTRY_BYTES;
        let length = NonZeroUsize::new(len).ok_or_else(|| io::Error::other("zero size"))?;
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
        let zone = Zone {
            base: ptr.cast::<u8>(),
            len,
            entries,
        };
        let h = zone.header();
        // SAFETY: the region is ours alone (no fork since it was mapped), page-aligned and at
        // least HEADER_BYTES long; the zero-filled slots are all EMPTY and the lock is free.
        unsafe {
            (*h).magic = MAGIC;
            (*h).size = len as u64;
            (*h).entries = entries as u64;
        }
        Ok(zone)
    }

    /// Bytes mapped (the configured size).
    pub fn size(&self) -> usize {
        self.len
    }

    /// Entries the zone has room for.
    pub fn capacity(&self) -> usize {
        self.entries
    }

    fn header(&self) -> *mut Header {
        self.base.as_ptr().cast::<Header>()
    }

    fn owner_lock(&self) -> &OwnerLock {
        // SAFETY: the header lies at the mapping's start for as long as `self` keeps it; the
        // lock word is only ever used through atomics.
        unsafe { &*std::ptr::addr_of!((*self.header()).lock) }
    }

    /// Marks the lock as held by a dead process if `pid` holds it ([`OwnerLock::release_dead`]);
    /// whether it did.
    pub fn release_dead_holder(&self, pid: u32) -> bool {
        self.owner_lock().release_dead(pid)
    }

    /// Locks the zone; recovers it first if the last holder died holding the lock.
    fn lock(&self) -> Guard<'_> {
        let taken = self.owner_lock().lock();
        let g = Guard { zone: self };
        if taken == Taken::FromDead {
            g.recover();
            tracing::warn!(
                "shared dict: a process died holding a zone's lock; its interrupted write was dropped"
            );
        }
        g
    }

    /// The value of `key` and its remaining time to live (None: never expires).
    pub fn get(&self, key: &[u8]) -> Result<Option<(Val, Option<f64>)>, OpError> {
        check_key(key)?;
        let g = self.lock();
        let now = now_ms();
        Ok(g.find(key, hash(key), now).map(|i| {
            g.touch(i);
            let s = g.slot(i);
            (g.value(i), ttl_of(s.expires, now))
        }))
    }

    /// Sets `key` (creating or overwriting); `ttl` in seconds, None or 0: no expiry.
    pub fn set(&self, key: &[u8], val: &Val, ttl: Option<f64>) -> Result<Stored, OpError> {
        self.store(key, val, ttl, Mode::Any)
    }

    /// Sets `key` only if it is absent.
    pub fn add(&self, key: &[u8], val: &Val, ttl: Option<f64>) -> Result<Stored, OpError> {
        self.store(key, val, ttl, Mode::Absent)
    }

    /// Sets `key` only if it is present.
    pub fn replace(&self, key: &[u8], val: &Val, ttl: Option<f64>) -> Result<Stored, OpError> {
        self.store(key, val, ttl, Mode::Present)
    }

    fn store(
        &self,
        key: &[u8],
        val: &Val,
        ttl: Option<f64>,
        mode: Mode,
    ) -> Result<Stored, OpError> {
        check_key(key)?;
        if key.len() + val.encoded_len() > DATA_BYTES {
            return Err(OpError::TooLarge);
        }
        let h = hash(key);
        let g = self.lock();
        let now = now_ms();
        let expires = expiry(ttl, now);
        match (g.find(key, h, now), mode) {
            (Some(_), Mode::Absent) => Err(OpError::Exists),
            (None, Mode::Present) => Err(OpError::NotFound),
            (Some(i), _) => {
                g.write(i, h, key, val, expires);
                Ok(Stored { evicted: false })
            }
            (None, _) => {
                let (i, evicted) = g.free_slot(h, now);
                g.write(i, h, key, val, expires);
                Ok(Stored { evicted })
            }
        }
    }

    /// Adds `step` to the number at `key`; when absent, creates it as `init + step` with `ttl`
    /// (or fails with NotFound when `init` is None).
    pub fn incr(
        &self,
        key: &[u8],
        step: &Val,
        init: Option<&Val>,
        ttl: Option<f64>,
    ) -> Result<(Val, Stored), OpError> {
        check_key(key)?;
        if key.len() + 8 > DATA_BYTES {
            return Err(OpError::TooLarge);
        }
        let h = hash(key);
        let g = self.lock();
        let now = now_ms();
        if let Some(i) = g.find(key, h, now) {
            let old = g.value(i);
            let new = add(&old, step).ok_or(OpError::NotANumber)?;
            g.touch(i);
            if std::mem::discriminant(&old) == std::mem::discriminant(&new) {
                g.store_number(i, &new);
            } else {
                let expires = g.slot(i).expires;
                g.write(i, h, key, &new, expires);
            }
            return Ok((new, Stored { evicted: false }));
        }
        let init = init.ok_or(OpError::NotFound)?;
        let new = add(init, step).ok_or(OpError::NotANumber)?;
        let (i, evicted) = g.free_slot(h, now);
        g.write(i, h, key, &new, expiry(ttl, now));
        Ok((new, Stored { evicted }))
    }

    /// One request through the leaky bucket at `key` (nginx's `limit_req`): `rate` requests
    /// per second drain it, `burst` more may wait in it. None: admitted (and counted); Some(s):
    /// refused, the bucket has room again in `s` seconds. Atomic like every operation.
    pub fn leaky_bucket(&self, key: &[u8], rate: f64, burst: f64) -> Result<Option<f64>, OpError> {
        check_key(key)?;
        if key.len() + 16 > DATA_BYTES {
            return Err(OpError::TooLarge);
        }
        let h = hash(key);
        let g = self.lock();
        let now = now_ms();
        // The state: excess requests (f64) and the time it was computed (ms), 16 bytes.
        let state = |excess: f64| {
            let mut b = excess.to_bits().to_le_bytes().to_vec();
            b.extend_from_slice(&now.to_le_bytes());
            Val::Str(b)
        };
        // Kept a little longer than the bucket takes to empty, so idle keys go away.
        let ttl = Some((burst + 1.0) / rate.max(1e-9) + 60.0);
        let Some(i) = g.find(key, h, now) else {
            let (i, _) = g.free_slot(h, now);
            g.write(i, h, key, &state(0.0), expiry(ttl, now));
            return Ok(None);
        };
        let (excess, last) = match g.value(i) {
            Val::Str(b) if b.len() == 16 => {
                let mut e = [0u8; 8];
                let mut t = [0u8; 8];
                e.copy_from_slice(&b[..8]);
                t.copy_from_slice(&b[8..]);
                (f64::from_bits(u64::from_le_bytes(e)), u64::from_le_bytes(t))
            }
            _ => return Err(OpError::NotANumber),
        };
        let elapsed = now.saturating_sub(last) as f64 / 1000.0;
        // nginx's order (ngx_http_limit_req_lookup): add this request, then clamp at 0. Clamping
        // first and adding after made a drained bucket admit only `burst` at once where a new
        // key admits `1 + burst` (tests/lua_gaps.rs, limit_req after draining).
        let excess = (excess - rate * elapsed + 1.0).max(0.0);
        if excess > burst {
            return Ok(Some((excess - burst) / rate.max(1e-9)));
        }
        g.touch(i);
        g.write(i, h, key, &state(excess), expiry(ttl, now));
        Ok(None)
    }

    /// Deletes `key`; whether it was there.
    pub fn delete(&self, key: &[u8]) -> Result<bool, OpError> {
        check_key(key)?;
        let g = self.lock();
        match g.find(key, hash(key), now_ms()) {
            Some(i) => {
                g.slot(i).state.store(DEAD, Ordering::Release);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Remaining time to live of `key`: None when absent, Some(None) when it never expires.
    pub fn ttl(&self, key: &[u8]) -> Result<Option<Option<f64>>, OpError> {
        check_key(key)?;
        let g = self.lock();
        let now = now_ms();
        Ok(g.find(key, hash(key), now)
            .map(|i| ttl_of(g.slot(i).expires, now)))
    }

    /// Sets the time to live of a present `key` (0: never expires); whether it was there.
    pub fn expire(&self, key: &[u8], ttl: Option<f64>) -> Result<bool, OpError> {
        check_key(key)?;
        let g = self.lock();
        let now = now_ms();
        match g.find(key, hash(key), now) {
            Some(i) => {
                // SAFETY: one aligned 8-byte store under the lock (atomic against a kill).
                unsafe {
                    std::ptr::addr_of_mut!((*g.slot_ptr(i)).expires)
                        .write_volatile(expiry(ttl, now))
                };
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Up to `max` live keys (0: all), in slot order.
    pub fn keys(&self, max: usize) -> Vec<Vec<u8>> {
        let g = self.lock();
        let now = now_ms();
        let mut out = Vec::new();
        for i in 0..self.entries {
            if max > 0 && out.len() >= max {
                break;
            }
            if g.is_live(i, now) {
                out.push(g.key(i).to_vec());
            }
        }
        out
    }

    /// Removes every entry.
    pub fn flush(&self) {
        let g = self.lock();
        for i in 0..self.entries {
            g.slot(i).state.store(EMPTY, Ordering::Release);
        }
    }

    /// Bytes free for new entries: free (or expired) entries × [`ENTRY_BYTES`].
    pub fn free_space(&self) -> usize {
        let f = self.fill();
        (f.capacity - f.live) * ENTRY_BYTES
    }

    /// How full the zone is.
    pub fn fill(&self) -> Fill {
        let g = self.lock();
        let now = now_ms();
        let live = (0..self.entries).filter(|&i| g.is_live(i, now)).count();
        // SAFETY: read under the lock.
        let evictions = unsafe { (*self.header()).evictions };
        Fill {
            capacity: self.entries,
            live,
            evictions,
        }
    }

    /// Takes the lock and never releases it, as a holder killed mid-operation would (tests).
    #[cfg(test)]
    pub(super) fn lock_and_die(&self, mark_writing: Option<&[u8]>) {
        let g = self.lock();
        if let Some(key) = mark_writing {
            if let Some(i) = g.find(key, hash(key), now_ms()) {
                g.slot(i).state.store(WRITING, Ordering::Release);
            }
        }
        std::mem::forget(g);
    }
}

impl Drop for Zone {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly the mapping made in `map`, unmapped nowhere else;
        // every pointer into it is derived from `self`, so none outlives this. Other processes
        // keep their own mapping. A failure leaves a leak, not unsoundness.
        let _ = unsafe { munmap(self.base.cast::<c_void>(), self.len) };
    }
}

#[derive(Clone, Copy)]
enum Mode {
    Any,
    Absent,
    Present,
}

/// The zone while its lock is held.
struct Guard<'a> {
    zone: &'a Zone,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.zone.owner_lock().unlock();
    }
}

impl Guard<'_> {
    fn slot_ptr(&self, i: usize) -> *mut Slot {
        debug_assert!(i < self.zone.entries);
        // SAFETY: i < entries, so the slot lies inside the index, inside the mapping.
        unsafe {
            self.zone
                .base
                .as_ptr()
                .add(HEADER_BYTES + i * SLOT_BYTES)
                .cast::<Slot>()
        }
    }

    fn slot(&self, i: usize) -> &Slot {
        // SAFETY: in bounds (slot_ptr) and aligned (8-byte fields at multiples of 40 from a
        // page-aligned 256); other processes change it only under the lock we hold.
        unsafe { &*self.slot_ptr(i) }
    }

    fn data_ptr(&self, i: usize) -> *mut u8 {
        // SAFETY: i < entries: the data area of entry i lies inside the mapping.
        unsafe {
            self.zone
                .base
                .as_ptr()
                .add(HEADER_BYTES + self.zone.entries * SLOT_BYTES + i * DATA_BYTES)
        }
    }

    fn key(&self, i: usize) -> &[u8] {
        let s = self.slot(i);
        // SAFETY: vlen + klen <= DATA_BYTES was checked when the entry was written; the bytes
        // are read under the lock.
        unsafe {
            std::slice::from_raw_parts(self.data_ptr(i).add(s.vlen as usize), s.klen as usize)
        }
    }

    fn value(&self, i: usize) -> Val {
        let s = self.slot(i);
        let p = self.data_ptr(i);
        // SAFETY: as in `key`; numbers sit 8-aligned at the data's start.
        unsafe {
            match s.vtype {
                T_INT => Val::Int(p.cast::<i64>().read_volatile()),
                T_FLOAT => Val::Float(f64::from_bits(p.cast::<u64>().read_volatile())),
                T_BOOL => Val::Bool(p.read_volatile() != 0),
                _ => Val::Str(std::slice::from_raw_parts(p, s.vlen as usize).to_vec()),
            }
        }
    }

    fn is_live(&self, i: usize, now: u64) -> bool {
        let s = self.slot(i);
        s.state.load(Ordering::Acquire) == LIVE && (s.expires == 0 || s.expires > now)
    }

    /// The slot holding `key`, if live; an expired match is freed on the way.
    fn find(&self, key: &[u8], h: u64, now: u64) -> Option<usize> {
        let n = self.zone.entries;
        let mut next = home_slot(h, n);
        for _ in 0..WINDOW.min(n) {
            let i = next;
            next = next_slot(i, n);
            let s = self.slot(i);
            match s.state.load(Ordering::Acquire) {
                EMPTY => return None,
                LIVE if s.hash == h && s.klen as usize == key.len() && self.key(i) == key => {
                    if s.expires != 0 && s.expires <= now {
                        s.state.store(DEAD, Ordering::Release);
                        return None;
                    }
                    return Some(i);
                }
                _ => {}
            }
        }
        None
    }

    /// A slot for a new key: the first free or expired one of its window, else the least
    /// recently used one, evicted (then `true`).
    fn free_slot(&self, h: u64, now: u64) -> (usize, bool) {
        let n = self.zone.entries;
        let mut next = home_slot(h, n);
        let mut lru = next;
        let mut lru_used = u64::MAX;
        for _ in 0..WINDOW.min(n) {
            let i = next;
            next = next_slot(i, n);
            let s = self.slot(i);
            if !self.is_live(i, now) {
                return (i, false);
            }
            if s.used < lru_used {
                lru_used = s.used;
                lru = i;
            }
        }
        self.slot(lru).state.store(DEAD, Ordering::Release);
        let hd = self.zone.header();
        // SAFETY: header fields are written only under the lock we hold.
        unsafe { (*hd).evictions += 1 };
        (lru, true)
    }

    fn next_tick(&self) -> u64 {
        let hd = self.zone.header();
        // SAFETY: header fields are written only under the lock we hold.
        unsafe {
            (*hd).tick += 1;
            (*hd).tick
        }
    }

    fn touch(&self, i: usize) {
        let t = self.next_tick();
        // SAFETY: one aligned store under the lock; `used` only orders evictions.
        unsafe { std::ptr::addr_of_mut!((*self.slot_ptr(i)).used).write_volatile(t) };
    }

    /// Writes a whole entry into slot `i`, crash-safely (WRITING first, LIVE last).
    fn write(&self, i: usize, h: u64, key: &[u8], val: &Val, expires: u64) {
        let t = self.next_tick();
        let sp = self.slot_ptr(i);
        // SAFETY: we hold the lock, so no other process reads or writes this slot; the
        // lengths were checked against DATA_BYTES by the caller; the fence keeps the WRITING
        // mark before the data stores, the Release store keeps LIVE after them, so a kill at
        // any point leaves either WRITING (dropped by `recover`) or a complete entry.
        unsafe {
            (*sp).state.store(WRITING, Ordering::Relaxed);
            fence(Ordering::Release);
            let p = self.data_ptr(i);
            let (vtype, vlen) = match val {
                Val::Str(s) => {
                    std::ptr::copy_nonoverlapping(s.as_ptr(), p, s.len());
                    (T_STR, s.len())
                }
                Val::Int(n) => {
                    p.cast::<i64>().write_volatile(*n);
                    (T_INT, 8)
                }
                Val::Float(f) => {
                    p.cast::<u64>().write_volatile(f.to_bits());
                    (T_FLOAT, 8)
                }
                Val::Bool(b) => {
                    p.cast::<u64>().write_volatile(u64::from(*b));
                    (T_BOOL, 8)
                }
            };
            std::ptr::copy_nonoverlapping(key.as_ptr(), p.add(vlen), key.len());
            (*sp).klen = key.len() as u16;
            (*sp).vtype = vtype;
            (*sp).vlen = vlen as u32;
            (*sp).hash = h;
            (*sp).expires = expires;
            (*sp).used = t;
            (*sp).state.store(LIVE, Ordering::Release);
        }
    }

    /// Overwrites the number of a numeric entry of the same type: one aligned 8-byte store.
    fn store_number(&self, i: usize, v: &Val) {
        let bits = match v {
            Val::Int(n) => *n as u64,
            Val::Float(f) => f.to_bits(),
            _ => return,
        };
        // SAFETY: entry i holds a number of this type, so its data starts with 8 aligned bytes;
        // one store cannot be torn by a kill; we hold the lock.
        unsafe { self.data_ptr(i).cast::<u64>().write_volatile(bits) };
    }

    /// After a holder died: interrupted writes are dropped.
    fn recover(&self) {
        for i in 0..self.zone.entries {
            let s = self.slot(i);
            if s.state.load(Ordering::Acquire) == WRITING {
                s.state.store(DEAD, Ordering::Release);
            }
        }
    }
}

/// The slot a key of hash `h` starts from, of `n`: the hash scaled into 0..n with a multiply,
/// not a division (a 64-bit division costs tens of cycles, twice an operation).
fn home_slot(h: u64, n: usize) -> usize {
    ((u128::from(h) * n as u128) >> 64) as usize
}

/// The slot after `i`, wrapping at `n`.
fn next_slot(i: usize, n: usize) -> usize {
    if i + 1 == n {
        0
    } else {
        i + 1
    }
}

fn check_key(key: &[u8]) -> Result<(), OpError> {
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(OpError::BadKey);
    }
    Ok(())
}

fn add(a: &Val, b: &Val) -> Option<Val> {
    Some(match (a, b) {
        (Val::Int(x), Val::Int(y)) => match x.checked_add(*y) {
            Some(n) => Val::Int(n),
            None => Val::Float(*x as f64 + *y as f64),
        },
        (Val::Int(x), Val::Float(y)) => Val::Float(*x as f64 + y),
        (Val::Float(x), Val::Int(y)) => Val::Float(x + *y as f64),
        (Val::Float(x), Val::Float(y)) => Val::Float(x + y),
        _ => return None,
    })
}

/// FNV-1a, 64 bits (keys are short), then mixed so that its high bits, which [`home_slot`]
/// uses, depend on every byte: FNV alone leaves them nearly unchanged by the last bytes, and
/// keys that differ only at the end ("hits:/a", "hits:/b") would crowd one window.
fn hash(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h ^ (h >> 29)).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

fn expiry(ttl: Option<f64>, now: u64) -> u64 {
    match ttl {
        Some(t) if t > 0.0 => now.saturating_add(((t * 1000.0).ceil() as u64).max(1)),
        _ => 0,
    }
}

fn ttl_of(expires: u64, now: u64) -> Option<f64> {
    (expires != 0).then(|| expires.saturating_sub(now) as f64 / 1000.0)
}

/// Milliseconds of CLOCK_MONOTONIC: the same clock in every process of the machine.
pub fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write into; CLOCK_MONOTONIC always exists on Linux.
    let t = if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } == 0 {
        ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
    } else {
        0
    };
    // 0 means "never expires": the clock never reads 0 after boot, but be sure.
    t.max(1)
}
