//! A request body held whole before it goes to a backend: in memory up to `MEMORY_MAX`, then
//! in an unnamed `O_TMPFILE` file in `$TMPDIR` (else /tmp): it never has a name to leak, and
//! the kernel frees it when the spool is dropped. Where the file system has no `O_TMPFILE`,
//! a `mkstemp` file in the same directory is unlinked at once, which ends the same way.

use std::fs::File;
use std::io::{self, Cursor, Read, Seek, Write};

/// Bodies up to this size stay in memory; a larger one moves to a temporary file. As nginx's
/// `client_body_buffer_size`: a stalled upload costs at most this much memory (measured: 1,000
/// clients uploading at once cost at most about 18 KB of worker memory each).
pub const MEMORY_MAX: usize = 16 * 1024;

/// Where a body is held.
pub enum Spool {
    /// Small so far.
    Memory(Cursor<Vec<u8>>),
    /// Too large for memory.
    File(File),
}

impl Default for Spool {
    fn default() -> Spool {
        Spool::Memory(Cursor::new(Vec::new()))
    }
}

impl Spool {
    /// Appends `data`, moving to a file once the body outgrows memory.
    pub fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        if let Spool::Memory(m) = self {
            if m.get_ref().len() + data.len() <= MEMORY_MAX {
                m.get_mut().extend_from_slice(data);
                return Ok(());
            }
            let mut file = temp_file()?;
            file.write_all(m.get_ref())?;
            *self = Spool::File(file);
        }
        if let Spool::File(f) = self {
            f.write_all(data)?;
        }
        Ok(())
    }

    /// Goes back to the start, to read the body out.
    pub fn rewind(&mut self) -> io::Result<()> {
        match self {
            Spool::Memory(m) => {
                m.set_position(0);
                Ok(())
            }
            Spool::File(f) => f.rewind(),
        }
    }

    /// Fills `buf` from the current position.
    pub fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        match self {
            Spool::Memory(m) => m.read_exact(buf),
            Spool::File(f) => f.read_exact(buf),
        }
    }
}

fn temp_file() -> io::Result<File> {
    let dir = std::env::temp_dir();
    match unnamed_file(&dir) {
        Err(e) if tmpfile_unsupported(&e) => unlinked_file(&dir),
        r => r,
    }
}

/// Errors by which open(2) says the file system (or kernel) has no `O_TMPFILE`.
fn tmpfile_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
    )
}

fn unnamed_file(dir: &std::path::Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o600)
        .open(dir)
}

/// The fallback: a `mkstemp` file in `dir`, unlinked before anything is written to it.
fn unlinked_file(dir: &std::path::Path) -> io::Result<File> {
    let (fd, path) = nix::unistd::mkstemp(&dir.join("luahttpd-body-XXXXXX"))?;
    // SAFETY: mkstemp just returned this descriptor open and owned by nobody else.
    let file = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    std::fs::remove_file(&path)?;
    Ok(file)
}

/// Reads the body bytes `input` holds through `reader` into `spool`, consuming them: whether
/// any were taken, and the body's whole length once it is complete (the spool rewound for
/// reading then). One path for every handler that holds a body whole (FastCGI, CGI).
pub fn fill(
    spool: &mut Spool,
    reader: &mut crate::http::body::BodyReader,
    input: &mut super::inbuf::InBuf,
) -> Result<(bool, Option<u64>), super::fcgi_error::ExchangeError> {
    use super::fcgi_error::ExchangeError;
    if input.is_empty() {
        return Ok((false, None));
    }
    let mut write_err = None;
    let fed = reader
        .feed(input.data(), &mut |data| {
            if write_err.is_none() {
                if let Err(e) = spool.write_all(data) {
                    write_err = Some(e);
                }
            }
        })
        .map_err(ExchangeError::Body)?;
    input.consume(fed.consumed);
    if let Some(e) = write_err {
        return Err(ExchangeError::Spool(e));
    }
    if !fed.done {
        return Ok((fed.consumed > 0, None));
    }
    spool.rewind().map_err(ExchangeError::Spool)?;
    Ok((fed.consumed > 0, Some(reader.received())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(parts: &[&[u8]]) -> (Vec<u8>, bool) {
        let mut s = Spool::default();
        let mut all = Vec::new();
        for p in parts {
            s.write_all(p).expect("write");
            all.extend_from_slice(p);
        }
        let in_file = matches!(s, Spool::File(_));
        s.rewind().expect("rewind");
        let mut back = vec![0; all.len()];
        s.read_exact(&mut back).expect("read");
        assert_eq!(back, all);
        (back, in_file)
    }

    #[test]
    fn small_stays_in_memory_large_moves_to_a_file() {
        assert!(!round_trip(&[b"abc", b"def"]).1);
        assert!(!round_trip(&[&[7u8; MEMORY_MAX]]).1);
        let big = vec![1u8; MEMORY_MAX - 10];
        assert!(round_trip(&[&big, &[2u8; 11], b"tail"]).1);
    }

    #[test]
    fn memory_holds_at_most_16_kib() {
        assert_eq!(MEMORY_MAX, 16 * 1024);
        assert!(round_trip(&[&[3u8; 16 * 1024 + 1]]).1);
    }

    #[test]
    fn the_mkstemp_fallback_leaves_no_name_and_round_trips() {
        let dir = std::env::temp_dir().join(format!("luahttpd-spool-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let mut f = unlinked_file(&dir).expect("fallback file");
        let names: Vec<_> = std::fs::read_dir(&dir).expect("list").collect();
        assert!(names.is_empty(), "left a name behind: {names:?}");
        f.write_all(b"body bytes").expect("write");
        f.rewind().expect("rewind");
        let mut back = String::new();
        f.read_to_string(&mut back).expect("read");
        assert_eq!(back, "body bytes");
        std::fs::remove_dir(&dir).expect("rmdir");
    }

    #[test]
    fn only_missing_tmpfile_support_falls_back() {
        for code in [libc::EOPNOTSUPP, libc::EISDIR, libc::EINVAL] {
            assert!(tmpfile_unsupported(&io::Error::from_raw_os_error(code)));
        }
        assert!(!tmpfile_unsupported(&io::Error::from_raw_os_error(
            libc::ENOSPC
        )));
        assert!(!tmpfile_unsupported(&io::Error::from_raw_os_error(
            libc::EACCES
        )));
    }

    #[test]
    fn a_spool_that_cannot_get_a_file_says_so() {
        // A directory that does not exist: neither O_TMPFILE nor mkstemp can work there.
        let gone = std::path::Path::new("/nonexistent-luahttpd-spool-dir");
        assert!(unnamed_file(gone).is_err());
        assert!(unlinked_file(gone).is_err());
    }
}
