//! The config's `every` and `at_worker_start` functions, run by a worker's `Router` between
//! requests under the same limits as a route call (issue 13). The worker's loop asks for the
//! next due time ([`Router::next_timer`]) and runs what is due ([`Router::due_timer`],
//! [`Router::run_timer`]) with its backstop armed around each call.

use std::time::{Duration, Instant};

use mlua::{Function, Lua, Table};

use super::{RouteError, RouteErrorKind, Router, Trip};

/// Registry name of the list the config records `every`/`at_worker_start` calls in.
pub const TIMERS: &str = "luahttpd.timers";

/// One `every` timer of this worker.
pub(super) struct Timer {
    period: Duration,
    /// Given with `{ worker = "one" }`: runs only while this process holds the lease.
    one: bool,
    next: Instant,
    func: Function,
    at: String,
}

/// An `every` call as recorded: period (s), whether in one worker only, the function, where.
type Every = (f64, bool, Function, String);
/// An `at_worker_start` call: the function, where.
type AtStart = (Function, String);

/// The recorded calls: (`every` timers, `at_worker_start` functions with where).
pub(super) fn recorded(lua: &Lua) -> mlua::Result<(Vec<Every>, Vec<AtStart>)> {
    let mut every = Vec::new();
    let mut start = Vec::new();
    let Some(list) = lua.named_registry_value::<Option<Table>>(TIMERS)? else {
        return Ok((every, start));
    };
    for e in list.sequence_values::<Table>() {
        let e = e?;
        let kind: String = e.get("kind")?;
        let func: Function = e.get("fn")?;
        let at: String = e.get("at")?;
        if kind == "every" {
            every.push((e.get("period")?, e.get("one")?, func, at));
        } else {
            start.push((func, at));
        }
    }
    Ok((every, start))
}

/// Whether the config recorded any timer or worker-start function.
pub fn has_timers(lua: &Lua) -> bool {
    lua.named_registry_value::<Option<Table>>(TIMERS)
        .ok()
        .flatten()
        .is_some_and(|t| t.raw_len() > 0)
}

impl Router {
    /// Runs the `at_worker_start` functions and arms this worker's `every` timers: all of them
    /// in every worker, those with `{ worker = "one" }` only in the worker of slot 0 (the same
    /// slot across respawns), which runs them while it holds their lease (the worker asks,
    /// [`Router::timer_is_one`]). Errors are logged.
    pub fn start_timers(&mut self, worker_index: usize, now: Instant) {
        let (every, start) = match recorded(&self.lua) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("timers: {e}");
                return;
            }
        };
        for (func, at) in start {
            self.call_outside("at_worker_start", &func, &at);
        }
        self.timers = every
            .into_iter()
            .filter(|(_, one, _, _)| !one || worker_index == 0)
            .map(|(period, one, func, at)| {
                let period = Duration::from_secs_f64(period);
                Timer {
                    period,
                    one,
                    next: now + period,
                    func,
                    at,
                }
            })
            .collect();
    }

    /// When the next timer is due.
    pub fn next_timer(&self) -> Option<Instant> {
        self.timers.iter().map(|t| t.next).min()
    }

    /// A timer due at `now`, if any.
    pub fn due_timer(&self, now: Instant) -> Option<usize> {
        self.timers.iter().position(|t| t.next <= now)
    }

    /// Whether timer `i` was given with `{ worker = "one" }`.
    pub fn timer_is_one(&self, i: usize) -> bool {
        self.timers.get(i).is_some_and(|t| t.one)
    }

    /// Runs timer `i` and schedules its next run (one period after this one was due, or after
    /// `now` when runs were missed: a slow worker skips runs instead of bunching them).
    pub fn run_timer(&mut self, i: usize, now: Instant) {
        if let Some((func, at)) = self.schedule_next(i, now) {
            self.call_outside("every", &func, &at);
        }
    }

    /// Schedules timer `i`'s next run without running it (a `{ worker = "one" }` timer whose
    /// lease another process holds).
    pub fn skip_timer(&mut self, i: usize, now: Instant) {
        self.schedule_next(i, now);
    }

    /// Drops the `{ worker = "one" }` timers: a draining worker leaves them to the next
    /// generation.
    pub fn stop_one_timers(&mut self) {
        self.timers.retain(|t| !t.one);
    }

    fn schedule_next(&mut self, i: usize, now: Instant) -> Option<(Function, String)> {
        let t = self.timers.get_mut(i)?;
        let next = t.next + t.period;
        t.next = if next <= now { now + t.period } else { next };
        Some((t.func.clone(), t.at.clone()))
    }

    /// Calls `func` with no argument under the route limits; logs a failure.
    pub(super) fn call_outside(&mut self, what: &str, func: &Function, at: &str) {
        self.budget.start(&self.limits);
        let r = func.call::<()>(());
        let trip = self.budget.finish();
        self.collect_if_due();
        let msg = match (r, trip) {
            (_, Some((trip, place))) => format!(
                "{}{}",
                place.map(|p| format!("{p}: ")).unwrap_or_default(),
                match trip {
                    Trip::Instructions => "ran out of its instruction budget",
                    Trip::Deadline => "ran past its deadline",
                }
            ),
            (Err(e), None) => {
                let e = RouteError::from_lua(RouteErrorKind::Lua, &e);
                match e.location {
                    Some(l) => format!("{l}: {}", e.message),
                    None => e.message,
                }
            }
            (Ok(()), None) => return,
        };
        tracing::error!("{what} (given at {at}): {msg}");
    }
}
