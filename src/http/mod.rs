//! HTTP/1.1, sans-IO: parsers and encoders take and return bytes; the worker owns the sockets.

pub mod body;
pub mod chunked;
pub mod conditional;
pub mod date;
pub mod host;
#[cfg(test)]
mod mutate;
pub mod path;
pub mod range;
pub mod request;
pub mod response;
pub mod status;
pub mod text;
