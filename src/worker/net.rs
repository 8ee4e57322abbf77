//! The listeners a worker accepts on, TCP or Unix; what they give is a [`Stream`].

use super::peer::{Peer, PeerIp};
use crate::transport::Stream;
use mio::{Registry, Token};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

/// A listening socket inherited from the watcher.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(mio::net::TcpListener),
    /// Unix stream.
    Unix(mio::net::UnixListener),
}

impl Listener {
    /// Sets what every accepted connection inherits: TCP_NODELAY, because responses are
    /// written whole (head, then body with sendfile) and Nagle would only delay the last
    /// segment of each one. Linux copies the option to each socket `accept` returns, which
    /// saves a `setsockopt` per connection.
    pub fn prepare(&self) -> io::Result<()> {
        if let Listener::Tcp(l) = self {
            nix::sys::socket::setsockopt(l, nix::sys::socket::sockopt::TcpNoDelay, &true)?;
        }
        Ok(())
    }

    /// Accepts one connection.
    pub fn accept(&self) -> io::Result<(Stream, Peer)> {
        match self {
            Listener::Tcp(l) => {
                // TCP_NODELAY comes from the listener (see `prepare`): no call per connection.
                let (s, addr) = l.accept()?;
                Ok((Stream::Tcp(s), peer_of(addr)))
            }
            Listener::Unix(l) => {
                let (s, _) = l.accept()?;
                Ok((
                    Stream::Unix(s),
                    Peer {
                        ip: PeerIp::from("unix"),
                        port: 0,
                    },
                ))
            }
        }
    }

    /// Registers for readable events, edge-triggered and exclusive: when a connection
    /// arrives on a listener every worker shares, the kernel wakes one waiting worker
    /// (EPOLLEXCLUSIVE) instead of all of them, so the others neither wake for nothing nor
    /// take a connection from the one already awake.
    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLET | libc::EPOLLEXCLUSIVE) as u32,
            // mio reads the token back from this field (its epoll selector does the same).
            u64: token.0 as u64,
        };
        let fd = self.raw_fd();
        // SAFETY: both descriptors are open for the duration of the call (the registry's epoll
        // descriptor lives as long as the registry; the listener's as long as `self`), and
        // `event` is a valid, initialised epoll_event the kernel only reads.
        let rc =
            unsafe { libc::epoll_ctl(registry.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Stops events. Done with epoll_ctl directly, like `register` (mio's own deregister
    /// refuses, in debug builds, a source it did not register itself).
    pub fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        // SAFETY: both descriptors are open for the duration of the call; EPOLL_CTL_DEL reads
        // no event (a null pointer is allowed since Linux 2.6.9).
        let rc = unsafe {
            libc::epoll_ctl(
                registry.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                self.raw_fd(),
                std::ptr::null_mut(),
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l) => l.as_raw_fd(),
        }
    }

    /// The address as bound (the kernel's port when the config said 0), as text.
    pub fn name(&self) -> String {
        match self {
            Listener::Tcp(l) => l.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            Listener::Unix(l) => match l.local_addr() {
                Ok(a) => match a.as_pathname() {
                    Some(p) => format!("unix:{}", p.display()),
                    None => "unix:".to_string(),
                },
                Err(_) => "unix:".to_string(),
            },
        }
    }
}

fn peer_of(addr: SocketAddr) -> Peer {
    Peer {
        ip: PeerIp::of(&addr),
        port: addr.port(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{getsockopt, sockopt::TcpNoDelay};

    #[test]
    fn accepted_connections_inherit_nodelay_from_the_listener() {
        let std_l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = std_l.local_addr().unwrap();
        std_l.set_nonblocking(true).unwrap();
        let l = Listener::Tcp(mio::net::TcpListener::from_std(std_l));
        l.prepare().unwrap();
        let _client = std::net::TcpStream::connect(addr).unwrap();
        let accepted = loop {
            match l.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("accept: {e}"),
            }
        };
        assert!(getsockopt(&accepted, TcpNoDelay).unwrap());
    }
}
