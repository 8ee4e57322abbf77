//! Route calls that wait (`sleep`, issue 13): the worker's queue of when to resume them.
//!
//! Each entry names the connection (its slab key) and the suspended call's ticket; when it is
//! due the worker resumes that connection's route, unless the connection closed or moved on
//! (then the call is cancelled). A connection whose client leaves cancels its call at once
//! (`Conn::abort`); the queue entry then finds nothing and goes. The deadlines vary, so this is
//! a heap, not one of the FIFO timer queues.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use crate::script::Ticket;

/// When to resume which waiting route calls; and the `limit_conn` counts each connection's
/// request in flight holds (released when it ends).
#[derive(Default)]
pub struct Wakes {
    heap: BinaryHeap<Reverse<(Instant, usize, Ticket)>>,
    held: std::collections::HashMap<usize, Vec<(String, Vec<u8>)>>,
}

impl Wakes {
    /// Resume `ticket` of the connection at `key` at `at`.
    pub fn push(&mut self, at: Instant, key: usize, ticket: Ticket) {
        self.heap.push(Reverse((at, key, ticket)));
    }

    /// Keeps counts (shared dict name, key) that the request of connection `key` holds.
    pub fn hold(&mut self, key: usize, counts: Vec<(String, Vec<u8>)>) {
        self.held.entry(key).or_default().extend(counts);
    }

    /// The counts the request of connection `key` held, now given back.
    pub fn release(&mut self, key: usize) -> Vec<(String, Vec<u8>)> {
        if self.held.is_empty() {
            return Vec::new();
        }
        self.held.remove(&key).unwrap_or_default()
    }

    /// The next due time.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// An entry due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(usize, Ticket)> {
        match self.heap.peek() {
            Some(Reverse((at, _, _))) if *at <= now => {
                self.heap.pop().map(|Reverse((_, key, t))| (key, t))
            }
            _ => None,
        }
    }
}
