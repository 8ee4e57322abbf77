//! Content-Type from the file name's suffix.
//!
//! The suffix is taken from the final path segment and matched case-insensitively, longest
//! first: for `backup.tar.gz` the table is asked for `.tar.gz`, then `.gz`. The built-in table
//! only has single suffixes; multi-dot suffixes come from the config's overrides. Values are
//! stored complete (text types already carry `; charset=utf-8`), so a lookup allocates
//! nothing.

use std::collections::{BTreeMap, HashMap};

/// The type for names without a known suffix.
pub const DEFAULT_TYPE: &str = "application/octet-stream";

/// Longest suffix lowercased on the stack during a lookup; longer suffixes in other than
/// lowercase are not matched (already-lowercase ones always are).
const LOWER_BUF: usize = 64;

/// The built-in suffix table (RFC 9239 for JavaScript; text types with their charset).
const BUILTIN: &[(&str, &str)] = &[
    // Text and documents of the web.
    (".html", "text/html; charset=utf-8"),
    (".htm", "text/html; charset=utf-8"),
    (".shtml", "text/html; charset=utf-8"),
    (".xhtml", "application/xhtml+xml"),
    (".css", "text/css; charset=utf-8"),
    (".js", "text/javascript; charset=utf-8"),
    (".mjs", "text/javascript; charset=utf-8"),
    (".cjs", "text/javascript; charset=utf-8"),
    (".json", "application/json"),
    (".map", "application/json"),
    (".jsonld", "application/ld+json"),
    (".webmanifest", "application/manifest+json"),
    (".xml", "application/xml"),
    (".xsl", "application/xml"),
    (".xslt", "application/xslt+xml"),
    (".dtd", "application/xml-dtd"),
    (".rss", "application/rss+xml"),
    (".atom", "application/atom+xml"),
    (".txt", "text/plain; charset=utf-8"),
    (".text", "text/plain; charset=utf-8"),
    (".log", "text/plain; charset=utf-8"),
    (".conf", "text/plain; charset=utf-8"),
    (".csv", "text/csv; charset=utf-8"),
    (".tsv", "text/tab-separated-values; charset=utf-8"),
    (".md", "text/markdown; charset=utf-8"),
    (".markdown", "text/markdown; charset=utf-8"),
    (".ics", "text/calendar; charset=utf-8"),
    (".vtt", "text/vtt; charset=utf-8"),
    (".yaml", "application/yaml"),
    (".yml", "application/yaml"),
    (".toml", "application/toml"),
    (".wasm", "application/wasm"),
    // Images.
    (".svg", "image/svg+xml"),
    (".png", "image/png"),
    (".apng", "image/apng"),
    (".jpg", "image/jpeg"),
    (".jpeg", "image/jpeg"),
    (".jpe", "image/jpeg"),
    (".gif", "image/gif"),
    (".webp", "image/webp"),
    (".avif", "image/avif"),
    (".jxl", "image/jxl"),
    (".heic", "image/heic"),
    (".ico", "image/x-icon"),
    (".bmp", "image/bmp"),
    (".tif", "image/tiff"),
    (".tiff", "image/tiff"),
    // Fonts.
    (".woff", "font/woff"),
    (".woff2", "font/woff2"),
    (".ttf", "font/ttf"),
    (".otf", "font/otf"),
    (".eot", "application/vnd.ms-fontobject"),
    // Audio and video.
    (".mp3", "audio/mpeg"),
    (".m4a", "audio/mp4"),
    (".aac", "audio/aac"),
    (".ogg", "audio/ogg"),
    (".oga", "audio/ogg"),
    (".opus", "audio/ogg"),
    (".wav", "audio/wav"),
    (".flac", "audio/flac"),
    (".mid", "audio/midi"),
    (".midi", "audio/midi"),
    (".mp4", "video/mp4"),
    (".m4v", "video/mp4"),
    (".webm", "video/webm"),
    (".ogv", "video/ogg"),
    (".mov", "video/quicktime"),
    (".avi", "video/x-msvideo"),
    (".mkv", "video/x-matroska"),
    (".mpeg", "video/mpeg"),
    (".mpg", "video/mpeg"),
    (".m3u8", "application/vnd.apple.mpegurl"),
    // Archives and binaries.
    (".pdf", "application/pdf"),
    (".zip", "application/zip"),
    (".gz", "application/gzip"),
    (".tgz", "application/gzip"),
    (".tar", "application/x-tar"),
    (".bz2", "application/x-bzip2"),
    (".xz", "application/x-xz"),
    (".zst", "application/zstd"),
    (".7z", "application/x-7z-compressed"),
    (".rar", "application/vnd.rar"),
    (".jar", "application/java-archive"),
    (".epub", "application/epub+zip"),
    (".rtf", "application/rtf"),
    (".doc", "application/msword"),
    (
        ".docx",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ),
    (".xls", "application/vnd.ms-excel"),
    (
        ".xlsx",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ),
    (".ppt", "application/vnd.ms-powerpoint"),
    (
        ".pptx",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ),
    (".odt", "application/vnd.oasis.opendocument.text"),
    (".ods", "application/vnd.oasis.opendocument.spreadsheet"),
    (".odp", "application/vnd.oasis.opendocument.presentation"),
    (".bin", "application/octet-stream"),
];

/// Suffix → Content-Type, the built-in table with the config's overrides merged over it.
#[derive(Debug, Clone)]
pub struct MimeTable {
    map: HashMap<String, String>,
    /// Length of the longest key, to skip hopeless candidates.
    max_key: usize,
}

impl MimeTable {
    /// The built-in table with `overrides` (lowercased ".ext" → type) merged over it.
    ///
    /// Keys are lowercased and given a leading '.' if they lack one; an empty key or type is
    /// skipped. A `text/*` override without parameters gets `; charset=utf-8` appended.
    pub fn new(overrides: &BTreeMap<String, String>) -> Self {
        let mut map: HashMap<String, String> = BUILTIN
            .iter()
            .map(|&(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        for (key, value) in overrides {
            let key = key.trim().to_ascii_lowercase();
            let value = value.trim();
            if key.is_empty() || key == "." || value.is_empty() {
                continue;
            }
            let key = if key.starts_with('.') {
                key
            } else {
                format!(".{key}")
            };
            map.insert(key, with_charset(value));
        }
        let max_key = map.keys().map(String::len).max().unwrap_or(0);
        MimeTable { map, max_key }
    }

    /// The full Content-Type for `name` (case-insensitive suffix match; `; charset=utf-8`
    /// added for text types), or `application/octet-stream`.
    pub fn lookup(&self, name: &str) -> &str {
        let segment = name.rsplit('/').next().unwrap_or(name);
        let mut buf = [0u8; LOWER_BUF];
        // Every '.' starts a candidate; the first one gives the longest suffix.
        for (i, _) in segment.match_indices('.') {
            let suffix = &segment[i..];
            if suffix.len() > self.max_key {
                continue;
            }
            if let Some(found) = self.get_lowercased(suffix, &mut buf) {
                return found;
            }
        }
        DEFAULT_TYPE
    }

    /// Looks `suffix` up after ASCII-lowercasing it, in `buf` when it has capitals.
    fn get_lowercased(&self, suffix: &str, buf: &mut [u8; LOWER_BUF]) -> Option<&str> {
        if !suffix.bytes().any(|b| b.is_ascii_uppercase()) {
            return self.map.get(suffix).map(String::as_str);
        }
        let lower = buf.get_mut(..suffix.len())?;
        lower.copy_from_slice(suffix.as_bytes());
        lower.make_ascii_lowercase();
        // Only ASCII bytes changed, so this stays valid UTF-8.
        let key = std::str::from_utf8(lower).ok()?;
        self.map.get(key).map(String::as_str)
    }
}

impl Default for MimeTable {
    fn default() -> Self {
        Self::new(&BTreeMap::new())
    }
}

/// `value` with `; charset=utf-8` appended when it is a `text/*` type without parameters.
fn with_charset(value: &str) -> String {
    let is_text = value
        .get(..5)
        .is_some_and(|p| p.eq_ignore_ascii_case("text/"));
    if is_text && !value.contains(';') {
        format!("{value}; charset=utf-8")
    } else {
        value.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> MimeTable {
        MimeTable::default()
    }

    #[test]
    fn common_types() {
        let t = table();
        for (name, want) in [
            ("index.html", "text/html; charset=utf-8"),
            ("a.htm", "text/html; charset=utf-8"),
            ("s.css", "text/css; charset=utf-8"),
            ("app.js", "text/javascript; charset=utf-8"),
            ("mod.mjs", "text/javascript; charset=utf-8"),
            ("d.json", "application/json"),
            ("r.txt", "text/plain; charset=utf-8"),
            ("f.xml", "application/xml"),
            ("i.svg", "image/svg+xml"),
            ("i.png", "image/png"),
            ("i.jpg", "image/jpeg"),
            ("i.jpeg", "image/jpeg"),
            ("i.gif", "image/gif"),
            ("i.webp", "image/webp"),
            ("i.avif", "image/avif"),
            ("favicon.ico", "image/x-icon"),
            ("d.pdf", "application/pdf"),
            ("a.zip", "application/zip"),
            ("a.gz", "application/gzip"),
            ("a.tar", "application/x-tar"),
            ("m.wasm", "application/wasm"),
            ("f.woff", "font/woff"),
            ("f.woff2", "font/woff2"),
            ("f.ttf", "font/ttf"),
            ("f.otf", "font/otf"),
            ("s.mp3", "audio/mpeg"),
            ("v.mp4", "video/mp4"),
            ("v.webm", "video/webm"),
            ("s.ogg", "audio/ogg"),
            ("s.wav", "audio/wav"),
            ("t.csv", "text/csv; charset=utf-8"),
            ("README.md", "text/markdown; charset=utf-8"),
            ("app.js.map", "application/json"),
            ("ld.jsonld", "application/ld+json"),
            ("feed.rss", "application/rss+xml"),
            ("feed.atom", "application/atom+xml"),
        ] {
            assert_eq!(t.lookup(name), want, "{name}");
        }
    }

    #[test]
    fn every_builtin_text_type_has_a_charset() {
        for (ext, ty) in BUILTIN {
            assert!(
                ext.starts_with('.') && *ext == ext.to_ascii_lowercase(),
                "{ext}"
            );
            if ty.starts_with("text/") {
                assert!(ty.ends_with("; charset=utf-8"), "{ext}");
            } else {
                assert!(!ty.contains("charset"), "{ext}");
            }
        }
    }

    #[test]
    fn case_insensitive() {
        let t = table();
        assert_eq!(t.lookup("INDEX.HTML"), "text/html; charset=utf-8");
        assert_eq!(t.lookup("Photo.JpG"), "image/jpeg");
    }

    #[test]
    fn final_segment_and_last_dot() {
        let t = table();
        assert_eq!(
            t.lookup("/a.dir/file"),
            DEFAULT_TYPE,
            "dot only in a directory"
        );
        assert_eq!(
            t.lookup("/www/site.v2/app.js"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(t.lookup("archive.tar.gz"), "application/gzip");
        assert_eq!(t.lookup("page.html.bak"), DEFAULT_TYPE);
        assert_eq!(t.lookup("jquery.min.js"), "text/javascript; charset=utf-8");
    }

    #[test]
    fn unknown_and_suffixless() {
        let t = table();
        assert_eq!(t.lookup("Makefile"), DEFAULT_TYPE);
        assert_eq!(t.lookup("file."), DEFAULT_TYPE);
        assert_eq!(t.lookup("x.unknownext"), DEFAULT_TYPE);
        assert_eq!(t.lookup(""), DEFAULT_TYPE);
        assert_eq!(t.lookup("/"), DEFAULT_TYPE);
        assert_eq!(t.lookup("."), DEFAULT_TYPE);
        assert_eq!(t.lookup("..."), DEFAULT_TYPE);
        assert_eq!(t.lookup("é.ü"), DEFAULT_TYPE);
        assert_eq!(t.lookup("ÉCOLE.TXT"), "text/plain; charset=utf-8");
        let long = format!("x.{}", "A".repeat(500));
        assert_eq!(t.lookup(&long), DEFAULT_TYPE);
    }

    #[test]
    fn overrides_merge_over_builtins() {
        let mut o = BTreeMap::new();
        o.insert(".js".to_owned(), "application/javascript".to_owned());
        o.insert(".tar.gz".to_owned(), "application/x-gtar".to_owned());
        o.insert(".PHPS".to_owned(), "text/x-php".to_owned());
        o.insert(
            "lua".to_owned(),
            "text/x-lua; charset=iso-8859-1".to_owned(),
        );
        o.insert(".empty".to_owned(), String::new());
        let t = MimeTable::new(&o);
        assert_eq!(t.lookup("a.js"), "application/javascript");
        assert_eq!(
            t.lookup("backup.TAR.GZ"),
            "application/x-gtar",
            "longest suffix"
        );
        assert_eq!(t.lookup("other.gz"), "application/gzip");
        assert_eq!(t.lookup("x.phps"), "text/x-php; charset=utf-8");
        assert_eq!(t.lookup("x.lua"), "text/x-lua; charset=iso-8859-1");
        assert_eq!(t.lookup("x.empty"), DEFAULT_TYPE);
        assert_eq!(
            t.lookup("x.css"),
            "text/css; charset=utf-8",
            "built-ins kept"
        );
    }

    #[test]
    fn long_lowercase_override_keys_still_match() {
        let key = format!(".{}", "x".repeat(100));
        let mut o = BTreeMap::new();
        o.insert(key.clone(), "application/x-long".to_owned());
        let t = MimeTable::new(&o);
        assert_eq!(t.lookup(&format!("file{key}")), "application/x-long");
    }
}
