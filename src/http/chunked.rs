//! A strict, sans-IO decoder for the chunked transfer coding (RFC 9112 §7.1).

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

/// Incremental chunked decoder.
#[derive(Debug, Clone, Default)]
pub struct ChunkedDecoder {
    _state: (),
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

    /// Consumes as much of `input` as possible, passing decoded data to `out`.
    pub fn decode(
        &mut self,
        input: &[u8],
        out: &mut dyn FnMut(&[u8]),
    ) -> Result<Progress, ChunkError> {
        let _ = (input, out);
        todo!()
    }
}
