//! The per-request Lua routing sandbox: the `req` object, decisions, limits.
//!
//! A worker builds one [`Router`] from the config state it inherited by fork and calls
//! [`Router::route`] for each request. The route function runs in the config's Lua state, with
//! the globals replaced by a sandbox ([`prepare_sandbox`]), under an instruction budget, a
//! wall-clock deadline and a memory limit ([`RouterLimits`]). Any failure is a [`RouteError`];
//! the caller answers 500 and logs it with the request.
//!
//! Per-worker state is possible on purpose through upvalues: a `local hits = 0` defined in the
//! config and incremented by the route function lives as long as the worker (each worker has
//! its own copy after fork). Globals cannot be assigned inside route, so nothing is shared
//! between requests by accident.
//!
//! Limits the hook cannot enforce: a single C function call runs to its end. Pattern matching
//! is therefore done in Rust ([`pattern`]) and charged step by step; big C calls are charged by
//! their size (`sandbox.lua`); what remains (one huge `table.sort`) is bounded by the worker's
//! backstop timer (`worker::backstop`), which kills a worker stuck past deadline + 1 s.

mod args;
mod decision;
mod error;
mod fs_read;
mod http_spec;
mod limits;
#[cfg(test)]
mod limits_tests;
mod pattern;
mod pattern_fast;
mod req;
#[cfg(test)]
mod req_lazy_tests;
mod req_raw;
mod respond_fast;
mod respond_hook;
mod sandbox;
mod suspend;
#[cfg(test)]
mod tests;
mod thread_hook;
mod timers;

pub use decision::{auth_decision, fastcgi_decision, install_decisions, Decision, DecisionValue};
pub use error::{RouteError, RouteErrorKind};
pub use fs_read::remember_config_dir;
pub use http_spec::HttpTarget;
pub use limits::{RouterLimits, HOOK_EVERY};
pub use respond_hook::{hook_only_route, RESPOND_HOOK, RESPOND_HOOK_AT};
pub use sandbox::prepare_sandbox;
pub use suspend::{HttpReply, HttpSpec, Outcome, Resume, Ticket};
pub use thread_hook::{carry_budget, end_evaluation_limit, limit_evaluation};
pub use timers::{has_timers, TIMERS};

use std::collections::HashSet;
use std::rc::Rc;

use mlua::{Function, Lua, RegistryKey, Value};

use crate::http::request::Request;
use decision::decision_of;
use limits::{Budget, Trip};
use req::Current;

/// What a route call sees of a request and its connection.
#[derive(Debug, Clone, Copy)]
pub struct RouteRequest<'a> {
    /// The parsed request head.
    pub req: &'a Request,
    /// The client address as text (`req.remote_addr`).
    pub remote_addr: &'a str,
    /// The client port (`req.remote_port`; 0 for Unix sockets).
    pub remote_port: u16,
    /// The listen address the request came in on, as text (`req.listener`).
    pub listener: &'a str,
    /// `"http"` (`req.scheme`).
    pub scheme: &'a str,
}

/// The FastCGI backend names of the config, published to the decision constructors.
pub(super) struct BackendNames(pub(super) HashSet<String>);

/// The HTTP upstream names of the config, published to the `proxy` constructor.
pub(super) struct UpstreamNames(pub(super) HashSet<String>);

/// Runs the config's route function for each request, in one worker.
///
/// Build one per worker, after fork. It owns the state's hook and memory limit: do not build
/// two for the same state.
pub struct Router {
    lua: Lua,
    /// The route function wrapped by `req.lua`: takes no argument.
    func: Function,
    /// The route function and `req`, for the route coroutine (`start_route`).
    direct: suspend::Direct,
    current: Rc<Current>,
    budget: Rc<Budget>,
    backends: HashSet<String>,
    /// The config's upstream names (`Router::set_upstreams`).
    upstreams: HashSet<String>,
    limits: RouterLimits,
    /// Lua heap size at which the next call ends with a full collection (see `collect_if_due`).
    gc_at: usize,
    /// The config's `respond_hook`, if any.
    hook: Option<respond_hook::Hook>,
    /// This worker's `every` timers (set by `start_timers`).
    timers: Vec<timers::Timer>,
    /// Route calls suspended in `sleep` (and later other waits), with their threads.
    waiting: suspend::Waiting,
    /// `limit_conn` counts taken by the last call, to release at the request's end.
    releases: suspend::Releases,
    /// The metatable of `respond`'s fast decisions (`respond_fast`), by address.
    respond_mt: *const std::ffi::c_void,
}

/// Least heap growth between two full collections the router runs itself.
const GC_SLACK: usize = 4 * 1024 * 1024;

impl Router {
    /// Prepares `lua` (the config state, inherited by fork) for serving: installs the sandbox
    /// (see [`prepare_sandbox`]; a no-op when already done), the limits hook and the memory
    /// limit, and the reusable `req` object. `route` is the key `config::Loaded::route` holds;
    /// `backends` are the names of the config's FastCGI backends.
    pub fn new<I, S>(
        lua: &Lua,
        route: &RegistryKey,
        backends: I,
        limits: RouterLimits,
    ) -> mlua::Result<Router>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let func: Function = lua.registry_value(route)?;
        let backends: HashSet<String> = backends.into_iter().map(Into::into).collect();
        lua.set_app_data(BackendNames(backends.clone()));
        suspend::install_sleep(lua)?;
        let releases = suspend::Releases::default();
        if lua
            .named_registry_value::<Value>(sandbox::MARK)
            .is_ok_and(|v| v.is_nil())
        {
            suspend::install_releases(lua, &releases)?;
            fs_read::install(lua)?;
        }
        prepare_sandbox(lua)?;
        let current = Rc::new(Current::new());
        let req_object = req::object(lua, &current)?;
        let wrapped = req::wrap(lua, &req_object, func.clone())?;
        let direct = suspend::Direct::new(lua, &func, &req_object)?;
        let func = wrapped;
        let hook = respond_hook::Hook::from_registry(lua, &req_object)?;
        lua.gc_collect()?;
        lua.set_memory_limit(limits.memory)?;
        let budget = limits::install(lua)?;
        let mut router = Router {
            lua: lua.clone(),
            func,
            direct,
            current,
            budget,
            backends,
            upstreams: HashSet::new(),
            limits,
            gc_at: 0,
            hook,
            timers: Vec::new(),
            waiting: suspend::Waiting::default(),
            releases,
            respond_mt: respond_fast::metatable_pointer(lua),
        };
        router.collect_if_due();
        Ok(router)
    }

    /// Runs a full collection once the heap has grown by [`GC_SLACK`] (or half of what it held
    /// after the last one) since the last.
    ///
    /// Lua's own pacing does not bound a router's heap: each decision made through mlua is a
    /// userdata with a finalizer (`respond`'s fast ones have none), which survives the cycle
    /// that finds it dead, so every cycle ends with the
    /// last cycle's garbage still counted as live, the next threshold doubles, and the heap
    /// grew to the memory limit (then innocent requests failed: an emergency collection runs
    /// no finalizers). A full collection runs the pending finalizers; the next one frees them.
    fn collect_if_due(&mut self) {
        if self.lua.used_memory() < self.gc_at {
            return;
        }
        let _ = self.lua.gc_collect();
        let used = self.lua.used_memory();
        let limit = self.limits.memory;
        let next = used.saturating_add((used / 2).max(GC_SLACK));
        self.gc_at = if limit > 0 {
            next.min(limit / 4 * 3).max(used)
        } else {
            next
        };
    }

    /// Publishes the config's upstream names: a `proxy` decision naming another is refused
    /// (when built in the route, and when returned).
    pub fn set_upstreams<I, S>(&mut self, names: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.upstreams = names.into_iter().map(Into::into).collect();
        self.lua.set_app_data(UpstreamNames(self.upstreams.clone()));
    }

    /// The limits this router applies.
    pub fn limits(&self) -> RouterLimits {
        self.limits
    }

    /// Calls the route function for `req` and turns its result into a [`Decision`]
    /// (`FallThrough` when it returned nil). Any failure — a Lua error, a limit, a bad
    /// decision — is an `Err`; the state stays usable for the next call.
    pub fn route(&mut self, req: &RouteRequest<'_>) -> Result<Decision, RouteError> {
        let result = {
            let _entered = self.current.enter(req);
            self.budget.start(&self.limits);
            let r = self.func.call::<Value>(());
            let trip = self.budget.finish();
            (r, trip)
        };
        self.conclude(result)
    }

    /// A finished route call's result (and the limit that stopped it) as a decision or error.
    fn conclude(
        &mut self,
        result: (mlua::Result<Value>, Option<(Trip, Option<String>)>),
    ) -> Result<Decision, RouteError> {
        self.collect_if_due();
        match result {
            (_, Some((trip, at))) => {
                let (kind, what) = match trip {
                    Trip::Instructions => (
                        RouteErrorKind::Instructions,
                        format!(
                            "the route function ran more than {} VM instructions",
                            self.limits.instructions
                        ),
                    ),
                    Trip::Deadline => (
                        RouteErrorKind::Deadline,
                        format!(
                            "the route function ran longer than {} ms",
                            self.limits.deadline.as_millis()
                        ),
                    ),
                };
                let mut e = match result.0 {
                    Err(lua_err) => RouteError::from_lua(kind, &lua_err),
                    Ok(_) => RouteError::new(kind, None, String::new()),
                };
                e.message = what;
                e.location = at.or(e.location);
                Err(e)
            }
            (Err(e), None) => {
                let kind = if is_memory(&e) {
                    // Free what the failed call left behind before the next request needs it.
                    let _ = self.lua.gc_collect();
                    RouteErrorKind::Memory
                } else {
                    RouteErrorKind::Lua
                };
                let mut err = RouteError::from_lua(kind, &e);
                if kind == RouteErrorKind::Memory {
                    err.message = format!(
                        "the Lua state reached its memory limit of {} bytes",
                        self.limits.memory
                    );
                }
                Err(err)
            }
            (Ok(v), None) => self.decision(v),
        }
    }

    fn decision(&self, v: Value) -> Result<Decision, RouteError> {
        let bad = |m: String| Err(RouteError::new(RouteErrorKind::BadDecision, None, m));
        let ud = match v {
            Value::Nil => return Ok(Decision::FallThrough),
            Value::UserData(ud) => ud,
            other => {
                return bad(format!(
                    "the route function returned a {}; return a decision (static, fastcgi, proxy, \
                     redirect, respond, deny) or nil",
                    other.type_name()
                ))
            }
        };
        let Some(d) = decision_of(&self.lua, &ud) else {
            return bad("the route function returned a userdata that is not a decision".into());
        };
        if let Decision::FastCgi { backend, .. } = &d {
            if !self.backends.contains(backend) {
                return bad(format!("fastcgi: unknown backend '{backend}'"));
            }
        }
        if let Decision::Proxy { upstream, .. } = &d {
            if !self.upstreams.contains(upstream) {
                return bad(format!("proxy: unknown upstream '{upstream}'"));
            }
        }
        Ok(d)
    }
}

/// `file:line` where the route function behind `route` is defined (for log lines written
/// outside a call, e.g. when a worker stuck in one was killed). Runs no Lua code.
pub fn route_location(lua: &Lua, route: &RegistryKey) -> Option<String> {
    let f: Function = lua.registry_value(route).ok()?;
    let info = f.info();
    let file = info
        .source
        .as_deref()
        .and_then(|s| s.strip_prefix('@'))
        .map(str::to_string)
        .or(info.short_src)?;
    Some(match info.line_defined {
        Some(l) if l > 0 => format!("{file}:{l}"),
        _ => file,
    })
}

fn is_memory(e: &mlua::Error) -> bool {
    match e {
        mlua::Error::MemoryError(_) => true,
        mlua::Error::CallbackError { cause, .. } => is_memory(cause),
        mlua::Error::WithContext { cause, .. } => is_memory(cause),
        _ => false,
    }
}
