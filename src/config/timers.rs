//! `every(seconds, fn, { worker = "all" | "one" })` and `at_worker_start(fn)`: Lua run by the
//! workers outside requests (issue 13). The config only records them, in the state's registry
//! (`crate::script::TIMERS`); each worker's `Router` runs them.

use mlua::{Lua, MultiValue, Table, Value};

/// Shortest period of `every` (seconds).
pub const MIN_PERIOD: f64 = 0.01;

/// Checks one `every`/`at_worker_start` call and appends it to the registry list: a table
/// `{ kind, fn, period, one, at }`. An error is the message for the config error.
pub(super) fn record(lua: &Lua, kind: &str, args: MultiValue, at: &str) -> Result<(), String> {
    let mut args = args.into_iter();
    let (period, func, one) = if kind == "every" {
        let usage = "every(seconds, function() ... end, { worker = \"all\" | \"one\" })";
        let period = match args.next() {
            Some(Value::Integer(n)) => n as f64,
            Some(Value::Number(n)) => n,
            _ => return Err(format!("every needs a number of seconds first: {usage}")),
        };
        if !(MIN_PERIOD..=86_400.0 * 365.0).contains(&period) {
            return Err(format!(
                "every: the period must be between {MIN_PERIOD} s and a year, got {period}"
            ));
        }
        let Some(Value::Function(f)) = args.next() else {
            return Err(format!("every needs a function second: {usage}"));
        };
        let one = match args.next() {
            None | Some(Value::Nil) => false,
            Some(Value::Table(t)) => worker_option(&t)?,
            Some(other) => {
                return Err(format!(
                    "every: options must be a table, got {}: {usage}",
                    other.type_name()
                ))
            }
        };
        (period, f, one)
    } else {
        let Some(Value::Function(f)) = args.next() else {
            return Err(
                "at_worker_start needs a function: at_worker_start(function() ... end)".into(),
            );
        };
        (0.0, f, false)
    };
    let list = || -> mlua::Result<()> {
        let list = match lua.named_registry_value::<Option<Table>>(crate::script::TIMERS)? {
            Some(t) => t,
            None => {
                let t = lua.create_table()?;
                lua.set_named_registry_value(crate::script::TIMERS, &t)?;
                t
            }
        };
        let e = lua.create_table()?;
        e.set("kind", kind)?;
        e.set("fn", func)?;
        e.set("period", period)?;
        e.set("one", one)?;
        e.set("at", at)?;
        list.push(e)
    };
    list().map_err(|e| format!("{kind}: {e}"))
}

fn worker_option(t: &Table) -> Result<bool, String> {
    let mut one = false;
    for pair in t.clone().pairs::<Value, Value>() {
        let Ok((k, v)) = pair else { continue };
        let key = match &k {
            Value::String(s) => s.to_string_lossy(),
            other => format!("[{}]", other.type_name()),
        };
        if key != "worker" {
            return Err(format!("every: unknown option '{key}' (worker)"));
        }
        one = match &v {
            Value::String(s) if s.as_bytes() == b"one" => true,
            Value::String(s) if s.as_bytes() == b"all" => false,
            _ => return Err("every: worker must be \"all\" or \"one\"".into()),
        };
    }
    Ok(one)
}

/// `-p`: what a config runs outside the route function, which a printed config cannot carry
/// (Lua functions): its `every` timers, `at_worker_start` functions and `respond_hook`, each
/// with where it was given, as comments.
pub fn print(lua: &Lua) -> String {
    let mut lines = Vec::new();
    if let Ok(Some(list)) = lua.named_registry_value::<Option<Table>>(crate::script::TIMERS) {
        for e in list.sequence_values::<Table>().flatten() {
            let kind: String = e.get("kind").unwrap_or_default();
            let at: String = e.get("at").unwrap_or_default();
            if kind == "every" {
                let period: f64 = e.get("period").unwrap_or_default();
                let one: bool = e.get("one").unwrap_or_default();
                let opts = if one { ", { worker = \"one\" }" } else { "" };
                lines.push(format!("-- every({period}, function{opts}) at {at}"));
            } else {
                lines.push(format!("-- at_worker_start(function) at {at}"));
            }
        }
    }
    if let Ok(Some(at)) = lua.named_registry_value::<Option<String>>(crate::script::RESPOND_HOOK_AT)
    {
        lines.push(format!("-- respond_hook(function) at {at}"));
    }
    if lines.is_empty() {
        return String::new();
    }
    format!(
        "\n-- Set in the original config (a Lua function cannot be printed):\n{}\n",
        lines.join("\n")
    )
}
