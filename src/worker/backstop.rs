//! The backstop for a route call the limits cannot interrupt (one huge `table.sort`, a C
//! function that runs long inside one call): a real-time interval timer that fires no later
//! than the call's deadline plus [`BOUND`]. Its SIGALRM is not blocked; its handler
//! (`install`) writes the access-log lines the worker still buffers (they would die with it: a
//! worker killed again and again lost every line between its once-a-second flushes, so a log
//! rotation seemed not to take effect), then ends the worker by SIGALRM's default action; the
//! watcher logs the request from the scoreboard slot and respawns.
//!
//! The timer is armed lazily and left armed: two `setitimer` calls around every route call
//! were most of what the backstop cost. [`arm`] records the call's end ([`CALL_END`]) and sets
//! the timer only when it is not already due by then; the handler ends the worker only when a
//! call is running past its end, re-arms for the running call's end when it came early, and
//! otherwise leaves the timer off. So a call that runs away is still interrupted at its end (or
//! within a clock tick of it), and a worker that stops calling Lua sees at most one spare
//! SIGALRM (restarted syscalls, `SA_RESTART`; the poll loop takes its `EINTR`).
//!
//! Every Lua call the worker makes is armed here, so the arming also tells the scoreboard slot
//! that Lua runs (`WorkerSlot::lua_started`): `workers()` shows it as `lua_ms`, the only sure
//! sign of a call past its limits (the slot's current request is just the one started last).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::admin::scoreboard::Scoreboard;

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

/// When the running call must have ended (CLOCK_MONOTONIC nanoseconds; 0: no call runs).
static CALL_END: AtomicU64 = AtomicU64::new(0);
/// When the armed timer fires (same clock; 0: not armed).
static TIMER_AT: AtomicU64 = AtomicU64::new(0);

/// Installs the SIGALRM handler: buffered access-log lines, then death by SIGALRM. Once per
/// worker, before any route call.
pub(super) fn install() {
    // The clock pair, read now rather than in the first call.
    let _ = nanos_of(Instant::now());
    // SAFETY: the handler only calls async-signal-safe functions (clock_gettime, setitimer,
    // sigaction, write, raise, through `write_pending_access_lines` and below) and atomics;
    // SA_NODEFER leaves SIGALRM unblocked inside it, so its raise (after restoring the default
    // action) ends the process at once. SA_RESTART: a spare alarm restarts the syscalls it
    // interrupts.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_alarm as extern "C" fn(libc::c_int) as libc::sighandler_t;
        act.sa_flags = libc::SA_NODEFER | libc::SA_RESTART;
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
    TIMER_AT.store(0, SeqCst);
    // Read after clearing TIMER_AT: an `arm` that stored its end before this load is seen
    // here, and one after it sees the timer off and sets it (both orders SeqCst).
    let end = CALL_END.load(SeqCst);
    if end == 0 {
        return;
    }
    let now = now_nanos();
    if now < end {
        // Early: the timer was due for an earlier call's end. Wait for this one's.
        TIMER_AT.store(end, SeqCst);
        set_raw(Duration::from_nanos(end - now));
        return;
    }
    crate::log::write_pending_access_lines();
    // SAFETY: sigaction and raise are async-signal-safe; with the default action restored and
    // SIGALRM not blocked (SA_NODEFER), the raise ends the process by SIGALRM, which the
    // watcher reads as the backstop.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut act.sa_mask);
        libc::sigaction(libc::SIGALRM, &act, std::ptr::null_mut());
        libc::raise(libc::SIGALRM);
    }
}

/// CLOCK_MONOTONIC in nanoseconds (at least 1, so 0 can mean "none"); the handler calls this
/// too (it is async-signal-safe).
fn now_nanos() -> u64 {
    crate::admin::scoreboard::monotonic_nanos().max(1)
}

/// An [`Instant`] and CLOCK_MONOTONIC nanoseconds ([`now_nanos`]) read together, so that a
/// caller's `Instant` converts to the handler's clock without a second clock read.
static BASE: OnceLock<(Instant, u64)> = OnceLock::new();

/// `t` in [`now_nanos`]'s clock. `Instant` is CLOCK_MONOTONIC on Linux too, so this is exact
/// but for the few nanoseconds between the two reads of [`BASE`] (nothing against [`BOUND`]).
fn nanos_of(t: Instant) -> u64 {
    let &(at, nanos) = BASE.get_or_init(|| (Instant::now(), now_nanos()));
    let since = u64::try_from(t.saturating_duration_since(at).as_nanos()).unwrap_or(u64::MAX);
    nanos.saturating_add(since).max(1)
}

/// A call under the backstop; dropping it ends the call (the timer may stay armed).
pub(super) struct Armed(());

impl Drop for Armed {
    fn drop(&mut self) {
        CALL_END.store(0, SeqCst);
        on_slot(|w| w.lua_done());
    }
}

/// A call starts that must end within `after` from now (reported in the slot as running Lua).
pub(super) fn arm(after: Duration) -> Armed {
    arm_at(Instant::now(), after)
}

/// [`arm`] for a call that starts at `now`, the caller's read of the clock, which it also
/// starts the call's budget with (`Router::start_route_at`): one clock read per route call
/// instead of three (this one, the slot's wall clock, the budget's).
pub(super) fn arm_at(now: Instant, after: Duration) -> Armed {
    let start = nanos_of(now);
    on_slot(|w| w.lua_started(start / 1_000_000));
    let end = start.saturating_add(u64::try_from(after.as_nanos()).unwrap_or(u64::MAX));
    CALL_END.store(end, SeqCst);
    let at = TIMER_AT.load(SeqCst);
    // Armed for this end or earlier: the handler re-arms for this call if it comes early.
    if at == 0 || at > end {
        TIMER_AT.store(end, SeqCst);
        set(after);
    }
    Armed(())
}

fn set(after: Duration) {
    if set_raw(after) != 0 {
        tracing::error!(
            "setitimer: {} (the route backstop is not armed)",
            std::io::Error::last_os_error()
        );
    }
}

/// Sets the timer to fire once, `after` from now (no logging: the handler calls it too).
fn set_raw(after: Duration) -> libc::c_int {
    let secs = after.as_secs();
    let value = libc::timeval {
        tv_sec: libc::time_t::try_from(secs).unwrap_or(libc::time_t::MAX),
        // A zero value would disarm the timer: at least a microsecond.
        tv_usec: libc::suseconds_t::from(after.subsec_micros() as i32)
            .max(libc::suseconds_t::from(secs == 0)),
    };
    let t = libc::itimerval {
        it_interval: libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
        it_value: value,
    };
    // SAFETY: `t` is a valid itimerval for the duration of the call and the old value is not
    // requested (null). setitimer has no other memory effects; it is a plain syscall, so the
    // SIGALRM handler may call it.
    unsafe { libc::setitimer(libc::ITIMER_REAL, &t, std::ptr::null_mut()) }
}
