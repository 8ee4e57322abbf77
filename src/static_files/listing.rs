//! Directory listings (`dir_listing`): an HTML table, or JSON with `?format=json`.
//!
//! Only what lies beneath the root is shown: the directory is opened with the same
//! RESOLVE_BENEATH rule as files, and an entry is described by a stat through that rule too,
//! so a symlink leading out of the root is left out rather than shown with its target's size.
//! Names are escaped for HTML and percent-encoded in links, whatever bytes they hold.

use super::Site;
use crate::config::Dotfiles;
use crate::http::request::{Method, Request};
use crate::reply::Reply;
use nix::sys::stat::SFlag;
use std::fmt::Write;
use std::time::{Duration, UNIX_EPOCH};

/// Most entries shown: a bigger directory is cut (and says so) rather than costing the worker
/// unbounded time and memory.
const MAX_ENTRIES: usize = 10_000;

struct Entry {
    name: Vec<u8>,
    dir: bool,
    size: u64,
    mtime: i64,
}

/// The listing of the directory at `req.path` (ending in '/'), or None when it is no directory
/// that may be listed.
pub fn reply(req: &Request, site: &Site) -> Option<Reply> {
    if !req.path.ends_with('/') || !site.opts.dir_listing.lists(&req.path) {
        return None;
    }
    if !matches!(req.method, Method::Get | Method::Head) {
        return None;
    }
    let fd = site.root.open_dir(&req.path).ok()?;
    // Dir takes the descriptor over (and closes it, also when from_fd fails).
    let mut dir = nix::dir::Dir::from_fd(std::os::fd::IntoRawFd::into_raw_fd(fd)).ok()?;
    let show_dot = site.opts.dir_listing.dotfiles && site.dotfiles == Dotfiles::Allow;
    let rel = req.path.trim_start_matches('/');
    let mut entries = Vec::new();
    let mut cut = false;
    for e in dir.iter() {
        let Ok(e) = e else { break };
        let name = e.file_name().to_bytes();
        if name == b"." || name == b".." || (name.starts_with(b".") && !show_dot) {
            continue;
        }
        if entries.len() == MAX_ENTRIES {
            cut = true;
            break;
        }
        let Ok(name_str) = std::str::from_utf8(name) else {
            // A name that is not UTF-8 cannot be requested (paths are decoded as UTF-8).
            continue;
        };
        let Ok(st) = site.root.stat_beneath(&format!("{rel}{name_str}")) else {
            continue;
        };
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        if kind != SFlag::S_IFDIR && kind != SFlag::S_IFREG {
            continue;
        }
        entries.push(Entry {
            name: name.to_vec(),
            dir: kind == SFlag::S_IFDIR,
            size: st.st_size.max(0) as u64,
            mtime: st.st_mtime,
        });
    }
    // Folders first, then by name (bytewise: stable whatever the locale).
    crate::sort_compact::sort_by(&mut entries, |a, b| {
        b.dir.cmp(&a.dir).then_with(|| a.name.cmp(&b.name))
    });
    let json = req
        .query
        .as_deref()
        .is_some_and(|q| q.split('&').any(|p| p == "format=json"));
    let (body, ty) = if json {
        (to_json(&req.path, &entries, cut), "application/json")
    } else {
        (
            to_html(&req.path, &entries, cut),
            "text/html; charset=utf-8",
        )
    };
    let mut r = super::coded::generated(req, site, body.into_bytes(), ty);
    r.header("Cache-Control", "no-cache");
    Some(r)
}

fn date(mtime: i64) -> String {
    crate::http::date::format(UNIX_EPOCH + Duration::from_secs(mtime.max(0) as u64))
}

fn to_json(path: &str, entries: &[Entry], cut: bool) -> String {
    let list: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| {
            serde_json::json!({
                "name": String::from_utf8_lossy(&e.name),
                "type": if e.dir { "dir" } else { "file" },
                "size": e.size,
                "mtime": e.mtime,
                "modified": date(e.mtime),
            })
        })
        .collect();
    let v = serde_json::json!({ "path": path, "entries": list, "truncated": cut });
    let mut s = v.to_string();
    s.push('\n');
    s
}

fn to_html(path: &str, entries: &[Entry], cut: bool) -> String {
    let mut o = String::with_capacity(512 + entries.len() * 160);
    let title = escape_html(path.as_bytes());
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Index of {title}</title>\
         </head>\n<body><h1>Index of {title}</h1>\n<table>\n<tr><th>Name</th><th>Size</th>\
         <th>Modified</th></tr>\n"
    );
    if path != "/" {
        o.push_str("<tr><td><a href=\"../\">../</a></td><td>-</td><td></td></tr>\n");
    }
    for e in entries {
        let slash = if e.dir { "/" } else { "" };
        let size = if e.dir {
            "-".to_string()
        } else {
            e.size.to_string()
        };
        let _ = writeln!(
            o,
            "<tr><td><a href=\"{}{slash}\">{}{slash}</a></td><td>{size}</td><td>{}</td></tr>",
            percent_encode(&e.name),
            escape_html(&e.name),
            date(e.mtime)
        );
    }
    o.push_str("</table>\n");
    if cut {
        let _ = writeln!(o, "<p>Only the first {MAX_ENTRIES} entries are shown.</p>");
    }
    o.push_str("</body></html>\n");
    o
}

/// Text safe inside HTML elements and double- or single-quoted attributes.
pub fn escape_html(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut o = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c if c.is_control() => o.push('\u{FFFD}'),
            c => o.push(c),
        }
    }
    o
}

/// A name as a relative link: every byte but unreserved ones percent-encoded (so `:` cannot
/// make it a scheme, nor `?`/`#` cut it).
fn percent_encode(bytes: &[u8]) -> String {
    let mut o = String::with_capacity(bytes.len() * 3);
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            o.push(b as char);
        } else {
            let _ = write!(o, "%{b:02X}");
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_escaped() {
        let name = b"<img src=x onerror=alert(1)>\"'&.html";
        let e = [Entry {
            name: name.to_vec(),
            dir: false,
            size: 3,
            mtime: 0,
        }];
        let html = to_html("/a&b/", &e, false);
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;&quot;&#39;&amp;.html"));
        assert!(html.contains("href=\"%3Cimg%20src%3Dx"));
        assert!(html.contains("Index of /a&amp;b/"));
        let json = to_json("/", &e, false);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            v["entries"][0]["name"],
            String::from_utf8_lossy(name).as_ref()
        );
        assert_eq!(percent_encode(b"javascript:x"), "javascript%3Ax");
    }
}
