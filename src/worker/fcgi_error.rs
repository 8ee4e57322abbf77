//! Why a FastCGI exchange failed: each kind knows the status that answers it (when the
//! response head has not gone out yet) and the reason the error log gives.

use crate::http::body::BodyError;
use std::fmt;
use std::io;

/// A failed exchange.
#[derive(Debug)]
pub enum ExchangeError {
    /// The client's request body is malformed or over `limits.body_bytes` (400, 413).
    Body(BodyError),
    /// The request body could not be held in memory or in its temporary file (500).
    Spool(io::Error),
    /// The request cannot be expressed as CGI params (400).
    Params(String),
    /// The backend socket could not be polled (500).
    Register(io::Error),
    /// Every address of the backend is disabled or was tried (503).
    NoAddress,
    /// Waiting for a free process, connecting, or reading took longer than allowed (504).
    Timeout(&'static str),
    /// The backend closed its connection before the response was complete (502).
    Closed {
        /// Whether the response head had already gone to the client.
        mid_response: bool,
    },
    /// A write to or read from the backend failed (502).
    Io(io::Error),
    /// The backend sent a malformed record (502).
    BadRecord(String),
    /// The backend's CGI response head is malformed (502).
    BadHead(String),
    /// The backend ended the request without a response head (502).
    NoHead,
}

impl ExchangeError {
    /// The status that answers the request, when no response head was sent yet.
    pub fn status(&self) -> u16 {
        match self {
            ExchangeError::Body(e) => e.status(),
            ExchangeError::Params(_) => 400,
            ExchangeError::Spool(_) | ExchangeError::Register(_) => 500,
            ExchangeError::NoAddress => 503,
            ExchangeError::Timeout(_) => 504,
            ExchangeError::Closed { .. }
            | ExchangeError::Io(_)
            | ExchangeError::BadRecord(_)
            | ExchangeError::BadHead(_)
            | ExchangeError::NoHead => 502,
        }
    }

    /// Whether the fault is the client's (logged at a lower level than a backend's fault).
    pub fn is_client_fault(&self) -> bool {
        matches!(self, ExchangeError::Body(_) | ExchangeError::Params(_))
    }
}

impl fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExchangeError::Body(e) => write!(f, "request body refused: {}", e.reason()),
            ExchangeError::Spool(e) => write!(f, "holding the request body: {e}"),
            ExchangeError::Params(e) => write!(f, "params refused: {e}"),
            ExchangeError::Register(e) => write!(f, "register backend socket: {e}"),
            ExchangeError::NoAddress => f.write_str("no address available"),
            ExchangeError::Timeout(what) => write!(f, "{what} timed out"),
            ExchangeError::Closed { mid_response } => write!(
                f,
                "backend closed the connection {}",
                if *mid_response {
                    "mid-response"
                } else {
                    "before the response head"
                }
            ),
            ExchangeError::Io(e) => write!(f, "{e}"),
            ExchangeError::BadRecord(e) => write!(f, "bad record: {e}"),
            ExchangeError::BadHead(e) => write!(f, "bad response head: {e}"),
            ExchangeError::NoHead => f.write_str("request ended without a response head"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::chunked::ChunkError;

    #[test]
    fn each_error_knows_its_status_and_reason() {
        let cases: [(ExchangeError, u16, &str); 6] = [
            (
                ExchangeError::Body(BodyError::TooLarge { limit: 1 }),
                413,
                "request body refused: request body over the limit",
            ),
            (
                ExchangeError::Body(BodyError::Chunked(ChunkError::BadSize)),
                400,
                "request body refused: bad chunk size",
            ),
            (ExchangeError::NoAddress, 503, "no address available"),
            (ExchangeError::Timeout("connect"), 504, "connect timed out"),
            (
                ExchangeError::Closed {
                    mid_response: false,
                },
                502,
                "backend closed the connection before the response head",
            ),
            (
                ExchangeError::NoHead,
                502,
                "request ended without a response head",
            ),
        ];
        for (e, status, reason) in cases {
            assert_eq!(e.status(), status, "{e}");
            assert_eq!(e.to_string(), reason);
        }
        assert!(ExchangeError::Params("x".into()).is_client_fault());
        assert!(!ExchangeError::NoHead.is_client_fault());
    }
}
