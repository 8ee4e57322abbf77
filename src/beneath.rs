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
//! its `O_NOFOLLOW` open and is read as a link instead. `..` goes back to the handle it came
//! from. Bounds the kernel does not have, against a tree built to make one request costly:
//! at most 4,096 components resolved (links' included; ELOOP) and 256 directories deep
//! (ENAMETOOLONG). A magic link (procfs) is refused as any link out (EXDEV) or not found, where
//! openat2 says ELOOP; either way it is not followed.

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, readlinkat, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, Mode, SFlag};
use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::OnceLock;

/// Symlinks followed in one walk before ELOOP (the kernel's limit).
const MAX_LINKS: u32 = 40;
/// The longest path taken, as the kernel's PATH_MAX (ENAMETOOLONG past it).
const PATH_MAX: usize = 4096;
/// The most components one walk resolves, links' included (ELOOP past it), and the deepest it
/// goes (ENAMETOOLONG): each directory entered holds a descriptor until the walk ends.
const MAX_STEPS: usize = 4096;
const MAX_DEPTH: usize = 256;

/// Opens `rel` (relative; "." is `dir` itself) beneath `dir` with `flags` (O_CLOEXEC added),
/// following symlinks only while they stay beneath it. Leaving it is `EXDEV`. For reading
/// only: `flags` may not create, truncate or write.
pub fn open(dir: BorrowedFd<'_>, rel: &str, flags: OFlag) -> Result<OwnedFd, Errno> {
    // O_TMPFILE includes O_DIRECTORY's bit: it is checked whole.
    debug_assert!(
        !flags.intersects(OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_WRONLY | OFlag::O_RDWR)
            && !flags.contains(OFlag::O_TMPFILE)
    );
    let flags = flags | OFlag::O_CLOEXEC;
    if has_openat2() {
        match kernel_open(dir, rel, flags) {
            Ok(fd) => return Ok(fd),
            // Refused after the probe (a seccomp filter installed since): walk instead.
            Err(Errno::ENOSYS | Errno::EPERM) => {}
            Err(e) => return Err(e),
        }
    }
    walk(dir, rel, flags)
}

/// The rule in the kernel: openat2 with RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS.
fn kernel_open(dir: BorrowedFd<'_>, rel: &str, flags: OFlag) -> Result<OwnedFd, Errno> {
    let how = OpenHow::new()
        .flags(flags)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = openat2(dir.as_raw_fd(), rel, how)?;
    // SAFETY: openat2 just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether openat2 can be called here (probed once per process; the watcher asks at start,
/// before it forks, and logs a refusal once).
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
            // Whatever refused it (ENOSYS, a filter's EPERM or EACCES): the walk is as safe.
            Err(_) => false,
        }
    })
}

/// The user-space walk (see the module doc); `open` without openat2, and the tests' way in.
pub(crate) fn walk(dir: BorrowedFd<'_>, rel: &str, flags: OFlag) -> Result<OwnedFd, Errno> {
    if rel.is_empty() {
        return Err(Errno::ENOENT);
    }
    if rel.starts_with('/') {
        return Err(Errno::EXDEV);
    }
    if rel.len() >= PATH_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    // A trailing slash asks for a directory, as in the kernel.
    let mut flags = if rel.ends_with('/') {
        flags | OFlag::O_DIRECTORY
    } else {
        flags
    };
    // Components still to resolve, the next one last.
    let mut todo: Vec<Vec<u8>> = Vec::new();
    push_components(&mut todo, rel.as_bytes());
    // The directories entered below `dir`; `..` pops one, and popping past `dir` leaves it.
    let mut entered: Vec<OwnedFd> = Vec::new();
    let (mut links, mut steps) = (0, 0);
    loop {
        let at = entered.last().map_or(dir, |d| d.as_fd());
        let Some(name) = todo.pop() else {
            // Nothing left: the directory reached is what was asked for.
            return reopen(at, flags);
        };
        steps += 1;
        if steps > MAX_STEPS {
            return Err(Errno::ELOOP);
        }
        match name.as_slice() {
            b"." => continue,
            b".." => {
                if entered.pop().is_none() {
                    return Err(Errno::EXDEV);
                }
                continue;
            }
            _ => {}
        }
        let name = OsStr::from_bytes(&name);
        let last = todo.is_empty();
        let step = if last {
            flags | OFlag::O_NOFOLLOW
        } else {
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
        };
        let opened = openat(Some(at.as_raw_fd()), name, step, Mode::empty()).map(|fd| {
            // SAFETY: openat just returned this descriptor and nothing else owns it.
            unsafe { OwnedFd::from_raw_fd(fd) }
        });
        let error = match opened {
            // O_PATH | O_NOFOLLOW opens a symlink itself (without O_DIRECTORY, which refuses
            // it): read it as one.
            Ok(fd) if last && flags.contains(OFlag::O_PATH) && is_symlink(&fd) => Errno::ELOOP,
            Ok(fd) if last => return Ok(fd),
            Ok(fd) => {
                if entered.len() >= MAX_DEPTH {
                    return Err(Errno::ENAMETOOLONG);
                }
                entered.push(fd);
                continue;
            }
            Err(e) => e,
        };
        // A symlink refuses O_NOFOLLOW (ELOOP, or ENOTDIR with O_DIRECTORY): follow it here.
        if !matches!(error, Errno::ELOOP | Errno::ENOTDIR) {
            return Err(error);
        }
        let target = match readlinkat(Some(at.as_raw_fd()), name) {
            Ok(t) => t.into_vec(),
            Err(Errno::EINVAL) => return Err(error),
            Err(e) => return Err(e),
        };
        links += 1;
        if links > MAX_LINKS {
            return Err(Errno::ELOOP);
        }
        match target.first() {
            None => return Err(Errno::ENOENT),
            Some(b'/') => return Err(Errno::EXDEV),
            Some(_) => {}
        }
        // A last link whose target ends in a slash names a directory, as a trailing slash.
        if last && target.ends_with(b"/") {
            flags |= OFlag::O_DIRECTORY;
        }
        push_components(&mut todo, &target);
    }
}

/// Puts `path`'s components on `todo`, its first last (empty ones, from `//` or a trailing
/// `/`, dropped).
fn push_components(todo: &mut Vec<Vec<u8>>, path: &[u8]) {
    todo.extend(
        path.rsplit(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .map(<[u8]>::to_vec),
    );
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
        symlink("a.txt/", base.join("root/slashed")).unwrap();
        symlink("d/e/", base.join("root/slashed_dir")).unwrap();
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
        let cases: [(&str, Result<&str, Errno>); 16] = [
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
            ("slashed", Err(Errno::ENOTDIR)),
            ("slashed_dir/f.txt", Ok("f")),
            ("notdir", Err(Errno::ENOTDIR)),
        ];
        for (path, want) in cases {
            let walked = walk(r, path, OFlag::O_RDONLY | OFlag::O_CLOEXEC).map(read);
            assert_eq!(walked.as_deref().map_err(|e| *e), want, "walk {path}");
            if has_openat2() {
                let kernel = kernel_open(r, path, OFlag::O_RDONLY | OFlag::O_CLOEXEC).map(read);
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
        // The way in the callers use, both kinds of open (a debug assertion once refused
        // O_DIRECTORY, whose bit O_TMPFILE shares).
        assert_eq!(
            open(r, "de", OFlag::O_RDONLY | OFlag::O_DIRECTORY).map(kind),
            Ok(SFlag::S_IFDIR)
        );
        assert_eq!(open(r, "in", OFlag::O_PATH).map(kind), Ok(SFlag::S_IFREG));
        assert_eq!(walk(r, "", OFlag::O_PATH).map(kind), Err(Errno::ENOENT));
        assert_eq!(
            walk(r, "/a.txt", OFlag::O_PATH).map(kind),
            Err(Errno::EXDEV)
        );
        let _ = fs::remove_dir_all(base);
    }

    #[test]
    fn a_tree_built_to_be_costly_is_cut_short() {
        let (base, root) = tree("costly");
        let r = root.as_fd();
        // Links whose targets go down and up 800 times each, chained: 1,600 steps a link.
        let detour = "d/../".repeat(800);
        for i in 0..3 {
            let next = if i == 2 {
                "a.txt".to_string()
            } else {
                format!("c{}", i + 1)
            };
            symlink(format!("{detour}{next}"), base.join(format!("root/c{i}"))).unwrap();
        }
        assert_eq!(
            walk(r, "c2", OFlag::O_RDONLY).map(read),
            Ok("a".to_string())
        );
        assert_eq!(walk(r, "c0", OFlag::O_RDONLY).map(read), Err(Errno::ELOOP));
        // 300 directories deep: a descriptor each while the walk goes down.
        let deep = "n/".repeat(300);
        fs::create_dir_all(base.join("root").join(&deep)).unwrap();
        fs::write(base.join("root").join(&deep).join("x"), "x").unwrap();
        let deep_file = format!("{deep}x");
        assert_eq!(
            walk(r, &deep_file, OFlag::O_RDONLY).map(read),
            Err(Errno::ENAMETOOLONG)
        );
        fs::write(base.join("root").join("n/".repeat(200)).join("x"), "x").unwrap();
        let shallow = format!("{}x", "n/".repeat(200));
        assert_eq!(
            walk(r, &shallow, OFlag::O_RDONLY).map(read),
            Ok("x".to_string())
        );
        assert_eq!(
            walk(r, &"a/".repeat(2048), OFlag::O_RDONLY).map(read),
            Err(Errno::ENAMETOOLONG)
        );
        let _ = fs::remove_dir_all(base);
    }
}
