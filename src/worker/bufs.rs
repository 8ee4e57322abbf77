//! The worker's free buffers, lent to connections only while they need one.
//!
//! An idle keep-alive connection holds no buffer of its own: a connection takes an input
//! buffer when it reads and gives it back once every byte in it was consumed, and takes a byte
//! buffer for a response head or an access-log line and gives it back when that went out; a
//! FastCGI exchange reads its backend into the worker's one backend buffer. So
//! the memory of buffers follows the connections that are busy at once, not the connections
//! that are open, and a steady stream of requests allocates no buffer (the parsed request and
//! the reply still allocate their own small parts).

/// Length of an input buffer (it is read into in place, so it is kept initialised).
pub const INPUT: usize = 16 * 1024;
/// Length of the buffer backend responses are read into (one per worker).
pub const BACKEND: usize = 32 * 1024;
/// Buffers with more capacity than this are freed instead of kept.
const KEEP_CAPACITY: usize = 64 * 1024;
/// How many free buffers of each kind are kept.
const KEEP_COUNT: usize = 64;

/// Free buffers of one worker.
#[derive(Debug, Default)]
pub struct Bufs {
    /// Input buffers, each `INPUT` bytes long (zeroed once when first allocated).
    input: Vec<Vec<u8>>,
    /// Byte buffers, each empty (length 0) with some capacity.
    bytes: Vec<Vec<u8>>,
    /// The buffer backend responses are read into, `BACKEND` bytes long: decoded into the
    /// client's output as soon as read, so one serves every exchange of the worker.
    backend: Option<Vec<u8>>,
}

impl Bufs {
    /// An input buffer of `INPUT` initialised bytes.
    pub fn take_input(&mut self) -> Vec<u8> {
        self.input.pop().unwrap_or_else(|| vec![0; INPUT])
    }

    /// Gives an input buffer back (its contents are garbage from now on).
    pub fn give_input(&mut self, mut buf: Vec<u8>) {
        if buf.capacity() > KEEP_CAPACITY || self.input.len() >= KEEP_COUNT {
            return;
        }
        // A buffer that grew for a long head is cut back (its capacity stays); one cut short
        // for a small limit is filled again.
        buf.resize(INPUT, 0);
        self.input.push(buf);
    }

    /// An empty byte buffer.
    pub fn take_bytes(&mut self) -> Vec<u8> {
        self.bytes.pop().unwrap_or_default()
    }

    /// Gives a byte buffer back.
    pub fn give_bytes(&mut self, mut buf: Vec<u8>) {
        if buf.capacity() == 0 || buf.capacity() > KEEP_CAPACITY || self.bytes.len() >= KEEP_COUNT {
            return;
        }
        buf.clear();
        self.bytes.push(buf);
    }

    /// The backend read buffer (`BACKEND` initialised bytes); `give_backend` must follow.
    pub fn take_backend(&mut self) -> Vec<u8> {
        self.backend.take().unwrap_or_else(|| vec![0; BACKEND])
    }

    /// Gives the backend read buffer back.
    pub fn give_backend(&mut self, buf: Vec<u8>) {
        if buf.len() == BACKEND {
            self.backend = Some(buf);
        }
    }

    /// How many free buffers are kept (input, bytes).
    #[cfg(test)]
    pub fn free(&self) -> (usize, usize) {
        (self.input.len(), self.bytes.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_reused_and_large_ones_are_freed() {
        let mut b = Bufs::default();
        let mut i = b.take_input();
        assert_eq!(i.len(), INPUT);
        i[0] = 7;
        let ptr = i.as_ptr();
        b.give_input(i);
        let i = b.take_input();
        assert_eq!(i.as_ptr(), ptr, "the same allocation is lent again");
        assert_eq!(i.len(), INPUT);
        b.give_input(i);
        b.give_input(vec![0; KEEP_CAPACITY + 1]);
        assert_eq!(b.free(), (1, 0));

        let mut v = b.take_bytes();
        v.extend_from_slice(b"abc");
        b.give_bytes(v);
        assert_eq!(b.take_bytes(), b"");
        b.give_bytes(Vec::new());
        assert_eq!(
            b.free(),
            (1, 0),
            "a buffer with no capacity is not worth keeping"
        );
    }
}
