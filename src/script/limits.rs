//! Per-call limits: an instruction budget and a wall-clock deadline, both enforced by one count
//! hook, plus the state's memory limit (set by the `Router`).
//!
//! The hook fires every [`HOOK_EVERY`] VM instructions. Between route calls it does nothing.
//! Once a limit has tripped, every later hook call fails again and the sandbox's `pcall` and
//! `xpcall` re-raise instead of catching, so a route function cannot swallow the stop.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use mlua::Lua;

/// VM instructions between two hook calls: the budget's granularity.
pub const HOOK_EVERY: u32 = 1000;

/// Instruction-equivalents between two reads of the clock (the hook's step is about this).
const CLOCK_EVERY: u64 = 1024;

/// Limits applied to every route call (and, for memory, to the whole worker state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouterLimits {
    /// VM instructions one call may execute (counted in steps of [`HOOK_EVERY`]).
    pub instructions: u64,
    /// Wall-clock time one call may take, checked every [`HOOK_EVERY`] instructions.
    pub deadline: Duration,
    /// Bytes the whole Lua state may hold (`Lua::set_memory_limit`).
    pub memory: usize,
}

impl Default for RouterLimits {
    fn default() -> Self {
        RouterLimits {
            instructions: 1_000_000,
            deadline: Duration::from_millis(50),
            memory: 64 * 1024 * 1024,
        }
    }
}

/// Which limit stopped a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Trip {
    Instructions,
    Deadline,
}

/// The hook's view of the current call.
#[derive(Default)]
pub(super) struct Budget {
    active: Cell<bool>,
    used: Cell<u64>,
    /// Work noted by [`Budget::touch`] in this call.
    work: Cell<u64>,
    max: Cell<u64>,
    deadline: Cell<Option<Instant>>,
    tripped: Cell<Option<Trip>>,
    /// `file:line` where the limit tripped.
    at: RefCell<Option<String>>,
}

/// What a suspended call had used of its budget.
#[derive(Debug, Clone, Copy)]
pub(super) struct Paused {
    used: u64,
    work: u64,
    left: Option<Duration>,
}

/// The app-data handle through which the sandbox's `pcall` sees whether a limit tripped.
#[derive(Clone)]
pub(super) struct SharedBudget(pub(super) Rc<Budget>);

impl Budget {
    /// Starts a call with these limits.
    pub(super) fn start(&self, limits: &RouterLimits) {
        self.start_at(limits, Instant::now());
    }

    /// Starts a call with these limits that began at `now`: the caller's read of the clock,
    /// which the worker also arms the backstop with, so a route call reads the clock once.
    pub(super) fn start_at(&self, limits: &RouterLimits, now: Instant) {
        self.used.set(0);
        self.work.set(0);
        self.max.set(limits.instructions);
        self.deadline.set(now.checked_add(limits.deadline));
        self.tripped.set(None);
        self.at.borrow_mut().take();
        self.active.set(true);
    }

    /// Ends the current call; returns the limit that stopped it, if any, and where.
    pub(super) fn finish(&self) -> Option<(Trip, Option<String>)> {
        self.active.set(false);
        self.tripped
            .take()
            .map(|t| (t, self.at.borrow_mut().take()))
    }

    /// Suspends the current call (a route that yields to wait): what it used so far, and the
    /// deadline time left, which waiting does not spend.
    pub(super) fn pause(&self) -> Paused {
        let left = self
            .deadline
            .get()
            .map(|d| d.saturating_duration_since(Instant::now()));
        self.active.set(false);
        Paused {
            used: self.used.get(),
            work: self.work.get(),
            left,
        }
    }

    /// Continues, at `now` (as [`Budget::start_at`]), a call suspended by [`Budget::pause`].
    pub(super) fn resume_at(&self, limits: &RouterLimits, p: Paused, now: Instant) {
        self.start_at(limits, now);
        self.used.set(p.used);
        self.work.set(p.work);
        self.deadline.set(p.left.and_then(|l| now.checked_add(l)));
    }

    /// Whether a limit tripped during the current call.
    pub(super) fn is_tripped(&self) -> bool {
        self.active.get() && self.tripped.get().is_some()
    }

    /// Notes `n` units of work done by a C function (about one per 16 bytes or per element):
    /// not counted against the instruction budget (which means VM instructions and pattern
    /// steps), but the clock is read once per [`CLOCK_EVERY`] units, so a loop of big C calls
    /// meets the deadline instead of one hook check per few hundred calls.
    pub(super) fn touch(&self, n: u64) -> mlua::Result<()> {
        if !self.active.get() {
            return Ok(());
        }
        if let Some(t) = self.tripped.get() {
            return Err(stop(t));
        }
        let before = self.work.get();
        let work = before.saturating_add(n);
        self.work.set(work);
        let clock_due = n >= CLOCK_EVERY || before / CLOCK_EVERY != work / CLOCK_EVERY;
        if clock_due && self.deadline.get().is_some_and(|d| Instant::now() >= d) {
            self.tripped.set(Some(Trip::Deadline));
            return Err(stop(Trip::Deadline));
        }
        Ok(())
    }

    /// Adds `n` instruction-equivalents of work done outside the VM (pattern matching steps,
    /// a share of a big C call) and checks both limits, like the hook does.
    pub(super) fn charge(&self, n: u64) -> mlua::Result<()> {
        match self.account(n) {
            None => Ok(()),
            Some(t) => Err(stop(t)),
        }
    }

    /// Counts `n` and returns the limit that is (or already was) exceeded.
    fn account(&self, n: u64) -> Option<Trip> {
        if !self.active.get() {
            return None;
        }
        if let Some(t) = self.tripped.get() {
            return Some(t);
        }
        let before = self.used.get();
        let used = before.saturating_add(n);
        self.used.set(used);
        // The clock is read once per CLOCK_EVERY instruction-equivalents, not per charge: a
        // short `find` charges a few steps and should not pay for a clock read.
        let clock_due = n >= CLOCK_EVERY || before / CLOCK_EVERY != used / CLOCK_EVERY;
        let trip = if used > self.max.get() {
            Trip::Instructions
        } else if clock_due && self.deadline.get().is_some_and(|d| Instant::now() >= d) {
            Trip::Deadline
        } else {
            return None;
        };
        self.tripped.set(Some(trip));
        Some(trip)
    }

    /// The hook's check, every [`HOOK_EVERY`] instructions: counts them and returns the limit
    /// that stops the call, if any. `at` gives the `file:line` of the running code, asked for
    /// only when a limit trips for the first time.
    pub(super) fn check(&self, at: impl FnOnce() -> Option<String>) -> Option<Trip> {
        let already = self.active.get() && self.tripped.get().is_some();
        let trip = self.account(u64::from(HOOK_EVERY))?;
        if !already {
            *self.at.borrow_mut() = at();
        }
        Some(trip)
    }
}

/// The error message of a stop.
pub(super) fn stop_message(t: Trip) -> &'static str {
    match t {
        Trip::Instructions => "instruction budget exceeded",
        Trip::Deadline => "deadline exceeded",
    }
}

fn stop(t: Trip) -> mlua::Error {
    mlua::Error::RuntimeError(stop_message(t).into())
}

/// The state's budget, published as app data (made on first use, so the sandbox's metered
/// functions and the hook share one).
pub(super) fn shared(lua: &Lua) -> Rc<Budget> {
    if let Some(b) = lua.app_data_ref::<SharedBudget>() {
        return b.0.clone();
    }
    let budget = Rc::new(Budget::default());
    lua.set_app_data(SharedBudget(budget.clone()));
    budget
}

/// Installs the count hook on `lua` (replacing any other hook) on the state's shared budget.
/// The hook is a raw one (`thread_hook`): every thread the state creates afterwards carries it.
pub(super) fn install(lua: &Lua) -> mlua::Result<Rc<Budget>> {
    let budget = shared(lua);
    super::thread_hook::install(lua, &budget)?;
    Ok(budget)
}
