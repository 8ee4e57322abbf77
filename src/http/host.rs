//! Host header validation (RFC 9112 §3.2, RFC 3986 §3.2.2).
//!
//! `host [ ":" port ]` where host is an IP-literal in brackets (IPv6 only; IPvFuture is refused),
//! an IPv4 address or a reg-name of unreserved, pct-encoded and sub-delims characters. IPv4
//! addresses are valid reg-names, so they need no separate rule.

use std::borrow::Cow;
use std::net::Ipv6Addr;

/// Whether `b` may appear unescaped in a reg-name (unreserved or sub-delims).
#[inline]
fn is_reg_name_byte(b: u8) -> bool {
    matches!(b,
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~'
        | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=')
}

/// Parses the optional port after the host: empty, or ':' and 0-5 digits up to 65535. RFC 3986
/// §3.2.3 allows `port = *DIGIT`; an empty port (`example.com:`) means no port.
fn parse_port(rest: &[u8]) -> Result<Option<u16>, ()> {
    let Some(digits) = rest.strip_prefix(b":") else {
        return if rest.is_empty() { Ok(None) } else { Err(()) };
    };
    if digits.is_empty() {
        return Ok(None);
    }
    if digits.len() > 5 {
        return Err(());
    }
    let mut port: u32 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(());
        }
        port = port * 10 + u32::from(d - b'0');
    }
    u16::try_from(port).map(Some).map_err(|_| ())
}

/// Splits and validates a Host value into (lowercased host, optional port).
/// IP literals keep their brackets. Errors mean 400.
///
/// An empty value gives `("", None)`: RFC 9112 §3.2 allows an empty Host when the target URI
/// has no authority, and the caller decides whether that applies. An empty host before a port
/// (`:80`) is refused.
// The `()` error is the given interface: every failure means the same 400.
#[allow(clippy::result_unit_err)]
pub fn parse(value: &[u8]) -> Result<(Cow<'_, str>, Option<u16>), ()> {
    if value.is_empty() {
        return Ok((Cow::Borrowed(""), None));
    }
    if value[0] == b'[' {
        let close = memchr::memchr(b']', value).ok_or(())?;
        let inner = &value[1..close];
        // IPvFuture ("v1.xyz") is refused; a zone id ("%25eth0") is not allowed in a Host.
        let text = std::str::from_utf8(inner).map_err(|_| ())?;
        text.parse::<Ipv6Addr>().map_err(|_| ())?;
        let port = parse_port(&value[close + 1..])?;
        let mut host = String::with_capacity(close + 1);
        host.push('[');
        host.push_str(&text.to_ascii_lowercase());
        host.push(']');
        return Ok((Cow::Owned(host), port));
    }
    let end = memchr::memchr(b':', value).unwrap_or(value.len());
    let name = &value[..end];
    if name.is_empty() {
        return Err(());
    }
    let mut i = 0;
    while i < name.len() {
        let b = name[i];
        if b == b'%' {
            let ok = name.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && name.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
            if !ok {
                return Err(());
            }
            i += 3;
        } else if is_reg_name_byte(b) {
            i += 1;
        } else {
            return Err(());
        }
    }
    let port = parse_port(&value[end..])?;
    // Only ASCII bytes were accepted above; most hosts are lowercase already, and are then
    // borrowed rather than copied.
    let host = std::str::from_utf8(name).map_err(|_| ())?;
    let host = if name.iter().any(u8::is_ascii_uppercase) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    };
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(v: &str) -> (String, Option<u16>) {
        let (host, port) = parse(v.as_bytes()).unwrap_or_else(|_| panic!("refused {v:?}"));
        (host.into_owned(), port)
    }

    #[test]
    fn good_hosts() {
        assert_eq!(ok("example.com"), ("example.com".into(), None));
        assert_eq!(ok("Example.COM"), ("example.com".into(), None));
        assert_eq!(ok("example.com:8080"), ("example.com".into(), Some(8080)));
        assert_eq!(ok("example.com:0"), ("example.com".into(), Some(0)));
        assert_eq!(ok("a:65535"), ("a".into(), Some(65535)));
        assert_eq!(ok("a:00080"), ("a".into(), Some(80)));
        assert_eq!(ok("127.0.0.1"), ("127.0.0.1".into(), None));
        assert_eq!(ok("127.0.0.1:80"), ("127.0.0.1".into(), Some(80)));
        assert_eq!(ok("[::1]"), ("[::1]".into(), None));
        assert_eq!(ok("[::1]:443"), ("[::1]".into(), Some(443)));
        assert_eq!(ok("[2001:DB8::1]"), ("[2001:db8::1]".into(), None));
        assert_eq!(ok("a%41b"), ("a%41b".into(), None));
        assert_eq!(ok("a_b~c!$&'()*+,;="), ("a_b~c!$&'()*+,;=".into(), None));
        assert_eq!(ok(""), ("".into(), None));
        // RFC 3986: port = *DIGIT, so an empty port is valid and means no port.
        assert_eq!(ok("example.com:"), ("example.com".into(), None));
        assert_eq!(ok("[::1]:"), ("[::1]".into(), None));
    }

    #[test]
    fn bad_hosts() {
        for v in [
            "example.com:65536",
            "example.com:123456",
            "example.com:8a",
            "example.com:-1",
            "example.com:+1",
            ":80",
            "[::1",
            "::1]",
            "a]",
            "a[b",
            "[::1]x",
            "[]",
            "[v1.abc]",
            "[::1%25eth0]",
            "[1.2.3.4]",
            "a b",
            "a\tb",
            "a/b",
            "a@b",
            "user@host",
            "a%4",
            "a%zz",
            "a:80:90",
            "caf\u{e9}",
            "a\0",
        ] {
            assert!(parse(v.as_bytes()).is_err(), "accepted {v:?}");
        }
        assert!(parse(b"\xff").is_err());
    }
}
