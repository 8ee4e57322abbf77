//! The worker's CGI processes: which are running and for which connection, reaped on SIGCHLD
//! from the worker's signalfd (`Worker::on_signals`), their exit status kept until the run
//! that started them takes it.
//!
//! A worker is one thread, so the table is a thread-local: the run (src/worker/cgi.rs) and
//! the signal handling reach it without threading it through every context.

use std::cell::RefCell;
use std::collections::HashMap;

/// How a CGI process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// `exit(code)`.
    Code(i32),
    /// Killed by a signal.
    Signal(i32),
}

impl Exit {
    /// Whether it ended by itself with status 0.
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }
}

#[derive(Default)]
struct Procs {
    /// Running (not yet reaped) pid → the connection to wake when it ends, None once its
    /// run let go of it (cancelled: killed, reaped uncounted).
    live: HashMap<i32, Option<usize>>,
    /// Reaped pid → exit, until its run takes it.
    exited: HashMap<i32, Exit>,
}

thread_local! {
    static PROCS: RefCell<Procs> = RefCell::new(Procs::default());
}

/// Records a started process of connection `key`.
pub fn started(pid: i32, key: usize) {
    PROCS.with(|p| p.borrow_mut().live.insert(pid, Some(key)));
}

/// Processes not yet reaped (the concurrency limit counts these).
pub fn running() -> usize {
    PROCS.with(|p| p.borrow().live.len())
}

/// The exit of `pid`, once reaped (taken: asked once).
pub fn take_exit(pid: i32) -> Option<Exit> {
    PROCS.with(|p| p.borrow_mut().exited.remove(&pid))
}

/// Kills `pid` and its process group if it was not reaped yet (so a reused pid is never hit),
/// and stops waking its connection.
pub fn kill(pid: i32) {
    PROCS.with(|p| {
        let mut p = p.borrow_mut();
        p.exited.remove(&pid);
        if let Some(owner) = p.live.get_mut(&pid) {
            *owner = None;
            // SAFETY: plain kill(2) of a child of this process that has not been reaped, so
            // the pid (and group id) still names it.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
                libc::kill(pid, libc::SIGKILL);
            }
        }
    });
}

/// Lets go of `pid` without killing it (its run is over; it may still be exiting).
pub fn forget(pid: i32) {
    PROCS.with(|p| {
        let mut p = p.borrow_mut();
        p.exited.remove(&pid);
        if let Some(owner) = p.live.get_mut(&pid) {
            *owner = None;
        }
    });
}

/// Reaps every exited child (WNOHANG); returns the connections whose process ended.
pub fn reap() -> Vec<usize> {
    let mut wake = Vec::new();
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid out pointer; WNOHANG never blocks.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            break;
        }
        let exit = if libc::WIFSIGNALED(status) {
            Exit::Signal(libc::WTERMSIG(status))
        } else {
            Exit::Code(libc::WEXITSTATUS(status))
        };
        PROCS.with(|p| {
            let mut p = p.borrow_mut();
            if let Some(Some(key)) = p.live.remove(&pid) {
                p.exited.insert(pid, exit);
                wake.push(key);
            }
        });
    }
    wake
}
