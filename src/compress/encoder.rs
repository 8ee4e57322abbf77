//! Streaming encoders for the codings produced on the fly (gzip, zstd).
//!
//! Memory stays bounded whatever the body's length: each encoder holds its window and a small
//! output buffer that the caller empties after every call.

use crate::config::static_opts::Coding;
use std::io::Write;

/// An encoder in progress.
pub enum Encoder {
    /// gzip through flate2.
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    /// zstd through the reference library.
    #[cfg(feature = "zstd")]
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Encoder::Gzip(_) => f.write_str("Encoder::Gzip"),
            #[cfg(feature = "zstd")]
            Encoder::Zstd(_) => f.write_str("Encoder::Zstd"),
        }
    }
}

impl Encoder {
    /// A new encoder; `level` is gzip's (1–9), `zstd_level` zstd's. None for a coding with no
    /// encoder here (br).
    #[cfg_attr(not(feature = "zstd"), allow(unused_variables))]
    pub fn new(coding: Coding, level: u32, zstd_level: i32) -> Option<Encoder> {
        match coding {
            Coding::Gzip => Some(Encoder::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(level),
            ))),
            #[cfg(feature = "zstd")]
            Coding::Zstd => zstd::stream::write::Encoder::new(Vec::new(), zstd_level)
                .ok()
                .map(Encoder::Zstd),
            // The config refuses `encodings = { "zstd" }` in such a build.
            #[cfg(not(feature = "zstd"))]
            Coding::Zstd => None,
            Coding::Brotli => None,
        }
    }

    /// Feeds `input` and returns what is ready to send; with `flush`, everything given so far
    /// (a streamed response then reaches the client without waiting for more input).
    pub fn write(&mut self, input: &[u8], flush: bool) -> std::io::Result<Vec<u8>> {
        match self {
            Encoder::Gzip(e) => {
                e.write_all(input)?;
                if flush {
                    e.flush()?;
                }
                Ok(std::mem::take(e.get_mut()))
            }
            #[cfg(feature = "zstd")]
            Encoder::Zstd(e) => {
                e.write_all(input)?;
                if flush {
                    e.flush()?;
                }
                Ok(std::mem::take(e.get_mut()))
            }
        }
    }

    /// Ends the stream and returns its last bytes (trailer, checksum).
    pub fn finish(self) -> std::io::Result<Vec<u8>> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            #[cfg(feature = "zstd")]
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

/// The whole of `input` encoded (for a static file compressed once and cached).
pub fn encode_all(
    coding: Coding,
    level: u32,
    zstd_level: i32,
    input: &[u8],
) -> std::io::Result<Vec<u8>> {
    let mut e = Encoder::new(coding, level, zstd_level)
        .ok_or_else(|| std::io::Error::other("no encoder for this coding"))?;
    let mut out = e.write(input, false)?;
    out.extend_from_slice(&e.finish()?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample() -> Vec<u8> {
        (0..20_000)
            .map(|i| b"function f(a){return a+1};\n"[i % 27])
            .collect()
    }

    #[test]
    fn gzip_round_trip_streamed() {
        let input = sample();
        let mut e = Encoder::new(Coding::Gzip, 6, 3).unwrap();
        let mut out = Vec::new();
        for chunk in input.chunks(1000) {
            out.extend(e.write(chunk, true).unwrap());
        }
        out.extend(e.finish().unwrap());
        assert!(out.len() < input.len() / 10);
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&out[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, input);
    }

    #[cfg(feature = "zstd")]
    #[test]
    fn zstd_round_trip_whole() {
        let input = sample();
        let out = encode_all(Coding::Zstd, 6, 3, &input).unwrap();
        assert!(out.len() < input.len() / 10);
        assert_eq!(zstd::stream::decode_all(&out[..]).unwrap(), input);
    }

    #[cfg(feature = "zstd")]
    #[test]
    fn flush_makes_output_available() {
        let mut e = Encoder::new(Coding::Zstd, 6, 3).unwrap();
        let first = e.write(b"data: hello\n\n", true).unwrap();
        assert!(!first.is_empty());
        assert!(Encoder::new(Coding::Brotli, 6, 3).is_none());
    }
}
