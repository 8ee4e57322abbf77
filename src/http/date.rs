//! HTTP dates: the cached Date header value (formatted at most once a second), parsing of all
//! three HTTP date formats (RFC 9110 §5.6.7), and the access log's time format.

use std::time::SystemTime;

/// The Date header value, formatted once a second.
#[derive(Debug, Clone)]
pub struct DateCache {
    _p: (),
}

impl DateCache {
    /// A cache holding the current time.
    pub fn new() -> Self {
        todo!()
    }

    /// Reformats if the wall-clock second changed since the last call.
    pub fn refresh(&mut self, now: SystemTime) {
        let _ = now;
        todo!()
    }

    /// The current IMF-fixdate, e.g. "Sun, 06 Nov 1994 08:49:37 GMT".
    pub fn http(&self) -> &str {
        todo!()
    }

    /// The current time in the access log's format, e.g. "06/Nov/1994:08:49:37 +0000".
    pub fn clf(&self) -> &str {
        todo!()
    }
}

impl Default for DateCache {
    fn default() -> Self {
        Self::new()
    }
}

/// Formats `t` as an IMF-fixdate.
pub fn format(t: SystemTime) -> String {
    let _ = t;
    todo!()
}

/// Parses IMF-fixdate, RFC 850 and asctime dates; None when it is none of them.
pub fn parse(value: &[u8]) -> Option<SystemTime> {
    let _ = value;
    todo!()
}
