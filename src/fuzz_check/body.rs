//! The request-body reader (`http::body::BodyReader`): the same verdict however the input is
//! cut, never a byte consumed past the body's end, never more data to the sink than the limit,
//! a Content-Length body is exactly its first n bytes, a chunked body agrees with the chunked
//! decoder, and a body chunk-encoded by a client reads back to itself.

use super::chunked::encode;
use super::split::{pieces, Rng};
use crate::http::body::{BodyError, BodyReader};
use crate::http::chunked::ChunkedDecoder;
use crate::http::request::BodyFraming;

/// What reading some input gave: data, bytes consumed, whether the body ended; or the error.
type Outcome = Result<(Vec<u8>, usize, bool), BodyError>;

/// Reads `pieces` (one input cut up) with a fresh reader, as a connection feeds its buffer:
/// what a call did not consume is offered again with the next piece.
fn read_pieces(framing: BodyFraming, limit: u64, pieces: &[&[u8]]) -> Outcome {
    let mut r = BodyReader::new(framing, limit)?;
    let mut data = Vec::new();
    let mut consumed = 0;
    let mut pending: Vec<u8> = Vec::new();
    if r.is_done() {
        return Ok((data, 0, true));
    }
    for piece in pieces {
        pending.extend_from_slice(piece);
        let mut sink = |d: &[u8]| {
            assert!(!d.is_empty(), "an empty slice passed to the sink");
            data.extend_from_slice(d);
        };
        let fed = r.feed(&pending, &mut sink)?;
        assert!(fed.consumed <= pending.len(), "consumed more than offered");
        assert_eq!(fed.done, r.is_done());
        assert!(
            data.len() as u64 <= limit,
            "{} data bytes passed with a limit of {limit}",
            data.len()
        );
        assert_eq!(data.len() as u64, r.received());
        consumed += fed.consumed;
        pending.drain(..fed.consumed);
        if fed.done {
            // Once done it consumes nothing more.
            let again = r.feed(b"x", &mut |_| panic!("data after the end"))?;
            assert_eq!((again.consumed, again.done), (0, true));
            return Ok((data, consumed, true));
        }
        // Not done: everything offered was taken (nothing can be left for a later piece).
        assert!(pending.is_empty(), "stopped early, not done");
    }
    Ok((data, consumed, false))
}

/// Every cut of `input`: one piece, byte by byte, random pieces; all must agree.
fn read_every_way(framing: BodyFraming, limit: u64, input: &[u8]) -> Outcome {
    let one = read_pieces(framing, limit, &[input]);
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(
        read_pieces(framing, limit, &bytes),
        one,
        "byte by byte differs from one piece ({framing:?}, limit {limit})"
    );
    assert_eq!(
        read_pieces(framing, limit, &pieces(input, 13)),
        one,
        "pieces differ from one piece ({framing:?}, limit {limit})"
    );
    one
}

/// The chunked decoder's own reading of `input`: data, consumed, done, or None on its error.
fn decoder_reading(input: &[u8]) -> Option<(Vec<u8>, usize, bool)> {
    let mut d = ChunkedDecoder::new();
    let mut data = Vec::new();
    let p = d.decode(input, &mut |b| data.extend_from_slice(b)).ok()?;
    Some((data, p.consumed, p.done))
}

/// Fuzz target `request_body`. `data[0]` picks the framing (bit 0: chunked) and the limit
/// (bits 1–2: none, `data[3..5]`, 0, `data[5]`); `data[1..3]` is a Content-Length (u16, big
/// endian); the rest is what the client sent after the head. The rest is also chunk-encoded
/// and read back.
pub fn request_body(data: &[u8]) {
    let byte = |i: usize| data.get(i).copied().unwrap_or(0);
    let flags = byte(0);
    let length = u64::from(u16::from_be_bytes([byte(1), byte(2)]));
    let limit = match (flags >> 1) & 3 {
        0 => u64::MAX,
        1 => u64::from(u16::from_be_bytes([byte(3), byte(4)])),
        2 => 0,
        _ => u64::from(byte(5)),
    };
    let input = data.get(6..).unwrap_or_default();

    if flags & 1 == 0 {
        let got = read_every_way(BodyFraming::Length(length), limit, input);
        if length > limit {
            assert_eq!(got, Err(BodyError::TooLarge { limit }));
        } else {
            let n = (length as usize).min(input.len());
            assert_eq!(got, Ok((input[..n].to_vec(), n, n as u64 == length)));
        }
    } else {
        let got = read_every_way(BodyFraming::Chunked, limit, input);
        // Against the decoder alone: the same data and end, or an error; over the limit
        // (and only then) TooLarge.
        match (&got, decoder_reading(input)) {
            (Ok(ours), Some(theirs)) => {
                assert_eq!(ours, &theirs, "the reader and the decoder disagree");
                assert!(theirs.0.len() as u64 <= limit);
            }
            (Err(BodyError::TooLarge { limit: l }), theirs) => {
                assert_eq!(*l, limit);
                // The decoder got past the limit in data (before any framing error it has).
                if let Some((d, _, _)) = theirs {
                    assert!(d.len() as u64 > limit, "TooLarge under the limit");
                }
            }
            (Err(BodyError::Chunked(_)), None) => {}
            (Err(BodyError::Chunked(e)), Some(t)) => {
                panic!("reader refused ({e:?}) what the decoder read: {t:?}")
            }
            (Ok(ours), None) => panic!("reader accepted what the decoder refused: {ours:?}"),
        }
        // Whatever follows a complete body stays unread.
        if let Ok((_, consumed, true)) = &got {
            let mut more = input[..*consumed].to_vec();
            more.extend_from_slice(b"GET / HTTP/1.1\r\n");
            assert_eq!(read_pieces(BodyFraming::Chunked, limit, &[&more]), got);
        }
    }

    // A client's chunked encoding of the input reads back to it; one byte under its length
    // as the limit gives TooLarge in every cut.
    let encoded = encode(input, &mut Rng::from_data(data));
    let len = input.len() as u64;
    assert_eq!(
        read_every_way(BodyFraming::Chunked, len, &encoded),
        Ok((input.to_vec(), encoded.len(), true))
    );
    if len > 0 {
        assert_eq!(
            read_every_way(BodyFraming::Chunked, len - 1, &encoded),
            Err(BodyError::TooLarge { limit: len - 1 })
        );
    }
    // And the input as a Content-Length body of its own length.
    assert_eq!(
        read_every_way(BodyFraming::Length(len), len, input),
        Ok((input.to_vec(), input.len(), true))
    );
}

#[cfg(test)]
mod tests {
    use super::request_body;

    /// The header bytes: chunked, limit from byte 5.
    fn chunked_with_limit(limit: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![0b111, 0, 0, 0, 0, limit];
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn over_the_limit_then_malformed_is_413_in_every_cut() {
        // "hello" passes the limit of 3 before the bad size line: the verdict must not depend
        // on whether both arrive in one read.
        request_body(&chunked_with_limit(3, b"5\r\nhello\r\nzz\r\n"));
    }

    #[test]
    fn ordinary_bodies_hold_every_property() {
        request_body(&chunked_with_limit(100, b"5\r\nhello\r\n0\r\n\r\nGET /"));
        request_body(&[0, 0, 5, 0, 0, 0, b'h', b'e', b'l', b'l', b'o', b'G']);
        request_body(&[0b010, 0, 9, 0, 4, 0, b'a', b'b']);
        request_body(b"");
    }
}
