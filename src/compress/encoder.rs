//! Streaming encoders for the codings produced on the fly (gzip, zstd).
//!
//! Memory stays bounded whatever the body's length: each encoder holds its window and a small
//! output buffer that the caller empties after every call.

use crate::config::static_opts::Coding;
use std::io::Write;

/// The zstd window of a stream, as a power of two: 128 KiB. The library's default for level 3
/// is 2 MiB (1 << 21), held per response whatever the body's size; text gains little from
/// matches further back, and any decoder takes a window this small (RFC 8878 asks decoders
/// for 8 MiB).
#[cfg(feature = "zstd")]
pub const ZSTD_WINDOW_LOG: u32 = 17;

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
            Coding::Zstd => {
                let mut e = zstd::stream::write::Encoder::new(Vec::new(), zstd_level).ok()?;
                e.window_log(ZSTD_WINDOW_LOG).ok()?;
                Some(Encoder::Zstd(e))
            }
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

    /// What a zstd compression context of `level` holds after coding 1 MiB of text as a
    /// stream, with the window bounded or the library's own.
    #[cfg(feature = "zstd")]
    fn zstd_context_bytes(level: i32, window_log: Option<u32>) -> usize {
        use zstd::zstd_safe::{CCtx, CParameter, InBuffer, OutBuffer};
        let mut cx = CCtx::create();
        cx.set_parameter(CParameter::CompressionLevel(level))
            .unwrap();
        if let Some(w) = window_log {
            cx.set_parameter(CParameter::WindowLog(w)).unwrap();
        }
        let input: Vec<u8> = sample().into_iter().cycle().take(1 << 20).collect();
        let mut out = vec![0u8; 1 << 21];
        let mut inb = InBuffer::around(&input);
        let mut outb = OutBuffer::around(&mut out[..]);
        while inb.pos() < input.len() {
            cx.compress_stream(&mut outb, &mut inb).unwrap();
        }
        cx.sizeof()
    }

    #[cfg(feature = "zstd")]
    #[test]
    fn zstd_stream_memory_is_bounded_by_the_window() {
        let bounded = zstd_context_bytes(3, Some(ZSTD_WINDOW_LOG));
        let default = zstd_context_bytes(3, None);
        eprintln!("zstd level 3 context: {bounded} B bounded, {default} B default");
        // README gives these figures: about 1.7 MB with the 128 KiB window at level 3 (the
        // rest is its hash and chain tables and stream buffers), against about 3.7 MB with
        // the default 2 MiB window.
        assert!(bounded < default / 2, "{bounded} vs {default}");
        assert!(bounded < 1_900_000, "{bounded}");
        // The encoder the server uses has the bounded window: its frames decode with a
        // decoder limited to it.
        let input: Vec<u8> = sample().into_iter().cycle().take(600_000).collect();
        let mut e = Encoder::new(Coding::Zstd, 6, 3).unwrap();
        let mut out = e.write(&input, false).unwrap();
        out.extend(e.finish().unwrap());
        let mut d = zstd::stream::read::Decoder::new(&out[..]).unwrap();
        d.window_log_max(ZSTD_WINDOW_LOG).unwrap();
        let mut back = Vec::new();
        d.read_to_end(&mut back).unwrap();
        assert_eq!(back, input);
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
