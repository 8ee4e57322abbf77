//! The request-time sandbox: which globals a route function can reach.
//!
//! See [`prepare_sandbox`]. The Lua side is `sandbox.lua`, embedded.

use mlua::{Lua, Table, Value};

use std::rc::Rc;

use super::decision::constructors;
use super::limits::{shared, SharedBudget};
use super::pattern;

const SANDBOX_LUA: &str = include_str!("sandbox.lua");
/// Registry key marking a state already sandboxed.
pub(super) const MARK: &str = "luahttpd.script.sandboxed";
/// Registry key of the sandbox's `protect(table, name)`: makes `rawset` refuse that table.
pub(super) const PROTECT: &str = "luahttpd.script.protect";

/// Replaces the globals of the config state `lua` with the request-time sandbox, in place.
///
/// Inside route only these remain: the base functions `assert error ipairs next pairs rawequal
/// rawget rawlen rawset select tonumber tostring type getmetatable setmetatable pcall xpcall`,
/// `print` (to the error log at info level), `collectgarbage("count")`, read-only `string`
/// (without `dump`), `table`, `math`, `utf8`, `os` with only `time clock date getenv`, and the
/// decisions `static fastcgi proxy redirect respond deny status`. Gone: `io`, `debug`, `package`, `require`,
/// `load`, `loadfile`, `dofile`, `coroutine`, the rest of `os`, and the config helpers
/// (`server`, `include`, `exists`, `read_file`, …). Assigning any global is an error; reading
/// an undeclared one gives nil; `rawset` refuses the globals, `req` and the libraries.
/// `setmetatable` refuses `__gc` and `__close` (they can run outside the limits), `pcall` and
/// `xpcall` do not catch a stop by the instruction budget or the deadline, and `xpcall` does not
/// run its handler for one. The pattern functions are metered Rust ([`super::pattern`]).
///
/// Functions defined by the config keep the globals table as their `_ENV`, so they see the
/// sandbox; values the config captured in upvalues before (`local io = io`) stay reachable to
/// that code — the config is trusted, requests are not.
///
/// Where to call it: [`super::Router::new`] calls it, so a worker building its `Router` after
/// fork needs nothing else. The watcher may call it once before forking instead (the work is
/// then shared copy-on-write by all workers), but only when it no longer needs the state for
/// config-time work. Calling it again is a no-op.
pub fn prepare_sandbox(lua: &Lua) -> mlua::Result<()> {
    if lua
        .named_registry_value::<Value>(MARK)
        .is_ok_and(|v| !v.is_nil())
    {
        return Ok(());
    }
    let g = lua.globals();
    let tripped = lua.create_function(|lua, ()| {
        Ok(lua
            .app_data_ref::<SharedBudget>()
            .is_some_and(|b| b.0.is_tripped()))
    })?;
    let log = lua.create_function(|_, s: mlua::String| {
        tracing::info!(target: "luahttpd::route", "{}", s.to_string_lossy());
        Ok(())
    })?;
    let decisions = constructors(lua)?;
    let is_c_function = lua.create_function(|_, f: mlua::Function| Ok(f.info().what == "C"))?;
    let budget = shared(lua);
    let b = budget.clone();
    let meter: pattern::Meter = Rc::new(move |n| b.charge(n));
    let metered = lua.create_table()?;
    pattern::install(lua, &metered, meter)?;
    super::pattern_fast::install(lua, &metered, budget.clone())?;
    let charge = lua.create_function(move |_, n: Value| {
        let n = match n {
            Value::Integer(i) => u64::try_from(i).unwrap_or(0),
            Value::Number(f) if f > 0.0 => f as u64,
            _ => 0,
        };
        budget.touch(n)
    })?;
    let readonly = lua.create_function(|lua, t: Table| {
        crate::lua_raw::set_readonly(lua, &t)?;
        Ok(t)
    })?;
    let protect: mlua::Function = lua.load(SANDBOX_LUA).set_name("=luahttpd sandbox").call((
        g,
        tripped,
        log,
        decisions,
        is_c_function,
        metered,
        charge,
        readonly,
    ))?;
    lua.set_named_registry_value(PROTECT, protect)?;
    lua.set_named_registry_value(MARK, true)
}
