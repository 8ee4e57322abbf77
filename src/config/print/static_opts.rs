//! `-p` for the static-file extras: every key written out, defaults included, as Lua that
//! loads back to the same `StaticOptions`.

use super::{field, list, lua_string};
use crate::config::static_opts::{Compress, PathMatch, SiteStatics, StaticOptions};
use std::collections::BTreeMap;
use std::time::Duration;

/// Writes the extras' keys of a `server{}` (or site) block.
pub(in crate::config) fn print(o: &mut String, s: &StaticOptions) {
    field(o, "compress", &compress(s.compress.as_ref()));
    field(o, "precompressed", &s.precompressed.to_string());
    field(o, "error_pages", &error_pages(&s.error_pages));
    field(o, "headers", &headers(&s.headers));
    field(o, "expires", &expires(&s.expires));
    let d = &s.dir_listing;
    let listing = if d.prefixes.is_empty() {
        "false".to_string()
    } else {
        let mut items: Vec<String> = d.prefixes.iter().map(|p| lua_string(p)).collect();
        items.push(format!("dotfiles = {}", d.dotfiles));
        list(items.into_iter())
    };
    field(o, "dir_listing", &listing);
}

/// Writes the keys a `site{}` sets of its own (the others are `server{}`'s).
pub(in crate::config) fn print_site(o: &mut String, s: &SiteStatics) {
    if let Some(c) = &s.compress {
        field(o, "compress", &compress(c.as_ref()));
    }
    if let Some(e) = &s.error_pages {
        field(o, "error_pages", &error_pages(e));
    }
    if let Some(h) = &s.headers {
        field(o, "headers", &headers(h));
    }
    if let Some(e) = &s.expires {
        field(o, "expires", &expires(e));
    }
}

fn compress(c: Option<&Compress>) -> String {
    match c {
        None => "false".to_string(),
        Some(c) => format!(
            "{{ encodings = {}, types = {}, min_size = {}, max_size = {}, level = {}, \
             zstd_level = {}, cache_bytes = {} }}",
            list(c.encodings.iter().map(|e| lua_string(e.token()))),
            list(c.types.iter().map(|t| lua_string(t))),
            c.min_size,
            c.max_size,
            c.level,
            c.zstd_level,
            c.cache_bytes
        ),
    }
}

fn error_pages(e: &BTreeMap<u16, String>) -> String {
    list(e.iter().map(|(k, v)| format!("[{k}] = {}", lua_string(v))))
}

fn headers(h: &[(PathMatch, Vec<(String, String)>)]) -> String {
    list(h.iter().map(|(m, lines)| {
        // Repeated names become one list, in their order.
        let mut names: Vec<&str> = Vec::new();
        for (n, _) in lines {
            if !names.contains(&n.as_str()) {
                names.push(n);
            }
        }
        let fields = names.iter().map(|n| {
            let values = lines
                .iter()
                .filter(|(k, _)| k == n)
                .map(|(_, v)| lua_string(v));
            format!("[{}] = {}", lua_string(n), list(values))
        });
        format!("[{}] = {}", key(m), list(fields))
    }))
}

fn expires(e: &[(PathMatch, Duration)]) -> String {
    list(
        e.iter()
            .map(|(m, d)| format!("[{}] = {}", key(m), d.as_secs())),
    )
}

fn key(m: &PathMatch) -> String {
    lua_string(m.key())
}

#[cfg(test)]
mod tests {
    use crate::config::{load_source_for_tests, print};

    #[test]
    fn extras_print_and_load_back() {
        let c = load_source_for_tests(
            r#"server { root = ".", compress = { level = 9, types = { "text/*" } },
               precompressed = true, error_pages = { [404] = "/e/404.html", [503] = "/e/5.html" },
               headers = { ["/"] = { ["X-A"] = "1", Link = { "<a>", "<b>" } }, [".css"] = { ["X-C"] = "c" } },
               expires = { [".css"] = "30d", ["/img/"] = 60 }, dir_listing = { "/pub/", dotfiles = true } }"#,
        );
        let text = print(&c);
        let again = load_source_for_tests(&text);
        assert_eq!(again.static_opts, c.static_opts, "{text}");
        assert!(text.contains("expires = { "), "{text}");
        let plain = load_source_for_tests("server { root = '.' }");
        let again = load_source_for_tests(&print(&plain));
        assert_eq!(again.static_opts, plain.static_opts);
        assert!(print(&plain).contains("compress = false,"));
    }
}
