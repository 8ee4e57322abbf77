//! Host validation: what is accepted is normalised (lowercase, port split off), parses again
//! to itself, and the verdict does not depend on letter case.

use std::net::Ipv6Addr;

use crate::http::host::parse;

/// Fuzz target `host`: `data` is a Host field value (or an absolute-form authority).
pub fn host(data: &[u8]) {
    let verdict = parse(data);
    assert_eq!(
        parse(&data.to_ascii_uppercase()),
        verdict,
        "verdict depends on case"
    );
    let Ok((host, port)) = verdict else {
        return;
    };
    if data.is_empty() {
        assert_eq!((&*host, port), ("", None));
        return;
    }
    assert!(!host.is_empty());
    assert_eq!(host, host.to_ascii_lowercase());
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .unwrap_or_else(|| panic!("{host:?}"));
        assert!(inner.parse::<Ipv6Addr>().is_ok(), "{host:?}");
    } else {
        assert!(!host.contains(':'), "{host:?} still holds a port");
        assert!(
            host.bytes().all(|b| b.is_ascii_graphic()
                && !matches!(b, b'/' | b'?' | b'#' | b'@' | b'[' | b']' | b'"')),
            "{host:?}"
        );
    }
    // The normalised form is accepted and gives itself back.
    let mut again = host.as_bytes().to_vec();
    if let Some(p) = port {
        again.extend_from_slice(format!(":{p}").as_bytes());
    }
    assert_eq!(parse(&again), Ok((host, port)), "normal form not stable");
}
