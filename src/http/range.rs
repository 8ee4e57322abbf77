//! Range requests (RFC 9110 §14): parsing `Range: bytes=…`, If-Range, and the
//! multipart/byteranges framing for several ranges.
//!
//! The logic works on raw header values ([`evaluate_headers`]); [`evaluate`] is the thin
//! wrapper over a parsed [`Request`].
//!
//! Decisions taken where the RFC leaves room:
//! - A Range header that is not valid `bytes` syntax, or uses another unit, is ignored (200
//!   with the whole representation), as §14.2 allows.
//! - More than [`MAX_RANGES`] range-specs: the header is ignored (200).
//! - Several satisfiable ranges are sorted and overlapping or adjacent ones coalesced
//!   (§14.6 allows coalescing regardless of the order asked for). This bounds the response by
//!   the representation's size. If more than [`MAX_PARTS`] parts remain, the header is
//!   ignored (200) rather than sending a body that is mostly multipart framing.
//! - A zero-length representation has no satisfiable range (416).
//! - If-Range with a Last-Modified date is honoured when the date equals the last
//!   modification time to the second; whether that time is "strong" (§8.8.2.2) is not
//!   checked here.

use super::conditional::{EntityTag, Validators};
use super::date;
use super::request::{Method, Request};

/// More range-specs than this and the Range header is ignored.
pub const MAX_RANGES: usize = 100;

/// More parts than this after coalescing and the Range header is ignored.
pub const MAX_PARTS: usize = 16;

/// An inclusive byte range within a representation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte offset.
    pub start: u64,
    /// Inclusive.
    pub end: u64,
}

impl ByteRange {
    /// Number of bytes in the range (`end - start + 1`; 0 if the range is inverted).
    pub fn len(&self) -> u64 {
        if self.end < self.start {
            0
        } else {
            (self.end - self.start).saturating_add(1)
        }
    }

    /// Whether the range holds no byte (only for an inverted range).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
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
    evaluate_headers(
        req.method == Method::Get,
        req.header("range"),
        req.header("if-range"),
        size,
        v,
    )
}

/// [`evaluate`] from the raw header values: `is_get` tells whether the method is GET,
/// `range` and `if_range` are the field values when present.
pub fn evaluate_headers(
    is_get: bool,
    range: Option<&[u8]>,
    if_range: Option<&[u8]>,
    size: u64,
    v: &Validators<'_>,
) -> RangeDecision {
    if !is_get {
        return RangeDecision::Full;
    }
    let Some(range) = range else {
        return RangeDecision::Full;
    };
    if let Some(value) = if_range {
        if !if_range_holds(value, v) {
            return RangeDecision::Full;
        }
    }
    let Some(specs) = parse_range(range) else {
        return RangeDecision::Full;
    };
    let mut ranges: Vec<ByteRange> = specs.iter().filter_map(|s| s.resolve(size)).collect();
    match ranges.len() {
        0 => RangeDecision::Unsatisfiable,
        1 => RangeDecision::Partial(ranges),
        _ => {
            coalesce(&mut ranges);
            if ranges.len() > MAX_PARTS {
                RangeDecision::Full
            } else {
                RangeDecision::Partial(ranges)
            }
        }
    }
}

/// Whether an If-Range value lets the Range apply (RFC 9110 §13.1.5): an entity-tag must
/// strongly match (a weak tag never does), a date must equal the last modification time to
/// the second; anything else fails.
fn if_range_holds(value: &[u8], v: &Validators<'_>) -> bool {
    let value = trim_ows(value);
    if value.starts_with(b"\"") || value.starts_with(b"W/") {
        return EntityTag::parse(value).is_some_and(|t| t.strong_eq(&EntityTag::own(v.etag)));
    }
    match (
        date::parse(value).and_then(date::unix_secs),
        date::unix_secs(v.last_modified),
    ) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// One range-spec as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spec {
    /// `first-` or `first-last`.
    From(u64, Option<u64>),
    /// `-suffix`.
    Suffix(u64),
}

impl Spec {
    /// The satisfiable range this spec selects in `size` bytes, if any.
    fn resolve(self, size: u64) -> Option<ByteRange> {
        if size == 0 {
            return None;
        }
        let last = size - 1;
        match self {
            Spec::From(first, _) if first > last => None,
            Spec::From(first, end) => Some(ByteRange {
                start: first,
                end: end.map_or(last, |e| e.min(last)),
            }),
            Spec::Suffix(0) => None,
            Spec::Suffix(n) => Some(ByteRange {
                start: size - n.min(size),
                end: last,
            }),
        }
    }
}

/// Parses `bytes=1#range-spec` (unit case-insensitive, OWS around commas, empty list
/// elements allowed). None when the header is to be ignored: another unit, invalid syntax,
/// or more than [`MAX_RANGES`] specs.
fn parse_range(value: &[u8]) -> Option<Vec<Spec>> {
    let value = trim_ows(value);
    let eq = value.iter().position(|&b| b == b'=')?;
    if !value[..eq].eq_ignore_ascii_case(b"bytes") {
        return None;
    }
    let mut specs = Vec::new();
    for element in value[eq + 1..].split(|&b| b == b',') {
        let element = trim_ows(element);
        if element.is_empty() {
            continue;
        }
        if specs.len() == MAX_RANGES {
            return None;
        }
        specs.push(parse_spec(element)?);
    }
    (!specs.is_empty()).then_some(specs)
}

/// Parses one `first-last`, `first-` or `-suffix`.
fn parse_spec(s: &[u8]) -> Option<Spec> {
    let dash = s.iter().position(|&b| b == b'-')?;
    let (first, last) = (&s[..dash], &s[dash + 1..]);
    if first.is_empty() {
        return Some(Spec::Suffix(parse_digits(last)?));
    }
    let first = parse_digits(first)?;
    if last.is_empty() {
        return Some(Spec::From(first, None));
    }
    let last = parse_digits(last)?;
    // §14.1.1: an int-range whose last-pos is less than its first-pos is invalid.
    (last >= first).then_some(Spec::From(first, Some(last)))
}

/// `1*DIGIT` as a number, saturating at `u64::MAX` (such offsets are beyond any file).
fn parse_digits(s: &[u8]) -> Option<u64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u64, |n, &d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

/// Sorts `ranges` and merges overlapping or adjacent ones.
fn coalesce(ranges: &mut Vec<ByteRange>) {
    crate::sort_compact::sort_by_key(ranges, |r| (r.start, r.end));
    let mut out: Vec<ByteRange> = Vec::with_capacity(ranges.len());
    for r in ranges.drain(..) {
        match out.last_mut() {
            Some(prev) if r.start <= prev.end.saturating_add(1) => {
                prev.end = prev.end.max(r.end);
            }
            _ => out.push(r),
        }
    }
    *ranges = out;
}

/// Strips optional whitespace (SP / HTAB) from both ends.
fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// The Content-Range value of a 206 single part: `bytes start-end/size`.
pub fn content_range(r: ByteRange, size: u64) -> String {
    format!("bytes {}-{}/{}", r.start, r.end, size)
}

/// The Content-Range value of a 416: `bytes */size`.
pub fn unsatisfied_content_range(size: u64) -> String {
    format!("bytes */{size}")
}

/// A multipart boundary (32 hex digits) derived from `seed`; pass something that varies per
/// response (a counter mixed with the time) so that it is unlikely to occur in the content.
pub fn boundary(seed: u64) -> String {
    // splitmix64, twice.
    fn mix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let a = mix(seed);
    format!("{:016x}{:016x}", a, mix(a))
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
///
/// The body is: for each part its head then the range's bytes, then the trailer. The first
/// head is `--BOUNDARY\r\n…` (no leading CRLF), the others `\r\n--BOUNDARY\r\n…`; each head
/// carries `Content-Type` (omitted when `content_type` is empty) and `Content-Range`, then a
/// blank line. The trailer is `\r\n--BOUNDARY--\r\n`. `content_length` is exactly the sum.
pub fn multipart(ranges: &[ByteRange], content_type: &str, size: u64, boundary: &str) -> Multipart {
    let mut content_length = 0u64;
    let mut parts = Vec::with_capacity(ranges.len());
    for (i, r) in ranges.iter().enumerate() {
        let mut head = Vec::with_capacity(96 + boundary.len() + content_type.len());
        if i > 0 {
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"--");
        head.extend_from_slice(boundary.as_bytes());
        head.extend_from_slice(b"\r\n");
        if !content_type.is_empty() {
            head.extend_from_slice(b"Content-Type: ");
            head.extend_from_slice(content_type.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"Content-Range: ");
        head.extend_from_slice(content_range(*r, size).as_bytes());
        head.extend_from_slice(b"\r\n\r\n");
        content_length = content_length
            .saturating_add(head.len() as u64)
            .saturating_add(r.len());
        parts.push((head, *r));
    }
    let trailer = format!("\r\n--{boundary}--\r\n").into_bytes();
    content_length = content_length.saturating_add(trailer.len() as u64);
    Multipart {
        parts,
        trailer,
        content_length,
        content_type: format!("multipart/byteranges; boundary={boundary}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    const LM: u64 = 784_111_777;

    fn v() -> Validators<'static> {
        Validators {
            etag: "\"abc\"",
            last_modified: UNIX_EPOCH + Duration::from_millis(LM * 1000 + 250),
        }
    }

    fn get(range: &str, size: u64) -> RangeDecision {
        evaluate_headers(true, Some(range.as_bytes()), None, size, &v())
    }

    fn r(start: u64, end: u64) -> ByteRange {
        ByteRange { start, end }
    }

    fn partial(rs: &[(u64, u64)]) -> RangeDecision {
        RangeDecision::Partial(rs.iter().map(|&(a, b)| r(a, b)).collect())
    }

    use RangeDecision::{Full, Unsatisfiable};

    #[test]
    fn only_get_with_range() {
        assert_eq!(evaluate_headers(true, None, None, 100, &v()), Full);
        assert_eq!(
            evaluate_headers(false, Some(b"bytes=0-1"), None, 100, &v()),
            Full,
            "HEAD and others ignore Range"
        );
        assert_eq!(get("bytes=0-1", 100), partial(&[(0, 1)]));
    }

    #[test]
    fn single_ranges() {
        assert_eq!(get("bytes=0-0", 100), partial(&[(0, 0)]));
        assert_eq!(get("bytes=10-", 100), partial(&[(10, 99)]));
        assert_eq!(
            get("bytes=10-1000", 100),
            partial(&[(10, 99)]),
            "last clamped"
        );
        assert_eq!(get("bytes=99-99", 100), partial(&[(99, 99)]));
        assert_eq!(get("bytes=-10", 100), partial(&[(90, 99)]));
        assert_eq!(get("bytes=-1000", 100), partial(&[(0, 99)]));
        assert_eq!(
            get("bytes=0-99999999999999999999999", 100),
            partial(&[(0, 99)])
        );
        assert_eq!(
            get("bytes=-99999999999999999999999", 100),
            partial(&[(0, 99)])
        );
        assert_eq!(get("bytes=007-008", 100), partial(&[(7, 8)]));
    }

    #[test]
    fn unit_and_whitespace() {
        assert_eq!(get("BYTES=0-1", 100), partial(&[(0, 1)]));
        assert_eq!(get("Bytes=0-1", 100), partial(&[(0, 1)]));
        assert_eq!(get("  bytes=0-1 , 5-6\t", 100), partial(&[(0, 1), (5, 6)]));
        assert_eq!(get("bytes=0-1,\t5-6", 100), partial(&[(0, 1), (5, 6)]));
        assert_eq!(
            get("bytes=,0-1,,", 100),
            partial(&[(0, 1)]),
            "empty elements"
        );
        assert_eq!(get("items=0-1", 100), Full, "other unit");
        assert_eq!(get("none", 100), Full);
    }

    #[test]
    fn invalid_syntax_is_ignored() {
        for bad in [
            "",
            "bytes",
            "bytes=",
            "bytes=,",
            "bytes= , ",
            "bytes=-",
            "bytes=1",
            "bytes=a-b",
            "bytes=1-a",
            "bytes=+1-2",
            "bytes=1 -2",
            "bytes=1- 2",
            "bytes=5-4",
            "bytes=0-1;",
            "bytes =0-1",
            "bytes= 0-1x",
            "bytes=0-1,5-4",
            "bytes=--1",
            "bytes=1-2-3",
            "bytes=0x10-",
            "bytes=-1-",
            "bytes=\u{e9}-1",
        ] {
            assert_eq!(get(bad, 100), Full, "{bad:?}");
        }
        assert_eq!(
            evaluate_headers(true, Some(b"bytes=0-\xff"), None, 100, &v()),
            Full
        );
    }

    #[test]
    fn unsatisfiable() {
        assert_eq!(get("bytes=100-", 100), Unsatisfiable);
        assert_eq!(get("bytes=100-200", 100), Unsatisfiable);
        assert_eq!(get("bytes=-0", 100), Unsatisfiable);
        assert_eq!(get("bytes=100-,-0", 100), Unsatisfiable);
        assert_eq!(get("bytes=99999999999999999999999-", 100), Unsatisfiable);
        // Zero-length representation: nothing is satisfiable, not even a suffix.
        assert_eq!(get("bytes=0-", 0), Unsatisfiable);
        assert_eq!(get("bytes=-5", 0), Unsatisfiable);
        assert_eq!(get("bytes=0-0", 0), Unsatisfiable);
        // Unsatisfiable specs are dropped when others are satisfiable.
        assert_eq!(get("bytes=200-300, 0-1", 100), partial(&[(0, 1)]));
        assert_eq!(get("bytes=-0, 5-", 100), partial(&[(5, 99)]));
    }

    #[test]
    fn several_ranges_sorted_and_coalesced() {
        assert_eq!(get("bytes=50-59, 0-9", 100), partial(&[(0, 9), (50, 59)]));
        assert_eq!(get("bytes=0-9, 5-20", 100), partial(&[(0, 20)]), "overlap");
        assert_eq!(
            get("bytes=0-9, 10-20", 100),
            partial(&[(0, 20)]),
            "adjacent"
        );
        assert_eq!(get("bytes=0-9, 11-20", 100), partial(&[(0, 9), (11, 20)]));
        assert_eq!(get("bytes=-10, 0-", 100), partial(&[(0, 99)]));
        assert_eq!(get("bytes=0-0, 0-0, 0-0", 100), partial(&[(0, 0)]));
        assert_eq!(
            get("bytes=20-30, 0-5, 25-40, 3-8", 100),
            partial(&[(0, 8), (20, 40)])
        );
    }

    #[test]
    fn abuse_limits() {
        // 100 overlapping ranges coalesce into one.
        let many = vec!["0-"; MAX_RANGES].join(",");
        assert_eq!(get(&format!("bytes={many}"), 100), partial(&[(0, 99)]));
        // 101 range-specs: ignored.
        let too_many = vec!["0-"; MAX_RANGES + 1].join(",");
        assert_eq!(get(&format!("bytes={too_many}"), 100), Full);
        // Many disjoint ranges: more than MAX_PARTS after coalescing → Full.
        let disjoint: Vec<String> = (0..=MAX_PARTS as u64)
            .map(|i| format!("{}-{}", i * 2, i * 2))
            .collect();
        assert_eq!(get(&format!("bytes={}", disjoint.join(",")), 1000), Full);
        let ok: Vec<String> = (0..MAX_PARTS as u64)
            .map(|i| format!("{}-{}", i * 2, i * 2))
            .collect();
        match get(&format!("bytes={}", ok.join(",")), 1000) {
            RangeDecision::Partial(rs) => assert_eq!(rs.len(), MAX_PARTS),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn if_range_entity_tag() {
        let ir = |val: &[u8]| evaluate_headers(true, Some(b"bytes=0-1"), Some(val), 100, &v());
        assert_eq!(ir(b"\"abc\""), partial(&[(0, 1)]));
        assert_eq!(ir(b" \"abc\" "), partial(&[(0, 1)]));
        assert_eq!(ir(b"\"abd\""), Full);
        assert_eq!(ir(b"W/\"abc\""), Full, "weak never matches");
        assert_eq!(ir(b"\"abc\", \"abc\""), Full, "a list is not an entity-tag");
        assert_eq!(ir(b"\"abc"), Full);
    }

    #[test]
    fn if_range_date() {
        let ir = |val: &[u8]| evaluate_headers(true, Some(b"bytes=0-1"), Some(val), 100, &v());
        assert_eq!(ir(b"Sun, 06 Nov 1994 08:49:37 GMT"), partial(&[(0, 1)]));
        assert_eq!(ir(b"Sunday, 06-Nov-94 08:49:37 GMT"), partial(&[(0, 1)]));
        assert_eq!(
            ir(b"Sun, 06 Nov 1994 08:49:38 GMT"),
            Full,
            "later is not equal"
        );
        assert_eq!(ir(b"Sun, 06 Nov 1994 08:49:36 GMT"), Full);
        assert_eq!(ir(b"garbage"), Full);
        assert_eq!(ir(b""), Full);
        assert_eq!(ir(b"\xff"), Full);
    }

    #[test]
    fn if_range_without_range_is_ignored() {
        assert_eq!(
            evaluate_headers(true, None, Some(b"\"abc\""), 100, &v()),
            Full
        );
        // If-Range passing does not rescue an invalid Range, nor does failing change a 416.
        assert_eq!(
            evaluate_headers(true, Some(b"bytes=x"), Some(b"\"abc\""), 100, &v()),
            Full
        );
        assert_eq!(
            evaluate_headers(true, Some(b"bytes=500-"), Some(b"\"abc\""), 100, &v()),
            Unsatisfiable
        );
        assert_eq!(
            evaluate_headers(true, Some(b"bytes=500-"), Some(b"\"zzz\""), 100, &v()),
            Full
        );
    }

    #[test]
    fn header_helpers() {
        assert_eq!(content_range(r(0, 9), 100), "bytes 0-9/100");
        assert_eq!(unsatisfied_content_range(100), "bytes */100");
        let b = boundary(1);
        assert_eq!(b.len(), 32);
        assert!(b.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(b, boundary(2));
        assert_eq!(r(5, 4).len(), 0);
        assert_eq!(r(0, u64::MAX).len(), u64::MAX);
    }

    /// Builds the body the way the sender will: heads, range bytes, trailer.
    fn render(m: &Multipart, content: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        for (head, r) in &m.parts {
            body.extend_from_slice(head);
            body.extend_from_slice(&content[r.start as usize..=r.end as usize]);
        }
        body.extend_from_slice(&m.trailer);
        body
    }

    #[test]
    fn multipart_layout_and_exact_length() {
        let content: Vec<u8> = (0..100u8).map(|i| b'a' + i % 26).collect();
        let ranges = [r(0, 4), r(10, 19), r(99, 99)];
        let m = multipart(&ranges, "text/plain; charset=utf-8", 100, "BOUND");
        assert_eq!(m.content_type, "multipart/byteranges; boundary=BOUND");
        let body = render(&m, &content);
        assert_eq!(body.len() as u64, m.content_length);
        let want = "--BOUND\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Range: bytes 0-4/100\r\n\r\nabcde\
                    \r\n--BOUND\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Range: bytes 10-19/100\r\n\r\nklmnopqrst\
                    \r\n--BOUND\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Range: bytes 99-99/100\r\n\r\nv\
                    \r\n--BOUND--\r\n";
        assert_eq!(String::from_utf8(body).ok().as_deref(), Some(want));
    }

    #[test]
    fn multipart_lengths_for_many_shapes() {
        let content = vec![b'x'; 12_345];
        for ranges in [
            vec![r(0, 0)],
            vec![r(0, 0), r(2, 2)],
            vec![r(0, 9), r(100, 9_999), r(12_344, 12_344)],
            (0..16).map(|i| r(i * 700, i * 700 + 7)).collect(),
        ] {
            for ct in ["", "application/octet-stream"] {
                let m = multipart(&ranges, ct, content.len() as u64, &boundary(7));
                assert_eq!(render(&m, &content).len() as u64, m.content_length);
                assert_eq!(m.parts.len(), ranges.len());
                if ct.is_empty() {
                    assert!(!m.parts[0].0.windows(13).any(|w| w == b"Content-Type:"));
                }
            }
        }
        let empty = multipart(&[], "text/plain", 0, "B");
        assert_eq!(empty.content_length, empty.trailer.len() as u64);
    }
}
