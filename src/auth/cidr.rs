//! Client networks: `10.0.0.0/8`, `2001:db8::/32`, a single address, or `all`.

use std::net::IpAddr;

/// One network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n`, `v6/n`, a bare address (its own network) or `all`.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        if s == "all" {
            // Matches every IPv4 and IPv6 client, and Unix-socket clients.
            return Ok(Cidr {
                addr: IpAddr::from([0u8; 16]),
                len: 0,
            });
        }
        let (a, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("'{s}' is not an address or network (like 10.0.0.0/8)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => match l.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("'{s}': prefix length must be 0 to {max}")),
            },
        };
        Ok(Cidr { addr, len })
    }

    /// Whether the client at `ip` (text, as the worker keeps it; "unix" for a Unix-socket
    /// client) is in this network.
    pub fn contains(&self, ip: &str) -> bool {
        if self.len == 0 && self.addr == IpAddr::from([0u8; 16]) {
            return true;
        }
        let Ok(ip) = ip.parse::<IpAddr>() else {
            return false;
        };
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(a)) => prefix_eq(&net.octets(), &a.octets(), self.len),
            (IpAddr::V6(net), IpAddr::V6(a)) => prefix_eq(&net.octets(), &a.octets(), self.len),
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], len: u8) -> bool {
    let full = usize::from(len / 8);
    let rest = len % 8;
    if a[..full] != b[..full] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    (a[full] & mask) == (b[full] & mask)
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.len == 0 && self.addr == IpAddr::from([0u8; 16]) {
            return f.write_str("all");
        }
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks() {
        let n = Cidr::parse("10.1.0.0/16").expect("net");
        assert!(n.contains("10.1.200.3"));
        assert!(!n.contains("10.2.0.1"));
        assert!(n.contains("::ffff:10.1.0.9"));
        assert!(!n.contains("unix"));
        let n = Cidr::parse("192.168.1.128/25").expect("net");
        assert!(n.contains("192.168.1.200") && !n.contains("192.168.1.100"));
        let one = Cidr::parse("127.0.0.1").expect("addr");
        assert!(one.contains("127.0.0.1") && !one.contains("127.0.0.2"));
        let v6 = Cidr::parse("2001:db8::/32").expect("v6");
        assert!(v6.contains("2001:db8:1::5") && !v6.contains("2001:db9::1"));
        let all = Cidr::parse("all").expect("all");
        assert!(all.contains("8.8.8.8") && all.contains("::1") && all.contains("unix"));
        assert_eq!(all.to_string(), "all");
        assert_eq!(
            Cidr::parse("10.0.0.0/8").expect("net").to_string(),
            "10.0.0.0/8"
        );
        for bad in ["10.0.0.0/33", "x", "10.0.0/8", "::/129", ""] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }
}
