//! Opening a relative path beneath a directory handle without ever leaving it.
//!
//! Where the kernel has openat2 (Linux 5.6 and later, and no seccomp filter against it), one
//! call with RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS does it. Elsewhere (Linux 4.x, which
//! RHEL 8 and Debian 10 run; containers whose seccomp profile predates openat2; valgrind) the
//! same rule is walked in user space: one component at a time with `openat(O_NOFOLLOW)` from
//! a stack of directory handles, each symlink read and its target resolved by the same walk
//! (an absolute target, or `..` above the starting directory, is EXDEV as in the kernel; more
//! than 40 links is ELOOP). Every handle on the stack was reached without following a link, so
//! a tree changed during the walk cannot lead it out: a component swapped for a symlink fails
//! its `O_NOFOLLOW` open and is read as a link instead.

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, readlinkat, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, Mode, SFlag};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

/// Symlinks followed in one walk before ELOOP (the kernel's limit).
const MAX_LINKS: u32 = 40;

/// Opens `rel` (relative; "." is `dir` itself) beneath `dir` with `flags` (O_CLOEXEC added),
/// following symlinks only while they stay beneath it. Leaving it is `EXDEV`.
pub fn open(dir: BorrowedFd<'_>, rel: &str, flags: OFlag) -> Result<OwnedFd, Errno> {
    let flags = flags | OFlag::O_CLOEXEC;
    if has_openat2() {
        let how = OpenHow::new()
            .flags(flags)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let fd = openat2(dir.as_raw_fd(), rel, how)?;
        // SAFETY: openat2 just returned this descriptor and nothing else owns it.
        return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    walk(dir, rel, flags)
}

/// Whether openat2 can be called here (probed once per process).
pub fn has_openat2() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        let how = OpenHow::new().flags(OFlag::O_PATH | OFlag::O_CLOEXEC);
        match openat2(libc::AT_FDCWD, "/", how) {
            Ok(fd) => {
                // SAFETY: openat2 just returned this descriptor and nothing else owns it.
                drop(unsafe { OwnedFd::from_raw_fd(fd) });
                true
            }
            Err(e) => !matches!(e, Errno::ENOSYS | Errno::EPERM),
        }
    })
}

/// The user-space walk (see the module doc); `open` without openat2, and the tests' way in.
pub(crate) fn walk(dir: BorrowedFd<'_>, rel: &str, flags: OFlag) -> Result<OwnedFd, Errno> {
    // A trailing slash asks for a directory, as in the kernel.
    let flags = if rel.ends_with('/') {
        flags | OFlag::O_DIRECTORY
    } else {
        flags
    };
    // Components still to resolve, the next one last.
    let mut todo: Vec<String> = components(rel);
    // The directories entered below `dir`; `..` pops one, and popping past `dir` leaves it.
    let mut entered: Vec<OwnedFd> = Vec::new();
    let mut links = 0;
    loop {
        let at = entered.last().map_or(dir, |d| d.as_fd());
        let Some(name) = todo.pop() else {
            // Nothing left: the directory reached is what was asked for.
            return reopen(at, flags);
        };
        if name == "." {
            continue;
        }
        if name == ".." {
            if entered.pop().is_none() {
                return Err(Errno::EXDEV);
            }
            continue;
        }
        let last = todo.is_empty();
        let step = if last {
            flags | OFlag::O_NOFOLLOW
        } else {
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
        };
        let opened = openat(Some(at.as_raw_fd()), name.as_str(), step, Mode::empty()).map(|fd| {
            // SAFETY: openat just returned this descriptor and nothing else owns it.
            unsafe { OwnedFd::from_raw_fd(fd) }
        });
        let error = match opened {
            // O_PATH | O_NOFOLLOW opens a symlink itself: read it as one.
            Ok(fd) if is_symlink(&fd) => Errno::ELOOP,
            Ok(fd) if last => return Ok(fd),
            Ok(fd) => {
                entered.push(fd);
                continue;
            }
            Err(e) => e,
        };
        // A symlink refuses O_NOFOLLOW (ELOOP, or ENOTDIR with O_DIRECTORY): follow it here.
        if !matches!(error, Errno::ELOOP | Errno::ENOTDIR) {
            return Err(error);
        }
        let target = match readlinkat(Some(at.as_raw_fd()), name.as_str()) {
            Ok(t) => t,
            Err(Errno::EINVAL) => return Err(error),
            Err(e) => return Err(e),
        };
        links += 1;
        if links > MAX_LINKS {
            return Err(Errno::ELOOP);
        }
        let target = target.to_str().ok_or(Errno::ENOENT)?;
        if target.starts_with('/') {
            return Err(Errno::EXDEV);
        }
        todo.extend(components(target));
    }
}

/// `path`'s components, the first last (empty ones, from `//` or a trailing `/`, dropped).
fn components(path: &str) -> Vec<String> {
    path.rsplit('/')
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}

fn is_symlink(fd: &OwnedFd) -> bool {
    fstat(fd.as_raw_fd())
        .is_ok_and(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK)
}

/// The directory `at` itself opened with `flags` (the walk ended on a directory).
fn reopen(at: BorrowedFd<'_>, flags: OFlag) -> Result<OwnedFd, Errno> {
    let fd = openat(Some(at.as_raw_fd()), ".", flags, Mode::empty())?;
    // SAFETY: openat just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    /// A tree with links that stay inside and links that leave, under a fresh temp dir.
    fn tree(tag: &str) -> (std::path::PathBuf, OwnedFd) {
        let base =
            std::env::temp_dir().join(format!("luahttpd-beneath-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(base.join("root/d/e")).unwrap();
        fs::write(base.join("root/a.txt"), "a").unwrap();
        fs::write(base.join("root/d/e/f.txt"), "f").unwrap();
        fs::write(base.join("secret"), "s").unwrap();
        symlink("a.txt", base.join("root/in")).unwrap();
        symlink("d/e", base.join("root/de")).unwrap();
        symlink("../../a.txt", base.join("root/d/e/up")).unwrap();
        symlink("../secret", base.join("root/out")).unwrap();
        symlink("d/../../secret", base.join("root/out2")).unwrap();
        symlink("/etc/passwd", base.join("root/abs")).unwrap();
        symlink("loop", base.join("root/loop")).unwrap();
        symlink("a.txt/x", base.join("root/notdir")).unwrap();
        let root = nix::fcntl::open(
            &base.join("root"),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        // SAFETY: open just returned this descriptor and nothing else owns it.
        (base, unsafe { OwnedFd::from_raw_fd(root) })
    }

    fn read(fd: OwnedFd) -> String {
        use std::io::Read;
        let mut s = String::new();
        fs::File::from(fd).read_to_string(&mut s).unwrap();
        s
    }

    /// The walk and openat2 agree on every case, the walk giving openat2's errors.
    #[test]
    fn the_walk_stays_beneath_as_openat2_does() {
        let (base, root) = tree("agree");
        let r = root.as_fd();
        let cases: [(&str, Result<&str, Errno>); 14] = [
            ("a.txt", Ok("a")),
            ("in", Ok("a")),
            ("d/e/f.txt", Ok("f")),
            ("de/f.txt", Ok("f")),
            ("de/up", Ok("a")),
            ("d//e/./f.txt", Ok("f")),
            ("out", Err(Errno::EXDEV)),
            ("out2", Err(Errno::EXDEV)),
            ("abs", Err(Errno::EXDEV)),
            ("loop", Err(Errno::ELOOP)),
            ("missing", Err(Errno::ENOENT)),
            ("a.txt/x", Err(Errno::ENOTDIR)),
            ("a.txt/", Err(Errno::ENOTDIR)),
            ("notdir", Err(Errno::ENOTDIR)),
        ];
        for (path, want) in cases {
            let walked = walk(r, path, OFlag::O_RDONLY | OFlag::O_CLOEXEC).map(read);
            assert_eq!(walked.as_deref().map_err(|e| *e), want, "walk {path}");
            if has_openat2() {
                let how = OpenHow::new()
                    .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC)
                    .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
                let kernel = openat2(r.as_raw_fd(), path, how).map(|fd| {
                    // SAFETY: openat2 just returned this descriptor and nothing else owns it.
                    read(unsafe { OwnedFd::from_raw_fd(fd) })
                });
                assert_eq!(kernel.as_deref().map_err(|e| *e), want, "openat2 {path}");
            }
        }
        let _ = fs::remove_dir_all(base);
    }

    #[test]
    fn directories_and_o_path_follow_links_too() {
        let (base, root) = tree("dirs");
        let r = root.as_fd();
        let kind = |fd: OwnedFd| {
            SFlag::from_bits_truncate(fstat(fd.as_raw_fd()).unwrap().st_mode) & SFlag::S_IFMT
        };
        // O_PATH on a link beneath: what it names, not the link.
        let st = walk(r, "in", OFlag::O_PATH).map(kind);
        assert_eq!(st, Ok(SFlag::S_IFREG));
        assert_eq!(
            walk(r, "de", OFlag::O_RDONLY | OFlag::O_DIRECTORY).map(kind),
            Ok(SFlag::S_IFDIR)
        );
        assert_eq!(
            walk(r, ".", OFlag::O_RDONLY | OFlag::O_DIRECTORY).map(kind),
            Ok(SFlag::S_IFDIR)
        );
        assert_eq!(walk(r, "d/e/", OFlag::O_PATH).map(kind), Ok(SFlag::S_IFDIR));
        assert_eq!(walk(r, "out", OFlag::O_PATH).map(kind), Err(Errno::EXDEV));
        let _ = fs::remove_dir_all(base);
    }
}
