//! Requests in flight per backend address, counted per worker: one row of counters per worker
//! slot, one counter per proc slot, after the restart gate.
//!
//! A single summed counter per address cannot tell whose requests it holds: a worker killed
//! in the middle of a request (the route backstop, the OOM killer, an operator's SIGKILL)
//! never counts its requests down, and the address shows them in flight for good (the REPL's
//! `backends()` and its `drain`/`enable` answers, the status page's `*_active` gauges). Here
//! each worker writes only its own row, the watcher zeroes a row when it retires the worker's
//! slot, and a reader sums the column. Rows are padded to 64 bytes, so one worker's in-flight
//! counts never share a cache line with another's (the slot's `total` still is shared).
//!
//! A reload that makes a slot stand for another address resets the slot's other figures; the
//! counts stay, since each is given back by the worker that took it: a draining worker's
//! requests to the old address show against the new one until they end.

use super::{ProcSnapshot, Scoreboard};
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

/// Bytes of one row: a u32 per proc slot, rounded up to a cache line.
fn row_len(proc_slots: usize) -> Option<usize> {
    proc_slots.checked_mul(4)?.checked_next_multiple_of(64)
}

/// Bytes of the counters for `worker_slots` workers and `proc_slots` procs.
pub(super) fn active_len(worker_slots: usize, proc_slots: usize) -> Option<usize> {
    worker_slots.checked_mul(row_len(proc_slots)?)
}

impl Scoreboard {
    /// Worker slot `w`'s counters, one per proc slot (empty outside the region).
    fn active_row(&self, w: usize) -> &[AtomicU32] {
        let Some(len) = row_len(self.proc_slots) else {
            return &[];
        };
        if w >= self.worker_slots {
            return &[];
        }
        let at = self.active_at() + w * len;
        // SAFETY: `new` mapped `active_len` bytes from `active_at` (a multiple of 64 from the
        // page-aligned base, so the u32s are aligned); row `w` < worker_slots lies inside them,
        // the counters are atomics valid for any bytes (zero: nothing in flight), and the
        // region outlives the borrow of `self`.
        unsafe {
            std::slice::from_raw_parts(
                self.base.as_ptr().add(at).cast::<AtomicU32>(),
                self.proc_slots,
            )
        }
    }

    /// Worker side: worker slot `w` sends a request to the address of proc slot `p` (its
    /// `total` counts it too). Pair it with [`Scoreboard::proc_finished`].
    #[inline]
    pub fn proc_started(&self, w: usize, p: usize) {
        if let Some(c) = self.active_row(w).get(p) {
            c.fetch_add(1, Relaxed);
        }
        if let Some(slot) = self.proc(p) {
            slot.counted();
        }
    }

    /// Worker side: a request worker slot `w` sent to proc slot `p` ended (stops at 0 if
    /// unpaired).
    #[inline]
    pub fn proc_finished(&self, w: usize, p: usize) {
        if let Some(c) = self.active_row(w).get(p) {
            let _ = c.fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(1)));
        }
    }

    /// Requests in flight to proc slot `p`'s address, all live workers together.
    pub fn proc_active(&self, p: usize) -> u32 {
        (0..self.worker_slots)
            .filter_map(|w| self.active_row(w).get(p))
            .fold(0u32, |n, c| n.saturating_add(c.load(Relaxed)))
    }

    /// Proc slot `p` as the REPL and the status page show it: its figures, with `active`
    /// summed over the workers.
    pub fn proc_snapshot(&self, p: usize, now_ms: u64) -> Option<ProcSnapshot> {
        let mut snap = self.proc(p)?.snapshot(now_ms);
        snap.active = self.proc_active(p);
        Some(snap)
    }

    /// Watcher, once worker slot `w`'s process was reaped: nothing of it is in flight.
    pub(super) fn clear_active(&self, w: usize) {
        for c in self.active_row(w) {
            c.store(0, Relaxed);
        }
    }

    /// Where the counters start: after the gate, on a cache line.
    fn active_at(&self) -> usize {
        let gate = super::proc_gate::gate_len(self.worker_slots, self.proc_slots).unwrap_or(0);
        (self.gate_at() + gate).next_multiple_of(64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::scoreboard::Totals;

    #[test]
    fn each_worker_counts_its_own_and_a_retired_one_counts_nothing() {
        let b = Scoreboard::new(3, 20).unwrap();
        b.proc_started(0, 17);
        b.proc_started(0, 17);
        b.proc_started(2, 17);
        b.proc_started(1, 3);
        assert_eq!(b.proc_active(17), 3);
        assert_eq!(b.proc_active(3), 1);
        assert_eq!(b.proc_active(16), 0, "the neighbour is untouched");
        assert_eq!(b.proc(17).unwrap().snapshot(0).total, 3);
        b.proc_finished(0, 17);
        assert_eq!(b.proc_snapshot(17, 0).unwrap().active, 2);
        // Worker 2 is killed with its request in flight.
        b.retire(2, &mut Totals::default(), 0);
        assert_eq!(b.proc_active(17), 1, "the killed worker's request is gone");
        assert_eq!(b.proc_active(3), 1, "the other workers' rows stay");
        b.proc_finished(0, 17);
        b.proc_finished(0, 17);
        assert_eq!(b.proc_active(17), 0, "an unpaired end stops at 0");
        assert_eq!(b.proc_snapshot(17, 0).unwrap().total, 3);
    }

    #[test]
    fn outside_the_region_nothing_is_counted() {
        let b = Scoreboard::new(1, 2).unwrap();
        b.proc_started(0, 2);
        b.proc_started(1, 0);
        b.proc_finished(5, 9);
        assert_eq!(
            (b.proc_active(0), b.proc_active(1), b.proc_active(2)),
            (0, 0, 0)
        );
        assert!(b.proc_snapshot(2, 0).is_none());
        let none = Scoreboard::new(2, 0).unwrap();
        none.proc_started(0, 0);
        assert_eq!(none.proc_active(0), 0);
    }

    #[test]
    fn rows_lie_on_their_own_cache_lines_inside_the_mapping() {
        for (w, p) in [(1, 1), (2, 15), (2, 16), (4, 17), (3, 300)] {
            let b = Scoreboard::new(w, p).unwrap();
            for r in 0..w {
                let row = b.active_row(r);
                assert_eq!(row.len(), p);
                let at = row.as_ptr() as usize - b.base.as_ptr() as usize;
                assert_eq!(at % 64, 0, "row {r} of ({w}, {p})");
                assert!(at + p * 4 <= b.mapped_len(), "row {r} of ({w}, {p})");
            }
            // The last gate word ends before the first row.
            let gate_end = b.gate_at() + super::super::proc_gate::gate_len(w, p).unwrap();
            assert!(b.active_at() >= gate_end);
        }
    }
}
