//! Admin protocol frames: the incremental decoder gives the same frames however the bytes
//! arrive and agrees with the blocking reader; frames and messages round-trip.

use std::io::Cursor;

use serde_json::Value;

use super::split::pieces;
use crate::admin::protocol::{
    encode_frame, error_response, eval_request, ok_response, parse_request, parse_response,
    read_frame, FrameDecoder, Hello, ProtocolError, MAX_FRAME,
};

/// One result of [`FrameDecoder::next_frame`], comparable.
#[derive(Debug)]
enum Got {
    Frame(Value),
    NotJson,
    TooLarge(usize),
}

impl PartialEq for Got {
    fn eq(&self, other: &Got) -> bool {
        match (self, other) {
            (Got::Frame(a), Got::Frame(b)) => same_json(a, b),
            (Got::NotJson, Got::NotJson) => true,
            (Got::TooLarge(a), Got::TooLarge(b)) => a == b,
            _ => false,
        }
    }
}

/// JSON equality, with numbers equal when they are within a rounding step (serde_json without
/// `float_roundtrip` may read a printed float back one ulp away).
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if x == y {
                return true;
            }
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => (x - y).abs() <= x.abs().max(y.abs()) * 1e-15,
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_json(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((ka, va), (kb, vb))| ka == kb && same_json(va, vb))
        }
        _ => a == b,
    }
}

/// Feeds `pieces` to a decoder, taking out every frame after each piece, as the server does.
/// Returns what came out and how many bytes were left buffered.
fn decode_pieces(pieces: &[&[u8]]) -> (Vec<Got>, usize) {
    let mut d = FrameDecoder::new();
    let mut got = Vec::new();
    for piece in pieces {
        d.feed(piece);
        loop {
            match d.next_frame() {
                Ok(Some(v)) => got.push(Got::Frame(v)),
                Ok(None) => break,
                Err(ProtocolError::Json(_)) => got.push(Got::NotJson),
                Err(ProtocolError::TooLarge(n)) => {
                    assert!(n > MAX_FRAME);
                    got.push(Got::TooLarge(n));
                    // Final: the connection is closed, whatever is still buffered.
                    return (got, 0);
                }
                Err(e) => panic!("decoder gave {e:?}"),
            }
        }
    }
    (got, d.buffered())
}

/// Fuzz target `admin_frame`: `data` is what a peer wrote on the admin socket.
pub fn admin_frame(data: &[u8]) {
    let one = decode_pieces(&[data]);
    let bytes: Vec<&[u8]> = data.chunks(1).collect();
    assert_eq!(
        decode_pieces(&bytes),
        one,
        "byte by byte differs from one piece"
    );
    assert_eq!(decode_pieces(&pieces(data, 9)), one, "pieces differ");

    // The blocking reader sees the same first frame.
    let first = read_frame(&mut Cursor::new(data));
    match (one.0.first(), first) {
        (Some(Got::Frame(a)), Ok(b)) => assert!(same_json(a, &b)),
        (Some(Got::NotJson), Err(ProtocolError::Json(_))) => {}
        (Some(Got::TooLarge(a)), Err(ProtocolError::TooLarge(b))) => assert_eq!(*a, b),
        (None, Err(ProtocolError::Closed)) => assert!(data.is_empty()),
        (None, Err(ProtocolError::Truncated)) => assert!(!data.is_empty()),
        (a, b) => panic!("decoder {a:?}, reader {b:?}"),
    }

    for got in &one.0 {
        if let Got::Frame(v) = got {
            round_trip(v);
        }
    }
}

/// A frame encodes back to a frame of the same value; the message readers agree with the
/// message writers.
fn round_trip(v: &Value) {
    match encode_frame(v) {
        Ok(bytes) => {
            let (got, left) = decode_pieces(&[&bytes]);
            assert_eq!(left, 0);
            assert_eq!(got, vec![Got::Frame(v.clone())], "frame did not round-trip");
        }
        Err(ProtocolError::TooLarge(n)) => assert!(n > MAX_FRAME),
        Err(e) => panic!("encoding a decoded value failed: {e}"),
    }
    let _ = Hello::from_json(v);
    if let Ok(chunk) = parse_request(v) {
        assert_eq!(parse_request(&eval_request(&chunk)), Ok(chunk));
    }
    match parse_response(v) {
        Ok(Ok(value)) => {
            assert!(matches!(
                parse_response(&ok_response(value.clone())),
                Ok(Ok(x)) if same_json(&x, &value)
            ));
        }
        Ok(Err(message)) => {
            assert!(matches!(
                parse_response(&error_response(&message)),
                Ok(Err(m)) if m == message
            ));
        }
        Err(_) => {}
    }
}
