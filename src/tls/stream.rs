//! A TLS server connection over a non-blocking TCP socket: the state machine the event loop
//! drives through [`crate::transport::Stream`] (read, send, flush, shut down).
//!
//! The handshake happens inside `read`: records are read until the socket says EAGAIN, fed to
//! rustls, and its answers written at once; nothing ever blocks. What rustls has to send but
//! the socket does not take waits in rustls until [`TlsStream::flush`] runs on the next
//! writable event.
//!
//! With kTLS ([`super::ktls`]) the stream changes engine once the handshake is done: rustls
//! reads the handshake one record at a time (so nothing after it is taken from the socket),
//! sends its last records, gives up the keys, and from then on the kernel encrypts and
//! decrypts: `send` and `sendfile` write plain bytes, `read` gets plain bytes, and the rustls
//! connection and its buffers are gone.

use super::ktls::{self, RecordCut};
use rustls::{ProtocolVersion, ServerConfig, ServerConnection};
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

/// Who encrypts.
enum Engine {
    /// rustls, in user space (always during the handshake).
    User {
        tls: Box<ServerConnection>,
        /// Set when this connection is to move to the kernel after its handshake: rustls
        /// then reads one record at a time.
        cut: Option<RecordCut>,
    },
    /// The kernel (kTLS), after the handshake; what rustls negotiated is kept for logs and
    /// routing.
    Kernel {
        version: ProtocolVersion,
        server_name: Option<String>,
        /// Plaintext rustls had decrypted before it gave up the keys, handed out first.
        early: Vec<u8>,
    },
}

/// A server-side TLS connection.
pub struct TlsStream {
    tcp: mio::net::TcpStream,
    engine: Engine,
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
    /// A fresh server connection on an accepted socket. It moves to kTLS after the
    /// handshake when the config allows secret extraction (`server::build` allows it where
    /// `tls.ktls` is on and the kernel offers the ULP).
    pub fn new(
        tcp: mio::net::TcpStream,
        config: Arc<ServerConfig>,
    ) -> Result<TlsStream, rustls::Error> {
        let cut = config.enable_secret_extraction.then(RecordCut::default);
        Ok(TlsStream {
            tcp,
            engine: Engine::User {
                tls: Box::new(ServerConnection::new(config)?),
                cut,
            },
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
        match &self.engine {
            Engine::User { tls, .. } => tls.server_name(),
            Engine::Kernel { server_name, .. } => server_name.as_deref(),
        }
    }

    /// Whether the kernel encrypts this connection (kTLS), so `sendfile` may write to it.
    pub fn is_kernel(&self) -> bool {
        matches!(self.engine, Engine::Kernel { .. })
    }

    /// The first bytes (up to 4 KiB) of a plain HTTP request this stream answered with
    /// nginx's 400, once: the connection logs it as nginx does. None on a TLS connection.
    pub fn take_plain_http_head(&mut self) -> Option<Vec<u8>> {
        self.plain_head.take()
    }

    /// The negotiated version, once known.
    pub fn version(&self) -> Option<rustls::ProtocolVersion> {
        match &self.engine {
            Engine::User { tls, .. } => tls.protocol_version(),
            Engine::Kernel { version, .. } => Some(*version),
        }
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
        if !self.is_kernel() {
            match self.read_user(buf) {
                Ok(n) => filled = n,
                // The handshake ended in this call and the kernel took over: read on there.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && self.is_kernel() => {}
                Err(e) => return Err(e),
            }
            if !self.is_kernel() || self.eof || filled == buf.len() {
                return Ok(filled);
            }
        }
        match self.read_kernel(&mut buf[filled..]) {
            Ok(n) => Ok(filled + n),
            // What was read goes up first; a socket error is met again on the next call.
            Err(_) if filled > 0 => Ok(filled),
            Err(e) => Err(e),
        }
    }

    /// `read` while rustls decrypts. Ok(0) is the end of the stream; WouldBlock once the
    /// socket is drained with nothing read (or the kernel took over, see `try_switch`).
    fn read_user(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        loop {
            if filled == buf.len() {
                break;
            }
            let Engine::User { tls, cut } = &mut self.engine else {
                break;
            };
            match tls.reader().read(&mut buf[filled..]) {
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
            let got = match cut {
                Some(cut) => tls.read_tls(&mut CutReader(cut, &self.tcp)),
                None => tls.read_tls(&mut self.tcp),
            };
            match got {
                Ok(0) => self.eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if let Err(e) = tls.process_new_packets() {
                // Garbage or a failed handshake: rustls queued an alert; send it and give up.
                // Logged at debug only: scanners do this all day.
                tracing::debug!("TLS connection refused: {e}");
                // Failed first, so the flush that sends the alert cannot move it to kTLS.
                self.state = State::Failed;
                let _ = self.flush();
                return Err(failure(TlsFailure::Protocol(e)));
            }
            if self.state == State::Handshaking && !tls.is_handshaking() {
                self.state = State::Established;
            }
            // Handshake answers and tickets go out now; what the socket refuses waits. Once
            // they are out, a kTLS connection changes engine (in `flush`) before one more
            // byte is read.
            self.flush()?;
            if self.is_kernel() {
                break;
            }
        }
        self.read_outcome(filled)
    }

    /// What a read that got `filled` bytes says: them, the end of the stream, or WouldBlock.
    fn read_outcome(&self, filled: usize) -> io::Result<usize> {
        if filled > 0 {
            Ok(filled)
        } else if self.eof {
            Ok(0)
        } else {
            Err(io::Error::from(io::ErrorKind::WouldBlock))
        }
    }

    /// `read` once the kernel decrypts: what rustls left first, then records from the
    /// socket. An alert ends the stream (close_notify cleanly); a post-handshake handshake
    /// message (a TLS 1.3 KeyUpdate), which the kernel cannot follow here, fails it.
    fn read_kernel(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Engine::Kernel { early, .. } = &mut self.engine else {
            return Err(io::Error::from(io::ErrorKind::WouldBlock));
        };
        let mut filled = early.len().min(buf.len());
        if filled > 0 {
            buf[..filled].copy_from_slice(&early[..filled]);
            early.drain(..filled);
            if early.is_empty() {
                *early = Vec::new();
            }
        }
        let fd = self.tcp.as_raw_fd();
        while filled < buf.len() && !self.eof {
            // An alert is two bytes: with less room, take the next record into a scratch
            // buffer and keep what does not fit for the next read.
            let mut scratch = [0u8; 2];
            let small = buf.len() - filled < scratch.len();
            let to: &mut [u8] = if small {
                &mut scratch
            } else {
                &mut buf[filled..]
            };
            match ktls::recv(fd, to) {
                Ok(ktls::Record::Data(0)) | Ok(ktls::Record::Alert(_, 0)) => self.eof = true,
                Ok(ktls::Record::Data(n)) if small => {
                    let fit = n.min(buf.len() - filled);
                    buf[filled..filled + fit].copy_from_slice(&scratch[..fit]);
                    filled += fit;
                    if let Engine::Kernel { early, .. } = &mut self.engine {
                        early.extend_from_slice(&scratch[fit..n]);
                    }
                }
                Ok(ktls::Record::Data(n)) => filled += n,
                // A warning (user_canceled before its close_notify): read on.
                Ok(ktls::Record::Alert(1, _)) => {}
                Ok(other) => {
                    // A fatal alert or a KeyUpdate: the connection is over. What came before
                    // it is dropped with it, as rustls drops it in user space, so the caller
                    // closes now rather than on an event that may never come.
                    tracing::debug!("kTLS: {other:?} after the handshake; closing");
                    self.state = State::Failed;
                    return Err(io::Error::from(io::ErrorKind::ConnectionAborted));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A record that fails to decrypt (EBADMSG) or a reset, data read before it or
                // not: only EPOLLERR would report it again, so it is reported now.
                Err(e) => return Err(e),
            }
        }
        self.read_outcome(filled)
    }

    /// Moves an established connection to the kernel, if it is to go there and everything
    /// rustls had to send is out. Ok(true) once the kernel encrypts. Before the keys leave
    /// rustls a refusal loses nothing (the connection stays in user space); after, a
    /// refused key fails the connection.
    fn try_switch(&mut self) -> io::Result<bool> {
        let Engine::User {
            tls,
            cut: cut @ Some(_),
        } = &mut self.engine
        else {
            return Ok(self.is_kernel());
        };
        let ready = self.state == State::Established
            && !self.close_notified
            && !tls.wants_write()
            && cut.as_ref().is_some_and(RecordCut::at_boundary);
        if !ready {
            return Ok(false);
        }
        let (Some(suite), Some(version)) = (tls.negotiated_cipher_suite(), tls.protocol_version())
        else {
            return Ok(false);
        };
        let fd = self.tcp.as_raw_fd();
        if !ktls::takes(suite.suite()) {
            *cut = None;
            return Ok(false);
        }
        if let Err(e) = ktls::attach(fd) {
            tracing::debug!("{e}");
            *cut = None;
            return Ok(false);
        }
        // Plaintext rustls decrypted already (only when the switch had to wait for the
        // socket) is handed out before what the kernel reads.
        let mut early = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match tls.reader().read(&mut chunk) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => early.extend_from_slice(&chunk[..n]),
                Err(_) => break,
            }
        }
        let server_name = tls.server_name().map(str::to_owned);
        let kernel = Engine::Kernel {
            version,
            server_name,
            early,
        };
        let Engine::User { tls, .. } = std::mem::replace(&mut self.engine, kernel) else {
            return Ok(true);
        };
        // The buffered connection gives up its keys without a `KernelConnection`, so a TLS
        // 1.3 KeyUpdate cannot be followed: it fails the connection (`read_kernel`).
        let secrets = tls.dangerous_extract_secrets();
        let done = secrets
            .map_err(ktls::KtlsError::Secrets)
            .and_then(|s| ktls::install(fd, version, suite.suite(), s));
        match done {
            Ok(()) => Ok(true),
            Err(e) => {
                tracing::debug!("{e}");
                self.state = State::Failed;
                Err(io::Error::other(e))
            }
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
    /// With everything out, a connection bound for kTLS moves there (`try_switch`).
    pub fn flush(&mut self) -> io::Result<bool> {
        let Engine::User { tls, .. } = &mut self.engine else {
            return Ok(true);
        };
        while tls.wants_write() {
            match tls.write_tls(&mut NoSignal(&self.tcp)) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.try_switch()?;
        Ok(true)
    }

    /// Encrypts up to one record of `buf` and sends it. Ok(n) only once the records of those
    /// n bytes are on the socket; WouldBlock otherwise, and the caller must offer the same
    /// bytes again (see `unacked`). Under kTLS the kernel takes plain bytes as a socket does,
    /// `more` (MSG_MORE) letting it fill a record with what follows.
    pub fn send(&mut self, buf: &[u8], more: bool) -> io::Result<usize> {
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
        let tls = match &mut self.engine {
            Engine::User { tls, .. } => tls,
            Engine::Kernel { .. } => {
                use nix::sys::socket::{send, MsgFlags};
                let mut flags = MsgFlags::MSG_NOSIGNAL;
                if more {
                    flags |= MsgFlags::from_bits_retain(libc::MSG_MORE);
                }
                return send(self.tcp.as_raw_fd(), buf, flags).map_err(io::Error::from);
            }
        };
        let take = buf.len().min(PLAIN_CHUNK);
        let n = tls.writer().write(&buf[..take])?;
        if self.flush()? {
            Ok(n)
        } else {
            self.unacked = n;
            Err(io::Error::from(io::ErrorKind::WouldBlock))
        }
    }

    /// Sends close_notify (once) and shuts the TCP write side.
    ///
    /// Under kTLS only close_notify is sent, not the TCP FIN: the kernel may still hold the
    /// end of a record it accepted while the socket was full, and sends it when there is
    /// room, which a FIN queued now would cut off (the close afterwards does send it). The
    /// client ends on close_notify as on a FIN.
    pub fn shutdown_write(&mut self) {
        self.notify_close();
        if !self.is_kernel() {
            let _ = self.tcp.shutdown(std::net::Shutdown::Write);
        }
    }

    fn notify_close(&mut self) {
        if self.state == State::Established && !self.close_notified {
            self.close_notified = true;
            match &mut self.engine {
                Engine::User { tls, .. } => {
                    tls.send_close_notify();
                    let _ = self.flush();
                }
                Engine::Kernel { .. } => ktls::send_close_notify(self.tcp.as_raw_fd()),
            }
        }
    }
}

/// Feeds rustls from the socket through a [`RecordCut`]: whole records only.
struct CutReader<'a>(&'a mut RecordCut, &'a mio::net::TcpStream);

impl Read for CutReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut tcp = self.1;
        self.0.read(&mut tcp, buf)
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
        configs_for(&rustls::version::TLS13)
    }

    /// As [`configs`], the client offering `version` only.
    fn configs_for(
        version: &'static rustls::SupportedProtocolVersion,
    ) -> (Arc<ServerConfig>, Arc<rustls::ClientConfig>) {
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
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(
            super::super::server::full_provider(),
        ))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        (server, Arc::new(client))
    }

    /// A client TLS stream to "localhost" at `addr` (the handshake runs on first use).
    fn client_stream(
        addr: std::net::SocketAddr,
        cfg: Arc<rustls::ClientConfig>,
    ) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
        let tcp = std::net::TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(cfg, name).unwrap();
        rustls::StreamOwned::new(conn, tcp)
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
            let mut s = client_stream(addr, client_cfg);
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
            match s.send(&body[pos..], false) {
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

    /// Drives the server side until `want` plaintext bytes arrived.
    fn read_some(s: &mut TlsStream, want: usize, deadline: Instant) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while got.len() < want {
            assert!(Instant::now() < deadline, "no request: {got:?}");
            match s.read(&mut buf) {
                Ok(0) => panic!("eof after {got:?}"),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("read: {e}"),
            }
        }
        got
    }

    /// kTLS end to end in one process, both versions: the request written by the client
    /// in the same flight as its Finished is read by the kernel (rustls read only the
    /// handshake), a response goes out by `send` and a file by `sendfile`, and the close is
    /// a clean close_notify. Skipped, loudly, where the kernel has no tls ULP.
    #[test]
    fn the_kernel_takes_over_after_the_handshake() {
        if !ktls::available() {
            eprintln!(
                "SKIPPED (kTLS): this kernel has no tls ULP (TCP_ULP \"tls\" does not attach); the \
                 kernel path cannot run here"
            );
            return;
        }
        let file_bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
        let dir = std::env::temp_dir().join(format!("luahttpd-ktls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f.bin");
        std::fs::write(&path, &file_bytes).unwrap();
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let (server_cfg, client_cfg) = configs_for(version);
            assert!(server_cfg.enable_secret_extraction);
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let expect = file_bytes.clone();
            let client = std::thread::spawn(move || {
                let mut s = client_stream(addr, client_cfg);
                s.write_all(b"GET /f.bin").unwrap();
                let mut got = Vec::new();
                s.read_to_end(&mut got)
                    .expect("a clean close_notify at the end");
                assert_eq!(&got[..6], b"head\r\n");
                assert!(got[6..] == expect[..], "the file bytes differ");
            });
            let (tcp, _) = listener.accept().unwrap();
            tcp.set_nonblocking(true).unwrap();
            let mut s =
                TlsStream::new(mio::net::TcpStream::from_std(tcp), server_cfg.clone()).unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            assert_eq!(read_some(&mut s, 10, deadline), b"GET /f.bin");
            assert!(s.is_kernel(), "{version:?}: still in user space");
            assert_eq!(s.version(), Some(version.version));
            assert_eq!(s.server_name(), Some("localhost"));
            let mut stream = crate::transport::Stream::Tls(Box::new(s));
            assert!(stream.can_sendfile() && !stream.can_splice());
            assert_eq!(stream.send(b"head\r\n", true).unwrap(), 6);
            let file = std::fs::File::open(&path).unwrap();
            let mut off = 0;
            while off < file_bytes.len() {
                assert!(Instant::now() < deadline, "sendfile stuck at {off}");
                match stream.sendfile(&file, off as u64, file_bytes.len() - off) {
                    Ok(n) => off += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(e) => panic!("sendfile: {e}"),
                }
            }
            stream.shutdown_write();
            client.join().unwrap();
        }
        let _ = std::fs::remove_dir_all(&dir);
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
