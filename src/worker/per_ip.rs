//! `limits.connections_per_ip`: how many connections each client address holds in this worker.
//!
//! Counted per worker (workers do not share state), so one address may hold up to the limit
//! times `workers` in all; the kernel spreads a client's connections over the workers that
//! accept, so in practice it reaches the limit in each worker before the total.

use std::collections::HashMap;

/// Open connections per client address, and the limit (0: none, nothing is counted).
#[derive(Debug, Default)]
pub struct PerIp {
    limit: usize,
    open: HashMap<String, usize>,
}

impl PerIp {
    /// Counts against `limit` connections per address; 0 turns the limit off.
    pub fn new(limit: usize) -> PerIp {
        PerIp {
            limit,
            open: HashMap::new(),
        }
    }

    /// Counts a new connection from `ip`; false when it is over the limit (it is counted
    /// anyway: the caller refuses it and calls `closed` at once).
    pub fn opened(&mut self, ip: &str) -> bool {
        if self.limit == 0 || ip == "unix" {
            return true;
        }
        let n = self.open.entry(ip.to_string()).or_insert(0);
        *n += 1;
        *n <= self.limit
    }

    /// Counts a connection from `ip` as closed.
    pub fn closed(&mut self, ip: &str) {
        if self.limit == 0 {
            return;
        }
        if let Some(n) = self.open.get_mut(ip) {
            *n -= 1;
            if *n == 0 {
                // Forget the address: the map holds only addresses with open connections.
                self.open.remove(ip);
            }
        }
    }
}

/// The whole answer to a connection over the limit: 503, `Retry-After: 1`,
/// `Connection: close`. Written with one non-blocking write and then the socket is closed at
/// once: a refused connection takes no connection slot and does not linger, so a flood from
/// one address cannot crowd out the others.
pub fn refusal(date: &str, server: &str) -> Vec<u8> {
    let body = "<!DOCTYPE html>\n<html><head><title>503 Service Unavailable</title></head>\
                <body><h1>503 Service Unavailable</h1></body></html>\n";
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nDate: {date}\r\nServer: {server}\r\n\
         Retry-After: 1\r\nContent-Type: text/html; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_a_complete_503() {
        let r =
            String::from_utf8(refusal("Tue, 01 Dec 2026 00:00:00 GMT", "luahttpd")).expect("text");
        assert!(r.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(r.contains("\r\nConnection: close\r\n"));
        let (head, body) = r.split_once("\r\n\r\n").expect("head end");
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }

    #[test]
    fn limit_per_address() {
        let mut p = PerIp::new(2);
        assert!(p.opened("10.0.0.1"));
        assert!(p.opened("10.0.0.1"));
        assert!(!p.opened("10.0.0.1"));
        assert!(p.opened("10.0.0.2"), "another address has its own count");
        p.closed("10.0.0.1");
        assert!(
            !p.opened("10.0.0.1"),
            "the refused one still counts until it closes"
        );
        p.closed("10.0.0.1");
        p.closed("10.0.0.1");
        assert!(p.opened("10.0.0.1"));
        p.closed("10.0.0.1");
        p.closed("10.0.0.1");
        p.closed("10.0.0.2");
        assert!(p.open.is_empty(), "{:?}", p.open);
    }

    #[test]
    fn zero_is_no_limit_and_unix_is_not_counted() {
        let mut p = PerIp::new(0);
        for _ in 0..100 {
            assert!(p.opened("10.0.0.1"));
        }
        assert!(p.open.is_empty());
        let mut p = PerIp::new(1);
        assert!(p.opened("unix"));
        assert!(p.opened("unix"));
        p.closed("unix");
        assert!(p.open.is_empty());
    }
}
