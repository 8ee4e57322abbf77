//! The HTTP reverse proxy's sans-IO parts: the strict upstream response parser, the request
//! and response fields that cross the proxy, and a worker's upstream pool with balancing and
//! passive health. The exchange that moves the bytes lives in `worker::proxy`, beside the
//! FastCGI one.

pub mod headers;
pub mod pool;
pub mod response;

/// Where a proxied request goes, and what the route decision changes in it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyTarget {
    /// The upstream's index in the config.
    pub upstream: usize,
    /// The path sent instead of the request's (the query is kept).
    pub path: Option<String>,
    /// Request fields that replace the client's.
    pub headers: Vec<(String, String)>,
    /// The Host sent instead of the client's.
    pub host: Option<String>,
}

/// The upstream whose `prefix` mounts `path`, if one does (the longest prefix wins).
pub fn match_prefix(config: &crate::config::Config, path: &str) -> Option<usize> {
    config
        .upstreams
        .iter()
        .enumerate()
        .filter_map(|(i, u)| u.prefix.as_deref().map(|p| (i, p)))
        .filter(|(_, p)| mounts(p, path))
        .max_by_key(|(_, p)| p.len())
        .map(|(i, _)| i)
}

/// Whether `prefix` (an upstream's `prefix`, or a key of a site's `proxy`) takes `path`:
/// `/app/` takes `/app/…` and `/app` itself; `/` takes everything.
pub fn mounts(prefix: &str, path: &str) -> bool {
    let mount = prefix.trim_end_matches('/');
    path.starts_with(prefix) || path == mount || prefix == "/"
}
