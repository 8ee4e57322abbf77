//! A response on its way out: head bytes, then file ranges with sendfile and in-memory parts.

use super::bufs::Bufs;
use crate::reply::Body;
use crate::transport::Stream;
use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::rc::Rc;

/// The largest sendfile call.
const SENDFILE_CHUNK: usize = 1 << 20;
/// The most body bytes one run of a connection sends before it yields (`Conn::run_inner`
/// counts across its flushes and passes what is left as each flush's budget): a client that
/// reads as fast as the worker sends (loopback, a fast LAN) never fills its socket, so
/// without a bound one large file would be sent in a single pass while the others wait.
pub const PASS_BUDGET: u64 = 8 << 20;
/// The largest read of a file range for a stream that cannot take `sendfile`.
const COPY_CHUNK: usize = 16 * 1024;

enum Part {
    Bytes(Vec<u8>),
    Range {
        offset: u64,
        len: u64,
    },
    /// A file being compressed as it goes (read, coded and queued a chunk at a time); kept
    /// here rather than in a field of its own, so a connection stays small.
    Coded(Box<crate::compress::stream::FileCoder>),
}

/// What a flush achieved.
#[derive(Debug, PartialEq, Eq)]
pub enum Flush {
    /// Everything queued has been sent.
    Done,
    /// The socket is full; wait for a writable event.
    Blocked,
    /// The pass's budget is spent with the socket still writable: run again after the
    /// worker's other connections (no writable event will come for it).
    Yield,
}

/// The output queue of one connection (reused across its requests).
#[derive(Default)]
pub struct Out {
    buf: Vec<u8>,
    pos: usize,
    file: Option<Rc<File>>,
    offset: u64,
    left: u64,
    parts: VecDeque<Part>,
    /// Body bytes sent for the current response (for the access log).
    pub body_sent: u64,
    /// Head bytes at the front of `buf[pos..]` not yet sent (not counted as body).
    head_left: usize,
    /// Chunk framing queued as body (sizes, CRLFs, the last chunk), which the access log and
    /// the scoreboard leave out, as nginx's `$body_bytes_sent` does.
    framing: u64,
}

impl Out {
    /// Whether anything is still queued.
    pub fn pending(&self) -> bool {
        self.pos < self.buf.len() || self.left > 0 || !self.parts.is_empty()
    }

    /// The head buffer to write a new response head into (cleared, unless an interim response
    /// is still queued in front of it); one is taken from `bufs` when none is held.
    pub fn start(&mut self, bufs: &mut Bufs) -> &mut Vec<u8> {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
            self.head_left = 0;
        }
        if self.buf.capacity() == 0 {
            self.buf = bufs.take_bytes();
        }
        self.file = None;
        self.left = 0;
        self.parts.clear();
        self.body_sent = 0;
        self.framing = 0;
        &mut self.buf
    }

    /// Gives the buffers back once everything was sent, so an idle connection holds none.
    /// `body_sent` stays for the access log.
    pub fn release_if_done(&mut self, bufs: &mut Bufs) {
        if self.pending() {
            return;
        }
        self.pos = 0;
        self.head_left = 0;
        self.file = None;
        bufs.give_bytes(std::mem::take(&mut self.buf));
        if self.parts.capacity() > 0 {
            self.parts = VecDeque::new();
        }
    }

    /// Drops whatever is queued (the connection closes) and gives the buffers back.
    pub fn drop_all(&mut self, bufs: &mut Bufs) {
        self.buf.clear();
        self.left = 0;
        self.parts.clear();
        self.release_if_done(bufs);
    }

    /// Whether a buffer is held.
    pub fn holds_buffer(&self) -> bool {
        self.buf.capacity() > 0 || self.parts.capacity() > 0
    }

    /// Bytes queued in memory and not yet sent.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Queues head bytes (a head written with `start` is counted by `set_body`; this is for
    /// an interim `100 Continue` or a head that follows one).
    pub fn push_head(&mut self, bytes: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(bytes);
        self.head_left += bytes.len();
    }

    /// Queues chunk framing: sent as body, not counted as body bytes.
    pub fn push_framing(&mut self, bytes: &[u8]) {
        self.framing += bytes.len() as u64;
        self.push_body(bytes);
    }

    /// Body bytes sent without the chunk framing (framing is counted when queued, so a
    /// response cut short may be under-counted by the framing of its unsent tail).
    pub fn payload_sent(&self) -> u64 {
        self.body_sent.saturating_sub(self.framing)
    }

    /// Counts body bytes the handler wrote to the client's stream itself (a proxy tunnel's
    /// splice), so the access log and the scoreboard see them.
    pub fn sent_beside(&mut self, n: u64) {
        self.body_sent += n;
    }

    /// Queues body bytes.
    pub fn push_body(&mut self, bytes: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(bytes);
    }

    fn compact(&mut self) {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos >= 64 * 1024 && self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
    }

    /// Queues `body` after the head written since `start`.
    pub fn set_body(&mut self, body: Body) {
        self.head_left = self.buf.len() - self.pos;
        match body {
            Body::Empty => {}
            Body::Bytes(b) => self.buf.extend_from_slice(&b),
            Body::Shared { bytes, offset, len } => {
                self.buf.extend_from_slice(&bytes[offset..offset + len])
            }
            Body::File { file, offset, len } => {
                self.file = Some(file);
                self.offset = offset;
                self.left = len;
            }
            Body::Multipart {
                file,
                parts,
                trailer,
            } => {
                self.file = Some(file);
                for (head, r) in parts {
                    self.parts.push_back(Part::Bytes(head));
                    self.parts.push_back(Part::Range {
                        offset: r.start,
                        len: r.end - r.start + 1,
                    });
                }
                self.parts.push_back(Part::Bytes(trailer));
            }
            Body::Coded(c) => self.parts.push_back(Part::Coded(c)),
        }
    }

    /// Sends as much as the stream takes, up to `budget` body bytes.
    pub fn flush(&mut self, stream: &mut Stream, budget: u64) -> io::Result<Flush> {
        let start = self.body_sent;
        loop {
            if self.body_sent - start >= budget && self.pending() {
                return Ok(Flush::Yield);
            }
            if self.pos < self.buf.len() {
                // MSG_MORE lets the kernel put the head and the start of the file in one
                // segment; the sendfile that follows ends the cork.
                let more = self.left > 0 || !self.parts.is_empty();
                match stream.send(&self.buf[self.pos..], more) {
                    Ok(n) => {
                        self.pos += n;
                        let head = n.min(self.head_left);
                        self.head_left -= head;
                        self.body_sent += (n - head) as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flush::Blocked),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            } else if self.left > 0 {
                let Some(file) = &self.file else {
                    return Err(io::Error::from_raw_os_error(libc::EBADF));
                };
                let count = self.left.min(SENDFILE_CHUNK as u64) as usize;
                let sent = if stream.can_sendfile() {
                    stream.sendfile(file, self.offset, count)
                } else {
                    copy_range(stream, file, self.offset, count)
                };
                match sent {
                    // The file shrank under us: the client must see the truncation.
                    Ok(0) => return Err(io::Error::from_raw_os_error(libc::EIO)),
                    Ok(n) => {
                        self.offset += n as u64;
                        self.left -= n as u64;
                        self.body_sent += n as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flush::Blocked),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            } else if let Some(part) = self.parts.pop_front() {
                match part {
                    Part::Bytes(b) => {
                        self.buf = b;
                        self.pos = 0;
                        self.head_left = 0;
                    }
                    Part::Range { offset, len } => {
                        self.offset = offset;
                        self.left = len;
                    }
                    Part::Coded(c) => self.next_coded(c)?,
                }
            } else {
                self.file = None;
                return Ok(Flush::Done);
            }
        }
    }
}

impl Out {
    /// Queues the coded file's next piece, framed; its end (and last chunk) once it is whole.
    fn next_coded(&mut self, mut c: Box<crate::compress::stream::FileCoder>) -> io::Result<()> {
        let chunked = c.chunked;
        // An error drops the coder: no last chunk, and closing shows the client the truncation.
        match c.next_piece()? {
            Some(bytes) => {
                if !bytes.is_empty() && chunked {
                    self.push_framing(format!("{:x}\r\n", bytes.len()).as_bytes());
                    self.push_body(&bytes);
                    self.push_framing(b"\r\n");
                } else if !bytes.is_empty() {
                    self.push_body(&bytes);
                }
                self.parts.push_front(Part::Coded(c));
            }
            None if chunked => self.push_framing(b"0\r\n\r\n"),
            None => {}
        }
        Ok(())
    }
}

/// Sends a file range through user space, for streams that cannot take `sendfile`: what the
/// stream does not take is read again on the next call.
fn copy_range(stream: &mut Stream, file: &File, offset: u64, count: usize) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut chunk = vec![0u8; count.min(COPY_CHUNK)];
    let n = file.read_at(&mut chunk, offset)?;
    if n == 0 {
        return Ok(0);
    }
    stream.send(&chunk[..n], n < count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_flush_yields_once_its_budget_is_spent_and_the_next_one_goes_on() {
        // A file of three sendfile chunks to a client that reads as fast as it can: a pass
        // stops at its budget with the socket still writable, and nothing is lost or repeated.
        let len = 3 * SENDFILE_CHUNK;
        let data: Vec<u8> = (0..len as u32).map(|i| (i % 251) as u8).collect();
        let path = std::env::temp_dir().join(format!("luahttpd-out-{}", std::process::id()));
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&data)
            .unwrap();
        let file = Rc::new(File::open(&path).unwrap());
        std::fs::remove_file(&path).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut client = client;
            client.read_to_end(&mut got).unwrap();
            got
        });
        let mut a = Stream::Tcp(mio::net::TcpStream::from_std(server));
        let mut out = Out::default();
        out.push_head(b"HTTP/1.1 200 OK\r\n\r\n");
        out.set_body(Body::File {
            file,
            offset: 0,
            len: len as u64,
        });
        // Small against the socket's buffer, so a pass reaches it before the socket is full
        // even on a loaded machine.
        let budget = 64 * 1024;
        let mut yields = 0;
        loop {
            let before = out.body_sent;
            match out.flush(&mut a, budget).unwrap() {
                Flush::Done => break,
                Flush::Yield => {
                    yields += 1;
                    assert!(
                        out.body_sent - before >= budget,
                        "yielded before the budget"
                    );
                }
                Flush::Blocked => std::thread::sleep(std::time::Duration::from_millis(1)),
            }
        }
        assert!(yields >= 1, "a fast reader never made a pass yield");
        assert_eq!(out.body_sent, len as u64);
        drop(a);
        let got = reader.join().unwrap();
        assert_eq!(&got[..19], b"HTTP/1.1 200 OK\r\n\r\n");
        assert!(
            got[19..] == data[..],
            "nothing lost or repeated across the yields"
        );
    }
}
