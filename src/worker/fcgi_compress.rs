//! Compression of a backend's response (FastCGI, CGI, HTTP proxy): whether its head allows
//! it, and the head rewritten for the coded body (Content-Encoding, Vary, the ETag of the
//! variant). Sans-IO; the exchange feeds the body through `CodedBody`, whose encoder keeps
//! memory bounded however long the body streams. The framing becomes chunked (HTTP/1.1) or
//! close-delimited (HTTP/1.0), since the coded length is not known up front.

use super::out::Out;
use crate::compress::encoder::Encoder;
use crate::config::static_opts::{Coding, Compress};
use crate::fastcgi::cgi_head::CgiHead;

/// What an admitted request allows: the coding its Accept-Encoding chose and the settings.
#[derive(Debug, Clone)]
pub struct Offer {
    /// The negotiated coding.
    pub coding: Coding,
    /// The site's compression settings.
    pub settings: Compress,
}

/// The offer for a request, None when the site does not compress or the client takes no coding.
pub fn offer(req: &crate::http::request::Request, settings: Option<&Compress>) -> Option<Offer> {
    let settings = settings?;
    let values = req
        .headers()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"accept-encoding"))
        .map(|(_, v)| v);
    let coding = crate::compress::negotiate(values, &settings.encodings)?;
    Some(Offer {
        coding,
        settings: settings.clone(),
    })
}

/// Decides for a backend's response head; when it is to be coded, rewrites `head` and returns
/// the encoder its body goes through.
pub fn plan(offer: Option<&Offer>, head: &mut CgiHead) -> Option<Encoder> {
    let offer = offer?;
    let mut out = Vec::new();
    if !plan_lines(
        offer,
        head.status,
        head.content_length,
        &head.headers,
        &mut out,
    ) {
        return None;
    }
    let encoder = offer.encoder()?;
    head.headers = out;
    head.content_length = None;
    Some(encoder)
}

impl Offer {
    /// A fresh encoder for the negotiated coding at the configured level.
    pub fn encoder(&self) -> Option<Encoder> {
        Encoder::new(self.coding, self.settings.level, self.settings.zstd_level)
    }
}

/// Decides for a response of `status` whose forwarded header lines (`Name: value\r\n`, no
/// framing fields) are `lines` and whose backend announced `content_length`: true when its
/// body is to be coded, and then `into` gets the lines rewritten for the coded variant (the
/// ETag of the variant, Content-Encoding, Vary). The one rule for FastCGI, CGI and proxied
/// responses; the caller drops the backend's Content-Length (the coded length is unknown).
pub fn plan_lines(
    offer: &Offer,
    status: u16,
    content_length: Option<u64>,
    lines_in: &[u8],
    into: &mut Vec<u8>,
) -> bool {
    let s = &offer.settings;
    // 200-203 only: a 206 is a range of identity bytes, 204/304 have no body.
    if !(200..=203).contains(&status) {
        return false;
    }
    if content_length.is_some_and(|n| n < s.min_size) {
        return false;
    }
    let mut content_type = None;
    for (name, value) in lines(lines_in) {
        if name.eq_ignore_ascii_case(b"content-encoding")
            || name.eq_ignore_ascii_case(b"content-range")
        {
            return false; // already coded, or a part
        }
        if name.eq_ignore_ascii_case(b"cache-control")
            && value
                .split(|&b| b == b',')
                .any(|d| d.trim_ascii().eq_ignore_ascii_case(b"no-transform"))
        {
            return false; // RFC 9111 §5.2.2.6
        }
        if name.eq_ignore_ascii_case(b"content-type") {
            content_type = std::str::from_utf8(value).ok();
        }
    }
    if !content_type.is_some_and(|t| s.compresses(t)) {
        return false;
    }
    into.reserve(lines_in.len() + 64);
    for (name, value) in lines(lines_in) {
        into.extend_from_slice(name);
        into.extend_from_slice(b": ");
        if name.eq_ignore_ascii_case(b"etag") {
            into.extend_from_slice(&variant_etag(value, offer.coding));
        } else {
            into.extend_from_slice(value);
        }
        into.extend_from_slice(b"\r\n");
    }
    into.extend_from_slice(b"Content-Encoding: ");
    into.extend_from_slice(offer.coding.token().as_bytes());
    into.extend_from_slice(b"\r\nVary: Accept-Encoding\r\n");
    true
}

/// Runs a backend's body bytes through the response's encoder, if it has one (FastCGI, CGI
/// and proxy alike): what goes to the framing. `flush` at the end of a read, so a streamed response
/// reaches the client without waiting for more input. On an error the encoder is dropped and
/// the caller cuts the response (no last chunk), which shows the client the truncation.
fn code<'a>(
    encoder: &mut Option<Encoder>,
    bytes: &'a [u8],
    flush: bool,
) -> std::io::Result<std::borrow::Cow<'a, [u8]>> {
    let Some(enc) = encoder.as_mut() else {
        return Ok(std::borrow::Cow::Borrowed(bytes));
    };
    if bytes.is_empty() && !flush {
        return Ok(std::borrow::Cow::Borrowed(&[]));
    }
    match enc.write(bytes, flush) {
        Ok(coded) => Ok(std::borrow::Cow::Owned(coded)),
        Err(e) => {
            *encoder = None;
            Err(e)
        }
    }
}

/// Ends the encoder, if any: the coded stream's last bytes (trailer, checksum).
fn finish(encoder: &mut Option<Encoder>) -> std::io::Result<Vec<u8>> {
    match encoder.take() {
        Some(e) => e.finish(),
        None => Ok(Vec::new()),
    }
}

/// `"x"` → `"x-gzip"`, `W/"x"` → `W/"x-gzip"`; anything else as it is.
fn variant_etag(value: &[u8], coding: Coding) -> Vec<u8> {
    match value.strip_suffix(b"\"") {
        Some(inner) if value.len() >= 2 => {
            let mut v = inner.to_vec();
            v.push(b'-');
            v.extend_from_slice(coding.token().as_bytes());
            v.push(b'"');
            v
        }
        _ => value.to_vec(),
    }
}

/// How a backend's response body is framed to the client (FastCGI and CGI alike; a coded
/// proxied body is `Chunked` or `Close`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length` bytes still to send.
    Length(u64),
    /// Chunked (HTTP/1.1, no length known).
    Chunked,
    /// Delimited by closing the connection (HTTP/1.0, no length known).
    Close,
    /// No body (HEAD, 204, 304): backend bytes are dropped.
    None,
}

impl Framing {
    /// The framing of a response of `head` (after `plan`, so a coded one has no length) to
    /// a client of `version`.
    pub fn choose(head: &CgiHead, head_only: bool, version: crate::http::request::Version) -> Self {
        if head_only || crate::http::status::forbids_body(head.status) {
            Framing::None
        } else if let Some(n) = head.content_length {
            Framing::Length(n)
        } else if version == crate::http::request::Version::Http11 {
            Framing::Chunked
        } else {
            Framing::Close
        }
    }

    /// What the response head says of this framing (a HEAD answer keeps the backend's
    /// length).
    pub fn head(self, head: &CgiHead, head_only: bool) -> crate::http::response::Framing {
        use crate::http::response::Framing as H;
        match (self, head.content_length) {
            (Framing::Length(n), _) => H::Length(n),
            (Framing::Chunked, _) => H::Chunked,
            (Framing::None, Some(n)) if head_only => H::Length(n),
            _ => H::Unframed,
        }
    }
}

/// A backend's response body on its way to the client: its framing and, when it is coded,
/// its encoder. One value for FastCGI, CGI and the proxy's coded bodies, so all code and
/// frame a body the same way.
pub struct CodedBody {
    /// The framing; `None` once the body is cut.
    pub framing: Framing,
    encoder: Option<Encoder>,
}

impl CodedBody {
    /// A body framed as `framing`, coded through `encoder` if any (from `plan`).
    pub fn new(framing: Framing, encoder: Option<Encoder>) -> CodedBody {
        CodedBody { framing, encoder }
    }

    /// Whether the body goes through an encoder.
    pub fn is_coded(&self) -> bool {
        self.encoder.is_some()
    }

    /// Codes (if coded) and frames backend body bytes into `out`; `flush` at the end of a
    /// read, so a streamed response reaches the client without waiting for more input.
    /// Ok(true): more bytes than announced came, so the client connection must close. An
    /// encoder error cuts the body (nothing more goes out, no last chunk): the caller logs it
    /// and closes, which shows the client the truncation.
    pub fn push(&mut self, bytes: &[u8], flush: bool, out: &mut Out) -> std::io::Result<bool> {
        if self.framing == Framing::None {
            // HEAD, 204, 304 or a cut body: nothing is coded or sent.
            return Ok(false);
        }
        match code(&mut self.encoder, bytes, flush) {
            Ok(coded) => Ok(self.frame(&coded, out)),
            Err(e) => {
                self.framing = Framing::None;
                Err(e)
            }
        }
    }

    /// Ends the body: the encoder's last bytes, then the last chunk when chunked. Ok(true):
    /// fewer bytes than announced went out, so only closing shows the client the truncation.
    pub fn end(&mut self, out: &mut Out) -> std::io::Result<bool> {
        match finish(&mut self.encoder) {
            Ok(tail) => {
                let over = self.frame(&tail, out);
                match self.framing {
                    Framing::Chunked => {
                        out.push_framing(b"0\r\n\r\n");
                        Ok(over)
                    }
                    Framing::Length(left) => Ok(over || left > 0),
                    _ => Ok(over),
                }
            }
            Err(e) => {
                self.framing = Framing::None;
                Err(e)
            }
        }
    }

    /// Frames bytes ready to go; true when more came than announced (the rest is dropped).
    fn frame(&mut self, bytes: &[u8], out: &mut Out) -> bool {
        if bytes.is_empty() {
            return false;
        }
        match &mut self.framing {
            Framing::None => false,
            Framing::Close => {
                out.push_body(bytes);
                false
            }
            Framing::Chunked => {
                out.push_framing(format!("{:x}\r\n", bytes.len()).as_bytes());
                out.push_body(bytes);
                out.push_framing(b"\r\n");
                false
            }
            Framing::Length(left) => {
                // More than announced: send what was announced, then close.
                let n = (*left).min(bytes.len() as u64) as usize;
                out.push_body(&bytes[..n]);
                *left -= n as u64;
                n < bytes.len()
            }
        }
    }
}

/// The `Name: value` lines of a forwarded head.
fn lines(headers: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    headers.split(|&b| b == b'\n').filter_map(|l| {
        let l = l.strip_suffix(b"\r").unwrap_or(l);
        let colon = l.iter().position(|&b| b == b':')?;
        Some((&l[..colon], l[colon + 1..].trim_ascii()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(status: u16, headers: &str, len: Option<u64>) -> CgiHead {
        CgiHead {
            status,
            headers: headers.as_bytes().to_vec(),
            content_length: len,
            head_len: 0,
        }
    }

    fn gzip() -> Offer {
        Offer {
            coding: Coding::Gzip,
            settings: Compress::default(),
        }
    }

    #[test]
    fn codes_compressible_types_and_rewrites_the_head() {
        let mut h = head(
            200,
            "Content-Type: text/html; charset=UTF-8\r\nETag: \"v1\"\r\nX-A: b\r\n",
            Some(5000),
        );
        assert!(plan(Some(&gzip()), &mut h).is_some());
        let text = String::from_utf8(h.headers).unwrap();
        assert!(text.contains("ETag: \"v1-gzip\"\r\n"), "{text}");
        assert!(text.contains("Content-Encoding: gzip\r\n"), "{text}");
        assert!(text.contains("Vary: Accept-Encoding\r\n"), "{text}");
        assert!(text.contains("X-A: b\r\n"), "{text}");
        assert_eq!(h.content_length, None);
        assert_eq!(variant_etag(b"W/\"x\"", Coding::Zstd), b"W/\"x-zstd\"");
    }

    #[test]
    fn leaves_what_must_not_be_coded() {
        for (status, headers, len) in [
            (200, "Content-Type: image/png\r\n", None),
            (
                200,
                "Content-Type: text/html\r\nContent-Encoding: gzip\r\n",
                None,
            ),
            (
                200,
                "Content-Type: text/html\r\nCache-Control: public, no-transform\r\n",
                None,
            ),
            (
                206,
                "Content-Type: text/html\r\nContent-Range: bytes 0-1/9\r\n",
                None,
            ),
            (404, "Content-Type: text/html\r\n", None),
            (200, "Content-Type: text/html\r\n", Some(10)),
            (200, "X-No-Type: 1\r\n", None),
        ] {
            let mut h = head(status, headers, len);
            let before = h.headers.clone();
            assert!(plan(Some(&gzip()), &mut h).is_none(), "{headers}");
            assert_eq!(h.headers, before);
        }
        let mut h = head(200, "Content-Type: text/html\r\n", None);
        assert!(plan(None, &mut h).is_none());
    }

    #[test]
    fn code_and_finish_pass_through_without_an_encoder() {
        let mut none = None;
        assert_eq!(&*code(&mut none, b"abc", true).unwrap(), b"abc");
        assert!(finish(&mut none).unwrap().is_empty());
        let mut h = head(200, "Content-Type: text/plain\r\n", None);
        let mut enc = plan(Some(&gzip()), &mut h);
        let mut out = code(&mut enc, b"hello hello hello", true)
            .unwrap()
            .into_owned();
        out.extend(finish(&mut enc).unwrap());
        assert!(enc.is_none());
        let mut back = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&out[..]), &mut back)
            .unwrap();
        assert_eq!(back, "hello hello hello");
    }
}
