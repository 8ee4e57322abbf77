//! HTTPS end to end: the real luahttpd on TLS listeners, talked to by a rustls client. Every
//! certificate is made here with rcgen (ECDSA P-256); no private key is checked in.

mod admin_common;
mod common;
mod fcgi_common;

use common::{Server, TempDir};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, HandshakeKind, StreamOwned};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A certificate made for a test: PEM texts and the DER the server should present.
struct Made {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

fn make_cert(names: &[&str], expired: bool) -> Made {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("params");
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let cert = params.self_signed(&key).expect("self-signed");
    Made {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().to_vec(),
    }
}

fn write_cert(dir: &TempDir, stem: &str, m: &Made) {
    dir.write(&format!("{stem}.pem"), m.cert_pem.as_bytes());
    dir.write(&format!("{stem}.key"), m.key_pem.as_bytes());
}

/// Accepts any certificate (the tests compare the one served with the one expected) but
/// checks the handshake signatures, so the key really is the certificate's.
#[derive(Debug)]
struct AnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn client(versions: &[&'static rustls::SupportedProtocolVersion]) -> Arc<ClientConfig> {
    client_over(rustls::crypto::ring::default_provider(), versions)
}

/// A client of `versions` over `provider`, ALPN http/1.1, any certificate accepted.
fn client_over(
    provider: CryptoProvider,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let provider = Arc::new(provider);
    let mut c = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(c)
}

fn any_version() -> Arc<ClientConfig> {
    client(&[&rustls::version::TLS13, &rustls::version::TLS12])
}

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// A finished handshake to `addr`; `sni` None sends no server name (an IP is given instead).
fn handshake(addr: &str, sni: Option<&str>, cfg: &Arc<ClientConfig>) -> Result<Tls, String> {
    let name = match sni {
        Some(n) => ServerName::try_from(n.to_string()).map_err(|e| e.to_string())?,
        None => ServerName::try_from("127.0.0.1".to_string()).map_err(|e| e.to_string())?,
    };
    let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let conn = ClientConnection::new(cfg.clone(), name).map_err(|e| e.to_string())?;
    let mut s = StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).map_err(|e| e.to_string())?;
    }
    Ok(s)
}

struct Resp {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// Sends `request` (which should say Connection: close) and reads to the end.
fn exchange(s: &mut Tls, request: &str) -> Result<Resp, String> {
    s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    s.flush().map_err(|e| e.to_string())?;
    let mut all = Vec::new();
    match s.read_to_end(&mut all) {
        Ok(_) => {}
        // A close without close_notify after a whole response is still a whole response.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !all.is_empty() => {}
        Err(e) => return Err(format!("read: {e} after {} bytes", all.len())),
    }
    let end = common::find(&all, b"\r\n\r\n").ok_or("no head end")?;
    let head = String::from_utf8_lossy(&all[..end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no status")?;
    Ok(Resp {
        status,
        head,
        body: all[end + 4..].to_vec(),
    })
}

fn get(addr: &str, sni: Option<&str>, cfg: &Arc<ClientConfig>, target: &str) -> Resp {
    let mut s = handshake(addr, sni, cfg).expect("handshake");
    let req = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    exchange(&mut s, &req).expect("exchange")
}

/// Every address the server logged as listening, in config order.
fn addrs(s: &Server) -> Vec<String> {
    s.log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| {
            l.find("listening on ")
                .map(|i| l[i + 13..].trim().to_string())
        })
        .collect()
}

/// A site in a fresh directory: www/ with a few files and certificate "a" for localhost and
/// *.example.test, "b" for other.test.
fn site() -> (TempDir, Made, Made) {
    let dir = TempDir::new("tls");
    dir.write("www/index.html", b"hello over tls\n");
    dir.write("www/big.bin", &big());
    let a = make_cert(&["localhost", "*.example.test"], false);
    let b = make_cert(&["other.test"], false);
    write_cert(&dir, "a", &a);
    write_cert(&dir, "b", &b);
    (dir, a, b)
}

fn big() -> Vec<u8> {
    (0..1_300_000u32).map(|i| (i * 7 % 251) as u8).collect()
}

const TLS_BLOCK: &str = r#"tls = { certificates = { { cert = "a.pem", key = "a.key" }, { cert = "b.pem", key = "b.key" } } }"#;

fn start(extra: &str) -> (Server, Made, Made) {
    let (dir, a, b) = site();
    let config = format!(
        "server {{ listen = {{ {{ \"127.0.0.1:0\", tls = true }} }}, workers = 2, root = \"www\", \
         error_log = \"stderr\", {TLS_BLOCK}{extra} }}\n"
    );
    (Server::start_config(dir, &config), a, b)
}

#[test]
fn get_head_range_and_conditional_over_https() {
    let (s, _, _) = start("");
    let c = any_version();
    let r = get(&s.addr, Some("localhost"), &c, "/index.html");
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.body, b"hello over tls\n");
    let etag = r.header("etag").expect("etag");

    let mut t = handshake(&s.addr, Some("localhost"), &c).unwrap();
    let h = exchange(
        &mut t,
        "HEAD /index.html HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(h.status, 200);
    assert_eq!(h.header("content-length").as_deref(), Some("15"));
    assert!(h.body.is_empty());

    let mut t = handshake(&s.addr, Some("localhost"), &c).unwrap();
    let r = exchange(
        &mut t,
        "GET /big.bin HTTP/1.1\r\nHost: localhost\r\nRange: bytes=1000-1999\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 206, "{}", r.head);
    assert_eq!(r.body, &big()[1000..2000]);

    let mut t = handshake(&s.addr, Some("localhost"), &c).unwrap();
    let req = format!(
        "GET /index.html HTTP/1.1\r\nHost: localhost\r\nIf-None-Match: {etag}\r\nConnection: close\r\n\r\n"
    );
    let r = exchange(&mut t, &req).unwrap();
    assert_eq!(r.status, 304, "{}", r.head);

    // A file larger than any socket buffer arrives whole (read and encrypted in chunks).
    let r = get(&s.addr, Some("localhost"), &c, "/big.bin");
    assert_eq!(r.status, 200);
    assert!(r.body == big(), "big.bin differs ({} bytes)", r.body.len());
}

#[test]
fn keep_alive_requests_share_one_tls_connection() {
    let (s, _, _) = start("");
    let mut t = handshake(&s.addr, Some("localhost"), &any_version()).unwrap();
    assert_eq!(t.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    for i in 0..3 {
        t.write_all(b"GET /index.html HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while common::find(&got, b"hello over tls\n").is_none() {
            let n = t.read(&mut buf).unwrap();
            assert!(n > 0, "closed during request {i}");
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 200 "), "request {i}");
    }
}

#[test]
fn sni_chooses_the_certificate_by_its_names() {
    let (s, a, b) = start("");
    let c = any_version();
    let served = |sni: Option<&str>| {
        let t = handshake(&s.addr, sni, &c).unwrap();
        t.conn.peer_certificates().unwrap()[0].as_ref().to_vec()
    };
    assert!(served(Some("other.test")) == b.der, "other.test → b");
    assert!(served(Some("localhost")) == a.der, "localhost → a");
    assert!(served(Some("www.example.test")) == a.der, "wildcard → a");
    assert!(
        served(Some("unknown.test")) == a.der,
        "unknown name → default"
    );
    assert!(served(None) == a.der, "no SNI → default");
}

#[test]
fn tls_1_2_and_1_3_and_min_version() {
    let (s, _, _) = start("");
    let t12 = handshake(
        &s.addr,
        Some("localhost"),
        &client(&[&rustls::version::TLS12]),
    )
    .unwrap();
    assert_eq!(
        t12.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let t13 = handshake(
        &s.addr,
        Some("localhost"),
        &client(&[&rustls::version::TLS13]),
    )
    .unwrap();
    assert_eq!(
        t13.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    drop(s);

    let (dir, _, _) = site();
    let config = "server { listen = { { \"127.0.0.1:0\", tls = true } }, root = \"www\", \
         error_log = \"stderr\", tls = { min_version = \"1.3\", certificates = { { cert = \"a.pem\", key = \"a.key\" } } } }\n";
    let s = Server::start_config(dir, config);
    let e = handshake(
        &s.addr,
        Some("localhost"),
        &client(&[&rustls::version::TLS12]),
    );
    assert!(e.is_err(), "a TLS 1.2 client got through min_version 1.3");
    assert!(handshake(
        &s.addr,
        Some("localhost"),
        &client(&[&rustls::version::TLS13])
    )
    .is_ok());
}

#[test]
fn sessions_resume_with_tickets_on_any_worker() {
    let (s, _, _) = start("");
    for versions in [
        &[&rustls::version::TLS13][..],
        &[&rustls::version::TLS12][..],
    ] {
        let c = client(versions);
        // The first connection is full; it brings the tickets (read with the response).
        let mut t = handshake(&s.addr, Some("localhost"), &c).unwrap();
        assert_eq!(t.conn.handshake_kind(), Some(HandshakeKind::Full));
        exchange(
            &mut t,
            "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        // The next ones resume, whichever of the two workers takes them.
        for i in 0..6 {
            let mut t = handshake(&s.addr, Some("localhost"), &c).unwrap();
            assert_eq!(
                t.conn.handshake_kind(),
                Some(HandshakeKind::Resumed),
                "connection {i} ({:?}) was not resumed",
                t.conn.protocol_version()
            );
            let r = exchange(
                &mut t,
                "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
            )
            .unwrap();
            assert_eq!(r.status, 200);
        }
    }
}

#[test]
fn plain_http_on_the_tls_port_gets_nginx_400_and_close() {
    let (s, _, _) = start("");
    let mut c = TcpStream::connect(&s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut all = Vec::new();
    c.read_to_end(&mut all).unwrap();
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
    assert!(
        text.contains("The plain HTTP request was sent to HTTPS port"),
        "{text}"
    );
    assert!(text.contains("Connection: close\r\n"), "{text}");
}

#[test]
fn a_stalled_handshake_is_cut_by_timeouts_handshake() {
    let (s, _, _) = start(", timeouts = { handshake = 1, read_idle = 30 }");
    // Nothing sent at all, and half a ClientHello: both are cut after about one second.
    for first in [
        &b""[..],
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
    ] {
        let mut c = TcpStream::connect(&s.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(first).unwrap();
        let t = Instant::now();
        let mut buf = [0u8; 64];
        let n = c.read(&mut buf).unwrap_or(0);
        let took = t.elapsed();
        assert_eq!(n, 0, "expected a close");
        assert!(
            took >= Duration::from_millis(700) && took < Duration::from_secs(4),
            "closed after {took:?}"
        );
    }
    // A finished handshake is then under read_idle (30 s), not the handshake timeout.
    let mut t = handshake(&s.addr, Some("localhost"), &any_version()).unwrap();
    std::thread::sleep(Duration::from_millis(1600));
    let r = exchange(
        &mut t,
        "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn a_bad_client_hello_closes_at_once_and_logs_nothing_above_debug() {
    let (s, _, _) = start("");
    for garbage in [
        &b"\x16\x03\x01\x00\x05hello"[..],
        &b"\x01\x02\x03\x04 not tls at all"[..],
    ] {
        let mut c = TcpStream::connect(&s.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(garbage).unwrap();
        let t = Instant::now();
        let mut all = Vec::new();
        let _ = c.read_to_end(&mut all);
        assert!(t.elapsed() < Duration::from_secs(2), "not closed at once");
        // At most a TLS alert record, never an HTTP answer.
        assert!(all.is_empty() || all[0] == 0x15, "{all:?}");
    }
    // The server still serves, and said nothing about the garbage.
    assert_eq!(
        get(&s.addr, Some("localhost"), &any_version(), "/").status,
        200
    );
    let log = s.log_text();
    assert!(!log.contains("ERROR"), "{log}");
    assert!(!log.contains("TLS connection refused"), "{log}");
}

#[test]
fn redirect_to_https_and_req_scheme() {
    let (dir, _, _) = site();
    let config = format!(
        "server {{ listen = {{ {{ \"127.0.0.1:0\", redirect_to_https = true }}, {{ \"127.0.0.2:0\", tls = true }} }}, \
         root = \"www\", error_log = \"stderr\", {TLS_BLOCK} }}\n\
         route(function(req) if req.path == \"/scheme\" then return respond(200, req.scheme) end end)\n"
    );
    let s = Server::start_config(dir, &config);
    // The log reader thread may still be on its way to the second "listening on" line.
    common::wait_for("both listeners logged", Duration::from_secs(10), || {
        addrs(&s).len() == 2
    });
    let a = addrs(&s);
    let tls_port = a[1].rsplit(':').next().unwrap().to_string();
    let r = common::raw(
        &a[0],
        b"GET /some/path?x=1 HTTP/1.1\r\nHost: site.test:8080\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location"),
        Some(format!("https://site.test:{tls_port}/some/path?x=1").as_str())
    );
    let r = get(&a[1], Some("localhost"), &any_version(), "/scheme");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"https");
}

#[test]
fn fastcgi_sees_https_on_and_the_tls_port() {
    let dir = fcgi_common::site_dir();
    let a = make_cert(&["localhost"], false);
    write_cert(&dir, "a", &a);
    let extra = r#"listen = { { "127.0.0.1:0", tls = true } }, tls = { certificates = { { cert = "a.pem", key = "a.key" } } }"#;
    let o = fcgi_common::Opts {
        server_extra: extra,
        ..Default::default()
    };
    let config = fcgi_common::config_text(dir.path(), &o);
    let f = fcgi_common::Fcgi::start_in(dir, &config);
    let r = get(
        f.addr(),
        Some("localhost"),
        &any_version(),
        "/t.php?mode=params",
    );
    assert_eq!(r.status, 200, "{}", r.head);
    let body = if r
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        dechunk(&r.body)
    } else {
        r.body.clone()
    };
    let p: serde_json::Value = serde_json::from_slice(&body).expect("json params");
    let port = f.addr().rsplit(':').next().unwrap();
    assert_eq!(p["HTTPS"], "on", "{p}");
    assert_eq!(p["REQUEST_SCHEME"], "https", "{p}");
    assert_eq!(p["SERVER_PORT"], port, "{p}");
}

#[test]
fn certificates_swap_by_reload_under_load_with_no_failed_request() {
    let (s, a, _) = start("");
    let addr = s.addr.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut loops = Vec::new();
    for _ in 0..2 {
        let (addr, stop, ok, failures) = (addr.clone(), stop.clone(), ok.clone(), failures.clone());
        loops.push(std::thread::spawn(move || {
            let c = any_version();
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                let r = handshake(&addr, Some("localhost"), &c).and_then(|mut t| {
                    exchange(
                        &mut t,
                        "GET /index.html HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                    )
                });
                match r {
                    Ok(r) if r.status == 200 && r.body == b"hello over tls\n" => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => failures
                        .lock()
                        .unwrap()
                        .push(format!("status {}", r.status)),
                    Err(e) => failures.lock().unwrap().push(e),
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(300));
    // New files under the same names, config text unchanged.
    let fresh = make_cert(&["localhost", "*.example.test"], false);
    write_cert(&s.dir, "a", &fresh);
    s.signal(libc::SIGUSR1);
    let c = any_version();
    common::wait_for("the new certificate", Duration::from_secs(20), || {
        let t = handshake(&addr, Some("localhost"), &c).unwrap();
        t.conn.peer_certificates().unwrap()[0].as_ref() == fresh.der.as_slice()
    });
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    for l in loops {
        l.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert!(ok.load(Ordering::SeqCst) > 10, "too few requests ran");
    assert!(a.der != fresh.der);
    assert!(
        s.log_text().contains("generation 2 runs"),
        "{}",
        s.log_text()
    );
}

#[test]
fn a_bad_certificate_makes_the_reload_fail_and_the_old_one_serves_on() {
    let (s, a, _) = start("");
    let other = make_cert(&["localhost"], false);
    // The key of another certificate: a mismatch.
    s.dir.write("a.key", other.key_pem.as_bytes());
    s.signal(libc::SIGUSR1);
    common::wait_for("reload failed", Duration::from_secs(20), || {
        s.log_text().contains("reload failed")
    });
    let log = s.log_text();
    assert!(
        log.contains("a.key") && log.contains("does not belong"),
        "{log}"
    );
    let t = handshake(&s.addr, Some("localhost"), &any_version()).unwrap();
    assert!(t.conn.peer_certificates().unwrap()[0].as_ref() == a.der.as_slice());
}

fn check(dir: &TempDir, certs: &str) -> (bool, String) {
    let conf = dir.write(
        "site.lua",
        format!(
            "server {{\n  listen = {{ {{ \"127.0.0.1:0\", tls = true }} }},\n  root = \"www\",\n  tls = {{ certificates = {{\n    {certs}\n  }} }},\n}}\n"
        )
        .as_bytes(),
    );
    let out = Command::new(common::bin())
        .arg("-t")
        .arg("-c")
        .arg(&conf)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn check_reports_missing_mismatched_expired_and_soon_expiring_certificates() {
    let (dir, _, b) = site();
    let (ok, text) = check(&dir, r#"{ cert = "a.pem", key = "a.key" },"#);
    assert!(ok, "{text}");
    assert!(text.contains("Syntax OK"), "{text}");

    let (ok, text) = check(&dir, r#"{ cert = "missing.pem", key = "a.key" },"#);
    assert!(!ok);
    assert!(
        text.contains("site.lua:5:") && text.contains("missing.pem"),
        "{text}"
    );

    dir.write("wrong.key", b.key_pem.as_bytes());
    let (ok, text) = check(&dir, r#"{ cert = "a.pem", key = "wrong.key" },"#);
    assert!(!ok);
    assert!(
        text.contains("site.lua:5:") && text.contains("does not belong"),
        "{text}"
    );

    write_cert(&dir, "old", &make_cert(&["localhost"], true));
    let (ok, text) = check(&dir, r#"{ cert = "old.pem", key = "old.key" },"#);
    assert!(!ok);
    assert!(
        text.contains("expired on") && text.contains("2021"),
        "{text}"
    );

    let (ok, text) = check(
        &dir,
        r#"{ cert = "a.pem", key = "a.key", names = { "nothere.test" } },"#,
    );
    assert!(!ok);
    assert!(
        text.contains("does not cover the name 'nothere.test'"),
        "{text}"
    );

    // Ending within 14 days: a warning with the date, not an error.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let soon = time_in_days(5);
    params.not_after = rcgen::date_time_ymd(soon.0, soon.1, soon.2);
    let cert = params.self_signed(&key).unwrap();
    dir.write("soon.pem", cert.pem().as_bytes());
    dir.write("soon.key", key.serialize_pem().as_bytes());
    let (ok, text) = check(&dir, r#"{ cert = "soon.pem", key = "soon.key" },"#);
    assert!(ok, "{text}");
    assert!(
        text.contains("site.lua:5: warning: certificate") && text.contains("expires in"),
        "{text}"
    );
}

/// (year, month, day) of today + `days`, from the system clock (civil-from-days).
fn time_in_days(days: i64) -> (i32, u8, u8) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let z = secs / 86_400 + days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = (yoe + era * 400 + i64::from(m <= 2)) as i32;
    (y, m, d)
}

/// A whole chunked body decoded (no extensions or trailers: the server sends none).
fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = common::find(b, b"\r\n").expect("chunk size line");
        let size_text = String::from_utf8_lossy(&b[..line_end]).into_owned();
        let size = usize::from_str_radix(size_text.trim(), 16).expect("chunk size");
        b = &b[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

#[test]
fn certificates_lists_names_issuer_and_expiry_and_follows_a_reload() {
    let (dir, _, _) = site();
    let config = format!(
        "server {{ listen = {{ {{ \"127.0.0.1:0\", tls = true }} }}, root = \"www\", \
         error_log = \"stderr\", admin = \"admin.sock\", {TLS_BLOCK} }}\n"
    );
    let s = Server::start_config(dir, &config);
    let sock = s.dir.path().join("admin.sock");
    let rows = admin_common::eval_ok(&sock, "certificates()");
    let rows = rows.as_array().expect("rows");
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0]["default"], true);
    assert_eq!(
        rows[0]["names"],
        serde_json::json!(["localhost", "*.example.test"])
    );
    assert_eq!(rows[1]["names"], serde_json::json!(["other.test"]));
    assert!(rows[0]["cert"].as_str().unwrap().ends_with("/a.pem"));
    // rcgen's default subject and issuer: "CN=rcgen self signed cert".
    assert!(
        rows[0]["issuer"].as_str().unwrap().contains("rcgen"),
        "{rows:?}"
    );
    assert!(rows[0]["expires"].as_str().unwrap().ends_with("GMT"));
    assert!(rows[0]["days_left"].as_i64().unwrap() > 300, "{rows:?}");

    // Same config text, a certificate ending in 5 days: reload() picks it up.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["soon.test".to_string()]).unwrap();
    let soon = time_in_days(5);
    params.not_after = rcgen::date_time_ymd(soon.0, soon.1, soon.2);
    let cert = params.self_signed(&key).unwrap();
    s.dir.write("b.pem", cert.pem().as_bytes());
    s.dir.write("b.key", key.serialize_pem().as_bytes());
    admin_common::eval_ok(&sock, "reload()");
    let rows = admin_common::eval_ok(&sock, "certificates()");
    assert_eq!(rows[1]["names"], serde_json::json!(["soon.test"]), "{rows}");
    let left = rows[1]["days_left"].as_i64().unwrap();
    assert!((3..=5).contains(&left), "{rows}");
    let t = handshake(&s.addr, Some("soon.test"), &any_version()).unwrap();
    assert!(t.conn.peer_certificates().unwrap()[0].as_ref() == cert.der().as_ref());
}

/// A client offering only `suite` (of the `version` it belongs to).
fn client_with_suite(
    version: &'static rustls::SupportedProtocolVersion,
    suite: rustls::CipherSuite,
) -> Arc<ClientConfig> {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites.retain(|s| s.suite() == suite);
    client_over(p, &[version])
}

/// One response with a Content-Length body from a keep-alive connection; `pending` holds what
/// was read past it (the next pipelined response's start).
fn read_response(t: &mut Tls, pending: &mut Vec<u8>) -> (String, Vec<u8>) {
    let mut buf = [0u8; 16384];
    let end = loop {
        if let Some(i) = common::find(pending, b"\r\n\r\n") {
            break i;
        }
        let n = t.read(&mut buf).expect("read a head");
        assert!(n > 0, "closed before a head");
        pending.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&pending[..end]).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("a Content-Length");
    while pending.len() < end + 4 + len {
        let n = t.read(&mut buf).expect("read a body");
        assert!(n > 0, "closed inside a body");
        pending.extend_from_slice(&buf[..n]);
    }
    let body = pending[end + 4..end + 4 + len].to_vec();
    pending.drain(..end + 4 + len);
    (head, body)
}

/// What `ss` says of the established connections to local port `port` (its `tcp-ulp-tls`
/// part names kTLS sockets with their version and cipher).
fn ss_for_port(port: &str) -> String {
    let out = Command::new("ss")
        .args([
            "-tni",
            "state",
            "established",
            &format!("( sport = :{port} )"),
        ])
        .output()
        .expect("ss (iproute2) is needed for the kTLS test");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Issue 11, kTLS: where the kernel has the tls ULP, every suite it takes moves to the kernel
/// after the handshake (seen by `ss` on the connection), static files of every size come out
/// byte-exact over keep-alive (sendfile for the body), an uploaded body comes in whole (the
/// kernel decrypting) and goes back out, a close ends in a clean close_notify, and
/// `tls.ktls = false` keeps connections in user space. Where the kernel has no tls ULP
/// (this project's own CI machine), it is skipped, loudly, and the start-up line says so.
#[test]
fn ktls_takes_each_suite_after_the_handshake_and_serves_files_byte_exact() {
    let (dir, _, _) = site();
    let config = format!(
        "server {{ listen = {{ {{ \"127.0.0.1:0\", tls = true }} }}, workers = 2, root = \"www\", \
         error_log = \"stderr\", {TLS_BLOCK} }}\n\
         route(function(req) if req.path == \"/echo\" then return respond(200, req:body()) end end)\n"
    );
    let s = Server::start_config(dir, &config);
    common::wait_for("the kTLS line", Duration::from_secs(5), || {
        s.log_text().contains("kTLS: ")
    });
    if !luahttpd::tls::ktls::available() {
        eprintln!(
            "SKIPPED (kTLS): this kernel has no tls ULP (TCP_ULP \"tls\" does not attach); \
             only the user-space path (tested above with big.bin) can run here"
        );
        assert!(s.log_text().contains("kTLS: the kernel has no tls ULP"));
        return;
    }
    assert!(s.log_text().contains("kTLS: on"), "{}", s.log_text());
    let port = s.addr.rsplit(':').next().unwrap().to_string();
    let big = big();
    use rustls::version::{TLS12, TLS13};
    use rustls::CipherSuite as S;
    for (version, suite, kernel_name) in [
        // ss (iproute2 6.1) names the AES ciphers, not ChaCha20.
        (
            &TLS13,
            S::TLS13_AES_128_GCM_SHA256,
            "version: 1.3 cipher: aes-gcm-128",
        ),
        (
            &TLS13,
            S::TLS13_AES_256_GCM_SHA384,
            "version: 1.3 cipher: aes-gcm-256",
        ),
        (&TLS13, S::TLS13_CHACHA20_POLY1305_SHA256, "version: 1.3"),
        (
            &TLS12,
            S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            "version: 1.2 cipher: aes-gcm-128",
        ),
        (
            &TLS12,
            S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            "version: 1.2 cipher: aes-gcm-256",
        ),
        (
            &TLS12,
            S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            "version: 1.2",
        ),
    ] {
        let what = format!("{suite:?}");
        let mut t = handshake(
            &s.addr,
            Some("localhost"),
            &client_with_suite(version, suite),
        )
        .unwrap_or_else(|e| panic!("{what}: {e}"));
        // Keep-alive: a big file, a range of it and a small file, pipelined in one write.
        t.write_all(
            b"GET /big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n\
              GET /big.bin HTTP/1.1\r\nHost: localhost\r\nRange: bytes=1000-1999\r\n\r\n\
              GET /index.html HTTP/1.1\r\nHost: localhost\r\n\r\n",
        )
        .unwrap();
        let mut pending = Vec::new();
        for (status, body) in [
            (200, &big[..]),
            (206, &big[1000..2000]),
            (200, &b"hello over tls\n"[..]),
        ] {
            let (head, got) = read_response(&mut t, &mut pending);
            assert!(
                head.starts_with(&format!("HTTP/1.1 {status} ")),
                "{what}: {head}"
            );
            assert!(
                got == body,
                "{what}: the body differs ({} bytes)",
                got.len()
            );
        }
        let upload: Vec<u8> = (0..600_000u32).map(|i| (i * 13 % 256) as u8).collect();
        t.write_all(
            format!(
                "POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
                upload.len()
            )
            .as_bytes(),
        )
        .unwrap();
        t.write_all(&upload).unwrap();
        let (head, got) = read_response(&mut t, &mut pending);
        assert!(head.starts_with("HTTP/1.1 200 "), "{what}: {head}");
        assert!(got == upload, "{what}: the echoed upload differs");
        let ss = ss_for_port(&port);
        assert!(
            ss.contains(&format!("tcp-ulp-tls {kernel_name}")),
            "{what}: the connection is not in the kernel: {ss}"
        );
        // A close after the response: close_notify from the kernel, a clean end.
        let r = exchange(
            &mut t,
            "GET /index.html HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )
        .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(r.status, 200, "{what}");
        assert_eq!(r.body, b"hello over tls\n", "{what}");
    }
    // Resumption still works: tickets are sent before the keys leave rustls.
    let c = client(&[&TLS13]);
    // Reading the response reads the tickets that came before it.
    assert_eq!(
        get(&s.addr, Some("localhost"), &c, "/index.html").status,
        200
    );
    let mut t = handshake(&s.addr, Some("localhost"), &c).unwrap();
    assert_eq!(t.conn.handshake_kind(), Some(HandshakeKind::Resumed));
    let r = exchange(
        &mut t,
        "GET /index.html HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    drop(s);

    // tls.ktls = false: the same requests, and no socket of the server in the kernel.
    let (dir, _, _) = site();
    let config = format!(
        "server {{ listen = {{ {{ \"127.0.0.1:0\", tls = true }} }}, workers = 1, root = \"www\", \
         error_log = \"stderr\", {} }}\n",
        TLS_BLOCK.replace("} } }", "} }, ktls = false }")
    );
    let s = Server::start_config(dir, &config);
    common::wait_for("the kTLS line", Duration::from_secs(5), || {
        s.log_text().contains("kTLS: off (tls.ktls = false)")
    });
    let port = s.addr.rsplit(':').next().unwrap().to_string();
    let mut t = handshake(&s.addr, Some("localhost"), &any_version()).unwrap();
    t.write_all(b"GET /big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let (head, got) = read_response(&mut t, &mut Vec::new());
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(got == big, "the body differs");
    let ss = ss_for_port(&port);
    assert!(ss.contains(&port), "ss did not see the connection: {ss}");
    assert!(!ss.contains("tcp-ulp-tls"), "ktls = false, yet: {ss}");
}

#[test]
fn a_ticket_from_one_worker_resumes_on_the_other() {
    // One connection per worker: while the first is held, the second must go to the other
    // worker (a full worker stops accepting), and both resume the first connection's tickets.
    let (s, _, _) = start(", limits = { connections = 1 }");
    for versions in [
        &[&rustls::version::TLS13][..],
        &[&rustls::version::TLS12][..],
    ] {
        let c = client(versions);
        let mut first = handshake(&s.addr, Some("localhost"), &c).unwrap();
        exchange(
            &mut first,
            "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        drop(first);
        // Give the worker a moment to close it, so its slot is free again.
        std::thread::sleep(Duration::from_millis(200));
        let mut held = Vec::new();
        for i in 0..2 {
            let mut t = handshake(&s.addr, Some("localhost"), &c)
                .unwrap_or_else(|e| panic!("connection {i}: {e}"));
            assert_eq!(
                t.conn.handshake_kind(),
                Some(HandshakeKind::Resumed),
                "connection {i} ({:?}) was not resumed",
                t.conn.protocol_version()
            );
            // A request proves a worker took it (not just the listen queue).
            t.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .unwrap();
            let mut buf = [0u8; 512];
            let n = t.read(&mut buf).unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200 "), "connection {i}");
            held.push(t);
        }
        drop(held);
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Review items 2 and 4: over TLS a CGI script gets HTTPS=on, and the respond hook's
/// `req.scheme` is "https" for static and CGI responses alike.
#[test]
fn cgi_gets_https_on_and_the_respond_hook_sees_https() {
    let (dir, _, _) = site();
    dir.write(
        "cgi-bin/env.sh",
        b"#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\nContent-Length: 15\\r\\n\\r\\n'\nprintf 'https=%-8s\\n' \"$HTTPS\"\n",
    );
    let config = format!(
        "server {{ listen = {{ {{ \"127.0.0.1:0\", tls = true }} }}, workers = 1, root = \"www\", \
         error_log = \"stderr\", {TLS_BLOCK} }}\n\
         cgi {{ prefix = \"/cgi-bin/\", root = \"cgi-bin\", interpreters = {{ [\".sh\"] = \"/bin/sh\" }} }}\n\
         respond_hook(function(req, res) res.headers[\"X-Scheme\"] = req.scheme end)\n"
    );
    let s = Server::start_config(dir, &config);
    let r = get(&s.addr, Some("localhost"), &any_version(), "/index.html");
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.header("x-scheme").as_deref(), Some("https"));
    let r = get(
        &s.addr,
        Some("localhost"),
        &any_version(),
        "/cgi-bin/env.sh",
    );
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.header("x-scheme").as_deref(), Some("https"));
    assert_eq!(String::from_utf8_lossy(&r.body), "https=on      \n");
}

/// Review item 7: `$tls_version` in the access log names the connection's version (nginx's
/// `$ssl_protocol` spelling).
#[test]
fn the_access_log_names_the_tls_version() {
    let (s, _, _) =
        start(r#", access_log = "access.log", access_log_format = "$request_uri $tls_version""#);
    let r = get(
        &s.addr,
        Some("localhost"),
        &client(&[&rustls::version::TLS12]),
        "/index.html?v12",
    );
    assert_eq!(r.status, 200, "{}", r.head);
    let r = get(
        &s.addr,
        Some("localhost"),
        &client(&[&rustls::version::TLS13]),
        "/index.html?v13",
    );
    assert_eq!(r.status, 200, "{}", r.head);
    let log = s.dir.path().join("access.log");
    common::wait_for("both lines logged", Duration::from_secs(5), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines().any(|l| l == "/index.html?v12 TLSv1.2")
            && text.lines().any(|l| l == "/index.html?v13 TLSv1.3")
    });
}

/// A handshake after a PROXY v1 header sent in clear: in its own segment, or in one segment
/// with the ClientHello (`together`), as load balancers send it.
fn handshake_after_proxy_header(addr: &str, header: &[u8], together: bool) -> Result<Tls, String> {
    let name = ServerName::try_from("localhost".to_string()).map_err(|e| e.to_string())?;
    let mut tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).ok();
    tcp.set_nodelay(true).ok();
    let mut conn = ClientConnection::new(any_version(), name).map_err(|e| e.to_string())?;
    if together {
        let mut first = header.to_vec();
        conn.write_tls(&mut first).map_err(|e| e.to_string())?;
        tcp.write_all(&first).map_err(|e| e.to_string())?;
    } else {
        tcp.write_all(header).map_err(|e| e.to_string())?;
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut s = StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).map_err(|e| e.to_string())?;
    }
    Ok(s)
}

/// Review item 1: a `tls = true, proxy_protocol = true` listener reads the PROXY header in
/// clear before the ClientHello, then serves HTTPS with the header's client as the real one.
#[test]
fn a_proxied_tls_listener_reads_the_proxy_header_before_the_handshake() {
    let (dir, _, _) = site();
    let config = format!(
        "server {{ listen = {{ \"127.0.0.1:0\", {{ \"127.0.0.2:0\", tls = true, proxy_protocol = true }} }}, workers = 1, \
         root = \"www\", error_log = \"stderr\", {TLS_BLOCK} }}\n\
         route(function(req) if req.path == \"/who\" then return respond(200, req.remote_addr .. \" \" .. req.scheme) end end)\n"
    );
    let s = Server::start_config(dir, &config);
    // The server is known ready on the plain listener; the log may still be on its way to
    // the second "listening on" line.
    common::wait_for("both listeners logged", Duration::from_secs(10), || {
        addrs(&s).len() == 2
    });
    let addr = addrs(&s)[1].clone();
    let header = b"PROXY TCP4 192.0.2.1 127.0.0.2 5555 443\r\n";
    for together in [false, true] {
        let mut t = handshake_after_proxy_header(&addr, header, together)
            .unwrap_or_else(|e| panic!("handshake (together: {together}): {e}"));
        let r = exchange(
            &mut t,
            "GET /who HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )
        .expect("exchange");
        assert_eq!(r.status, 200, "{}", r.head);
        assert_eq!(r.body, b"192.0.2.1 https", "together: {together}");
    }
    // No header: the connection is refused, never served.
    assert!(handshake(&s.addr, Some("localhost"), &any_version())
        .and_then(|mut t| exchange(
            &mut t,
            "GET /who HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        ))
        .is_err());
}

/// Issue 11, access lines: a plain HTTP request on the TLS port gets its access line as nginx
/// writes it (status 400, the request line, the size of the 400 page, the user agent); a head
/// that does not parse is logged by its first line; a failed handshake gets no access line,
/// and nothing above debug in the error log. (The harness's readiness probe is a plain
/// `GET / HTTP/1.1` too, so it has a line of its own.)
#[test]
fn plain_http_on_the_tls_port_is_logged_and_a_failed_handshake_is_not() {
    let (s, _, _) = start(r#", access_log = "access.log""#);
    let log = s.dir.path().join("access.log");
    let lines = || -> Vec<String> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    };
    let line_with = |what: &str| -> String {
        let t = Instant::now();
        loop {
            if let Some(l) = lines().into_iter().find(|l| l.contains(what)) {
                return l;
            }
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "no access line with {what}: {:?}",
                lines()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let plain = |bytes: &[u8]| {
        let mut c = TcpStream::connect(&s.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(bytes).unwrap();
        let mut all = Vec::new();
        c.read_to_end(&mut all).unwrap();
        let text = String::from_utf8_lossy(&all).into_owned();
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
        let (_, body) = text.split_once("\r\n\r\n").expect("a head end");
        body.len()
    };
    let page = plain(b"GET /plain?q=1 HTTP/1.1\r\nHost: localhost\r\nUser-Agent: probe/1\r\n\r\n");
    let line = line_with("/plain?q=1");
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(
        line.contains(&format!(
            "\"GET /plain?q=1 HTTP/1.1\" 400 {page} \"-\" \"probe/1\""
        )),
        "{line}"
    );
    plain(b"GARBAGE /x HTTP/9\x01\r\n\r\n");
    let line = line_with("GARBAGE");
    assert!(line.contains("\"GARBAGE /x HTTP/9\\x01\" 400 "), "{line}");

    let before = s.log_text().len();
    for garbage in [
        &b"\x16\x03\x01\x00\x05hello"[..],
        &b"\x01\x02\x03\x04 not tls at all"[..],
    ] {
        let mut c = TcpStream::connect(&s.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(garbage).unwrap();
        let _ = c.read_to_end(&mut Vec::new());
    }
    let r = get(&s.addr, Some("localhost"), &any_version(), "/index.html");
    assert_eq!(r.status, 200);
    line_with("\"GET /index.html HTTP/1.1\" 200 ");
    // The probe, the two plain requests and the good one: nothing for the failed handshakes.
    let all = lines();
    let probes = all
        .iter()
        .filter(|l| l.contains("\"GET / HTTP/1.1\" 400 "))
        .count();
    assert_eq!(all.len(), probes + 3, "{all:?}");
    let after = s.log_text();
    let after = after.get(before..).unwrap_or("");
    for level in [" INFO ", " WARN ", " ERROR "] {
        assert!(!after.contains(level), "logged above debug: {after}");
    }
}

/// Issue 11: `max_version`, `ciphers` and `prefer_server_ciphers` reach the handshake. The
/// rustls client lists AES-128-GCM before ChaCha20, so only the server's order picks ChaCha20.
#[test]
fn max_version_and_the_server_s_cipher_order_are_what_the_client_gets() {
    let (dir, _, _) = site();
    let config = "server { listen = { { \"127.0.0.1:0\", tls = true } }, root = \"www\", \
         error_log = \"stderr\", tls = { certificates = { { cert = \"a.pem\", key = \"a.key\" } }, \
         max_version = \"1.2\", prefer_server_ciphers = true, \
         ciphers = \"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256\" } }\n";
    let s = Server::start_config(dir, config);
    let e = handshake(
        &s.addr,
        Some("localhost"),
        &client(&[&rustls::version::TLS13]),
    );
    assert!(
        e.is_err(),
        "a TLS 1.3-only client got through max_version 1.2"
    );
    let t = handshake(&s.addr, Some("localhost"), &any_version()).unwrap();
    assert_eq!(
        t.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert_eq!(
        t.conn.negotiated_cipher_suite().map(|c| c.suite()),
        Some(rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256)
    );
}

/// Issue 15: examples/appliance-tls.lua, the appliance with CGI and Basic auth over HTTPS, runs
/// as shipped with a certificate made here: the plain port redirects, the TLS port asks for
/// the user, then runs the script with it.
#[test]
fn the_appliance_tls_example_runs_its_scripts_behind_basic_auth_over_https() {
    let dir = TempDir::new("tls-appliance");
    let ex = common::copy_appliance_files(&dir);
    write_cert(&dir, "tls/appliance", &make_cert(&["localhost"], false));
    let config = std::fs::read_to_string(format!("{ex}/appliance-tls.lua")).expect("example");
    let s = Server::start_with(dir, &config, |cmd| {
        // Two different addresses: the config refuses the same `IP:0` twice.
        cmd.env("LISTEN", "127.0.0.1:0")
            .env("LISTEN_TLS", "127.0.0.2:0");
    });
    common::wait_for("both listeners logged", Duration::from_secs(10), || {
        addrs(&s).len() == 2
    });
    let a = addrs(&s);
    let tls_port = a[1].rsplit(':').next().unwrap().to_string();

    // Plain HTTP: a redirect before auth, never the script (nor a 401 that would invite a
    // password in clear).
    let r = common::raw(
        &a[0],
        b"GET /cgi-bin/status.sh?x=1 HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic YWRtaW46YWRtaW4=\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location"),
        Some(format!("https://localhost:{tls_port}/cgi-bin/status.sh?x=1").as_str())
    );
    assert!(!r.text().contains("user:"), "{}", r.text());

    let c = any_version();
    let r = get(&a[1], Some("localhost"), &c, "/cgi-bin/status.sh");
    assert_eq!(r.status, 401, "{}", r.head);
    assert_eq!(
        r.header("www-authenticate").as_deref(),
        Some("Basic realm=\"Appliance\", charset=\"UTF-8\"")
    );
    // A wrong password is refused too.
    let mut t = handshake(&a[1], Some("localhost"), &c).expect("handshake");
    let r = exchange(
        &mut t,
        "GET /cgi-bin/status.sh HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic YWRtaW46bm9wZQ==\r\nConnection: close\r\n\r\n",
    )
    .expect("exchange");
    assert_eq!(r.status, 401);
    // admin:admin, with a body.
    let mut t = handshake(&a[1], Some("localhost"), &c).expect("handshake");
    let r = exchange(
        &mut t,
        "POST /cgi-bin/status.sh?x=1 HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic YWRtaW46YWRtaW4=\r\n\
         Content-Length: 2\r\nConnection: close\r\n\r\nhi",
    )
    .expect("exchange");
    assert_eq!(r.status, 200, "{}\n{}", r.head, s.log_text());
    let text = String::from_utf8_lossy(&dechunk(&r.body)).into_owned();
    assert!(text.contains("user:    admin\n"), "{text}");
    assert!(text.contains("method:  POST\n"), "{text}");
    assert!(text.contains("query:   x=1\n"), "{text}");
    assert!(text.contains("body:    hi\n"), "{text}");
    // The static pages need no user.
    let r = get(&a[1], Some("localhost"), &c, "/");
    assert_eq!(r.status, 200, "{}", r.head);
}

/// `tls.ktls` is a boolean, checked by `-t` at its line like every key.
#[test]
fn tls_ktls_must_be_a_boolean() {
    let (dir, _, _) = site();
    for (value, ok) in [("\"yes\"", false), ("false", true), ("true", true)] {
        let conf = dir.write(
            "site.lua",
            format!(
                "server {{\n  listen = {{ {{ \"127.0.0.1:0\", tls = true }} }},\n  root = \"www\",\n  \
                 tls = {{ certificates = {{ {{ cert = \"a.pem\", key = \"a.key\" }} }},\n    \
                 ktls = {value} }},\n}}\n"
            )
            .as_bytes(),
        );
        let out = Command::new(common::bin())
            .args(["-t", "-c"])
            .arg(&conf)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.success(), ok, "ktls = {value}: {text}");
        if !ok {
            assert!(
                text.contains("site.lua:5") && text.contains("ktls"),
                "{text}"
            );
        }
    }
}
