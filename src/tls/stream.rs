//! A TLS server connection over a non-blocking TCP socket: the state machine the event loop
//! drives through [`crate::transport::Stream`] (read, send, flush, shut down).
//!
//! The handshake happens inside `read`: records are read until the socket says EAGAIN, fed to
//! rustls, and its answers written at once; nothing ever blocks. What rustls has to send but
//! the socket does not take waits in rustls until [`TlsStream::flush`] runs on the next
//! writable event.

use rustls::{ServerConfig, ServerConnection};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::Arc;

/// Plaintext encrypted per `send`: one TLS record's worth, so output memory stays bounded.
const PLAIN_CHUNK: usize = 16 * 1024;

/// What nginx answers a plain HTTP request on an HTTPS port (its wording, our Server name is
/// left out on purpose: the answer does not depend on the config).
pub const PLAIN_HTTP_BODY: &str = "<html>\r\n<head><title>400 The plain HTTP request was sent to HTTPS port</title></head>\r\n<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n<center>The plain HTTP request was sent to HTTPS port</center>\r\n</body>\r\n</html>\r\n";

/// At most this much of a plain HTTP request is kept for its access-log line.
const PLAIN_HEAD_KEPT: usize = 4096;

/// Where a TLS connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Accepted, nothing read yet: the first byte tells TLS from plain HTTP.
    Fresh,
    /// A ClientHello arrived; the handshake runs (under `timeouts.handshake`).
    Handshaking,
    /// Application data flows.
    Established,
    /// Plain HTTP was answered with 400, or the peer broke the protocol: only closing is left.
    Failed,
}

/// Why a TLS connection is given up (the io::Error's inner error).
#[derive(Debug, thiserror::Error)]
pub enum TlsFailure {
    /// A plain HTTP request came to a TLS port; it was answered 400.
    #[error("plain HTTP request was sent to HTTPS port")]
    PlainHttp,
    /// The peer's records were not TLS, or the handshake failed.
    #[error("TLS: {0}")]
    Protocol(rustls::Error),
}

/// A server-side TLS connection.
pub struct TlsStream {
    tcp: mio::net::TcpStream,
    tls: ServerConnection,
    state: State,
    /// Plaintext rustls took whose records are not all on the socket yet. `send` said
    /// WouldBlock for it; the caller offers the same bytes again (as `worker::out` does),
    /// and once the records are out they are reported as sent without encrypting them twice.
    unacked: usize,
    /// The socket returned EOF (or the peer sent close_notify).
    eof: bool,
    close_notified: bool,
    /// On a `proxy_protocol` listener: the PROXY header a load balancer sends in clear
    /// before the ClientHello is still to come (see [`TlsStream::read`]).
    clear_header: bool,
    /// The start of a plain HTTP request answered 400, until the connection takes it for
    /// its access-log line (see [`TlsStream::take_plain_http_head`]).
    plain_head: Option<Vec<u8>>,
}

impl std::fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("tcp", &self.tcp)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// Writes records to the socket with MSG_NOSIGNAL (a peer gone away is an error, not SIGPIPE).
struct NoSignal<'a>(&'a mio::net::TcpStream);

impl Write for NoSignal<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        use nix::sys::socket::{send, MsgFlags};
        send(self.0.as_raw_fd(), buf, MsgFlags::MSG_NOSIGNAL).map_err(io::Error::from)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn failure(e: TlsFailure) -> io::Error {
    let kind = match e {
        TlsFailure::PlainHttp => io::ErrorKind::ConnectionAborted,
        TlsFailure::Protocol(_) => io::ErrorKind::InvalidData,
    };
    io::Error::new(kind, e)
}

impl TlsStream {
    /// A fresh server connection on an accepted socket.
    pub fn new(
        tcp: mio::net::TcpStream,
        config: Arc<ServerConfig>,
    ) -> Result<TlsStream, rustls::Error> {
        Ok(TlsStream {
            tcp,
            tls: ServerConnection::new(config)?,
            state: State::Fresh,
            unacked: 0,
            eof: false,
            close_notified: false,
            clear_header: false,
            plain_head: None,
        })
    }

    /// The listener is `proxy_protocol = true`: a PROXY header comes in clear first.
    pub fn expect_clear_header(&mut self) {
        self.clear_header = true;
    }

    /// The TCP socket underneath.
    pub fn tcp(&self) -> &mio::net::TcpStream {
        &self.tcp
    }

    /// The TCP socket underneath, for registration.
    pub fn tcp_mut(&mut self) -> &mut mio::net::TcpStream {
        &mut self.tcp
    }

    /// Where the connection is.
    pub fn state(&self) -> State {
        self.state
    }

    /// The server name the client asked for (SNI), once the ClientHello arrived.
    pub fn server_name(&self) -> Option<&str> {
        self.tls.server_name()
    }

    /// The first bytes (up to 4 KiB) of a plain HTTP request this stream answered with
    /// nginx's 400, once: the connection logs it as nginx does. None on a TLS connection.
    pub fn take_plain_http_head(&mut self) -> Option<Vec<u8>> {
        self.plain_head.take()
    }

    /// The negotiated version, once known.
    pub fn version(&self) -> Option<rustls::ProtocolVersion> {
        self.tls.protocol_version()
    }

    /// Reads plaintext, driving the handshake on the way. Fills `buf` as far as the socket
    /// and rustls allow, so a short read means the socket is drained (as for plain TCP).
    ///
    /// On a PROXY listener the header comes first, in clear: it is handed out as it is (the
    /// connection parses it as on a plain listener), and TLS starts at the byte after it.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.clear_header {
            let (got, whole) = self.read_clear_header(buf)?;
            if !whole {
                return Ok(got);
            }
            // The ClientHello may have come in the same segment: read on, or no readiness
            // edge would ever report it (a short read says the socket is drained).
            return match self.read(&mut buf[got..]) {
                Ok(n) => Ok(got + n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(got),
                Err(e) => Err(e),
            };
        }
        if self.state == State::Fresh {
            self.sniff()?;
        }
        if self.state == State::Failed {
            return Err(io::Error::from(io::ErrorKind::ConnectionAborted));
        }
        let mut filled = 0;
        loop {
            if filled == buf.len() {
                break;
            }
            match self.tls.reader().read(&mut buf[filled..]) {
                Ok(0) => {
                    // close_notify: a clean end of the stream.
                    self.eof = true;
                    break;
                }
                Ok(n) => {
                    filled += n;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    // The socket closed without close_notify; HTTP framing decides whether
                    // anything was cut, as it does for plain TCP.
                    self.eof = true;
                    break;
                }
                Err(e) => return Err(e),
            }
            if self.eof {
                break;
            }
            match self.tls.read_tls(&mut self.tcp) {
                Ok(0) => self.eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if let Err(e) = self.tls.process_new_packets() {
                // Garbage or a failed handshake: rustls queued an alert; send it and give up.
                // Logged at debug only: scanners do this all day.
                tracing::debug!("TLS connection refused: {e}");
                let _ = self.flush();
                self.state = State::Failed;
                return Err(failure(TlsFailure::Protocol(e)));
            }
            if self.state == State::Handshaking && !self.tls.is_handshaking() {
                self.state = State::Established;
            }
            // Handshake answers and tickets go out now; what the socket refuses waits.
            self.flush()?;
        }
        if filled > 0 {
            Ok(filled)
        } else if self.eof {
            Ok(0)
        } else {
            Err(io::Error::from(io::ErrorKind::WouldBlock))
        }
    }

    /// Hands out the PROXY header once it is whole. It is peeked at, not read, until then,
    /// so not one byte of the ClientHello behind it is taken from the socket: rustls and the
    /// plain-HTTP sniff see the stream from there as on a listener without the header.
    /// Something that is not a header is handed out whole for the connection to refuse.
    /// Ok((bytes handed out, whether they are a whole header)).
    fn read_clear_header(&mut self, buf: &mut [u8]) -> io::Result<(usize, bool)> {
        use nix::sys::socket::{recv, MsgFlags};
        let seen = match recv(self.tcp.as_raw_fd(), buf, MsgFlags::MSG_PEEK) {
            Ok(0) => {
                self.eof = true;
                return Ok((0, false));
            }
            Ok(n) => n,
            Err(e) => return Err(io::Error::from(e)),
        };
        let (take, whole) = match crate::proxy_protocol::parse(&buf[..seen]) {
            Ok(Some((_, n))) => (n, true),
            // More is to come; the next bytes make the socket readable again.
            Ok(None) if seen < buf.len() => return Err(io::Error::from(io::ErrorKind::WouldBlock)),
            Ok(None) | Err(_) => (seen, false),
        };
        self.clear_header = false;
        let mut got = 0;
        while got < take {
            match self.tcp.read(&mut buf[got..take]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok((got, whole && got == take))
    }

    /// Looks at the first byte without taking it: a TLS record starts with 0x16 (handshake);
    /// an upper-case letter is an HTTP method, answered the nginx way and closed.
    fn sniff(&mut self) -> io::Result<()> {
        use nix::sys::socket::{recv, MsgFlags};
        let mut first = [0u8; 1];
        match recv(self.tcp.as_raw_fd(), &mut first, MsgFlags::MSG_PEEK) {
            Ok(0) => Ok(()),
            Ok(_) if first[0].is_ascii_uppercase() => {
                self.answer_plain_http();
                Err(failure(TlsFailure::PlainHttp))
            }
            Ok(_) => {
                self.state = State::Handshaking;
                Ok(())
            }
            Err(e) => Err(io::Error::from(e)),
        }
    }

    /// Reads what the client sent (so closing does not reset the connection over unread
    /// bytes), writes nginx's 400 in one non-blocking write and shuts the write side.
    fn answer_plain_http(&mut self) {
        tracing::debug!("plain HTTP request on a TLS port: 400");
        let mut sink = [0u8; 4096];
        let mut head = Vec::new();
        for _ in 0..16 {
            match self.tcp.read(&mut sink) {
                Ok(n) if n > 0 => {
                    let keep = n.min(PLAIN_HEAD_KEPT - head.len());
                    head.extend_from_slice(&sink[..keep]);
                }
                _ => break,
            }
        }
        self.plain_head = Some(head);
        let answer = format!(
            "HTTP/1.1 400 Bad Request\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{PLAIN_HTTP_BODY}",
            PLAIN_HTTP_BODY.len()
        );
        let _ = NoSignal(&self.tcp).write(answer.as_bytes());
        let _ = self.tcp.shutdown(std::net::Shutdown::Write);
        self.state = State::Failed;
    }

    /// Writes the records rustls holds. Ok(true): all out; Ok(false): the socket is full.
    pub fn flush(&mut self) -> io::Result<bool> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut NoSignal(&self.tcp)) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Encrypts up to one record of `buf` and sends it. Ok(n) only once the records of those
    /// n bytes are on the socket; WouldBlock otherwise, and the caller must offer the same
    /// bytes again (see `unacked`).
    pub fn send(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.flush()? {
            return Err(io::Error::from(io::ErrorKind::WouldBlock));
        }
        if self.unacked > 0 {
            let n = self.unacked.min(buf.len());
            self.unacked = 0;
            return Ok(n);
        }
        if self.state != State::Established {
            // Nothing is answered before a request arrived, which needs the handshake done.
            return Err(io::Error::from(io::ErrorKind::NotConnected));
        }
        let take = buf.len().min(PLAIN_CHUNK);
        let n = self.tls.writer().write(&buf[..take])?;
        if self.flush()? {
            Ok(n)
        } else {
            self.unacked = n;
            Err(io::Error::from(io::ErrorKind::WouldBlock))
        }
    }

    /// Sends close_notify (once) and shuts the TCP write side.
    pub fn shutdown_write(&mut self) {
        self.notify_close();
        let _ = self.tcp.shutdown(std::net::Shutdown::Write);
    }

    fn notify_close(&mut self) {
        if self.state == State::Established && !self.close_notified {
            self.close_notified = true;
            self.tls.send_close_notify();
            let _ = self.flush();
        }
    }
}

impl Drop for TlsStream {
    fn drop(&mut self) {
        // A clean close tells the client the response was not cut (best effort, never blocks).
        self.notify_close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;
    use std::time::{Duration, Instant};

    /// A server config over a fresh self-signed certificate for "localhost", and a client
    /// config that trusts it.
    fn configs() -> (Arc<ServerConfig>, Arc<rustls::ClientConfig>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("luahttpd-tls-unit-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (c, k) = (dir.join("c.pem"), dir.join("k.pem"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        let provider = super::super::server::provider();
        let loaded = super::super::certs::load(&c, &k, &[], &provider).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let server = super::super::server::build(&[loaded], &Default::default()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (server, Arc::new(client))
    }

    /// A 1 MiB response through a 4 KiB send buffer to a slow reader: `send` says WouldBlock
    /// over and over with records waiting, and the caller's retries (as `worker::out` makes
    /// them) must deliver every byte exactly once.
    #[test]
    fn a_full_socket_loses_and_repeats_nothing() {
        let (server_cfg, client_cfg) = configs();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let body: Vec<u8> = (0..1_048_576u32).map(|i| (i % 253) as u8).collect();
        let expect = body.clone();
        let client = std::thread::spawn(move || {
            let tcp = std::net::TcpStream::connect(addr).unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            let conn = rustls::ClientConnection::new(client_cfg, name).unwrap();
            let mut s = rustls::StreamOwned::new(conn, tcp);
            s.write_all(b"GET").unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while got.len() < expect.len() {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0, "closed after {} bytes", got.len());
                got.extend_from_slice(&buf[..n]);
                std::thread::sleep(Duration::from_micros(200));
            }
            assert!(got == expect, "the bytes differ");
        });
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_nonblocking(true).unwrap();
        nix::sys::socket::setsockopt(&tcp, nix::sys::socket::sockopt::SndBuf, &4096).unwrap();
        let mut s = TlsStream::new(mio::net::TcpStream::from_std(tcp), server_cfg).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut req = [0u8; 16];
        let mut have = 0;
        while have < 3 {
            assert!(Instant::now() < deadline, "no request");
            match s.read(&mut req[have..]) {
                Ok(n) => have += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    s.flush().unwrap();
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("read: {e}"),
            }
        }
        assert_eq!(&req[..3], b"GET");
        assert_eq!(s.state(), State::Established);
        let (mut pos, mut blocked) = (0, 0);
        while pos < body.len() {
            assert!(Instant::now() < deadline, "stuck at {pos}");
            match s.send(&body[pos..]) {
                Ok(n) => pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    blocked += 1;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("send: {e}"),
            }
        }
        assert!(
            blocked > 0,
            "the socket never filled: the test tested nothing"
        );
        while !s.flush().unwrap() {
            std::thread::sleep(Duration::from_millis(1));
        }
        client.join().unwrap();
    }

    #[test]
    fn plain_http_is_answered_400_and_the_stream_fails() {
        let (server_cfg, _) = configs();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_nonblocking(true).unwrap();
        let mut s = TlsStream::new(mio::net::TcpStream::from_std(tcp), server_cfg).unwrap();
        let mut buf = [0u8; 64];
        let e = s.read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted);
        assert_eq!(s.state(), State::Failed);
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{answer}"
        );
        assert_eq!(
            s.take_plain_http_head().as_deref(),
            Some(&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..])
        );
        assert_eq!(s.take_plain_http_head(), None, "handed out once");
    }
}
