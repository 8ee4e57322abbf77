//! Cipher suite names for `tls.ciphers`: the suites rustls implements, each under its IANA
//! name (as rustls prints it) and the OpenSSL name that nginx's `ssl_ciphers` and Mozilla's
//! configuration generator use, so a list pasted from either works.

use rustls::CipherSuite;

/// (IANA name, OpenSSL name, suite). TLS 1.3 suites have the same name in OpenSSL, without
/// rustls's `TLS13_` spelling.
const SUITES: &[(&str, &str, CipherSuite)] = &[
    (
        "TLS13_AES_128_GCM_SHA256",
        "TLS_AES_128_GCM_SHA256",
        CipherSuite::TLS13_AES_128_GCM_SHA256,
    ),
    (
        "TLS13_AES_256_GCM_SHA384",
        "TLS_AES_256_GCM_SHA384",
        CipherSuite::TLS13_AES_256_GCM_SHA384,
    ),
    (
        "TLS13_CHACHA20_POLY1305_SHA256",
        "TLS_CHACHA20_POLY1305_SHA256",
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        "ECDHE-RSA-CHACHA20-POLY1305",
        CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
];

/// The suite a config name means (IANA or OpenSSL spelling, any case); None: rustls has no
/// such suite.
pub fn by_name(name: &str) -> Option<CipherSuite> {
    SUITES
        .iter()
        .find(|(iana, openssl, _)| {
            iana.eq_ignore_ascii_case(name) || openssl.eq_ignore_ascii_case(name)
        })
        .map(|(_, _, s)| *s)
}

/// The IANA name of a suite of [`SUITES`] (for `print`).
pub fn name(suite: CipherSuite) -> &'static str {
    SUITES
        .iter()
        .find(|(_, _, s)| *s == suite)
        .map_or("?", |(iana, _, _)| iana)
}

/// Every OpenSSL name, for an error message.
pub fn known() -> String {
    SUITES
        .iter()
        .map(|(_, o, _)| *o)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings_name_the_same_suite_and_each_name_is_the_provider_s() {
        assert_eq!(
            by_name("ECDHE-ECDSA-AES128-GCM-SHA256"),
            by_name("tls_ecdhe_ecdsa_with_aes_128_gcm_sha256")
        );
        assert_eq!(
            by_name("TLS_AES_256_GCM_SHA384"),
            Some(CipherSuite::TLS13_AES_256_GCM_SHA384)
        );
        assert_eq!(by_name("DHE-RSA-AES128-GCM-SHA256"), None);
        // Every suite of the provider has a name here, and every name is a provider suite.
        let p = super::super::server::provider();
        for s in &p.cipher_suites {
            assert_eq!(by_name(name(s.suite())), Some(s.suite()));
        }
        for (_, _, s) in SUITES {
            assert!(p.cipher_suites.iter().any(|x| x.suite() == *s), "{s:?}");
        }
    }
}
