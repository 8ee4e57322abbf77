//! The Lua side of shared dictionaries: the `shared` object of route code, timers and the REPL.
//!
//! `shared.NAME` is a dictionary with the methods `get set add replace incr delete ttl expire
//! keys flush free_space`; `shared()` lists the zones with their fill level. The object is a
//! read-only table (see [`object`]): route code cannot replace a dictionary,
//! and an unknown name is an error that lists the defined ones. Result conventions follow
//! OpenResty's `ngx.shared.DICT` where they can: failures that depend on the data are
//! `nil, "message"`, misuse (a table as value) is an error.

use std::rc::Rc;

use mlua::{Lua, MultiValue, Table, Value};

use super::dict_raw;
use super::zone::{Zone, ENTRY_BYTES};

/// Builds the `shared` object over `zones`: a table holding the dictionaries, made read-only
/// by the VM's flag ([`crate::lua_raw::set_readonly`]: `shared.NAME` is one plain lookup, an
/// assignment reaches `__newindex`, which refuses it, and `rawset` raises), whose metatable
/// lists the zones when called and hides itself (`__metatable`). An unknown name reaches its
/// `__index`, an error that lists the defined names.
pub fn object(lua: &Lua, zones: Vec<(String, Rc<Zone>)>) -> mlua::Result<Value> {
    let shared = lua.create_table()?;
    for (name, zone) in &zones {
        shared.raw_set(name.as_str(), dict(lua, name, zone)?)?;
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
    let mt = lua.create_table()?;
    mt.raw_set("__index", unknown)?;
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
    shared.set_metatable(Some(mt));
    crate::lua_raw::set_readonly(lua, &shared)?;
    Ok(Value::Table(shared))
}

/// One dictionary: a read-only table of its methods (`dict_raw`) whose hidden metatable
/// names it and refuses assignments.
fn dict(lua: &Lua, name: &str, zone: &Rc<Zone>) -> mlua::Result<Table> {
    let dict = dict_raw::methods_table(lua, zone)?;
    let mt = lua.create_table()?;
    let text = format!(
        "shared dict '{name}' ({} bytes, {} entries of {} bytes)",
        zone.size(),
        zone.capacity(),
        ENTRY_BYTES
    );
    mt.raw_set(
        "__tostring",
        lua.create_function(move |_, _: MultiValue| Ok(text.clone()))?,
    )?;
    let refusal = format!(
        "shared dict '{name}' is changed through its methods: shared.{name}:set(key, value)"
    );
    mt.raw_set(
        "__newindex",
        lua.create_function(move |_, _: MultiValue| -> mlua::Result<()> {
            Err(mlua::Error::runtime(refusal.clone()))
        })?,
    )?;
    mt.raw_set("__metatable", false)?;
    dict.set_metatable(Some(mt));
    crate::lua_raw::set_readonly(lua, &dict)?;
    Ok(dict)
}

/// `shared()`: a row per zone with its fill level.
fn overview(lua: &Lua, zones: &[(String, Rc<Zone>)]) -> mlua::Result<Table> {
    let rows = lua.create_table()?;
    for (name, z) in zones {
        let f = z.fill();
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
