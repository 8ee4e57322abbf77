//! Property checks behind the fuzz targets in `fuzz/` (see fuzz/README.md).
//!
//! One `pub fn` per target, taking the fuzzer's bytes and panicking when a property does not
//! hold. They live in the library so that the libFuzzer targets (nightly) and
//! `tests/fuzz_regressions.rs` (stable, plain `cargo test`) run exactly the same checks: the
//! test replays the seed corpus and every crash kept under `fuzz/regressions/`.
//!
//! Not a stable API: hidden from the docs, used by nothing in the server.

mod admin;
mod body;
mod cgi_head;
mod chunked;
mod conditional;
mod differential;
mod host;
mod path;
mod proxy_header;
mod range;
mod record;
mod request;
mod response_head;
mod split;

pub use admin::admin_frame;
pub use body::request_body;
pub use cgi_head::cgi_head;
pub use chunked::chunked;
pub use conditional::conditional;
pub use differential::request_differential;
pub use host::host;
pub use path::path;
pub use proxy_header::proxy_header;
pub use range::range;
pub use record::fastcgi_record;
pub use request::request_head;
pub use response_head::response_head;

/// A check: panics when a property fails for this input.
pub type Check = fn(&[u8]);

/// Every target by its name, which is also its directory under `fuzz/corpus/` and
/// `fuzz/regressions/` and its binary under `fuzz/fuzz_targets/`.
pub const TARGETS: &[(&str, Check)] = &[
    ("request_head", request_head),
    ("request_differential", request_differential),
    ("chunked", chunked),
    ("request_body", request_body),
    ("range", range),
    ("conditional", conditional),
    ("host", host),
    ("path", path),
    ("fastcgi_record", fastcgi_record),
    ("cgi_head", cgi_head),
    ("admin_frame", admin_frame),
    ("proxy_header", proxy_header),
    ("response_head", response_head),
];

/// The check of the target named `name`.
pub fn by_name(name: &str) -> Option<Check> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|&(_, c)| c)
}

#[cfg(test)]
mod tests {
    //! The checks must be able to fail: each of these feeds one a violation on purpose.

    use super::path::check_beneath;

    #[test]
    fn every_target_is_found_by_name() {
        for (name, _) in super::TARGETS {
            assert!(super::by_name(name).is_some());
        }
        assert!(super::by_name("request_body").is_some());
        assert!(super::by_name("no_such_target").is_none());
    }

    #[test]
    #[should_panic(expected = "dot segment")]
    fn beneath_refuses_a_parent_segment() {
        check_beneath("/a/../b");
    }

    #[test]
    #[should_panic(expected = "control byte")]
    fn beneath_refuses_nul() {
        check_beneath("/a\0b");
    }

    #[test]
    #[should_panic(expected = "not absolute")]
    fn beneath_refuses_a_relative_path() {
        check_beneath("etc/passwd");
    }

    #[test]
    fn beneath_accepts_ordinary_paths() {
        for p in ["/", "/a/b/", "//a//b", "/.hidden", "/a/.../b", "/café"] {
            check_beneath(p);
        }
    }

    #[test]
    fn a_request_serialises_to_its_canonical_head() {
        let input = b"\r\nGET  /x HTTP/1.1\r\nHost: a\r\n\r\n";
        assert!(crate::http::request::parse(input, 8192).is_err());
        let input = b"\r\nGET /x?q HTTP/1.1\r\nHost:a \r\nX:  y\r\n\r\n";
        let r = crate::http::request::parse(input, 8192)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("refused"));
        assert_eq!(
            super::request::serialise(&r),
            b"GET /x?q HTTP/1.1\r\nHost: a\r\nX: y\r\n\r\n"
        );
    }
}
