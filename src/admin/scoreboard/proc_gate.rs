//! The restart gate of spawned FastCGI processes: how the watcher stops a php-cgi for a
//! reload without cutting a request that a worker is just beginning on it.
//!
//! php-cgi (PHP_FCGI_CHILDREN=0) dies on SIGTERM with the request it runs. A count of
//! requests in flight read by the watcher before its kill leaves a window: a worker can begin
//! a request between the read and the signal. So the gate is a Dekker pair in the shared
//! region, after the proc slots:
//!
//! ```text
//! closed:  one bit per proc slot                 (the watcher sets and clears it)
//! holds:   one row per worker slot, one bit per proc slot (each worker its own row)
//! ```
//!
//! A worker sets its hold bit, then reads the closed bit: closed → it takes its hold back and
//! waits. The watcher sets the closed bit, then reads every worker's hold bit: none set → the
//! process runs nothing of ours and gets nothing new, so it may be stopped. Both sides' store
//! and load are `SeqCst`, so at least one of them sees the other's store: a request is never
//! begun on a process being stopped. A hold is one bit per worker because a worker sends a
//! spawned process one request at a time. A reaped worker's row is cleared with its slot
//! (`Scoreboard::retire`), so a killed worker's request never keeps the gate shut (what a
//! summed count cannot tell). The process stays closed until it has been reaped; requests
//! connecting after that wait in the listen queue the watcher keeps for its successor.

use super::Scoreboard;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

/// Bytes of the gate for a region of `worker_slots` workers and `proc_slots` procs.
pub(super) fn gate_len(worker_slots: usize, proc_slots: usize) -> Option<usize> {
    worker_slots
        .checked_add(1)?
        .checked_mul(words(proc_slots))?
        .checked_mul(8)
}

/// 64-bit words per row.
fn words(proc_slots: usize) -> usize {
    proc_slots.div_ceil(64)
}

impl Scoreboard {
    /// Row `row` of the gate: 0 is `closed`, 1 + w worker slot w's holds.
    fn gate_row(&self, row: usize) -> &[AtomicU64] {
        let n = words(self.proc_slots);
        let rows = self.worker_slots + 1;
        if row >= rows {
            return &[];
        }
        let at = self.gate_at() + row * n * 8;
        // SAFETY: the gate lies inside the mapping (`new` counted `gate_len` bytes after the
        // proc slots, whose end is a multiple of 64 from the page-aligned base, so the words
        // are aligned; the in-flight rows follow it), row `row` < rows lies inside it, the
        // words are atomics valid for any bytes (zero: open, not held) and the region outlives
        // the borrow of `self`.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(at).cast::<AtomicU64>(), n) }
    }

    /// Worker side: worker slot `w` takes proc `p` for a request unless the watcher closed it
    /// for a restart; whether it did. Pair each `true` with [`Scoreboard::release_proc`].
    pub fn hold_proc(&self, w: usize, p: usize) -> bool {
        let (Some(hold), Some(closed)) = (self.bit(1 + w, p), self.bit(0, p)) else {
            return true;
        };
        hold.0.fetch_or(hold.1, SeqCst);
        if closed.0.load(SeqCst) & closed.1 == 0 {
            return true;
        }
        hold.0.fetch_and(!hold.1, SeqCst);
        false
    }

    /// Worker side: the request worker slot `w` held proc `p` for ended.
    pub fn release_proc(&self, w: usize, p: usize) {
        if let Some((word, mask)) = self.bit(1 + w, p) {
            word.fetch_and(!mask, SeqCst);
        }
    }

    /// Watcher: closes proc `p` to new requests (again, if it was); whether no worker holds
    /// it now, i.e. the process may be stopped. A proc outside the region has no gate: true.
    pub fn close_proc(&self, p: usize) -> bool {
        let Some((word, mask)) = self.bit(0, p) else {
            return true;
        };
        word.fetch_or(mask, SeqCst);
        (0..self.worker_slots).all(|w| {
            self.bit(1 + w, p)
                .is_none_or(|(hold, mask)| hold.load(SeqCst) & mask == 0)
        })
    }

    /// Watcher: opens proc `p` again (its process was replaced).
    pub fn open_proc(&self, p: usize) {
        if let Some((word, mask)) = self.bit(0, p) {
            word.fetch_and(!mask, SeqCst);
        }
    }

    /// How many workers hold proc `p`.
    #[cfg(test)]
    fn proc_holders(&self, p: usize) -> u32 {
        (0..self.worker_slots)
            .filter(|&w| {
                self.bit(1 + w, p)
                    .is_some_and(|(hold, mask)| hold.load(SeqCst) & mask != 0)
            })
            .count() as u32
    }

    /// Watcher, once worker slot `w`'s process was reaped: it holds nothing any more.
    pub(super) fn clear_holds(&self, w: usize) {
        for word in self.gate_row(1 + w) {
            word.store(0, SeqCst);
        }
    }

    /// Proc `p`'s word and mask in gate row `row`, if both exist.
    fn bit(&self, row: usize, p: usize) -> Option<(&AtomicU64, u64)> {
        if p >= self.proc_slots {
            return None;
        }
        Some((self.gate_row(row).get(p / 64)?, 1u64 << (p % 64)))
    }

    /// Where the gate starts: after the proc slots.
    pub(super) fn gate_at(&self) -> usize {
        super::SLOTS_AT
            + self.worker_slots * super::WORKER_SLOT_SIZE
            + self.proc_slots * super::PROC_SLOT_SIZE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::scoreboard::Totals;

    #[test]
    fn a_closed_proc_is_not_taken_and_a_held_one_is_not_idle() {
        let b = Scoreboard::new(3, 70).unwrap();
        assert!(b.hold_proc(0, 69), "open: taken");
        assert!(!b.close_proc(69), "held by worker 0: not idle");
        assert!(!b.hold_proc(1, 69), "closed: refused");
        b.release_proc(0, 69);
        assert!(
            b.close_proc(69),
            "released, and the refusal took its hold back"
        );
        // Other procs, and the same proc's neighbours in the word, are not affected.
        assert!(b.hold_proc(1, 5));
        assert!(b.hold_proc(2, 68));
        assert!(b.close_proc(69));
        b.open_proc(69);
        assert!(b.hold_proc(1, 69), "open again");
        assert!(!b.close_proc(69));
    }

    #[test]
    fn a_reaped_worker_holds_nothing() {
        let b = Scoreboard::new(2, 4).unwrap();
        assert!(b.hold_proc(1, 3) && b.hold_proc(0, 3));
        assert_eq!(b.proc_holders(3), 2);
        assert_eq!(b.proc_holders(2), 0);
        b.release_proc(0, 3);
        assert!(!b.close_proc(3));
        b.retire(1, &mut Totals::default(), 0);
        assert!(
            b.close_proc(3),
            "the killed worker's hold went with its slot"
        );
        assert_eq!(b.proc_holders(3), 0);
    }

    #[test]
    fn outside_the_region_there_is_no_gate() {
        let b = Scoreboard::new(1, 2).unwrap();
        assert!(b.close_proc(2));
        assert!(b.hold_proc(0, 2), "no such proc: never refused");
        assert!(b.hold_proc(5, 1), "no such worker slot: never refused");
        let none = Scoreboard::new(1, 0).unwrap();
        assert!(none.hold_proc(0, 0) && none.close_proc(0));
    }

    /// The Dekker pair under contention, across a fork as in the server: a child takes and
    /// releases the proc in a loop, counting itself in the proc's `active` while it holds
    /// it; the parent closes the proc and, each time it finds it idle, checks that no request
    /// is begun while it stays closed.
    #[test]
    fn no_request_begins_on_a_proc_found_idle() {
        let b = Scoreboard::new(2, 1).unwrap();
        // SAFETY: the child only uses atomics in the shared mapping and the clock, then
        // `_exit`s: nothing that needs a lock another thread of the test harness may hold.
        let child = unsafe { libc::fork() };
        assert!(child >= 0, "fork");
        if child == 0 {
            let end = std::time::Instant::now() + std::time::Duration::from_millis(300);
            let mut begun = 0u32;
            while std::time::Instant::now() < end {
                if b.hold_proc(1, 0) {
                    b.proc_started(1, 0);
                    begun += 1;
                    b.proc_finished(1, 0);
                    b.release_proc(1, 0);
                }
            }
            // SAFETY: ends the forked child at once, without running the parent's atexit work.
            unsafe { libc::_exit(if begun > 0 { 0 } else { 3 }) };
        }
        let mut idle_found = 0u32;
        let mut status = 0;
        // SAFETY: waits for our own child, with a valid pointer for its status.
        while unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) } == 0 {
            if b.close_proc(0) {
                idle_found += 1;
                for _ in 0..50 {
                    assert_eq!(b.proc_active(0), 0, "a request began on a closed proc");
                }
            }
            b.open_proc(0);
        }
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "{status}"
        );
        assert!(idle_found > 0);
    }
}
