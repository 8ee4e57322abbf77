//! A static file too large for the variant cache (`compress.max_size`), compressed while it
//! goes out: a chunk is read, coded and queued, and the next one only once that went out, so
//! memory per response is one read buffer and the encoder's window whatever the file's size.

use super::encoder::Encoder;
use std::fs::File;
use std::io;
use std::rc::Rc;

/// Bytes read from the file per step.
const READ_CHUNK: usize = 64 * 1024;

/// The coded body of one file on its way out.
pub struct FileCoder {
    file: Rc<File>,
    offset: u64,
    left: u64,
    /// None once finished (the trailer was handed out).
    encoder: Option<Encoder>,
    buf: Vec<u8>,
    /// Whether the coded bytes go as chunks (HTTP/1.1) or delimited by closing (HTTP/1.0);
    /// set by the connection when it writes the head.
    pub chunked: bool,
}

impl std::fmt::Debug for FileCoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileCoder")
            .field("offset", &self.offset)
            .field("left", &self.left)
            .field("chunked", &self.chunked)
            .finish()
    }
}

impl FileCoder {
    /// Codes the first `len` bytes of `file` through `encoder`.
    pub fn new(file: Rc<File>, len: u64, encoder: Encoder) -> FileCoder {
        FileCoder {
            file,
            offset: 0,
            left: len,
            encoder: Some(encoder),
            buf: Vec::new(),
            chunked: true,
        }
    }

    /// The next coded bytes (possibly none yet: the encoder holds them back until its block
    /// fills), or None once the stream has ended. A file that shrank meanwhile is an error, so
    /// the response is cut and the client sees the truncation.
    pub fn next_piece(&mut self) -> io::Result<Option<Vec<u8>>> {
        use std::os::unix::fs::FileExt;
        if self.left == 0 {
            return match self.encoder.take() {
                Some(e) => e.finish().map(Some),
                None => Ok(None),
            };
        }
        let Some(enc) = self.encoder.as_mut() else {
            return Ok(None);
        };
        if self.buf.is_empty() {
            self.buf = vec![0u8; READ_CHUNK];
        }
        let want = self.left.min(READ_CHUNK as u64) as usize;
        let n = loop {
            match self.file.read_at(&mut self.buf[..want], self.offset) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        self.offset += n as u64;
        self.left -= n as u64;
        enc.write(&self.buf[..n], false).map(Some)
    }
}

/// For a coded stream body, decides its framing for a client of `version` and returns whether
/// it is chunked (false: delimited by closing the connection); None for any other body.
pub fn set_framing(
    body: &mut crate::reply::Body,
    version: crate::http::request::Version,
) -> Option<bool> {
    let crate::reply::Body::Coded(c) = body else {
        return None;
    };
    c.chunked = version == crate::http::request::Version::Http11;
    Some(c.chunked)
}

/// The reply for a static file above `compress.max_size` coded in `coding` as it is sent
/// (None: the file is small enough for the cached variant, or there is no encoder). Its ETag is
/// the variant's, as for a cached variant, so conditionals work the same whatever the size.
pub fn large_file(
    req: &crate::http::request::Request,
    site: &crate::static_files::Site,
    f: &crate::static_files::cache::CachedFile,
    content_type: &str,
    coding: crate::config::static_opts::Coding,
) -> Option<crate::reply::Reply> {
    let c = site.opts.compress.as_ref()?;
    if f.size <= c.max_size {
        return None;
    }
    let encoder = Encoder::new(coding, c.level, c.zstd_level)?;
    let body = crate::reply::Body::Coded(Box::new(FileCoder::new(f.file.clone(), f.size, encoder)));
    Some(crate::static_files::coded::coded_reply(
        req,
        body,
        &super::variant_etag(&f.etag, coding),
        &f.last_modified,
        f.mtime,
        content_type,
        coding,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::static_opts::Coding;
    use std::io::{Read, Write};

    #[test]
    fn codes_the_whole_file_in_steps() {
        let dir = std::env::temp_dir().join(format!("luahttpd-stream-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("big.txt");
        let data: Vec<u8> = (0..300_000u32)
            .map(|i| b"line of text, more text\n"[(i % 24) as usize])
            .collect();
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&data)
            .unwrap();
        let file = Rc::new(File::open(&path).unwrap());
        let enc = Encoder::new(Coding::Gzip, 6, 3).unwrap();
        let mut c = FileCoder::new(file, data.len() as u64, enc);
        let mut out = Vec::new();
        let mut steps = 0;
        while let Some(piece) = c.next_piece().unwrap() {
            out.extend(piece);
            steps += 1;
        }
        assert!(steps >= 5, "{steps}");
        assert!(c.next_piece().unwrap().is_none());
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&out[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);

        // A file shorter than announced: an error, not a silently short body.
        let file = Rc::new(File::open(&path).unwrap());
        let enc = Encoder::new(Coding::Gzip, 6, 3).unwrap();
        let mut c = FileCoder::new(file, data.len() as u64 + 10, enc);
        let err = loop {
            match c.next_piece() {
                Ok(Some(_)) => {}
                Ok(None) => panic!("ended without noticing the short file"),
                Err(e) => break e,
            }
        };
        assert_eq!(err.raw_os_error(), Some(libc::EIO));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
