//! Path decoding: the decoded path never leaves the document root, and decoding is the
//! inverse of percent-encoding for every path it produces.

use std::path::{Component, Path};

use crate::http::path::{decode, remove_dot_segments};

/// Panics unless `p` is a path that stays beneath any root it is joined to: absolute, no `.`
/// or `..` segment, no NUL or other control byte.
pub(crate) fn check_beneath(p: &str) {
    assert!(p.starts_with('/'), "{p:?} is not absolute");
    assert!(
        !p.bytes().any(|b| b < 0x20 || b == 0x7f),
        "{p:?} holds a control byte"
    );
    assert!(
        !p.split('/').any(|s| s == "." || s == ".."),
        "{p:?} holds a dot segment"
    );
    let root = Path::new("/srv/root");
    let joined = root.join(p.trim_start_matches('/'));
    assert!(joined.starts_with(root), "{p:?} escapes the root");
    assert!(
        joined
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_))),
        "{p:?} joins to {joined:?}"
    );
}

/// Percent-encodes every byte of `p` except unreserved characters and '/'.
fn encode(p: &str) -> String {
    let mut out = String::with_capacity(p.len() * 3);
    for b in p.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Fuzz target `path`: `data` is the path part of a request target (read as UTF-8, lossily,
/// since the request parser only hands over visible ASCII anyway).
pub fn path(data: &[u8]) {
    let raw = String::from_utf8_lossy(data);
    let cleaned = remove_dot_segments(&raw);
    check_beneath_or_control(&cleaned);
    assert_eq!(remove_dot_segments(&cleaned), cleaned, "not idempotent");

    let Ok(p) = decode(&raw) else {
        return;
    };
    check_beneath(&p);
    // Decoding what we would encode gives the path back (and only once: `%25` stays `%`).
    assert_eq!(decode(&encode(&p)).as_deref(), Ok(&*p));
    if !raw.contains('%') {
        assert_eq!(p, remove_dot_segments(&raw));
    }
}

/// [`check_beneath`] for `remove_dot_segments` alone, which does not refuse control bytes.
fn check_beneath_or_control(p: &str) {
    assert!(p.starts_with('/'), "{p:?} is not absolute");
    assert!(
        !p.split('/').any(|s| s == "." || s == ".."),
        "{p:?} holds a dot segment"
    );
}
