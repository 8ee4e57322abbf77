//! The byte streams the worker talks over, client connections and backend connections alike.
//!
//! [`Stream`] hides which kind of socket carries the bytes: code above it reads, writes, shuts
//! down, polls and asks whether file bytes may go out with `sendfile`, and never matches on the
//! variant. A TLS stream is one more variant (crate::tls::TlsStream): while rustls encrypts it
//! answers `false` to [`Stream::can_sendfile`] and encrypts in `send`, which may take bytes and
//! still say WouldBlock: a caller offers the same bytes again after a WouldBlock (`worker::out`
//! does). Once the kernel encrypts (kTLS) it takes `sendfile` as a plain socket does.

use crate::config::ListenAddr;
use mio::event::Source;
use mio::{Interest, Registry, Token};
use nix::sys::socket::{send, MsgFlags};
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
// Without the `tls` feature the TLS variant holds an uninhabited stand-in (tls/absent.rs).
#[cfg(not(feature = "tls"))]
use crate::tls as rustls;

/// A connected, non-blocking byte stream.
#[derive(Debug)]
pub enum Stream {
    /// TCP.
    Tcp(mio::net::TcpStream),
    /// Unix stream.
    Unix(mio::net::UnixStream),
    /// TLS over TCP (client connections on a `tls = true` listener).
    Tls(Box<crate::tls::TlsStream>),
}

impl Stream {
    /// Starts a non-blocking connect to `addr` (finished once writable; see [`Stream::connected`]).
    pub fn connect(addr: &ListenAddr) -> io::Result<Stream> {
        match addr {
            ListenAddr::Tcp(a) => {
                let s = mio::net::TcpStream::connect(*a)?;
                let _ = s.set_nodelay(true);
                Ok(Stream::Tcp(s))
            }
            ListenAddr::Unix(p) => Ok(Stream::Unix(mio::net::UnixStream::connect(p)?)),
        }
    }

    /// Whether a non-blocking connect completed: Ok once the peer accepted, the connect's
    /// error if it failed, `NotConnected` while still under way.
    pub fn connected(&self) -> io::Result<()> {
        let err = match self {
            Stream::Tcp(s) => s.take_error()?,
            Stream::Unix(s) => s.take_error()?,
            Stream::Tls(s) => s.tcp().take_error()?,
        };
        if let Some(e) = err {
            return Err(e);
        }
        // Writable without error can still mean "not yet" on some kernels: peer_addr settles it.
        match self {
            Stream::Tcp(s) => s.peer_addr().map(|_| ()),
            Stream::Unix(_) => Ok(()),
            Stream::Tls(s) => s.tcp().peer_addr().map(|_| ()),
        }
    }

    /// Where a non-blocking connect stands after a writable event: Ok(true) once connected,
    /// the connect's error if it failed, or Ok(false) with `writable` cleared while it is
    /// still under way. A backend socket's writable event can be stale: an idle kept
    /// connection, still registered with a token (`proxy::pool::Upstreams::release_registered`),
    /// wakes whoever holds that token now, so a FastCGI or proxy exchange connecting on it
    /// waits for the next event instead of taking the hint as a connect.
    pub fn connect_progress(&self, writable: &mut bool) -> io::Result<bool> {
        match self.connected() {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                *writable = false;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Whether file bytes may be written to this stream with `sendfile` (false where the bytes
    /// must pass through user space: TLS that rustls encrypts).
    pub fn can_sendfile(&self) -> bool {
        match self {
            Stream::Tls(s) => s.is_kernel(),
            _ => true,
        }
    }

    /// Whether bytes may be moved to and from this stream with `splice` (plain sockets only:
    /// a kTLS socket's reads carry record types that `splice` cannot report).
    pub fn can_splice(&self) -> bool {
        !self.is_tls()
    }

    /// Whether this is a TLS stream (`req.scheme` "https", HTTPS=on).
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// The negotiated TLS version as nginx's `$ssl_protocol` names it (`TLSv1.3`); None on a
    /// plain connection or before the handshake.
    pub fn tls_version(&self) -> Option<&'static str> {
        match self {
            Stream::Tls(s) => s.version().map(|v| match v {
                rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
                rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
                rustls::ProtocolVersion::TLSv1_1 => "TLSv1.1",
                rustls::ProtocolVersion::TLSv1_0 => "TLSv1",
                _ => "TLS",
            }),
            _ => None,
        }
    }

    /// The listener is `proxy_protocol = true`: on TLS, the PROXY header is read in clear
    /// before the handshake (a load balancer sends it ahead of the ClientHello).
    pub fn expect_proxy_header(&mut self) {
        if let Stream::Tls(s) = self {
            s.expect_clear_header();
        }
    }

    /// The start of a plain HTTP request that a TLS listener answered 400 (once; None
    /// otherwise), for its access-log line.
    pub fn take_plain_http_head(&mut self) -> Option<Vec<u8>> {
        match self {
            Stream::Tls(s) => s.take_plain_http_head(),
            _ => None,
        }
    }

    /// Whether a TLS handshake is still to finish (the handshake timeout runs meanwhile).
    pub fn handshaking(&self) -> bool {
        match self {
            Stream::Tls(s) => matches!(
                s.state(),
                crate::tls::stream::State::Fresh | crate::tls::stream::State::Handshaking
            ),
            _ => false,
        }
    }

    /// Writes what a TLS stream holds for the socket (handshake messages, the end of a
    /// record). Ok(true) when nothing waits; plain sockets never hold anything.
    pub fn flush_pending(&mut self) -> io::Result<bool> {
        match self {
            Stream::Tls(s) => s.flush(),
            _ => Ok(true),
        }
    }

    /// Sends from `buf`; `more` tells the kernel more bytes follow at once (MSG_MORE), so a
    /// head and the start of its body can share a segment. Never raises SIGPIPE.
    pub fn send(&mut self, buf: &[u8], more: bool) -> io::Result<usize> {
        if let Stream::Tls(s) = self {
            return s.send(buf, more);
        }
        let mut flags = MsgFlags::MSG_NOSIGNAL;
        if more {
            flags |= MsgFlags::from_bits_retain(libc::MSG_MORE);
        }
        send(self.as_raw_fd(), buf, flags).map_err(io::Error::from)
    }

    /// Sends `count` bytes of `file` from `offset` with `sendfile`; the bytes sent.
    pub fn sendfile(&mut self, file: &File, offset: u64, count: usize) -> io::Result<usize> {
        if !self.can_sendfile() {
            return Err(io::Error::from(io::ErrorKind::Unsupported));
        }
        let mut off = offset as i64;
        nix::sys::sendfile::sendfile(self.as_fd(), file.as_fd(), Some(&mut off), count)
            .map_err(io::Error::from)
    }

    /// Shuts down the sending half (the peer sees EOF after what was sent).
    pub fn shutdown_write(&mut self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Write),
            Stream::Tls(s) => {
                s.shutdown_write();
                Ok(())
            }
        };
    }

    /// The local address (SERVER_ADDR, SERVER_PORT); ("unix", 0) for Unix sockets.
    pub fn local(&self) -> (String, u16) {
        match self {
            Stream::Tcp(s) => match s.local_addr() {
                Ok(a) => (ip_text(&a), a.port()),
                Err(_) => (String::new(), 0),
            },
            Stream::Unix(_) => ("unix".to_string(), 0),
            Stream::Tls(s) => match s.tcp().local_addr() {
                Ok(a) => (ip_text(&a), a.port()),
                Err(_) => (String::new(), 0),
            },
        }
    }

    /// Registers for readable and writable edge-triggered events, once for its whole life.
    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        Source::register(
            self,
            registry,
            token,
            Interest::READABLE | Interest::WRITABLE,
        )
    }

    /// Stops events (before an idle backend connection is pooled).
    pub fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        Source::deregister(self, registry)
    }
}

/// An address's IP as text, IPv4-mapped IPv6 shown as IPv4.
pub fn ip_text(addr: &SocketAddr) -> String {
    match addr.ip() {
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        std::net::IpAddr::V4(v4) => v4.to_string(),
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.send(buf, false)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Source for Stream {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.register(registry, token, interest),
            Stream::Unix(s) => s.register(registry, token, interest),
            Stream::Tls(s) => s.tcp_mut().register(registry, token, interest),
        }
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.reregister(registry, token, interest),
            Stream::Unix(s) => s.reregister(registry, token, interest),
            Stream::Tls(s) => s.tcp_mut().reregister(registry, token, interest),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.deregister(registry),
            Stream::Unix(s) => s.deregister(registry),
            Stream::Tls(s) => s.tcp_mut().deregister(registry),
        }
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
            Stream::Tls(s) => s.tcp().as_raw_fd(),
        }
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
            Stream::Tls(s) => s.tcp().as_fd(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_writes_and_shuts_down_over_a_unix_pair() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        let mut a = Stream::Unix(mio::net::UnixStream::from_std(a));
        let mut b = Stream::Unix(mio::net::UnixStream::from_std(b));
        assert!(a.connected().is_ok());
        assert!(a.can_sendfile());
        assert_eq!(a.send(b"ping", true).unwrap(), 4);
        let mut buf = [0u8; 8];
        assert_eq!(b.read(&mut buf).unwrap(), 4);
        assert_eq!(&buf[..4], b"ping");
        assert_eq!(
            b.read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        a.shutdown_write();
        assert_eq!(b.read(&mut buf).unwrap(), 0);
        assert_eq!(a.local(), ("unix".to_string(), 0));
    }

    /// Polls `connect_progress` until it settles (a loopback connect does at once or nearly).
    fn settle(s: &Stream) -> io::Result<bool> {
        for _ in 0..200 {
            let mut writable = true;
            match s.connect_progress(&mut writable) {
                Ok(false) => {
                    assert!(!writable, "still under way clears writable");
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Ok(true) => {
                    assert!(writable);
                    return Ok(true);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    #[test]
    fn connect_progress_says_connected_or_the_connects_error() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ok = Stream::connect(&ListenAddr::Tcp(l.local_addr().unwrap())).unwrap();
        assert!(settle(&ok).unwrap());
        let gone = l.local_addr().unwrap();
        drop(l);
        // The refusal may come at once or through connect_progress.
        let err = match Stream::connect(&ListenAddr::Tcp(gone)) {
            Ok(refused) => settle(&refused).unwrap_err(),
            Err(e) => e,
        };
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    }
}
