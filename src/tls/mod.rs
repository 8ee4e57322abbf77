//! HTTPS: certificates, SNI, shared session tickets, and the TLS stream the worker's event
//! loop drives as one more [`crate::transport::Stream`] variant. Nothing here knows the
//! config or the worker; they call in.

pub mod certs;
pub mod der;
pub mod ktls;
pub mod resolver;
pub mod server;
pub mod stream;
pub mod suites;
pub mod tickets;
pub mod version;

pub use certs::{CertError, Certificate};
pub use server::{MinVersion, Options, Version};
pub use stream::TlsStream;
