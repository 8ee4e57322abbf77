//! Compression of static files: negotiation by Accept-Encoding (q-values, malformed headers,
//! identity;q=0), Vary, ETags of variants, never for ranges, precompressed siblings.

mod common;
mod fcgi_common;

use common::{raw, Response, Server, TempDir};
use std::io::Read;

/// A 20 KiB JavaScript file: compressible, well above min_size.
fn js() -> Vec<u8> {
    let mut v = Vec::new();
    let mut i = 0u32;
    while v.len() < 20 * 1024 {
        v.extend_from_slice(format!("function f{i}(a) {{ return a * {i} + 1; }}\n").as_bytes());
        i += 1;
    }
    v
}

fn get(s: &Server, path: &str, extra: &str) -> Response {
    raw(
        &s.addr,
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{extra}\r\n").as_bytes(),
    )
}

fn gunzip(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b)
        .read_to_end(&mut out)
        .expect("valid gzip");
    out
}

fn start(extra: &str) -> Server {
    let body = js();
    let files: Vec<(&str, &[u8])> = vec![
        ("app.js", &body),
        ("small.css", b"a{b:c}"),
        ("pic.png", &body),
        ("page.html", b"<p>hello hello hello hello</p>\n"),
    ];
    Server::start(extra, &files)
}

#[test]
fn gzip_and_zstd_by_accept_encoding() {
    let s = start("compress = { level = 6 }");
    let identity = get(&s, "/app.js", "");
    assert_eq!(identity.status, 200);
    assert_eq!(identity.body, js());
    assert_eq!(identity.header("content-encoding"), None);
    assert_eq!(identity.header("vary"), Some("Accept-Encoding"));

    let g = get(&s, "/app.js", "Accept-Encoding: gzip\r\n");
    assert_eq!(g.status, 200);
    assert_eq!(g.header("content-encoding"), Some("gzip"));
    assert_eq!(g.header("vary"), Some("Accept-Encoding"));
    assert_eq!(
        g.header("content-type")
            .map(|t| t.starts_with("text/javascript") || t.starts_with("application/javascript")),
        Some(true)
    );
    assert!(g.body.len() < js().len() / 4, "{}", g.body.len());
    assert_eq!(
        g.header("content-length"),
        Some(g.body.len().to_string().as_str())
    );
    assert_eq!(gunzip(&g.body), js());
    let (ie, ge) = (identity.header("etag").unwrap(), g.header("etag").unwrap());
    assert_ne!(ie, ge);
    assert!(ge.starts_with('"') && ge.ends_with('"'), "{ge}");

    // zstd preferred by the server on a tie; q-values decide otherwise.
    let z = get(
        &s,
        "/app.js",
        "Accept-Encoding: gzip, deflate, br, zstd\r\n",
    );
    assert_eq!(z.header("content-encoding"), Some("zstd"));
    assert_eq!(zstd::stream::decode_all(&z.body[..]).unwrap(), js());
    assert_ne!(z.header("etag"), g.header("etag"));
    let g2 = get(&s, "/app.js", "Accept-Encoding: zstd;q=0.5, gzip;q=0.9\r\n");
    assert_eq!(g2.header("content-encoding"), Some("gzip"));
    // Served again from the worker's cache: the same bytes.
    assert_eq!(g2.body, g.body);
    let none = get(&s, "/app.js", "Accept-Encoding: gzip;q=0, zstd;q=0\r\n");
    assert_eq!(none.header("content-encoding"), None);
    assert_eq!(none.body, js());

    // HEAD tells the coded length without a body.
    let mut c = s.connect();
    c.send(b"HEAD /app.js HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n");
    let h = c.response(true);
    assert_eq!(h.header("content-encoding"), Some("gzip"));
    assert_eq!(
        h.header("content-length"),
        Some(g.body.len().to_string().as_str())
    );
}

#[test]
fn malformed_accept_encoding_gets_identity() {
    let s = start("compress = true");
    for bad in [
        "gzip;q=2",
        "gzip;q=abc",
        "gz ip",
        "gzip;q=0.0001",
        "\"gzip\"",
        "gzip;level=9",
    ] {
        let r = get(&s, "/app.js", &format!("Accept-Encoding: {bad}\r\n"));
        assert_eq!(r.status, 200, "{bad}");
        assert_eq!(r.header("content-encoding"), None, "{bad}");
        assert_eq!(r.body, js(), "{bad}");
    }
}

#[test]
fn identity_q0_is_answered_not_refused() {
    let s = start("compress = true");
    let r = get(&s, "/app.js", "Accept-Encoding: identity;q=0, gzip\r\n");
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(gunzip(&r.body), js());
    // Nothing acceptable at all: identity all the same, never a 406 for a file.
    for h in ["identity;q=0", "*;q=0", "identity;q=0, deflate"] {
        let r = get(&s, "/app.js", &format!("Accept-Encoding: {h}\r\n"));
        assert_eq!(r.status, 200, "{h}");
        assert_eq!(r.header("content-encoding"), None, "{h}");
        assert_eq!(r.body, js(), "{h}");
    }
    // `*` stands for any coding the server has.
    let r = get(&s, "/app.js", "Accept-Encoding: *\r\n");
    assert_eq!(r.header("content-encoding"), Some("zstd"));
}

#[test]
fn range_on_a_compressible_file_is_of_the_identity_bytes() {
    let s = start("compress = true");
    let r = get(
        &s,
        "/app.js",
        "Accept-Encoding: gzip, zstd\r\nRange: bytes=100-199\r\n",
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.body, &js()[100..200]);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 100-199/{}", js().len()).as_str())
    );
}

#[test]
fn only_listed_types_above_min_size() {
    let s = start("compress = { min_size = 64, types = { \"text/*\", \"application/javascript\", \"text/javascript\" } }");
    let png = get(&s, "/pic.png", "Accept-Encoding: gzip\r\n");
    assert_eq!(png.header("content-encoding"), None);
    assert_eq!(png.header("vary"), None);
    let small = get(&s, "/small.css", "Accept-Encoding: gzip\r\n");
    assert_eq!(small.header("content-encoding"), None);
    assert_eq!(small.body, b"a{b:c}");
    let js = get(&s, "/app.js", "Accept-Encoding: gzip\r\n");
    assert_eq!(js.header("content-encoding"), Some("gzip"));
}

#[test]
fn off_by_default() {
    let s = start("");
    let r = get(&s, "/app.js", "Accept-Encoding: gzip, zstd\r\n");
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.header("vary"), None);
    assert_eq!(r.body, js());
}

#[test]
fn conditional_requests_use_the_variant_etag() {
    let s = start("compress = true");
    let g = get(&s, "/app.js", "Accept-Encoding: gzip\r\n");
    let etag = g.header("etag").unwrap().to_string();
    let r = get(
        &s,
        "/app.js",
        &format!("Accept-Encoding: gzip\r\nIf-None-Match: {etag}\r\n"),
    );
    assert_eq!(r.status, 304);
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    // The gzip ETag does not validate the zstd variant.
    let z = get(
        &s,
        "/app.js",
        &format!("Accept-Encoding: zstd\r\nIf-None-Match: {etag}\r\n"),
    );
    assert_eq!(z.status, 200);
    assert_eq!(z.header("content-encoding"), Some("zstd"));
}

#[test]
fn precompressed_siblings_are_served_as_they_are() {
    let dir = TempDir::new("pre");
    let body = js();
    dir.write("www/app.js", &body);
    // Not real encodings of app.js: proof that the sibling's bytes go out untouched.
    dir.write("www/app.js.br", b"BROTLI-BYTES");
    dir.write("www/app.js.gz", b"GZIP-BYTES");
    dir.write(
        "www/only.txt",
        b"plain text file, no siblings, long enough to matter maybe",
    );
    let config = format!("server {{ {}, precompressed = true }}\n", common::BASE);
    let s = Server::start_config(dir, &config);
    let br = get(&s, "/app.js", "Accept-Encoding: gzip, br\r\n");
    assert_eq!(br.status, 200);
    assert_eq!(br.header("content-encoding"), Some("br"));
    assert_eq!(br.body, b"BROTLI-BYTES");
    assert_eq!(br.header("vary"), Some("Accept-Encoding"));
    assert!(br.header("content-type").unwrap().contains("javascript"));
    let gz = get(&s, "/app.js", "Accept-Encoding: gzip\r\n");
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    assert_eq!(gz.body, b"GZIP-BYTES");
    let id = get(&s, "/app.js", "");
    assert_eq!(id.body, body);
    assert_ne!(gz.header("etag"), id.header("etag"));
    assert_ne!(gz.header("etag"), br.header("etag"));
    assert!(gz.header("last-modified").is_some());
    // zstd asked for, no .zst and no on-the-fly compression: identity.
    let z = get(&s, "/app.js", "Accept-Encoding: zstd\r\n");
    assert_eq!(z.header("content-encoding"), None);
    assert_eq!(z.body, body);
    // The sibling validates on its own ETag.
    let etag = gz.header("etag").unwrap();
    let nm = get(
        &s,
        "/app.js",
        &format!("Accept-Encoding: gzip\r\nIf-None-Match: {etag}\r\n"),
    );
    assert_eq!(nm.status, 304);
    // A range is of the identity file even when a sibling exists.
    let r = get(
        &s,
        "/app.js",
        "Accept-Encoding: gzip\r\nRange: bytes=0-9\r\n",
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &body[..10]);
}

#[test]
fn bad_compress_settings_fail_the_check_with_their_line() {
    let dir = TempDir::new("badc");
    std::fs::create_dir_all(dir.path().join("www")).unwrap();
    let conf = dir.write(
        "site.lua",
        b"server {\n  root = 'www',\n  compress = {\n    level = 12,\n    encodings = { 'br' },\n  },\n  expires = { ['.css'] = '30 days' },\n}\n",
    );
    let out = std::process::Command::new(common::bin())
        .args(["-t", "-c", conf.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let name = conf.to_str().unwrap();
    for (line, what) in [(4, "compress.level"), (5, "br"), (7, "expires")] {
        assert!(
            err.lines()
                .any(|l| l.starts_with(&format!("{name}:{line}:")) && l.contains(what)),
            "no {name}:{line}: … {what} in:\n{err}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// FastCGI responses: streamed through the encoder, chunked on HTTP/1.1.

fn fcgi(server_extra: &str) -> fcgi_common::Fcgi {
    fcgi_common::Fcgi::start(fcgi_common::Opts {
        server_extra,
        ..Default::default()
    })
}

fn fcgi_get(f: &fcgi_common::Fcgi, target: &str, extra: &str, version: &str) -> fcgi_common::Resp {
    let mut c = fcgi_common::Conn::connect(f.addr());
    c.send(format!("GET {target} {version}\r\nHost: t\r\n{extra}\r\n").as_bytes());
    c.response(false)
}

#[test]
fn fastcgi_response_is_compressed_while_it_streams() {
    let f = fcgi("compress = true");
    let n = 3_000_000;
    let target = format!("/t.php?mode=huge&bytes={n}");
    let r = fcgi_get(&f, &target, "Accept-Encoding: gzip\r\n", "HTTP/1.1");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    assert_eq!(r.header("content-length"), None);
    assert_eq!(r.framing, fcgi_common::Framing::Chunked);
    assert!(r.complete);
    assert!(r.body.len() < n / 20, "{}", r.body.len());
    let plain = gunzip(&r.body);
    assert_eq!(plain.len(), n);
    assert_eq!(fcgi_common::check_pattern(&plain), Ok(()));

    // zstd over HTTP/1.0: close-delimited.
    let r = fcgi_get(&f, &target, "Accept-Encoding: zstd\r\n", "HTTP/1.0");
    assert_eq!(r.header("content-encoding"), Some("zstd"));
    assert_eq!(r.framing, fcgi_common::Framing::Close);
    let plain = zstd::stream::decode_all(&r.body[..]).unwrap();
    assert_eq!(plain.len(), n);
    assert_eq!(fcgi_common::check_pattern(&plain), Ok(()));

    // No Accept-Encoding, or a malformed one: as the backend sent it.
    for extra in ["", "Accept-Encoding: gzip;q=x\r\n"] {
        let r = fcgi_get(&f, "/t.php?mode=huge&bytes=5000", extra, "HTTP/1.1");
        assert_eq!(r.header("content-encoding"), None);
        assert_eq!(r.body.len(), 5000);
    }
}

#[test]
fn fastcgi_types_outside_the_list_and_small_bodies_are_left_alone() {
    let f = fcgi("compress = { types = { \"text/*\" } }");
    // JSON params: not in this list.
    let r = fcgi_get(&f, "/t.php", "Accept-Encoding: gzip\r\n", "HTTP/1.1");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), None);
    assert!(r.text().starts_with('{'));
}

#[test]
fn fastcgi_backend_dying_mid_body_still_shows_truncation() {
    let f = fcgi("compress = true");
    let r = fcgi_get(
        &f,
        "/t.php?mode=diemid",
        "Accept-Encoding: gzip\r\n",
        "HTTP/1.1",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    // The chunked body never got its last chunk: the client sees the truncation.
    assert!(!r.complete, "a truncated body must not look complete");
}

#[test]
fn fastcgi_compression_keeps_worker_memory_bounded() {
    let f = fcgi("compress = { encodings = { \"gzip\" }, level = 1 }");
    let workers = f.workers();
    assert_eq!(workers.len(), 1, "one worker: {workers:?}");
    let before = fcgi_common::rss_kib(workers[0]).unwrap();
    let n = 40_000_000;
    let r = fcgi_get(
        &f,
        &format!("/t.php?mode=huge&bytes={n}"),
        "Accept-Encoding: gzip\r\n",
        "HTTP/1.1",
    );
    let after = fcgi_common::rss_kib(workers[0]).unwrap();
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    let plain = gunzip(&r.body);
    assert_eq!(plain.len(), n);
    // 40 MB went through the encoder; the worker grew by far less (window and buffers).
    assert!(
        after.saturating_sub(before) < 16 * 1024,
        "worker RSS grew from {before} KiB to {after} KiB"
    );
}

// ---------------------------------------------------------------------------------------------
// Static files above compress.max_size: coded while they stream, never held whole.

/// 3 MiB of log-like text (compressible, not trivially).
fn big_text() -> Vec<u8> {
    let mut v = Vec::with_capacity(3 * 1024 * 1024 + 100);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut i = 0u64;
    while v.len() < 3 * 1024 * 1024 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(format!("{i} GET /item/{} 200 {}\n", x % 100_000, x % 977).as_bytes());
        i += 1;
    }
    v.truncate(3 * 1024 * 1024);
    v
}

/// Peak resident memory of a process, in KiB.
fn peak_rss_kib(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = s.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_file_above_max_size_is_compressed_as_it_streams() {
    let body = big_text();
    let files: Vec<(&str, &[u8])> = vec![("big.txt", &body), ("app.js", b"x")];
    // A debug build codes slowly: the 5 s keep-alive clock, read before the pass that sends
    // the whole body to this fast client, would run out as soon as the body is out.
    let s = Server::start(
        "workers = 1, timeouts = { keepalive_idle = 120 }, \
         compress = { encodings = { \"gzip\", \"zstd\" }, level = 1 }",
        &files,
    );
    let workers = s.worker_pids();
    assert_eq!(workers.len(), 1, "{workers:?}");
    // Warm the worker up (file cache, encoder code) before taking its peak.
    let mut c = fcgi_common::Conn::connect(&s.addr);
    c.send(
        b"GET /big.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=0-9\r\nAccept-Encoding: gzip\r\n\r\n",
    );
    let r = c.response(false);
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.body, &body[..10]);
    let before = peak_rss_kib(workers[0]);

    c.send(b"GET /big.txt HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n");
    let g = c.response(false);
    assert_eq!(g.status, 200);
    assert_eq!(g.header("content-encoding"), Some("gzip"));
    assert_eq!(g.header("vary"), Some("Accept-Encoding"));
    assert_eq!(g.header("content-length"), None);
    assert_eq!(g.framing, fcgi_common::Framing::Chunked);
    assert!(g.complete);
    assert!(g.body.len() < body.len() / 2, "{}", g.body.len());
    assert_eq!(gunzip(&g.body), body, "the body decompresses byte-exact");
    let etag = g.header("etag").expect("etag").to_string();
    assert!(etag.ends_with("-gzip\""), "{etag}");
    let after = peak_rss_kib(workers[0]);
    // Coding it whole would hold the 3 MiB file (and its coded copy) at once.
    assert!(
        after.saturating_sub(before) < 1536,
        "worker peak RSS grew from {before} KiB to {after} KiB"
    );

    // The connection is kept: the variant ETag validates, HEAD gets the head alone.
    c.send(format!("GET /big.txt HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\nIf-None-Match: {etag}\r\n\r\n").as_bytes());
    let r = c.response(false);
    assert_eq!(r.status, 304);
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    c.send(b"HEAD /big.txt HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n");
    let r = c.response(true);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    // Without Accept-Encoding: the identity file, with its length.
    c.send(b"GET /big.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.response(false);
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    assert_eq!(r.body.len(), body.len());

    // zstd to an HTTP/1.0 client: close-delimited.
    let mut c = fcgi_common::Conn::connect(&s.addr);
    c.send(b"GET /big.txt HTTP/1.0\r\nHost: t\r\nAccept-Encoding: zstd\r\n\r\n");
    let z = c.response(false);
    assert_eq!(z.header("content-encoding"), Some("zstd"));
    assert_eq!(z.framing, fcgi_common::Framing::Close);
    assert_eq!(zstd::stream::decode_all(&z.body[..]).unwrap(), body);
}

/// The fields of a raw head (names lowercased), without Date (it may tick between two
/// answers) and Connection (the GET asked to close, the HEAD's connection stays).
fn head_fields(head: &str) -> Vec<(String, String)> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_string()))
        .filter(|(n, _)| n != "date" && n != "connection")
        .collect()
}

#[test]
fn head_of_a_streamed_file_has_the_get_head_and_no_body() {
    use std::io::Write;
    let body = big_text();
    let files: Vec<(&str, &[u8])> = vec![("big.txt", &body), ("app.js", b"x")];
    let s = Server::start(
        "compress = { encodings = { \"gzip\", \"zstd\" }, level = 1 }",
        &files,
    );
    // HTTP/1.1: GET and HEAD heads alike; the HEAD pipelined before a small GET, so any body
    // byte it sent would show between its head and the next status line.
    for coding in ["gzip", "zstd"] {
        let get = format!("GET /big.txt HTTP/1.1\r\nHost: t\r\nAccept-Encoding: {coding}\r\n");
        let g = raw(
            &s.addr,
            format!("{get}Connection: close\r\n\r\n").as_bytes(),
        );
        assert_eq!(g.status, 200);
        assert_eq!(g.header("transfer-encoding"), Some("chunked"));
        let head_req = get.replacen("GET", "HEAD", 1);
        let mut t = std::net::TcpStream::connect(&s.addr).unwrap();
        t.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        t.write_all(
            format!("{head_req}\r\nGET /app.js HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        let mut all = Vec::new();
        t.read_to_end(&mut all).unwrap();
        let text = String::from_utf8_lossy(&all).to_string();
        let end = text.find("\r\n\r\n").expect("a head") + 4;
        let (h, rest) = text.split_at(end);
        assert!(
            rest.starts_with("HTTP/1.1 200"),
            "bytes after the HEAD's head: {:?}",
            &rest[..rest.len().min(40)]
        );
        assert!(
            rest.ends_with("\r\n\r\nx"),
            "the next answer is whole: {rest:?}"
        );
        let want: Vec<(String, String)> = g
            .header_list
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
            .filter(|(n, _)| n != "date" && n != "connection")
            .collect();
        assert_eq!(head_fields(h), want, "{coding}");
    }

    // HTTP/1.0 keep-alive: a GET is close-delimited, but a HEAD has no body to delimit, so
    // the connection is kept for the next request.
    let mut t = std::net::TcpStream::connect(&s.addr).unwrap();
    t.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    t.write_all(
        b"HEAD /big.txt HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\nAccept-Encoding: gzip\r\n\r\n\
          GET /app.js HTTP/1.0\r\nHost: t\r\n\r\n",
    )
    .unwrap();
    let mut all = Vec::new();
    t.read_to_end(&mut all).unwrap();
    let text = String::from_utf8_lossy(&all).to_string();
    let end = text.find("\r\n\r\n").expect("a head") + 4;
    let (h, rest) = text.split_at(end);
    assert!(h.starts_with("HTTP/1.1 200"), "{h}");
    assert!(h.contains("Content-Encoding: gzip"), "{h}");
    assert!(
        h.to_ascii_lowercase().contains("connection: keep-alive"),
        "{h}"
    );
    assert!(
        rest.starts_with("HTTP/1.1 200") && rest.ends_with("\r\n\r\nx"),
        "{rest:?}"
    );
}
