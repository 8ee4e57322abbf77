//! The PROXY protocol header: an answer from a prefix is final (a header read from the first
//! bytes is the same whatever follows, a refusal stays a refusal), the length stays within the
//! input and the protocol's bounds, and a v1 source written back out reads the same.

use super::split::prefix_lengths;
use crate::proxy_protocol::parse;

/// Fuzz target `proxy_header`: `data` is the start of a connection on a PROXY listener.
pub fn proxy_header(data: &[u8]) {
    let whole = parse(data);
    for n in prefix_lengths(data.len()) {
        match parse(&data[..n]) {
            Ok(None) => {}
            v => assert_eq!(v, whole, "a prefix of {n} bytes decided differently"),
        }
    }
    let Ok(Some((h, len))) = whole else {
        return;
    };
    assert!(len <= data.len() && len <= 16 + 2048, "length {len}");
    if data.starts_with(b"PROXY ") {
        assert!(len <= 107 && data[..len].ends_with(b"\r\n"));
        if let Some(src) = h.source {
            let fam = if src.is_ipv4() { "TCP4" } else { "TCP6" };
            let dst = if src.is_ipv4() { "0.0.0.0" } else { "::" };
            let line = format!("PROXY {fam} {} {dst} {} 1\r\n", src.ip(), src.port());
            let again = parse(line.as_bytes());
            assert_eq!(again.map(|o| o.map(|(h, _)| h)), Ok(Some(h)), "{line:?}");
        }
    }
}
