//! Compression of a FastCGI response: whether its head allows it, and the head rewritten for
//! the coded body (Content-Encoding, Vary, the ETag of the variant). Sans-IO; the exchange
//! feeds the body through the returned encoder, which keeps memory bounded however long the
//! body streams. The framing becomes chunked (HTTP/1.1) or close-delimited (HTTP/1.0), since
//! the coded length is not known up front.

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
    let s = &offer.settings;
    // 200-203 only: a 206 is a range of identity bytes, 204/304 have no body.
    if !(200..=203).contains(&head.status) {
        return None;
    }
    if head.content_length.is_some_and(|n| n < s.min_size) {
        return None;
    }
    let mut content_type = None;
    for (name, value) in lines(&head.headers) {
        if name.eq_ignore_ascii_case(b"content-encoding")
            || name.eq_ignore_ascii_case(b"content-range")
        {
            return None; // already coded, or a part
        }
        if name.eq_ignore_ascii_case(b"cache-control")
            && value
                .split(|&b| b == b',')
                .any(|d| d.trim_ascii().eq_ignore_ascii_case(b"no-transform"))
        {
            return None; // RFC 9111 §5.2.2.6
        }
        if name.eq_ignore_ascii_case(b"content-type") {
            content_type = std::str::from_utf8(value).ok();
        }
    }
    if !content_type.is_some_and(|t| s.compresses(t)) {
        return None;
    }
    let encoder = Encoder::new(offer.coding, s.level, s.zstd_level)?;
    let mut out = Vec::with_capacity(head.headers.len() + 64);
    for (name, value) in lines(&head.headers) {
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        if name.eq_ignore_ascii_case(b"etag") {
            out.extend_from_slice(&variant_etag(value, offer.coding));
        } else {
            out.extend_from_slice(value);
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Content-Encoding: ");
    out.extend_from_slice(offer.coding.token().as_bytes());
    out.extend_from_slice(b"\r\nVary: Accept-Encoding\r\n");
    head.headers = out;
    head.content_length = None;
    Some(encoder)
}

/// Runs a backend's body bytes through the response's encoder, if it has one (FastCGI and CGI
/// alike): what goes to the framing. `flush` at the end of a read, so a streamed response
/// reaches the client without waiting for more input. On an error the encoder is dropped and
/// the caller cuts the response (no last chunk), which shows the client the truncation.
pub fn code<'a>(
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
pub fn finish(encoder: &mut Option<Encoder>) -> std::io::Result<Vec<u8>> {
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
