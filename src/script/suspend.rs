//! The route as a coroutine (issue 13): a route call runs in a Lua thread, and `sleep(s)` yields
//! it; the worker keeps serving other connections and resumes it when the time has come.
//!
//! [`Router::start_route`] runs a call until it ends ([`Outcome::Done`]) or waits
//! ([`Outcome::Wait`], with a [`Ticket`] and the time to resume); [`Router::resume_route`]
//! continues it, [`Router::cancel_route`] drops it (the client left, or `limits.lua_wall`
//! passed). Waiting does not count against the call's instruction budget or its 50 ms: the
//! budget is paused with the call and resumed with it. Threads of finished calls are reused.

use std::time::{Duration, Instant};

use std::ffi::c_int;

use mlua::{ffi, Lua, MultiValue, RegistryKey, Thread, ThreadStatus, Value};

use super::limits::Paused;
use super::{Decision, RouteError, RouteErrorKind, RouteRequest, Router};

/// Registry name of the value `sleep` yields first, so a yield is known for a sleep.
const SLEEP_TOKEN: &str = "luahttpd.sleep";
/// Registry name of the value `req:body` yields first.
const BODY_TOKEN: &str = "luahttpd.body";
/// Registry name of the value `http.request` yields first.
const HTTP_TOKEN: &str = "luahttpd.http";

const HTTP_LUA: &str = r#"
local yield, type, error, token = coroutine.yield, type, error, ...
return { request = function(opts)
  if type(opts) ~= "table" then
    error("http.request expects a table: http.request{ url = 'http://127.0.0.1:8080/x' }", 2)
  end
  return yield(token, opts)
end }
"#;

/// An `http.request` to make.
#[derive(Debug, Clone)]
pub struct HttpSpec {
    /// Method.
    pub method: String,
    /// Where it goes: a plain address, or an upstream block.
    pub target: super::HttpTarget,
    /// The Host header.
    pub host: String,
    /// Path and query.
    pub path: String,
    /// Extra header lines.
    pub headers: Vec<(String, String)>,
    /// The request body.
    pub body: Vec<u8>,
    /// Time allowed for the whole exchange.
    pub timeout: Duration,
    /// `send_timeout`: the longest the peer may take no request bytes while the request is
    /// being sent (None: the upstream's `send_timeout`, or for a `url` only `timeout`).
    pub send_timeout: Option<Duration>,
    /// Largest response body taken.
    pub max_body: u64,
}

/// An `http.request` response.
#[derive(Debug, Clone)]
pub struct HttpReply {
    /// Status code.
    pub status: u16,
    /// Header fields in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// Registry name of the body function (made once, before the sandbox).
const BODY_FN: &str = "luahttpd.body.fn";

const BODY_LUA: &str = r#"
local yield, type, error, token = coroutine.yield, type, error, ...
return function(max)
  if max ~= nil and (type(max) ~= "number" or max ~= max or max < 0) then
    error("req:body(max): max must be a number of bytes >= 0", 3)
  end
  return yield(token, max)
end
"#;

/// The function behind `req:body(max)`: yields to the worker, which resumes it with the body
/// (or nil and a reason). Made before the sandbox hides `coroutine`.
pub(super) fn body_function(lua: &Lua) -> mlua::Result<mlua::Function> {
    if let Some(f) = lua.named_registry_value::<Option<mlua::Function>>(BODY_FN)? {
        return Ok(f);
    }
    if lua
        .named_registry_value::<Value>(super::sandbox::MARK)
        .is_ok_and(|v| !v.is_nil())
    {
        // Sandboxed before a Router was built: no coroutine library left to yield with.
        return lua.create_function(|_, _: MultiValue| -> mlua::Result<()> {
            Err(mlua::Error::runtime(
                "req:body is not available: the state was sandboxed before its Router was built",
            ))
        });
    }
    let token = lua.create_table()?;
    lua.set_named_registry_value(BODY_TOKEN, &token)?;
    let f: mlua::Function = lua.load(BODY_LUA).set_name("=luahttpd body").call(token)?;
    lua.set_named_registry_value(BODY_FN, &f)?;
    Ok(f)
}
/// Longest `sleep`; `limits.lua_wall` ends a route sooner anyway.
const MAX_SLEEP: f64 = 3600.0;
/// Finished threads kept for reuse.
const POOL: usize = 64;

const SLEEP_LUA: &str = r#"
local yield, type, error, token = coroutine.yield, type, error, ...
return function(s)
  if type(s) ~= "number" or s ~= s or s < 0 then
    error("sleep needs a number of seconds >= 0", 2)
  end
  yield(token, s)
end
"#;

/// A suspended route call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket {
    index: usize,
    gen: u64,
}

/// How a route call went.
pub enum Outcome {
    /// It ended: a decision, or the error.
    Done(Result<Decision, RouteError>),
    /// It waits until `until`; resume it with the ticket then.
    Wait {
        /// The call.
        ticket: Ticket,
        /// When to resume it.
        until: Instant,
    },
    /// It waits for an `http.request` (or its options were wrong: resume it at once with
    /// the error as [`Resume::Http`]).
    Http {
        /// The call.
        ticket: Ticket,
        /// What to send.
        spec: Result<HttpSpec, String>,
    },
    /// It waits for the request body (`req:body(max)`); resume it with [`Resume::Body`].
    Body {
        /// The call.
        ticket: Ticket,
        /// The most bytes it wants (None: the `limits.lua_body_bytes` ceiling).
        max: Option<u64>,
    },
}

/// What a suspended call gets when it goes on.
pub enum Resume {
    /// `sleep` returns.
    Nothing,
    /// `req:body` returns the body.
    Body(Vec<u8>),
    /// `req:body` returns nil and this reason ("too large", "bad body").
    NoBody(&'static str),
    /// `http.request` returns `{ status, headers, body }`, or nil and the error.
    Http(Result<HttpReply, String>),
}

struct Suspended {
    thread: Routine,
    paused: Paused,
    gen: u64,
}

/// A route thread: the mlua handle, which keeps it alive, and its raw state.
struct Routine {
    thread: Thread,
    raw: *mut ffi::lua_State,
}

/// The suspended calls of a router.
#[derive(Default)]
pub(super) struct Waiting {
    calls: slab::Slab<Suspended>,
    next_gen: u64,
    /// Finished threads, their stacks empty.
    pool: Vec<Routine>,
}

/// What [`Router::start_route`] resumes directly through the C API, without mlua's
/// conversions: the route function and the `req` object (registry references) and the main
/// thread (the `from` of `lua_resume`).
pub(super) struct Direct {
    main: *mut ffi::lua_State,
    route: RegistryKey,
    req: RegistryKey,
}

impl Direct {
    /// `route` is the config's route function, `req` the object `req.lua` made for it.
    pub(super) fn new(
        lua: &Lua,
        route: &mlua::Function,
        req: &mlua::Table,
    ) -> mlua::Result<Direct> {
        let mut main = std::ptr::null_mut();
        // SAFETY: runs in mlua's protected call; it pushes one value (the main thread, at a
        // fixed registry index) and reads it; mlua's stack guard drops it.
        unsafe {
            lua.exec_raw::<()>((), |l| {
                ffi::lua_rawgeti(l, ffi::LUA_REGISTRYINDEX, ffi::LUA_RIDX_MAINTHREAD);
                main = ffi::lua_tothread(l, -1);
            })?;
        }
        Ok(Direct {
            main,
            route: lua.create_registry_value(route)?,
            req: lua.create_registry_value(req)?,
        })
    }
}

/// Defines the global `sleep` in the config state, unless the config defined one. Must run
/// before the sandbox replaces the globals (a state sandboxed already gets no `sleep`).
pub(super) fn install_sleep(lua: &Lua) -> mlua::Result<()> {
    if lua
        .named_registry_value::<Value>(super::sandbox::MARK)
        .is_ok_and(|v| !v.is_nil())
    {
        return Ok(());
    }
    body_function(lua)?;
    let g = lua.globals();
    if g.get::<Value>("http")?.is_nil() {
        let token = lua.create_table()?;
        lua.set_named_registry_value(HTTP_TOKEN, &token)?;
        let http: mlua::Table = lua.load(HTTP_LUA).set_name("=luahttpd http").call(token)?;
        g.set("http", http)?;
    }
    if !g.get::<Value>("sleep")?.is_nil() {
        return Ok(());
    }
    let token = lua.create_table()?;
    lua.set_named_registry_value(SLEEP_TOKEN, &token)?;
    let sleep: mlua::Function = lua
        .load(SLEEP_LUA)
        .set_name("=luahttpd sleep")
        .call(token)?;
    g.set("sleep", sleep)
}

/// A new route thread with an empty stack.
fn new_routine(lua: &Lua, f: &mlua::Function) -> mlua::Result<Routine> {
    let thread = lua.create_thread(f.clone())?;
    let mut raw = std::ptr::null_mut();
    // SAFETY: runs in mlua's protected call with the thread pushed as its argument; it only
    // reads that value, and empties the new thread's stack (the function mlua put there), so
    // the thread is as a finished one: status LUA_OK, nothing on its stack.
    unsafe {
        lua.exec_raw::<()>(&thread, |l| {
            raw = ffi::lua_tothread(l, -1);
            ffi::lua_settop(raw, 0);
        })?;
    }
    if raw.is_null() {
        return Err(mlua::Error::runtime(
            "internal: a route thread without a state",
        ));
    }
    Ok(Routine { thread, raw })
}

impl Router {
    /// Starts the route call for `req` in a coroutine.
    ///
    /// The coroutine is a pooled thread resumed through the C API: `route(req)` pushed from
    /// the registry, `lua_resume`, and a nil result (fall through, most requests) read without
    /// making any mlua value. A decision, a yield or an error is converted as mlua would.
    pub fn start_route(&mut self, req: &RouteRequest<'_>) -> Outcome {
        self.start_route_at(req, Instant::now())
    }

    /// [`Router::start_route`] for a call that began at `now`, the caller's read of the clock
    /// (the worker arms its backstop with the same one): the deadline runs from there.
    pub fn start_route_at(&mut self, req: &RouteRequest<'_>, now: Instant) -> Outcome {
        let t = match self.waiting.pool.pop() {
            Some(t) => t,
            None => match new_routine(&self.lua, &self.func) {
                Ok(t) => t,
                Err(e) => return Outcome::Done(Err(RouteError::from_lua(RouteErrorKind::Lua, &e))),
            },
        };
        let mut nres: c_int = 0;
        let status = {
            let _entered = self.current.enter(req);
            self.budget.start_at(&self.limits, now);
            // SAFETY: `t.raw` is alive (its `Thread` holds it) and, taken from the pool or
            // just made, finished with an empty stack: a valid coroutine to start. The two
            // pushes have room (an empty thread has LUA_MINSTACK free slots) and do not raise
            // (raw reads of registry slots that `direct`'s keys keep). `main` is the state's
            // main thread, alive as long as `self.lua`. Nothing here has a destructor in the
            // frames a Lua error could skip: lua_resume catches every error of the coroutine.
            unsafe {
                ffi::lua_rawgeti(
                    t.raw,
                    ffi::LUA_REGISTRYINDEX,
                    ffi::lua_Integer::from(self.direct.route.id()),
                );
                ffi::lua_rawgeti(
                    t.raw,
                    ffi::LUA_REGISTRYINDEX,
                    ffi::lua_Integer::from(self.direct.req.id()),
                );
                ffi::lua_resume(t.raw, self.direct.main, 1, &mut nres)
            }
        };
        // The error, made while the call's request and budget still hold: emptying the dead
        // coroutine's stack runs its pending `__close` handlers, as mlua's resume did.
        let failed = match status {
            ffi::LUA_OK | ffi::LUA_YIELD => None,
            code => {
                let _entered = self.current.enter(req);
                Some(error_of(&self.lua, t.raw, code))
            }
        };
        match status {
            ffi::LUA_OK => {
                // SAFETY: the coroutine returned: its `nres` results are its whole stack.
                let first_nil =
                    unsafe { nres == 0 || ffi::lua_type(t.raw, -nres) == ffi::LUA_TNIL };
                let out = if first_nil {
                    // SAFETY: empties the finished thread's stack for its next call.
                    unsafe { ffi::lua_settop(t.raw, 0) };
                    match self.budget.finish() {
                        // Most requests: nil within the limits, no mlua value made.
                        None => {
                            self.collect_if_due();
                            Ok(Decision::FallThrough)
                        }
                        trip => self.conclude((Ok(Value::Nil), trip)),
                    }
                } else {
                    // SAFETY: as above; the results are still on the stack.
                    unsafe { self.conclude_results(t.raw, nres) }
                };
                if self.waiting.pool.len() < POOL {
                    self.waiting.pool.push(t);
                }
                Outcome::Done(out)
            }
            ffi::LUA_YIELD => {
                let n = nres;
                // SAFETY: the `n` yielded values are on the top of the coroutine's stack;
                // they are moved to the main thread (room made first) for mlua to read.
                let values = unsafe {
                    self.lua.exec_raw::<MultiValue>((), |l| {
                        if ffi::lua_checkstack(l, n) != 0 {
                            ffi::lua_xmove(t.raw, l, n);
                        }
                    })
                };
                self.after_run(t, values)
            }
            _ => {
                let e = failed.unwrap_or_else(|| mlua::Error::runtime("internal: no error"));
                self.after_run(t, Err(e))
            }
        }
    }

    /// The decision of a finished call whose first result is not nil: a fast `respond` read
    /// off the stack, anything else converted by mlua; the thread's stack is emptied.
    ///
    /// # Safety
    /// `raw` is a finished coroutine whose whole stack is its `nres` (at least 1) results.
    #[inline(never)]
    unsafe fn conclude_results(
        &mut self,
        raw: *mut ffi::lua_State,
        nres: c_int,
    ) -> Result<Decision, RouteError> {
        // SAFETY: per the contract: no API call runs on the coroutine and `-nres` is its first
        // result; the first result alone is moved to the main thread inside mlua's protected
        // call (which has made room for it), where mlua reads it as a Value.
        let (fast, value) = unsafe {
            match super::respond_fast::at(raw, -nres, self.respond_mt) {
                Some(d) => (Some(d), Ok(Value::Nil)),
                None => {
                    ffi::lua_settop(raw, 1);
                    let v = self
                        .lua
                        .exec_raw::<Value>((), |l| ffi::lua_xmove(raw, l, 1));
                    (None, v)
                }
            }
        };
        // SAFETY: empties the finished thread's stack for its next call.
        unsafe { ffi::lua_settop(raw, 0) };
        match (self.budget.finish(), fast) {
            (None, Some(d)) => {
                self.collect_if_due();
                Ok(d)
            }
            (trip, _) => self.conclude((value, trip)),
        }
    }

    /// Continues a suspended call (`sleep` returns). A stale ticket is an error.
    pub fn resume_route(
        &mut self,
        ticket: Ticket,
        req: &RouteRequest<'_>,
        with: Resume,
    ) -> Outcome {
        self.resume_route_at(ticket, req, with, Instant::now())
    }

    /// [`Router::resume_route`] at `now`, the caller's read of the clock (as
    /// [`Router::start_route_at`]): the deadline time left runs from there.
    pub fn resume_route_at(
        &mut self,
        ticket: Ticket,
        req: &RouteRequest<'_>,
        with: Resume,
        now: Instant,
    ) -> Outcome {
        let Some(s) = self.take(ticket) else {
            return Outcome::Done(Err(RouteError::new(
                RouteErrorKind::Lua,
                None,
                "internal: resumed a route call that no longer waits".into(),
            )));
        };
        let r = {
            let _entered = self.current.enter(req);
            self.budget.resume_at(&self.limits, s.paused, now);
            let args = match with {
                Resume::Nothing => Ok(MultiValue::new()),
                Resume::Body(b) => self
                    .lua
                    .create_string(b)
                    .map(|s| MultiValue::from_iter([Value::String(s)])),
                Resume::NoBody(why) => self
                    .lua
                    .create_string(why)
                    .map(|s| MultiValue::from_iter([Value::Nil, Value::String(s)])),
                Resume::Http(Err(e)) => self
                    .lua
                    .create_string(e)
                    .map(|s| MultiValue::from_iter([Value::Nil, Value::String(s)])),
                Resume::Http(Ok(r)) => {
                    http_reply_table(&self.lua, r).map(|t| MultiValue::from_iter([Value::Table(t)]))
                }
            };
            match args {
                Ok(a) => s.thread.thread.resume::<MultiValue>(a),
                Err(e) => Err(e),
            }
        };
        self.after_run(s.thread, r)
    }

    /// Drops a suspended call (its client left, or its wall-clock time ran out).
    pub fn cancel_route(&mut self, ticket: Ticket) {
        let _ = self.take(ticket);
    }

    /// How many route calls wait.
    pub fn waiting_routes(&self) -> usize {
        self.waiting.calls.len()
    }

    fn take(&mut self, ticket: Ticket) -> Option<Suspended> {
        match self.waiting.calls.get(ticket.index) {
            Some(s) if s.gen == ticket.gen => Some(self.waiting.calls.remove(ticket.index)),
            _ => None,
        }
    }

    fn after_run(&mut self, thread: Routine, r: mlua::Result<MultiValue>) -> Outcome {
        if thread.thread.status() == ThreadStatus::Resumable {
            if let Ok(values) = &r {
                if let Some(spec) = self.http_request(values) {
                    let ticket = self.suspend(thread);
                    return Outcome::Http { ticket, spec };
                }
                if let Some(max) = self.body_request(values) {
                    let ticket = self.suspend(thread);
                    return Outcome::Body { ticket, max };
                }
                if let Some(secs) = self.sleep_request(values) {
                    let ticket = self.suspend(thread);
                    let until = Instant::now() + Duration::from_secs_f64(secs.min(MAX_SLEEP));
                    return Outcome::Wait { ticket, until };
                }
            }
            let trip = self.budget.finish();
            return Outcome::Done(self.conclude((
                Err(mlua::Error::runtime(
                    "the route function yielded something other than sleep (a coroutine.yield \
                     outside its own coroutine)",
                )),
                trip,
            )));
        }
        let trip = self.budget.finish();
        let finished = thread.thread.status() == ThreadStatus::Finished && r.is_ok();
        let value = r.map(|v| v.into_iter().next().unwrap_or(Value::Nil));
        let out = self.conclude((value, trip));
        if finished && self.waiting.pool.len() < POOL {
            self.waiting.pool.push(thread);
        }
        Outcome::Done(out)
    }

    fn suspend(&mut self, thread: Routine) -> Ticket {
        let paused = self.budget.pause();
        self.waiting.next_gen += 1;
        let gen = self.waiting.next_gen;
        let index = self.waiting.calls.insert(Suspended {
            thread,
            paused,
            gen,
        });
        Ticket { index, gen }
    }

    /// The request of an `http.request` yield.
    fn http_request(&self, values: &MultiValue) -> Option<Result<HttpSpec, String>> {
        let token: mlua::Table = self.lua.named_registry_value(HTTP_TOKEN).ok()?;
        let mut it = values.iter();
        match (it.next(), it.next()) {
            (Some(Value::Table(t)), Some(Value::Table(opts)))
                if t.to_pointer() == token.to_pointer() =>
            {
                Some(super::http_spec::parse(opts).map_err(|e| format!("http.request: {e}")))
            }
            _ => None,
        }
    }

    /// The `max` of a `req:body` yield (Some(None): no max given).
    fn body_request(&self, values: &MultiValue) -> Option<Option<u64>> {
        let token: mlua::Table = self.lua.named_registry_value(BODY_TOKEN).ok()?;
        let mut it = values.iter();
        match (it.next(), it.next()) {
            (Some(Value::Table(t)), max) if t.to_pointer() == token.to_pointer() => match max {
                Some(Value::Integer(i)) => Some(Some((*i).max(0) as u64)),
                Some(Value::Number(f)) => Some(Some(f.max(0.0) as u64)),
                _ => Some(None),
            },
            _ => None,
        }
    }

    /// The seconds of a `sleep` yield.
    fn sleep_request(&self, values: &MultiValue) -> Option<f64> {
        let token: mlua::Table = self.lua.named_registry_value(SLEEP_TOKEN).ok()?;
        let mut it = values.iter();
        match (it.next(), it.next()) {
            (Some(Value::Table(t)), Some(n)) if t.to_pointer() == token.to_pointer() => match n {
                Value::Integer(i) => Some(*i as f64),
                Value::Number(f) => Some(*f),
                _ => None,
            },
            _ => None,
        }
    }
}

/// The error a coroutine ended with (`code`, its error object on top of its stack), as mlua's
/// `Thread::resume` makes it: an error raised by a Rust callback as it was, a memory error as
/// `MemoryError`, any other value as a `RuntimeError` of its text and the coroutine's
/// traceback.
fn error_of(lua: &Lua, co: *mut ffi::lua_State, code: c_int) -> mlua::Error {
    if code == ffi::LUA_ERRMEM {
        // As mlua: no traceback, nothing more allocated (the state is at its limit).
        close_dead(lua, co);
        return mlua::Error::MemoryError("not enough memory".into());
    }
    // SAFETY: the coroutine stopped with an error, whose object is on top of its stack; a
    // copy (room for it made first: a dead coroutine's frame has none left) is moved to the
    // main thread inside mlua's protected call (which made room for one value), and mlua
    // reads it (a Rust callback's error becomes `Value::Error`).
    let value = unsafe {
        lua.exec_raw::<Value>((), |l| {
            if ffi::lua_checkstack(co, 1) != 0 {
                ffi::lua_pushvalue(co, -1);
                ffi::lua_xmove(co, l, 1);
            }
        })
    };
    match value {
        Ok(Value::Error(e)) => {
            close_dead(lua, co);
            return *e;
        }
        Err(e) => {
            close_dead(lua, co);
            return e;
        }
        Ok(_) => {}
    }
    // SAFETY: as above; then, as mlua does, the text of the error object (luaL_tolstring,
    // which may call its `__tostring`: inside the protected call) with the coroutine's
    // traceback (luaL_traceback needs LUA_TRACEBACK_STACK free slots: checked), leaving
    // the one string.
    let text = unsafe {
        lua.exec_raw::<mlua::String>((), |l| {
            ffi::lua_xmove(co, l, 1);
            let s = ffi::luaL_tolstring(l, -1, std::ptr::null_mut());
            if ffi::lua_checkstack(l, ffi::LUA_TRACEBACK_STACK) != 0 {
                ffi::luaL_traceback(l, co, s, 0);
                ffi::lua_remove(l, -2);
            }
            ffi::lua_remove(l, -2);
        })
    };
    let e = match text {
        Ok(t) => mlua::Error::RuntimeError(t.to_string_lossy()),
        Err(e) => e,
    };
    close_dead(lua, co);
    e
}

/// Empties a coroutine that ended with an error, which closes its pending to-be-closed
/// variables (their `__close` runs), as mlua's `Thread::resume` does when it leaves.
fn close_dead(lua: &Lua, co: *mut ffi::lua_State) {
    // SAFETY: `co` is a dead coroutine, not running; lua_settop on it may call `__close`
    // handlers, which may raise: with no handler of its own, Lua rethrows such an error in
    // the main thread, where mlua's protected call catches it (the error is dropped: the
    // call failed already).
    let _ = unsafe { lua.exec_raw::<()>((), |_| ffi::lua_settop(co, 0)) };
}

fn http_reply_table(lua: &Lua, r: HttpReply) -> mlua::Result<mlua::Table> {
    let t = lua.create_table()?;
    t.set("status", r.status)?;
    let h = lua.create_table()?;
    for (n, v) in r.headers {
        let key = n.to_ascii_lowercase();
        let joined = match h.raw_get::<Option<String>>(key.as_str())? {
            Some(prev) => format!("{prev}, {v}"),
            None => v,
        };
        h.raw_set(key, joined)?;
    }
    t.set("headers", h)?;
    t.set("body", lua.create_string(&r.body)?)?;
    Ok(t)
}

/// `limit_conn` counts to release when the request ends: (zone name, key).
pub(super) type Releases = std::rc::Rc<std::cell::RefCell<Vec<(String, Vec<u8>)>>>;

/// Defines `__at_request_end(zone, key)` (used by lua/limit.lua's `limit_conn`): the count of
/// `key` in shared dict `zone` is decremented when the request in flight ends.
pub(super) fn install_releases(lua: &Lua, releases: &Releases) -> mlua::Result<()> {
    let r = releases.clone();
    let f = lua.create_function(move |_, (zone, key): (String, mlua::String)| {
        r.borrow_mut().push((zone, key.as_bytes().to_vec()));
        Ok(())
    })?;
    // A Lua wrapper, so the sandbox keeps it (it drops C functions from the globals).
    let wrap: mlua::Function = lua
        .load("local f = ... return function(z, k) return f(z, k) end")
        .set_name("=luahttpd release")
        .call(f)?;
    lua.globals().set("__at_request_end", wrap)
}

impl Router {
    /// The `limit_conn` counts the last route call (or resume) took, to release when its
    /// request ends.
    pub fn take_releases(&mut self) -> Vec<(String, Vec<u8>)> {
        std::mem::take(&mut *self.releases.borrow_mut())
    }
}
