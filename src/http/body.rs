//! A sans-IO request-body reader: Content-Length or chunked framing, with a size limit.
//!
//! One reader serves every use of a request body: dropping an unwanted one, forwarding one to
//! a backend, spooling one to a file. The caller hands it whatever input it has (any split,
//! down to one byte at a time); the reader passes the body's data bytes to a sink, consumes
//! exactly the body's bytes and never one past its end, so a pipelined request that follows
//! stays in the caller's buffer.

use super::chunked::{ChunkError, ChunkedDecoder};
use super::request::BodyFraming;

/// Why a body cannot be read further; the connection must close after the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// The chunked framing is malformed (400).
    Chunked(ChunkError),
    /// The body is larger than the limit (413).
    TooLarge {
        /// The limit that was passed.
        limit: u64,
    },
}

impl BodyError {
    /// The status code that answers this error.
    pub fn status(self) -> u16 {
        match self {
            BodyError::Chunked(_) => 400,
            BodyError::TooLarge { .. } => 413,
        }
    }

    /// A short reason for the error log.
    pub fn reason(self) -> &'static str {
        match self {
            BodyError::Chunked(ChunkError::BadSize) => "bad chunk size",
            BodyError::Chunked(ChunkError::BadLineEnd) => "bad line end in chunked body",
            BodyError::Chunked(ChunkError::BadTrailer) => "bad chunk extension or trailer",
            BodyError::TooLarge { .. } => "request body over the limit",
        }
    }
}

/// What one call to [`BodyReader::feed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fed {
    /// Input bytes consumed (framing included).
    pub consumed: usize,
    /// Whether the whole body has now been read.
    pub done: bool,
}

/// How the body is framed, with the reader's position in it.
#[derive(Debug, Clone)]
enum Frame {
    /// Content-Length: this many bytes still to come.
    Length(u64),
    /// Chunked: the decoder's state.
    Chunked(ChunkedDecoder),
}

/// Reads one request body from input handed to it in pieces.
#[derive(Debug, Clone)]
pub struct BodyReader {
    frame: Frame,
    /// Data bytes passed to the sink so far.
    received: u64,
    limit: u64,
}

impl BodyReader {
    /// A reader for a body framed as `framing`, refusing one of more than `limit` data bytes.
    /// A Content-Length over the limit is refused here, before any byte is read; a chunked body
    /// is refused when its data passes the limit. `BodyFraming::None` gives a reader that is
    /// done at once.
    pub fn new(framing: BodyFraming, limit: u64) -> Result<BodyReader, BodyError> {
        let frame = match framing {
            BodyFraming::None => Frame::Length(0),
            BodyFraming::Length(n) if n > limit => return Err(BodyError::TooLarge { limit }),
            BodyFraming::Length(n) => Frame::Length(n),
            BodyFraming::Chunked => Frame::Chunked(ChunkedDecoder::new()),
        };
        Ok(BodyReader {
            frame,
            received: 0,
            limit,
        })
    }

    /// Whether the whole body has been read.
    pub fn is_done(&self) -> bool {
        match &self.frame {
            Frame::Length(left) => *left == 0,
            Frame::Chunked(d) => d.is_done(),
        }
    }

    /// The Content-Length bytes still to come; None for a chunked body (not known).
    pub fn remaining(&self) -> Option<u64> {
        match &self.frame {
            Frame::Length(left) => Some(*left),
            Frame::Chunked(_) => None,
        }
    }

    /// Data bytes read so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Consumes body bytes from the front of `input`, passing the data to `sink`. Stops at the
    /// end of the body. After an error the reader must not be used again.
    pub fn feed(&mut self, input: &[u8], sink: &mut dyn FnMut(&[u8])) -> Result<Fed, BodyError> {
        match &mut self.frame {
            Frame::Length(left) => {
                let n = (*left).min(input.len() as u64) as usize;
                if n > 0 {
                    sink(&input[..n]);
                }
                *left -= n as u64;
                self.received += n as u64;
                Ok(Fed {
                    consumed: n,
                    done: *left == 0,
                })
            }
            Frame::Chunked(decoder) => {
                let limit = self.limit;
                let mut received = self.received;
                let mut over = false;
                let decoded = decoder.decode(input, &mut |data| {
                    received += data.len() as u64;
                    if received > limit {
                        over = true;
                    } else if !over {
                        sink(data);
                    }
                });
                self.received = received;
                // Data past the limit came before any framing error in this input: 413 then,
                // as it would be had the input arrived in smaller reads (found by fuzzing).
                if over {
                    return Err(BodyError::TooLarge { limit });
                }
                let p = decoded.map_err(BodyError::Chunked)?;
                Ok(Fed {
                    consumed: p.consumed,
                    done: p.done,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes; returns (data, consumed, done) or the error.
    fn read_in_steps(
        framing: BodyFraming,
        limit: u64,
        input: &[u8],
        step: usize,
    ) -> Result<(Vec<u8>, usize, bool), BodyError> {
        let mut r = BodyReader::new(framing, limit)?;
        let mut data = Vec::new();
        let mut pos = 0;
        let mut done = r.is_done();
        while pos < input.len() && !done {
            let end = (pos + step).min(input.len());
            let fed = r.feed(&input[pos..end], &mut |d| data.extend_from_slice(d))?;
            assert!(fed.consumed <= end - pos);
            // A reader that consumes nothing without being done would never finish.
            assert!(fed.consumed > 0 || fed.done, "stuck at {pos}");
            pos += fed.consumed;
            done = fed.done;
        }
        assert_eq!(data.len() as u64, r.received());
        Ok((data, pos, done))
    }

    const CHUNKED: &[u8] =
        b"5;ext=\"a b\"\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\nGET / HTTP/1.1\r\n";

    #[test]
    fn byte_by_byte_equals_whole_for_both_framings() {
        let cases: [(BodyFraming, &[u8]); 2] = [
            (BodyFraming::Length(11), b"hello worldGET / HTTP/1.1\r\n"),
            (BodyFraming::Chunked, CHUNKED),
        ];
        for (framing, input) in cases {
            let whole = read_in_steps(framing, 1 << 20, input, input.len()).unwrap();
            for step in 1..8 {
                let pieces = read_in_steps(framing, 1 << 20, input, step).unwrap();
                assert_eq!(pieces, whole, "{framing:?} in steps of {step}");
            }
            assert_eq!(whole.0, b"hello world");
            assert!(whole.2);
            // The pipelined request after the body is not consumed.
            assert_eq!(&input[whole.1..], b"GET / HTTP/1.1\r\n");
        }
    }

    #[test]
    fn content_length_over_the_limit_is_refused_before_reading() {
        assert_eq!(
            BodyReader::new(BodyFraming::Length(11), 10).unwrap_err(),
            BodyError::TooLarge { limit: 10 }
        );
        assert!(BodyReader::new(BodyFraming::Length(10), 10).is_ok());
    }

    #[test]
    fn chunked_over_the_limit_stops_passing_data_in_any_split() {
        for step in [1, 3, CHUNKED.len()] {
            let mut r = BodyReader::new(BodyFraming::Chunked, 8).unwrap();
            let mut data = Vec::new();
            let mut err = None;
            let mut pos = 0;
            while pos < CHUNKED.len() {
                let end = (pos + step).min(CHUNKED.len());
                match r.feed(&CHUNKED[pos..end], &mut |d| data.extend_from_slice(d)) {
                    Ok(f) => pos += f.consumed,
                    Err(e) => {
                        err = Some(e);
                        break;
                    }
                }
            }
            assert_eq!(err, Some(BodyError::TooLarge { limit: 8 }), "step {step}");
            assert!(data.len() <= 8, "step {step}: {} bytes passed", data.len());
            assert_eq!(err.map(BodyError::status), Some(413));
        }
    }

    #[test]
    fn data_over_the_limit_before_bad_framing_is_413_however_the_input_is_cut() {
        let input = b"5\r\nhello\r\nzz\r\n";
        for step in [1, 2, 5, input.len()] {
            assert_eq!(
                read_in_steps(BodyFraming::Chunked, 3, input, step).unwrap_err(),
                BodyError::TooLarge { limit: 3 },
                "step {step}"
            );
        }
    }

    #[test]
    fn malformed_chunked_is_a_400_with_a_reason() {
        let mut r = BodyReader::new(BodyFraming::Chunked, 100).unwrap();
        let e = r.feed(b"zz\r\n", &mut |_| {}).unwrap_err();
        assert_eq!(e.status(), 400);
        assert_eq!(e.reason(), "bad chunk size");
    }

    #[test]
    fn no_body_is_done_at_once_and_length_reports_what_is_left() {
        let r = BodyReader::new(BodyFraming::None, 0).unwrap();
        assert!(r.is_done());
        let mut r = BodyReader::new(BodyFraming::Length(5), 5).unwrap();
        let fed = r.feed(b"abc", &mut |_| {}).unwrap();
        assert_eq!(
            fed,
            Fed {
                consumed: 3,
                done: false
            }
        );
        assert_eq!(r.remaining(), Some(2));
        assert_eq!(
            BodyReader::new(BodyFraming::Chunked, 5)
                .unwrap()
                .remaining(),
            None
        );
    }
}
