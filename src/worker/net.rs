//! The sockets a worker owns: listeners it accepts on and client streams, TCP or Unix.

use mio::event::Source;
use mio::{Interest, Registry, Token};
use std::io::{self, Read};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};

/// A listening socket inherited from the watcher.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(mio::net::TcpListener),
    /// Unix stream.
    Unix(mio::net::UnixListener),
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The client address as text ("unix" for Unix sockets).
    pub ip: String,
    /// The client port (0 for Unix sockets).
    pub port: u16,
}

impl Listener {
    /// Accepts one connection.
    pub fn accept(&self) -> io::Result<(Stream, Peer)> {
        match self {
            Listener::Tcp(l) => {
                let (s, addr) = l.accept()?;
                // Responses are written whole (head, then body with sendfile); Nagle would
                // only delay the last segment of each one.
                let _ = s.set_nodelay(true);
                Ok((Stream::Tcp(s), peer_of(addr)))
            }
            Listener::Unix(l) => {
                let (s, _) = l.accept()?;
                Ok((
                    Stream::Unix(s),
                    Peer {
                        ip: "unix".to_string(),
                        port: 0,
                    },
                ))
            }
        }
    }

    /// Registers for readable events.
    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => registry.register(l, token, Interest::READABLE),
            Listener::Unix(l) => registry.register(l, token, Interest::READABLE),
        }
    }

    /// Stops events.
    pub fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => registry.deregister(l),
            Listener::Unix(l) => registry.deregister(l),
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
    let ip = match addr.ip() {
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        std::net::IpAddr::V4(v4) => v4.to_string(),
    };
    Peer {
        ip,
        port: addr.port(),
    }
}

/// A client connection.
#[derive(Debug)]
pub enum Stream {
    /// TCP.
    Tcp(mio::net::TcpStream),
    /// Unix stream.
    Unix(mio::net::UnixStream),
}

impl Stream {
    /// Reads into `buf`.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }

    /// Shuts down the sending half (the client sees EOF after what was sent).
    pub fn shutdown_write(&self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Write),
        };
    }

    /// Registers for readable and writable edge-triggered events, once for its whole life.
    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        let interest = Interest::READABLE | Interest::WRITABLE;
        match self {
            Stream::Tcp(s) => s.register(registry, token, interest),
            Stream::Unix(s) => s.register(registry, token, interest),
        }
    }
}

impl Stream {
    /// Writes from `buf`.
    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        use std::io::Write;
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    /// Stops events (before an idle backend connection is pooled).
    pub fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => registry.deregister(s),
            Stream::Unix(s) => registry.deregister(s),
        }
    }

    /// The local address (SERVER_ADDR, SERVER_PORT); ("unix", 0) for Unix sockets.
    pub fn local(&self) -> (String, u16) {
        match self {
            Stream::Tcp(s) => match s.local_addr() {
                Ok(a) => (peer_of(a).ip, a.port()),
                Err(_) => (String::new(), 0),
            },
            Stream::Unix(_) => ("unix".to_string(), 0),
        }
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }
}
