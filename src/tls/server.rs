//! The rustls server configuration built from the config's certificates.

use super::certs::Certificate;
use super::resolver::SniResolver;
use super::tickets::SharedTickets;
use rustls::crypto::CryptoProvider;
use rustls::ServerConfig;
use std::sync::Arc;

pub use super::version::{MinVersion, Version};

/// The crypto provider as the server uses it: [`full_provider`] without its signature
/// verification algorithms. A server that asks for no client certificate verifies no
/// signature, and leaving them out leaves their code (webpki's and the provider's verifiers)
/// out of the binary (README, "A smaller binary"). A client needs [`full_provider`].
pub fn provider() -> CryptoProvider {
    CryptoProvider {
        signature_verification_algorithms: rustls::crypto::WebPkiSupportedAlgorithms {
            all: &[],
            mapping: &[],
        },
        ..full_provider()
    }
}

/// The whole crypto provider: ring (see README, "HTTPS", for why not aws-lc-rs), or aws-lc-rs
/// when built with that feature instead.
#[cfg(not(feature = "aws-lc-rs"))]
pub fn full_provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The whole crypto provider: aws-lc-rs (built with `--features aws-lc-rs`).
#[cfg(feature = "aws-lc-rs")]
pub fn full_provider() -> CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

#[cfg(not(any(feature = "ring", feature = "aws-lc-rs")))]
compile_error!("build with one crypto provider: the \"ring\" (default) or \"aws-lc-rs\" feature");

impl MinVersion {
    fn protocol(self) -> &'static rustls::SupportedProtocolVersion {
        match self {
            MinVersion::Tls12 => &rustls::version::TLS12,
            MinVersion::Tls13 => &rustls::version::TLS13,
        }
    }
}

/// What the config says about the protocol, beside the certificates.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// The lowest version offered.
    pub min_version: Version,
    /// The highest version offered (not below `min_version`: the config checks).
    pub max_version: Version,
    /// The cipher suites, in the server's order of preference; empty: the provider's.
    pub ciphers: Vec<rustls::CipherSuite>,
    /// Pick the first suite of the server's order the client offers, not the client's first
    /// (nginx's `ssl_prefer_server_ciphers`).
    pub prefer_server_ciphers: bool,
    /// Whether session tickets are issued (keys shared by all workers).
    pub session_tickets: bool,
    /// Whether connections move to kTLS after the handshake (where the kernel offers it).
    pub ktls: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            min_version: MinVersion::Tls12,
            max_version: MinVersion::Tls13,
            ciphers: Vec::new(),
            prefer_server_ciphers: false,
            session_tickets: true,
            ktls: true,
        }
    }
}

/// The provider limited to `ciphers` in that order. A version none of them belongs to keeps
/// all its suites, as nginx's `ssl_ciphers` leaves TLS 1.3 alone.
fn with_ciphers(mut p: CryptoProvider, ciphers: &[rustls::CipherSuite]) -> CryptoProvider {
    if ciphers.is_empty() {
        return p;
    }
    let all = std::mem::take(&mut p.cipher_suites);
    let is13 = |s: &rustls::SupportedCipherSuite| s.tls13().is_some();
    let named13 = all.iter().any(|s| is13(s) && ciphers.contains(&s.suite()));
    let named12 = all.iter().any(|s| !is13(s) && ciphers.contains(&s.suite()));
    for c in ciphers {
        if let Some(s) = all.iter().find(|s| s.suite() == *c) {
            p.cipher_suites.push(*s);
        }
    }
    for s in &all {
        if (is13(s) && !named13) || (!is13(s) && !named12) {
            p.cipher_suites.push(*s);
        }
    }
    p
}

/// A server configuration: SNI over `certs` (the first is the default), ALPN `http/1.1`,
/// the versions and suites of `opts`, session tickets shared by all workers when asked for.
pub fn build(certs: &[Certificate], opts: &Options) -> Result<Arc<ServerConfig>, rustls::Error> {
    let versions: Vec<&'static rustls::SupportedProtocolVersion> =
        [MinVersion::Tls13, MinVersion::Tls12]
            .into_iter()
            .filter(|v| (opts.min_version..=opts.max_version).contains(v))
            .map(MinVersion::protocol)
            .collect();
    let provider = with_ciphers(provider(), &opts.ciphers);
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&versions)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver::new(certs)));
    config.ignore_client_order = opts.prefer_server_ciphers;
    // Room for "h2" later: it goes in front once the server speaks it.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // The keys may leave rustls only where they go to the kernel (`stream::TlsStream` reads
    // this flag as "move to kTLS after the handshake").
    config.enable_secret_extraction = opts.ktls && super::ktls::available();
    if opts.session_tickets {
        config.ticketer = Arc::new(SharedTickets);
    } else {
        config.send_tls13_tickets = 0;
    }
    Ok(Arc::new(config))
}
