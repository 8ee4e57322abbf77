//! Conditional requests (RFC 9110 §13): If-Match, If-Unmodified-Since, If-None-Match,
//! If-Modified-Since, evaluated in the order of §13.2.2.

use super::request::Request;
use std::time::SystemTime;

/// The validators of a selected representation.
#[derive(Debug, Clone, Copy)]
pub struct Validators<'a> {
    /// The strong entity tag, with its quotes: `"5f2-1a2b3c"`.
    pub etag: &'a str,
    /// Last modification time (sub-second part ignored in comparisons).
    pub last_modified: SystemTime,
}

/// The outcome of evaluating the preconditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Go on with the request (ranges may still apply).
    Proceed,
    /// 304 Not Modified (GET and HEAD only).
    NotModified,
    /// 412 Precondition Failed.
    Failed,
}

/// Evaluates the request's preconditions against the representation.
pub fn evaluate(req: &Request, v: &Validators<'_>) -> Precondition {
    let _ = (req, v);
    todo!()
}
