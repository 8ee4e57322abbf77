//! The admin Lua state, inside the admin evaluator process: a safe part of the standard
//! library, the admin functions, `print` captured for the client, and the per-chunk limits.
//!
//! Each chunk runs in its own coroutine. An admin function that needs the watcher (`status()`,
//! `reload()`, …) yields a [`Call`]; the evaluator sends it to the watcher and resumes the
//! chunk with the answer, so a chunk waiting for a reload does not hold up other chunks. The
//! instruction limit counts per chunk across its resumptions, and once over it every later
//! check fails again, so `pcall` cannot catch it and start over.

use super::protocol::{
    compile_chunk, error_response, lua_error_message, ok_response, values_to_json, with_output,
};
use super::wire::Call;
use mlua::{HookTriggers, Lua, MultiValue, Thread, ThreadStatus, Value, VmState};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

/// Lua instructions a chunk may run.
pub const INSTRUCTIONS: u64 = 10_000_000;
/// Memory of the admin Lua state.
const MEMORY: usize = 64 << 20;
/// Printed output kept per chunk; the rest is dropped with a note.
pub const MAX_OUTPUT: usize = 256 << 10;
/// How often the hook counts.
const HOOK_EVERY: u32 = 10_000;
/// What a call to the watcher costs, in instructions: the hook's count restarts with every
/// resumption, so without this `while true do status() end` would never reach the limit
/// (this allows 10,000 calls per chunk).
const CALL_COST: u64 = 1_000;

/// What a chunk did when it stopped running.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// It waits for the watcher's answer to this call.
    Call(Call),
    /// It ended: the client's response (`{"ok":…}`, with `output` when it printed).
    Done(serde_json::Value),
}

/// The instruction count of the chunk now running (the hook's app data).
struct Count(u64);

/// What chunks printed: the running chunk's text, and whether it was cut.
#[derive(Default)]
struct Output {
    text: String,
    cut: bool,
}

/// A chunk that waits for the watcher.
struct Suspended {
    thread: Thread,
    count: u64,
    output: Output,
}

/// The admin Lua state and its suspended chunks.
pub struct Sandbox {
    lua: Lua,
    waiting: HashMap<u64, Suspended>,
    output: Rc<RefCell<Output>>,
}

impl Sandbox {
    /// A fresh state.
    pub fn new() -> mlua::Result<Sandbox> {
        let output = Rc::new(RefCell::new(Output::default()));
        let lua = admin_lua(&output)?;
        Ok(Sandbox {
            lua,
            waiting: HashMap::new(),
            output,
        })
    }

    /// Starts chunk `id`.
    pub fn start(&mut self, id: u64, chunk: &str) -> Step {
        let func = match compile_chunk(&self.lua, chunk) {
            Ok(f) => f,
            Err(e) => return Step::Done(error_response(&e)),
        };
        let thread = match self.lua.create_thread(func) {
            Ok(t) => t,
            Err(e) => return Step::Done(error_response(&lua_error_message(&e))),
        };
        let s = Suspended {
            thread,
            count: 0,
            output: Output::default(),
        };
        self.run(id, s, MultiValue::new())
    }

    /// Resumes chunk `id` with the watcher's answer; None if no such chunk waits.
    pub fn resume(&mut self, id: u64, reply: Result<serde_json::Value, String>) -> Option<Step> {
        let s = self.waiting.remove(&id)?;
        let args = match reply {
            Ok(v) => json_to_lua(&self.lua, &v).map(|v| vec![Value::Boolean(true), v]),
            Err(e) => self
                .lua
                .create_string(&e)
                .map(|m| vec![Value::Boolean(false), Value::String(m)]),
        };
        Some(match args {
            Ok(args) => self.run(id, s, MultiValue::from_iter(args)),
            Err(e) => Step::Done(error_response(&lua_error_message(&e))),
        })
    }

    /// Runs a chunk until it ends or asks the watcher something.
    fn run(&mut self, id: u64, mut s: Suspended, mut args: MultiValue) -> Step {
        loop {
            self.lua.set_app_data(Count(s.count));
            *self.output.borrow_mut() = std::mem::take(&mut s.output);
            s.thread
                .set_hook(HookTriggers::new().every_nth_instruction(HOOK_EVERY), hook);
            let result = s.thread.resume::<MultiValue>(args);
            s.count = self.lua.app_data_ref::<Count>().map_or(0, |c| c.0);
            s.output = std::mem::take(&mut *self.output.borrow_mut());
            let values = match result {
                Ok(v) => v,
                Err(e) => {
                    let r = error_response(&lua_error_message(&e));
                    return Step::Done(with_output(r, &s.output.text));
                }
            };
            if s.thread.status() != ThreadStatus::Resumable {
                let r = ok_response(values_to_json(&values));
                return Step::Done(with_output(r, &s.output.text));
            }
            // Only the admin functions yield (the coroutine library is not reachable).
            s.count += CALL_COST;
            if s.count > INSTRUCTIONS {
                let r = error_response("instruction limit reached");
                return Step::Done(with_output(r, &s.output.text));
            }
            match parse_call(&values) {
                Ok(call) => {
                    self.waiting.insert(id, s);
                    return Step::Call(call);
                }
                Err(msg) => {
                    // A bad argument: the error is raised where the function was called.
                    let m = match self.lua.create_string(&msg) {
                        Ok(m) => m,
                        Err(e) => return Step::Done(error_response(&lua_error_message(&e))),
                    };
                    args = MultiValue::from_iter([Value::Boolean(false), Value::String(m)]);
                }
            }
        }
    }
}

fn hook(lua: &Lua, _: mlua::Debug) -> mlua::Result<VmState> {
    let n = lua.app_data_ref::<Count>().map_or(0, |c| c.0) + u64::from(HOOK_EVERY);
    lua.set_app_data(Count(n));
    if n > INSTRUCTIONS {
        return Err(mlua::Error::runtime("instruction limit reached"));
    }
    Ok(VmState::Continue)
}

/// The call an admin function yielded: its name and arguments.
fn parse_call(values: &MultiValue) -> Result<Call, String> {
    let name = match values.front() {
        Some(Value::String(s)) => s.to_string_lossy(),
        _ => return Err("internal error: an unexpected yield".to_string()),
    };
    if name == "shutdown" {
        return shutdown_options(values.get(1));
    }
    if name == "drain" || name == "enable" {
        let text = |i: usize| match values.get(i) {
            Some(Value::String(s)) => Some(s.to_string_lossy()),
            _ => None,
        };
        let (Some(upstream), Some(address)) = (text(1), text(2)) else {
            return Err(format!(
                "{name}: expected an upstream name and an address: {name}(\"app\", \"127.0.0.1:3001\")"
            ));
        };
        return Ok(if name == "drain" {
            Call::Drain { upstream, address }
        } else {
            Call::Enable { upstream, address }
        });
    }
    Call::simple(&name).ok_or_else(|| format!("internal error: unknown call {name}"))
}

/// `shutdown{timeout = s, now = b}`, strictly: a misspelled key or a wrong type must not turn
/// into a default stop.
fn shutdown_options(opts: Option<&Value>) -> Result<Call, String> {
    let mut timeout = None;
    let mut now = false;
    let t = match opts {
        None | Some(Value::Nil) => return Ok(Call::Shutdown { timeout, now }),
        Some(Value::Table(t)) => t,
        Some(_) => return Err("shutdown: expected a table of options (timeout, now)".into()),
    };
    for pair in t.pairs::<Value, Value>() {
        let (k, v) = pair.map_err(|e| lua_error_message(&e))?;
        let key = match &k {
            Value::String(s) => s.to_string_lossy(),
            other => format!("{other:?}"),
        };
        match (key.as_str(), v) {
            ("timeout", Value::Integer(n)) if n >= 0 => {
                timeout = Some(Duration::from_secs(n as u64))
            }
            ("timeout", Value::Number(x)) if x.is_finite() && (0.0..1e9).contains(&x) => {
                timeout = Some(Duration::from_secs_f64(x))
            }
            ("timeout", _) => {
                return Err("shutdown: timeout must be a number of seconds >= 0".into())
            }
            ("now", Value::Boolean(b)) => now = b,
            ("now", _) => return Err("shutdown: now must be true or false".into()),
            (other, _) => return Err(format!("shutdown: unknown option '{other}' (timeout, now)")),
        }
    }
    Ok(Call::Shutdown { timeout, now })
}

/// The admin Lua state: the admin functions (yielding to the watcher), a safe part of the
/// standard library, `print` into the chunk's output, and a memory limit.
fn admin_lua(output: &Rc<RefCell<Output>>) -> mlua::Result<Lua> {
    let lua = Lua::new();
    let g = lua.globals();
    let tostring: mlua::Function = g.get("tostring")?;
    let out = output.clone();
    g.set(
        "print",
        lua.create_function(move |_, args: mlua::Variadic<Value>| {
            // As Lua's print: tostring of each argument, tabs between, a newline after.
            let mut line = String::new();
            for (i, v) in args.iter().enumerate() {
                if i > 0 {
                    line.push('\t');
                }
                let s: mlua::String = tostring.call(v.clone())?;
                line.push_str(&s.to_string_lossy());
            }
            line.push('\n');
            let mut o = out.borrow_mut();
            if o.text.len() + line.len() <= MAX_OUTPUT {
                o.text.push_str(&line);
            } else if !o.cut {
                o.cut = true;
                o.text
                    .push_str("[print output over 256 KiB; the rest of this chunk's is dropped]\n");
            }
            Ok(())
        })?,
    )?;
    g.set("help", lua.create_function(|_, ()| Ok(HELP))?)?;
    // The evaluator inherited the watcher's shared dict zones by fork.
    g.set(
        "shared",
        crate::shared::lua_api::object(&lua, crate::shared::zones())?,
    )?;
    // A stop by the instruction limit must not be caught by pcall/xpcall: the wrappers pass it
    // on. The admin functions yield their call to the evaluator loop; `coroutine` is removed
    // afterwards, so user code can neither yield nor catch a yield.
    g.set(
        "__tripped",
        lua.create_function(|lua, ()| {
            Ok(lua
                .app_data_ref::<Count>()
                .is_some_and(|c| c.0 > INSTRUCTIONS))
        })?,
    )?;
    lua.load(
        r#"
        local raw_pcall, raw_xpcall, tripped, yield = pcall, xpcall, __tripped, coroutine.yield
        __tripped = nil
        local function pass(ok, ...)
          if not ok and tripped() then error((...), 0) end
          return ok, ...
        end
        pcall = function(f, ...) return pass(raw_pcall(f, ...)) end
        xpcall = function(f, h, ...) return pass(raw_xpcall(f, h, ...)) end
        local function call(name)
          return function(...)
            -- The message as it is: a refusal by the watcher reads as its reason.
            local ok, v = yield(name, ...)
            if ok then return v end
            error(v, 0)
          end
        end
        for _, name in ipairs{"status", "workers", "backends", "config", "shutdown", "reload",
                              "reopen_logs", "drain", "enable", "certificates"} do
          _G[name] = call(name)
        end
        "#,
    )
    .set_name("=admin")
    .exec()?;
    for name in [
        "io",
        "dofile",
        "loadfile",
        "require",
        "package",
        "debug",
        "coroutine",
    ] {
        g.set(name, Value::Nil)?;
    }
    if let Ok(os) = g.get::<mlua::Table>("os") {
        for name in [
            "exit",
            "execute",
            "remove",
            "rename",
            "tmpname",
            "setlocale",
        ] {
            os.set(name, Value::Nil)?;
        }
    }
    // string.rep and big tables must not exhaust the evaluator's memory.
    lua.set_memory_limit(MEMORY)?;
    drop(g);
    Ok(lua)
}

const HELP: &str = "\
status()                 uptime, generation, last reload, listeners, totals
workers()                one row per worker (old generations included while they drain)
backends()               one row per FastCGI process or address, and per upstream address
drain(\"app\", \"addr\")     send no new requests to that upstream address (no reload)
enable(\"app\", \"addr\")    undo drain
shutdown()               graceful stop (the config's graceful timeout)
shutdown{timeout = 10}   graceful stop with this deadline in seconds
shutdown{now = true}     immediate stop
reload()                 evaluate the config file again; answers once the new generation runs
                         (or with the reason it was refused)
reopen_logs()            reopen the error and access logs (as SIGHUP)
config()                 the running configuration, normalised
certificates()           the TLS certificates loaded: files, names, issuer, expiry
shared()                 one row per shared dict zone: name, size, entries, capacity, fill
shared.NAME:get(k)       value and remaining TTL (nil: no expiry), or nil when absent
shared.NAME:set(k, v, ttl)  store (v = nil deletes); true, and whether an entry was evicted
shared.NAME:add(k, v, ttl)  as set, only if k is absent (else nil, \"exists\")
shared.NAME:replace(k, v, ttl)  as set, only if k is present (else nil, \"not found\")
shared.NAME:incr(k, step, init, ttl)  add step atomically; init (and ttl) for an absent k
shared.NAME:delete(k)    remove k; whether it was there
shared.NAME:ttl(k)       remaining seconds (0: never expires); :expire(k, ttl) sets it
shared.NAME:keys(max)    up to max keys (default 1024, 0: all)
shared.NAME:flush()      remove every entry
shared.NAME:free_space() bytes free for new entries
shared.NAME:leaky_bucket(k, rate, burst)  nil (admitted) or seconds until room (limit_req)
print(...)               printed lines are shown before the chunk's value
help()                   this text";

/// A JSON value as a Lua value (objects become tables, arrays sequences).
pub fn json_to_lua(lua: &Lua, v: &serde_json::Value) -> mlua::Result<Value> {
    Ok(match v {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Boolean(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Number(n.as_f64().unwrap_or(0.0)),
        },
        serde_json::Value::String(s) => Value::String(lua.create_string(s)?),
        serde_json::Value::Array(a) => {
            let t = lua.create_table()?;
            for (i, x) in a.iter().enumerate() {
                t.raw_set(i + 1, json_to_lua(lua, x)?)?;
            }
            Value::Table(t)
        }
        serde_json::Value::Object(o) => {
            let t = lua.create_table()?;
            for (k, x) in o {
                t.raw_set(k.as_str(), json_to_lua(lua, x)?)?;
            }
            Value::Table(t)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn done(step: Step) -> serde_json::Value {
        match step {
            Step::Done(v) => v,
            other => panic!("expected the chunk to end: {other:?}"),
        }
    }

    #[test]
    fn print_goes_to_the_response_as_lua_prints() {
        let mut s = Sandbox::new().expect("sandbox");
        let r = done(s.start(1, "print(1, 'a', nil, true, 2.5) print() return 7"));
        assert_eq!(
            r,
            json!({"ok": true, "value": 7, "output": "1\ta\tnil\ttrue\t2.5\n\n"})
        );
        // __tostring is honoured, and the next chunk starts with no output.
        let r = done(s.start(
            2,
            "print(setmetatable({}, {__tostring = function() return 'T' end}))",
        ));
        assert_eq!(r, json!({"ok": true, "value": null, "output": "T\n"}));
        assert_eq!(done(s.start(3, "1")), json!({"ok": true, "value": 1}));
        // Output before an error is kept.
        let r = done(s.start(4, "print('before') error('boom', 0)"));
        assert_eq!(
            r,
            json!({"ok": false, "error": "boom", "output": "before\n"})
        );
        // Bounded.
        let r = done(s.start(5, "for i = 1, 100000 do print(('x'):rep(100)) end"));
        let out = r["output"].as_str().expect("output");
        assert!(out.len() < MAX_OUTPUT + 200, "{}", out.len());
        assert!(out.ends_with("dropped]\n"), "{}", &out[out.len() - 80..]);
    }

    #[test]
    fn admin_functions_yield_calls_and_resume_with_the_answer() {
        let mut s = Sandbox::new().expect("sandbox");
        assert_eq!(
            s.start(1, "x = status().pid return x + 1"),
            Step::Call(Call::Status)
        );
        let r = s.resume(1, Ok(json!({"pid": 41}))).expect("waiting");
        assert_eq!(done(r), json!({"ok": true, "value": 42}));
        assert!(s.resume(1, Ok(json!(1))).is_none(), "ended");
        // Two chunks wait at once; each gets its own answer.
        assert_eq!(s.start(2, "reload()"), Step::Call(Call::Reload));
        assert_eq!(
            s.start(3, "x"),
            Step::Done(json!({"ok": true, "value": 41}))
        );
        assert_eq!(s.start(4, "pcall(reload)"), Step::Call(Call::Reload));
        let r = done(
            s.resume(4, Err("reload: a reload is already in progress".into()))
                .unwrap(),
        );
        assert_eq!(
            r,
            json!({"ok": true, "value": [false, "reload: a reload is already in progress"]})
        );
        let r = done(s.resume(2, Err("reload: refused".into())).unwrap());
        assert_eq!(r, json!({"ok": false, "error": "reload: refused"}));
    }

    #[test]
    fn shutdown_options_are_strict_and_checked_here() {
        let mut s = Sandbox::new().expect("sandbox");
        assert_eq!(
            s.start(1, "shutdown{timeout = 1.5}"),
            Step::Call(Call::Shutdown {
                timeout: Some(Duration::from_millis(1500)),
                now: false
            })
        );
        assert_eq!(
            s.start(2, "shutdown{now = true}"),
            Step::Call(Call::Shutdown {
                timeout: None,
                now: true
            })
        );
        for (chunk, why) in [
            (
                "shutdown{timeout=-1}",
                "shutdown: timeout must be a number of seconds >= 0",
            ),
            (
                "shutdown{timeout=0/0}",
                "shutdown: timeout must be a number of seconds >= 0",
            ),
            (
                "shutdown{timout=5}",
                "shutdown: unknown option 'timout' (timeout, now)",
            ),
            ("shutdown{now='yes'}", "shutdown: now must be true or false"),
            (
                "shutdown(3)",
                "shutdown: expected a table of options (timeout, now)",
            ),
        ] {
            assert_eq!(
                done(s.start(9, chunk)),
                json!({"ok": false, "error": why}),
                "{chunk}"
            );
        }
    }

    #[test]
    fn limits_hold_inside_and_across_pcall_and_yields() {
        let mut s = Sandbox::new().expect("sandbox");
        let r = done(s.start(
            1,
            "while true do pcall(function() while true do end end) end",
        ));
        assert!(
            r["error"].as_str().unwrap().contains("instruction limit"),
            "{r}"
        );
        // The budget is per chunk, across its calls to the watcher.
        let mut step = s.start(2, "while true do status() end");
        let mut calls = 0;
        while let Step::Call(_) = step {
            calls += 1;
            assert!(calls < 10_000_000, "never stopped");
            step = s.resume(2, Ok(json!({}))).expect("waiting");
        }
        let r = done(step);
        assert!(
            r["error"].as_str().unwrap().contains("instruction limit"),
            "{r}"
        );
        let r = done(s.start(3, "return string.rep('x', 1024 * 1024 * 1024)"));
        assert_eq!(r["ok"], false, "{r}");
        // The state is intact afterwards; user code cannot reach the coroutine library.
        assert_eq!(done(s.start(4, "1 + 1")), json!({"ok": true, "value": 2}));
        let r = done(s.start(5, "coroutine.yield('status')"));
        assert_eq!(r["ok"], false, "{r}");
        let r = done(s.start(6, "io.open('/etc/passwd')"));
        assert!(r["error"].as_str().unwrap().starts_with("repl:1:"), "{r}");
    }
}
