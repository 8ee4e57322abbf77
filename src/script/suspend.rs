//! The route as a coroutine (issue 13): a route call runs in a Lua thread, and `sleep(s)` yields
//! it; the worker keeps serving other connections and resumes it when the time has come.
//!
//! [`Router::start_route`] runs a call until it ends ([`Outcome::Done`]) or waits
//! ([`Outcome::Wait`], with a [`Ticket`] and the time to resume); [`Router::resume_route`]
//! continues it, [`Router::cancel_route`] drops it (the client left, or `limits.lua_wall`
//! passed). Waiting does not count against the call's instruction budget or its 50 ms: the
//! budget is paused with the call and resumed with it. Threads of finished calls are reused.

use std::time::{Duration, Instant};

use mlua::{Lua, MultiValue, Thread, ThreadStatus, Value};

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
    thread: Thread,
    paused: Paused,
    gen: u64,
}

/// The suspended calls of a router.
#[derive(Default)]
pub(super) struct Waiting {
    calls: slab::Slab<Suspended>,
    next_gen: u64,
    pool: Vec<Thread>,
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

impl Router {
    /// Starts the route call for `req` in a coroutine.
    pub fn start_route(&mut self, req: &RouteRequest<'_>) -> Outcome {
        let thread = match self.waiting.pool.pop() {
            Some(t) if t.reset(self.func.clone()).is_ok() => t,
            _ => match self.lua.create_thread(self.func.clone()) {
                Ok(t) => t,
                Err(e) => return Outcome::Done(Err(RouteError::from_lua(RouteErrorKind::Lua, &e))),
            },
        };
        let r = {
            let _entered = self.current.enter(req);
            self.budget.start(&self.limits);
            thread.resume::<MultiValue>(())
        };
        self.after_run(thread, r)
    }

    /// Continues a suspended call (`sleep` returns). A stale ticket is an error.
    pub fn resume_route(
        &mut self,
        ticket: Ticket,
        req: &RouteRequest<'_>,
        with: Resume,
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
            self.budget.resume(&self.limits, s.paused);
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
                Ok(a) => s.thread.resume::<MultiValue>(a),
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

    fn after_run(&mut self, thread: Thread, r: mlua::Result<MultiValue>) -> Outcome {
        if thread.status() == ThreadStatus::Resumable {
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
        let finished = thread.status() == ThreadStatus::Finished && r.is_ok();
        let value = r.map(|v| v.into_iter().next().unwrap_or(Value::Nil));
        let out = self.conclude((value, trip));
        if finished && self.waiting.pool.len() < POOL {
            self.waiting.pool.push(thread);
        }
        Outcome::Done(out)
    }

    fn suspend(&mut self, thread: Thread) -> Ticket {
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
