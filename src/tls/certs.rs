//! Certificates and keys read from PEM files: parsed, matched, checked against the names they
//! must cover, and described (names, issuer, expiry) for `-t` and the REPL's `certificates()`.

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A certificate chain with its private key, ready to serve.
#[derive(Clone)]
pub struct Certificate {
    /// The PEM file of the chain (leaf first).
    pub cert_path: PathBuf,
    /// The PEM file of the private key.
    pub key_path: PathBuf,
    /// The host names SNI picks this certificate for: the ones given in the config, else the
    /// certificate's own DNS names (SAN).
    pub names: Vec<String>,
    /// The DNS names the certificate itself covers (SAN, else the subject's CN).
    pub dns_names: Vec<String>,
    /// The issuer's distinguished name, as text.
    pub issuer: String,
    /// The end of the validity period, in unix seconds.
    pub not_after: i64,
    /// The chain and signing key rustls serves.
    pub key: Arc<CertifiedKey>,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("cert_path", &self.cert_path)
            .field("names", &self.names)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// Two certificates are the same when they came from the same files with the same bytes.
impl PartialEq for Certificate {
    fn eq(&self, other: &Self) -> bool {
        self.cert_path == other.cert_path
            && self.key_path == other.key_path
            && self.names == other.names
            && self.key.cert == other.key.cert
    }
}

/// Why a certificate cannot be served. Each message names the file it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertError {
    /// The file could not be read.
    Read(PathBuf, String),
    /// The certificate file holds no PEM certificate.
    NoCertificate(PathBuf),
    /// The certificate is not valid DER/X.509.
    BadCertificate(PathBuf, String),
    /// The key file holds no private key rustls can use.
    BadKey(PathBuf, String),
    /// The key is not the certificate's.
    Mismatch(PathBuf, PathBuf),
    /// A name given in the config is not covered by the certificate.
    NameNotCovered(PathBuf, String, Vec<String>),
    /// The certificate's validity has ended.
    Expired(PathBuf, i64),
}

impl fmt::Display for CertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertError::Read(p, e) => write!(f, "cannot read {}: {e}", p.display()),
            CertError::NoCertificate(p) => write!(
                f,
                "{} holds no certificate (expected a PEM \"BEGIN CERTIFICATE\" block)",
                p.display()
            ),
            CertError::BadCertificate(p, e) => {
                write!(f, "{} is not a valid certificate: {e}", p.display())
            }
            CertError::BadKey(p, e) => {
                write!(f, "{} is not a usable private key: {e}", p.display())
            }
            CertError::Mismatch(k, c) => write!(
                f,
                "the key {} does not belong to the certificate {}",
                k.display(),
                c.display()
            ),
            CertError::NameNotCovered(p, n, have) => write!(
                f,
                "{} does not cover the name '{n}' (it covers: {})",
                p.display(),
                if have.is_empty() {
                    "no DNS name".to_string()
                } else {
                    have.join(", ")
                }
            ),
            CertError::Expired(p, t) => write!(
                f,
                "{} expired on {}",
                p.display(),
                httpdate::fmt_http_date(unix_time(*t))
            ),
        }
    }
}

/// `t` unix seconds as a `SystemTime` (clamped at the epoch).
pub fn unix_time(t: i64) -> SystemTime {
    UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64)
}

/// Now, in unix seconds.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Reads `cert` and `key`, checks that they match, that the certificate has not expired and
/// that it covers every name in `names` (when empty, its own DNS names are used).
pub fn load(
    cert: &Path,
    key: &Path,
    names: &[String],
    provider: &CryptoProvider,
) -> Result<Certificate, CertError> {
    let cert_pem = std::fs::read(cert).map_err(|e| CertError::Read(cert.into(), e.to_string()))?;
    let key_pem = std::fs::read(key).map_err(|e| CertError::Read(key.into(), e.to_string()))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::BadCertificate(cert.into(), e.to_string()))?;
    let Some(leaf) = chain.first() else {
        return Err(CertError::NoCertificate(cert.into()));
    };
    let info = super::der::facts(leaf.as_ref())
        .map_err(|e| CertError::BadCertificate(cert.into(), e.to_string()))?;
    let der = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| CertError::BadKey(key.into(), e.to_string()))?;
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| CertError::BadKey(key.into(), e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => return Err(CertError::Mismatch(key.into(), cert.into())),
    }
    if info.not_after < now_unix() {
        return Err(CertError::Expired(cert.into(), info.not_after));
    }
    for n in names {
        if !info.dns_names.iter().any(|d| covers(d, n)) {
            return Err(CertError::NameNotCovered(
                cert.into(),
                n.clone(),
                info.dns_names.clone(),
            ));
        }
    }
    let names = if names.is_empty() {
        info.dns_names.clone()
    } else {
        names.iter().map(|n| n.to_ascii_lowercase()).collect()
    };
    Ok(Certificate {
        cert_path: cert.into(),
        key_path: key.into(),
        names,
        dns_names: info.dns_names,
        issuer: info.issuer,
        not_after: info.not_after,
        key: Arc::new(certified),
    })
}

/// Whether the certificate name `pattern` (`example.com` or `*.example.com`) covers host
/// `name`, as RFC 6125 says: a wildcard stands for exactly one leftmost label.
pub fn covers(pattern: &str, name: &str) -> bool {
    let name = name.trim_end_matches('.');
    if pattern.eq_ignore_ascii_case(name) {
        return true;
    }
    match (pattern.strip_prefix("*."), name.split_once('.')) {
        (Some(rest), Some((label, tail))) => !label.is_empty() && rest.eq_ignore_ascii_case(tail),
        _ => false,
    }
}

/// The REPL's `certificates()`: one row per certificate, the default first.
pub fn listing(certs: &[Certificate]) -> serde_json::Value {
    let now = now_unix();
    let rows = certs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            serde_json::json!({
                "cert": c.cert_path.display().to_string(),
                "key": c.key_path.display().to_string(),
                "default": i == 0,
                "names": c.names,
                "dns_names": c.dns_names,
                "issuer": c.issuer,
                "expires": httpdate::fmt_http_date(unix_time(c.not_after)),
                "days_left": (c.not_after - now).div_euclid(86_400),
            })
        })
        .collect();
    serde_json::Value::Array(rows)
}

#[cfg(test)]
mod tests {
    use super::covers;

    #[test]
    fn wildcards_cover_one_label_only() {
        assert!(covers("example.com", "EXAMPLE.com"));
        assert!(covers("*.example.com", "www.example.com"));
        assert!(covers("example.com", "example.com."));
        assert!(!covers("*.example.com", "example.com"));
        assert!(!covers("*.example.com", "a.b.example.com"));
        assert!(!covers("other.com", "example.com"));
    }
}
