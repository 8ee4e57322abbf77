//! The `crate::tls` of a build without the `tls` feature: the same names, with the types that
//! would carry a TLS connection, certificate or server configuration uninhabited, so the code
//! that matches on them compiles unchanged and those arms cannot run. The config refuses
//! `tls = true` listeners and `server { tls = ... }` in such a build (config::validate::tls),
//! so none of these values is ever asked for.

/// Stands for rustls's server configuration (never built).
#[derive(Debug)]
pub enum ServerConfig {}

/// Stands for rustls's protocol version (never negotiated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types, clippy::upper_case_acronyms)]
pub enum ProtocolVersion {
    /// TLS 1.3.
    TLSv1_3,
    /// TLS 1.2.
    TLSv1_2,
    /// TLS 1.1.
    TLSv1_1,
    /// TLS 1.0.
    TLSv1_0,
    /// Anything else (rustls's enum is open too).
    Unknown(u16),
}

/// Why nothing here works: the feature is off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoTls;

impl std::fmt::Display for NoTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(NO_TLS)
    }
}

/// The error a config using TLS gets in this build.
pub const NO_TLS: &str = "this build has no TLS (feature `tls`)";

pub use certs::Certificate;
pub use server::{MinVersion, Options, Version};
pub use stream::TlsStream;

#[path = "version.rs"]
pub mod version;

/// Stands for rustls's cipher suite (none can be named in this build).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CipherSuite {}

/// Cipher suite names (none known in this build).
pub mod suites {
    use super::CipherSuite;

    /// No suite has a name here.
    pub fn by_name(_name: &str) -> Option<CipherSuite> {
        None
    }

    /// Unreachable: no suite exists.
    pub fn name(suite: CipherSuite) -> &'static str {
        match suite {}
    }

    /// The suites there are: none.
    pub fn known() -> String {
        String::from("none (this build has no TLS)")
    }
}

/// Certificates (none can be loaded).
pub mod certs {
    use std::path::PathBuf;
    use std::time::{SystemTime, UNIX_EPOCH};

    /// A loaded certificate (never made: `_never` has no value).
    #[derive(Debug, Clone, PartialEq)]
    pub struct Certificate {
        /// The PEM file of the chain.
        pub cert_path: PathBuf,
        /// The PEM file of the private key.
        pub key_path: PathBuf,
        /// The names SNI picks it for.
        pub names: Vec<String>,
        /// The DNS names it covers.
        pub dns_names: Vec<String>,
        /// The issuer, as text.
        pub issuer: String,
        /// The end of its validity, in unix seconds.
        pub not_after: i64,
        _never: Never,
    }

    #[derive(Debug, Clone, PartialEq)]
    enum Never {}

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

    /// The REPL's `certificates()`: always an empty list here.
    pub fn listing(_certs: &[Certificate]) -> serde_json::Value {
        serde_json::Value::Array(Vec::new())
    }

    /// Always fails: there is no TLS.
    pub fn load(
        _cert: &std::path::Path,
        _key: &std::path::Path,
        _names: &[String],
        _provider: &super::server::NoProvider,
    ) -> Result<Certificate, super::NoTls> {
        Err(super::NoTls)
    }
}

/// The server configuration (never built).
pub mod server {
    use super::{Certificate, NoTls, ServerConfig};
    use std::sync::Arc;

    pub use super::version::{MinVersion, Version};
    use super::CipherSuite;

    /// What the config says about the protocol (parsed as in a TLS build, then refused).
    #[derive(Debug, Clone, PartialEq)]
    pub struct Options {
        /// The lowest version offered.
        pub min_version: Version,
        /// The highest version offered.
        pub max_version: Version,
        /// The cipher suites (none can be named here).
        pub ciphers: Vec<CipherSuite>,
        /// nginx's `ssl_prefer_server_ciphers`.
        pub prefer_server_ciphers: bool,
        /// Whether session tickets are issued.
        pub session_tickets: bool,
        /// Whether connections would move to kTLS.
        pub ktls: bool,
    }

    /// Stands for rustls's crypto provider (there is none in this build).
    #[derive(Debug, Clone, Copy)]
    pub struct NoProvider;

    /// No provider in this build.
    pub fn provider() -> NoProvider {
        NoProvider
    }

    /// Always fails: there is no TLS.
    pub fn build(_certs: &[Certificate], _opts: &Options) -> Result<Arc<ServerConfig>, NoTls> {
        Err(NoTls)
    }
}

/// Session tickets (none).
pub mod tickets {
    /// Nothing to draw.
    pub fn init() {}
}

/// Kernel TLS (nothing to say).
pub mod ktls {
    /// Nothing to log.
    pub fn log_once(_enabled: bool) {}

    /// No TLS, so no kTLS either.
    pub fn available() -> bool {
        false
    }
}

/// The TLS stream (never made).
pub mod stream {
    use super::{NoTls, ProtocolVersion, ServerConfig};
    use std::io;
    use std::sync::Arc;

    /// The body of the 400 a TLS port answers plain HTTP with (never sent in this build).
    pub const PLAIN_HTTP_BODY: &str = "";

    /// Where a TLS connection is in its life (kept for the transport's match).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum State {
        /// Accepted, nothing read yet.
        Fresh,
        /// The handshake runs.
        Handshaking,
        /// Application data flows.
        Established,
        /// Only closing is left.
        Failed,
    }

    /// A TLS connection (never).
    #[derive(Debug)]
    pub enum TlsStream {}

    impl TlsStream {
        /// Always fails: there is no TLS.
        pub fn new(_tcp: mio::net::TcpStream, _config: Arc<ServerConfig>) -> Result<Self, NoTls> {
            Err(NoTls)
        }
        /// Unreachable.
        pub fn expect_clear_header(&mut self) {
            match *self {}
        }
        /// Unreachable.
        pub fn tcp(&self) -> &mio::net::TcpStream {
            match *self {}
        }
        /// Unreachable.
        pub fn tcp_mut(&mut self) -> &mut mio::net::TcpStream {
            match *self {}
        }
        /// Unreachable.
        pub fn state(&self) -> State {
            match *self {}
        }
        /// Unreachable.
        pub fn server_name(&self) -> Option<&str> {
            match *self {}
        }
        /// Unreachable.
        pub fn version(&self) -> Option<ProtocolVersion> {
            match *self {}
        }
        /// Unreachable.
        pub fn read(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
            match *self {}
        }
        /// Unreachable.
        pub fn flush(&mut self) -> io::Result<bool> {
            match *self {}
        }
        /// Unreachable.
        pub fn send(&mut self, _buf: &[u8], _more: bool) -> io::Result<usize> {
            match *self {}
        }
        /// Unreachable.
        pub fn is_kernel(&self) -> bool {
            match *self {}
        }
        /// Unreachable.
        pub fn shutdown_write(&mut self) {
            match *self {}
        }
        /// Unreachable.
        pub fn take_plain_http_head(&mut self) -> Option<Vec<u8>> {
            match *self {}
        }
    }
}
