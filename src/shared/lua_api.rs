//! The Lua side of shared dictionaries: the `shared` object of route code, timers and the REPL.
//!
//! `shared.NAME` is a dictionary with the methods `get set add replace incr delete ttl expire
//! keys flush free_space`; `shared()` lists the zones with their fill level. The object is a
//! read-only table over a hidden one (see [`object`]): route code cannot replace a dictionary,
//! and an unknown name is an error that lists the defined ones. Result conventions follow
//! OpenResty's `ngx.shared.DICT` where they can: failures that depend on the data are
//! `nil, "message"`, misuse (a table as value) is an error.

use std::rc::Rc;

use mlua::{Lua, MetaMethod, MultiValue, Table, UserData, UserDataMethods, Value};

use super::zone::{OpError, Val, Zone, ENTRY_BYTES};

/// One dictionary.
struct Dict {
    name: String,
    zone: Rc<Zone>,
}

/// Builds the `shared` object over `zones`: an empty table whose metatable reads the
/// dictionaries from a hidden table (`__index` a table, so `shared.NAME` is a lookup inside
/// the VM, with no function call), refuses assignments, lists the zones when called, and hides
/// itself (`__metatable`). An unknown name reaches the hidden table's own `__index`, an error
/// that lists the defined names. Route code cannot `rawset` it either: the route sandbox
/// protects it (script/sandbox.lua).
pub fn object(lua: &Lua, zones: Vec<(String, Rc<Zone>)>) -> mlua::Result<Value> {
    let dicts = lua.create_table()?;
    for (name, zone) in &zones {
        let d = lua.create_userdata(Dict {
            name: name.clone(),
            zone: zone.clone(),
        })?;
        dicts.raw_set(name.as_str(), d)?;
    }
    let names: Vec<String> = zones.iter().map(|(n, _)| n.clone()).collect();
    let defined = if names.is_empty() {
        "none is defined: shared \"name\" { size = \"1m\" }".to_string()
    } else {
        format!("defined: {}", names.join(", "))
    };
    let unknown = lua.create_function(move |_, (_, name): (Value, Value)| -> mlua::Result<()> {
        let name = match &name {
            Value::String(s) => s.to_string_lossy(),
            _ => String::new(),
        };
        Err(mlua::Error::runtime(format!(
            "no shared dict '{name}' ({defined})"
        )))
    })?;
    let hidden = lua.create_table()?;
    hidden.raw_set("__index", unknown)?;
    hidden.raw_set("__metatable", false)?;
    dicts.set_metatable(Some(hidden));

    let mt = lua.create_table()?;
    mt.raw_set("__index", dicts)?;
    mt.raw_set(
        "__newindex",
        lua.create_function(|_, _: MultiValue| -> mlua::Result<()> {
            Err(mlua::Error::runtime(
                "shared dicts are defined in the config: shared \"name\" { size = \"1m\" }",
            ))
        })?,
    )?;
    let listed = zones.clone();
    mt.raw_set(
        "__call",
        lua.create_function(move |lua, _: MultiValue| overview(lua, &listed))?,
    )?;
    let text = format!("shared dicts: {}", names.join(", "));
    mt.raw_set(
        "__tostring",
        lua.create_function(move |_, _: MultiValue| Ok(text.clone()))?,
    )?;
    mt.raw_set("__metatable", false)?;
    let shared = lua.create_table()?;
    shared.set_metatable(Some(mt));
    Ok(Value::Table(shared))
}

/// `shared()`: a row per zone with its fill level.
fn overview(lua: &Lua, zones: &[(String, Rc<Zone>)]) -> mlua::Result<Table> {
    let rows = lua.create_table()?;
    for (name, z) in zones {
        let f = z.fill().map_err(op_err)?;
        let row = lua.create_table()?;
        row.set("name", name.as_str())?;
        row.set("size", z.size())?;
        row.set("entries", f.live)?;
        row.set("capacity", f.capacity)?;
        row.set(
            "fill",
            format!("{:.1}%", f.live as f64 * 100.0 / f.capacity.max(1) as f64),
        )?;
        row.set("evictions", f.evictions)?;
        rows.push(row)?;
    }
    Ok(rows)
}

/// Builds the `shared` object over the zones of this process named in `names`.
pub fn object_for(lua: &Lua, names: &[String]) -> mlua::Result<Value> {
    let zones = super::zones()
        .into_iter()
        .filter(|(n, _)| names.contains(n))
        .collect();
    object(lua, zones)
}

/// Sets the global `shared` of the config state `lua` to the object over `names` (a worker,
/// before its `Router` sandboxes the globals; it replaces the config-time `shared` function).
pub fn publish(lua: &Lua, names: &[String]) -> mlua::Result<()> {
    let obj = object_for(lua, names)?;
    lua.globals().set("shared", obj)?;
    // The shipped helpers (lua/limit.lua), unless the config defined its own of that name.
    if lua.globals().get::<Value>("limit_req")?.is_nil() {
        lua.load(LIMIT_LUA).set_name("=lua/limit.lua").exec()?;
    }
    Ok(())
}

/// `limit_req` and friends, shipped in `lua/`.
const LIMIT_LUA: &str = include_str!("../../lua/limit.lua");

impl UserData for Dict {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_method("get", |lua, d, key: Value| {
            match with_key(&key, |k| d.zone.get(k))? {
                Ok(Some((v, ttl))) => Ok((to_lua(lua, v)?, ttl.map_or(Value::Nil, Value::Number))),
                Ok(None) => Ok((Value::Nil, Value::Nil)),
                Err(e) => Ok((Value::Nil, Value::String(lua.create_string(e.message())?))),
            }
        });
        for (name, which) in [("set", 0u8), ("add", 1), ("replace", 2)] {
            m.add_method(
                name,
                move |lua, d, (key, val, ttl): (Value, Value, Option<f64>)| {
                    let key = key_of(&key)?;
                    if which == 0 && val.is_nil() {
                        d.zone.delete(&key).map_err(op_err)?;
                        return Ok((Value::Boolean(true), Value::Boolean(false)));
                    }
                    let v = val_of(&val, name)?;
                    let r = match which {
                        0 => d.zone.set(&key, &v, ttl),
                        1 => d.zone.add(&key, &v, ttl),
                        _ => d.zone.replace(&key, &v, ttl),
                    };
                    match r {
                        Ok(s) => Ok((Value::Boolean(true), Value::Boolean(s.evicted))),
                        Err(e) => fail(lua, e),
                    }
                },
            );
        }
        m.add_method(
            "incr",
            |lua, d, (key, step, init, ttl): (Value, Value, Value, Option<f64>)| {
                let step = num_of(&step, "incr: step")?;
                let init = if init.is_nil() {
                    None
                } else {
                    Some(num_of(&init, "incr: initial value")?)
                };
                match with_key(&key, |k| d.zone.incr(k, &step, init.as_ref(), ttl))? {
                    Ok((v, s)) => Ok((to_lua(lua, v)?, Value::Boolean(s.evicted))),
                    Err(e) => fail(lua, e),
                }
            },
        );
        m.add_method(
            "leaky_bucket",
            |lua, d, (key, rate, burst): (Value, f64, Option<f64>)| {
                if rate.is_nan() || rate <= 0.0 {
                    return Err(mlua::Error::runtime("leaky_bucket: rate must be > 0"));
                }
                match d
                    .zone
                    .leaky_bucket(&key_of(&key)?, rate, burst.unwrap_or(0.0).max(0.0))
                {
                    Ok(None) => Ok((Value::Nil, Value::Nil)),
                    Ok(Some(wait)) => Ok((Value::Number(wait), Value::Nil)),
                    Err(e) => fail(lua, e),
                }
            },
        );
        m.add_method("delete", |_, d, key: Value| {
            d.zone.delete(&key_of(&key)?).map_err(op_err)
        });
        m.add_method("ttl", |lua, d, key: Value| {
            match d.zone.ttl(&key_of(&key)?) {
                // A key that never expires says 0, an integer as the README writes it.
                Ok(Some(Some(t))) => Ok((Value::Number(t), Value::Nil)),
                Ok(Some(None)) => Ok((Value::Integer(0), Value::Nil)),
                Ok(None) => fail(lua, OpError::NotFound),
                Err(e) => fail(lua, e),
            }
        });
        m.add_method("expire", |lua, d, (key, ttl): (Value, Option<f64>)| match d
            .zone
            .expire(&key_of(&key)?, ttl)
        {
            Ok(true) => Ok((Value::Boolean(true), Value::Nil)),
            Ok(false) => fail(lua, OpError::NotFound),
            Err(e) => fail(lua, e),
        });
        m.add_method("keys", |lua, d, max: Option<i64>| {
            let max = usize::try_from(max.unwrap_or(1024)).unwrap_or(0);
            let keys = d.zone.keys(max).map_err(op_err)?;
            let t = lua.create_table_with_capacity(keys.len(), 0)?;
            for k in keys {
                t.push(lua.create_string(&k)?)?;
            }
            Ok(t)
        });
        m.add_method("flush", |_, d, ()| d.zone.flush().map_err(op_err));
        m.add_method("free_space", |_, d, ()| d.zone.free_space().map_err(op_err));
        m.add_meta_method(MetaMethod::ToString, |_, d, ()| {
            Ok(format!(
                "shared dict '{}' ({} bytes, {} entries of {} bytes)",
                d.name,
                d.zone.size(),
                d.zone.capacity(),
                ENTRY_BYTES
            ))
        });
    }
}

fn fail(lua: &Lua, e: OpError) -> mlua::Result<(Value, Value)> {
    Ok((Value::Nil, Value::String(lua.create_string(e.message())?)))
}

fn op_err(e: OpError) -> mlua::Error {
    mlua::Error::runtime(format!("shared dict: {}", e.message()))
}

/// Runs `f` on the key `v` without copying a string key (the per-request `incr` and `get`).
fn with_key<R>(v: &Value, f: impl FnOnce(&[u8]) -> R) -> mlua::Result<R> {
    match v {
        Value::String(s) => Ok(f(&s.as_bytes())),
        other => Ok(f(&key_of(other)?)),
    }
}

/// A key: a string, or a number (as its decimal text, like Lua's tostring).
fn key_of(v: &Value) -> mlua::Result<Vec<u8>> {
    match v {
        Value::String(s) => Ok(s.as_bytes().to_vec()),
        Value::Integer(n) => Ok(n.to_string().into_bytes()),
        Value::Number(f) => Ok(f.to_string().into_bytes()),
        other => Err(mlua::Error::runtime(format!(
            "shared dict keys are strings, not {}",
            other.type_name()
        ))),
    }
}

fn val_of(v: &Value, what: &str) -> mlua::Result<Val> {
    Ok(match v {
        Value::String(s) => Val::Str(s.as_bytes().to_vec()),
        Value::Integer(n) => Val::Int(*n),
        Value::Number(f) => Val::Float(*f),
        Value::Boolean(b) => Val::Bool(*b),
        other => {
            return Err(mlua::Error::runtime(format!(
                "{what}: shared dict values are strings, numbers or booleans, not {}",
                other.type_name()
            )))
        }
    })
}

fn num_of(v: &Value, what: &str) -> mlua::Result<Val> {
    match v {
        Value::Integer(n) => Ok(Val::Int(*n)),
        Value::Number(f) => Ok(Val::Float(*f)),
        other => Err(mlua::Error::runtime(format!(
            "{what} must be a number, not {}",
            other.type_name()
        ))),
    }
}

fn to_lua(lua: &Lua, v: Val) -> mlua::Result<Value> {
    Ok(match v {
        Val::Str(s) => Value::String(lua.create_string(&s)?),
        Val::Int(n) => Value::Integer(n),
        Val::Float(f) => Value::Number(f),
        Val::Bool(b) => Value::Boolean(b),
    })
}
