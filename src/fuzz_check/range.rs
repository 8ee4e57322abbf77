//! Range and If-Range: every range sent lies inside the representation, several ranges are
//! sorted and disjoint, the ranges of a list are the union of its elements' ranges, and the
//! multipart layout adds up to its Content-Length.

use std::time::{Duration, UNIX_EPOCH};

use crate::http::conditional::Validators;
use crate::http::date;
use crate::http::range::{
    boundary, content_range, evaluate_headers, multipart, ByteRange, RangeDecision, MAX_PARTS,
};

/// The representation's entity-tag the checks use.
pub(crate) const ETAG: &str = "\"5f2-1a2b3c\"";

/// The validators the checks use: a fixed tag and a modification time with a sub-second part.
pub(crate) fn validators() -> Validators<'static> {
    Validators {
        etag: ETAG,
        last_modified: UNIX_EPOCH + Duration::new(1_700_000_000, 500_000_000),
    }
}

/// Sizes every input is evaluated against: empty, tiny, ordinary and huge representations.
const SIZES: [u64; 6] = [0, 1, 7, 100, 10_000, u64::MAX];

/// Fuzz target `range`: `data` is a Range value, optionally followed by `\n` and an If-Range
/// value.
pub fn range(data: &[u8]) {
    let (range, if_range) = match memchr::memchr(b'\n', data) {
        Some(nl) => (&data[..nl], Some(&data[nl + 1..])),
        None => (data, None),
    };
    let v = validators();
    for size in SIZES {
        assert_eq!(
            evaluate_headers(false, Some(range), if_range, size, &v),
            RangeDecision::Full,
            "a range applied to a method other than GET"
        );
        let d = evaluate_headers(true, Some(range), if_range, size, &v);
        check_decision(&d, size);
        // If-Range with our own strong tag, or with our modification date, changes nothing.
        let plain = evaluate_headers(true, Some(range), None, size, &v);
        let last_modified = date::format(v.last_modified);
        for holds in [ETAG.as_bytes(), last_modified.as_bytes()] {
            assert_eq!(
                evaluate_headers(true, Some(range), Some(holds), size, &v),
                plain,
                "If-Range {:?} that holds changed the answer",
                String::from_utf8_lossy(holds)
            );
        }
        // A weak tag never holds.
        let weak = format!("W/{ETAG}");
        assert_eq!(
            evaluate_headers(true, Some(range), Some(weak.as_bytes()), size, &v),
            RangeDecision::Full
        );
        check_union(range, size, &plain);
    }
}

/// Invariants of one decision for a representation of `size` bytes.
fn check_decision(d: &RangeDecision, size: u64) {
    let RangeDecision::Partial(ranges) = d else {
        return;
    };
    assert!(!ranges.is_empty() && ranges.len() <= MAX_PARTS.max(1));
    let mut total: u64 = 0;
    for r in ranges {
        assert!(
            r.start <= r.end && r.end < size,
            "{r:?} outside {size} bytes"
        );
        total = total.saturating_add(r.len());
    }
    assert!(total <= size);
    for w in ranges.windows(2) {
        assert!(
            w[0].end.saturating_add(1) < w[1].start,
            "{:?} and {:?} not sorted and apart",
            w[0],
            w[1]
        );
    }
    if ranges.len() == 1 {
        let cr = content_range(ranges[0], size);
        assert_eq!(
            cr,
            format!("bytes {}-{}/{}", ranges[0].start, ranges[0].end, size)
        );
    } else {
        let b = boundary(size);
        let m = multipart(ranges, "text/plain", size, &b);
        let heads: u64 = m.parts.iter().map(|(h, _)| h.len() as u64).sum();
        // Saturated only for representations near u64::MAX bytes, which no file reaches.
        let sum = heads
            .checked_add(total)
            .and_then(|n| n.checked_add(m.trailer.len() as u64));
        assert_eq!(m.content_length, sum.unwrap_or(u64::MAX));
        for ((head, r), want) in m.parts.iter().zip(ranges) {
            assert_eq!(r, want);
            let cr = content_range(*r, size);
            assert!(memchr::memmem::find(head, cr.as_bytes()).is_some());
        }
    }
}

/// The ranges of a whole list are the union of the ranges its elements select one by one.
fn check_union(range: &[u8], size: u64, whole: &RangeDecision) {
    let RangeDecision::Partial(ranges) = whole else {
        return;
    };
    let Some(eq) = memchr::memchr(b'=', range) else {
        panic!("a Range without '=' selected {ranges:?}");
    };
    let (unit, list) = (&range[..=eq], &range[eq + 1..]);
    let v = validators();
    let mut union: Vec<ByteRange> = Vec::new();
    for element in list.split(|&b| b == b',') {
        if element.iter().all(|&b| b == b' ' || b == b'\t') {
            continue;
        }
        let one = [unit, element].concat();
        match evaluate_headers(true, Some(&one), None, size, &v) {
            RangeDecision::Partial(rs) => {
                assert_eq!(rs.len(), 1, "one element selected {rs:?}");
                union.push(rs[0]);
            }
            RangeDecision::Unsatisfiable => {}
            RangeDecision::Full => panic!(
                "element {:?} alone is ignored but the list was not",
                String::from_utf8_lossy(element)
            ),
        }
    }
    if union.len() > 1 {
        union.sort_unstable_by_key(|r| (r.start, r.end));
        let mut merged: Vec<ByteRange> = Vec::new();
        for r in union {
            match merged.last_mut() {
                Some(p) if r.start <= p.end.saturating_add(1) => p.end = p.end.max(r.end),
                _ => merged.push(r),
            }
        }
        union = merged;
    }
    assert_eq!(
        &union, ranges,
        "list differs from the union of its elements"
    );
}
