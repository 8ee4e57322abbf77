//! Evaluating a reloaded config file in a forked child before the watcher touches it.
//!
//! A config file is a Lua program: it may loop (`while true do end`) or spend minutes in one
//! C call (`("a"):rep(1e6):find(".-.-.-b")`), which no instruction hook interrupts. Evaluated
//! in the watcher, either would stop supervision: no reaping, no respawning, no signals. So a
//! reload first forks a checker ("luahttpd-check"); it evaluates and validates the file and
//! writes its verdict to a pipe, while the watcher goes on with its loop. Past `CHECK_LIMIT`
//! of wall-clock time the checker is SIGKILLed and the reload fails with that reason.
//!
//! The check includes what only the running server can tell: a shared zone that changed size
//! (`shared::check_config`, against the zones the checker inherited).
//!
//! Only a verdict comes back: the loaded configuration holds a Lua state (the route function
//! and its upvalues), which cannot cross a process boundary. On "ok" the watcher evaluates the
//! file itself, as before, now with a wall-clock hook as a second line of defence (the file
//! may have changed since the check; a C call still escapes the hook, but the checker has just
//! shown that this file does not stall).
//!
//! No thread ever exists in the watcher, so the child may run any code after fork.

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::{fork, ForkResult, Pid};
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Wall-clock time a reloaded config file may take to evaluate and validate.
pub(super) const CHECK_LIMIT: Duration = Duration::from_secs(5);
/// Memory the checker may allocate beyond what it inherits (a config that grows a table
/// without end fails with "not enough memory" instead of exhausting the machine).
const CHECK_MEMORY: u64 = 1 << 30;
/// The watcher's poll token for the checker's pipe.
pub(super) const TOKEN: mio::Token = mio::Token(3);

/// A checker at work: its pid, the read end of its pipe, what it wrote so far.
pub(super) struct ConfigCheck {
    pid: Pid,
    pipe: File,
    answer: Vec<u8>,
    deadline: Instant,
    /// The pipe reached end of file (the checker has written all it will).
    eof: bool,
    /// How the checker ended, once reaped.
    exit: Option<WaitStatus>,
    /// It was killed for overrunning `CHECK_LIMIT`.
    timed_out: bool,
}

impl ConfigCheck {
    /// Forks a checker for `file` (`DEFAULT_CONFIG_NAME` means the embedded default).
    pub(super) fn start(file: &Path, registry: &mio::Registry) -> Result<ConfigCheck, String> {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| format!("reload: pipe for the config check: {e}"))?;
        set_nonblocking(&read).map_err(|e| format!("reload: pipe for the config check: {e}"))?;
        let watcher_pid = nix::unistd::getpid();
        // SAFETY: the watcher never starts a thread, so the child is a complete copy of a
        // single-threaded process and may run any code.
        match unsafe { fork() } {
            Ok(ForkResult::Parent { child }) => {
                drop(write);
                let check = ConfigCheck {
                    pid: child,
                    pipe: File::from(read),
                    answer: Vec::new(),
                    deadline: Instant::now() + CHECK_LIMIT,
                    eof: false,
                    exit: None,
                    timed_out: false,
                };
                if let Err(e) = registry.register(
                    &mut mio::unix::SourceFd(&check.pipe.as_raw_fd()),
                    TOKEN,
                    mio::Interest::READABLE,
                ) {
                    check.kill();
                    return Err(format!("reload: poll for the config check: {e}"));
                }
                Ok(check)
            }
            Ok(ForkResult::Child) => {
                drop(read);
                checker(watcher_pid, file.to_path_buf(), write)
            }
            Err(e) => Err(format!("reload: fork for the config check: {e}")),
        }
    }

    /// The checker's pid (its exit is reaped by the watcher's `reap`).
    pub(super) fn pid(&self) -> Pid {
        self.pid
    }

    /// The pipe's descriptor (a worker forked meanwhile closes its copy).
    pub(super) fn raw_fd(&self) -> RawFd {
        self.pipe.as_raw_fd()
    }

    /// When the checker is due to be killed, if it has not ended.
    pub(super) fn deadline(&self) -> Option<Instant> {
        (self.exit.is_none() && !self.timed_out).then_some(self.deadline)
    }

    /// Reads what the checker wrote, up to end of file.
    pub(super) fn on_readable(&mut self) {
        let mut buf = [0u8; 4096];
        while !self.eof {
            match self.pipe.read(&mut buf) {
                Ok(0) => self.eof = true,
                Ok(n) => self.answer.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => self.eof = true,
            }
        }
    }

    /// Records the checker's exit.
    pub(super) fn reaped(&mut self, status: WaitStatus) {
        self.exit = Some(status);
        // Whatever is left in the pipe is there now.
        self.on_readable();
    }

    /// Kills the checker once it overran its time.
    pub(super) fn enforce(&mut self, now: Instant) {
        if !self.timed_out && self.exit.is_none() && now >= self.deadline {
            self.timed_out = true;
            self.kill();
        }
    }

    /// SIGKILLs the checker (its exit is reaped as usual).
    pub(super) fn kill(&self) {
        let _ = kill(self.pid, Signal::SIGKILL);
    }

    /// The verdict, once the checker has ended and its pipe is read: Ok, or why the reload
    /// fails (the config's own `file:line` errors, or what happened to the checker).
    pub(super) fn verdict(&self) -> Option<Result<(), String>> {
        let status = self.exit?;
        if !self.eof {
            return None;
        }
        if self.timed_out {
            return Some(Err(format!(
                "evaluating the config took longer than {CHECK_LIMIT:?} (a loop, or a slow \
                 pattern match?); the check was killed"
            )));
        }
        let text = String::from_utf8_lossy(&self.answer);
        Some(match text.split_once('\n') {
            Some(("ok", _)) => Ok(()),
            Some(("error", errors)) => Err(errors.to_string()),
            _ => Err(format!(
                "the config check {} without an answer",
                super::describe_exit(&status)
            )),
        })
    }

    /// Stops watching the pipe.
    pub(super) fn deregister(&self, registry: &mio::Registry) {
        let _ = registry.deregister(&mut mio::unix::SourceFd(&self.pipe.as_raw_fd()));
    }
}

fn set_nonblocking(fd: &OwnedFd) -> nix::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// The child side: evaluate, validate, write the verdict, exit. Never returns.
fn checker(watcher_pid: Pid, file: PathBuf, write: OwnedFd) -> ! {
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    if nix::unistd::getppid() != watcher_pid {
        // SAFETY: _exit ends the process at once; nothing of the watcher's is flushed twice.
        unsafe { libc::_exit(0) }
    }
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes, which this is.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, c"luahttpd-check".as_ptr());
    }
    // Nothing of the watcher's stays open here: not its listeners, sockets or logs.
    super::admin_proc::close_all_but(&[write.as_raw_fd()]);
    limit_memory();
    // The watcher logs the outcome; warnings of this evaluation would be logged twice.
    let result =
        tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), || {
            if file.as_os_str() == crate::config::DEFAULT_CONFIG_NAME {
                crate::config::load_default()
            } else {
                crate::config::load_file(&file)
            }
        });
    // The zones this checker inherited are the running ones: a resized zone fails here, as
    // it would when the watcher maps the new generation, not after the watcher evaluated it.
    let answer = match result {
        Ok(loaded) => match crate::shared::check_config(&loaded.config.shared) {
            Ok(()) => "ok\n".to_string(),
            Err(e) => format!("error\n{e}"),
        },
        Err(errors) => format!("error\n{errors}"),
    };
    let mut out = File::from(write);
    let _ = out.write_all(answer.as_bytes());
    drop(out);
    // SAFETY: as above; the Lua states and buffers inherited from the watcher are not ours to
    // tear down.
    unsafe { libc::_exit(0) }
}

/// Caps the checker's data segment at what it inherited plus `CHECK_MEMORY`.
fn limit_memory() {
    let inherited_kib = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmData:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        });
    if let Some(kib) = inherited_kib {
        let limit = kib * 1024 + CHECK_MEMORY;
        let _ =
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_DATA, limit, limit);
    }
}
