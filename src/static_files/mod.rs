//! Static files: safe lookup beneath the root, validators, conditionals and ranges.

pub mod cache;
pub mod coded;
pub mod extras;
pub mod listing;
pub mod mime;
pub mod open;

use crate::config::Dotfiles;
use crate::http::conditional::{self, Precondition, Validators};
use crate::http::range::{self, ByteRange, RangeDecision};
use crate::http::request::{Method, Request};
use crate::reply::{Body, Reply};
use cache::{CachedFile, FileCache, Found, Rendered};
use mime::MimeTable;
use open::Root;
use std::rc::Rc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// What a worker needs to serve static files for one site.
#[derive(Debug)]
pub struct Site {
    /// The document root.
    pub root: Root,
    /// Index file names.
    pub index: Vec<String>,
    /// Whether files under a path segment starting with '.' are served.
    pub dotfiles: Dotfiles,
    /// Suffix → Content-Type.
    pub mime: MimeTable,
    /// Open files and validators, trusted for a second.
    pub cache: FileCache,
    /// Compression, error pages, headers, expiry, listings (shared with the config).
    pub opts: Rc<crate::config::static_opts::StaticOptions>,
    /// Compressed variants of static files (per worker, bounded).
    pub variants: crate::compress::cache::VariantCache,
}

const ALLOW: &str = "GET, HEAD, OPTIONS";

impl Site {
    /// Opens the configured root and builds the MIME table.
    pub fn new(config: &crate::config::Config) -> std::io::Result<Site> {
        Ok(Site {
            root: Root::open(&config.root)?,
            index: config.index.clone(),
            dotfiles: config.dotfiles,
            mime: MimeTable::new(&config.mime),
            cache: FileCache::default(),
            opts: Rc::new(config.static_opts.clone()),
            variants: Default::default(),
        })
    }
}

/// Whether the decoded `path` has a segment starting with '.', other than a leading
/// `/.well-known` (RFC 8615 puts ACME challenges and security.txt there).
pub fn is_dotfile_path(path: &str) -> bool {
    let rest = match path.strip_prefix("/.well-known") {
        Some(r) if r.is_empty() || r.starts_with('/') => r,
        _ => path,
    };
    rest.split('/').any(|seg| seg.starts_with('.'))
}

/// Answers `req` from the files beneath the site's root, with the site's headers and expiry
/// (its error pages replace error bodies as the connection sends them, whoever made them).
pub fn serve(req: &Request, site: &mut Site, now: Instant) -> Reply {
    let mut reply = serve_file(req, site, now);
    extras::add_headers(req, site, &mut reply);
    reply
}

fn serve_file(req: &Request, site: &mut Site, now: Instant) -> Reply {
    // 404 rather than 403: whether such a file exists is not told either.
    if site.dotfiles == Dotfiles::Deny && is_dotfile_path(&req.path) {
        return Reply::error(404);
    }
    if req.method == Method::Options {
        let mut r = Reply::new(204, Body::Empty);
        r.header("Allow", ALLOW);
        return r;
    }
    match site.cache.lookup(&site.root, &req.path, &site.index, now) {
        Found::NotFound => Reply::error(404),
        Found::Forbidden => listing::reply(req, site).unwrap_or_else(|| Reply::error(403)),
        Found::AddSlash => {
            let mut location = String::with_capacity(req.raw_path.len() + 2);
            location.push_str(&req.raw_path);
            location.push('/');
            if let Some(q) = &req.query {
                location.push('?');
                location.push_str(q);
            }
            let mut r = Reply::error(301);
            r.header("Location", &location);
            r
        }
        Found::File(f) => {
            if !matches!(req.method, Method::Get | Method::Head) {
                let mut r = Reply::error(405);
                r.header("Allow", ALLOW);
                return r;
            }
            // For a directory, the index file's own name decides the Content-Type.
            let name = match f.index_pos.and_then(|i| site.index.get(i)) {
                Some(index_name) => index_name.as_str(),
                None => req.path.as_str(),
            };
            let rendered = f.rendered(|| site.mime.lookup(name).to_string());
            if site.opts.compress.is_none() && !site.opts.precompressed {
                return file_reply(req, &f, rendered);
            }
            match coded::choose(req, site, &f, &rendered.content_type, now) {
                coded::Coded::Reply(r) => r,
                coded::Coded::Identity { vary } => {
                    let mut r = file_reply(req, &f, rendered);
                    if vary {
                        r.header("Vary", "Accept-Encoding");
                    }
                    r
                }
            }
        }
    }
}

fn file_reply(req: &Request, f: &CachedFile, rendered: &Rendered) -> Reply {
    let content_type = &*rendered.content_type;
    let v = Validators {
        etag: &f.etag,
        last_modified: f.mtime,
    };
    match conditional::evaluate(req, &v) {
        Precondition::NotModified => {
            let mut r = Reply::new(304, Body::Empty);
            r.header("ETag", &f.etag)
                .header("Last-Modified", &f.last_modified);
            return r;
        }
        Precondition::Failed => return Reply::error(412),
        Precondition::Proceed => {}
    }
    let mut r = match range::evaluate(req, f.size, &v) {
        RangeDecision::Full => {
            let whole = ByteRange {
                start: 0,
                end: f.size.saturating_sub(1),
            };
            let mut r = Reply::new(200, part(f, whole, f.size));
            r.header_lines(&rendered.full_lines);
            return r;
        }
        RangeDecision::Partial(ranges) if ranges.len() == 1 => {
            let mut r = Reply::new(206, part(f, ranges[0], ranges[0].end - ranges[0].start + 1));
            r.header("Content-Type", content_type)
                .header("Content-Range", &range::content_range(ranges[0], f.size));
            r
        }
        RangeDecision::Partial(ranges) => {
            let boundary = range::boundary(boundary_seed(f));
            let m = range::multipart(&ranges, content_type, f.size, &boundary);
            let mut r = Reply::new(
                206,
                Body::Multipart {
                    file: f.file.clone(),
                    parts: m.parts,
                    trailer: m.trailer,
                },
            );
            r.header("Content-Type", &m.content_type);
            r
        }
        RangeDecision::Unsatisfiable => {
            let mut r = Reply::error(416);
            r.header("Content-Range", &range::unsatisfied_content_range(f.size));
            r
        }
    };
    r.header("ETag", &f.etag)
        .header("Last-Modified", &f.last_modified)
        .header("Accept-Ranges", "bytes");
    r
}

/// The body for one range (`len` bytes from `r.start`; 0 for an empty file): from memory for
/// a small cached file, else with sendfile from the descriptor.
fn part(f: &CachedFile, r: ByteRange, len: u64) -> Body {
    if len == 0 {
        return Body::Empty;
    }
    match &f.bytes {
        Some(bytes) => Body::Shared {
            bytes: bytes.clone(),
            offset: r.start as usize,
            len: len as usize,
        },
        None => Body::File {
            file: f.file.clone(),
            offset: r.start,
            len,
        },
    }
}

/// A seed that differs per file and per response, so boundaries are not predictable.
fn boundary_seed(f: &CachedFile) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ f.size.rotate_left(32) ^ (f.etag.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::is_dotfile_path;

    #[test]
    fn dotfile_paths() {
        for p in [
            "/.ssh/id_rsa",
            "/.env",
            "/a/.git/config",
            "/a/.hidden/",
            "/.well-knownx/a",
        ] {
            assert!(is_dotfile_path(p), "{p}");
        }
        for p in [
            "/",
            "/index.html",
            "/a.b/c",
            "/a/b.",
            "/.well-known/acme-challenge/tok",
            "/.well-known",
            "/.well-known/",
        ] {
            assert!(!is_dotfile_path(p), "{p}");
        }
        // Only the leading .well-known is exempt, not dotfiles beneath it.
        assert!(is_dotfile_path("/.well-known/.secret"));
    }
}
