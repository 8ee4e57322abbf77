//! Kernel TLS (`TCP_ULP` "tls"): once rustls has finished a handshake, the connection's keys
//! go to the kernel, which then encrypts and decrypts the records itself, so a static file
//! goes out with `sendfile` (no copy through user space) and the connection holds no rustls
//! buffers while idle.
//!
//! This module is the kernel's side of it: the `setsockopt` calls, the `tls_crypto_info`
//! layout built from rustls's secrets (a pure function, unit-tested), `recvmsg` with the
//! record type of a non-data record, and close_notify sent as an alert record. The switch
//! itself (when, and what must be true first) is in `stream.rs`. Without the `tls` ULP (this
//! machine's own kernel), or with `tls.ktls = false`, no connection moves (only the probe
//! runs, where kTLS is on) and file bytes are read and encrypted in user space in 16 KiB
//! records (`worker::out`).

use rustls::{CipherSuite, ConnectionTrafficSecrets, ProtocolVersion};
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

// <linux/tcp.h>, <linux/tls.h>: kernel ABI, stable since Linux 4.13 (TX), 4.17 (RX),
// 5.1 (TLS 1.3), 5.11 (ChaCha20-Poly1305).
const TCP_ULP: libc::c_int = 31;
const SOL_TLS: libc::c_int = 282;
const TLS_TX: libc::c_int = 1;
const TLS_RX: libc::c_int = 2;
const TLS_SET_RECORD_TYPE: libc::c_int = 1;
const TLS_GET_RECORD_TYPE: libc::c_int = 2;
const TLS_1_2_VERSION: u16 = 0x0303;
const TLS_1_3_VERSION: u16 = 0x0304;
const TLS_CIPHER_AES_GCM_128: u16 = 51;
const TLS_CIPHER_AES_GCM_256: u16 = 52;
const TLS_CIPHER_CHACHA20_POLY1305: u16 = 54;

/// TLS record content types (RFC 8446, 5.1).
const CONTENT_ALERT: u8 = 21;
const CONTENT_HANDSHAKE: u8 = 22;
const CONTENT_APPLICATION_DATA: u8 = 23;

/// What the running kernel was found to offer (once per process, see [`available`]).
#[derive(Debug, Clone)]
enum Offer {
    /// Attaching the `tls` ULP to a loopback socket failed (the kernel has no kTLS, or its
    /// module is not loaded and this process may not load it).
    NoUlp(String),
    /// The ULP attaches, but the kernel took TLS 1.3 keys of no cipher.
    NoCipher,
    /// kTLS works for the ciphers not in [`REFUSED`].
    Yes,
}

/// Whether the running kernel has the `tls` upper-layer protocol and takes the keys of at
/// least one cipher. Found out once per process, in the watcher at the first config load
/// (before any worker is forked, so all of them know): one loopback connection per cipher,
/// the ULP attached and dummy keys given ([`probe`]). Attaching loads the kernel's `tls`
/// module where this process may (CAP_NET_ADMIN: the watcher starting as root), which
/// `tcp_available_ulp` does not list until it is loaded; the keys load its crypto modules,
/// before the first client waits on them.
pub fn available() -> bool {
    matches!(offer(), Offer::Yes)
}

fn offer() -> &'static Offer {
    static OFFER: OnceLock<Offer> = OnceLock::new();
    OFFER.get_or_init(|| {
        let (refused, no_ulp) = probe();
        REFUSED.fetch_or(refused, Ordering::Relaxed);
        if refused == ALL_BULK {
            return match no_ulp {
                Some(e) => Offer::NoUlp(e),
                None => Offer::NoCipher,
            };
        }
        if refused != 0 {
            tracing::info!(
                "kTLS: the kernel takes no keys for {}; connections with those stay in user space",
                [Bulk::Aes128Gcm, Bulk::Aes256Gcm, Bulk::Chacha20Poly1305]
                    .iter()
                    .filter(|b| refused & **b as u8 != 0)
                    .map(|b| b.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Offer::Yes
    })
}

/// The kernel ciphers found refused, as [`Bulk`] bits, and the error of a ULP that would not
/// attach (None once it attached for some cipher).
fn probe() -> (u8, Option<String>) {
    let mut refused = 0;
    let mut no_ulp = None;
    let mut attached = false;
    for b in [Bulk::Aes128Gcm, Bulk::Aes256Gcm, Bulk::Chacha20Poly1305] {
        match probe_one(b) {
            Ok(()) => attached = true,
            Err(KtlsError::Ulp(e)) => {
                refused |= b as u8;
                no_ulp.get_or_insert(e.to_string());
            }
            Err(e) => {
                tracing::debug!("kTLS probe of {}: {e}", b.name());
                attached = true;
                refused |= b as u8;
            }
        }
    }
    (refused, if attached { None } else { no_ulp })
}

/// Gives a fresh loopback connection dummy keys of cipher `b`, both directions.
fn probe_one(b: Bulk) -> Result<(), KtlsError> {
    use std::os::fd::AsRawFd;
    let io = KtlsError::Ulp;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(io)?;
    let client = std::net::TcpStream::connect(listener.local_addr().map_err(io)?).map_err(io)?;
    let _server = listener.accept().map_err(io)?;
    let fd = client.as_raw_fd();
    attach(fd)?;
    let (cipher, key_len) = match b {
        Bulk::Aes128Gcm => (TLS_CIPHER_AES_GCM_128, 16),
        Bulk::Aes256Gcm => (TLS_CIPHER_AES_GCM_256, 32),
        Bulk::Chacha20Poly1305 => (TLS_CIPHER_CHACHA20_POLY1305, 32),
    };
    for (opt, name) in [(TLS_TX, "TLS_TX"), (TLS_RX, "TLS_RX")] {
        let info = layout(TLS_1_3_VERSION, cipher, &[0; 32][..key_len], &[0; 12], 0)?;
        set_keys(fd, opt, info).map_err(|e| KtlsError::Keys(name, e))?;
    }
    Ok(())
}

/// Says at start-up which path static files over TLS take, so a missing kTLS is not silent.
pub fn log_once(enabled: bool) {
    const USER: &str =
        "static files over TLS are read and encrypted in user space in 16 KiB records";
    if !enabled {
        tracing::info!("kTLS: off (tls.ktls = false); {USER}");
        return;
    }
    match offer() {
        Offer::Yes => tracing::info!(
            "kTLS: on (the kernel's tls ULP); after each handshake the kernel encrypts, and static \
             files over TLS go out with sendfile"
        ),
        Offer::NoCipher => tracing::info!(
            "kTLS: the kernel has the tls ULP but took the TLS 1.3 keys of no cipher (a kernel \
             before 5.1?); {USER}"
        ),
        Offer::NoUlp(e) => tracing::info!(
            "kTLS: the kernel has no tls ULP (TCP_ULP \"tls\": {e}; `modprobe tls` if it is a \
             module); {USER}"
        ),
    }
}

/// The bulk ciphers the kernel takes, as bits of [`REFUSED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bulk {
    Aes128Gcm = 1,
    Aes256Gcm = 2,
    Chacha20Poly1305 = 4,
}

/// Every [`Bulk`] bit.
const ALL_BULK: u8 = 7;

impl Bulk {
    fn name(self) -> &'static str {
        match self {
            Bulk::Aes128Gcm => "AES-128-GCM",
            Bulk::Aes256Gcm => "AES-256-GCM",
            Bulk::Chacha20Poly1305 => "ChaCha20-Poly1305",
        }
    }
}

/// Ciphers a `setsockopt(TLS_TX)` of this process was refused for (a kernel built without
/// one of them): later connections with such a suite stay in user space instead of failing.
static REFUSED: AtomicU8 = AtomicU8::new(0);

/// The kernel cipher of a negotiated suite, or None when the kernel has none for it.
fn bulk(suite: CipherSuite) -> Option<Bulk> {
    use CipherSuite as S;
    match suite {
        S::TLS13_AES_128_GCM_SHA256
        | S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => Some(Bulk::Aes128Gcm),
        S::TLS13_AES_256_GCM_SHA384
        | S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        | S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => Some(Bulk::Aes256Gcm),
        S::TLS13_CHACHA20_POLY1305_SHA256
        | S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        | S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => Some(Bulk::Chacha20Poly1305),
        _ => None,
    }
}

/// Whether a connection that negotiated `suite` should be handed to the kernel: it has the
/// cipher, and has not refused it in this process.
pub fn takes(suite: CipherSuite) -> bool {
    bulk(suite).is_some_and(|b| REFUSED.load(Ordering::Relaxed) & b as u8 == 0)
}

/// Why a connection could not be handed to the kernel.
#[derive(Debug, thiserror::Error)]
pub enum KtlsError {
    /// `setsockopt(TCP_ULP, "tls")` failed: the connection stays with rustls.
    #[error("kTLS: TCP_ULP \"tls\": {0}")]
    Ulp(io::Error),
    /// rustls would not give up the keys.
    #[error("kTLS: rustls kept its secrets: {0}")]
    Secrets(rustls::Error),
    /// A version or cipher with no kernel form (should have been caught by [`takes`]).
    #[error("kTLS: no kernel form for {0}")]
    Unsupported(&'static str),
    /// `setsockopt(TLS_TX/TLS_RX)` failed: the keys are gone from rustls, so the
    /// connection is lost.
    #[error("kTLS: setsockopt {0}: {1}")]
    Keys(&'static str, io::Error),
}

/// Attaches the `tls` ULP to an established TCP socket. Until keys are set the socket works
/// as plain TCP, so a failure here loses nothing.
pub fn attach(fd: RawFd) -> Result<(), KtlsError> {
    let name = b"tls";
    // SAFETY: `name` is a live buffer of `name.len()` bytes for the call's duration; the
    // kernel copies it. `fd` is a socket the caller owns.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            TCP_ULP,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(KtlsError::Ulp(io::Error::last_os_error()));
    }
    Ok(())
}

/// `struct tls12_crypto_info_*` for one direction, as the bytes the kernel reads: version
/// and cipher type (host order), then the explicit IV, key, salt and record sequence number
/// (big-endian). For AES-GCM the first 4 of rustls's 12 IV bytes are the salt, the other 8
/// the IV; ChaCha20-Poly1305 takes all 12 as its IV and has no salt. `tx`: the direction we
/// send (see [`tls12_gcm_send_iv`]).
fn crypto_info(
    version: ProtocolVersion,
    seq: u64,
    secrets: &ConnectionTrafficSecrets,
    tx: bool,
) -> Result<Vec<u8>, KtlsError> {
    let version = match version {
        ProtocolVersion::TLSv1_2 => TLS_1_2_VERSION,
        ProtocolVersion::TLSv1_3 => TLS_1_3_VERSION,
        _ => return Err(KtlsError::Unsupported("a TLS version before 1.2")),
    };
    let (cipher, key, iv) = match secrets {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv } => {
            (TLS_CIPHER_AES_GCM_128, key.as_ref(), iv.as_ref())
        }
        ConnectionTrafficSecrets::Aes256Gcm { key, iv } => {
            (TLS_CIPHER_AES_GCM_256, key.as_ref(), iv.as_ref())
        }
        ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
            (TLS_CIPHER_CHACHA20_POLY1305, key.as_ref(), iv.as_ref())
        }
        _ => return Err(KtlsError::Unsupported("this cipher")),
    };
    if tx && version == TLS_1_2_VERSION && cipher != TLS_CIPHER_CHACHA20_POLY1305 {
        let iv: [u8; 12] = iv
            .try_into()
            .map_err(|_| KtlsError::Unsupported("an IV not of 12 bytes"))?;
        return layout(version, cipher, key, &tls12_gcm_send_iv(iv, seq), seq);
    }
    layout(version, cipher, key, iv, seq)
}

/// The IV the kernel is given to send TLS 1.2 AES-GCM records after rustls sent `seq` of
/// them. rustls makes the nonce of record s as salt ‖ (E xor s), E being the last 8 bytes of
/// its IV; the kernel uses salt ‖ E′ for its first record and adds 1 per record (TLS 1.2 GCM
/// is the one case it does not xor with the sequence number). Given E itself, its first
/// record would repeat the nonce of our Finished, under the same key: fatal for GCM. Every
/// E xor s with s < seq lies in [E & !m, E | m] for m = seq rounded up to a power of two,
/// less one, so the kernel starts just above that range (2^64 records before it could wrap
/// back into it). The explicit nonce travels in each record, so the peer needs nothing.
fn tls12_gcm_send_iv(iv: [u8; 12], seq: u64) -> [u8; 12] {
    let mut explicit = [0u8; 8];
    explicit.copy_from_slice(&iv[4..]);
    let e = u64::from_be_bytes(explicit);
    let m = seq.checked_next_power_of_two().map_or(u64::MAX, |p| p - 1);
    let start = (e | m).wrapping_add(1);
    let mut out = iv;
    out[4..].copy_from_slice(&start.to_be_bytes());
    out
}

/// The bytes of the kernel's struct for `cipher` (see [`crypto_info`]).
fn layout(
    version: u16,
    cipher: u16,
    key: &[u8],
    iv: &[u8],
    seq: u64,
) -> Result<Vec<u8>, KtlsError> {
    let key_len = if cipher == TLS_CIPHER_AES_GCM_128 {
        16
    } else {
        32
    };
    if key.len() != key_len || iv.len() != 12 {
        return Err(KtlsError::Unsupported("a key or IV of another length"));
    }
    let mut info = Vec::with_capacity(4 + 12 + key.len() + 8);
    info.extend_from_slice(&version.to_ne_bytes());
    info.extend_from_slice(&cipher.to_ne_bytes());
    if cipher == TLS_CIPHER_CHACHA20_POLY1305 {
        info.extend_from_slice(iv);
        info.extend_from_slice(key);
    } else {
        info.extend_from_slice(&iv[4..]);
        info.extend_from_slice(key);
        info.extend_from_slice(&iv[..4]);
    }
    info.extend_from_slice(&seq.to_be_bytes());
    Ok(info)
}

/// Hands both directions' keys to the kernel. After an error the connection cannot go on
/// (rustls no longer has the keys); the cipher is remembered as refused for later ones.
pub fn install(
    fd: RawFd,
    version: ProtocolVersion,
    suite: CipherSuite,
    secrets: rustls::ExtractedSecrets,
) -> Result<(), KtlsError> {
    for (opt, name, tx, (seq, s)) in [
        (TLS_TX, "TLS_TX", true, secrets.tx),
        (TLS_RX, "TLS_RX", false, secrets.rx),
    ] {
        let info = crypto_info(version, seq, &s, tx)?;
        if let Err(err) = set_keys(fd, opt, info) {
            if let Some(b) = bulk(suite) {
                if REFUSED.fetch_or(b as u8, Ordering::Relaxed) & b as u8 == 0 {
                    tracing::warn!(
                        "kTLS: the kernel refused {suite:?} ({err}); connections with it stay \
                         in user space from now on"
                    );
                }
            }
            return Err(KtlsError::Keys(name, err));
        }
    }
    Ok(())
}

/// `setsockopt(SOL_TLS, opt)` with the crypto info `info`, which is wiped afterwards.
fn set_keys(fd: RawFd, opt: libc::c_int, mut info: Vec<u8>) -> io::Result<()> {
    // SAFETY: `info` is a live buffer of `info.len()` bytes laid out as the kernel's struct
    // for its cipher (see `layout`); the kernel copies it during the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            SOL_TLS,
            opt,
            info.as_ptr().cast(),
            info.len() as libc::socklen_t,
        )
    };
    let err = io::Error::last_os_error();
    // The keys leave memory with the buffer.
    info.iter_mut().for_each(|b| *b = 0);
    std::hint::black_box(&info);
    if rc != 0 {
        return Err(err);
    }
    Ok(())
}

/// What one `recvmsg` on a kTLS socket gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// Application data, this many bytes (0: the TCP stream ended).
    Data(usize),
    /// An alert: (level, description); description 0 is close_notify.
    Alert(u8, u8),
    /// A post-handshake handshake message (TLS 1.3 KeyUpdate or NewSessionTicket), which
    /// this server does not follow.
    Handshake,
    /// Another record type.
    Other(u8),
}

/// The record a `recvmsg` delivered, from its content type (None: no cmsg, which the kernel
/// only leaves out for data) and the bytes it put in the buffer.
fn classify(content_type: Option<u8>, got: &[u8]) -> Record {
    match content_type {
        None | Some(CONTENT_APPLICATION_DATA) => Record::Data(got.len()),
        Some(CONTENT_ALERT) if got.len() >= 2 => Record::Alert(got[0], got[1]),
        Some(CONTENT_HANDSHAKE) => Record::Handshake,
        Some(t) => Record::Other(t),
    }
}

/// Receives from a kTLS socket; a non-data record (an alert, a KeyUpdate) is returned as
/// what it is instead of failing the read with EIO, as a plain `read` would.
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<Record> {
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(1) } as usize;
    // u64 words keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; 4];
    debug_assert!(space <= std::mem::size_of_val(&control));
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty one; the fields set below point at `iov`
    // and `control`, which outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `msg` describes buffers valid for writes of the lengths given.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut content_type = None;
    // SAFETY: `msg` was filled in by recvmsg; CMSG_FIRSTHDR/NXTHDR walk only within
    // `msg_controllen` bytes of `control`, and CMSG_DATA of a SOL_TLS record-type message
    // points at its one data byte.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == SOL_TLS && (*c).cmsg_type == TLS_GET_RECORD_TYPE {
                content_type = Some(*libc::CMSG_DATA(c));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(classify(content_type, &buf[..n as usize]))
}

/// Sends close_notify as an alert record (best effort, never blocks).
pub fn send_close_notify(fd: RawFd) {
    let mut alert = [1u8, 0u8]; // warning, close_notify
                                // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(1) } as usize;
    let mut control = [0u64; 4];
    let mut iov = libc::iovec {
        iov_base: alert.as_mut_ptr().cast(),
        iov_len: alert.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty one; the fields set below point at `iov`
    // and `control`, which outlive the call. CMSG_FIRSTHDR of a control buffer of
    // CMSG_SPACE(1) bytes is non-null and has room for one header and one data byte.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = SOL_TLS;
        (*c).cmsg_type = TLS_SET_RECORD_TYPE;
        (*c).cmsg_len = libc::CMSG_LEN(1) as _;
        *libc::CMSG_DATA(c) = CONTENT_ALERT;
        libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL);
    }
}

/// Reads a TLS byte stream for rustls one record at a time, never past a record's end: when
/// the handshake's last record is in, every later byte is still in the socket for the
/// kernel (which must see the records after the handshake from their first byte).
#[derive(Debug, Default)]
pub struct RecordCut {
    /// The header bytes of the record being read, as far as they came.
    header: [u8; 5],
    have: usize,
    /// Body bytes of the current record still to come (once its header is whole).
    left: usize,
}

impl RecordCut {
    /// Whether no record is partly read (all rustls has is whole records).
    pub fn at_boundary(&self) -> bool {
        self.have == 0 && self.left == 0
    }

    /// Reads from `from` into `buf`, at most to the end of the current record.
    pub fn read(&mut self, from: &mut impl io::Read, buf: &mut [u8]) -> io::Result<usize> {
        if self.have < 5 {
            let want = (5 - self.have).min(buf.len());
            let n = from.read(&mut buf[..want])?;
            self.header[self.have..self.have + n].copy_from_slice(&buf[..n]);
            self.have += n;
            if self.have == 5 {
                self.left = u16::from_be_bytes([self.header[3], self.header[4]]) as usize;
                if self.left == 0 {
                    self.have = 0;
                }
            }
            return Ok(n);
        }
        let want = self.left.min(buf.len());
        let n = from.read(&mut buf[..want])?;
        self.left -= n;
        if self.left == 0 {
            self.have = 0;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IV: [u8; 12] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

    fn key(len: usize) -> Vec<u8> {
        (0..len).map(|i| 0x40 + i as u8).collect()
    }

    #[test]
    fn aes_gcm_splits_the_iv_into_salt_and_explicit_part() {
        let info = layout(TLS_1_3_VERSION, TLS_CIPHER_AES_GCM_128, &key(16), &IV, 7).unwrap();
        // struct tls12_crypto_info_aes_gcm_128: info(4) iv(8) key(16) salt(4) rec_seq(8).
        assert_eq!(info.len(), 40);
        assert_eq!(&info[0..2], &0x0304u16.to_ne_bytes());
        assert_eq!(&info[2..4], &51u16.to_ne_bytes());
        assert_eq!(&info[4..12], &[5, 6, 7, 8, 9, 10, 11, 12]);
        assert_eq!(info[12], 0x40);
        assert_eq!(info[27], 0x4f);
        assert_eq!(&info[28..32], &[1, 2, 3, 4]);
        assert_eq!(&info[32..40], &[0, 0, 0, 0, 0, 0, 0, 7]);
        let info = layout(
            TLS_1_2_VERSION,
            TLS_CIPHER_AES_GCM_256,
            &key(32),
            &IV,
            1 << 40,
        )
        .unwrap();
        // tls12_crypto_info_aes_gcm_256: info(4) iv(8) key(32) salt(4) rec_seq(8).
        assert_eq!(info.len(), 56);
        assert_eq!(&info[0..2], &0x0303u16.to_ne_bytes());
        assert_eq!(&info[2..4], &52u16.to_ne_bytes());
        assert_eq!(&info[44..48], &[1, 2, 3, 4]);
        assert_eq!(&info[48..56], &[0, 0, 1, 0, 0, 0, 0, 0]);
        assert!(layout(TLS_1_3_VERSION, TLS_CIPHER_AES_GCM_128, &key(32), &IV, 0).is_err());
    }

    #[test]
    fn chacha_takes_the_whole_iv_and_no_salt() {
        let info = layout(
            TLS_1_3_VERSION,
            TLS_CIPHER_CHACHA20_POLY1305,
            &key(32),
            &IV,
            0,
        )
        .unwrap();
        // tls12_crypto_info_chacha20_poly1305: info(4) iv(12) key(32) rec_seq(8).
        assert_eq!(info.len(), 56);
        assert_eq!(&info[2..4], &54u16.to_ne_bytes());
        assert_eq!(&info[4..16], &IV);
        assert_eq!(info[16], 0x40);
        assert_eq!(&info[48..56], &[0; 8]);
    }

    #[test]
    fn secrets_from_rustls_take_the_layout_of_their_cipher() {
        let s = ConnectionTrafficSecrets::Chacha20Poly1305 {
            key: rustls::crypto::cipher::AeadKey::from([9u8; 32]),
            iv: rustls::crypto::cipher::Iv::from(IV),
        };
        let info = crypto_info(ProtocolVersion::TLSv1_2, 3, &s, true).unwrap();
        assert_eq!(
            &info[0..4],
            &[&0x0303u16.to_ne_bytes()[..], &54u16.to_ne_bytes()].concat()[..]
        );
        assert!(crypto_info(ProtocolVersion::TLSv1_1, 3, &s, true).is_err());
        // ChaCha20 is xored with the sequence number by the kernel too: its IV goes as it is.
        assert_eq!(&info[4..16], &IV);
    }

    /// TLS 1.2 AES-GCM: the kernel's nonces (its first explicit IV, then +1 per record) never
    /// meet one rustls used (E xor s for every s it sent), whatever E and the count sent.
    #[test]
    fn tls12_gcm_send_nonces_never_repeat_rustls_s() {
        for e in [
            0u64,
            1,
            0x00ff,
            0x1234_5678_9abc_def0,
            u64::MAX - 3,
            u64::MAX,
        ] {
            for seq in [1u64, 2, 3, 4, 5, 7, 8, 9, 1000, 1 << 20] {
                let mut iv = [7u8; 12];
                iv[4..].copy_from_slice(&e.to_be_bytes());
                let out = tls12_gcm_send_iv(iv, seq);
                assert_eq!(&out[..4], &iv[..4], "the salt stays");
                let mut k = [0u8; 8];
                k.copy_from_slice(&out[4..]);
                let start = u64::from_be_bytes(k);
                let used: std::collections::HashSet<u64> = (0..seq).map(|s| e ^ s).collect();
                for i in 0..4096u64 {
                    let n = start.wrapping_add(i);
                    assert!(
                        !used.contains(&n),
                        "e {e:#x}, seq {seq}: kernel record {i} repeats"
                    );
                }
            }
        }
    }

    #[test]
    fn only_the_kernel_s_ciphers_are_taken() {
        // `bulk`, not `takes`: what this kernel refused (REFUSED, process-wide) is not asked.
        assert_eq!(
            bulk(CipherSuite::TLS13_AES_128_GCM_SHA256),
            Some(Bulk::Aes128Gcm)
        );
        assert_eq!(
            bulk(CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256),
            Some(Bulk::Chacha20Poly1305)
        );
        assert_eq!(bulk(CipherSuite::TLS_RSA_WITH_AES_128_CBC_SHA), None);
    }

    #[test]
    fn record_types_are_told_apart() {
        assert_eq!(classify(None, b"abc"), Record::Data(3));
        assert_eq!(classify(Some(23), b""), Record::Data(0));
        assert_eq!(classify(Some(21), &[1, 0]), Record::Alert(1, 0));
        assert_eq!(classify(Some(22), &[24, 0, 0, 1, 0]), Record::Handshake);
        assert_eq!(classify(Some(20), &[1]), Record::Other(20));
    }

    /// A reader that hands out at most `step` bytes per call.
    struct Trickle<'a>(&'a [u8], usize);

    impl io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.1).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn record_cut_never_reads_past_a_record_end() {
        // Two records (bodies of 3 and 0 bytes) then the start of a third.
        let stream = [
            22, 3, 3, 0, 3, b'a', b'b', b'c', 23, 3, 3, 0, 0, 23, 3, 3, 0, 9, b'x',
        ];
        for step in [1, 2, 7, 64] {
            let mut from = Trickle(&stream, step);
            let mut cut = RecordCut::default();
            let mut got = Vec::new();
            let mut buf = [0u8; 64];
            // Read the first record whole: 8 bytes, and not one more.
            while got.len() < 8 {
                let n = cut.read(&mut from, &mut buf).unwrap();
                got.extend_from_slice(&buf[..n]);
                assert!(got.len() <= 8, "step {step}: read past the record");
            }
            assert!(cut.at_boundary());
            // The empty record next: its header alone.
            while got.len() < 13 {
                let n = cut.read(&mut from, &mut buf).unwrap();
                got.extend_from_slice(&buf[..n]);
                assert!(got.len() <= 13, "step {step}");
            }
            assert!(cut.at_boundary(), "step {step}");
            assert_eq!(&got[..], &stream[..13]);
            // The third is cut short by the stream: not at a boundary.
            while cut.read(&mut from, &mut buf).is_ok() {}
            assert!(!cut.at_boundary(), "step {step}");
        }
    }
}
