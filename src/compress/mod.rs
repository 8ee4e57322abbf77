//! Content codings: choosing one from Accept-Encoding, encoding bodies, and the per-worker
//! cache of compressed static variants. Nothing here touches a socket.

pub mod accept;
pub mod cache;
pub mod encoder;
pub mod stream;

pub use accept::negotiate;

/// The strong ETag of a coded variant of the representation tagged `etag` (`"abc"` →
/// `"abc-gzip"`): distinct from the identity's, so a cache never hands one for the other.
pub fn variant_etag(etag: &str, coding: crate::config::static_opts::Coding) -> String {
    let inner = etag.strip_suffix('"').unwrap_or(etag);
    format!("{inner}-{}\"", coding.token())
}
