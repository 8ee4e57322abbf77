//! The listeners a worker accepts on, TCP or Unix; what they give is a [`Stream`].

use crate::transport::{ip_text, Stream};
use mio::{Interest, Registry, Token};
use std::io;
use std::net::SocketAddr;

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
    Peer {
        ip: ip_text(&addr),
        port: addr.port(),
    }
}
