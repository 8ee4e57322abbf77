//! A site's response headers on backend responses (FastCGI, CGI, proxy), as nginx's
//! `add_header` puts its lines on every 2xx/3xx answer: `server{}`'s `headers` path rules
//! that match the request (or the `site{}`'s own rules in their place) and the `site{}`'s own
//! flat `headers` lines. A line the backend (or a route
//! decision) already sent is left alone, as `worker::vhost` does for answers made here.

use super::dispatch::OtherSites;
use crate::config::Config;
use crate::http::request::Request;

/// The header lines (each ending in CRLF) a backend response to `req` gets, from the rules of
/// the site its Host names; empty when none apply.
pub fn for_request(other: &mut OtherSites, config: &Config, req: &Request) -> Vec<u8> {
    let mut out = Vec::new();
    let def = other
        .pick_vhost(config, req.host.as_deref())
        .and_then(|i| config.sites.get(i));
    // A site's own path rules replace `server{}`'s, as for its static answers.
    let rules = def
        .and_then(|d| d.statics.headers.as_ref())
        .unwrap_or(&config.static_opts.headers);
    for (rule, lines) in rules {
        if rule.matches(&req.path) {
            for (name, value) in lines {
                push(&mut out, name, value);
            }
        }
    }
    if let Some(def) = def {
        for (name, value) in &def.headers {
            push(&mut out, name, value);
        }
    }
    out
}

fn push(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The backend's header lines with each of `add` whose name neither they nor `overrides`
/// carry, for a status below 400 (None: nothing to add).
pub fn add_missing(status: u16, headers: &[u8], overrides: &[u8], add: &[u8]) -> Option<Vec<u8>> {
    if add.is_empty() || status >= 400 {
        return None;
    }
    let mut out = headers.to_vec();
    if !out.is_empty() && !out.ends_with(b"\n") {
        out.extend_from_slice(b"\r\n");
    }
    for line in add.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = &line[..colon];
        if !has(headers, name) && !has(overrides, name) {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
    }
    Some(out)
}

/// Whether `lines` hold a field called `name` (ASCII case-insensitive).
fn has(lines: &[u8], name: &[u8]) -> bool {
    lines.split(|&b| b == b'\n').any(|l| {
        l.len() > name.len() && l[..name.len()].eq_ignore_ascii_case(name) && l[name.len()] == b':'
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_what_is_missing_below_400() {
        let add = b"X-Frame-Options: DENY\r\nX-Site: one\r\n";
        let got = add_missing(
            200,
            b"Content-Type: text/html\r\nx-site: mine\r\n",
            b"",
            add,
        );
        assert_eq!(
            got.as_deref(),
            Some(&b"Content-Type: text/html\r\nx-site: mine\r\nX-Frame-Options: DENY\r\n"[..])
        );
        // A route decision's header counts as set.
        let got = add_missing(
            302,
            b"Location: /x\r\n",
            b"X-Frame-Options: SAMEORIGIN\r\n",
            add,
        );
        assert_eq!(
            got.as_deref(),
            Some(&b"Location: /x\r\nX-Site: one\r\n"[..])
        );
        assert_eq!(add_missing(404, b"", b"", add), None);
        assert_eq!(add_missing(200, b"A: b\r\n", b"", b""), None);
        // A prefix of a name is not the name.
        let got = add_missing(200, b"X-Site-Extra: 1\r\n", b"", b"X-Site: one\r\n");
        assert_eq!(
            got.as_deref(),
            Some(&b"X-Site-Extra: 1\r\nX-Site: one\r\n"[..])
        );
    }
}
