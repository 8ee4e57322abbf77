//! Property checks behind the fuzz targets in `fuzz/` (see fuzz/README.md).
//!
//! One `pub fn` per target, taking the fuzzer's bytes and panicking when a property does not
//! hold. They live in the library so that the libFuzzer targets (nightly) and
//! `tests/fuzz_regressions.rs` (stable, plain `cargo test`) run exactly the same checks: the
//! test replays the seed corpus and every crash kept under `fuzz/regressions/`.
//!
//! Not a stable API: hidden from the docs, used by nothing in the server.

mod admin;
mod cgi_head;
mod chunked;
mod conditional;
mod differential;
mod host;
mod path;
mod range;
mod record;
mod request;
mod split;

pub use admin::admin_frame;
pub use cgi_head::cgi_head;
pub use chunked::chunked;
pub use conditional::conditional;
pub use differential::request_differential;
pub use host::host;
pub use path::path;
pub use range::range;
pub use record::fastcgi_record;
pub use request::request_head;

/// A check: panics when a property fails for this input.
pub type Check = fn(&[u8]);

/// Every target by its name, which is also its directory under `fuzz/corpus/` and
/// `fuzz/regressions/` and its binary under `fuzz/fuzz_targets/`.
///
/// The request-body reader is being rewritten as a sans-IO module; its target, `request_body`,
/// is to be added here (and in fuzz/Cargo.toml) once that module lands.
pub const TARGETS: &[(&str, Check)] = &[
    ("request_head", request_head),
    ("request_differential", request_differential),
    ("chunked", chunked),
    ("range", range),
    ("conditional", conditional),
    ("host", host),
    ("path", path),
    ("fastcgi_record", fastcgi_record),
    ("cgi_head", cgi_head),
    ("admin_frame", admin_frame),
];

/// The check of the target named `name`.
pub fn by_name(name: &str) -> Option<Check> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|&(_, c)| c)
}
