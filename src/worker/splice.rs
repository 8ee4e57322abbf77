//! Zero-copy forwarding for proxy tunnels: bytes move from the upstream socket into a pipe
//! and from the pipe to the client socket with `splice(2)`, never through user space.

use nix::errno::Errno;
use nix::fcntl::{splice, OFlag, SpliceFFlags};
use std::io;
use std::os::fd::{AsFd, OwnedFd};

/// Most bytes moved by one splice call (the default pipe capacity).
const CHUNK: usize = 64 * 1024;

/// A pipe and how many bytes it holds.
pub struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
    held: usize,
}

/// What one move achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moved {
    /// This many bytes.
    Bytes(usize),
    /// The source had nothing (or the destination no room) now.
    WouldBlock,
    /// The source reached its end.
    Eof,
}

impl Pipe {
    /// A non-blocking pipe (closed on exec).
    pub fn new() -> io::Result<Pipe> {
        let (r, w) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        Ok(Pipe { r, w, held: 0 })
    }

    /// Bytes in the pipe, not yet passed on.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Moves what `src` has (up to the pipe's room) into the pipe.
    pub fn fill_from(&mut self, src: &impl AsFd) -> io::Result<Moved> {
        let flags = SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE;
        loop {
            return match splice(src.as_fd(), None, self.w.as_fd(), None, CHUNK, flags) {
                Ok(0) => Ok(Moved::Eof),
                Ok(n) => {
                    self.held += n;
                    Ok(Moved::Bytes(n))
                }
                Err(Errno::EAGAIN) => Ok(Moved::WouldBlock),
                Err(Errno::EINTR) => continue,
                Err(e) => Err(e.into()),
            };
        }
    }

    /// Moves what the pipe holds to `dst`, as far as `dst` takes it.
    pub fn drain_to(&mut self, dst: &impl AsFd) -> io::Result<Moved> {
        let flags = SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE;
        let mut moved = 0;
        while self.held > 0 {
            match splice(self.r.as_fd(), None, dst.as_fd(), None, self.held, flags) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.held -= n;
                    moved += n;
                }
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(if moved > 0 {
            Moved::Bytes(moved)
        } else {
            Moved::WouldBlock
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    #[test]
    fn bytes_cross_from_one_socket_to_another_through_the_pipe() {
        let (mut up_peer, up) = UnixStream::pair().unwrap();
        let (client, mut client_peer) = UnixStream::pair().unwrap();
        up.set_nonblocking(true).unwrap();
        client.set_nonblocking(true).unwrap();
        let mut p = Pipe::new().unwrap();
        assert_eq!(p.fill_from(&up).unwrap(), Moved::WouldBlock);
        up_peer.write_all(b"frame one").unwrap();
        assert_eq!(p.fill_from(&up).unwrap(), Moved::Bytes(9));
        assert_eq!(p.held(), 9);
        assert_eq!(p.drain_to(&client).unwrap(), Moved::Bytes(9));
        assert_eq!(p.held(), 0);
        let mut buf = [0u8; 9];
        client_peer.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"frame one");
        drop(up_peer);
        assert_eq!(p.fill_from(&up).unwrap(), Moved::Eof);
    }
}
