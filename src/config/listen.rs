//! Parsing listen and backend addresses, and making config paths absolute.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Component, Path, PathBuf};

use super::ListenAddr;

/// Longest Unix socket path the kernel accepts: `sun_path` is 108 bytes including the NUL.
const UNIX_PATH_MAX: usize = 107;

/// Parses `127.0.0.1:8080`, `[::1]:8080`, `*:8080` (all IPv4 addresses) or `unix:/path` (a
/// relative path is taken relative to `base`). The error is a sentence about `s`.
/// `ephemeral` allows port 0 (a listener whose port the kernel picks and the start-up log
/// reports, which tests use); a backend address needs a real port.
pub(super) fn parse(s: &str, base: &Path, ephemeral: bool) -> Result<ListenAddr, String> {
    if let Some(path) = s.strip_prefix("unix:") {
        if path.is_empty() {
            return Err(format!("address '{s}' has an empty socket path"));
        }
        if path.contains('\0') {
            return Err(format!("address '{s}' contains a NUL byte"));
        }
        let abs = resolve(base, path);
        let len = abs.as_os_str().len();
        if len > UNIX_PATH_MAX {
            return Err(format!(
                "socket path {} is {len} bytes long, Unix sockets allow at most {UNIX_PATH_MAX}",
                abs.display()
            ));
        }
        return Ok(ListenAddr::Unix(abs));
    }
    let bad = || format!("address '{s}' is not IP:port, [IPv6]:port, *:port or unix:/path");
    let addr = match s.strip_prefix("*:") {
        Some(port) => {
            let port: u16 = port.parse().map_err(|_| bad())?;
            SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
        }
        None => s.parse::<SocketAddr>().map_err(|_| bad())?,
    };
    if addr.port() == 0 && !ephemeral {
        return Err(format!(
            "address '{s}' has port 0; the port must be 1 to 65535"
        ));
    }
    Ok(ListenAddr::Tcp(addr))
}

/// How an address is written in a config: the inverse of `parse` for normalised addresses.
pub(super) fn format(addr: &ListenAddr) -> String {
    match addr {
        ListenAddr::Tcp(a) => a.to_string(),
        ListenAddr::Unix(p) => format!("unix:{}", p.display()),
    }
}

/// `path` made absolute against `base`, with `.` components dropped. `..` is kept: resolving it
/// lexically would be wrong across symlinks, and the path may not exist yet (logs, sockets).
pub(super) fn resolve(base: &Path, path: &str) -> PathBuf {
    let joined = base.join(path);
    let mut out = PathBuf::new();
    for c in joined.components() {
        if c != Component::CurDir {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(s: &str) -> ListenAddr {
        ListenAddr::Tcp(s.parse().expect("test address"))
    }

    #[test]
    fn port_zero_only_for_listeners() {
        let base = Path::new("/srv");
        assert_eq!(parse("127.0.0.1:0", base, true), Ok(tcp("127.0.0.1:0")));
        assert!(parse("127.0.0.1:0", base, false).is_err());
    }

    #[test]
    fn parses_the_forms() {
        let base = Path::new("/etc/site");
        assert_eq!(
            parse("127.0.0.1:8080", base, false),
            Ok(tcp("127.0.0.1:8080"))
        );
        assert_eq!(parse("[::1]:8080", base, false), Ok(tcp("[::1]:8080")));
        assert_eq!(parse("*:80", base, false), Ok(tcp("0.0.0.0:80")));
        assert_eq!(
            parse("unix:/run/a.sock", base, false),
            Ok(ListenAddr::Unix("/run/a.sock".into()))
        );
        assert_eq!(
            parse("unix:run/./a.sock", base, false),
            Ok(ListenAddr::Unix("/etc/site/run/a.sock".into()))
        );
    }

    #[test]
    fn rejects_bad_ones() {
        let base = Path::new("/");
        for bad in [
            "localhost:80",
            "127.0.0.1",
            "*:0",
            "*:70000",
            "1.2.3.4:0",
            "::1:80",
            "unix:",
            "",
        ] {
            assert!(parse(bad, base, false).is_err(), "{bad} should be rejected");
        }
        let long = format!("unix:/{}", "x".repeat(200));
        assert!(parse(&long, base, false).is_err());
    }

    #[test]
    fn format_round_trips() {
        for s in ["127.0.0.1:8080", "[::1]:443", "unix:/run/x.sock"] {
            let a = parse(s, Path::new("/"), false).expect("valid");
            assert_eq!(parse(&format(&a), Path::new("/"), false), Ok(a));
        }
    }
}
