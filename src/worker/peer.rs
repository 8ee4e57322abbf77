//! Who is on the other end of a client connection, held without a heap allocation.

use std::fmt::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::ops::Deref;

/// The longest IP address text: an IPv6 address with an embedded IPv4 one is 45 characters.
const MAX: usize = 45;

/// A client address as text, stored inline: accepting a connection allocates nothing for it.
#[derive(Clone, Copy)]
pub struct PeerIp {
    len: u8,
    bytes: [u8; MAX],
}

impl PeerIp {
    /// The text of `addr`'s IP, an IPv4-mapped IPv6 address shown as IPv4.
    pub fn of(addr: &SocketAddr) -> PeerIp {
        let mut ip = PeerIp {
            len: 0,
            bytes: [0; MAX],
        };
        let _ = match addr.ip() {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => {
                    ip.push_v4(v4.octets());
                    Ok(())
                }
                None => write!(ip, "{v6}"),
            },
            IpAddr::V4(v4) => {
                ip.push_v4(v4.octets());
                Ok(())
            }
        };
        ip
    }

    /// Writes a dotted quad by hand: `Display` through the formatter cost about a thousand
    /// instructions, a tenth of a connection-per-request's work.
    fn push_v4(&mut self, octets: [u8; 4]) {
        let mut at = 0;
        for (i, o) in octets.into_iter().enumerate() {
            if i > 0 {
                self.bytes[at] = b'.';
                at += 1;
            }
            if o >= 100 {
                self.bytes[at] = b'0' + o / 100;
                at += 1;
            }
            if o >= 10 {
                self.bytes[at] = b'0' + o / 10 % 10;
                at += 1;
            }
            self.bytes[at] = b'0' + o % 10;
            at += 1;
        }
        // At most 15 bytes, within MAX.
        self.len = at as u8;
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Not validated again: a request reads its peer's text several times (admission, the
        // scoreboard, the access line), and checking each time cost about 375 instructions of
        // a 9,000-instruction keep-alive request (callgrind).
        let b = self.bytes.get(..usize::from(self.len)).unwrap_or_default();
        // SAFETY: `bytes[..len]` is written only by `push_v4` (ASCII digits and dots) and by
        // `write_str`, which appends a whole `&str` (valid UTF-8) or nothing; `len` moves only
        // with them and the bytes are private, so `b` is valid UTF-8.
        unsafe { std::str::from_utf8_unchecked(b) }
    }
}

impl From<&str> for PeerIp {
    /// Text such as "unix" (cut at 45 bytes, on a character boundary).
    fn from(text: &str) -> PeerIp {
        let mut ip = PeerIp {
            len: 0,
            bytes: [0; MAX],
        };
        for c in text.chars() {
            if ip.write_char(c).is_err() {
                break;
            }
        }
        ip
    }
}

impl Write for PeerIp {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let start = usize::from(self.len);
        let end = start + s.len();
        let room = self.bytes.get_mut(start..end).ok_or(fmt::Error)?;
        room.copy_from_slice(s.as_bytes());
        self.len = end as u8;
        Ok(())
    }
}

impl Deref for PeerIp {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for PeerIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for PeerIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// The client address as text ("unix" for Unix sockets).
    pub ip: PeerIp,
    /// The client port (0 for Unix sockets).
    pub port: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_held_inline_as_text() {
        let v6: SocketAddr = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:1"
            .parse()
            .unwrap();
        assert_eq!(
            PeerIp::of(&v6).as_str(),
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
        );
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:80".parse().unwrap();
        assert_eq!(&*PeerIp::of(&mapped), "10.0.0.1");
        let v4: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(PeerIp::of(&v4).to_string(), "127.0.0.1");
        for text in ["0.0.0.0", "255.255.255.255", "10.20.100.9", "192.168.1.254"] {
            let a: SocketAddr = format!("{text}:1").parse().unwrap();
            assert_eq!(PeerIp::of(&a).as_str(), text);
        }
        assert_eq!(PeerIp::from("unix").as_str(), "unix");
        assert_eq!(PeerIp::from(&*"x".repeat(50)).len(), MAX);
        // Cut on a character boundary: 22 two-byte characters fit in 45 bytes, not 22.5.
        assert_eq!(PeerIp::from(&*"é".repeat(30)).as_str(), "é".repeat(22));
    }
}
