//! Parsing listen and backend addresses, and making config paths absolute.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Component, Path, PathBuf};

use super::ListenAddr;

/// Longest Unix socket path the kernel accepts: `sun_path` is 108 bytes including the NUL.
pub(super) const UNIX_PATH_MAX: usize = 107;

/// What an address is for; the two differ in what they accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Use {
    /// A `listen` address: port 0 is allowed (the kernel picks one and the start-up log reports
    /// it, which tests use); a Unix socket needs the `unix:` prefix.
    Listen,
    /// A backend's `socket` or `address`: the port must be real, and a bare path with a '/'
    /// (`/run/php.sock`, `./php.sock`, as lighttpd writes it) is a Unix socket too.
    Backend,
}

/// Parses `127.0.0.1:8080`, `[::1]:8080`, `*:8080` (all IPv4 addresses), `unix:/path` or, for
/// a backend, a bare path containing '/'. A relative path is taken relative to `base`. The error
/// says what is wrong with `s` and, where it can be guessed, what was meant; it starts with the
/// quoted address (or "is empty"), for the caller to put the key's name in front.
pub(super) fn parse(s: &str, base: &Path, usage: Use) -> Result<ListenAddr, String> {
    if let Some(path) = s.strip_prefix("unix:") {
        return unix(s, path, base);
    }
    if usage == Use::Backend && s.contains('/') {
        return unix(s, s, base);
    }
    let addr = tcp(s, usage)?;
    if addr.port() == 0 && usage == Use::Backend {
        return Err(format!("'{s}' has port 0; the port must be 1 to 65535"));
    }
    if addr.ip().is_unspecified() && usage == Use::Backend {
        // Connecting to it only happens to reach this host; a spawned process bound to it
        // would take FastCGI requests from the whole network.
        return Err(format!(
            "'{s}' means every address of this host; a backend needs one: write '127.0.0.1:{}'",
            addr.port()
        ));
    }
    Ok(ListenAddr::Tcp(addr))
}

/// A Unix socket path (`path` is `s` without its `unix:` prefix, if any).
fn unix(s: &str, path: &str, base: &Path) -> Result<ListenAddr, String> {
    if path.is_empty() {
        return Err(format!("'{s}' has an empty socket path"));
    }
    if path.contains('\0') {
        return Err(format!("'{s}' contains a NUL byte"));
    }
    let abs = resolve(base, path);
    let len = abs.as_os_str().len();
    if len > UNIX_PATH_MAX {
        return Err(format!(
            "'{s}': the socket path {} is {len} bytes long, Unix sockets allow at most {UNIX_PATH_MAX}",
            abs.display()
        ));
    }
    Ok(ListenAddr::Unix(abs))
}

/// A TCP address, or a sentence on why `s` is not one.
fn tcp(s: &str, usage: Use) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let forms = match usage {
        Use::Listen => "IP:port, [IPv6]:port, *:port or unix:/path",
        Use::Backend => "IP:port, [IPv6]:port, unix:/path or a socket path such as /run/php.sock",
    };
    if s.is_empty() {
        return Err(format!("is empty; write {forms}"));
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(match usage {
            Use::Listen => format!(
                "'{s}' is only a port; did you mean '*:{s}' (all IPv4 addresses) or '127.0.0.1:{s}'?"
            ),
            Use::Backend => format!("'{s}' is only a port; did you mean '127.0.0.1:{s}'?"),
        });
    }
    let bracketed = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok());
    if bracketed {
        return Err(format!("'{s}' has no port; write {s}:PORT"));
    }
    if s.parse::<IpAddr>().is_ok() {
        let host = if s.contains(':') {
            format!("[{s}]")
        } else {
            s.to_string()
        };
        let hint = if s.contains(':') {
            " (an IPv6 address with a port is written in brackets, like [::1]:8080)"
        } else {
            ""
        };
        return Err(format!("'{s}' has no port; write {host}:PORT{hint}"));
    }
    // Split host and port at the last ':'; "[v6]:port" keeps its brackets in `host`.
    if s.contains('/') {
        return Err(format!("'{s}' is not {forms}; did you mean 'unix:{s}'?"));
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        let hint = match usage {
            Use::Backend => format!(" (a socket path needs a '/': './{s}' or 'unix:{s}')"),
            Use::Listen => String::new(),
        };
        return Err(format!("'{s}' is not {forms}{hint}"));
    };
    let ip_host = match host {
        "*" => Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        h => h
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(h)
            .parse::<IpAddr>()
            .ok(),
    };
    let Some(ip) = ip_host else {
        if host.contains(':') && !host.starts_with('[') {
            return Err(format!(
                "'{s}': an IPv6 address needs brackets, like [::1]:8080"
            ));
        }
        if host.is_empty() {
            return Err(match usage {
                Use::Listen => format!(
                    "'{s}' has no host; did you mean '*{s}' (all IPv4 addresses) or '127.0.0.1{s}'?"
                ),
                Use::Backend => format!("'{s}' has no host; did you mean '127.0.0.1{s}'?"),
            });
        }
        return Err(format!(
            "'{s}': host names are not resolved; use an IP address (127.0.0.1:{port} for localhost)"
        ));
    };
    if matches!(ip, IpAddr::V6(_)) && !host.starts_with('[') {
        return Err(format!(
            "'{s}': an IPv6 address needs brackets, like [::1]:8080"
        ));
    }
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "'{s}' has no valid port ('{port}'); the port is a number from 1 to 65535"
        ));
    }
    match port.parse::<u16>() {
        Ok(p) => Ok(SocketAddr::new(ip, p)),
        Err(_) => Err(format!(
            "'{s}': port {port} is out of range; the port must be 1 to 65535"
        )),
    }
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

    fn err(s: &str, usage: Use) -> String {
        match parse(s, Path::new("/srv"), usage) {
            Ok(a) => panic!("{s} should be rejected, got {a:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn port_zero_only_for_listeners() {
        let base = Path::new("/srv");
        assert_eq!(
            parse("127.0.0.1:0", base, Use::Listen),
            Ok(tcp("127.0.0.1:0"))
        );
        assert!(parse("127.0.0.1:0", base, Use::Backend).is_err());
        assert!(parse("*:0", base, Use::Backend).is_err());
    }

    #[test]
    fn parses_the_forms() {
        let base = Path::new("/etc/site");
        assert_eq!(parse("*:80", base, Use::Listen), Ok(tcp("0.0.0.0:80")));
        for usage in [Use::Listen, Use::Backend] {
            assert_eq!(
                parse("127.0.0.1:8080", base, usage),
                Ok(tcp("127.0.0.1:8080"))
            );
            assert_eq!(parse("[::1]:8080", base, usage), Ok(tcp("[::1]:8080")));
            assert_eq!(
                parse("unix:/run/a.sock", base, usage),
                Ok(ListenAddr::Unix("/run/a.sock".into()))
            );
            assert_eq!(
                parse("unix:run/./a.sock", base, usage),
                Ok(ListenAddr::Unix("/etc/site/run/a.sock".into()))
            );
        }
    }

    #[test]
    fn a_bare_path_is_a_unix_socket_for_backends_only() {
        let base = Path::new("/etc/site");
        assert_eq!(
            parse("/tmp/php.sock", base, Use::Backend),
            Ok(ListenAddr::Unix("/tmp/php.sock".into()))
        );
        assert_eq!(
            parse("./run/php.sock", base, Use::Backend),
            Ok(ListenAddr::Unix("/etc/site/run/php.sock".into()))
        );
        assert_eq!(
            parse("run/php.sock", base, Use::Backend),
            Ok(ListenAddr::Unix("/etc/site/run/php.sock".into()))
        );
        assert!(err("/tmp/php.sock", Use::Listen).contains("did you mean 'unix:/tmp/php.sock'"));
        let long = format!("/{}", "x".repeat(200));
        assert!(err(&long, Use::Backend).contains("at most 107"));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let e = err("8080", Use::Listen);
        assert!(e.contains("did you mean '*:8080'"), "{e}");
        let e = err(":8080", Use::Listen);
        assert!(e.contains("did you mean '*:8080'"), "{e}");
        // A backend is never "all addresses": the hint is the loopback one.
        for s in ["8080", ":8080"] {
            let e = err(s, Use::Backend);
            assert!(
                e.contains("did you mean '127.0.0.1:8080'") && !e.contains("'*:"),
                "{e}"
            );
        }
        for s in ["*:8080", "0.0.0.0:8080", "[::]:8080"] {
            let e = err(s, Use::Backend);
            assert!(
                e.contains("every address") && e.contains("'127.0.0.1:8080'"),
                "{s}: {e}"
            );
            assert!(parse(s, Path::new("/"), Use::Listen).is_ok(), "{s}");
        }
        for usage in [Use::Listen, Use::Backend] {
            let e = err("*:70000", usage);
            assert!(e.contains("out of range"), "{e}");
            let e = err("127.0.0.1:65536", usage);
            assert!(e.contains("out of range"), "{e}");
            let e = err("localhost:8080", usage);
            assert!(
                e.contains("not resolved") && e.contains("127.0.0.1:8080"),
                "{e}"
            );
            let e = err("127.0.0.1", usage);
            assert!(e.contains("no port") && e.contains("127.0.0.1:PORT"), "{e}");
            let e = err("127.0.0.1:http", usage);
            assert!(e.contains("no valid port"), "{e}");
            let e = err("[::1]", usage);
            assert!(e.contains("no port") && e.contains("[::1]:PORT"), "{e}");
            let e = err("fe80::1:80", usage);
            assert!(e.contains("brackets"), "{e}");
        }
        assert!(err("php.sock", Use::Backend).contains("'./php.sock'"));
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
            "*:",
            "*:+80",
        ] {
            assert!(
                parse(bad, base, Use::Backend).is_err(),
                "{bad} should be rejected"
            );
        }
        let long = format!("unix:/{}", "x".repeat(200));
        assert!(parse(&long, base, Use::Listen).is_err());
    }

    #[test]
    fn format_round_trips() {
        for s in ["127.0.0.1:8080", "[::1]:443", "unix:/run/x.sock"] {
            let a = parse(s, Path::new("/"), Use::Listen).expect("valid");
            assert_eq!(parse(&format(&a), Path::new("/"), Use::Listen), Ok(a));
        }
    }
}
