//! Forking the admin evaluator: the process where admin chunks run, so that no Lua ever runs
//! in the watcher (a stalled chunk must not stop reaping, respawning or signals).

use super::Watcher;
use nix::unistd::{fork, ForkResult, Pid};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;

impl Watcher {
    /// Forks an evaluator if chunks wait and none runs.
    pub(super) fn spawn_evaluator_if_needed(&mut self) {
        if !self.admin.as_ref().is_some_and(|a| a.needs_evaluator()) {
            return;
        }
        // CLOEXEC (std sets it), so FastCGI processes exec'd later never hold the link.
        let (ours, theirs) = match UnixStream::pair() {
            Ok(p) => p,
            Err(e) => return self.evaluator_failed(&format!("socketpair: {e}")),
        };
        if let Err(e) = ours.set_nonblocking(true) {
            return self.evaluator_failed(&format!("socketpair: {e}"));
        }
        let watcher_pid = nix::unistd::getpid();
        // SAFETY: the watcher never starts a thread, so the child is a complete copy of a
        // single-threaded process and may run any code.
        match unsafe { fork() } {
            Ok(ForkResult::Parent { child }) => {
                drop(theirs);
                let stream = mio::net::UnixStream::from_std(ours);
                if let Some(a) = &mut self.admin {
                    a.attach_evaluator(child, stream, self.poll.registry());
                }
            }
            Ok(ForkResult::Child) => {
                let keep = [theirs.as_raw_fd(), crate::log::error_log_fd()];
                // The evaluator runs admin Lua: it gets no more rights than a worker (its
                // calls go through the watcher, which checks them).
                if let Err(e) = super::privileges::enter(self.config().user.as_ref(), None) {
                    tracing::error!("admin evaluator: {e}");
                    std::process::exit(1);
                }
                let code = become_evaluator(watcher_pid, &keep, theirs);
                std::process::exit(code);
            }
            Err(e) => self.evaluator_failed(&format!("fork: {e}")),
        }
    }

    fn evaluator_failed(&mut self, why: &str) {
        tracing::error!("admin: cannot start the evaluator: {why}");
        if let Some(a) = &mut self.admin {
            a.evaluator_failed(&format!("cannot start the admin evaluator: {why}"));
        }
    }
}

/// The child side: never returns to the watcher's loop.
fn become_evaluator(watcher_pid: Pid, keep: &[RawFd], stream: UnixStream) -> i32 {
    // Die with the watcher, whatever kills it.
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    if nix::unistd::getppid() != watcher_pid {
        return 0;
    }
    // Shown by ps and top, and how tools tell it from the workers.
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes, which this is.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, c"luahttpd-admin".as_ptr());
    }
    // Nothing of the watcher's: not the listeners (a stopped server must refuse connections,
    // not queue them), not the admin clients (they must see EOF when the watcher closes them),
    // not the backends' sockets, the epoll, the signalfd or the pid file. The signal mask
    // stays as inherited: INT, QUIT, TERM, … are the watcher's to handle, and it kills us.
    close_all_but(keep);
    crate::admin::evaluator::run(stream)
}

/// Closes every descriptor from 3 up except those in `keep`.
pub(super) fn close_all_but(keep: &[RawFd]) {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter(|fd| **fd > 2)
        .map(|fd| *fd as u32)
        .collect();
    crate::sort_compact::sort(&mut keep);
    keep.dedup();
    let mut from = 3u32;
    for k in keep.iter().copied().chain(std::iter::once(u32::MAX)) {
        if k > from {
            close_range(from, k - 1);
        }
        from = k.saturating_add(1);
    }
}

/// Closes descriptors `first..=last`.
fn close_range(first: u32, last: u32) {
    // SAFETY: close_range only closes descriptors of this process, which is single-threaded
    // and holds no borrowed descriptor in this range that is used afterwards.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
    if r == 0 {
        return;
    }
    // An old kernel: close one by one up to the descriptor limit.
    let max = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft.min(1 << 20) as u32)
        .unwrap_or(1024);
    for fd in first..=last.min(max) {
        // SAFETY: as above; closing a descriptor that is not open is harmless (EBADF).
        unsafe {
            libc::close(fd as i32);
        }
    }
}
