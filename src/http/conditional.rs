//! Conditional requests (RFC 9110 §13): If-Match, If-Unmodified-Since, If-None-Match,
//! If-Modified-Since, evaluated in the order of §13.2.2.
//!
//! The logic works on raw header values ([`evaluate_headers`]) so that it is testable without
//! a parsed [`Request`]; [`evaluate`] is the thin wrapper the handlers call.
//!
//! Decisions taken where the RFC leaves room:
//! - A malformed If-Match or If-None-Match list (bad quoting, a character outside `etagc`,
//!   `*` mixed with tags, no tag at all) is treated as *not matching*: If-Match then fails
//!   with 412 (the safe answer for a client protecting a write), If-None-Match lets the
//!   request proceed. A present but malformed If-None-Match still disables If-Modified-Since
//!   (§13.1.3 says to ignore If-Modified-Since whenever If-None-Match is present).
//! - An invalid HTTP-date in If-Unmodified-Since or If-Modified-Since is ignored (§13.1.3–4).
//! - Dates are compared at one-second granularity; the sub-second part of the last
//!   modification time is dropped.
//! - The caller evaluates preconditions only for an existing representation, so `*` always
//!   matches here.

use super::date;
use super::request::{Method, Request};
use std::time::SystemTime;

/// The validators of a selected representation.
#[derive(Debug, Clone, Copy)]
pub struct Validators<'a> {
    /// The strong entity tag, with its quotes: `"5f2-1a2b3c"`.
    pub etag: &'a str,
    /// Last modification time (sub-second part ignored in comparisons).
    pub last_modified: SystemTime,
}

/// The outcome of evaluating the preconditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Go on with the request (ranges may still apply).
    Proceed,
    /// 304 Not Modified (GET and HEAD only).
    NotModified,
    /// 412 Precondition Failed.
    Failed,
}

/// Evaluates the request's preconditions against the representation.
///
/// Only the first field of each name is looked at (what [`Request::header`] returns).
pub fn evaluate(req: &Request, v: &Validators<'_>) -> Precondition {
    // One pass over the fields instead of one lookup per name.
    let mut found: [Option<&[u8]>; 4] = [None; 4];
    for (name, value) in req.headers() {
        let i = match name.len() {
            8 if name.eq_ignore_ascii_case(b"if-match") => 0,
            13 if name.eq_ignore_ascii_case(b"if-none-match") => 1,
            17 if name.eq_ignore_ascii_case(b"if-modified-since") => 2,
            19 if name.eq_ignore_ascii_case(b"if-unmodified-since") => 3,
            _ => continue,
        };
        found[i] = found[i].or(Some(value));
    }
    let [if_match, if_none_match, if_modified_since, if_unmodified_since] = found;
    evaluate_headers(
        matches!(req.method, Method::Get | Method::Head),
        if_match,
        if_none_match,
        if_modified_since,
        if_unmodified_since,
        v,
    )
}

/// Evaluates the preconditions from the raw header values, in the order of RFC 9110 §13.2.2.
///
/// `method_is_get_or_head` selects between 304 and 412 for a matching If-None-Match and
/// enables If-Modified-Since.
pub fn evaluate_headers(
    method_is_get_or_head: bool,
    if_match: Option<&[u8]>,
    if_none_match: Option<&[u8]>,
    if_modified_since: Option<&[u8]>,
    if_unmodified_since: Option<&[u8]>,
    v: &Validators<'_>,
) -> Precondition {
    // Most requests carry no precondition: nothing to parse then.
    if if_match.is_none()
        && if_none_match.is_none()
        && if_modified_since.is_none()
        && if_unmodified_since.is_none()
    {
        return Precondition::Proceed;
    }
    let own = EntityTag::own(v.etag);
    let last_modified = date::unix_secs(v.last_modified).unwrap_or(0);

    // 1. If-Match (strong comparison), else 2. If-Unmodified-Since.
    if let Some(value) = if_match {
        if list_matches(value, |t| t.strong_eq(&own)) != Some(true) {
            return Precondition::Failed;
        }
    } else if let Some(since) = if_unmodified_since.and_then(parse_secs) {
        if last_modified > since {
            return Precondition::Failed;
        }
    }

    // 3. If-None-Match (weak comparison), else 4. If-Modified-Since (GET/HEAD only).
    if let Some(value) = if_none_match {
        if list_matches(value, |t| t.weak_eq(&own)) == Some(true) {
            return if method_is_get_or_head {
                Precondition::NotModified
            } else {
                Precondition::Failed
            };
        }
    } else if method_is_get_or_head {
        if let Some(since) = if_modified_since.and_then(parse_secs) {
            if last_modified <= since {
                return Precondition::NotModified;
            }
        }
    }

    Precondition::Proceed
}

/// An HTTP-date as whole seconds since the epoch; None when invalid.
fn parse_secs(value: &[u8]) -> Option<u64> {
    date::parse(value).and_then(date::unix_secs)
}

/// One entity-tag (RFC 9110 §8.8.3): `W/"xyz"` or `"xyz"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntityTag<'a> {
    /// Marked weak with `W/`.
    pub weak: bool,
    /// The opaque-tag, with its quotes.
    pub opaque: &'a [u8],
}

impl<'a> EntityTag<'a> {
    /// Parses a field value holding exactly one entity-tag (surrounding OWS allowed).
    pub fn parse(value: &'a [u8]) -> Option<Self> {
        let (tag, rest) = parse_tag_prefix(trim_ows(value))?;
        rest.is_empty().then_some(tag)
    }

    /// The tag of a representation ([`Validators::etag`]); a malformed one is taken as a
    /// strong tag compared bytewise.
    pub fn own(etag: &'a str) -> Self {
        EntityTag::parse(etag.as_bytes()).unwrap_or(EntityTag {
            weak: false,
            opaque: etag.as_bytes(),
        })
    }

    /// Strong comparison (§8.8.3.2): neither is weak and the opaque-tags are identical.
    pub fn strong_eq(&self, other: &EntityTag<'_>) -> bool {
        !self.weak && !other.weak && self.opaque == other.opaque
    }

    /// Weak comparison (§8.8.3.2): the opaque-tags are identical, weakness ignored.
    pub fn weak_eq(&self, other: &EntityTag<'_>) -> bool {
        self.opaque == other.opaque
    }
}

/// Whether an If-Match / If-None-Match value (`*` or `1#entity-tag`) matches: `*` matches,
/// otherwise any tag for which `matches` holds. None when the value is malformed; the whole
/// list is checked even after a match.
pub fn list_matches(value: &[u8], mut matches: impl FnMut(&EntityTag<'_>) -> bool) -> Option<bool> {
    let value = trim_ows(value);
    if value == b"*" {
        return Some(true);
    }
    let mut rest = value;
    let mut matched = false;
    let mut count = 0usize;
    loop {
        rest = trim_ows(rest);
        match rest.first() {
            None => break,
            // An empty list element, which recipients must accept (§5.6.1.2).
            Some(b',') => {
                rest = &rest[1..];
                continue;
            }
            Some(_) => {}
        }
        let (tag, after) = parse_tag_prefix(rest)?;
        count += 1;
        matched |= matches(&tag);
        rest = trim_ows(after);
        match rest.first() {
            None => break,
            Some(b',') => rest = &rest[1..],
            Some(_) => return None,
        }
    }
    (count > 0).then_some(matched)
}

/// Parses an entity-tag at the start of `s`; returns it and what follows.
fn parse_tag_prefix(s: &[u8]) -> Option<(EntityTag<'_>, &[u8])> {
    let (weak, s) = match s.strip_prefix(b"W/") {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    if s.first() != Some(&b'"') {
        return None;
    }
    let close = 1 + s.get(1..)?.iter().position(|&b| b == b'"')?;
    let inner = &s[1..close];
    if !inner.iter().all(|&b| is_etagc(b)) {
        return None;
    }
    Some((
        EntityTag {
            weak,
            opaque: &s[..=close],
        },
        &s[close + 1..],
    ))
}

/// `etagc = %x21 / %x23-7E / obs-text`.
fn is_etagc(b: u8) -> bool {
    b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    const LM: u64 = 784_111_777; // Sun, 06 Nov 1994 08:49:37 GMT
    const AT_LM: &[u8] = b"Sun, 06 Nov 1994 08:49:37 GMT";
    const BEFORE_LM: &[u8] = b"Sun, 06 Nov 1994 08:49:36 GMT";
    const AFTER_LM: &[u8] = b"Sun, 06 Nov 1994 08:49:38 GMT";

    fn v() -> Validators<'static> {
        Validators {
            etag: "\"abc\"",
            // Sub-second part must be ignored.
            last_modified: UNIX_EPOCH + Duration::from_millis(LM * 1000 + 900),
        }
    }

    struct H<'a> {
        get: bool,
        im: Option<&'a [u8]>,
        inm: Option<&'a [u8]>,
        ims: Option<&'a [u8]>,
        ius: Option<&'a [u8]>,
    }

    impl Default for H<'_> {
        fn default() -> Self {
            H {
                get: true,
                im: None,
                inm: None,
                ims: None,
                ius: None,
            }
        }
    }

    fn eval(h: H<'_>) -> Precondition {
        evaluate_headers(h.get, h.im, h.inm, h.ims, h.ius, &v())
    }

    use Precondition::*;

    #[test]
    fn no_conditions_proceed() {
        assert_eq!(eval(H::default()), Proceed);
        assert_eq!(
            eval(H {
                get: false,
                ..H::default()
            }),
            Proceed
        );
    }

    #[test]
    fn if_match_strong_comparison() {
        let m = |val: &'static [u8]| {
            eval(H {
                im: Some(val),
                get: false,
                ..H::default()
            })
        };
        assert_eq!(m(b"\"abc\""), Proceed);
        assert_eq!(m(b"*"), Proceed);
        assert_eq!(m(b"  \"x\" ,\t\"abc\"  "), Proceed);
        assert_eq!(m(b"\"x\", \"y\""), Failed);
        assert_eq!(m(b"W/\"abc\""), Failed, "weak tags never match strongly");
        assert_eq!(m(b"\"ABC\""), Failed, "opaque-tags are case-sensitive");
        assert_eq!(m(b"abc"), Failed, "unquoted is malformed");
    }

    #[test]
    fn if_match_malformed_is_not_matching() {
        for bad in [
            &b""[..],
            b" ",
            b",",
            b"\"abc",
            b"\"abc\" \"x\"",
            b"\"abc\"x",
            b"*, \"abc\"",
            b"\"abc\", *",
            b"w/\"abc\"",
            b"W/ \"abc\"",
            b"\"a\"bc\"",
            b"\"ab c\"",
            b"\"abc\", \"x\x01\"",
            b"\"abc\", \"unterminated",
        ] {
            assert_eq!(
                eval(H {
                    im: Some(bad),
                    ..H::default()
                }),
                Failed,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn empty_list_elements_are_accepted() {
        let val = b", ,\"x\",, \"abc\" ,";
        assert_eq!(list_matches(val, |t| t.opaque == b"\"abc\""), Some(true));
        assert_eq!(list_matches(b"\"\"", |t| t.opaque == b"\"\""), Some(true));
        assert_eq!(list_matches(b"\"\xe9\"", |_| true), Some(true), "obs-text");
    }

    #[test]
    fn if_unmodified_since() {
        let u = |val: &'static [u8]| {
            eval(H {
                ius: Some(val),
                get: false,
                ..H::default()
            })
        };
        assert_eq!(u(AT_LM), Proceed, "equal at second granularity");
        assert_eq!(u(AFTER_LM), Proceed);
        assert_eq!(u(BEFORE_LM), Failed);
        assert_eq!(u(b"not a date"), Proceed, "invalid date ignored");
        assert_eq!(u(b"Sunday, 06-Nov-94 08:49:36 GMT"), Failed, "RFC 850");
        assert_eq!(u(b"Sun Nov  6 08:49:36 1994"), Failed, "asctime");
    }

    #[test]
    fn if_match_overrides_if_unmodified_since() {
        let h = H {
            im: Some(b"\"abc\""),
            ius: Some(BEFORE_LM),
            ..H::default()
        };
        assert_eq!(eval(h), Proceed);
    }

    #[test]
    fn if_none_match_weak_comparison() {
        let n = |val: &'static [u8], get: bool| {
            eval(H {
                inm: Some(val),
                get,
                ..H::default()
            })
        };
        assert_eq!(n(b"\"abc\"", true), NotModified);
        assert_eq!(n(b"W/\"abc\"", true), NotModified);
        assert_eq!(n(b"\"x\", W/\"abc\"", true), NotModified);
        assert_eq!(n(b"*", true), NotModified);
        assert_eq!(n(b"\"abc\"", false), Failed);
        assert_eq!(n(b"*", false), Failed);
        assert_eq!(n(b"\"x\"", true), Proceed);
        assert_eq!(n(b"\"x\"", false), Proceed);
        assert_eq!(
            n(b"\"abc\" garbage", true),
            Proceed,
            "malformed → not matching"
        );
    }

    #[test]
    fn weak_own_tag_only_matches_weakly() {
        let v = Validators {
            etag: "W/\"abc\"",
            last_modified: UNIX_EPOCH,
        };
        let r = evaluate_headers(true, Some(b"\"abc\""), None, None, None, &v);
        assert_eq!(r, Failed);
        let r = evaluate_headers(true, None, Some(b"\"abc\""), None, None, &v);
        assert_eq!(r, NotModified);
    }

    #[test]
    fn if_modified_since() {
        let m = |val: &'static [u8], get: bool| {
            eval(H {
                ims: Some(val),
                get,
                ..H::default()
            })
        };
        assert_eq!(m(AT_LM, true), NotModified);
        assert_eq!(m(AFTER_LM, true), NotModified);
        assert_eq!(m(BEFORE_LM, true), Proceed);
        assert_eq!(m(AT_LM, false), Proceed, "only for GET/HEAD");
        assert_eq!(m(b"\xff\xfe", true), Proceed, "invalid date ignored");
        assert_eq!(m(b"Sun Nov  6 08:49:37 1994", true), NotModified);
    }

    #[test]
    fn if_none_match_overrides_if_modified_since() {
        let h = H {
            inm: Some(b"\"x\""),
            ims: Some(AFTER_LM),
            ..H::default()
        };
        assert_eq!(eval(h), Proceed);
        let h = H {
            inm: Some(b"bad"),
            ims: Some(AFTER_LM),
            ..H::default()
        };
        assert_eq!(
            eval(h),
            Proceed,
            "a malformed If-None-Match still disables IMS"
        );
    }

    #[test]
    fn order_of_evaluation() {
        // If-Match fails before If-None-Match is looked at.
        let h = H {
            im: Some(b"\"x\""),
            inm: Some(b"\"abc\""),
            ..H::default()
        };
        assert_eq!(eval(h), Failed);
        // If-Unmodified-Since fails before If-Modified-Since.
        let h = H {
            ius: Some(BEFORE_LM),
            ims: Some(AFTER_LM),
            ..H::default()
        };
        assert_eq!(eval(h), Failed);
        // Passing If-Match then a matching If-None-Match → 304.
        let h = H {
            im: Some(b"*"),
            inm: Some(b"W/\"abc\""),
            ..H::default()
        };
        assert_eq!(eval(h), NotModified);
    }

    #[test]
    fn entity_tag_parse() {
        assert_eq!(
            EntityTag::parse(b" W/\"a\" "),
            Some(EntityTag {
                weak: true,
                opaque: b"\"a\""
            })
        );
        assert_eq!(EntityTag::parse(b"\"a\", \"b\""), None);
        assert_eq!(EntityTag::parse(b"W/"), None);
        assert_eq!(EntityTag::parse(b"\""), None);
        assert_eq!(EntityTag::parse(b""), None);
    }

    #[test]
    fn never_panics_on_odd_bytes() {
        let mut buf = Vec::new();
        for a in [b'"', b'W', b'/', b',', b' ', b'*', b'x', 0xff, 0] {
            for b in [b'"', b'W', b'/', b',', b' ', b'*', b'x'] {
                for c in [b'"', b',', b'\t', b'/'] {
                    buf.clear();
                    buf.extend_from_slice(&[a, b, c, a, c]);
                    let _ = eval(H {
                        im: Some(&buf),
                        inm: Some(&buf),
                        ims: Some(&buf),
                        ius: Some(&buf),
                        ..H::default()
                    });
                }
            }
        }
    }
}
