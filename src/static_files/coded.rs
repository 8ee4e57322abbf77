//! Coded variants of a static file: a precompressed sibling (`app.js.zst`, `.br`, `.gz`, as
//! nginx's `gzip_static`) or the file compressed on the fly and kept in the worker's cache.
//!
//! Never for a range request (ranges apply to the identity bytes) and never for a file that is
//! itself already coded (its type is then not in the compressible list, and siblings are looked
//! for only beside the name asked for).

use super::cache::{CachedFile, Found};
use super::Site;
use crate::compress::cache::Variant;
use crate::compress::encoder::encode_all;
use crate::compress::{negotiate, variant_etag};
use crate::config::static_opts::Coding;
use crate::http::conditional::{self, Precondition, Validators};
use crate::http::request::{Method, Request};
use crate::reply::{Body, Reply};
use std::rc::Rc;
use std::time::Instant;

/// Every coding a sibling may have, in the server's order for equal preference.
const SIBLINGS: [Coding; 3] = [Coding::Zstd, Coding::Brotli, Coding::Gzip];

/// What the coding decision for one file came to.
pub enum Coded {
    /// A coded reply (Content-Encoding and Vary set).
    Reply(Reply),
    /// Send identity; `vary` when the answer depended on Accept-Encoding.
    Identity {
        /// Whether to add `Vary: Accept-Encoding`.
        vary: bool,
    },
}

/// Whether on-the-fly compression applies to `f` of `content_type` at all.
fn compressible(site: &Site, f: &CachedFile, content_type: &str) -> bool {
    site.opts
        .compress
        .as_ref()
        .is_some_and(|c| f.size >= c.min_size && c.compresses(content_type))
}

/// Decides the coding of `f` (found at `req.path`) for `req` and builds the coded reply.
pub fn choose(
    req: &Request,
    site: &mut Site,
    f: &CachedFile,
    content_type: &str,
    now: Instant,
) -> Coded {
    let on_the_fly = compressible(site, f, content_type);
    let vary = on_the_fly;
    if !on_the_fly && !site.opts.precompressed {
        return Coded::Identity { vary };
    }
    if !matches!(req.method, Method::Get | Method::Head) || f.size == 0 {
        return Coded::Identity { vary };
    }
    // A range is of the identity bytes; so is an If-Range that could make it one.
    if req.header("range").is_some() && req.method == Method::Get {
        return Coded::Identity { vary };
    }
    let accept: Vec<&[u8]> = req
        .headers()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"accept-encoding"))
        .map(|(_, v)| v)
        .collect();
    if accept.is_empty() {
        return Coded::Identity { vary };
    }
    let mut offered: Vec<Coding> = Vec::with_capacity(3);
    if site.opts.precompressed {
        offered.extend(SIBLINGS);
    }
    if on_the_fly {
        if let Some(c) = &site.opts.compress {
            for &e in &c.encodings {
                if !offered.contains(&e) {
                    offered.push(e);
                }
            }
        }
    }
    // Try the client's favourite first; a sibling that is missing drops that coding unless
    // it can be made on the fly.
    while let Some(coding) = negotiate(accept.iter().copied(), &offered) {
        if site.opts.precompressed {
            if let Some(r) = sibling(req, site, coding, content_type, now) {
                return Coded::Reply(r);
            }
        }
        let fly = on_the_fly
            && site
                .opts
                .compress
                .as_ref()
                .is_some_and(|c| c.encodings.contains(&coding));
        if fly {
            if let Some(r) = crate::compress::stream::large_file(req, site, f, content_type, coding)
            {
                return Coded::Reply(r);
            }
            return match on_the_fly_variant(req, site, f, coding) {
                Some(bytes) => Coded::Reply(coded_reply(
                    req,
                    Body::Shared {
                        len: bytes.len(),
                        bytes,
                        offset: 0,
                    },
                    &variant_etag(&f.etag, coding),
                    &f.last_modified,
                    f.mtime,
                    content_type,
                    coding,
                )),
                None => Coded::Identity { vary },
            };
        }
        offered.retain(|&c| c != coding);
    }
    Coded::Identity { vary }
}

/// A generated body (a listing) compressed when the site compresses its type and the client
/// takes a coding; made per request (listings change), so no cache and no ETag.
pub fn generated(req: &Request, site: &Site, body: Vec<u8>, content_type: &str) -> Reply {
    let coding = site.opts.compress.as_ref().and_then(|c| {
        let big_enough = body.len() as u64 >= c.min_size && body.len() as u64 <= c.max_size;
        if !big_enough || !c.compresses(content_type) {
            return None;
        }
        let accept = req
            .headers()
            .filter(|(n, _)| n.eq_ignore_ascii_case(b"accept-encoding"))
            .map(|(_, v)| v);
        negotiate(accept, &c.encodings).map(|coding| (coding, c))
    });
    let vary = site
        .opts
        .compress
        .as_ref()
        .is_some_and(|c| c.compresses(content_type));
    let mut r = match coding {
        Some((coding, c)) => match encode_all(coding, c.level, c.zstd_level, &body) {
            Ok(out) if out.len() < body.len() => {
                let mut r = Reply::new(200, Body::Bytes(out));
                r.header("Content-Encoding", coding.token());
                r
            }
            _ => Reply::new(200, Body::Bytes(body)),
        },
        None => Reply::new(200, Body::Bytes(body)),
    };
    r.header("Content-Type", content_type);
    if vary {
        r.header("Vary", "Accept-Encoding");
    }
    r
}

/// The sibling `path + suffix` when it is a regular file beneath the root.
fn sibling(
    req: &Request,
    site: &mut Site,
    coding: Coding,
    content_type: &str,
    now: Instant,
) -> Option<Reply> {
    if req.path.ends_with('/') {
        return None;
    }
    let name = format!("{}{}", req.path, coding.suffix());
    let Found::File(s) = site.cache.lookup(&site.root, &name, &[], now) else {
        return None;
    };
    let body = match &s.bytes {
        Some(b) => Body::Shared {
            bytes: b.clone(),
            offset: 0,
            len: b.len(),
        },
        None => Body::File {
            file: s.file.clone(),
            offset: 0,
            len: s.size,
        },
    };
    let body = if s.size == 0 { Body::Empty } else { body };
    // The sibling's own validators, made by the same rules as the identity file's (its inode
    // differs, so its ETag is distinct from the identity's).
    Some(coded_reply(
        req,
        body,
        &s.etag,
        &s.last_modified,
        s.mtime,
        content_type,
        coding,
    ))
}

/// The coded bytes of `f`, from the cache or made now (None: the coding gains nothing, or the
/// file could not be read whole).
fn on_the_fly_variant(
    req: &Request,
    site: &mut Site,
    f: &CachedFile,
    coding: Coding,
) -> Option<Rc<[u8]>> {
    let c = site.opts.compress.as_ref()?;
    // Larger files stream (compress::stream); never read one whole here.
    if f.size > c.max_size {
        return None;
    }
    if let Some(v) = site.variants.get(&req.path, coding, &f.etag) {
        return match v {
            Variant::Coded(b) => Some(b),
            Variant::NoGain => None,
        };
    }
    let input: Rc<[u8]> = match &f.bytes {
        Some(b) => b.clone(),
        None => read_whole(&f.file, f.size)?,
    };
    let variant = match encode_all(coding, c.level, c.zstd_level, &input) {
        Ok(out) if out.len() < input.len() => Variant::Coded(out.into()),
        Ok(_) => Variant::NoGain,
        Err(e) => {
            tracing::warn!("compressing {}: {e}", req.path);
            return None;
        }
    };
    let limit = c.cache_bytes;
    site.variants
        .put(&req.path, coding, &f.etag, variant.clone(), limit);
    match variant {
        Variant::Coded(b) => Some(b),
        Variant::NoGain => None,
    }
}

/// A file's bytes (it is at most `compress.max_size`); None if it is not the size fstat gave.
fn read_whole(file: &std::fs::File, size: u64) -> Option<Rc<[u8]>> {
    let mut buf = vec![0u8; usize::try_from(size).ok()?];
    let mut got = 0;
    while got < buf.len() {
        match nix::sys::uio::pread(file, &mut buf[got..], got as i64) {
            Ok(0) => return None,
            Ok(n) => got += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return None,
        }
    }
    Some(buf.into())
}

/// A 200 (or 304/412) of a coded representation with its own validators.
pub(crate) fn coded_reply(
    req: &Request,
    body: Body,
    etag: &str,
    last_modified: &str,
    mtime: std::time::SystemTime,
    content_type: &str,
    coding: Coding,
) -> Reply {
    let v = Validators {
        etag,
        last_modified: mtime,
    };
    let mut r = match conditional::evaluate(req, &v) {
        Precondition::NotModified => Reply::new(304, Body::Empty),
        Precondition::Failed => return Reply::error(412),
        Precondition::Proceed => {
            let mut r = Reply::new(200, body);
            r.header("Content-Type", content_type)
                .header("Content-Encoding", coding.token());
            r
        }
    };
    r.header("ETag", etag)
        .header("Last-Modified", last_modified)
        .header("Vary", "Accept-Encoding");
    r
}
