//! A connection's input buffer: lent by the worker (see `bufs.rs`) while unconsumed bytes
//! exist, given back once they are all consumed. Buffers are zeroed once when first
//! allocated, then read into in place, so a read never pays for clearing memory it is about
//! to overwrite.

use super::bufs::Bufs;
use crate::transport::Stream;
use std::io::{self, Read};

/// Unconsumed input bytes live in `buf[start..end]`. The offsets are 32-bit to keep every
/// connection small; a buffer never grows past the `max` of `read_from`, far below 4 GiB.
#[derive(Debug, Default)]
pub struct InBuf {
    buf: Vec<u8>,
    start: u32,
    end: u32,
}

/// What one read achieved.
#[derive(Debug, PartialEq, Eq)]
pub enum Filled {
    /// The peer closed its sending side.
    Eof,
    /// Bytes arrived; `drained` when the read came back short, which means the socket had no
    /// more (an edge-triggered poll reports any later arrival as a new event).
    Data { drained: bool },
    /// The buffer is full at its limit: nothing was read (the socket may still have data).
    Full,
}

impl InBuf {
    /// The unconsumed bytes.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start as usize..self.end as usize]
    }

    /// How many bytes are unconsumed.
    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    /// Whether nothing is unconsumed.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Marks `n` bytes as consumed.
    pub fn consume(&mut self, n: usize) {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        self.start = self.start.saturating_add(n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Drops everything unconsumed.
    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Whether a buffer is held (false when idle: nothing unconsumed and the buffer given back).
    pub fn holds_buffer(&self) -> bool {
        self.buf.capacity() > 0
    }

    /// Gives the buffer back to the worker when nothing in it is unconsumed.
    pub fn release_if_empty(&mut self, bufs: &mut Bufs) {
        if self.is_empty() && self.holds_buffer() {
            self.start = 0;
            self.end = 0;
            bufs.give_input(std::mem::take(&mut self.buf));
        }
    }

    /// Reads once from `stream`, making room first (taking a buffer from `bufs`, moving
    /// unconsumed bytes to the front, or growing the buffer up to `max` bytes).
    pub fn read_from(
        &mut self,
        stream: &mut Stream,
        max: usize,
        bufs: &mut Bufs,
    ) -> io::Result<Filled> {
        if self.buf.is_empty() {
            self.buf = bufs.take_input();
            self.buf.truncate(max.max(1024));
        }
        if self.end as usize == self.buf.len() {
            if self.start > 0 {
                self.buf
                    .copy_within(self.start as usize..self.end as usize, 0);
                self.end -= self.start;
                self.start = 0;
            } else if self.buf.len() < max {
                let new_len = (self.buf.len() * 2).min(max).min(u32::MAX as usize);
                self.buf.resize(new_len, 0);
            }
        }
        let room = &mut self.buf[self.end as usize..];
        if room.is_empty() {
            // Full at the limit: the caller decides (431, or stop reading ahead).
            return Ok(Filled::Full);
        }
        let want = room.len();
        let n = stream.read(room)?;
        if n == 0 {
            return Ok(Filled::Eof);
        }
        // n <= room.len(), so end stays within the buffer (at most u32::MAX bytes).
        self.end += n as u32;
        Ok(Filled::Data { drained: n < want })
    }
}
