//! Starting one CGI process: three pipes, fork, and in the child only async-signal-safe calls
//! (dup2 onto 0/1/2, every other descriptor closed, signals unblocked and reset, its own
//! process group so a timeout kills what it started too, then execve).
//!
//! Workers have no threads, so forking one is safe; everything the child needs (argv, envp,
//! the directory) is prepared before the fork, so the child allocates nothing.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The parent's side of a started process; the pipe ends are non-blocking and close-on-exec.
#[derive(Debug)]
pub struct Child {
    /// Its pid (also its process group).
    pub pid: i32,
    /// Its standard input (the request body goes here).
    pub stdin: OwnedFd,
    /// Its standard output (the response).
    pub stdout: OwnedFd,
    /// Its standard error (to the error log).
    pub stderr: OwnedFd,
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte"))
}

/// A pipe whose both ends are close-on-exec (dup2 in the child clears it on 0/1/2).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    Ok((r, w))
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Starts `argv` (argv[0] is the program's absolute path) in `dir` with exactly `env`
/// (name, value pairs) as its environment.
pub fn spawn(argv: &[PathBuf], env: &[(Vec<u8>, Vec<u8>)], dir: &Path) -> io::Result<Child> {
    let args: Vec<CString> = argv
        .iter()
        .map(|a| cstring(a.as_os_str().as_bytes()))
        .collect::<io::Result<_>>()?;
    let Some(prog) = args.first() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty command"));
    };
    let vars: Vec<CString> = env
        .iter()
        .map(|(n, v)| {
            let mut kv = Vec::with_capacity(n.len() + v.len() + 1);
            kv.extend_from_slice(n);
            kv.push(b'=');
            kv.extend_from_slice(v);
            cstring(&kv)
        })
        .collect::<io::Result<_>>()?;
    let dir = cstring(dir.as_os_str().as_bytes())?;
    let mut argp: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argp.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = vars.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());

    let (in_r, in_w) = pipe()?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let fds = [in_r.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()];
    // SAFETY: the worker has no other thread, so the child is a copy of a single-threaded
    // process and may run anything; it still only makes async-signal-safe calls, with
    // everything prepared above, and never returns (execve or _exit).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: in the child; every pointer is into data prepared before the fork, which
        // the child's copy of memory still holds.
        unsafe {
            child(
                fds,
                prog.as_ptr(),
                argp.as_ptr(),
                envp.as_ptr(),
                dir.as_ptr(),
            )
        }
    }
    drop((in_r, out_w, err_w));
    for fd in [&in_w, &out_r, &err_r] {
        set_nonblocking(fd)?;
    }
    Ok(Child {
        pid,
        stdin: in_w,
        stdout: out_r,
        stderr: err_r,
    })
}

/// The child between fork and exec.
///
/// # Safety
/// Called only in a freshly forked child, with pointers valid in its memory.
unsafe fn child(
    fds: [RawFd; 3],
    prog: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    dir: *const libc::c_char,
) -> ! {
    // SAFETY (whole body): async-signal-safe libc calls on descriptors and memory this
    // process owns; it ends in execve or _exit.
    unsafe {
        for (target, fd) in fds.iter().enumerate() {
            if libc::dup2(*fd, target as RawFd) < 0 {
                libc::_exit(126);
            }
        }
        // Every other descriptor (client sockets, listeners, logs, other runs' pipes) closes:
        // a script must never hold what the worker serves.
        if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) != 0 {
            let mut fd = 3;
            while fd < 65536 {
                libc::close(fd);
                fd += 1;
            }
        }
        // The worker blocks the signals it reads from its signalfd and ignores SIGPIPE; both
        // survive exec, and a script expects the defaults.
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        // Its own process group, so a timeout kills the script's children too; and it dies
        // with the worker.
        libc::setpgid(0, 0);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::chdir(dir) != 0 {
            let msg = b"cgi: cannot enter the script's folder\n";
            libc::write(2, msg.as_ptr().cast(), msg.len());
            libc::_exit(126);
        }
        libc::execve(prog, argv, envp);
        let msg = b"cgi: cannot execute the script\n";
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::_exit(127)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn the_child_gets_exactly_the_environment_and_no_other_descriptor() {
        let env = vec![(b"ONLY".to_vec(), b"this".to_vec())];
        let argv = [
            PathBuf::from("/bin/sh"),
            PathBuf::from("-c"),
            PathBuf::from("/usr/bin/env; /bin/ls /proc/self/fd | /usr/bin/wc -l; pwd"),
        ];
        let c = spawn(&argv, &env, Path::new("/tmp")).expect("spawn");
        drop(c.stdin);
        let mut out = Vec::new();
        let mut f = std::fs::File::from(c.stdout);
        // The pipe is non-blocking: wait for the child, then read all.
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(c.pid, &mut status, 0) };
        let _ = f.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out);
        let lines: Vec<&str> = text.lines().collect();
        // env prints ONLY (and PWD, which sh itself sets), ls sees 0, 1, 2 and its own fd.
        assert!(lines.contains(&"ONLY=this"), "{text}");
        assert!(!text.contains("PATH="), "{text}");
        assert!(lines.contains(&"4"), "{text}");
        assert_eq!(lines.last(), Some(&"/tmp"), "{text}");
    }
}
