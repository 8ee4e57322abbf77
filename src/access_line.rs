//! Access-log lines in the configured format (`log_format.rs`), formatted beside `log.rs`,
//! which writes them.
//!
//! A line is started when a response starts (everything but the byte count and the time
//! taken is known then, and the request may be gone by the end) and finished when the
//! response ends, with the body bytes actually sent. The fields known only then are holes,
//! whose offsets are kept in the buffer after the line's text (5 bytes each), so a pending
//! line costs a connection no more than its buffer, which is the caller's, so a connection
//! can lend it back to a pool between requests.

use crate::http::request::Request;
use crate::log::{push_escaped, AccessLog};
use crate::log_format::{Escape, Field, LogFormat, Part, MAX_LATE};
use std::io::Write;
use std::time::Duration;

/// A field filled in when the response ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Late {
    Body = 0,
    BodyClf = 1,
    Time = 2,
    /// `$upstream_response_time`, absent: `-` (default escaping).
    Upstream = 3,
    /// The same in JSON: empty.
    UpstreamJson = 4,
    /// `$upstream_addr`, absent: `-`.
    UpstreamAddr = 5,
    /// The same in JSON: empty.
    UpstreamAddrJson = 6,
    /// The combined format's ` upstream=… upstream_time=…`, absent: nothing.
    UpstreamSuffix = 7,
    /// `$bytes_received`: what the client sent through a tunnel, 0 without one.
    BytesReceived = 8,
}

impl Late {
    fn from_u8(v: u8) -> Late {
        match v {
            0 => Late::Body,
            1 => Late::BodyClf,
            2 => Late::Time,
            3 => Late::Upstream,
            4 => Late::UpstreamJson,
            5 => Late::UpstreamAddr,
            6 => Late::UpstreamAddrJson,
            8 => Late::BytesReceived,
            _ => Late::UpstreamSuffix,
        }
    }
}

/// An access-log line waiting for its byte count.
#[derive(Debug, Default)]
pub struct PendingLine {
    /// The line without the late fields, then the holes (offset as u32 LE, kind); empty
    /// when no line is pending.
    buf: Vec<u8>,
    /// Where the line's text ends in `buf` (the holes follow).
    text: u32,
    /// When the request started (unix ms, wrapping: 32 bits keep a connection small, and
    /// any duration below 49 days fits), for `$request_time`.
    started_ms: u32,
}

/// What a line says about the request.
pub enum Subject<'a> {
    /// A parsed request.
    Request(&'a Request),
    /// A refused head: its raw bytes (the first line is logged, so attacks show in logs).
    Refused(&'a [u8]),
    /// A connection refused before anything was read.
    Nothing,
}

/// What a line is made of, known when the response starts.
pub struct Facts<'a> {
    /// The client's address (the real one, when a trusted proxy said it).
    pub peer_ip: &'a str,
    /// The client's port.
    pub peer_port: u16,
    /// The time, in the common log format.
    pub clf_date: &'a str,
    /// The request.
    pub subject: Subject<'a>,
    /// The response status.
    pub status: u16,
    /// The user an `auth` rule or `basic_auth` helper authenticated.
    pub user: Option<&'a str>,
    /// The connection's TLS version (`TLSv1.3`), None on plain HTTP.
    pub tls_version: Option<&'a str>,
}

/// Appends a value escaped for the format.
fn push_value(line: &mut Vec<u8>, escape: Escape, v: &[u8]) {
    match escape {
        Escape::Default => push_escaped(line, v),
        Escape::Json => crate::json_text::push_escaped(line, v),
    }
}

/// Appends an absent value: `-`, or nothing in JSON.
fn push_absent(line: &mut Vec<u8>, escape: Escape) {
    if escape == Escape::Default {
        line.push(b'-');
    }
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
    /// `take_buffer`) in `format`.
    pub fn start(&mut self, buf: Vec<u8>, format: &LogFormat, facts: Facts<'_>) {
        if self.buf.capacity() == 0 {
            self.buf = buf;
        }
        let mut holes = [(0u32, Late::Body); MAX_LATE];
        let mut n_late = 0;
        let esc = format.escape;
        let line = &mut self.buf;
        line.clear();
        let req = match facts.subject {
            Subject::Request(r) => Some(r),
            _ => None,
        };
        for part in &format.parts {
            let field = match part {
                Part::Literal(b) => {
                    line.extend_from_slice(b);
                    continue;
                }
                Part::Field(f) => f,
            };
            let late = match field {
                Field::RemoteAddr => {
                    push_value(line, esc, facts.peer_ip.as_bytes());
                    None
                }
                Field::RemoteUser => {
                    match facts.user {
                        // Client input: escaped, and a space would split the combined field.
                        Some(u) if esc == Escape::Default => {
                            let start = line.len();
                            push_escaped(line, u.as_bytes());
                            for b in &mut line[start..] {
                                if *b == b' ' {
                                    *b = b'_';
                                }
                            }
                        }
                        Some(u) => push_value(line, esc, u.as_bytes()),
                        None => push_absent(line, esc),
                    }
                    None
                }
                Field::RemotePort => {
                    let _ = write!(line, "{}", facts.peer_port);
                    None
                }
                Field::TimeLocal => {
                    line.extend_from_slice(facts.clf_date.as_bytes());
                    None
                }
                Field::Request => {
                    match (&facts.subject, req) {
                        (_, Some(r)) => {
                            line.extend_from_slice(r.method.as_str().as_bytes());
                            line.push(b' ');
                            push_value(line, esc, r.target.as_bytes());
                            line.push(b' ');
                            line.extend_from_slice(r.version.as_str().as_bytes());
                        }
                        (Subject::Refused(raw), None) => {
                            let end = memchr::memchr2(b'\r', b'\n', raw)
                                .unwrap_or(raw.len())
                                .min(512);
                            push_value(line, esc, &raw[..end]);
                        }
                        _ => {}
                    }
                    None
                }
                Field::RequestMethod => {
                    match req {
                        Some(r) => line.extend_from_slice(r.method.as_str().as_bytes()),
                        None => push_absent(line, esc),
                    }
                    None
                }
                Field::RequestUri => {
                    match req {
                        Some(r) => push_value(line, esc, r.target.as_bytes()),
                        None => push_absent(line, esc),
                    }
                    None
                }
                Field::Status => {
                    let _ = write!(line, "{}", facts.status);
                    None
                }
                Field::Header(name) => {
                    match req.and_then(|r| r.header(name)) {
                        Some(v) => push_value(line, esc, v),
                        None => push_absent(line, esc),
                    }
                    None
                }
                Field::TlsVersion => {
                    match facts.tls_version {
                        Some(v) => push_value(line, esc, v.as_bytes()),
                        None => push_absent(line, esc),
                    }
                    None
                }
                Field::BodyBytesSent => Some(Late::Body),
                Field::BodyBytesClf => Some(Late::BodyClf),
                Field::RequestTime => Some(Late::Time),
                Field::BytesReceived => Some(Late::BytesReceived),
                Field::UpstreamResponseTime if esc == Escape::Json => Some(Late::UpstreamJson),
                Field::UpstreamResponseTime => Some(Late::Upstream),
                Field::UpstreamAddr if esc == Escape::Json => Some(Late::UpstreamAddrJson),
                Field::UpstreamAddr => Some(Late::UpstreamAddr),
                Field::UpstreamSuffix => Some(Late::UpstreamSuffix),
            };
            if let Some(l) = late {
                // `LogFormat::parse` refuses formats with more late fields than fit.
                // (A line is far below 4 GiB: heads are bounded by limits.header_bytes.)
                if let Some(h) = holes.get_mut(n_late) {
                    *h = (line.len() as u32, l);
                    n_late += 1;
                }
            }
        }
        line.push(b'\n');
        self.text = line.len() as u32;
        for (at, l) in &holes[..n_late] {
            line.extend_from_slice(&at.to_le_bytes());
            line.push(*l as u8);
        }
    }

    /// Records the upstream that answered a proxied request, its time to the response
    /// head (None: no head came) and the bytes the client sent through its tunnel (0 without
    /// one), for the line's upstream fields and `$bytes_received`.
    ///
    /// Kept after the holes as a trailer (address, the received count as u64 LE, time in ms
    /// as u32 LE or `u32::MAX`, the address length as u16 LE, then `TRAILER`), so a
    /// connection pays nothing for it.
    pub fn add_upstream(&mut self, addr: &str, time: Option<Duration>, received: u64) {
        if !self.is_pending() || upstream_of(&self.buf).is_some() {
            return;
        }
        let addr = &addr.as_bytes()[..addr.len().min(usize::from(u16::MAX))];
        let ms = time.map_or(u32::MAX, |t| {
            u32::try_from(t.as_millis()).unwrap_or(u32::MAX - 1)
        });
        self.buf.extend_from_slice(addr);
        self.buf.extend_from_slice(&received.to_le_bytes());
        self.buf.extend_from_slice(&ms.to_le_bytes());
        self.buf
            .extend_from_slice(&(addr.len() as u16).to_le_bytes());
        self.buf.push(TRAILER);
    }

    /// The request the next line is about started at `now_ms` (unix ms).
    pub fn request_started(&mut self, now_ms: u64) {
        self.started_ms = now_ms as u32;
    }

    /// Writes the pending line (if any) with `body_sent` bytes, the response having ended at
    /// `now_ms` (unix ms), to `access`.
    pub fn finish(&mut self, access: &mut AccessLog, body_sent: u64, now_ms: u64) {
        if !self.is_pending() {
            return;
        }
        let took = Duration::from_millis(u64::from((now_ms as u32).wrapping_sub(self.started_ms)));
        let out = access.line();
        let mut from = 0;
        let upstream = upstream_of(&self.buf);
        let end = upstream.as_ref().map_or(self.buf.len(), |u| u.at);
        let (text, holes) = self.buf[..end].split_at((self.text as usize).min(end));
        let received = upstream.as_ref().map_or(0, |u| u.received);
        let upstream = upstream.map(|u| (u.addr, u.time));
        for h in holes.chunks_exact(5) {
            let at = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
            let at = at.min(text.len());
            let late = Late::from_u8(h[4]);
            out.extend_from_slice(&text[from..at]);
            from = at;
            match late {
                Late::Body => {
                    let _ = write!(out, "{body_sent}");
                }
                Late::BodyClf if body_sent == 0 => out.push(b'-'),
                Late::BodyClf => {
                    let _ = write!(out, "{body_sent}");
                }
                Late::Time => {
                    let _ = write!(out, "{}.{:03}", took.as_secs(), took.subsec_millis());
                }
                Late::BytesReceived => {
                    let _ = write!(out, "{received}");
                }
                Late::Upstream | Late::UpstreamJson => match upstream {
                    Some((_, Some(t))) => {
                        let _ = write!(out, "{:.3}", t.as_secs_f64());
                    }
                    _ if late == Late::Upstream => out.push(b'-'),
                    _ => {}
                },
                Late::UpstreamAddr | Late::UpstreamAddrJson => match upstream {
                    Some((addr, _)) if late == Late::UpstreamAddr => push_escaped(out, addr),
                    Some((addr, _)) => crate::json_text::push_escaped(out, addr),
                    None if late == Late::UpstreamAddr => out.push(b'-'),
                    None => {}
                },
                Late::UpstreamSuffix => {
                    if let Some((addr, time)) = upstream {
                        out.extend_from_slice(b" upstream=");
                        push_escaped(out, addr);
                        match time {
                            Some(t) => {
                                let _ = write!(out, " upstream_time={:.3}", t.as_secs_f64());
                            }
                            None => out.extend_from_slice(b" upstream_time=-"),
                        }
                    }
                }
            }
        }
        out.extend_from_slice(&text[from..]);
        access.line_done();
        self.buf.clear();
        self.text = 0;
    }

    /// Takes the buffer back (nothing pending after this).
    pub fn take_buffer(&mut self) -> Vec<u8> {
        self.text = 0;
        std::mem::take(&mut self.buf)
    }
}

/// The last byte of a line buffer that holds an upstream trailer (hole kinds are below it and
/// a line's text ends in a newline).
const TRAILER: u8 = 0xFF;

/// An upstream trailer read back.
struct UpstreamTrailer<'a> {
    /// Where the trailer starts (the holes end there).
    at: usize,
    addr: &'a [u8],
    time: Option<Duration>,
    received: u64,
}

fn upstream_of(buf: &[u8]) -> Option<UpstreamTrailer<'_>> {
    let (&last, rest) = buf.split_last()?;
    if last != TRAILER || rest.len() < 14 {
        return None;
    }
    let n = rest.len();
    let len = usize::from(u16::from_le_bytes([rest[n - 2], rest[n - 1]]));
    let ms = u32::from_le_bytes([rest[n - 6], rest[n - 5], rest[n - 4], rest[n - 3]]);
    let mut recv = [0u8; 8];
    recv.copy_from_slice(&rest[n - 14..n - 6]);
    let at = (n - 14).checked_sub(len)?;
    Some(UpstreamTrailer {
        at,
        addr: &rest[at..n - 14],
        time: (ms != u32::MAX).then(|| Duration::from_millis(u64::from(ms))),
        received: u64::from_le_bytes(recv),
    })
}

/// Writes the line of a connection refused before any request was read (no request line):
/// `bytes` is the size of the answer written.
pub fn write_refusal(
    access: &mut AccessLog,
    format: &LogFormat,
    peer: (&str, u16),
    clf_date: &str,
    status: u16,
    bytes: usize,
) {
    let mut line = PendingLine::default();
    let facts = Facts {
        peer_ip: peer.0,
        peer_port: peer.1,
        clf_date,
        subject: Subject::Nothing,
        status,
        user: None,
        tls_version: None,
    };
    line.start(Vec::new(), format, facts);
    line.finish(access, bytes as u64, 0);
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
        let fmt = LogFormat::combined();
        let facts = |ip, subject, status| Facts {
            peer_ip: ip,
            peer_port: 1,
            clf_date: "D",
            subject,
            status,
            user: None,
            tls_version: None,
        };
        line.start(
            Vec::new(),
            &fmt,
            facts("1.2.3.4", Subject::Request(&req), 200),
        );
        assert!(line.is_pending());
        line.finish(&mut log, 12, 0);
        assert!(!line.is_pending());
        let refused = Subject::Refused(b"\x01BAD\r\nrest");
        line.start(Vec::new(), &fmt, facts("5.6.7.8", refused, 400));
        line.finish(&mut log, 0, 0);
        let mut as_user = facts("1.2.3.4", Subject::Request(&req), 200);
        as_user.user = Some("al ice");
        line.start(Vec::new(), &fmt, as_user);
        line.finish(&mut log, 1, 0);
        line.start(
            Vec::new(),
            &fmt,
            facts("1.2.3.4", Subject::Request(&req), 502),
        );
        line.add_upstream("127.0.0.1:3000", Some(Duration::from_millis(12)), 0);
        line.finish(&mut log, 0, 0);
        write_refusal(&mut log, &fmt, ("9.9.9.9", 2), "D", 503, 77);
        log.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            text,
            "1.2.3.4 - - [D] \"GET /a?\\\"x HTTP/1.1\" 200 12 \"-\" \"ua\"\n\
             5.6.7.8 - - [D] \"\\x01BAD\" 400 - \"-\" \"-\"\n\
             1.2.3.4 - al_ice [D] \"GET /a?\\\"x HTTP/1.1\" 200 1 \"-\" \"ua\"\n\
             1.2.3.4 - - [D] \"GET /a?\\\"x HTTP/1.1\" 502 - \"-\" \"ua\" upstream=127.0.0.1:3000 upstream_time=0.012\n\
             9.9.9.9 - - [D] \"\" 503 77 \"-\" \"-\"\n"
        );
    }

    #[test]
    fn tls_version_is_the_connections_or_absent() {
        let req = crate::http::request::parse(b"GET /t HTTP/1.1\r\nHost: h\r\n\r\n", 8192)
            .unwrap()
            .unwrap();
        let fmt = LogFormat::parse("[$tls_version]").unwrap();
        let mut line = PendingLine::default();
        for (v, want) in [(Some("TLSv1.3"), "[TLSv1.3]\n"), (None, "[-]\n")] {
            let facts = Facts {
                peer_ip: "1.2.3.4",
                peer_port: 1,
                clf_date: "D",
                subject: Subject::Request(&req),
                status: 200,
                user: None,
                tls_version: v,
            };
            line.start(Vec::new(), &fmt, facts);
            assert_eq!(String::from_utf8_lossy(&line.buf), want);
            line.take_buffer();
        }
    }

    #[test]
    fn bytes_received_is_the_tunnels_count_or_zero() {
        let dir = std::env::temp_dir().join(format!("lh-recv-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("a.log");
        let mut log = AccessLog::new(LogFile::open(&path).unwrap());
        let req = crate::http::request::parse(b"GET /ws HTTP/1.1\r\nHost: h\r\n\r\n", 8192)
            .unwrap()
            .unwrap();
        let fmt =
            LogFormat::parse("$status $body_bytes_sent $bytes_received $upstream_addr").unwrap();
        let facts = |status| Facts {
            peer_ip: "1.2.3.4",
            peer_port: 1,
            clf_date: "D",
            subject: Subject::Request(&req),
            status,
            user: None,
            tls_version: None,
        };
        let mut line = PendingLine::default();
        line.start(Vec::new(), &fmt, facts(101));
        line.add_upstream("u:1", Some(Duration::from_millis(1)), 123_456_789_012);
        line.finish(&mut log, 42, 0);
        line.start(Vec::new(), &fmt, facts(200));
        line.finish(&mut log, 7, 0);
        log.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(text, "101 42 123456789012 u:1\n200 7 0 -\n");
    }
}
