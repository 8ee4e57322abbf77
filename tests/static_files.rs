//! Static file serving against the real binary: lookup, types, validators, conditionals,
//! ranges, large files, cache freshness and the access log.

mod common;

use common::{find, raw, Response, Server};
use std::time::{Duration, Instant};

const HELLO: &[u8] = b"Hello, static world!\n";

fn hundred() -> Vec<u8> {
    (0..100u8).map(|i| b'A' + (i % 26)).collect()
}

/// Deterministic pseudo-random bytes (xorshift), so offsets are distinguishable.
fn noise(len: usize) -> Vec<u8> {
    let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect()
}

fn get_with(s: &Server, path: &str, headers: &str) -> Response {
    raw(
        &s.addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n{headers}\r\n").as_bytes(),
    )
}

fn server(files: &[(&str, &[u8])]) -> Server {
    Server::start("workers = 1", files)
}

#[test]
fn missing_file_is_404() {
    let s = server(&[("a.txt", HELLO)]);
    assert_eq!(s.get("/nope.txt").status, 404);
    assert_eq!(s.get("/dir/nope/deeper").status, 404);
    // A file used as a directory.
    assert_eq!(s.get("/a.txt/x").status, 404);
}

#[test]
fn directory_without_index_is_403() {
    let s = server(&[("dir/x.txt", HELLO)]);
    assert_eq!(s.get("/dir/").status, 403);
    assert_eq!(s.get("/").status, 403);
    let r = s.get("/dir/x.txt");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, HELLO);
}

#[test]
fn directory_without_slash_redirects() {
    let s = server(&[("dir/index.html", b"<p>index</p>"), ("my dir/x", b"x")]);
    let r = s.get("/dir");
    assert_eq!(r.status, 301);
    let loc = r.header("location").expect("Location");
    assert!(loc.ends_with("/dir/"), "{loc}");
    let r = s.get("/dir?x=1");
    assert_eq!(r.status, 301);
    let loc = r.header("location").expect("Location");
    assert!(loc.ends_with("/dir/?x=1"), "{loc}");
    // The path stays encoded in the Location.
    let r = s.get("/my%20dir?a=b&c");
    assert_eq!(r.status, 301);
    let loc = r.header("location").expect("Location");
    assert!(loc.ends_with("/my%20dir/?a=b&c"), "{loc}");
}

#[test]
fn index_html_is_served_for_directory() {
    let s = server(&[("dir/index.html", b"<p>index</p>"), ("index.html", b"root")]);
    let r = s.get("/dir/");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"<p>index</p>");
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let r = s.get("/dir/?q=1");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"<p>index</p>");
    let r = s.get("/");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"root");
}

#[test]
fn content_type_by_suffix() {
    let s = Server::start(
        r#"workers = 1, mime = { [".foo"] = "application/x-foo" }"#,
        &[
            ("a.HTML", b"<b>x</b>"),
            ("b.html", b"<b>y</b>"),
            ("s.css", b"p{}"),
            ("s.CsS", b"p{}"),
            ("t.txt", b"t"),
            ("u.qqqzzz", b"u"),
            ("noext", b"n"),
            ("x.foo", b"foo"),
            ("y.FOO", b"foo"),
            ("j.json", b"{}"),
            ("p.png", b"png"),
        ],
    );
    for (path, ct) in [
        ("/a.HTML", "text/html; charset=utf-8"),
        ("/b.html", "text/html; charset=utf-8"),
        ("/s.css", "text/css; charset=utf-8"),
        ("/s.CsS", "text/css; charset=utf-8"),
        ("/t.txt", "text/plain; charset=utf-8"),
        ("/u.qqqzzz", "application/octet-stream"),
        ("/noext", "application/octet-stream"),
        ("/x.foo", "application/x-foo"),
        ("/y.FOO", "application/x-foo"),
        ("/j.json", "application/json"),
        ("/p.png", "image/png"),
    ] {
        let r = s.get(path);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), Some(ct), "{path}");
    }
}

#[test]
fn symlink_out_of_root_is_403() {
    let s = server(&[("a.txt", HELLO)]);
    s.dir.write("secret.txt", b"TOP SECRET");
    let www = s.dir.path().join("www");
    std::os::unix::fs::symlink("../secret.txt", www.join("rel_out")).unwrap();
    std::os::unix::fs::symlink(s.dir.path().join("secret.txt"), www.join("abs_out")).unwrap();
    std::os::unix::fs::symlink("/etc", www.join("etc_dir")).unwrap();
    std::os::unix::fs::symlink("..", www.join("up")).unwrap();
    for path in [
        "/rel_out",
        "/abs_out",
        "/etc_dir/hostname",
        "/up/secret.txt",
    ] {
        let r = s.get(path);
        assert_eq!(r.status, 403, "{path}: {:?}", r.text());
        assert!(!r.text().contains("TOP SECRET"));
    }
}

#[test]
fn symlink_inside_root_is_served() {
    let s = server(&[("a.txt", HELLO), ("sub/b.txt", b"bee")]);
    let www = s.dir.path().join("www");
    std::os::unix::fs::symlink("a.txt", www.join("in")).unwrap();
    std::os::unix::fs::symlink("../a.txt", www.join("sub/up_in")).unwrap();
    std::os::unix::fs::symlink("sub", www.join("subdir_link")).unwrap();
    for (path, body) in [
        ("/in", HELLO),
        ("/sub/up_in", HELLO),
        ("/subdir_link/b.txt", b"bee"),
    ] {
        let r = s.get(path);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.body, body, "{path}");
    }
}

#[test]
fn validators_are_present() {
    let s = server(&[("a.txt", HELLO)]);
    let r = s.get("/a.txt");
    assert_eq!(r.status, 200);
    let etag = r.header("etag").expect("ETag");
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2,
        "{etag}"
    );
    let lm = r.header("last-modified").expect("Last-Modified");
    assert!(lm.ends_with(" GMT") && lm.len() == 29, "{lm}");
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    // Stable across requests.
    assert_eq!(s.get("/a.txt").header("etag"), Some(etag));
}

#[test]
fn if_none_match_gives_304_without_body() {
    let s = server(&[("a.txt", HELLO), ("b.txt", b"bee")]);
    let etag = s.get("/a.txt").header("etag").unwrap().to_string();
    let mut c = s.connect();
    let mut data =
        format!("GET /a.txt HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\n\r\n").into_bytes();
    data.extend_from_slice(b"GET /b.txt HTTP/1.1\r\nHost: x\r\n\r\n");
    c.send(&data);
    let r = c.response(false);
    assert_eq!(r.status, 304);
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert!(r.header("content-length").is_none_or(|v| v == "0"));
    // If the 304 carried a body, the next response would not parse as bee.
    let r = c.response(false);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"bee");
    // Weak comparison, lists, and star.
    for inm in [
        format!("W/{etag}"),
        format!("\"nope\", {etag}"),
        "*".to_string(),
    ] {
        let r = get_with(&s, "/a.txt", &format!("If-None-Match: {inm}\r\n"));
        assert_eq!(r.status, 304, "If-None-Match: {inm}");
    }
    let r = get_with(&s, "/a.txt", "If-None-Match: \"nope\"\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, HELLO);
    // HEAD too.
    let mut c = s.connect();
    c.send(format!("HEAD /a.txt HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\n\r\n").as_bytes());
    assert_eq!(c.response(true).status, 304);
}

#[test]
fn if_modified_since_gives_304() {
    let s = server(&[("a.txt", HELLO)]);
    let lm = s.get("/a.txt").header("last-modified").unwrap().to_string();
    let r = get_with(&s, "/a.txt", &format!("If-Modified-Since: {lm}\r\n"));
    assert_eq!(r.status, 304, "If-Modified-Since: {lm}");
    assert!(r.body.is_empty());
    for (date, status) in [
        // IMF-fixdate, RFC 850 and asctime, in the future.
        ("Thu, 01 Jan 2099 00:00:00 GMT", 304),
        ("Wednesday, 06-Nov-69 08:49:37 GMT", 304), // 2069
        ("Thu Jan  1 00:00:00 2099", 304),
        // The same formats in the past.
        ("Sun, 06 Nov 1994 08:49:37 GMT", 200),
        ("Sunday, 06-Nov-94 08:49:37 GMT", 200),
        ("Sun Nov  6 08:49:37 1994", 200),
        // Invalid dates are ignored.
        ("yesterday", 200),
        ("Thu, 01 Jan 2099 00:00:00", 200),
    ] {
        let r = get_with(&s, "/a.txt", &format!("If-Modified-Since: {date}\r\n"));
        assert_eq!(r.status, status, "If-Modified-Since: {date}");
        if status == 200 {
            assert_eq!(r.body, HELLO);
        }
    }
    // If-None-Match takes precedence over If-Modified-Since.
    let r = get_with(
        &s,
        "/a.txt",
        "If-None-Match: \"nope\"\r\nIf-Modified-Since: Thu, 01 Jan 2099 00:00:00 GMT\r\n",
    );
    assert_eq!(r.status, 200);
}

#[test]
fn if_match_and_if_unmodified_since_give_412() {
    let s = server(&[("a.txt", HELLO)]);
    let etag = s.get("/a.txt").header("etag").unwrap().to_string();
    let r = get_with(&s, "/a.txt", "If-Match: \"wrong\"\r\n");
    assert_eq!(r.status, 412);
    // Weak tags never match strongly.
    let r = get_with(&s, "/a.txt", &format!("If-Match: W/{etag}\r\n"));
    assert_eq!(r.status, 412);
    let r = get_with(&s, "/a.txt", &format!("If-Match: {etag}\r\n"));
    assert_eq!(r.status, 200);
    assert_eq!(r.body, HELLO);
    let r = get_with(&s, "/a.txt", "If-Match: *\r\n");
    assert_eq!(r.status, 200);
    let r = get_with(
        &s,
        "/a.txt",
        "If-Unmodified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n",
    );
    assert_eq!(r.status, 412);
    let r = get_with(
        &s,
        "/a.txt",
        "If-Unmodified-Since: Thu, 01 Jan 2099 00:00:00 GMT\r\n",
    );
    assert_eq!(r.status, 200);
    let lm = s.get("/a.txt").header("last-modified").unwrap().to_string();
    let r = get_with(&s, "/a.txt", &format!("If-Unmodified-Since: {lm}\r\n"));
    assert_eq!(r.status, 200);
}

#[test]
fn single_ranges() {
    let data = hundred();
    let s = server(&[("r.txt", &data)]);
    for (range, start, end) in [
        ("bytes=0-9", 0usize, 9usize),
        ("bytes=-5", 95, 99),
        ("bytes=10-", 10, 99),
        ("bytes=90-500", 90, 99),
        ("bytes=50-50", 50, 50),
        ("bytes=-500", 0, 99),
    ] {
        let r = get_with(&s, "/r.txt", &format!("Range: {range}\r\n"));
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {start}-{end}/100").as_str()),
            "{range}"
        );
        assert_eq!(r.body, &data[start..=end], "{range}");
        assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    }
    // Invalid syntax and other units are ignored: 200 with the whole file.
    for range in ["bytes=9-0", "items=0-1", "bytes=a-b", "bytes 0-9"] {
        let r = get_with(&s, "/r.txt", &format!("Range: {range}\r\n"));
        assert_eq!(r.status, 200, "{range}");
        assert_eq!(r.body, data, "{range}");
    }
}

/// Splits a multipart/byteranges body into (part headers, part bytes).
fn parse_multipart(body: &[u8], boundary: &str) -> Vec<(String, Vec<u8>)> {
    let delim = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut rest = body;
    // Optional preamble / leading CRLF.
    let first = find(rest, delim.as_bytes()).expect("first boundary");
    rest = &rest[first + delim.len()..];
    loop {
        if rest.starts_with(b"--") {
            assert!(
                rest == b"--\r\n" || rest == b"--",
                "junk after close: {:?}",
                String::from_utf8_lossy(rest)
            );
            break;
        }
        assert!(rest.starts_with(b"\r\n"), "boundary line must end in CRLF");
        rest = &rest[2..];
        let head_end = find(rest, b"\r\n\r\n").expect("part head end");
        let head = String::from_utf8(rest[..head_end].to_vec()).unwrap();
        rest = &rest[head_end + 4..];
        let cr = head
            .lines()
            .find_map(|l| {
                l.strip_prefix("Content-Range: ")
                    .or(l.strip_prefix("content-range: "))
            })
            .expect("part Content-Range");
        let spec = cr.strip_prefix("bytes ").unwrap();
        let (range, _) = spec.split_once('/').unwrap();
        let (a, b) = range.split_once('-').unwrap();
        let len = b.parse::<usize>().unwrap() - a.parse::<usize>().unwrap() + 1;
        parts.push((head, rest[..len].to_vec()));
        rest = &rest[len..];
        let next = format!("\r\n{delim}");
        assert!(
            rest.starts_with(next.as_bytes()),
            "part not followed by a boundary: {:?}",
            String::from_utf8_lossy(&rest[..rest.len().min(60)])
        );
        rest = &rest[next.len()..];
    }
    parts
}

#[test]
fn several_ranges_are_multipart() {
    let data = hundred();
    let s = server(&[("r.txt", &data)]);
    let r = get_with(&s, "/r.txt", "Range: bytes=0-4, 20-29,-3\r\n");
    assert_eq!(r.status, 206);
    assert!(r.header("content-range").is_none());
    let ct = r.header("content-type").unwrap();
    let boundary = ct
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap_or_else(|| panic!("{ct}"));
    assert!(!boundary.is_empty());
    let parts = parse_multipart(&r.body, boundary);
    let expect = [(0usize, 4usize), (20, 29), (97, 99)];
    assert_eq!(parts.len(), expect.len());
    for ((head, bytes), (a, b)) in parts.iter().zip(expect) {
        assert!(
            head.contains(&format!("Content-Range: bytes {a}-{b}/100")),
            "{head}"
        );
        assert!(
            head.contains("Content-Type: text/plain; charset=utf-8"),
            "{head}"
        );
        assert_eq!(bytes, &data[a..=b]);
    }
    // Overlapping ranges are coalesced into one part.
    let r = get_with(&s, "/r.txt", "Range: bytes=0-10,5-20\r\n");
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &data[0..=20]);
}

#[test]
fn unsatisfiable_range_is_416() {
    let data = hundred();
    let s = server(&[("r.txt", &data)]);
    for range in ["bytes=99999-", "bytes=100-200", "bytes=-0"] {
        let r = get_with(&s, "/r.txt", &format!("Range: {range}\r\n"));
        assert_eq!(r.status, 416, "{range}");
        assert_eq!(r.header("content-range"), Some("bytes */100"), "{range}");
    }
}

#[test]
fn if_range() {
    let data = hundred();
    let s = server(&[("r.txt", &data)]);
    let full = s.get("/r.txt");
    let etag = full.header("etag").unwrap().to_string();
    let lm = full.header("last-modified").unwrap().to_string();
    let r = get_with(
        &s,
        "/r.txt",
        &format!("Range: bytes=0-9\r\nIf-Range: {etag}\r\n"),
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &data[..10]);
    let r = get_with(&s, "/r.txt", "Range: bytes=0-9\r\nIf-Range: \"other\"\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, data);
    // A weak tag never satisfies If-Range.
    let r = get_with(
        &s,
        "/r.txt",
        &format!("Range: bytes=0-9\r\nIf-Range: W/{etag}\r\n"),
    );
    assert_eq!(r.status, 200);
    // Last-Modified date: exact match applies the range.
    let r = get_with(
        &s,
        "/r.txt",
        &format!("Range: bytes=0-9\r\nIf-Range: {lm}\r\n"),
    );
    assert_eq!(r.status, 206);
    let r = get_with(
        &s,
        "/r.txt",
        "Range: bytes=0-9\r\nIf-Range: Sun, 06 Nov 1994 08:49:37 GMT\r\n",
    );
    assert_eq!(r.status, 200);
}

#[test]
fn range_is_ignored_for_head_but_headers_match() {
    let data = hundred();
    let s = server(&[("r.txt", &data)]);
    let mut c = s.connect();
    c.send(b"HEAD /r.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\n\r\n");
    let r = c.response(true);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("100"));
}

#[test]
fn large_file_byte_exact() {
    let big = noise(5 * 1024 * 1024 + 123);
    let s = server(&[("big.bin", &big)]);
    let r = s.get("/big.bin");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-length"),
        Some(big.len().to_string().as_str())
    );
    assert!(r.body == big, "large body differs");
    let (a, b) = (2_000_001usize, 3_500_000usize);
    let r = get_with(&s, "/big.bin", &format!("Range: bytes={a}-{b}\r\n"));
    assert_eq!(r.status, 206);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes {a}-{b}/{}", big.len()).as_str())
    );
    assert!(r.body == big[a..=b], "range body differs");
    // Multipart from the sendfile path.
    let r = get_with(&s, "/big.bin", "Range: bytes=100-199,4000000-4000099\r\n");
    assert_eq!(r.status, 206);
    let ct = r.header("content-type").unwrap().to_string();
    let boundary = ct.strip_prefix("multipart/byteranges; boundary=").unwrap();
    let parts = parse_multipart(&r.body, boundary);
    assert_eq!(parts.len(), 2);
    assert!(parts[0].1 == big[100..200]);
    assert!(parts[1].1 == big[4_000_000..4_000_100]);
    // Two in a row on one keep-alive connection.
    let mut c = s.connect();
    c.send(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\nGET /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=-10\r\n\r\n");
    let r1 = c.response(false);
    assert!(r1.body == big);
    let r2 = c.response(false);
    assert_eq!(r2.status, 206);
    assert_eq!(r2.body, &big[big.len() - 10..]);
}

#[test]
fn small_and_threshold_files_byte_exact() {
    let at = noise(16 * 1024);
    let over = noise(16 * 1024 + 1);
    let s = server(&[("at.bin", &at), ("over.bin", &over)]);
    for _ in 0..2 {
        assert!(s.get("/at.bin").body == at);
        assert!(s.get("/over.bin").body == over);
    }
}

#[test]
fn empty_file() {
    let s = server(&[("empty.txt", b"")]);
    let r = s.get("/empty.txt");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("0"));
    assert!(r.body.is_empty());
    assert!(r.header("etag").is_some());
}

#[test]
fn modified_file_is_served_fresh() {
    let s = server(&[("v.txt", b"version one")]);
    let r = s.get("/v.txt");
    assert_eq!(r.body, b"version one");
    let old_etag = r.header("etag").unwrap().to_string();
    s.dir.write("www/v.txt", b"version two, longer");
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let r = s.get("/v.txt");
        assert_eq!(r.status, 200);
        if r.body == b"version two, longer" {
            assert_ne!(r.header("etag"), Some(old_etag.as_str()));
            assert_eq!(r.header("content-length"), Some("19"));
            break;
        }
        // Until then, the old version whole (never a mix).
        assert_eq!(r.body, b"version one");
        assert!(
            Instant::now() < deadline,
            "new version not served within 3 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Deleted: 404 eventually.
    std::fs::remove_file(s.dir.path().join("www/v.txt")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    while s.get("/v.txt").status != 404 {
        assert!(
            Instant::now() < deadline,
            "deleted file still served after 3 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn modified_large_file_is_served_fresh() {
    let one = noise(100_000);
    let mut two = one.clone();
    two.reverse();
    two.truncate(60_000);
    let s = server(&[("big.bin", &one)]);
    assert!(s.get("/big.bin").body == one);
    // Replace by rename, as deploy tools do.
    let tmp = s.dir.write("big.tmp", &two);
    std::fs::rename(tmp, s.dir.path().join("www/big.bin")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let r = s.get("/big.bin");
        assert_eq!(r.status, 200);
        if r.body == two {
            break;
        }
        assert!(r.body == one, "neither version");
        assert!(
            Instant::now() < deadline,
            "new version not served within 3 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_for_log(path: &std::path::Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(4);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn access_log_combined_format() {
    let s = Server::start(
        r#"workers = 1, access_log = "access.log""#,
        &[("a.txt", HELLO)],
    );
    let log = s.dir.path().join("access.log");
    let r = get_with(
        &s,
        "/a.txt?q=1",
        "Referer: http://ref.example/page\r\nUser-Agent: TestAgent/1.0 (x)\r\n",
    );
    assert_eq!(r.status, 200);
    let text = wait_for_log(&log, "TestAgent");
    let line = text
        .lines()
        .find(|l| l.contains("TestAgent"))
        .unwrap_or_else(|| panic!("no access log line; log: {text:?}"));
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    // [day/Mon/year:hh:mm:ss +0000]
    let date = &line[line.find('[').unwrap() + 1..line.find(']').unwrap()];
    assert_eq!(date.len(), 26, "{date}");
    assert!(date.ends_with(" +0000"), "{date}");
    let after_date = &line[line.find(']').unwrap() + 1..];
    assert_eq!(
        after_date,
        format!(
            " \"GET /a.txt?q=1 HTTP/1.1\" 200 {} \"http://ref.example/page\" \"TestAgent/1.0 (x)\"",
            HELLO.len()
        ),
        "{line}"
    );

    // A 404 without referer or agent, and a HEAD (0 body bytes logged as '-').
    assert_eq!(s.get("/missing").status, 404);
    let mut c = s.connect();
    c.send(b"HEAD /a.txt HTTP/1.1\r\nHost: x\r\nUser-Agent: HeadAgent\r\n\r\n");
    assert_eq!(c.response(true).status, 200);
    let text = wait_for_log(&log, "HeadAgent");
    let l404 = text
        .lines()
        .find(|l| l.contains("GET /missing "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(l404.contains("\"GET /missing HTTP/1.1\" 404 "), "{l404}");
    assert!(l404.ends_with(" \"-\" \"-\""), "{l404}");
    let lhead = text
        .lines()
        .find(|l| l.contains("HeadAgent"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        lhead.contains("\"HEAD /a.txt HTTP/1.1\" 200 - \"-\" \"HeadAgent\""),
        "{lhead}"
    );
}

#[test]
fn access_log_escapes_quotes() {
    let s = Server::start(
        r#"workers = 1, access_log = "access.log""#,
        &[("a.txt", HELLO)],
    );
    let log = s.dir.path().join("access.log");
    let r = get_with(
        &s,
        "/a.txt",
        "Referer: x\"y\r\nUser-Agent: Evil\" 200 \"inject\\\r\n",
    );
    assert_eq!(r.status, 200);
    let text = wait_for_log(&log, "Evil");
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("Evil")).collect();
    assert_eq!(lines.len(), 1, "{text}");
    let line = lines[0];
    assert!(
        line.ends_with(r#" "x\"y" "Evil\" 200 \"inject\\""#),
        "quotes not escaped: {line}"
    );
    // Every '"' in the line is either a field delimiter or escaped: 6 unescaped quotes.
    let bytes = line.as_bytes();
    let mut unescaped = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'"' => unescaped += 1,
            _ => {}
        }
        i += 1;
    }
    assert_eq!(unescaped, 6, "{line}");
    // A refused request is logged too, with its request line escaped.
    let r = raw(&s.addr, b"GET /a\"b HTTP/1.1\r\nUser-Agent: NoHost\r\n\r\n");
    assert_eq!(r.status, 400);
    let text = wait_for_log(&log, "400");
    let line = text
        .lines()
        .find(|l| l.contains(" 400 "))
        .unwrap_or_else(|| panic!("refused request not logged: {text}"));
    assert!(line.contains(r#""GET /a\"b HTTP/1.1" 400 "#), "{line}");
}

#[test]
fn fifo_and_index_directory_are_403() {
    let s = server(&[("a.txt", HELLO)]);
    let www = s.dir.path().join("www");
    let st = std::process::Command::new("mkfifo")
        .arg(www.join("fifo"))
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::create_dir_all(www.join("d/index.html")).unwrap();
    assert_eq!(s.get("/fifo").status, 403);
    assert_eq!(s.get("/d/").status, 403);
    // The worker is not stuck on the FIFO.
    assert_eq!(s.get("/a.txt").body, HELLO);
}

#[test]
fn too_many_parts_give_the_whole_file() {
    let data = hundred();
    let s = server(&[("r.txt", &data)]);
    let many: Vec<String> = (0..20).map(|i| format!("{}-{}", i * 4, i * 4)).collect();
    let r = get_with(
        &s,
        "/r.txt",
        &format!("Range: bytes={}\r\n", many.join(",")),
    );
    assert!(r.status == 200 || r.status == 206, "{}", r.status);
    if r.status == 200 {
        assert_eq!(r.body, data);
    }
}

#[test]
fn large_file_http10_close_byte_exact() {
    let big = noise(3 * 1024 * 1024);
    let s = server(&[("big.bin", &big)]);
    let mut c = s.connect();
    c.send(b"GET /big.bin HTTP/1.0\r\n\r\n");
    let r = c.response(false);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(r.body == big, "body differs");
    assert!(c.closed());
}

#[test]
fn the_default_config_refuses_dotfiles_but_not_well_known() {
    // The embedded default config, on an ephemeral port, in a folder like a home directory:
    // its root is "." (no examples/www here), which is where the config lies.
    let text = include_str!("../lua/default.lua").replace("127.0.0.1:8080", "127.0.0.1:0");
    assert!(
        text.contains("127.0.0.1:0"),
        "default.lua changed its listen line"
    );
    let dir = common::TempDir::new("dot");
    dir.write("index.html", b"home");
    dir.write(".ssh/id_ed25519", b"secret key");
    dir.write(".env", b"TOKEN=1");
    dir.write("site/.git/config", b"[core]");
    dir.write(".well-known/security.txt", b"Contact: x");
    let s = Server::start_with(dir, &text, |cmd| {
        cmd.env_remove("LUAHTTPD_ROOT");
    });
    for path in [
        "/.ssh/id_ed25519",
        "/.ssh/",
        "/.env",
        "/%2eenv",
        "/site/.git/config",
        "/.well-known/../.env",
    ] {
        assert_eq!(s.get(path).status, 404, "{path}");
    }
    assert_eq!(s.get("/index.html").body, b"home");
    let r = s.get("/.well-known/security.txt");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"Contact: x"[..]));
    // The start-up line names the root it serves.
    let root = s.dir.path().canonicalize().unwrap();
    let line = format!("root {}", root.display());
    common::wait_for("the start-up line", Duration::from_secs(5), || {
        s.log_text()
            .lines()
            .any(|l| l.contains("started") && l.contains(&line))
    });
}
