//! Signals arrive in the watcher's (and each worker's) event loop through a signalfd.

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// The signals the watcher handles; they are blocked so they queue on the signalfd, and the
/// mask is inherited by the workers, which read the same set from their own signalfd.
pub const HANDLED: [Signal; 7] = [
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGCHLD,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// Blocks the handled signals, ignores SIGPIPE (a client that goes away must not kill a
/// process: writes report EPIPE instead) and SIGXFSZ (a spooled body or a log past the
/// `RLIMIT_FSIZE` an operator set must fail that write with EFBIG, not kill the worker), and
/// returns a signalfd for the handled set. Spawned FastCGI processes get default dispositions.
pub fn install() -> nix::Result<SignalFd> {
    let mut set = SigSet::empty();
    for s in HANDLED {
        set.add(s);
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
    // SAFETY: SIG_IGN installs no handler code; nothing can run concurrently (no threads).
    unsafe {
        sigaction(
            Signal::SIGPIPE,
            &SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty()),
        )?;
        sigaction(
            Signal::SIGXFSZ,
            &SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty()),
        )?;
    }
    SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
}
