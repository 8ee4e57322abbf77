//! Validation of the static-file extras of a site: `compress`, `precompressed`, `error_pages`,
//! `headers`, `expires`, `dir_listing` (types in `config::static_opts`).

use std::collections::BTreeMap;
use std::time::Duration;

use mlua::{Table, Value};

use super::{boolean, got, has_control, integer, record, string, string_list, Report};
use crate::config::static_opts::{
    Coding, Compress, DirListing, PathMatch, SiteStatics, StaticOptions,
};

/// Keys of `compress = {...}`.
const COMPRESS_KEYS: &[&str] = &[
    "encodings",
    "types",
    "min_size",
    "max_size",
    "level",
    "zstd_level",
    "cache_bytes",
];

/// Longest expiry: RFC 9111 §5.3 asks for no more than a year in Expires.
const MAX_EXPIRES: u64 = 365 * 86_400;

/// Headers a static rule may not set: they frame or encode the response, which the server owns.
const RESERVED_HEADERS: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "content-encoding",
    "content-range",
    "keep-alive",
    "upgrade",
    "trailer",
];

/// Reads the extras among `fields` (a `server{}` table, or a site's) into a `StaticOptions`.
pub(in crate::config) fn read(r: &mut Report, fields: &BTreeMap<String, Value>) -> StaticOptions {
    let mut o = StaticOptions::default();
    if let Some(v) = fields.get("compress") {
        o.compress = compress(r, v);
    }
    if let Some(v) = fields.get("precompressed") {
        o.precompressed = boolean(r, &["precompressed"], v).unwrap_or(false);
    }
    if let Some(v) = fields.get("error_pages") {
        o.error_pages = error_pages(r, v);
    }
    if let Some(v) = fields.get("headers") {
        o.headers = headers(r, v);
    }
    if let Some(v) = fields.get("expires") {
        o.expires = expires(r, v);
    }
    if let Some(v) = fields.get("dir_listing") {
        o.dir_listing = dir_listing(r, v);
    }
    o
}

/// Whether a `headers` table is of the path-rule shape (`["/prefix/"]` or `[".suffix"]` keys,
/// each a table), as against a site's flat `["Name"] = "value"` lines.
pub(in crate::config) fn is_rule_table(v: &Value) -> bool {
    let Value::Table(t) = v else {
        return false;
    };
    let mut any = false;
    for (k, _) in t.pairs::<Value, Value>().filter_map(Result::ok) {
        let rule = matches!(&k, Value::String(s)
            if s.to_str().is_ok_and(|s| s.starts_with('/') || s.starts_with('.')));
        if !rule {
            return false;
        }
        any = true;
    }
    any
}

/// Reads what a `site{}` block sets of `compress`, `error_pages`, `expires` and the rule
/// shape of `headers`, validated as at server level.
pub(in crate::config) fn read_site(
    r: &mut Report,
    fields: &BTreeMap<String, Value>,
) -> SiteStatics {
    let mut o = SiteStatics::default();
    if let Some(v) = fields.get("compress") {
        o.compress = Some(compress(r, v));
    }
    if let Some(v) = fields.get("error_pages") {
        o.error_pages = Some(error_pages(r, v));
    }
    if let Some(v) = fields.get("headers").filter(|v| is_rule_table(v)) {
        o.headers = Some(headers(r, v));
    }
    if let Some(v) = fields.get("expires") {
        o.expires = Some(expires(r, v));
    }
    o
}

fn compress(r: &mut Report, v: &Value) -> Option<Compress> {
    let mut c = Compress::default();
    match v {
        Value::Boolean(false) => return None,
        Value::Boolean(true) => return Some(c),
        _ => {}
    }
    let f = record(r, &["compress"], v, COMPRESS_KEYS, "compress")?;
    if let Some(v) = f.get("encodings") {
        let path = ["compress", "encodings"];
        if let Some(list) = string_list(r, &path, v) {
            let mut out = Vec::new();
            for s in &list {
                match Coding::from_token(s) {
                    Some(Coding::Brotli) | None => r.at_value(
                        &path,
                        s,
                        format!(
                            "compress.encodings: '{s}' cannot be produced on the fly \
                             (choose from \"zstd\", \"gzip\"; .br files are served with \
                             precompressed = true)"
                        ),
                    ),
                    Some(Coding::Zstd) if !cfg!(feature = "zstd") => r.at_value(
                        &path,
                        s,
                        "compress.encodings: this build has no zstd (feature `zstd`)",
                    ),
                    Some(c) if out.contains(&c) => {
                        r.at_value(&path, s, format!("compress.encodings: '{s}' given twice"))
                    }
                    Some(c) => out.push(c),
                }
            }
            if list.is_empty() {
                r.at(&path, "compress.encodings must name at least one coding");
            }
            c.encodings = out;
        }
    }
    if let Some(v) = f.get("types") {
        let path = ["compress", "types"];
        if let Some(list) = string_list(r, &path, v) {
            for t in &list {
                let ok = t.split_once('/').is_some_and(|(a, b)| {
                    !a.is_empty() && !b.is_empty() && !t.contains(';') && !has_control(t)
                });
                if !ok {
                    r.at_value(
                        &path,
                        t,
                        format!(
                            "compress.types: '{t}' is not a media type like \"text/css\" or \
                             \"text/*\""
                        ),
                    );
                }
            }
            c.types = list.iter().map(|t| t.trim().to_ascii_lowercase()).collect();
        }
    }
    let sizes: [(&str, &mut u64); 2] =
        [("min_size", &mut c.min_size), ("max_size", &mut c.max_size)];
    for (key, slot) in sizes {
        if let Some(v) = f.get(key) {
            if let Some(n) = integer(r, &["compress", key], v, 0, i64::MAX) {
                *slot = n as u64;
            }
        }
    }
    if let Some(v) = f.get("level") {
        if let Some(n) = integer(r, &["compress", "level"], v, 1, 9) {
            c.level = n as u32;
        }
    }
    if let Some(v) = f.get("zstd_level") {
        if let Some(n) = integer(r, &["compress", "zstd_level"], v, 1, 19) {
            c.zstd_level = n as i32;
        }
    }
    if let Some(v) = f.get("cache_bytes") {
        if let Some(n) = integer(r, &["compress", "cache_bytes"], v, 0, 1 << 40) {
            c.cache_bytes = n as usize;
        }
    }
    Some(c)
}

/// A table's entries in a stable order (Lua's `pairs` order is not): by key text.
fn entries(r: &mut Report, field: &str, v: &Value, what: &str) -> Vec<(Value, Value)> {
    let Value::Table(t) = v else {
        r.at(&[field], format!("{field} must be {what}, got {}", got(v)));
        return Vec::new();
    };
    let mut out: Vec<(Value, Value)> = t.pairs::<Value, Value>().filter_map(Result::ok).collect();
    crate::sort_compact::sort_by_key(&mut out, |(k, _)| key_text(k));
    out
}

fn key_text(k: &Value) -> String {
    match k {
        Value::String(s) => s.to_string_lossy().to_string(),
        Value::Integer(i) => format!("{i:020}"),
        other => other.type_name().to_string(),
    }
}

fn error_pages(r: &mut Report, v: &Value) -> BTreeMap<u16, String> {
    let mut out = BTreeMap::new();
    for (k, val) in entries(
        r,
        "error_pages",
        v,
        "a table of [404] = \"/errors/404.html\"",
    ) {
        let status = match k {
            Value::Integer(i) if (400..=599).contains(&i) => i as u16,
            Value::Number(n) if n.fract() == 0.0 && (400.0..=599.0).contains(&n) => n as u16,
            other => {
                r.at(
                    &["error_pages"],
                    format!(
                        "error_pages keys must be status codes 400 to 599, got {}",
                        match &other {
                            Value::String(s) => format!("'{}'", s.to_string_lossy()),
                            o => got(o),
                        }
                    ),
                );
                continue;
            }
        };
        let Some(page) = string(r, &["error_pages"], &val) else {
            continue;
        };
        if !page.starts_with('/') || has_control(&page) || page.split('/').any(|s| s == "..") {
            r.at_value(
                &["error_pages"],
                &page,
                format!(
                    "error_pages[{status}] must be a path beneath the root starting with '/', \
                     got '{page}'"
                ),
            );
            continue;
        }
        out.insert(status, page);
    }
    out
}

/// A rule key: `/prefix` or `.suffix`.
fn path_match(r: &mut Report, field: &str, k: &Value) -> Option<PathMatch> {
    let key = match k {
        Value::String(s) => s.to_str().ok().map(|s| s.to_string()),
        _ => None,
    };
    match key {
        Some(s) if s.starts_with('/') && !has_control(&s) => Some(PathMatch::Prefix(s)),
        Some(s) if s.len() >= 2 && s.starts_with('.') && !s.contains('/') && !has_control(&s) => {
            Some(PathMatch::Suffix(s))
        }
        other => {
            let shown = other.map_or_else(|| got(k), |s| format!("'{s}'"));
            r.at(
                &[field],
                format!(
                    "{field} keys must be a path prefix starting with '/' (\"/static/\") or a \
                     suffix starting with '.' (\".css\"), got {shown}"
                ),
            );
            None
        }
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn headers(r: &mut Report, v: &Value) -> Vec<(PathMatch, Vec<(String, String)>)> {
    let mut out = Vec::new();
    for (k, val) in entries(
        r,
        "headers",
        v,
        "a table of [\"/prefix/\" or \".suffix\"] = { [\"Name\"] = \"value\" }",
    ) {
        let Some(m) = path_match(r, "headers", &k) else {
            continue;
        };
        let Value::Table(t) = &val else {
            r.at(
                &["headers"],
                format!(
                    "headers['{}'] must be a table of [\"Name\"] = \"value\", got {}",
                    m.key(),
                    got(&val)
                ),
            );
            continue;
        };
        let lines = header_lines(r, m.key(), t);
        out.push((m, lines));
    }
    // Prefixes from the shortest (so "/" comes first), then suffixes.
    crate::sort_compact::sort_by_key(&mut out, |(m, _)| {
        (matches!(m, PathMatch::Suffix(_)), m.key().len())
    });
    out
}

fn header_lines(r: &mut Report, rule: &str, t: &Table) -> Vec<(String, String)> {
    let mut lines = Vec::new();
    let mut pairs: Vec<(Value, Value)> = t.pairs::<Value, Value>().filter_map(Result::ok).collect();
    crate::sort_compact::sort_by_key(&mut pairs, |(k, _)| key_text(k));
    for (k, val) in pairs {
        let name = match &k {
            Value::String(s) => s.to_str().ok().map(|s| s.to_string()),
            _ => None,
        };
        let Some(name) = name.filter(|n| is_token(n)) else {
            r.at(
                &["headers"],
                format!(
                    "headers['{rule}']: header names must be tokens, got {}",
                    got(&k)
                ),
            );
            continue;
        };
        if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            r.at(
                &["headers"],
                format!("headers['{rule}']: {name} is set by the server and cannot be added"),
            );
            continue;
        }
        let path = ["headers", name.as_str()];
        let Some(values) = string_list(r, &path, &val) else {
            continue;
        };
        for value in values {
            if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                r.at(
                    &["headers"],
                    format!("headers['{rule}']: the value of {name} has a CR, LF or NUL"),
                );
                continue;
            }
            lines.push((name.clone(), value));
        }
    }
    lines
}

/// `"30d"`, `"12h"`, `"15m"`, `"90s"`, `"2w"`, or a number of seconds.
pub(in crate::config) fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (digits, mult) = match s.char_indices().last()? {
        (i, 's') => (&s[..i], 1),
        (i, 'm') => (&s[..i], 60),
        (i, 'h') => (&s[..i], 3600),
        (i, 'd') => (&s[..i], 86_400),
        (i, 'w') => (&s[..i], 7 * 86_400),
        _ => (s, 1),
    };
    let n: u64 = digits.trim().parse().ok()?;
    n.checked_mul(mult).map(Duration::from_secs)
}

fn expires(r: &mut Report, v: &Value) -> Vec<(PathMatch, Duration)> {
    let mut out = Vec::new();
    for (k, val) in entries(
        r,
        "expires",
        v,
        "a table of [\"/prefix/\" or \".suffix\"] = \"30d\"",
    ) {
        let Some(m) = path_match(r, "expires", &k) else {
            continue;
        };
        let d = match &val {
            Value::Integer(i) if *i >= 0 => Some(Duration::from_secs(*i as u64)),
            Value::String(s) => s.to_str().ok().and_then(|s| parse_duration(&s)),
            _ => None,
        };
        match d {
            Some(d) if d.as_secs() <= MAX_EXPIRES => out.push((m, d)),
            Some(_) => r.at(
                &["expires"],
                format!("expires['{}'] must be at most a year (\"365d\")", m.key()),
            ),
            None => r.at(
                &["expires"],
                format!(
                    "expires['{}'] must be a time like \"30d\", \"12h\", \"15m\", \"90s\", \
                     \"2w\" or a number of seconds, got {}",
                    m.key(),
                    match &val {
                        Value::String(s) => format!("'{}'", s.to_string_lossy()),
                        o => got(o),
                    }
                ),
            ),
        }
    }
    out
}

fn dir_listing(r: &mut Report, v: &Value) -> DirListing {
    let mut d = DirListing::default();
    let t = match v {
        Value::Boolean(true) => {
            d.prefixes.push("/".to_string());
            return d;
        }
        Value::Boolean(false) => return d,
        Value::Table(t) => t,
        other => {
            r.at(
                &["dir_listing"],
                format!(
                    "dir_listing must be true, false or a table like {{ \"/pub/\", dotfiles = \
                     true }}, got {}",
                    got(other)
                ),
            );
            return d;
        }
    };
    for pair in t.pairs::<Value, Value>() {
        let Ok((k, val)) = pair else { continue };
        match &k {
            Value::Integer(_) => match string(r, &["dir_listing"], &val) {
                Some(p) if p.starts_with('/') && !has_control(&p) => d.prefixes.push(p),
                Some(p) => r.at_value(
                    &["dir_listing"],
                    &p,
                    format!("dir_listing prefixes must start with '/', got '{p}'"),
                ),
                None => {}
            },
            Value::String(s) if s.to_str().is_ok_and(|s| s == "dotfiles") => {
                d.dotfiles = boolean(r, &["dir_listing", "dotfiles"], &val).unwrap_or(false);
            }
            other => r.at(
                &["dir_listing"],
                format!(
                    "unknown key {} in dir_listing (a list of prefixes and dotfiles = true|false)",
                    match other {
                        Value::String(s) => format!("'{}'", s.to_string_lossy()),
                        o => got(o),
                    }
                ),
            ),
        }
    }
    // A table with no prefix lists everywhere ({ dotfiles = true }).
    if d.prefixes.is_empty() {
        d.prefixes.push("/".to_string());
    }
    crate::sort_compact::sort(&mut d.prefixes);
    d
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("30d"),
            Some(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("2w"), Some(Duration::from_secs(14 * 86_400)));
        assert_eq!(parse_duration("60"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("d"), None);
        assert_eq!(parse_duration("-1d"), None);
        assert_eq!(parse_duration("1y"), None);
        assert_eq!(parse_duration(""), None);
    }
}
