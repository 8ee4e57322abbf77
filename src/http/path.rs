//! The request path: percent-decoding once, refusing what must never reach a file system,
//! and removing dot segments (RFC 3986 §5.2.4).
//!
//! Decoding happens exactly once. A decoded `%2F` becomes a plain '/' and from then on acts as a
//! segment separator, as in lighttpd; likewise `%2e%2e` decodes to `..` and is removed as a dot
//! segment. So nothing that reaches the file system can climb above the document root, however
//! it was spelled on the wire.

use std::borrow::Cow;

/// Why a path was refused (always 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// `%` not followed by two hex digits.
    BadEscape,
    /// `%00` or a raw or decoded NUL.
    Nul,
    /// A control byte (raw or decoded).
    Control,
    /// Not valid UTF-8 after decoding.
    NotUtf8,
    /// Does not start with '/'.
    NotAbsolute,
}

/// The value of an ASCII hex digit.
#[inline]
fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Refuses NUL and the other control bytes (0x00-0x1F, 0x7F).
#[inline]
fn check_byte(b: u8) -> Result<(), PathError> {
    match b {
        0 => Err(PathError::Nul),
        0x01..=0x1f | 0x7f => Err(PathError::Control),
        _ => Ok(()),
    }
}

/// The bytes the plain pass of [`decode`] looks at: control bytes, DEL, '%' and '.'; it
/// steps over the others with one table load each.
const STOPS: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = true;
        b += 1;
    }
    t[0x7f] = true;
    t[b'%' as usize] = true;
    t[b'.' as usize] = true;
    t
};

/// Decodes `raw` (the path part of an origin-form target) once and removes dot segments.
/// The result starts with '/'; a trailing slash is kept. Borrowed when nothing changed (the
/// common case: no escapes, no dot segments), so the request head allocates nothing for it.
pub fn decode(raw: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    // One pass over the common path (no escapes), stopping only at the bytes of STOPS: control
    // bytes refused, dot segments noticed. A '%' ends it and the path is decoded from the
    // start, so errors come in byte order.
    let mut dot_segment = false;
    let mut escaped = false;
    let mut i = 0;
    loop {
        while i < bytes.len() && !STOPS[usize::from(bytes[i])] {
            i += 1;
        }
        let Some(&b) = bytes.get(i) else { break };
        match b {
            b'.' => dot_segment |= i > 0 && bytes[i - 1] == b'/',
            b'%' => {
                escaped = true;
                break;
            }
            _ => check_byte(b)?,
        }
        i += 1;
    }
    if !escaped {
        return Ok(if dot_segment {
            Cow::Owned(remove_dot_segments(raw))
        } else {
            Cow::Borrowed(raw)
        });
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex_val);
            let lo = bytes.get(i + 2).copied().and_then(hex_val);
            match (hi, lo) {
                (Some(hi), Some(lo)) => {
                    let d = (hi << 4) | lo;
                    check_byte(d)?;
                    out.push(d);
                    i += 3;
                }
                _ => return Err(PathError::BadEscape),
            }
        } else {
            check_byte(b)?;
            out.push(b);
            i += 1;
        }
    }
    let decoded = String::from_utf8(out).map_err(|_| PathError::NotUtf8)?;
    if memchr::memmem::find(decoded.as_bytes(), b"/.").is_none() {
        return Ok(Cow::Owned(decoded));
    }
    Ok(Cow::Owned(remove_dot_segments(&decoded)))
}

/// Removes `.` and `..` segments from an absolute path; `..` never climbs above '/'.
///
/// Follows RFC 3986 §5.2.4 for absolute paths: empty segments (`//`) are kept, a path that ends
/// in a dot segment keeps a trailing slash (`/a/b/..` → `/a/`). A path that does not start with
/// '/' is treated as if it did; the result always starts with '/'.
pub fn remove_dot_segments(path: &str) -> String {
    let rest = path.strip_prefix('/').unwrap_or(path);
    let mut out = String::with_capacity(path.len() + 1);
    let mut trailing = false;
    let mut segs = rest.split('/').peekable();
    while let Some(seg) = segs.next() {
        let last = segs.peek().is_none();
        match seg {
            "." => trailing = last,
            ".." => {
                let cut = out.rfind('/').unwrap_or(0);
                out.truncate(cut);
                trailing = last;
            }
            _ => {
                out.push('/');
                out.push_str(seg);
            }
        }
    }
    if trailing || out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths() {
        assert_eq!(decode("/").unwrap(), "/");
        assert_eq!(decode("/index.html").unwrap(), "/index.html");
        assert_eq!(decode("/a/b/").unwrap(), "/a/b/");
        assert_eq!(decode("/caf%C3%A9").unwrap(), "/café");
        assert_eq!(decode("/café").unwrap(), "/café");
        assert_eq!(decode("/a%20b").unwrap(), "/a b");
        assert_eq!(decode("/%7euser").unwrap(), "/~user");
        assert_eq!(decode("/.hidden").unwrap(), "/.hidden");
        assert_eq!(decode("/a/.../b").unwrap(), "/a/.../b");
        // Dots inside a segment are plain; a plain path is borrowed, not copied.
        assert!(matches!(
            decode("/a.b/c.d.e"),
            Ok(Cow::Borrowed("/a.b/c.d.e"))
        ));
        assert_eq!(decode("/a.b/./c/../d").unwrap(), "/a.b/d");
    }

    #[test]
    fn decodes_once() {
        // %25 is '%': the result is a literal "%41", not 'A'.
        assert_eq!(decode("/%2541").unwrap(), "/%41");
    }

    #[test]
    fn encoded_slash_and_dots() {
        assert_eq!(decode("/a%2Fb").unwrap(), "/a/b");
        assert_eq!(decode("/a/%2e%2e/b").unwrap(), "/b");
        assert_eq!(decode("/%2E%2E/%2e%2e/etc/passwd").unwrap(), "/etc/passwd");
        assert_eq!(decode("/a%2f..%2f..%2fetc").unwrap(), "/etc");
        assert_eq!(decode("/a/%2e/b").unwrap(), "/a/b");
    }

    #[test]
    fn dot_segments() {
        assert_eq!(decode("/a/b/..").unwrap(), "/a/");
        assert_eq!(decode("/a/b/../").unwrap(), "/a/");
        assert_eq!(decode("/a/./b").unwrap(), "/a/b");
        assert_eq!(decode("/a/.").unwrap(), "/a/");
        assert_eq!(decode("/..").unwrap(), "/");
        assert_eq!(decode("/../../x").unwrap(), "/x");
        assert_eq!(decode("/./").unwrap(), "/");
        assert_eq!(decode("/a/../../b/").unwrap(), "/b/");
    }

    #[test]
    fn remove_dot_segments_rfc() {
        assert_eq!(remove_dot_segments("/a/b/c/./../../g"), "/a/g");
        assert_eq!(remove_dot_segments("/mid/content=5/../6"), "/mid/6");
        assert_eq!(remove_dot_segments("/"), "/");
        assert_eq!(remove_dot_segments(""), "/");
        assert_eq!(remove_dot_segments("/a//.."), "/a/");
        assert_eq!(remove_dot_segments("//"), "//");
        assert_eq!(remove_dot_segments("/a/b"), "/a/b");
        assert_eq!(remove_dot_segments("a/../b"), "/b");
    }

    #[test]
    fn errors() {
        assert_eq!(decode("/a%"), Err(PathError::BadEscape));
        assert_eq!(decode("/a%4"), Err(PathError::BadEscape));
        assert_eq!(decode("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(decode("/a%g0"), Err(PathError::BadEscape));
        assert_eq!(decode("/a%00"), Err(PathError::Nul));
        assert_eq!(decode("/a\0"), Err(PathError::Nul));
        assert_eq!(decode("/a%0a"), Err(PathError::Control));
        assert_eq!(decode("/a%7F"), Err(PathError::Control));
        assert_eq!(decode("/a\x01"), Err(PathError::Control));
        assert_eq!(decode("/a\x7f"), Err(PathError::Control));
        // The first bad byte decides, after dots and before an escape.
        assert_eq!(decode("/a.b/.\x1f%zz"), Err(PathError::Control));
        assert_eq!(decode("/a.b%zz\x1f"), Err(PathError::BadEscape));
        assert_eq!(decode("/a%ff"), Err(PathError::NotUtf8));
        assert_eq!(decode("/a%C3"), Err(PathError::NotUtf8));
        assert_eq!(decode("a/b"), Err(PathError::NotAbsolute));
        assert_eq!(decode(""), Err(PathError::NotAbsolute));
        assert_eq!(decode("%2Fa"), Err(PathError::NotAbsolute));
    }
}
