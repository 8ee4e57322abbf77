//! The chunked decoder: the same result however the input is cut, it never reads past the end
//! of the body, and decoding what a chunked encoder wrote gives the body back.

use super::split::{pieces, Rng};
use crate::http::chunked::{ChunkError, ChunkedDecoder};

/// What decoding some input gave: data, bytes consumed, whether the body ended; or the error.
type Outcome = Result<(Vec<u8>, usize, bool), ChunkError>;

/// Decodes `input` fed as `pieces`, stopping at the end of the body or the first error.
fn decode_pieces(pieces: &[&[u8]]) -> Outcome {
    let mut d = ChunkedDecoder::new();
    let mut data = Vec::new();
    let mut consumed = 0;
    for piece in pieces {
        let p = d.decode(piece, &mut |b| data.extend_from_slice(b))?;
        assert!(p.consumed <= piece.len());
        assert!(
            p.done || p.consumed == piece.len(),
            "stopped early, not done"
        );
        assert_eq!(p.done, d.is_done());
        consumed += p.consumed;
        if p.done {
            // Once done it consumes nothing more.
            let again = d.decode(piece, &mut |_| panic!("data after the end"))?;
            assert_eq!((again.consumed, again.done), (0, true));
            return Ok((data, consumed, true));
        }
    }
    Ok((data, consumed, false))
}

fn whole(input: &[u8]) -> Outcome {
    decode_pieces(&[input])
}

fn bytewise(input: &[u8]) -> Outcome {
    let v: Vec<&[u8]> = input.chunks(1).collect();
    decode_pieces(&v)
}

/// Fuzz target `chunked`: `data` is read both as a chunked body to decode and as a body to
/// encode and decode back.
pub fn chunked(data: &[u8]) {
    let one = whole(data);
    assert_eq!(bytewise(data), one, "byte by byte differs from one piece");
    assert_eq!(decode_pieces(&pieces(data, 17)), one, "pieces differ");
    if let Ok((decoded, consumed, done)) = &one {
        assert!(*consumed <= data.len());
        assert!(decoded.len() <= *consumed);
        if *done {
            assert!(data[..*consumed].ends_with(b"\r\n"));
            // The end is found in the body alone, and whatever follows stays unread.
            let body = &data[..*consumed];
            assert_eq!(whole(body), one);
            let mut more = body.to_vec();
            more.extend_from_slice(b"GET / HTTP/1.1\r\n");
            assert_eq!(whole(&more), one);
        } else {
            assert_eq!(*consumed, data.len());
        }
    }

    let encoded = encode(data, &mut Rng::from_data(data));
    let back = Ok((data.to_vec(), encoded.len(), true));
    assert_eq!(
        whole(&encoded),
        back,
        "round trip of {:?}",
        String::from_utf8_lossy(&encoded)
    );
    assert_eq!(bytewise(&encoded), back);
    assert_eq!(decode_pieces(&pieces(&encoded, 7)), back);
}

/// A chunked encoding of `body` exercising what a client may legally send: chunk sizes of
/// any split, either letter case and leading zeros in the size, chunk extensions (tokens and
/// quoted strings), BWS before them, and trailer fields.
pub(crate) fn encode(body: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() * 2 + 64);
    let mut rest = body;
    while !rest.is_empty() {
        let n = rng.range(1, 40).min(rest.len());
        size_line(&mut out, n, rng);
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[n..];
    }
    size_line(&mut out, 0, rng);
    for _ in 0..rng.range(0, 2) {
        out.extend_from_slice(b"X-Trailer-Sum: 1 2\t3\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// One chunk-size line for `n` bytes.
fn size_line(out: &mut Vec<u8>, n: usize, rng: &mut Rng) {
    for _ in 0..rng.range(0, 2) {
        out.push(b'0');
    }
    let hex = if rng.next().is_multiple_of(2) {
        format!("{n:x}")
    } else {
        format!("{n:X}")
    };
    out.extend_from_slice(hex.as_bytes());
    match rng.next() % 4 {
        0 => out.extend_from_slice(b";name"),
        1 => out.extend_from_slice(b" ;a=b;c=\"q \\\" ;\""),
        2 => out.extend_from_slice(b"\t; x = y"),
        _ => {}
    }
    out.extend_from_slice(b"\r\n");
}
