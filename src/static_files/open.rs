//! Opening a request path beneath the document root.
//!
//! Every open goes through `crate::beneath::open` relative to a directory handle on the root
//! (openat2 with RESOLVE_BENEATH, or the same rule walked in user space on kernels without
//! it): `..`, absolute symlinks and symlinks that climb out of the root fail, so nothing
//! outside the root is ever opened, whatever the path or the tree holds.

use crate::beneath;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{fstat, FileStat, SFlag};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// A handle on the document root.
#[derive(Debug)]
pub struct Root {
    dir: OwnedFd,
}

/// What a path names beneath the root.
#[derive(Debug)]
pub enum Lookup {
    /// A regular file, open for reading, with its metadata and, when it is a directory's index
    /// file, the position of its name in the index list.
    File(File, FileStat, Option<usize>),
    /// A directory named without its trailing slash: redirect to the slashed path.
    AddSlash,
    /// Nothing there.
    NotFound,
    /// There, but not to be served (a directory without index, a device, outside the root,
    /// unreadable).
    Forbidden,
}

impl Root {
    /// Opens the root directory.
    pub fn open(path: &Path) -> std::io::Result<Root> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )?;
        // SAFETY: `open` just returned this descriptor and nothing else owns it.
        let dir = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Root { dir })
    }

    /// Looks up a decoded, dot-segment-free path (starting with '/') and its index files.
    pub fn lookup(&self, path: &str, index: &[String]) -> Lookup {
        let rel = relative(path);
        match self.open_beneath(rel) {
            Ok((file, st)) => {
                let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
                if kind == SFlag::S_IFREG {
                    Lookup::File(file, st, None)
                } else if kind == SFlag::S_IFDIR {
                    if !path.ends_with('/') {
                        return Lookup::AddSlash;
                    }
                    self.lookup_index(rel, index)
                } else {
                    Lookup::Forbidden
                }
            }
            Err(e) => errno_lookup(e),
        }
    }

    fn lookup_index(&self, dir: &str, index: &[String]) -> Lookup {
        let mut candidate = String::with_capacity(dir.len() + 16);
        for (i, name) in index.iter().enumerate() {
            candidate.clear();
            if dir != "." {
                candidate.push_str(dir);
            }
            candidate.push_str(name);
            match self.open_beneath(&candidate) {
                Ok((file, st)) => {
                    let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
                    if kind == SFlag::S_IFREG {
                        return Lookup::File(file, st, Some(i));
                    }
                }
                Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => {}
                Err(e) => return errno_lookup(e),
            }
        }
        // No directory listings: an index-less directory is forbidden, as in lighttpd's default.
        Lookup::Forbidden
    }

    /// Opens the directory at a decoded path (starting with '/') beneath the root, for a
    /// listing; the same rule as files.
    pub fn open_dir(&self, path: &str) -> Result<OwnedFd, Errno> {
        beneath::open(
            self.dir.as_fd(),
            relative(path),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        )
    }

    /// The metadata of what a root-relative path names, following symlinks only while they
    /// stay beneath the root (an entry whose link leads out gets an error, so a listing can
    /// leave it out). O_PATH: nothing is opened for reading.
    pub fn stat_beneath(&self, rel: &str) -> Result<FileStat, Errno> {
        let fd = beneath::open(self.dir.as_fd(), rel, OFlag::O_PATH)?;
        fstat(fd.as_raw_fd())
    }

    fn open_beneath(&self, rel: &str) -> Result<(File, FileStat), Errno> {
        // O_NONBLOCK so that opening a FIFO someone left in the root cannot block the worker.
        let fd = beneath::open(
            self.dir.as_fd(),
            rel,
            OFlag::O_RDONLY | OFlag::O_NOCTTY | OFlag::O_NONBLOCK,
        )?;
        let file = File::from(fd);
        let st = fstat(file.as_raw_fd())?;
        Ok((file, st))
    }
}

/// The root-relative form of an absolute request path ("." for the root itself).
fn relative(path: &str) -> &str {
    let rel = path.trim_start_matches('/');
    if rel.is_empty() {
        "."
    } else {
        rel
    }
}

fn errno_lookup(e: Errno) -> Lookup {
    match e {
        Errno::ENOENT | Errno::ENOTDIR | Errno::ENAMETOOLONG => Lookup::NotFound,
        // EXDEV: the path (or a symlink in it) leads outside the root. ELOOP: symlink loops.
        _ => Lookup::Forbidden,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn tree() -> (std::path::PathBuf, Root) {
        let base = std::env::temp_dir().join(format!(
            "luahttpd-open-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(base.join("root/dir")).unwrap();
        fs::create_dir_all(base.join("root/withindex")).unwrap();
        fs::write(base.join("root/a.txt"), "a").unwrap();
        fs::write(base.join("root/withindex/index.html"), "i").unwrap();
        fs::write(base.join("secret"), "s").unwrap();
        symlink("../secret", base.join("root/out")).unwrap();
        symlink("/etc/passwd", base.join("root/abs")).unwrap();
        symlink("a.txt", base.join("root/in")).unwrap();
        let root = Root::open(&base.join("root")).unwrap();
        (base, root)
    }

    #[test]
    fn finds_files_and_refuses_escapes() {
        let (base, root) = tree();
        let index = vec!["index.html".to_string()];
        assert!(matches!(root.lookup("/a.txt", &index), Lookup::File(..)));
        assert!(matches!(root.lookup("/in", &index), Lookup::File(..)));
        assert!(matches!(root.lookup("/nope", &index), Lookup::NotFound));
        assert!(matches!(root.lookup("/a.txt/x", &index), Lookup::NotFound));
        assert!(matches!(root.lookup("/out", &index), Lookup::Forbidden));
        assert!(matches!(root.lookup("/abs", &index), Lookup::Forbidden));
        assert!(matches!(
            root.lookup("/../secret", &index),
            Lookup::Forbidden
        ));
        assert!(matches!(root.lookup("/dir", &index), Lookup::AddSlash));
        assert!(matches!(root.lookup("/dir/", &index), Lookup::Forbidden));
        assert!(matches!(
            root.lookup("/withindex/", &index),
            Lookup::File(..)
        ));
        assert!(matches!(root.lookup("/", &index), Lookup::Forbidden));
        fs::remove_dir_all(base).unwrap();
    }
}
