//! The real client address behind trusted proxies (lighttpd's mod_extforward, nginx's realip):
//! `trusted_proxies = { "10.0.0.0/8", "::1" }` in `server{}`.
//!
//! `X-Forwarded-For` is read only from a trusted peer, right to left: each proxy appends the
//! address it got the request from, so the rightmost address that is not itself a trusted proxy
//! is the client (the entries left of it were written by the client, who may lie). If every
//! entry is trusted, the leftmost is taken; an entry that is not an IP address stops the walk
//! (what is left of it cannot be trusted) and the nearest address found so far is kept.
//! Sans-IO: text in, text out.

use std::net::IpAddr;

/// An address range: an IP and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `10.0.0.0/8`, `2001:db8::/32`, or a single address (`127.0.0.1`, `::1`).
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = ip.parse().map_err(|_| {
            format!("'{s}' is not an IP address or range (write 10.0.0.0/8 or ::1)")
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("'{s}' has a prefix length that is not 0 to {max}")),
            },
        };
        Ok(Cidr {
            addr: canonical(addr),
            prefix,
        })
    }

    /// Whether `ip` lies in the range (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether `peer` (an address as text) is one of `trusted`.
pub fn is_trusted(trusted: &[Cidr], peer: &str) -> bool {
    peer.parse::<IpAddr>()
        .is_ok_and(|ip| trusted.iter().any(|c| c.contains(ip)))
}

/// The client address for a request from `peer` carrying `xff` (the X-Forwarded-For value,
/// several fields joined with commas), or None to keep `peer`.
pub fn from_forwarded_for(trusted: &[Cidr], peer: &str, xff: Option<&[u8]>) -> Option<IpAddr> {
    let xff = xff?;
    if trusted.is_empty() || !is_trusted(trusted, peer) {
        return None;
    }
    let text = std::str::from_utf8(xff).ok()?;
    let mut found = None;
    for entry in text.rsplit(',') {
        let Ok(ip) = entry.trim().parse::<IpAddr>() else {
            break;
        };
        let ip = canonical(ip);
        found = Some(ip);
        if !trusted.iter().any(|c| c.contains(ip)) {
            break;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<Cidr> {
        s.iter().map(|c| Cidr::parse(c).unwrap()).collect()
    }

    #[test]
    fn ranges() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains("10.200.1.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("1.2.3.4".parse().unwrap()));
        assert!(Cidr::parse("2001:db8::/32")
            .unwrap()
            .contains("2001:db8:1::1".parse().unwrap()));
        assert!(Cidr::parse("::1").unwrap().contains("::1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("example.com").is_err());
        assert!(Cidr::parse("1.2.3.4/x").is_err());
    }

    #[test]
    fn the_rightmost_untrusted_address_wins() {
        let t = nets(&["127.0.0.1", "10.0.0.0/8"]);
        let got = |peer: &str, xff: &str| from_forwarded_for(&t, peer, Some(xff.as_bytes()));
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(
            got("127.0.0.1", "1.1.1.1, 2.2.2.2, 10.0.0.5"),
            ip("2.2.2.2")
        );
        assert_eq!(got("127.0.0.1", "10.0.0.7, 10.0.0.5"), ip("10.0.0.7"));
        assert_eq!(got("127.0.0.1", " 2001:db8::1 "), ip("2001:db8::1"));
        // An untrusted peer's header is ignored, whatever it says.
        assert_eq!(got("192.0.2.9", "1.1.1.1"), None);
        // Garbage stops the walk: the nearest address found stays.
        assert_eq!(got("127.0.0.1", "1.1.1.1, junk, 10.0.0.5"), ip("10.0.0.5"));
        assert_eq!(got("127.0.0.1", "junk"), None);
        assert_eq!(from_forwarded_for(&t, "127.0.0.1", None), None);
        assert_eq!(from_forwarded_for(&[], "127.0.0.1", Some(b"1.1.1.1")), None);
    }
}
