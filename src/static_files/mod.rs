//! Static files: safe lookup beneath the root, validators, conditionals and ranges.

pub mod mime;
pub mod open;

use crate::http::conditional::{self, Precondition, Validators};
use crate::http::range::{self, RangeDecision};
use crate::http::request::{Method, Request};
use crate::reply::{Body, Reply};
use mime::MimeTable;
use nix::sys::stat::FileStat;
use open::{Lookup, Root};
use std::fmt::Write;
use std::fs::File;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a worker needs to serve static files for one site.
#[derive(Debug)]
pub struct Site {
    /// The document root.
    pub root: Root,
    /// Index file names.
    pub index: Vec<String>,
    /// Suffix → Content-Type.
    pub mime: MimeTable,
}

const ALLOW: &str = "GET, HEAD, OPTIONS";

/// Answers `req` from the files beneath the site's root.
pub fn serve(req: &Request, site: &Site) -> Reply {
    if req.method == Method::Options {
        let mut r = Reply::new(204, Body::Empty);
        r.header("Allow", ALLOW);
        return r;
    }
    match site.root.lookup(&req.path, &site.index) {
        Lookup::NotFound => Reply::error(404),
        Lookup::Forbidden => Reply::error(403),
        Lookup::AddSlash => {
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
        Lookup::File(file, st, index_pos) => {
            if !matches!(req.method, Method::Get | Method::Head) {
                let mut r = Reply::error(405);
                r.header("Allow", ALLOW);
                return r;
            }
            // For a directory, the index file's own name decides the Content-Type.
            let name = match index_pos.and_then(|i| site.index.get(i)) {
                Some(index_name) => index_name.as_str(),
                None => req.path.as_str(),
            };
            file_reply(req, file, &st, site.mime.lookup(name))
        }
    }
}

fn file_reply(req: &Request, file: File, st: &FileStat, content_type: &str) -> Reply {
    let size = st.st_size.max(0) as u64;
    let mtime = UNIX_EPOCH + Duration::from_secs(st.st_mtime.max(0) as u64);
    let mut etag = String::with_capacity(40);
    // Inode, size and nanosecond mtime: a strong validator that changes with any rewrite.
    let _ = write!(
        etag,
        "\"{:x}-{:x}-{:x}.{:x}\"",
        st.st_ino, size, st.st_mtime, st.st_mtime_nsec
    );
    let v = Validators {
        etag: &etag,
        last_modified: mtime,
    };
    let last_modified = crate::http::date::format(mtime);
    match conditional::evaluate(req, &v) {
        Precondition::NotModified => {
            let mut r = Reply::new(304, Body::Empty);
            r.header("ETag", &etag)
                .header("Last-Modified", &last_modified);
            return r;
        }
        Precondition::Failed => return Reply::error(412),
        Precondition::Proceed => {}
    }
    let mut r = match range::evaluate(req, size, &v) {
        RangeDecision::Full => {
            let mut r = Reply::new(
                200,
                Body::File {
                    file,
                    offset: 0,
                    len: size,
                },
            );
            r.header("Content-Type", content_type);
            r
        }
        RangeDecision::Partial(ranges) if ranges.len() == 1 => {
            let br = ranges[0];
            let mut r = Reply::new(
                206,
                Body::File {
                    file,
                    offset: br.start,
                    len: br.end - br.start + 1,
                },
            );
            r.header("Content-Type", content_type)
                .header("Content-Range", &range::content_range(br, size));
            r
        }
        RangeDecision::Partial(ranges) => {
            let boundary = range::boundary(boundary_seed(st));
            let m = range::multipart(&ranges, content_type, size, &boundary);
            let mut r = Reply::new(
                206,
                Body::Multipart {
                    file,
                    parts: m.parts,
                    trailer: m.trailer,
                },
            );
            r.header("Content-Type", &m.content_type);
            r
        }
        RangeDecision::Unsatisfiable => {
            let mut r = Reply::error(416);
            r.header("Content-Range", &range::unsatisfied_content_range(size));
            r
        }
    };
    r.header("ETag", &etag)
        .header("Last-Modified", &last_modified)
        .header("Accept-Ranges", "bytes");
    r
}

/// A seed that differs per file and per response, so boundaries are not predictable.
fn boundary_seed(st: &FileStat) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ st.st_ino.rotate_left(32)
}

impl Site {
    /// Opens the configured root and builds the MIME table.
    pub fn new(config: &crate::config::Config) -> std::io::Result<Site> {
        Ok(Site {
            root: Root::open(&config.root)?,
            index: config.index.clone(),
            mime: MimeTable::new(&config.mime),
        })
    }
}
