//! Static-file extras of a site: compression, precompressed siblings, error pages, response
//! headers and expiry per path, directory listings.
//!
//! One `StaticOptions` value belongs to one site (today `server{}`; a `site "name" {}` block can
//! hold its own), so nothing here refers to the server as a whole.

use std::collections::BTreeMap;
use std::time::Duration;

/// A content coding the server can produce or find beside a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Coding {
    /// `zstd` (RFC 8878).
    Zstd,
    /// `br`: only as a precompressed `.br` sibling (no on-the-fly encoder).
    Brotli,
    /// `gzip` (RFC 1952).
    Gzip,
}

impl Coding {
    /// The token in Accept-Encoding and Content-Encoding.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Zstd => "zstd",
            Coding::Brotli => "br",
            Coding::Gzip => "gzip",
        }
    }

    /// The suffix of a precompressed sibling (`app.js.gz`).
    pub fn suffix(self) -> &'static str {
        match self {
            Coding::Zstd => ".zst",
            Coding::Brotli => ".br",
            Coding::Gzip => ".gz",
        }
    }

    /// The coding for an Accept-Encoding token (`x-gzip` is gzip, RFC 9110 §8.4.1.3).
    pub fn from_token(token: &str) -> Option<Coding> {
        if token.eq_ignore_ascii_case("gzip") || token.eq_ignore_ascii_case("x-gzip") {
            Some(Coding::Gzip)
        } else if token.eq_ignore_ascii_case("zstd") {
            Some(Coding::Zstd)
        } else if token.eq_ignore_ascii_case("br") {
            Some(Coding::Brotli)
        } else {
            None
        }
    }
}

/// On-the-fly compression (`compress = { ... }`).
#[derive(Debug, Clone, PartialEq)]
pub struct Compress {
    /// Codings produced, in the server's order of preference for equal q-values.
    pub encodings: Vec<Coding>,
    /// Media types compressed (`text/*` matches every text type), without parameters.
    pub types: Vec<String>,
    /// Smallest body compressed, in bytes (a known-length body below it goes as it is).
    pub min_size: u64,
    /// Largest static file compressed whole and kept in the variant cache; larger ones are
    /// compressed as they stream, never cached (a precompressed sibling is served as it is).
    /// FastCGI, CGI and proxied bodies stream and have no limit.
    pub max_size: u64,
    /// gzip level, 1–9.
    pub level: u32,
    /// zstd level, 1–19.
    pub zstd_level: i32,
    /// Bytes of compressed static variants each worker keeps.
    pub cache_bytes: usize,
}

/// Types compressed when `compress` names none.
pub const DEFAULT_TYPES: &[&str] = &[
    "text/*",
    "application/javascript",
    "application/json",
    "application/xml",
    "application/xhtml+xml",
    "application/rss+xml",
    "application/atom+xml",
    "application/manifest+json",
    "application/wasm",
    "image/svg+xml",
];

impl Default for Compress {
    fn default() -> Self {
        Compress {
            encodings: if cfg!(feature = "zstd") {
                vec![Coding::Zstd, Coding::Gzip]
            } else {
                vec![Coding::Gzip]
            },
            types: DEFAULT_TYPES.iter().map(|s| s.to_string()).collect(),
            min_size: 256,
            max_size: 1024 * 1024,
            level: 6,
            zstd_level: 3,
            cache_bytes: 4 * 1024 * 1024,
        }
    }
}

impl Compress {
    /// Whether a response of `content_type` (parameters allowed) is compressed.
    pub fn compresses(&self, content_type: &str) -> bool {
        let ty = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        self.types.iter().any(|t| match t.strip_suffix("/*") {
            Some(major) => ty
                .strip_prefix(major)
                .is_some_and(|rest| rest.starts_with('/')),
            None => *t == ty,
        })
    }
}

/// How a rule's key matches a request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// A key starting with '/': the path starts with it (`"/"` matches every path).
    Prefix(String),
    /// A key starting with '.': the path ends with it (ASCII case-insensitive).
    Suffix(String),
}

impl PathMatch {
    /// Whether `path` (decoded) matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Prefix(p) => path.starts_with(p.as_str()),
            PathMatch::Suffix(s) => {
                path.len() >= s.len()
                    && path.is_char_boundary(path.len() - s.len())
                    && path[path.len() - s.len()..].eq_ignore_ascii_case(s)
            }
        }
    }

    /// The key as written in the config.
    pub fn key(&self) -> &str {
        match self {
            PathMatch::Prefix(s) | PathMatch::Suffix(s) => s,
        }
    }
}

/// Directory listings (`dir_listing = true`, or `{ "/pub/", dotfiles = true }`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DirListing {
    /// Path prefixes listed; empty: listing is off. `"/"` lists everywhere.
    pub prefixes: Vec<String>,
    /// Whether names starting with '.' are shown (never when `dotfiles = "deny"`).
    pub dotfiles: bool,
}

impl DirListing {
    /// Whether the directory at `path` may be listed.
    pub fn lists(&self, path: &str) -> bool {
        self.prefixes.iter().any(|p| path.starts_with(p.as_str()))
    }
}

/// The static-file extras of one site.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StaticOptions {
    /// On-the-fly compression; None: off (the default, as nginx's `gzip off`).
    pub compress: Option<Compress>,
    /// Whether `name.zst`, `name.br`, `name.gz` beside a file are served in its place to a
    /// client that accepts the coding (`precompressed = true`, nginx's `gzip_static`).
    pub precompressed: bool,
    /// Status → page path beneath the root, served with the original status.
    pub error_pages: BTreeMap<u16, String>,
    /// Extra response headers per path rule, in the order rules match (prefixes by length,
    /// then suffixes); each rule's headers are added.
    pub headers: Vec<(PathMatch, Vec<(String, String)>)>,
    /// Cache lifetime per path rule (Cache-Control max-age and Expires); the most specific
    /// rule wins (suffixes first, then the longest prefix).
    pub expires: Vec<(PathMatch, Duration)>,
    /// Directory listings.
    pub dir_listing: DirListing,
}

/// Header rules: each path rule with the lines it adds.
pub type HeaderRules = Vec<(PathMatch, Vec<(String, String)>)>;

/// The static-file extras a `site "name" {}` sets for itself; each one it leaves out (None)
/// is `server{}`'s.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SiteStatics {
    /// `compress` (Some(None): `compress = false`, off for this site alone).
    pub compress: Option<Option<Compress>>,
    /// `error_pages`.
    pub error_pages: Option<BTreeMap<u16, String>>,
    /// `headers` in the path-rule shape (`["/prefix/"] = { ... }`).
    pub headers: Option<HeaderRules>,
    /// `expires`.
    pub expires: Option<Vec<(PathMatch, Duration)>>,
}

impl StaticOptions {
    /// These options with what `site` sets in place of the same keys.
    pub fn overlaid(&self, site: &SiteStatics) -> StaticOptions {
        let mut o = self.clone();
        if let Some(c) = &site.compress {
            o.compress = c.clone();
        }
        if let Some(e) = &site.error_pages {
            o.error_pages = e.clone();
        }
        if let Some(h) = &site.headers {
            o.headers = h.clone();
        }
        if let Some(e) = &site.expires {
            o.expires = e.clone();
        }
        o
    }

    /// The expiry for `path`: a matching suffix rule, else the longest matching prefix.
    pub fn expiry(&self, path: &str) -> Option<Duration> {
        let suffix = self
            .expires
            .iter()
            .filter(|(m, _)| matches!(m, PathMatch::Suffix(_)) && m.matches(path))
            .max_by_key(|(m, _)| m.key().len());
        let prefix = self
            .expires
            .iter()
            .filter(|(m, _)| matches!(m, PathMatch::Prefix(_)) && m.matches(path))
            .max_by_key(|(m, _)| m.key().len());
        suffix.or(prefix).map(|(_, d)| *d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_matching() {
        let c = Compress::default();
        assert!(c.compresses("text/html; charset=utf-8"));
        assert!(c.compresses("TEXT/CSS"));
        assert!(c.compresses("application/javascript"));
        assert!(c.compresses("image/svg+xml"));
        assert!(!c.compresses("image/png"));
        assert!(!c.compresses("textual/x"));
        assert!(!c.compresses("application/octet-stream"));
    }

    #[test]
    fn path_rules() {
        assert!(PathMatch::Prefix("/a/".into()).matches("/a/b"));
        assert!(!PathMatch::Prefix("/a/".into()).matches("/ab"));
        assert!(PathMatch::Suffix(".css".into()).matches("/x/Y.CSS"));
        assert!(!PathMatch::Suffix(".css".into()).matches("/x.cs"));
        let o = StaticOptions {
            expires: vec![
                (PathMatch::Prefix("/".into()), Duration::from_secs(1)),
                (PathMatch::Prefix("/static/".into()), Duration::from_secs(2)),
                (PathMatch::Suffix(".css".into()), Duration::from_secs(3)),
            ],
            ..Default::default()
        };
        assert_eq!(o.expiry("/x"), Some(Duration::from_secs(1)));
        assert_eq!(o.expiry("/static/a.js"), Some(Duration::from_secs(2)));
        assert_eq!(o.expiry("/static/a.css"), Some(Duration::from_secs(3)));
        assert_eq!(StaticOptions::default().expiry("/x"), None);
    }
}
