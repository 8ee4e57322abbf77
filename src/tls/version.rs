//! The TLS versions the config names (`tls.min_version`, `tls.max_version`): plain data, shared
//! by the TLS build and the stand-in of a build without it, so both parse the config alike.

/// A TLS version the server offers: the lowest (`tls.min_version`) or the highest
/// (`tls.max_version`). Ordered, older first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MinVersion {
    /// TLS 1.2 and 1.3 (Mozilla "intermediate").
    Tls12,
    /// TLS 1.3 only (Mozilla "modern").
    Tls13,
}

/// A TLS version by its config name ("1.2", "1.3").
pub type Version = MinVersion;

impl MinVersion {
    /// The config's name of the version.
    pub fn name(self) -> &'static str {
        match self {
            MinVersion::Tls12 => "1.2",
            MinVersion::Tls13 => "1.3",
        }
    }

    /// The version named `name` in the config.
    pub fn from_name(name: &str) -> Option<MinVersion> {
        match name {
            "1.2" => Some(MinVersion::Tls12),
            "1.3" => Some(MinVersion::Tls13),
            _ => None,
        }
    }
}
