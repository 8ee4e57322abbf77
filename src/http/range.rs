//! Range requests (RFC 9110 §14): parsing `Range: bytes=…`, If-Range, and the
//! multipart/byteranges framing for several ranges.

use super::conditional::Validators;
use super::request::Request;

/// An inclusive byte range within a representation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    /// Inclusive.
    pub end: u64,
}

/// What to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeDecision {
    /// 200 with the whole representation (no Range, an ignored Range, or If-Range failed).
    Full,
    /// 206 with these ranges (one → single part, several → multipart/byteranges).
    Partial(Vec<ByteRange>),
    /// 416 with `Content-Range: bytes */size`.
    Unsatisfiable,
}

/// Decides how a GET for a representation of `size` bytes is answered given its Range and
/// If-Range headers. Methods other than GET always get `Full`.
pub fn evaluate(req: &Request, size: u64, v: &Validators<'_>) -> RangeDecision {
    let _ = (req, size, v);
    todo!()
}

/// The framing of a multipart/byteranges body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Multipart {
    /// Each part's head (boundary line and part headers, ending in the blank line) and range.
    pub parts: Vec<(Vec<u8>, ByteRange)>,
    /// The closing boundary.
    pub trailer: Vec<u8>,
    /// The total body length.
    pub content_length: u64,
    /// `multipart/byteranges; boundary=…`.
    pub content_type: String,
}

/// Lays out a multipart/byteranges body for `ranges` of a representation of `size` bytes.
pub fn multipart(ranges: &[ByteRange], content_type: &str, size: u64, boundary: &str) -> Multipart {
    let _ = (ranges, content_type, size, boundary);
    todo!()
}
