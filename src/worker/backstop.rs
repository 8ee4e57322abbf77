//! The backstop for a route call the limits cannot interrupt (one huge `table.sort`, a C
//! function that runs long inside one call): a real-time interval timer armed for the call's
//! deadline plus [`BOUND`]. Its SIGALRM is neither blocked nor handled, so its default action
//! terminates the worker; the watcher logs the request from the scoreboard slot and respawns.

use std::time::Duration;

/// How far past its deadline a route call may run before the worker is killed.
pub const BOUND: Duration = Duration::from_millis(1000);

/// An armed timer; dropping it disarms it.
pub(super) struct Armed(());

impl Drop for Armed {
    fn drop(&mut self) {
        set(Duration::ZERO);
    }
}

/// Arms the timer to fire `after` from now.
pub(super) fn arm(after: Duration) -> Armed {
    set(after);
    Armed(())
}

fn set(after: Duration) {
    let value = libc::timeval {
        tv_sec: libc::time_t::try_from(after.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_usec: libc::suseconds_t::from(after.subsec_micros() as i32),
    };
    let t = libc::itimerval {
        it_interval: libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
        it_value: value,
    };
    // SAFETY: `t` is a valid itimerval for the duration of the call and the old value is not
    // requested (null). setitimer has no other memory effects.
    let rc = unsafe { libc::setitimer(libc::ITIMER_REAL, &t, std::ptr::null_mut()) };
    if rc != 0 {
        tracing::error!(
            "setitimer: {} (the route backstop is not armed)",
            std::io::Error::last_os_error()
        );
    }
}
