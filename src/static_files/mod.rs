//! Static files.
pub mod mime;
