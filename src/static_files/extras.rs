//! What a site adds around a static reply: its headers and expiry per path rule, and its own
//! error pages in place of the built-in ones.

use super::cache::Found;
use super::Site;
use crate::http::request::Request;
use crate::reply::{Body, Reply};
use std::time::{Instant, SystemTime};

/// Adds the site's headers and expiry to a successful (or 3xx, 304) reply for `req`.
pub fn add_headers(req: &Request, site: &Site, reply: &mut Reply) {
    if reply.status >= 400 || (site.opts.headers.is_empty() && site.opts.expires.is_empty()) {
        return;
    }
    for (rule, lines) in &site.opts.headers {
        if rule.matches(&req.path) {
            for (name, value) in lines {
                reply.header(name, value);
            }
        }
    }
    if let Some(d) = site.opts.expiry(&req.path) {
        reply.header("Cache-Control", &format!("max-age={}", d.as_secs()));
        reply.header("Expires", &crate::http::date::format(SystemTime::now() + d));
    }
}

/// The site's page for an error reply carrying the built-in page, served with the reply's
/// status and its other headers (Allow, Content-Range, Location); the reply itself when there
/// is no page, it is missing, or the body is someone's own (a route's `respond`).
pub fn error_page(site: &mut Site, reply: Reply, now: Instant) -> Reply {
    if reply.status < 400 || !site.opts.error_pages.contains_key(&reply.status) {
        return reply;
    }
    if !is_builtin_page(&reply) {
        return reply;
    }
    let Some(page) = site.opts.error_pages.get(&reply.status).cloned() else {
        return reply;
    };
    let f = match site.cache.lookup(&site.root, &page, &site.index, now) {
        Found::File(f) => f,
        _ => {
            tracing::warn!(
                "error_pages[{}]: {page} is not a file beneath the root; built-in page sent",
                reply.status
            );
            return reply;
        }
    };
    let name = match f.index_pos.and_then(|i| site.index.get(i)) {
        Some(index_name) => index_name.clone(),
        None => page.clone(),
    };
    let body = match (&f.bytes, f.size) {
        (_, 0) => Body::Empty,
        (Some(b), _) => Body::Shared {
            bytes: b.clone(),
            offset: 0,
            len: b.len(),
        },
        (None, size) => Body::File {
            file: f.file.clone(),
            offset: 0,
            len: size,
        },
    };
    let mut out = Reply::new(reply.status, body);
    out.header("Content-Type", site.mime.lookup(&name));
    // Keep every other line of the original (the page replaces only the body and its type).
    for line in reply.headers.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() || starts_with_ignore_case(line, b"content-type:") {
            continue;
        }
        out.headers.extend_from_slice(line);
        out.headers.extend_from_slice(b"\r\n");
    }
    out.overrides = reply.overrides;
    out
}

/// Whether the reply's body is the built-in page of its status (`Reply::error`).
fn is_builtin_page(reply: &Reply) -> bool {
    match (&reply.body, Reply::error(reply.status).body) {
        (Body::Bytes(mine), Body::Bytes(builtin)) => *mine == builtin,
        _ => false,
    }
}

fn starts_with_ignore_case(line: &[u8], prefix: &[u8]) -> bool {
    line.len() >= prefix.len() && line[..prefix.len()].eq_ignore_ascii_case(prefix)
}
