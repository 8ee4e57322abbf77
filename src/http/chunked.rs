//! A strict, sans-IO decoder for the chunked transfer coding (RFC 9112 §7.1).
//!
//! The decoder is a byte-level state machine: input may arrive in pieces of any size (down to
//! one byte at a time) and partial state is kept between calls. Chunk data is passed through to
//! the caller's sink without copying. The decoder never consumes a byte past the final CRLF, so
//! whatever follows in the buffer (a pipelined request) stays with the caller.
//!
//! Limits: chunk-size is at most 16 hex digits; a chunk-size line (size and extensions) is at
//! most [`MAX_SIZE_LINE`] bytes; the trailer section (fields and final CRLF) is at most
//! [`MAX_TRAILERS`] bytes. Chunk extensions are checked loosely (they must start with ';',
//! quoted strings must be closed, no control bytes) and otherwise ignored. Trailer fields are
//! validated as header lines (token name, colon without whitespace before it, no control bytes
//! in the value, no obs-fold) and then discarded.

/// The longest chunk-size line accepted, extensions included, CRLF excluded.
pub const MAX_SIZE_LINE: usize = 4096;
/// The largest trailer section accepted, final CRLF included.
pub const MAX_TRAILERS: usize = 8192;
/// The most hex digits accepted in a chunk size.
const MAX_SIZE_DIGITS: u8 = 16;

/// Why a chunked body was refused (400 and close).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    /// Bad chunk-size digits, overflow, or a size line too long.
    BadSize,
    /// A missing or bare-LF line end.
    BadLineEnd,
    /// A malformed chunk extension or trailer.
    BadTrailer,
}

/// Whether `b` is a token character (RFC 9110 §5.6.2 tchar).
#[inline]
pub(crate) fn is_tchar(b: u8) -> bool {
    matches!(b,
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9'
        | b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.'
        | b'^' | b'_' | b'`' | b'|' | b'~')
}

/// Whether `b` is a control byte other than HTAB.
#[inline]
fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// Where the decoder is within the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    /// Reading the hex digits of a chunk size.
    #[default]
    Size,
    /// After the digits: optional whitespace and chunk extensions up to CR.
    Ext,
    /// Saw CR at the end of the size line; expecting LF.
    SizeLf,
    /// Reading chunk data; `remaining` bytes left.
    Data,
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or of the final CRLF).
    TrailerStart,
    /// Inside a trailer field name.
    TrailerName,
    /// Inside a trailer field value.
    TrailerValue,
    /// Saw CR at the end of a trailer line; expecting LF.
    TrailerLf,
    /// Saw the final CR; expecting the final LF.
    FinalLf,
    /// The whole body has been read.
    Done,
}

/// Incremental chunked decoder.
#[derive(Debug, Clone, Default)]
pub struct ChunkedDecoder {
    state: State,
    /// The chunk size being read, then the data bytes left in the current chunk.
    remaining: u64,
    /// Hex digits read in the current size line.
    digits: u8,
    /// Bytes read in the current size line.
    line_len: usize,
    /// Within the extensions: a ';' has been seen.
    ext_started: bool,
    /// Within the extensions: inside a quoted string.
    in_quote: bool,
    /// Within a quoted string: the previous byte was a backslash.
    escape: bool,
    /// Bytes read in the trailer section.
    trailer_len: usize,
}

/// What one call to `decode` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Input bytes consumed.
    pub consumed: usize,
    /// Whether the whole body (including trailers and the final CRLF) has been read.
    pub done: bool,
}

impl ChunkedDecoder {
    /// A decoder at the start of a body.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the whole body has been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes as much of `input` as possible, passing decoded data to `out`.
    ///
    /// Stops right after the final CRLF: bytes after it are not consumed. Once done, further
    /// calls consume nothing and report `done`. After an error the decoder must not be used
    /// again (the connection is to be closed).
    pub fn decode(
        &mut self,
        input: &[u8],
        out: &mut dyn FnMut(&[u8]),
    ) -> Result<Progress, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Done => break,
                State::Data => {
                    let avail = (input.len() - i) as u64;
                    let n = self.remaining.min(avail) as usize;
                    out(&input[i..i + n]);
                    i += n;
                    self.remaining -= n as u64;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                }
                _ => {
                    let b = input[i];
                    i += 1;
                    self.step(b)?;
                }
            }
        }
        Ok(Progress {
            consumed: i,
            done: self.state == State::Done,
        })
    }

    /// Advances the state machine by one byte outside chunk data.
    fn step(&mut self, b: u8) -> Result<(), ChunkError> {
        match self.state {
            State::Size => {
                if let Some(d) = hex_val(b) {
                    self.count_line()?;
                    if self.digits >= MAX_SIZE_DIGITS {
                        return Err(ChunkError::BadSize);
                    }
                    self.digits += 1;
                    self.remaining = self
                        .remaining
                        .checked_mul(16)
                        .and_then(|v| v.checked_add(u64::from(d)))
                        .ok_or(ChunkError::BadSize)?;
                } else if self.digits == 0 {
                    return Err(ChunkError::BadSize);
                } else {
                    self.state = State::Ext;
                    return self.step_ext(b);
                }
            }
            State::Ext => return self.step_ext(b),
            State::SizeLf => {
                if b != b'\n' {
                    return Err(ChunkError::BadLineEnd);
                }
                self.state = if self.remaining == 0 {
                    State::TrailerStart
                } else {
                    State::Data
                };
            }
            State::DataCr => {
                if b != b'\r' {
                    return Err(ChunkError::BadLineEnd);
                }
                self.state = State::DataLf;
            }
            State::DataLf => {
                if b != b'\n' {
                    return Err(ChunkError::BadLineEnd);
                }
                self.start_size_line();
            }
            State::TrailerStart => {
                self.count_trailer()?;
                match b {
                    b'\r' => self.state = State::FinalLf,
                    b'\n' => return Err(ChunkError::BadLineEnd),
                    _ if is_tchar(b) => self.state = State::TrailerName,
                    // Includes SP / HTAB at the start of a line: obs-fold.
                    _ => return Err(ChunkError::BadTrailer),
                }
            }
            State::TrailerName => {
                self.count_trailer()?;
                match b {
                    b':' => self.state = State::TrailerValue,
                    b'\n' => return Err(ChunkError::BadLineEnd),
                    _ if is_tchar(b) => {}
                    _ => return Err(ChunkError::BadTrailer),
                }
            }
            State::TrailerValue => {
                self.count_trailer()?;
                match b {
                    b'\r' => self.state = State::TrailerLf,
                    b'\n' => return Err(ChunkError::BadLineEnd),
                    _ if is_ctl(b) => return Err(ChunkError::BadTrailer),
                    _ => {}
                }
            }
            State::TrailerLf => {
                self.count_trailer()?;
                if b != b'\n' {
                    return Err(ChunkError::BadLineEnd);
                }
                self.state = State::TrailerStart;
            }
            State::FinalLf => {
                if b != b'\n' {
                    return Err(ChunkError::BadLineEnd);
                }
                self.state = State::Done;
            }
            // `decode` handles these without calling `step`.
            State::Data | State::Done => {}
        }
        Ok(())
    }

    /// One byte of the size line after the digits: BWS, extensions, or the CR that ends it.
    fn step_ext(&mut self, b: u8) -> Result<(), ChunkError> {
        if b == b'\n' {
            return Err(ChunkError::BadLineEnd);
        }
        if self.in_quote {
            self.count_line()?;
            if self.escape {
                if is_ctl(b) {
                    return Err(ChunkError::BadTrailer);
                }
                self.escape = false;
            } else {
                match b {
                    b'\\' => self.escape = true,
                    b'"' => self.in_quote = false,
                    _ if is_ctl(b) => return Err(ChunkError::BadTrailer),
                    _ => {}
                }
            }
            return Ok(());
        }
        if b == b'\r' {
            self.state = State::SizeLf;
            return Ok(());
        }
        self.count_line()?;
        match b {
            b' ' | b'\t' | b';' => {
                if b == b';' {
                    self.ext_started = true;
                }
                Ok(())
            }
            _ if !self.ext_started => Err(ChunkError::BadSize),
            b'"' => {
                self.in_quote = true;
                Ok(())
            }
            b'=' => Ok(()),
            _ if is_tchar(b) => Ok(()),
            _ => Err(ChunkError::BadTrailer),
        }
    }

    /// Counts one byte of the size line against its limit.
    #[inline]
    fn count_line(&mut self) -> Result<(), ChunkError> {
        self.line_len += 1;
        if self.line_len > MAX_SIZE_LINE {
            return Err(ChunkError::BadSize);
        }
        Ok(())
    }

    /// Counts one byte of the trailer section against its limit.
    #[inline]
    fn count_trailer(&mut self) -> Result<(), ChunkError> {
        self.trailer_len += 1;
        if self.trailer_len > MAX_TRAILERS {
            return Err(ChunkError::BadTrailer);
        }
        Ok(())
    }

    /// Resets the per-line state for the next chunk-size line.
    fn start_size_line(&mut self) {
        self.state = State::Size;
        self.remaining = 0;
        self.digits = 0;
        self.line_len = 0;
        self.ext_started = false;
        self.in_quote = false;
        self.escape = false;
    }
}

/// The value of an ASCII hex digit.
#[inline]
fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` in one call: (data, consumed, done).
    fn whole(input: &[u8]) -> Result<(Vec<u8>, usize, bool), ChunkError> {
        let mut d = ChunkedDecoder::new();
        let mut data = Vec::new();
        let p = d.decode(input, &mut |b| data.extend_from_slice(b))?;
        Ok((data, p.consumed, p.done))
    }

    /// Decodes `input` one byte at a time: (data, consumed, done).
    fn bytewise(input: &[u8]) -> Result<(Vec<u8>, usize, bool), ChunkError> {
        let mut d = ChunkedDecoder::new();
        let mut data = Vec::new();
        let mut consumed = 0;
        for b in input {
            let p = d.decode(std::slice::from_ref(b), &mut |b| data.extend_from_slice(b))?;
            consumed += p.consumed;
            if p.done {
                return Ok((data, consumed, true));
            }
        }
        Ok((data, consumed, false))
    }

    fn both(input: &[u8]) -> Result<(Vec<u8>, usize, bool), ChunkError> {
        let a = whole(input);
        let b = bytewise(input);
        assert_eq!(
            a,
            b,
            "whole vs bytewise differ for {:?}",
            String::from_utf8_lossy(input)
        );
        a
    }

    #[test]
    fn simple_body() {
        let body = b"4\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\n\r\n";
        let (data, consumed, done) = both(body).unwrap();
        assert_eq!(data, b"Wikipedia in\r\n\r\nchunks.");
        assert_eq!(consumed, body.len());
        assert!(done);
    }

    #[test]
    fn empty_body() {
        assert_eq!(both(b"0\r\n\r\n").unwrap(), (vec![], 5, true));
        assert_eq!(both(b"000\r\n\r\n").unwrap(), (vec![], 7, true));
    }

    #[test]
    fn stops_at_end_of_body() {
        let input = b"3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
        let (data, consumed, done) = both(input).unwrap();
        assert_eq!(data, b"abc");
        assert_eq!(consumed, 13);
        assert!(done);
        // Further calls consume nothing.
        let mut d = ChunkedDecoder::new();
        let p = d.decode(input, &mut |_| {}).unwrap();
        assert_eq!(p.consumed, 13);
        assert!(d.is_done());
        let p = d.decode(&input[13..], &mut |_| {}).unwrap();
        assert_eq!(
            p,
            Progress {
                consumed: 0,
                done: true
            }
        );
    }

    #[test]
    fn incomplete_is_not_done() {
        for input in [
            &b"3\r\nab"[..],
            b"3\r\nabc\r\n",
            b"0\r\n",
            b"0\r\n\r",
            b"0\r\nX: y\r\n",
            b"1",
        ] {
            let (_, consumed, done) = both(input).unwrap();
            assert_eq!(consumed, input.len());
            assert!(!done);
        }
    }

    #[test]
    fn hex_sizes() {
        let (data, _, done) = both(b"a\r\n0123456789\r\nA\r\n0123456789\r\n0\r\n\r\n").unwrap();
        assert_eq!(data.len(), 20);
        assert!(done);
    }

    #[test]
    fn extensions() {
        for input in [
            &b"3;foo\r\nabc\r\n0\r\n\r\n"[..],
            b"3;foo=bar\r\nabc\r\n0\r\n\r\n",
            b"3 ; foo = bar ; baz\r\nabc\r\n0;x\r\n\r\n",
            b"3;foo=\"a;b \\\" c\"\r\nabc\r\n0\r\n\r\n",
            b"3\t;a=b\r\nabc\r\n0\r\n\r\n",
        ] {
            let (data, consumed, done) = both(input).unwrap();
            assert_eq!(data, b"abc");
            assert_eq!(consumed, input.len());
            assert!(done);
        }
    }

    #[test]
    fn bad_extensions() {
        assert_eq!(
            both(b"3;foo\x01\r\nabc\r\n0\r\n\r\n"),
            Err(ChunkError::BadTrailer)
        );
        assert_eq!(
            both(b"3;a=\"x\rb\"\r\nabc\r\n"),
            Err(ChunkError::BadTrailer)
        );
        assert_eq!(
            both(b"3;a=\"x\x7f\"\r\nabc\r\n"),
            Err(ChunkError::BadTrailer)
        );
        assert_eq!(both(b"3;a=@\r\nabc\r\n"), Err(ChunkError::BadTrailer));
        assert_eq!(both(b"3 x\r\nabc\r\n"), Err(ChunkError::BadSize));
        let mut long = b"1;".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_SIZE_LINE));
        long.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
        assert_eq!(both(&long), Err(ChunkError::BadSize));
    }

    #[test]
    fn bad_sizes() {
        assert_eq!(both(b"\r\n"), Err(ChunkError::BadSize));
        assert_eq!(both(b"x\r\n"), Err(ChunkError::BadSize));
        assert_eq!(both(b";a\r\n"), Err(ChunkError::BadSize));
        assert_eq!(both(b"-1\r\n"), Err(ChunkError::BadSize));
        assert_eq!(both(b"+1\r\n"), Err(ChunkError::BadSize));
        assert_eq!(both(b" 1\r\n"), Err(ChunkError::BadSize));
        assert_eq!(both(b"0x1\r\n"), Err(ChunkError::BadSize));
        assert_eq!(both(b"1g\r\n"), Err(ChunkError::BadSize));
        // 17 digits.
        assert_eq!(both(b"10000000000000000\r\n"), Err(ChunkError::BadSize));
        // 16 digits are fine (the body is just not complete).
        assert_eq!(
            both(b"ffffffffffffffff\r\nab").unwrap(),
            (b"ab".to_vec(), 20, false)
        );
    }

    #[test]
    fn bad_line_ends() {
        assert_eq!(both(b"3\nabc\r\n0\r\n\r\n"), Err(ChunkError::BadLineEnd));
        assert_eq!(both(b"3\rabc"), Err(ChunkError::BadLineEnd));
        assert_eq!(both(b"3\r\nabc\n0\r\n\r\n"), Err(ChunkError::BadLineEnd));
        assert_eq!(both(b"3\r\nabcd\r\n"), Err(ChunkError::BadLineEnd));
        assert_eq!(both(b"3\r\nabc\rX"), Err(ChunkError::BadLineEnd));
        assert_eq!(both(b"3;a\n"), Err(ChunkError::BadLineEnd));
        assert_eq!(both(b"0\r\n\n"), Err(ChunkError::BadLineEnd));
        assert_eq!(both(b"0\r\n\rX"), Err(ChunkError::BadLineEnd));
        assert_eq!(both(b"0\r\nA: b\n\r\n"), Err(ChunkError::BadLineEnd));
        assert_eq!(both(b"0\r\nA: b\rX"), Err(ChunkError::BadLineEnd));
        assert_eq!(both(b"0\r\nA\n"), Err(ChunkError::BadLineEnd));
    }

    #[test]
    fn trailers() {
        let input = b"3\r\nabc\r\n0\r\nExpires: never\r\nX-Sum:\r\nA: b\tc\r\n\r\nnext";
        let (data, consumed, done) = both(input).unwrap();
        assert_eq!(data, b"abc");
        assert_eq!(consumed, input.len() - 4);
        assert!(done);
    }

    #[test]
    fn bad_trailers() {
        assert_eq!(both(b"0\r\nA : b\r\n\r\n"), Err(ChunkError::BadTrailer));
        assert_eq!(both(b"0\r\n: b\r\n\r\n"), Err(ChunkError::BadTrailer));
        assert_eq!(
            both(b"0\r\nA: b\r\n c\r\n\r\n"),
            Err(ChunkError::BadTrailer)
        );
        assert_eq!(both(b"0\r\nA: b\x00\r\n\r\n"), Err(ChunkError::BadTrailer));
        assert_eq!(both(b"0\r\nA: b\x7f\r\n\r\n"), Err(ChunkError::BadTrailer));
        assert_eq!(both(b"0\r\nA(: b\r\n\r\n"), Err(ChunkError::BadTrailer));
        let mut big = b"0\r\n".to_vec();
        for _ in 0..1000 {
            big.extend_from_slice(b"X-Long: 0123456789\r\n");
        }
        big.extend_from_slice(b"\r\n");
        assert_eq!(both(&big), Err(ChunkError::BadTrailer));
    }

    #[test]
    fn random_splits_match_whole() {
        let body =
            b"4\r\nWiki\r\n5;x=\"y\"\r\npedia\r\n10\r\n0123456789abcdef\r\n0\r\nT: v\r\n\r\nrest";
        let mut m = crate::http::mutate::Mutator::new(0x1234_5678_9abc_def0);
        for _ in 0..500 {
            let mut d = ChunkedDecoder::new();
            let mut data = Vec::new();
            let mut pos = 0;
            while pos < body.len() && !d.is_done() {
                let n = (m.next() % 7 + 1) as usize;
                let end = (pos + n).min(body.len());
                let p = d
                    .decode(&body[pos..end], &mut |b| data.extend_from_slice(b))
                    .unwrap();
                if p.consumed < end - pos {
                    assert!(p.done);
                }
                pos += p.consumed;
            }
            assert!(d.is_done());
            assert_eq!(pos, body.len() - 4);
            assert_eq!(data, b"Wikipedia0123456789abcdef");
        }
    }

    #[test]
    fn never_panics_on_random_input() {
        let seeds: [&[u8]; 3] = [
            b"4\r\nWiki\r\n5;a=\"b\"\r\npedia\r\n0\r\nT: v\r\n\r\n",
            b"ffffffffffffffff\r\nabc",
            b"0\r\n\r\n",
        ];
        let alphabet = b"0123456789abcdefABCDEFxX;=\" \t\r\n\\:\x00\x7f\xff";
        let mut m = crate::http::mutate::Mutator::new(0x9e37_79b9_7f4a_7c15u64);
        for round in 0..20_000 {
            let input = m.mutate(seeds[round % seeds.len()], alphabet, 6);
            let mut d = ChunkedDecoder::new();
            let mut total = 0usize;
            if let Ok(p) = d.decode(&input, &mut |b| total += b.len()) {
                assert!(p.consumed <= input.len());
            }
            // Also split at a random point.
            let cut = m.next() as usize % (input.len() + 1);
            let mut d = ChunkedDecoder::new();
            if let Ok(p) = d.decode(&input[..cut], &mut |_| {}) {
                let _ = d.decode(&input[p.consumed..], &mut |_| {});
            }
        }
    }
}
