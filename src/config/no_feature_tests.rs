//! Config tests of builds without some cargo feature: what needs it is refused at its line.

#[allow(unused_imports)]
use super::{errors, TempDir};

#[cfg(not(feature = "tls"))]
#[test]
fn tls_listeners_and_settings_are_refused_with_their_line() {
    let dir = TempDir::new();
    let e = errors(
        &dir,
        "server {\n  root = \"www\",\n  listen = { \"127.0.0.1:8080\",\n    { \"127.0.0.1:8443\", tls = true } },\n}\n",
    );
    assert!(
        e.iter()
            .any(|m| m.starts_with("site.lua:4:")
                && m.contains("this build has no TLS (feature `tls`)")),
        "{e:?}"
    );
    let e = errors(
        &dir,
        "server {\n  root = \"www\",\n  listen = { \"127.0.0.1:8080\" },\n  tls = { certificates = { { cert = \"a.pem\", key = \"a.key\" } } },\n}\n",
    );
    assert!(
        e.iter()
            .any(|m| m.starts_with("site.lua:4:")
                && m.contains("this build has no TLS (feature `tls`)")),
        "{e:?}"
    );
}

#[cfg(not(feature = "zstd"))]
#[test]
fn zstd_is_refused_and_gzip_is_the_default() {
    let dir = TempDir::new();
    let e = errors(
        &dir,
        "server {\n  root = \"www\",\n  listen = { \"127.0.0.1:8080\" },\n  compress = {\n    encodings = { \"zstd\", \"gzip\" } },\n}\n",
    );
    assert!(
        e.iter().any(|m| m.starts_with("site.lua:5:")
            && m.contains("this build has no zstd (feature `zstd`)")),
        "{e:?}"
    );
    assert_eq!(
        crate::config::static_opts::Compress::default().encodings,
        [crate::config::static_opts::Coding::Gzip]
    );
}
