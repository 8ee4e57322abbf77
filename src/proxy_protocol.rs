//! The PROXY protocol (HAProxy's, versions 1 and 2): the header a load balancer sends first on
//! a connection to say who the client is. Sans-IO: bytes in, the header's facts and its length
//! out; the connection (`worker/conn.rs`) reads it before the first request head on listeners
//! marked `proxy_protocol = true`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature.
const SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 line, CRLF included (the spec's 107 bytes).
const V1_MAX: usize = 107;
/// The longest v2 header accepted (addresses and TLVs); the spec allows up to 64 KiB, load
/// balancers send a few hundred bytes at most.
const V2_MAX: usize = 16 + 2048;

/// What a header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The client's address, None for a `LOCAL` (health check) or `UNKNOWN` connection, or
    /// an address family other than TCP/UDP over IPv4/IPv6.
    pub source: Option<SocketAddr>,
}

/// Why a header is refused (the connection is then closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalid(pub &'static str);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad PROXY protocol header: {}", self.0)
    }
}

/// Reads a header from the start of `buf`: Ok(None) while more bytes are needed, else the
/// header and how many bytes it took.
pub fn parse(buf: &[u8]) -> Result<Option<(Header, usize)>, Invalid> {
    let n = buf.len().min(SIG.len());
    if buf[..n] == SIG[..n] {
        return if buf.len() < 16 { Ok(None) } else { v2(buf) };
    }
    let n = buf.len().min(6);
    if buf[..n] == b"PROXY "[..n] {
        return v1(buf);
    }
    Err(Invalid("the connection does not start with one"))
}

fn v1(buf: &[u8]) -> Result<Option<(Header, usize)>, Invalid> {
    let Some(end) = buf.windows(2).take(V1_MAX - 1).position(|w| w == b"\r\n") else {
        return if buf.len() < V1_MAX {
            Ok(None)
        } else {
            Err(Invalid("v1 line longer than 107 bytes"))
        };
    };
    let line = std::str::from_utf8(&buf[6..end]).map_err(|_| Invalid("v1 line not ASCII"))?;
    let len = end + 2;
    let mut f = line.split(' ');
    let proto = f.next().unwrap_or("");
    if proto == "UNKNOWN" {
        return Ok(Some((Header { source: None }, len)));
    }
    let (src, _dst, sport, _dport) = match (f.next(), f.next(), f.next(), f.next(), f.next()) {
        (Some(a), Some(b), Some(c), Some(d), None) => (a, b, c, d),
        _ => {
            return Err(Invalid(
                "v1 line needs protocol, two addresses and two ports",
            ))
        }
    };
    let ip: IpAddr = match proto {
        "TCP4" => IpAddr::V4(src.parse().map_err(|_| Invalid("v1 bad IPv4 address"))?),
        "TCP6" => IpAddr::V6(src.parse().map_err(|_| Invalid("v1 bad IPv6 address"))?),
        _ => return Err(Invalid("v1 protocol must be TCP4, TCP6 or UNKNOWN")),
    };
    let ok_port = |p: &str| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit());
    if !ok_port(sport) || !ok_port(_dport) {
        return Err(Invalid("v1 bad port"));
    }
    let port: u16 = sport.parse().map_err(|_| Invalid("v1 bad port"))?;
    Ok(Some((
        Header {
            source: Some(SocketAddr::new(ip, port)),
        },
        len,
    )))
}

fn v2(buf: &[u8]) -> Result<Option<(Header, usize)>, Invalid> {
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 {
        return Err(Invalid("v2 version is not 2"));
    }
    let fam = buf[13];
    let body = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let len = 16 + body;
    if len > V2_MAX {
        return Err(Invalid("v2 header too long"));
    }
    if buf.len() < len {
        return Ok(None);
    }
    let a = &buf[16..len];
    let source = match ver_cmd & 0xf {
        0 => None, // LOCAL: the balancer's own connection (a health check)
        1 => match fam >> 4 {
            1 if a.len() >= 12 => Some(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])),
                u16::from_be_bytes([a[8], a[9]]),
            )),
            2 if a.len() >= 36 => {
                let mut ip = [0u8; 16];
                ip.copy_from_slice(&a[..16]);
                Some(SocketAddr::new(
                    IpAddr::V6(Ipv6Addr::from(ip)),
                    u16::from_be_bytes([a[32], a[33]]),
                ))
            }
            1 | 2 => return Err(Invalid("v2 address block too short")),
            // AF_UNSPEC or AF_UNIX: no IP to take.
            _ => None,
        },
        _ => return Err(Invalid("v2 command is neither LOCAL nor PROXY")),
    };
    Ok(Some((Header { source }, len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2_tcp4(cmd: u8) -> Vec<u8> {
        let mut b = SIG.to_vec();
        b.extend_from_slice(&[0x20 | cmd, 0x11, 0, 12 + 3]);
        b.extend_from_slice(&[192, 0, 2, 7, 10, 0, 0, 1, 0x1f, 0x90, 0, 80]);
        b.extend_from_slice(&[0xEE, 0, 0]); // a TLV (ignored)
        b
    }

    #[test]
    fn v1_lines() {
        let (h, n) = parse(b"PROXY TCP4 192.0.2.1 10.0.0.1 56324 443\r\nGET /")
            .unwrap()
            .unwrap();
        assert_eq!(h.source, Some("192.0.2.1:56324".parse().unwrap()));
        assert_eq!(n, 41);
        let (h, _) = parse(b"PROXY TCP6 2001:db8::1 ::1 1 2\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.source, Some("[2001:db8::1]:1".parse().unwrap()));
        assert_eq!(parse(b"PROXY UNKNOWN\r\n").unwrap().unwrap().0.source, None);
        assert_eq!(parse(b"PROX").unwrap(), None);
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4").unwrap(), None);
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(parse(&[b"PROXY ".as_slice(), &[b'x'; 120]].concat()).is_err());
    }

    #[test]
    fn v2_headers() {
        let b = v2_tcp4(1);
        let (h, n) = parse(&b).unwrap().unwrap();
        assert_eq!(h.source, Some("192.0.2.7:8080".parse().unwrap()));
        assert_eq!(n, b.len());
        for cut in 0..b.len() {
            assert_eq!(parse(&b[..cut]).unwrap(), None, "cut {cut}");
        }
        assert_eq!(parse(&v2_tcp4(0)).unwrap().unwrap().0.source, None);
        assert!(parse(&v2_tcp4(2)).is_err());
        let mut six = SIG.to_vec();
        six.extend_from_slice(&[0x21, 0x21, 0, 36]);
        six.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        six.extend_from_slice(&[0; 12]);
        six.extend_from_slice(&[0; 16]);
        six.extend_from_slice(&[0, 9, 0, 80]);
        assert_eq!(
            parse(&six).unwrap().unwrap().0.source,
            Some("[2001:db8::]:9".parse().unwrap())
        );
        let mut short = SIG.to_vec();
        short.extend_from_slice(&[0x21, 0x11, 0, 4, 1, 2, 3, 4]);
        assert!(parse(&short).is_err());
        let mut long = SIG.to_vec();
        long.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert!(parse(&long).is_err());
    }
}
