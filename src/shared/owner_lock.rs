//! The lock of a shared zone: one 32-bit word in the shared mapping holding the id of the
//! thread that holds it, so that a holder killed while holding it can be recognised as dead
//! and the lock taken over.
//!
//! - `0`: free. Otherwise the holder's thread id (a Linux pid or tid, below 2^22) in the low
//!   bits, or [`OWNER_DIED`], and [`WAITERS`] when somebody may be asleep on the word (a
//!   futex).
//! - Taking it is one compare-and-swap from `0` to our id; giving it back one swap to `0`, and
//!   a futex wake only when [`WAITERS`] was set.
//! - A holder's death is learnt two ways. The watcher, between a worker's exit and its
//!   reaping (while its pid cannot be reused), writes [`OWNER_DIED`] over a lock that pid holds
//!   and wakes every waiter ([`OwnerLock::release_dead`]). And a waiter, which sleeps on the
//!   futex in slices of [`SLICE`], asks after each whole slice whether the holder still lives
//!   ([`is_alive`]: gone, or a zombie, is dead) — for holders the watcher does not reap, and
//!   for the watcher's own wait. Either way the lock is taken over with one compare-and-swap
//!   from the exact word seen, so one waiter gets it, and it is told ([`Taken::FromDead`]) so
//!   it can repair what the holder left half-written.
//!
//! This replaces a robust pthread mutex: its lock and unlock cost about 125 instructions an
//! operation, this one about 20.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Set in the word while a waiter may be asleep on it.
const WAITERS: u32 = 1 << 31;
/// The holder the watcher writes for a process that died holding the lock (above every
/// Linux thread id, which stays below 2^22).
const OWNER_DIED: u32 = 1 << 30;
/// How long a waiter sleeps before it checks that the holder still lives.
const SLICE: Duration = Duration::from_millis(10);
/// Spins before a waiter sleeps: a holder keeps the lock for well under a microsecond.
const SPINS: u32 = 100;

/// A process-shared lock whose holder's death is detected. Lives inside a shared mapping,
/// zero-filled (free) at the start.
#[repr(C)]
pub struct OwnerLock {
    word: AtomicU32,
}

/// How the lock was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// It was free, or given back by its holder.
    Free,
    /// Its holder had died holding it: what it was writing may be half done.
    FromDead,
}

impl OwnerLock {
    /// Takes the lock, waiting while a live holder has it.
    pub fn lock(&self) -> Taken {
        let me = thread_id();
        if self
            .word
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return Taken::Free;
        }
        self.lock_contended(me)
    }

    #[cold]
    fn lock_contended(&self, me: u32) -> Taken {
        let mut spins = 0;
        // Since when this waiter has slept without asking whether the holder lives.
        let mut asleep_since: Option<Instant> = None;
        let mut ask = false;
        loop {
            let seen = self.word.load(Ordering::Relaxed);
            if seen == 0 {
                // Taken with WAITERS set: others may still be asleep, and the unlock must wake
                // one of them.
                if self
                    .word
                    .compare_exchange(0, me | WAITERS, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return Taken::Free;
                }
                continue;
            }
            let holder = seen & !WAITERS;
            // Nobody will give it back when the watcher has marked its holder dead, or when
            // our own id is on it (a thread of ours that held it died and its id came back,
            // or a holder forgot it: tests; a re-entrant lock would land here too, and none
            // exists: no zone operation calls another). Any other holder is asked about after
            // a whole slice of sleep only: the question costs more than most waits.
            let dead = holder == OWNER_DIED
                || holder == me
                || (std::mem::take(&mut ask) && !is_alive(holder));
            if dead {
                if self
                    .word
                    .compare_exchange(seen, me | WAITERS, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return Taken::FromDead;
                }
                continue;
            }
            if spins < SPINS {
                spins += 1;
                std::hint::spin_loop();
                continue;
            }
            if seen & WAITERS == 0
                && self
                    .word
                    .compare_exchange(seen, seen | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            let since = *asleep_since.get_or_insert_with(Instant::now);
            futex_wait(&self.word, seen | WAITERS, SLICE);
            // Counted by the clock, not by the futex's answer: a signal (EINTR) or a change of
            // the word must not postpone the question forever.
            if since.elapsed() >= SLICE {
                asleep_since = None;
                ask = true;
            }
        }
    }

    /// Marks the lock as held by a dead process when `pid` holds it (the watcher, between a
    /// worker's exit and its reaping, while the pid cannot have been reused), and wakes every
    /// waiter: the first to look takes it over. Whether `pid` held it.
    pub fn release_dead(&self, pid: u32) -> bool {
        let seen = self.word.load(Ordering::Relaxed);
        if pid == 0 || seen & !WAITERS != pid {
            return false;
        }
        if self
            .word
            .compare_exchange(
                seen,
                OWNER_DIED | WAITERS,
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return false;
        }
        futex_wake_all(&self.word);
        true
    }

    /// Gives the lock back; wakes one waiter if any may sleep.
    pub fn unlock(&self) {
        if self.word.swap(0, Ordering::Release) & WAITERS != 0 {
            futex_wake(&self.word);
        }
    }

    /// A free lock outside any mapping (tests; a zone's lock is its zero-filled header word).
    #[cfg(test)]
    pub fn new() -> OwnerLock {
        OwnerLock {
            word: AtomicU32::new(0),
        }
    }

    /// The holder's id (0: free), for tests.
    #[cfg(test)]
    pub fn holder(&self) -> u32 {
        self.word.load(Ordering::Relaxed) & !WAITERS
    }
}

/// Whether thread `id` still runs. The kernel's answer to a null signal decides whether it
/// exists (it works for any thread id, not only a process's first; "not permitted" means it
/// exists under another user); a zombie still exists for it, so `/proc/<id>/stat` is asked
/// whether it is one, where it can be read. A chrooted worker has no `/proc`: it waits for
/// the watcher's reaping then (the watcher itself has `/proc`, and marks a reaped worker's
/// locks dead before the pid is freed: [`OwnerLock::release_dead`]).
fn is_alive(id: u32) -> bool {
    // SAFETY: signal 0 sends nothing; it only checks that the id exists.
    if unsafe { libc::kill(id as libc::pid_t, 0) } != 0 && last_errno() == libc::ESRCH {
        return false;
    }
    match std::fs::read(format!("/proc/{id}/stat")) {
        // The state is the first field after the command's closing parenthesis (the command
        // itself may hold one).
        Ok(stat) => match stat.iter().rposition(|&b| b == b')') {
            Some(p) => !matches!(stat.get(p + 2), Some(b'Z' | b'X' | b'x')),
            None => true,
        },
        Err(_) => true,
    }
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Sleeps while `word` is `expected`, at most `slice` (less on a wake, a signal or a change).
fn futex_wait(word: &AtomicU32, expected: u32, slice: Duration) {
    let ts = libc::timespec {
        tv_sec: slice.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(slice.subsec_nanos() as i32),
    };
    // SAFETY: the word is a live, aligned u32 (in a shared mapping, so no PRIVATE flag: the
    // key is the page, the same in every process); the kernel only reads it and sleeps while
    // it equals `expected`, at most `ts`. EAGAIN, EINTR and ETIMEDOUT all just mean "look
    // again", which the caller's loop does.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

fn futex_wake(word: &AtomicU32) {
    futex_wake_n(word, 1);
}

fn futex_wake_all(word: &AtomicU32) {
    futex_wake_n(word, i32::MAX as u32);
}

fn futex_wake_n(word: &AtomicU32, n: u32) {
    // SAFETY: as in futex_wait; a wake touches no memory and wakes at most `n` sleepers.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            n,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

thread_local! {
    /// This thread's id, read once (`gettid` is a system call); 0 until then.
    static THREAD_ID: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// This thread's id. A forked child's thread inherits its parent's cache, so a fork handler
/// clears it (registered with the first id read, before any fork could copy it).
pub(super) fn thread_id() -> u32 {
    THREAD_ID.with(|c| {
        let id = c.get();
        if id != 0 {
            return id;
        }
        static AT_FORK: std::sync::Once = std::sync::Once::new();
        AT_FORK.call_once(|| {
            // SAFETY: registers a plain function for the child side of fork; it only writes
            // this thread's (the child's only thread's) cache.
            unsafe { libc::pthread_atfork(None, None, Some(forget_thread_id)) };
        });
        // SAFETY: gettid has no preconditions.
        let id = unsafe { libc::gettid() } as u32;
        c.set(id);
        id
    })
}

extern "C" fn forget_thread_id() {
    THREAD_ID.with(|c| c.set(0));
}
