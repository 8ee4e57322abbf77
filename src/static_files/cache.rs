//! A per-worker cache of open files, their validators and (for small files) their bytes.
//!
//! Like lighttpd's stat cache, an entry is trusted for one second and then checked against the
//! file system again (a fresh open beneath the root and fstat); a file replaced or changed
//! within that second may be served in its old version until the check. A hit costs no system
//! call, and a small file's response goes out in one write together with its head.

use super::open::{Lookup, Root};
use nix::sys::stat::FileStat;
use std::collections::HashMap;
use std::fmt::Write;
use std::fs::File;
use std::rc::Rc;
use std::time::{Duration, Instant, UNIX_EPOCH};

/// How long an entry is trusted without asking the file system again.
const TRUST: Duration = Duration::from_secs(1);
/// Files up to this size are kept in memory and sent with their head in one write.
pub const SMALL_FILE: u64 = 16 * 1024;
/// Most entries per worker (each holds a descriptor).
const MAX_ENTRIES: usize = 1024;
/// Most bytes of small-file contents per worker.
const MAX_BYTES: usize = 8 * 1024 * 1024;

/// A regular file ready to be served.
#[derive(Debug)]
pub struct CachedFile {
    /// The open file (shared: sendfile takes explicit offsets, so nobody moves a position).
    pub file: Rc<File>,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time.
    pub mtime: std::time::SystemTime,
    /// The strong entity tag, quoted.
    pub etag: String,
    /// Last-Modified as an HTTP date.
    pub last_modified: String,
    /// The file's contents when it is small.
    pub bytes: Option<Rc<[u8]>>,
    /// Position of the index name when the path named a directory.
    pub index_pos: Option<usize>,
    /// The Content-Type and header lines, rendered on first use and kept with the entry.
    rendered: std::cell::OnceCell<Rendered>,
    identity: (u64, u64, i64, i64, i64, i64),
    checked: Instant,
}

/// What a cache entry renders once and keeps (the entry's name and its site's MIME table do
/// not change while it lives): per request, the suffix lookup cost about 640 of a keep-alive
/// request's 8,400 instructions and the four header lines about 300 (callgrind).
#[derive(Debug)]
pub struct Rendered {
    /// The Content-Type.
    pub content_type: Box<str>,
    /// The header lines of a whole-file 200: type, validators, `Accept-Ranges`.
    pub full_lines: Box<[u8]>,
}

impl CachedFile {
    /// The entry's rendered type and lines; `find` (the MIME table's lookup) runs on the
    /// entry's first use only.
    pub fn rendered(&self, find: impl FnOnce() -> String) -> &Rendered {
        self.rendered.get_or_init(|| {
            let content_type = find();
            let mut r = crate::reply::Reply::new(200, crate::reply::Body::Empty);
            r.header("Content-Type", &content_type)
                .header("ETag", &self.etag)
                .header("Last-Modified", &self.last_modified)
                .header("Accept-Ranges", "bytes");
            Rendered {
                content_type: content_type.into_boxed_str(),
                full_lines: r.headers.into_boxed_slice(),
            }
        })
    }
}

/// A lookup result: a served file, or what to answer instead.
#[derive(Debug, Clone)]
pub enum Found {
    /// A regular file.
    File(Rc<CachedFile>),
    /// Redirect to the path with a slash.
    AddSlash,
    /// 404.
    NotFound,
    /// 403.
    Forbidden,
}

/// The cache of one worker.
#[derive(Debug, Default)]
pub struct FileCache {
    entries: HashMap<String, Rc<CachedFile>>,
    bytes: usize,
}

impl FileCache {
    /// Looks `path` up, from the cache when the entry is fresh.
    pub fn lookup(&mut self, root: &Root, path: &str, index: &[String], now: Instant) -> Found {
        if let Some(e) = self.entries.get(path) {
            if now.duration_since(e.checked) < TRUST {
                return Found::File(e.clone());
            }
        }
        let found = match root.lookup(path, index) {
            Lookup::File(file, st, index_pos) => self.fresh_entry(path, file, &st, index_pos, now),
            Lookup::AddSlash => Found::AddSlash,
            Lookup::NotFound => Found::NotFound,
            Lookup::Forbidden => Found::Forbidden,
        };
        match &found {
            Found::File(_) => {}
            _ => self.remove(path),
        }
        found
    }

    fn fresh_entry(
        &mut self,
        path: &str,
        file: File,
        st: &FileStat,
        index_pos: Option<usize>,
        now: Instant,
    ) -> Found {
        let identity = identity(st);
        // Unchanged since the last check: keep the entry (and its bytes), restart its clock.
        if let Some(old) = self.entries.get_mut(path) {
            if old.identity == identity && old.index_pos == index_pos {
                if let Some(e) = Rc::get_mut(old) {
                    e.checked = now;
                    return Found::File(old.clone());
                }
            }
        }
        let size = st.st_size.max(0) as u64;
        let bytes = if size <= SMALL_FILE {
            match read_all(&file, size) {
                Some(b) => Some(b),
                // Changed while we read it: serve from the descriptor, do not cache.
                None => {
                    return Found::File(Rc::new(entry(file, st, None, index_pos, now)));
                }
            }
        } else {
            None
        };
        let e = Rc::new(entry(file, st, bytes, index_pos, now));
        self.insert(path, e.clone());
        Found::File(e)
    }

    fn insert(&mut self, path: &str, e: Rc<CachedFile>) {
        let add = e.bytes.as_ref().map_or(0, |b| b.len());
        if self.entries.len() >= MAX_ENTRIES || self.bytes + add > MAX_BYTES {
            // Rare and cheap to rebuild: start over rather than track recency per hit.
            self.entries.clear();
            self.bytes = 0;
        }
        self.remove(path);
        self.bytes += add;
        self.entries.insert(path.to_string(), e);
    }

    fn remove(&mut self, path: &str) {
        if let Some(old) = self.entries.remove(path) {
            self.bytes -= old.bytes.as_ref().map_or(0, |b| b.len());
        }
    }
}

fn identity(st: &FileStat) -> (u64, u64, i64, i64, i64, i64) {
    (
        st.st_dev,
        st.st_ino,
        st.st_size,
        st.st_mtime,
        st.st_mtime_nsec,
        st.st_ctime_nsec,
    )
}

fn entry(
    file: File,
    st: &FileStat,
    bytes: Option<Rc<[u8]>>,
    index_pos: Option<usize>,
    now: Instant,
) -> CachedFile {
    let size = st.st_size.max(0) as u64;
    let mtime = UNIX_EPOCH + Duration::from_secs(st.st_mtime.max(0) as u64);
    let mut etag = String::with_capacity(40);
    // Inode, size and nanosecond mtime: a strong validator that changes with any rewrite.
    let _ = write!(
        etag,
        "\"{:x}-{:x}-{:x}.{:x}\"",
        st.st_ino, size, st.st_mtime, st.st_mtime_nsec
    );
    CachedFile {
        file: Rc::new(file),
        size,
        mtime,
        etag,
        last_modified: crate::http::date::format(mtime),
        bytes,
        index_pos,
        rendered: std::cell::OnceCell::new(),
        identity: identity(st),
        checked: now,
    }
}

/// Reads a small file whole; None if it does not have the size fstat gave.
fn read_all(file: &File, size: u64) -> Option<Rc<[u8]>> {
    let mut buf = vec![0u8; size as usize];
    let mut got = 0;
    while got < buf.len() {
        match nix::sys::uio::pread(file, &mut buf[got..], got as i64) {
            Ok(0) => return None,
            Ok(n) => got += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return None,
        }
    }
    Some(buf.into())
}
