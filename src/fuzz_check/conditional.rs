//! Conditional requests and HTTP dates: the order of RFC 9110 §13.2.2 holds for any header
//! values, entity-tag lists agree with themselves, and a parsed date formats back to itself.

use super::range::{validators, ETAG};
use crate::http::conditional::{evaluate_headers, list_matches, EntityTag, Precondition};
use crate::http::date;

/// Fuzz target `conditional`: `data` holds up to four lines, the values of If-Match,
/// If-None-Match, If-Modified-Since and If-Unmodified-Since; an empty line means "absent".
pub fn conditional(data: &[u8]) {
    let mut lines = data.split(|&b| b == b'\n');
    let mut field = || lines.next().filter(|l| !l.is_empty());
    let (im, inm, ims, ius) = (field(), field(), field(), field());
    let v = validators();

    for get in [true, false] {
        let p = evaluate_headers(get, im, inm, ims, ius, &v);
        if !get {
            assert_ne!(
                p,
                Precondition::NotModified,
                "304 for a method other than GET/HEAD"
            );
        }
        if let Some(value) = im {
            let matched = list_matches(value, |t| t.strong_eq(&EntityTag::own(ETAG)));
            if matched != Some(true) {
                assert_eq!(p, Precondition::Failed, "If-Match did not hold");
            }
        }
        // If-Match with our own tag passes step 1 whatever the other headers say, and then
        // the result is what If-None-Match / If-Modified-Since alone give.
        let own = evaluate_headers(get, Some(ETAG.as_bytes()), inm, ims, ius, &v);
        assert_eq!(own, evaluate_headers(get, None, inm, ims, None, &v));
        // If-None-Match: * always matches an existing representation.
        let star = evaluate_headers(get, None, Some(b"*"), ims, None, &v);
        let want = if get {
            Precondition::NotModified
        } else {
            Precondition::Failed
        };
        assert_eq!(star, want);
    }

    for value in [im, inm].into_iter().flatten() {
        check_list(value);
    }
    for value in [ims, ius].into_iter().flatten() {
        check_date(value);
    }
    check_date(data);
}

/// An entity-tag list: whether it is well-formed does not depend on what matches, and `*` is
/// the only thing that matches when nothing can.
fn check_list(value: &[u8]) {
    let all = list_matches(value, |_| true);
    let none = list_matches(value, |_| false);
    assert_eq!(all.is_some(), none.is_some());
    assert_ne!(all, Some(false));
    if none == Some(true) {
        assert_eq!(value.trim_ascii(), b"*");
    }
    if let Some(t) = EntityTag::parse(value) {
        assert!(t.opaque.len() >= 2 && t.opaque.starts_with(b"\"") && t.opaque.ends_with(b"\""));
        let mut again = if t.weak { b"W/".to_vec() } else { Vec::new() };
        again.extend_from_slice(t.opaque);
        assert_eq!(EntityTag::parse(&again), Some(t));
        assert_eq!(list_matches(value, |x| *x == t), Some(true));
    }
}

/// A date that parses formats back to the same second, in IMF-fixdate.
fn check_date(value: &[u8]) {
    let Some(t) = date::parse(value) else {
        return;
    };
    let text = date::format(t);
    assert_eq!(text.len(), 29, "{text:?}");
    assert!(text.ends_with(" GMT"));
    let back = date::parse(text.as_bytes()).unwrap_or_else(|| panic!("{text:?} does not parse"));
    assert_eq!(date::unix_secs(back), date::unix_secs(t));
}
