//! The backstop for a route call the limits cannot interrupt (one huge `table.sort`, a C
//! function that runs long inside one call): a real-time interval timer armed for the call's
//! deadline plus [`BOUND`]. Its SIGALRM is not blocked; its handler (`install`) writes the
//! access-log lines the worker still buffers (they would die with it: a worker killed again
//! and again lost every line between its once-a-second flushes, so a log rotation seemed not to
//! take effect), then lets the default action end the worker by SIGALRM; the watcher logs the
//! request from the scoreboard slot and respawns.
//!
//! Every Lua call the worker makes is armed here, so the arming also tells the scoreboard slot
//! that Lua runs (`WorkerSlot::lua_started`): `workers()` shows it as `lua_ms`, the only sure
//! sign of a call past its limits (the slot's current request is just the one started last).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use crate::admin::scoreboard::{now_ms, Scoreboard};

thread_local! {
    /// This worker's scoreboard and slot, set once by [`report_to`].
    static SLOT: RefCell<Option<(Rc<Scoreboard>, usize)>> = const { RefCell::new(None) };
}

/// From now on, armed calls are reported in slot `i` of `board`.
pub(super) fn report_to(board: Rc<Scoreboard>, i: usize) {
    SLOT.with(|s| *s.borrow_mut() = Some((board, i)));
}

/// Runs `f` on the registered slot, if any.
fn on_slot(f: impl FnOnce(&crate::admin::scoreboard::WorkerSlot)) {
    SLOT.with(|s| {
        if let Some(w) = s.borrow().as_ref().and_then(|(b, i)| b.worker(*i)) {
            f(w);
        }
    });
}

/// How far past its deadline a route call may run before the worker is killed.
pub const BOUND: Duration = Duration::from_millis(1000);

/// Installs the SIGALRM handler: buffered access-log lines, then death by SIGALRM. Once per
/// worker, before any route call.
pub(super) fn install() {
    // SAFETY: the handler only calls async-signal-safe functions (write, raise, through
    // `write_pending_access_lines` and below); SA_RESETHAND restores the default action on
    // entry and SA_NODEFER leaves SIGALRM unblocked, so the raise ends the process at once.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_alarm as extern "C" fn(libc::c_int) as libc::sighandler_t;
        act.sa_flags = libc::SA_RESETHAND | libc::SA_NODEFER;
        libc::sigemptyset(&mut act.sa_mask);
        if libc::sigaction(libc::SIGALRM, &act, std::ptr::null_mut()) != 0 {
            tracing::error!(
                "sigaction(SIGALRM): {} (access-log lines die with a backstopped worker)",
                std::io::Error::last_os_error()
            );
        }
    }
}

extern "C" fn on_alarm(_sig: libc::c_int) {
    crate::log::write_pending_access_lines();
    // SAFETY: raise is async-signal-safe; the disposition is the default again (SA_RESETHAND).
    unsafe {
        libc::raise(libc::SIGALRM);
    }
}

/// An armed timer; dropping it disarms it.
pub(super) struct Armed(());

impl Drop for Armed {
    fn drop(&mut self) {
        set(Duration::ZERO);
        on_slot(|w| w.lua_done());
    }
}

/// Arms the timer to fire `after` from now, around one Lua call (reported in the slot).
pub(super) fn arm(after: Duration) -> Armed {
    on_slot(|w| w.lua_started(now_ms()));
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
