//! The request path: percent-decoding once, refusing what must never reach a file system,
//! and removing dot segments (RFC 3986 §5.2.4).

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

/// Decodes `raw` (the path part of an origin-form target) once and removes dot segments.
/// The result starts with '/'; a trailing slash is kept.
pub fn decode(raw: &str) -> Result<String, PathError> {
    let _ = raw;
    todo!()
}

/// Removes `.` and `..` segments from an absolute path; `..` never climbs above '/'.
pub fn remove_dot_segments(path: &str) -> String {
    let _ = path;
    todo!()
}
