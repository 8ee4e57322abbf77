//! Config tests of HTTPS: listen tables, `tls = {...}`, `timeouts.handshake`.

use super::{errors, load_ok, TempDir};
use crate::config::ListenKind;
use std::time::Duration;

fn write_cert(dir: &TempDir, stem: &str, names: &[&str]) {
    let key = rcgen::KeyPair::generate().expect("key");
    let params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("params");
    let cert = params.self_signed(&key).expect("cert");
    dir.write(&format!("{stem}.pem"), &cert.pem());
    dir.write(&format!("{stem}.key"), &key.serialize_pem());
}

#[test]
fn listen_tables_set_what_each_listener_speaks() {
    let dir = TempDir::new();
    write_cert(&dir, "a", &["a.test"]);
    let l = load_ok(
        &dir,
        r#"server {
  root = "www",
  listen = { "127.0.0.1:8080", { "127.0.0.1:8443", tls = true }, { "127.0.0.1:8081", redirect_to_https = true } },
  tls = { certificates = { { cert = "a.pem", key = "a.key" } }, min_version = "1.3" },
  timeouts = { handshake = 3 },
}"#,
    );
    let c = &l.config;
    assert_eq!(c.listen.len(), 3);
    assert_eq!(
        c.tls.listen,
        [
            ListenKind::Plain,
            ListenKind::Tls,
            ListenKind::RedirectToHttps
        ]
    );
    assert_eq!(c.tls.min_version, crate::tls::MinVersion::Tls13);
    assert!(c.tls.server.is_some());
    assert_eq!(c.tls.certificates[0].names, ["a.test"]);
    assert_eq!(c.timeouts.handshake, Duration::from_secs(3));
    assert_eq!(
        c.tls.https_port(&c.listen),
        Some(8443),
        "the redirect goes to the TLS listener"
    );
}

#[test]
fn the_handshake_timeout_defaults_to_ten_seconds_and_plain_configs_have_no_tls() {
    let dir = TempDir::new();
    let l = load_ok(
        &dir,
        r#"server { root = "www", listen = { "127.0.0.1:8080" } }"#,
    );
    assert_eq!(l.config.timeouts.handshake, Duration::from_secs(10));
    assert_eq!(l.config.tls.kind(0), ListenKind::Plain);
    assert!(l.config.tls.server.is_none());
}

#[test]
fn tls_mistakes_are_reported_at_their_line() {
    let dir = TempDir::new();
    write_cert(&dir, "a", &["a.test"]);
    let e = errors(
        &dir,
        "server {\n  root = \"www\",\n  listen = { { \"127.0.0.1:8443\", tsl = true } },\n}\n",
    );
    assert!(
        e.iter()
            .any(|m| m.starts_with("site.lua:3:") && m.contains("unknown key 'tsl'")),
        "{e:?}"
    );
    let e = errors(
        &dir,
        "server {\n  root = \"www\",\n  listen = { { \"127.0.0.1:8443\", tls = true } },\n}\n",
    );
    assert!(
        e.iter()
            .any(|m| m.starts_with("site.lua:3:") && m.contains("no tls = {")),
        "{e:?}"
    );
    let e = errors(
        &dir,
        "server {\n  root = \"www\",\n  listen = { { \"127.0.0.1:80\", redirect_to_https = true } },\n}\n",
    );
    assert!(
        e.iter()
            .any(|m| m.contains("redirect_to_https needs a listen entry with tls = true")),
        "{e:?}"
    );
    let e = errors(
        &dir,
        "server {\n  root = \"www\",\n  listen = { { \"127.0.0.1:8443\", tls = true } },\n  tls = { certificates = { { cert = \"a.pem\", key = \"a.key\" } },\n    min_version = \"1.1\" },\n}\n",
    );
    assert!(
        e.iter()
            .any(|m| m.starts_with("site.lua:5:") && m.contains("\"1.2\" or \"1.3\"")),
        "{e:?}"
    );
    let e = errors(
        &dir,
        "server {\n  root = \"www\",\n  listen = { { \"unix:run/s.sock\", tls = true } },\n  tls = { certificates = { { cert = \"a.pem\", key = \"a.key\" } } },\n}\n",
    );
    assert!(e.iter().any(|m| m.contains("need a TCP address")), "{e:?}");
    let e = errors(
        &dir,
        "server {\n  root = \"www\",\n  listen = { { \"127.0.0.1:8443\", tls = true } },\n  tls = { certificates = {\n    { cert = \"a.pem\", key = \"nokey.key\" } } },\n}\n",
    );
    assert!(
        e.iter().any(|m| m.starts_with("site.lua:5:")
            && m.contains("cannot read")
            && m.contains("nokey.key")),
        "{e:?}"
    );
    let e = errors(
        &dir,
        "server {\n  root = \"www\",\n  listen = { { \"127.0.0.1:8443\", tls = true }, \"127.0.0.1:8443\" },\n  tls = { certificates = { { cert = \"a.pem\", key = \"a.key\" } } },\n}\n",
    );
    assert!(e.iter().any(|m| m.contains("given twice")), "{e:?}");
}

#[test]
fn a_single_listen_table_needs_no_list_around_it() {
    let dir = TempDir::new();
    write_cert(&dir, "a", &["a.test"]);
    let l = load_ok(
        &dir,
        r#"server { root = "www", listen = { "127.0.0.1:8443", tls = true },
  tls = { certificates = { { cert = "a.pem", key = "a.key" } } } }"#,
    );
    assert_eq!(l.config.listen.len(), 1);
    assert_eq!(l.config.tls.listen, [ListenKind::Tls]);
}

#[test]
fn print_writes_tls_back_as_a_config_that_loads_the_same() {
    let dir = TempDir::new();
    write_cert(&dir, "a", &["a.test", "*.a.test"]);
    let l = load_ok(
        &dir,
        r#"server { root = "www",
  listen = { { "127.0.0.1:8443", tls = true }, { "127.0.0.1:8080", redirect_to_https = true } },
  tls = { certificates = { { cert = "a.pem", key = "a.key", names = { "a.test" } } },
          min_version = "1.3", session_tickets = false },
  timeouts = { handshake = 2.5 } }"#,
    );
    let text = crate::config::print(&l.config);
    let again = load_ok(&dir, &text);
    let (a, b) = (&l.config, &again.config);
    assert_eq!(a.listen, b.listen, "{text}");
    assert_eq!(a.tls.listen, b.tls.listen, "{text}");
    assert_eq!(a.tls.min_version, b.tls.min_version);
    assert_eq!(a.tls.session_tickets, b.tls.session_tickets);
    assert_eq!(a.tls.certificates, b.tls.certificates);
    assert_eq!(a.timeouts.handshake, b.timeouts.handshake);
}

#[test]
fn max_version_ciphers_and_server_order_load_and_print_back() {
    let dir = TempDir::new();
    write_cert(&dir, "a", &["a.test"]);
    let l = load_ok(
        &dir,
        r#"server { root = "www",
  listen = { { "127.0.0.1:8443", tls = true } },
  tls = { certificates = { { cert = "a.pem", key = "a.key" } }, max_version = "1.2",
          ciphers = "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256",
          prefer_server_ciphers = true } }"#,
    );
    let t = &l.config.tls;
    assert_eq!(t.max_version, crate::tls::MinVersion::Tls12);
    assert_eq!(
        t.ciphers,
        [
            rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        ]
    );
    assert!(t.prefer_server_ciphers);
    let server = &t.server.as_ref().expect("a server config").0;
    assert!(server.ignore_client_order);
    // The TLS 1.2 suites are the two named, in that order; TLS 1.3 (not named) keeps all.
    let suites: Vec<_> = server
        .crypto_provider()
        .cipher_suites
        .iter()
        .map(|s| s.suite())
        .collect();
    assert_eq!(&suites[..2], &t.ciphers[..], "{suites:?}");
    assert_eq!(suites.len(), 5, "{suites:?}");
    let text = crate::config::print(&l.config);
    let again = load_ok(&dir, &text);
    assert_eq!(again.config.tls.max_version, t.max_version, "{text}");
    assert_eq!(again.config.tls.ciphers, t.ciphers, "{text}");
    assert!(again.config.tls.prefer_server_ciphers, "{text}");
}

#[test]
fn a_max_version_below_min_and_an_unknown_suite_are_errors_at_their_line() {
    let dir = TempDir::new();
    write_cert(&dir, "a", &["a.test"]);
    let e = errors(
        &dir,
        "server {\n  root = \"www\",\n  listen = { { \"127.0.0.1:8443\", tls = true } },\n  tls = { certificates = { { cert = \"a.pem\", key = \"a.key\" } },\n    min_version = \"1.3\",\n    max_version = \"1.2\" },\n}\n",
    );
    assert!(
        e.iter().any(|m| m.starts_with("site.lua:6:")
            && m.contains("max_version \"1.2\" is below min_version \"1.3\"")),
        "{e:?}"
    );
    let e = errors(
        &dir,
        "server {\n  root = \"www\",\n  listen = { { \"127.0.0.1:8443\", tls = true } },\n  tls = { certificates = { { cert = \"a.pem\", key = \"a.key\" } },\n    max_version = \"1.4\",\n    ciphers = { \"TLS_AES_128_GCM_SHA256\", \"DHE-RSA-AES128-GCM-SHA256\" } },\n}\n",
    );
    assert!(
        e.iter()
            .any(|m| m.starts_with("site.lua:5:") && m.contains("\"1.2\" or \"1.3\", got '1.4'")),
        "{e:?}"
    );
    assert!(
        e.iter().any(|m| m.starts_with("site.lua:6:")
            && m.contains("'DHE-RSA-AES128-GCM-SHA256' is not a suite rustls offers")),
        "{e:?}"
    );
}
