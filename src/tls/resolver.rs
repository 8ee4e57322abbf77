//! SNI: the certificate for the name a client asks for, else the first one (the default).

use super::certs::{covers, Certificate};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::sync::Arc;

/// Picks a certificate by the ClientHello's server name: an exact name first, then a wildcard,
/// else the first certificate of the config (clients without SNI, or names none covers).
#[derive(Debug)]
pub struct SniResolver {
    /// (name or `*.suffix`, index into `keys`), in config order.
    names: Vec<(String, usize)>,
    keys: Vec<Arc<CertifiedKey>>,
}

impl SniResolver {
    /// A resolver over `certs`; the first is the default.
    pub fn new(certs: &[Certificate]) -> SniResolver {
        let mut names = Vec::new();
        for (i, c) in certs.iter().enumerate() {
            for n in &c.names {
                names.push((n.clone(), i));
            }
        }
        SniResolver {
            names,
            keys: certs.iter().map(|c| c.key.clone()).collect(),
        }
    }

    /// The index of the certificate served for `name` (None: no name given).
    pub fn pick(&self, name: Option<&str>) -> usize {
        let Some(name) = name else {
            return 0;
        };
        let exact = self
            .names
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name));
        let wild = || self.names.iter().find(|(n, _)| covers(n, name));
        exact.or_else(wild).map_or(0, |(_, i)| *i)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.keys.get(self.pick(hello.server_name())).cloned()
    }
}
