//! A kernel that refuses openat2 (older than Linux 5.6, or a seccomp filter against it): the
//! server says so at start and resolves paths beneath the root itself, with the same rules:
//! files and symlinks inside are served, symlinks leading out are refused. The refusal is made
//! here with a seccomp filter installed in the server's process before exec (inherited by
//! every process it forks), and once in a forked child after the probe found openat2.

mod common;

use common::*;

#[cfg(target_arch = "x86_64")]
#[test]
fn a_kernel_refusing_openat2_still_serves_files_beneath_the_root_and_nothing_else() {
    use std::os::unix::fs::symlink;
    use std::os::unix::process::CommandExt;

    let dir = TempDir::new("no-openat2");
    dir.write("www/a.txt", b"static\n");
    dir.write("www/sub/index.html", b"index\n");
    dir.write("secret.txt", b"secret\n");
    let www = dir.path().join("www");
    symlink("a.txt", www.join("in.txt")).unwrap();
    symlink("sub", www.join("linked")).unwrap();
    symlink("../secret.txt", www.join("out.txt")).unwrap();
    symlink("sub/../../secret.txt", www.join("out2.txt")).unwrap();
    symlink(dir.path().join("secret.txt"), www.join("abs.txt")).unwrap();
    let config = format!(
        "server {{ {BASE} }}\n\
         route(function(req) if req.path == \"/lua\" then return respond(200, \"lua ok\") end end)\n"
    );
    let s = Server::start_with(dir, &config, |cmd| {
        // SAFETY: the closure runs in the forked child before exec and makes only two prctl
        // calls over a filter on its stack: no allocation, no lock.
        unsafe {
            cmd.pre_exec(deny_openat2);
        }
    });
    assert!(
        s.log_text().contains("this kernel refuses openat2"),
        "no start-up line about openat2; log:\n{}",
        s.log_text()
    );
    for (path, body) in [
        ("/a.txt", "static\n"),
        ("/in.txt", "static\n"),
        ("/sub/", "index\n"),
        ("/linked/index.html", "index\n"),
    ] {
        let r = s.get(path);
        assert_eq!((r.status, r.text().as_str()), (200, body), "{path}");
    }
    assert_eq!(
        s.get("/linked").status,
        301,
        "a directory without its slash"
    );
    for path in ["/out.txt", "/out2.txt", "/abs.txt"] {
        let r = s.get(path);
        assert_eq!(r.status, 403, "{path}: {}", r.text());
        assert!(!r.text().contains("secret"), "{path}");
    }
    assert_eq!(s.get("/a.txt/").status, 404);
    assert_eq!(s.get("/missing").status, 404);
    let lua = s.get("/lua");
    assert_eq!(lua.status, 200);
    assert_eq!(lua.text(), "lua ok");
}

#[cfg(target_arch = "x86_64")]
#[test]
fn a_refusal_after_the_probe_makes_the_open_walk_instead() {
    // The probe found openat2 (in this process, before the fork), then a filter refused it
    // (one installed later, as a sandbox may): `beneath::open` walks instead of failing.
    use luahttpd::beneath;
    use nix::fcntl::OFlag;
    use std::io::Read;
    use std::os::fd::AsFd;
    use std::os::unix::fs::symlink;

    let dir = TempDir::new("openat2-late");
    dir.write("www/a.txt", b"static\n");
    dir.write("secret.txt", b"secret\n");
    symlink("../secret.txt", dir.path().join("www/out.txt")).unwrap();
    let root = std::fs::File::open(dir.path().join("www")).unwrap();
    if !beneath::has_openat2() {
        eprintln!("SKIPPED: openat2 is refused here from the start (the other test covers it)");
        return;
    }
    // SAFETY: the child makes system calls (prctl, openat, readlinkat, read) and allocates
    // (glibc makes malloc usable in a forked child of a threaded process), prints nothing and
    // leaves with `_exit`, touching no lock another thread of the harness may hold.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork");
    if child == 0 {
        let code = (|| {
            if deny_openat2().is_err() {
                return 2;
            }
            if !matches!(
                beneath::open(root.as_fd(), "out.txt", OFlag::O_RDONLY),
                Err(nix::errno::Errno::EXDEV)
            ) {
                return 3;
            }
            let Ok(fd) = beneath::open(root.as_fd(), "a.txt", OFlag::O_RDONLY) else {
                return 4;
            };
            let mut text = String::new();
            match std::fs::File::from(fd).read_to_string(&mut text) {
                Ok(_) if text == "static\n" => 0,
                _ => 5,
            }
        })();
        // SAFETY: ends the forked child at once, without the harness's exit work.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child, with a valid pointer for its status.
    assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child status {status} (2: no filter, 3: the link out opened, 4/5: a.txt not read)"
    );
}

/// Installs a seccomp filter that answers openat2 (x86-64 number 437) with ENOSYS, as a kernel
/// without it does, and allows every other call.
#[cfg(target_arch = "x86_64")]
fn deny_openat2() -> std::io::Result<()> {
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const ARCH_X86_64: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_ERRNO: u32 = 0x0005_0000;
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    // struct seccomp_data: nr at offset 0, arch at offset 4.
    let filter = [
        op(LD_W_ABS, 0, 0, 4),
        op(JEQ_K, 0, 3, ARCH_X86_64),
        op(LD_W_ABS, 0, 0, 0),
        op(JEQ_K, 0, 1, 437),
        op(RET_K, 0, 0, RET_ERRNO | libc::ENOSYS as u32),
        op(RET_K, 0, 0, RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: plain prctl calls; `prog` points at `filter`, alive across the call, which the
    // kernel copies.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(
                libc::PR_SET_SECCOMP,
                2, // SECCOMP_MODE_FILTER
                &prog as *const libc::sock_fprog,
            ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(not(target_arch = "x86_64"))]
#[test]
fn a_kernel_refusing_openat2_is_named_at_start_and_the_rest_still_serves() {
    eprintln!("SKIPPED: the seccomp filter of this test knows x86-64 system call numbers only");
}
