//! Response head encoding: the status line, the server's own fields (Date, Server, framing,
//! Connection) and a handler's header lines, with a route decision's lines replacing the
//! handler's of the same name.

use super::request::Version;
use super::status;

/// How the body that follows the head is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length: n` (also for HEAD, where the body is not sent).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// No framing field: 1xx/204/304, or a body delimited by closing the connection.
    Unframed,
}

/// What the `Connection` field says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connection {
    /// `Connection: close`.
    Close,
    /// `Connection: keep-alive` (an HTTP/1.0 client that asked for it).
    KeepAlive,
    /// Nothing (HTTP/1.1 keeps the connection by default).
    Default,
}

/// What the Connection field says for a response that closes (or not) the connection to a
/// client of this version: HTTP/1.1 keeps by default, HTTP/1.0 must be told.
pub fn connection_field(close: bool, version: Version) -> Connection {
    if close {
        Connection::Close
    } else if version == Version::Http10 {
        Connection::KeepAlive
    } else {
        Connection::Default
    }
}

/// A response head to write.
#[derive(Debug, Clone, Copy)]
pub struct Head<'a> {
    /// The status code.
    pub status: u16,
    /// The Date value.
    pub date: &'a str,
    /// The Server value.
    pub server: &'a str,
    /// The handler's header lines, each ending in CRLF.
    pub headers: &'a [u8],
    /// Lines that replace the handler's lines of the same names (and Date or Server, when
    /// they name them); several lines of one name all go out.
    pub overrides: &'a [u8],
    /// Body framing.
    pub framing: Framing,
    /// The Connection field.
    pub connection: Connection,
}

/// Appends the head to `buf`, ending with the empty line. Written with byte copies and
/// [`push_decimal`], not `write!`: the formatting machinery was a tenth of a static
/// response's CPU cost.
pub fn write_head(buf: &mut Vec<u8>, h: &Head<'_>) {
    buf.reserve(160 + h.date.len() + h.server.len() + h.headers.len() + h.overrides.len());
    buf.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(buf, u64::from(h.status));
    buf.push(b' ');
    buf.extend_from_slice(status::reason(h.status).as_bytes());
    buf.extend_from_slice(b"\r\n");
    let overridden = |name: &str| !h.overrides.is_empty() && has_header_line(h.overrides, name);
    if !overridden("date") {
        push_line(buf, b"Date: ", h.date.as_bytes());
    }
    if !overridden("server") {
        push_line(buf, b"Server: ", h.server.as_bytes());
    }
    if h.overrides.is_empty() {
        buf.extend_from_slice(h.headers);
    } else {
        for line in h.headers.split_inclusive(|&b| b == b'\n') {
            if !header_name(line).is_some_and(|n| has_header_line(h.overrides, n)) {
                buf.extend_from_slice(line);
            }
        }
        buf.extend_from_slice(h.overrides);
    }
    match h.framing {
        Framing::Length(n) => {
            buf.extend_from_slice(b"Content-Length: ");
            push_decimal(buf, n);
            buf.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => buf.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        Framing::Unframed => {}
    }
    match h.connection {
        Connection::Close => buf.extend_from_slice(b"Connection: close\r\n"),
        Connection::KeepAlive => buf.extend_from_slice(b"Connection: keep-alive\r\n"),
        Connection::Default => {}
    }
    buf.extend_from_slice(b"\r\n");
}

/// Appends `name` (with its ": "), `value` and CRLF.
fn push_line(buf: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    buf.extend_from_slice(name);
    buf.extend_from_slice(value);
    buf.extend_from_slice(b"\r\n");
}

/// Appends `n` in decimal ASCII.
pub fn push_decimal(buf: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[at..]);
}

/// The name of a `name: value` line.
fn header_name(line: &[u8]) -> Option<&str> {
    let colon = line.iter().position(|&b| b == b':')?;
    std::str::from_utf8(&line[..colon]).ok()
}

/// Whether a block of header lines has a line called `name` (ASCII case-insensitive).
pub fn has_header_line(headers: &[u8], name: &str) -> bool {
    headers.split(|&b| b == b'\n').any(|line| {
        line.len() > name.len()
            && line[name.len()] == b':'
            && line[..name.len()].eq_ignore_ascii_case(name.as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head<'a>(headers: &'a [u8], overrides: &'a [u8]) -> Head<'a> {
        Head {
            status: 404,
            date: "D",
            server: "S",
            headers,
            overrides,
            framing: Framing::Length(12),
            connection: Connection::Default,
        }
    }

    #[test]
    fn decimals_are_written_as_format_would() {
        for n in [0, 7, 10, 200, 1024, 65_535, u64::MAX] {
            let mut buf = b"x".to_vec();
            push_decimal(&mut buf, n);
            assert_eq!(buf, format!("x{n}").into_bytes());
        }
    }

    #[test]
    fn connection_field_tells_an_http10_client_it_stays_open() {
        assert_eq!(connection_field(true, Version::Http11), Connection::Close);
        assert_eq!(connection_field(true, Version::Http10), Connection::Close);
        assert_eq!(
            connection_field(false, Version::Http10),
            Connection::KeepAlive
        );
        assert_eq!(
            connection_field(false, Version::Http11),
            Connection::Default
        );
    }

    #[test]
    fn writes_status_line_defaults_headers_and_framing() {
        let mut buf = Vec::new();
        let mut h = head(b"X-A: 1\r\n", b"");
        h.connection = Connection::Close;
        write_head(&mut buf, &h);
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "HTTP/1.1 404 Not Found\r\nDate: D\r\nServer: S\r\nX-A: 1\r\n\
             Content-Length: 12\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn overrides_replace_lines_of_their_names_and_keep_their_repeats() {
        let mut buf = Vec::new();
        let h = head(
            b"Content-Type: text/html\r\nLocation: /a\r\nX-Keep: 1\r\n",
            b"location: /b\r\nserver: mine\r\nset-cookie: a=1\r\nset-cookie: b=2\r\n",
        );
        write_head(&mut buf, &h);
        let text = String::from_utf8(buf).unwrap();
        assert!(
            !text.contains("/a\r\n") && text.contains("location: /b\r\n"),
            "{text}"
        );
        assert!(
            !text.contains("Server: S") && text.contains("server: mine"),
            "{text}"
        );
        assert!(
            text.contains("Date: D") && text.contains("X-Keep: 1"),
            "{text}"
        );
        assert!(text.contains("Content-Type: text/html"), "{text}");
        assert_eq!(text.matches("set-cookie").count(), 2, "{text}");
    }
}
