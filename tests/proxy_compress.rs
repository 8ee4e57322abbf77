//! On-the-fly compression of proxied responses: the real luahttpd with `compress` in front of
//! a small text upstream run on threads in this process. The FastCGI rules apply: gzip and
//! zstd by Accept-Encoding with q-values, Vary, the variant's ETag, never for ranges, HEAD
//! bodies, 304, already coded or `no-transform` responses, small bodies or unlisted types;
//! chunked on HTTP/1.1, close-delimited on HTTP/1.0; bounded worker memory; kept upstream
//! connections; tunnels untouched.

mod common;
mod proxy_common;

use common::{Server, TempDir};
use proxy_common::{header, Client, Resp};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// `n` bytes of compressible text (log-like lines, not a single repeated one).
fn text(n: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(n + 64);
    let mut i = 0u64;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(
            format!("{i} GET /item/{} HTTP/1.1 200 {}\n", x % 5000, x % 977).as_bytes(),
        );
        i += 1;
    }
    v.truncate(n);
    v
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn gunzip(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b)
        .read_to_end(&mut out)
        .expect("valid gzip");
    out
}

fn unzstd(b: &[u8]) -> Vec<u8> {
    zstd::stream::decode_all(b).expect("valid zstd")
}

/// The test upstream: HTTP/1.1 with keep-alive, counting connections and requests.
///
/// Paths (the query's `n` is the body length): `/text` (text/plain, Content-Length, a strong
/// ETag, Range and If-None-Match answered), `/chunked` (text/html, chunked), `/close`
/// (text/plain, close-delimited), `/png` (image/png), `/coded` (already gzip-coded text),
/// `/notransform` (`Cache-Control: no-transform`), `/huge` (text/plain, chunked, made 64 KiB
/// at a time), `/die` (half the announced length, then the connection closes).
struct TextUpstream {
    addr: String,
    conns: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

impl TextUpstream {
    fn start() -> TextUpstream {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let conns = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (c, r) = (conns.clone(), requests.clone());
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { continue };
                c.fetch_add(1, Ordering::SeqCst);
                let r = r.clone();
                std::thread::spawn(move || serve(s, &r));
            }
        });
        TextUpstream {
            addr,
            conns,
            requests,
        }
    }
}

fn query(target: &str) -> usize {
    target
        .split_once("n=")
        .and_then(|(_, v)| v.split('&').next()?.parse().ok())
        .unwrap_or(1000)
}

/// Reads one request head (the tests send no bodies); None at EOF.
fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head: Vec<u8> = buf.drain(..i + 4).collect();
            return Some(String::from_utf8_lossy(&head).into_owned());
        }
        let mut tmp = [0u8; 8192];
        match s.read(&mut tmp) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
}

fn serve(mut s: TcpStream, requests: &AtomicUsize) {
    let _ = s.set_nodelay(true);
    let mut buf = Vec::new();
    while let Some(head) = read_head(&mut s, &mut buf) {
        requests.fetch_add(1, Ordering::SeqCst);
        let first = head.lines().next().unwrap_or("").to_string();
        let mut parts = first.split(' ');
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let lower = head.to_ascii_lowercase();
        let field = |name: &str| {
            lower.split("\r\n").find_map(|l| {
                l.strip_prefix(&format!("{name}:"))
                    .map(|v| v.trim().to_string())
            })
        };
        let head_only = method == "HEAD";
        let path = target.split('?').next().unwrap_or("").to_string();
        let n = query(&target);
        let fixed = |s: &mut TcpStream, status: &str, fields: &str, body: &[u8]| {
            let h = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\n{fields}\r\n",
                body.len()
            );
            s.write_all(h.as_bytes()).is_ok() && (head_only || s.write_all(body).is_ok())
        };
        let ok = match path.as_str() {
            "/text" => {
                let body = text(n);
                let fields = "Content-Type: text/plain; charset=utf-8\r\nETag: \"t1\"\r\nAccept-Ranges: bytes\r\n";
                if field("if-none-match").as_deref() == Some("\"t1\"") {
                    s.write_all(b"HTTP/1.1 304 Not Modified\r\nETag: \"t1\"\r\n\r\n")
                        .is_ok()
                } else if let Some(r) = field("range") {
                    let (a, b) = r
                        .strip_prefix("bytes=")
                        .and_then(|r| r.split_once('-'))
                        .unwrap();
                    let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
                    let range = format!("{fields}Content-Range: bytes {a}-{b}/{n}\r\n");
                    fixed(&mut s, "206 Partial Content", &range, &body[a..=b])
                } else {
                    fixed(&mut s, "200 OK", fields, &body)
                }
            }
            "/die" => {
                // Half the announced body, then the connection closes.
                let h = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {n}\r\n\r\n"
                );
                let _ = s.write_all(h.as_bytes());
                let _ = s.write_all(&text(n)[..n / 2]);
                std::thread::sleep(Duration::from_millis(100));
                false
            }
            "/png" => fixed(&mut s, "200 OK", "Content-Type: image/png\r\n", &text(n)),
            "/coded" => fixed(
                &mut s,
                "200 OK",
                "Content-Type: text/plain\r\nContent-Encoding: gzip\r\n",
                &gzip(&text(n)),
            ),
            "/notransform" => fixed(
                &mut s,
                "200 OK",
                "Content-Type: text/plain\r\nCache-Control: public, no-transform\r\n",
                &text(n),
            ),
            "/chunked" | "/huge" => {
                let h = "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n";
                let mut ok = s.write_all(h.as_bytes()).is_ok();
                if !head_only {
                    // /huge: made and sent 64 KiB at a time (the same bytes as text(n)).
                    let body = text(n);
                    let piece = if path == "/huge" { 65536 } else { 1000 };
                    for c in body.chunks(piece) {
                        if !ok {
                            break;
                        }
                        let mut out = format!("{:x}\r\n", c.len()).into_bytes();
                        out.extend_from_slice(c);
                        out.extend_from_slice(b"\r\n");
                        ok = s.write_all(&out).is_ok();
                    }
                    ok = ok && s.write_all(b"0\r\n\r\n").is_ok();
                }
                ok
            }
            "/close" => {
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n",
                );
                if !head_only {
                    let _ = s.write_all(&text(n));
                }
                false
            }
            _ => fixed(&mut s, "404 Not Found", "", b"no such path"),
        };
        if !ok {
            break;
        }
    }
}

/// A luahttpd (one worker) with `compress` set as given, proxying every path but `/` (the
/// readiness probe's, answered by the route) to the text upstream and `/pc/...` to the shared
/// test upstream (for the WebSocket tunnel).
fn start(up: &TextUpstream, other: &str, compress: &str) -> Server {
    let dir = TempDir::new("pxz");
    std::fs::create_dir_all(dir.path().join("www")).unwrap();
    let config = format!(
        r#"server {{ listen = "127.0.0.1:0", workers = 1, root = "www", error_log = "stderr",
  compress = {compress} }}
upstream "app" {{ address = "{}", keepalive = 4, read_timeout = 30, prefix = "/" }}
upstream "pc" {{ address = "{other}", read_timeout = 30 }}
site "plain.test" {{ root = "www", compress = false }}
route(function(req)
  if req.path == "/" then return respond(200, "ready\n") end
  if req.path:find("^/pc/") then
    return proxy("pc", {{ path = req.path:sub(4) }})
  end
end)
"#,
        up.addr
    );
    Server::start_config(dir, &config)
}

/// A client with a 30 s read timeout (20 MiB bodies through a debug build take a while).
fn client(srv: &Server) -> Client {
    Client::with_timeout(&srv.addr, Duration::from_secs(30))
}

/// Requests with extra header lines (each ending in CRLF), on the common client.
trait Ask {
    fn req(&mut self, method: &str, path: &str, version: &str, extra: &str) -> Resp;
    fn get_with(&mut self, path: &str, extra: &str) -> Resp;
    fn get_host(&mut self, path: &str, host: &str, extra: &str) -> Resp;
}

impl Ask for Client {
    fn req(&mut self, method: &str, path: &str, version: &str, extra: &str) -> Resp {
        self.send(format!("{method} {path} {version}\r\nHost: test\r\n{extra}\r\n").as_bytes());
        self.try_resp(method == "HEAD")
            .expect("a complete response")
    }
    fn get_with(&mut self, path: &str, extra: &str) -> Resp {
        self.req("GET", path, "HTTP/1.1", extra)
    }
    fn get_host(&mut self, path: &str, host: &str, extra: &str) -> Resp {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n").as_bytes());
        self.resp()
    }
}

fn varies(r: &Resp) -> bool {
    r.1.iter().any(|(k, v)| {
        k == "vary"
            && v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("accept-encoding"))
    })
}

/// An identity answer: no coding, no Vary, the upstream's body and length as they are.
fn assert_identity(r: &Resp, body: &[u8], what: &str) {
    assert_eq!(r.0, 200, "{what}");
    assert_eq!(header(r, "content-encoding"), None, "{what}: {:?}", r.1);
    assert!(
        !varies(r),
        "{what}: no Vary on an uncoded answer: {:?}",
        r.1
    );
    assert_eq!(
        header(r, "content-length"),
        Some(body.len().to_string().as_str()),
        "{what}: {:?}",
        r.1
    );
    assert!(r.2 == body, "{what}: body not the upstream's");
}

#[test]
fn gzip_and_zstd_bodies_decode_to_the_upstream_bytes() {
    let up = TextUpstream::start();
    let pc = proxy_common::Upstream::start("pc");
    let srv = start(&up, &pc.addr, "{ level = 6 }");
    let mut c = client(&srv);
    let body = text(100_000);

    let r = c.get_with("/text?n=100000", "Accept-Encoding: gzip\r\n");
    assert_eq!(r.0, 200);
    assert_eq!(header(&r, "content-encoding"), Some("gzip"), "{:?}", r.1);
    assert!(varies(&r), "{:?}", r.1);
    assert_eq!(
        header(&r, "content-length"),
        None,
        "the upstream's length is dropped"
    );
    assert_eq!(header(&r, "transfer-encoding"), Some("chunked"));
    // The strong ETag is made distinct for the variant, as FastCGI does.
    assert_eq!(header(&r, "etag"), Some("\"t1-gzip\""));
    assert_eq!(
        header(&r, "content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert!(r.2.len() < body.len() / 3, "{} coded bytes", r.2.len());
    assert!(gunzip(&r.2) == body, "gzip body not byte-exact");

    let r = c.get_with("/text?n=100000", "Accept-Encoding: zstd\r\n");
    assert_eq!(header(&r, "content-encoding"), Some("zstd"), "{:?}", r.1);
    assert!(varies(&r));
    assert_eq!(header(&r, "etag"), Some("\"t1-zstd\""));
    assert!(unzstd(&r.2) == body, "zstd body not byte-exact");

    // q-values choose; ties go by the server's order (zstd first).
    for (ae, want) in [
        ("gzip;q=1, zstd;q=0.5", "gzip"),
        ("gzip;q=0.2, zstd", "zstd"),
        ("gzip, zstd", "zstd"),
        ("zstd;q=0, *", "gzip"),
        ("identity;q=0, gzip", "gzip"),
    ] {
        let r = c.get_with("/text?n=100000", &format!("Accept-Encoding: {ae}\r\n"));
        assert_eq!(header(&r, "content-encoding"), Some(want), "{ae}");
        let plain = if want == "gzip" {
            gunzip(&r.2)
        } else {
            unzstd(&r.2)
        };
        assert!(plain == body, "{ae}: not byte-exact");
    }

    // Chunked and close-delimited upstream bodies are coded the same way.
    let r = c.get_with("/chunked?n=54321", "Accept-Encoding: gzip\r\n");
    assert_eq!(header(&r, "content-encoding"), Some("gzip"));
    assert!(gunzip(&r.2) == text(54321), "chunked upstream");
    let r = c.get_with("/close?n=54321", "Accept-Encoding: zstd\r\n");
    assert_eq!(header(&r, "content-encoding"), Some("zstd"));
    assert!(unzstd(&r.2) == text(54321), "close-delimited upstream");

    // HTTP/1.0: close-delimited, the connection closes after it.
    let mut c10 = client(&srv);
    let r = c10.req(
        "GET",
        "/text?n=100000",
        "HTTP/1.0",
        "Accept-Encoding: gzip\r\n",
    );
    assert_eq!(header(&r, "content-encoding"), Some("gzip"));
    assert_eq!(header(&r, "transfer-encoding"), None);
    assert_eq!(header(&r, "content-length"), None);
    assert!(gunzip(&r.2) == body, "HTTP/1.0 body not byte-exact");

    // The keep-alive connection still answers.
    let r = c.get_with("/text?n=300", "");
    assert_identity(&r, &text(300), "after coded responses");
}

#[test]
fn what_must_not_be_coded_passes_as_it_is() {
    let up = TextUpstream::start();
    let pc = proxy_common::Upstream::start("pc");
    let srv = start(&up, &pc.addr, "{ min_size = 256 }");
    let mut c = client(&srv);
    let gz = "Accept-Encoding: gzip, zstd\r\n";

    assert_identity(&c.get_with("/png?n=5000", gz), &text(5000), "image/png");
    assert_identity(&c.get_with("/text?n=100", gz), &text(100), "below min_size");
    assert_identity(
        &c.get_with("/text?n=5000", ""),
        &text(5000),
        "no Accept-Encoding",
    );
    assert_identity(
        &c.get_with("/text?n=5000", "Accept-Encoding: identity\r\n"),
        &text(5000),
        "identity",
    );
    // Nothing acceptable, not even identity: identity anyway, not a 406.
    assert_identity(
        &c.get_with("/text?n=5000", "Accept-Encoding: identity;q=0\r\n"),
        &text(5000),
        "identity;q=0",
    );
    assert_identity(
        &c.get_with("/text?n=5000", "Accept-Encoding: gzip;q=0, zstd;q=0\r\n"),
        &text(5000),
        "every coding q=0",
    );
    assert_identity(
        &c.get_with("/text?n=5000", "Accept-Encoding: gzip;q=2\r\n"),
        &text(5000),
        "malformed",
    );
    assert_identity(
        &c.get_with("/notransform?n=5000", gz),
        &text(5000),
        "no-transform",
    );
    // A site whose compress is off.
    let r = c.get_host("/text?n=5000", "plain.test", gz);
    assert_identity(&r, &text(5000), "site with compress = false");

    // A Range request: the upstream's 206 of identity bytes.
    let r = c.get_with(
        "/text?n=5000",
        "Accept-Encoding: gzip\r\nRange: bytes=100-1099\r\n",
    );
    assert_eq!(r.0, 206);
    assert_eq!(header(&r, "content-encoding"), None, "{:?}", r.1);
    assert_eq!(header(&r, "content-range"), Some("bytes 100-1099/5000"));
    assert_eq!(header(&r, "content-length"), Some("1000"));
    assert!(r.2 == text(5000)[100..1100], "range bytes");

    // Already coded by the upstream: passed as it is (not coded twice).
    let r = c.get_with("/coded?n=5000", gz);
    assert_eq!(header(&r, "content-encoding"), Some("gzip"));
    assert!(
        r.2 == gzip(&text(5000)),
        "the upstream's coded bytes as they are"
    );
    assert!(gunzip(&r.2) == text(5000));

    // A 304 has no body and no coding.
    let r = c.get_with(
        "/text?n=5000",
        "Accept-Encoding: gzip\r\nIf-None-Match: \"t1\"\r\n",
    );
    assert_eq!(r.0, 304);
    assert_eq!(header(&r, "content-encoding"), None);
    assert!(r.2.is_empty());

    // The connection is still in step.
    assert_identity(&c.get_with("/text?n=700", ""), &text(700), "after all that");
}

#[test]
fn head_gets_the_coded_head_and_no_body() {
    let up = TextUpstream::start();
    let pc = proxy_common::Upstream::start("pc");
    let srv = start(&up, &pc.addr, "true");
    let mut c = client(&srv);
    // Pipelined: a HEAD, then a GET; any body byte after the HEAD's head would be taken
    // for the GET's response.
    c.send(
        b"HEAD /text?n=50000 HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n\
          GET /text?n=300 HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    let r = c.try_resp(true).expect("HEAD answer");
    assert_eq!(r.0, 200);
    assert_eq!(header(&r, "content-encoding"), Some("gzip"), "{:?}", r.1);
    assert!(varies(&r));
    assert_eq!(header(&r, "etag"), Some("\"t1-gzip\""));
    assert_eq!(header(&r, "content-length"), None, "{:?}", r.1);
    assert!(r.2.is_empty());
    let r = c.try_resp(false).expect("GET answer");
    assert_identity(&r, &text(300), "the GET after the HEAD");
    // A chunked upstream's HEAD too.
    let r = c.req(
        "HEAD",
        "/chunked?n=50000",
        "HTTP/1.1",
        "Accept-Encoding: zstd\r\n",
    );
    assert_eq!(header(&r, "content-encoding"), Some("zstd"), "{:?}", r.1);
    // Uncoded HEAD: the upstream's length passes.
    let r = c.req("HEAD", "/text?n=50000", "HTTP/1.1", "");
    assert_eq!(header(&r, "content-encoding"), None);
    assert_eq!(header(&r, "content-length"), Some("50000"));
    assert_identity(&c.get_with("/text?n=300", ""), &text(300), "last");
}

#[test]
fn the_upstream_connection_is_kept_across_coded_responses() {
    let up = TextUpstream::start();
    let pc = proxy_common::Upstream::start("pc");
    let srv = start(&up, &pc.addr, "true");
    let mut c = client(&srv);
    for ae in ["gzip", "zstd", "gzip"] {
        let r = c.get_with("/text?n=80000", &format!("Accept-Encoding: {ae}\r\n"));
        assert_eq!(header(&r, "content-encoding"), Some(ae));
    }
    let r = c.get_with("/chunked?n=80000", "Accept-Encoding: gzip\r\n");
    assert!(gunzip(&r.2) == text(80000));
    // Whatever the client's framing: an HTTP/1.0 client's close-delimited coded body ends
    // with its connection, the upstream's response ended at its length, so the upstream
    // connection goes back to the pool.
    let mut c10 = client(&srv);
    let r = c10.req(
        "GET",
        "/text?n=80000",
        "HTTP/1.0",
        "Accept-Encoding: gzip\r\n",
    );
    assert!(gunzip(&r.2) == text(80000));
    assert!(c10.closed());
    let mut c2 = client(&srv);
    let r = c2.get_with("/text?n=80000", "Accept-Encoding: zstd\r\n");
    assert!(unzstd(&r.2) == text(80000));
    assert_eq!(up.requests.load(Ordering::SeqCst), 6);
    assert_eq!(
        up.conns.load(Ordering::SeqCst),
        1,
        "six coded responses on one upstream connection"
    );
}

#[test]
fn an_upstream_dying_mid_body_leaves_the_coded_body_visibly_cut() {
    let up = TextUpstream::start();
    let pc = proxy_common::Upstream::start("pc");
    let srv = start(&up, &pc.addr, "true");
    let mut c = client(&srv);
    c.send(b"GET /die?n=200000 HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n");
    let mut got = Vec::new();
    let _ = c.s.read_to_end(&mut got);
    let text_got = String::from_utf8_lossy(&got);
    assert!(text_got.starts_with("HTTP/1.1 200"), "{text_got:.200}");
    assert!(
        text_got
            .to_ascii_lowercase()
            .contains("content-encoding: gzip"),
        "{text_got:.300}"
    );
    // The connection closed without the last chunk: the client sees the truncation.
    assert!(
        !got.ends_with(b"0\r\n\r\n"),
        "a cut body must not look complete"
    );
}

#[test]
fn a_websocket_tunnel_is_never_coded() {
    let up = TextUpstream::start();
    let pc = proxy_common::Upstream::start("pc");
    let srv = start(&up, &pc.addr, "true");
    let mut c = client(&srv);
    c.send(
        b"GET /pc/ws HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    );
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(c.s.read(&mut b).unwrap(), 1);
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(!head.contains("content-encoding"), "{head}");
    let msg = text(20_000);
    c.send(&msg);
    let mut back = vec![0u8; msg.len()];
    c.s.read_exact(&mut back).unwrap();
    assert!(back == msg, "tunnel bytes as they are");
}

#[test]
fn a_20_mib_coded_body_streams_with_bounded_worker_memory() {
    let up = TextUpstream::start();
    let pc = proxy_common::Upstream::start("pc");
    let srv = start(
        &up,
        &pc.addr,
        "{ encodings = { \"gzip\", \"zstd\" }, level = 1 }",
    );
    let worker = srv.worker_pids()[0];
    let mut c = client(&srv);
    // Warm up: an encoder of each coding has been made once.
    for ae in ["gzip", "zstd"] {
        let r = c.get_with("/huge?n=300000", &format!("Accept-Encoding: {ae}\r\n"));
        assert_eq!(header(&r, "content-encoding"), Some(ae));
    }
    let n = 20 * 1024 * 1024;
    let body = text(n);
    // Each coded body is 4-5 MB: holding one whole would show, within 3 MiB of growth (about
    // 0.5 MiB measured: the encoder's window, the proxy's 256 KiB of output, buffers).
    let before = common::status_kib(worker, "VmHWM:");
    // A client that reads nothing for a while: the upstream is read only while the coded
    // output waits below the proxy's limit.
    c.send(
        format!("GET /huge?n={n} HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n").as_bytes(),
    );
    std::thread::sleep(Duration::from_millis(1500));
    let during = common::status_kib(worker, "VmRSS:");
    let r = c.try_resp(false).expect("the 20 MiB response");
    assert_eq!(header(&r, "content-encoding"), Some("gzip"));
    assert!(gunzip(&r.2) == body, "20 MiB gzip body not byte-exact");
    let r = c.get_with(&format!("/huge?n={n}"), "Accept-Encoding: zstd\r\n");
    assert_eq!(header(&r, "content-encoding"), Some("zstd"));
    assert!(unzstd(&r.2) == body, "20 MiB zstd body not byte-exact");
    let after = common::status_kib(worker, "VmHWM:");
    assert!(
        after.saturating_sub(before) < 3 * 1024,
        "worker peak RSS grew from {before} KiB to {after} KiB over two 20 MiB bodies"
    );
    assert!(
        during < before + 3 * 1024,
        "worker RSS {during} KiB (peak before {before} KiB) while the client read nothing"
    );
    assert_eq!(
        up.conns.load(Ordering::SeqCst),
        1,
        "the upstream connection was kept"
    );
}
