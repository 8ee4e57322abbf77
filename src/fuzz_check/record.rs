//! FastCGI records: the decoder gives the same events however its input is cut and keeps its
//! progress contract; records and name-value pairs round-trip through encoder and decoder.

use super::split::pieces;
use crate::fastcgi::record::{
    decode_params, encode_pair, end_request, header, params, stderr, stdout, Decoder, Event,
    Header, RecordError, END_REQUEST, HEADER_LEN, MAX_CONTENT, PARAMS, STDERR, STDOUT,
};

/// The request id the decoder under test reads.
const ID: u16 = 1;

/// Everything a decoder reported, in a comparable form.
#[derive(Debug, Default, PartialEq, Eq)]
struct Seen {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    ends: Vec<(u32, u8)>,
    error: Option<RecordError>,
}

/// Decodes `input` fed as `pieces`, checking the progress contract of every call.
fn decode_pieces(pieces: &[&[u8]]) -> Seen {
    let mut d = Decoder::new(ID);
    let mut seen = Seen::default();
    for piece in pieces {
        let mut piece = *piece;
        while !piece.is_empty() {
            let (n, ev) = match d.decode(piece) {
                Ok(x) => x,
                Err(e) => {
                    seen.error = Some(e);
                    return seen;
                }
            };
            assert!(n <= piece.len());
            assert!(n > 0 || ev.is_some(), "no progress");
            assert!(ev.is_some() || n == piece.len(), "stopped without an event");
            piece = &piece[n..];
            match ev {
                Some(Event::Stdout(b)) => {
                    assert!(!b.is_empty());
                    seen.stdout.extend_from_slice(b);
                }
                Some(Event::Stderr(b)) => {
                    assert!(!b.is_empty());
                    seen.stderr.extend_from_slice(b);
                }
                Some(Event::End {
                    app_status,
                    protocol_status,
                }) => {
                    assert!(d.at_boundary(), "END_REQUEST reported inside a record");
                    seen.ends.push((app_status, protocol_status));
                }
                None => {}
            }
        }
    }
    seen
}

fn all_ways(input: &[u8]) -> Seen {
    let one = decode_pieces(&[input]);
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(
        decode_pieces(&bytes),
        one,
        "byte by byte differs from one piece"
    );
    assert_eq!(decode_pieces(&pieces(input, 13)), one, "pieces differ");
    one
}

/// Fuzz target `fastcgi_record`: `data` is read as what a backend sent, as a script of
/// records to encode and decode back, and as a PARAMS stream.
pub fn fastcgi_record(data: &[u8]) {
    all_ways(data);
    round_trip_records(data);
    round_trip_params(data);
}

/// Encodes records chosen by `data` (our STDOUT and STDERR, other ids, management and
/// unknown types, any padding), then checks the decoder gives exactly our content back.
fn round_trip_records(data: &[u8]) {
    let mut out = Vec::new();
    let mut want = Seen::default();
    let mut rest = data;
    while let [op, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (content, tail) = tail.split_at(n);
        rest = tail;
        let padding = op >> 5;
        let (rtype, id) = match op & 7 {
            0 | 1 => (STDOUT, ID),
            2 => (STDERR, ID),
            3 => (STDOUT, ID.wrapping_add(u16::from(*len) | 1)),
            4 => (PARAMS, ID),
            5 => (STDOUT, 0),
            6 => (0xc8, ID),
            _ => (END_REQUEST, 7),
        };
        let start = out.len();
        header(&mut out, rtype, id, n as u16);
        out[start + 6] = padding;
        out.extend_from_slice(content);
        out.extend(std::iter::repeat_n(op ^ 0x5a, usize::from(padding)));
        if id == ID {
            match rtype {
                STDOUT => want.stdout.extend_from_slice(content),
                STDERR => want.stderr.extend_from_slice(content),
                _ => {}
            }
        }
        // Empty STDOUT/STDERR records mark the end of the stream and carry nothing.
    }
    // Big content is split at the record limit.
    if data.first() == Some(&0xff) {
        let big: Vec<u8> = data.iter().copied().cycle().take(MAX_CONTENT + 3).collect();
        stdout(&mut out, ID, &big);
        want.stdout.extend_from_slice(&big);
    }
    stderr(&mut out, ID, b"");
    let status = u32::from_be_bytes([0, 0, data.len() as u8, data.first().copied().unwrap_or(0)]);
    end_request(&mut out, ID, status, 0);
    want.ends.push((status, 0));
    if out.len() <= 8192 {
        assert_eq!(all_ways(&out), want, "records did not round-trip");
    } else {
        // Byte by byte through 64 KiB would slow the fuzzer down a hundredfold.
        assert_eq!(decode_pieces(&[&out]), want, "records did not round-trip");
        assert_eq!(
            decode_pieces(&pieces(&out, 4096)),
            want,
            "records in pieces"
        );
    }
}

/// Name-value pairs: whatever decodes re-encodes canonically to the same pairs, and pairs
/// written as PARAMS records (which may straddle records) decode back.
fn round_trip_params(data: &[u8]) {
    if let Ok(pairs) = decode_params(data) {
        let mut again = Vec::new();
        for (n, v) in &pairs {
            encode_pair(&mut again, n, v).unwrap_or_else(|e| panic!("{e}"));
        }
        assert!(
            again.len() <= data.len(),
            "canonical form longer than the input"
        );
        assert_eq!(decode_params(&again), Ok(pairs));
    }

    // Pairs from the input: NUL-separated names and values.
    let mut fields = data.split(|&b| b == 0);
    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    while let Some(name) = fields.next() {
        let value = fields.next().unwrap_or_default();
        pairs.push((name.to_vec(), value.to_vec()));
    }
    if data.first() == Some(&0xfe) {
        // One value larger than a record, so the stream has to straddle records.
        let big: Vec<u8> = data
            .iter()
            .copied()
            .cycle()
            .take(MAX_CONTENT + 10)
            .collect();
        pairs.push((b"BIG".to_vec(), big));
    }
    let mut out = Vec::new();
    let encoded = params(
        &mut out,
        ID,
        pairs.iter().map(|(n, v)| (n.as_slice(), v.as_slice())),
    );
    assert_eq!(encoded, Ok(()));
    let mut content = Vec::new();
    let mut rest = out.as_slice();
    let mut last_len = None;
    while let Some((h, tail)) = rest.split_first_chunk::<HEADER_LEN>() {
        let h = Header::parse(h);
        assert_eq!(
            (h.version, h.rtype, h.id, h.padding_len),
            (1, PARAMS, ID, 0)
        );
        let n = usize::from(h.content_len);
        assert!(n <= MAX_CONTENT && n <= tail.len());
        content.extend_from_slice(&tail[..n]);
        rest = &tail[n..];
        last_len = Some(n);
    }
    assert!(rest.is_empty(), "trailing bytes after the PARAMS records");
    assert_eq!(
        last_len,
        Some(0),
        "PARAMS stream not ended by an empty record"
    );
    assert_eq!(decode_params(&content), Ok(pairs));
}
