//! Access-log lines in the combined log format, formatted beside `log.rs`, which writes them.
//!
//! A line is started when a response starts (everything but the byte count is known then,
//! and the request may be gone by the end) and finished when the response ends, with the
//! body bytes actually sent. The line's buffer is the caller's, so a connection can lend it
//! back to a pool between requests.

use crate::http::request::Request;
use crate::log::{push_escaped, AccessLog};
use std::io::Write;

/// An access-log line waiting for its byte count.
#[derive(Debug, Default)]
pub struct PendingLine {
    /// The line without the byte count; empty when no line is pending.
    buf: Vec<u8>,
    /// Where the byte count goes.
    split: usize,
}

/// What a line says about the request.
pub enum Subject<'a> {
    /// A parsed request.
    Request(&'a Request),
    /// A refused head: its raw bytes (the first line is logged, so attacks show in logs).
    Refused(&'a [u8]),
}

impl PendingLine {
    /// Whether a line is pending.
    pub fn is_pending(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Whether a buffer is held.
    pub fn holds_buffer(&self) -> bool {
        self.buf.capacity() > 0
    }

    /// Starts a line in `buf` (an empty buffer, which the line keeps until `finish` or
    /// `take_buffer`) for a response of `status` to `peer_ip` at `clf_date`.
    pub fn start(
        &mut self,
        buf: Vec<u8>,
        peer_ip: &str,
        clf_date: &str,
        subject: Subject<'_>,
        status: u16,
    ) {
        if self.buf.capacity() == 0 {
            self.buf = buf;
        }
        let line = &mut self.buf;
        line.clear();
        let _ = write!(line, "{peer_ip} - - [{clf_date}] \"");
        let req = match subject {
            Subject::Request(r) => {
                line.extend_from_slice(r.method.as_str().as_bytes());
                line.push(b' ');
                push_escaped(line, r.target.as_bytes());
                line.push(b' ');
                line.extend_from_slice(r.version.as_str().as_bytes());
                Some(r)
            }
            Subject::Refused(raw) => {
                let end = memchr::memchr2(b'\r', b'\n', raw)
                    .unwrap_or(raw.len())
                    .min(512);
                push_escaped(line, &raw[..end]);
                None
            }
        };
        let _ = write!(line, "\" {status} ");
        self.split = line.len();
        line.extend_from_slice(b" \"");
        let header = |name| req.and_then(|r| r.header(name));
        match header("referer") {
            Some(v) => push_escaped(line, v),
            None => line.push(b'-'),
        }
        line.extend_from_slice(b"\" \"");
        match header("user-agent") {
            Some(v) => push_escaped(line, v),
            None => line.push(b'-'),
        }
        line.extend_from_slice(b"\"\n");
    }

    /// Adds the upstream that answered a proxied request and its time to the response head
    /// (`upstream=127.0.0.1:3000 upstream_time=0.012`, `-` when no head came) at the end.
    pub fn add_upstream(&mut self, addr: &str, time: Option<std::time::Duration>) {
        if !self.is_pending() {
            return;
        }
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
        }
        self.buf.extend_from_slice(b" upstream=");
        push_escaped(&mut self.buf, addr.as_bytes());
        match time {
            Some(t) => {
                let _ = write!(self.buf, " upstream_time={:.3}", t.as_secs_f64());
            }
            None => self.buf.extend_from_slice(b" upstream_time=-"),
        }
        self.buf.push(b'\n');
    }

    /// Writes the pending line (if any) with `body_sent` bytes to `access`.
    pub fn finish(&mut self, access: &mut AccessLog, body_sent: u64) {
        if !self.is_pending() {
            return;
        }
        let out = access.line();
        out.extend_from_slice(&self.buf[..self.split]);
        if body_sent == 0 {
            out.push(b'-');
        } else {
            let _ = write!(out, "{body_sent}");
        }
        out.extend_from_slice(&self.buf[self.split..]);
        access.line_done();
        self.buf.clear();
    }

    /// Takes the buffer back (nothing pending after this).
    pub fn take_buffer(&mut self) -> Vec<u8> {
        self.split = 0;
        std::mem::take(&mut self.buf)
    }
}

/// Writes the line of a connection refused before any request was read (no request line):
/// `bytes` is the size of the answer written.
pub fn write_refusal(
    access: &mut AccessLog,
    peer_ip: &str,
    clf_date: &str,
    status: u16,
    bytes: usize,
) {
    let line = access.line();
    let _ = writeln!(
        line,
        "{peer_ip} - - [{clf_date}] \"\" {status} {bytes} \"-\" \"-\""
    );
    access.line_done();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::LogFile;

    #[test]
    fn a_line_has_the_combined_format_with_the_bytes_sent_at_the_end() {
        let dir = std::env::temp_dir().join(format!("luahttpd-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.log");
        let mut log = AccessLog::new(LogFile::open(&path).unwrap());
        let req = crate::http::request::parse(
            b"GET /a?\"x HTTP/1.1\r\nHost: h\r\nUser-Agent: ua\r\n\r\n",
            8192,
        )
        .unwrap()
        .unwrap();
        let mut line = PendingLine::default();
        line.start(Vec::new(), "1.2.3.4", "D", Subject::Request(&req), 200);
        assert!(line.is_pending());
        line.finish(&mut log, 12);
        assert!(!line.is_pending());
        line.start(
            Vec::new(),
            "5.6.7.8",
            "D",
            Subject::Refused(b"\x01BAD\r\nrest"),
            400,
        );
        line.finish(&mut log, 0);
        line.start(Vec::new(), "1.2.3.4", "D", Subject::Request(&req), 502);
        line.add_upstream("127.0.0.1:3000", Some(std::time::Duration::from_millis(12)));
        line.finish(&mut log, 0);
        write_refusal(&mut log, "9.9.9.9", "D", 503, 77);
        log.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            text,
            "1.2.3.4 - - [D] \"GET /a?\\\"x HTTP/1.1\" 200 12 \"-\" \"ua\"\n\
             5.6.7.8 - - [D] \"\\x01BAD\" 400 - \"-\" \"-\"\n\
             1.2.3.4 - - [D] \"GET /a?\\\"x HTTP/1.1\" 502 - \"-\" \"ua\" upstream=127.0.0.1:3000 upstream_time=0.012\n\
             9.9.9.9 - - [D] \"\" 503 77 \"-\" \"-\"\n"
        );
    }
}
