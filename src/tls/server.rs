//! The rustls server configuration built from the config's certificates.

use super::certs::Certificate;
use super::resolver::SniResolver;
use super::tickets::SharedTickets;
use rustls::crypto::CryptoProvider;
use rustls::ServerConfig;
use std::sync::Arc;

/// The lowest TLS version offered (`tls.min_version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinVersion {
    /// TLS 1.2 and 1.3 (Mozilla "intermediate").
    Tls12,
    /// TLS 1.3 only (Mozilla "modern").
    Tls13,
}

/// The crypto provider: ring (see README, "HTTPS", for why not aws-lc-rs), or aws-lc-rs when
/// built with that feature instead.
#[cfg(not(feature = "aws-lc-rs"))]
pub fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The crypto provider: aws-lc-rs (built with `--features aws-lc-rs`).
#[cfg(feature = "aws-lc-rs")]
pub fn provider() -> CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

#[cfg(not(any(feature = "ring", feature = "aws-lc-rs")))]
compile_error!("build with one crypto provider: the \"ring\" (default) or \"aws-lc-rs\" feature");

/// A server configuration: SNI over `certs` (the first is the default), ALPN `http/1.1`,
/// session tickets shared by all workers when `tickets` is set.
pub fn build(
    certs: &[Certificate],
    min: MinVersion,
    tickets: bool,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let versions: &[&'static rustls::SupportedProtocolVersion] = match min {
        MinVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        MinVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(versions)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver::new(certs)));
    // Room for "h2" later: it goes in front once the server speaks it.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    if tickets {
        config.ticketer = Arc::new(SharedTickets);
    } else {
        config.send_tls13_tickets = 0;
    }
    Ok(Arc::new(config))
}
