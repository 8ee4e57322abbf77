//! Tests of the vendored VM's fast paths (vendor/lua-src/LUAHTTPD.md): string method calls,
//! string equality and the lazy fields of a read-only table answer exactly as the plain VM
//! does, including the cases they leave to it.

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void};
use std::rc::Rc;

use mlua::{ffi, Lua};

use crate::lua_raw::{set_lazy_reader, set_readonly, LazyFields, LAZY_FIELDS};

/// What `code` returns, as text (`tostring` of a boolean or nil).
fn eval(lua: &Lua, code: &str) -> String {
    match lua.load(code).eval::<mlua::Value>() {
        Ok(mlua::Value::Boolean(b)) => b.to_string(),
        Ok(mlua::Value::Nil) => "nil".into(),
        Ok(v) => lua
            .coerce_string(v)
            .ok()
            .flatten()
            .map_or("(not a string)".into(), |s| s.to_string_lossy()),
        Err(e) => format!("error: {e}"),
    }
}

/// `s:name(...)` finds `string.name` when the string metatable's `__index` is a table that
/// has it, and otherwise goes the plain way: a function `__index`, a chain of tables, a
/// missing method's error.
#[test]
fn string_methods_are_found_as_the_plain_vm_finds_them() {
    let lua = Lua::new();
    let cases = [
        (r#"return ("abc"):upper()"#, "ABC"),
        (r#"local s = "a,b" return s:find(",")"#, "2"),
        (r#"return (string.rep("x", 60)):len()"#, "60"),
        (
            r#"local ok, e = pcall(function() return ("x"):nosuch() end)
               return tostring(ok) .. " " .. e:match("attempt to .*")"#,
            "false attempt to call a nil value (method 'nosuch')",
        ),
        (
            r#"local mt = getmetatable("")
               local old = mt.__index
               mt.__index = setmetatable({}, { __index = function(_, k) return function() return "via " .. k end end })
               local r = ("x"):upper()
               mt.__index = old
               return r"#,
            "via upper",
        ),
        (
            r#"local mt = getmetatable("")
               local old = mt.__index
               mt.__index = function(s, k) return function() return k .. "!" .. s end end
               local r = ("x"):whatever()
               mt.__index = old
               return r"#,
            "whatever!x",
        ),
        (
            r#"string.extra = function(s) return "extra " .. s end return ("y"):extra()"#,
            "extra y",
        ),
    ];
    for (code, want) in cases {
        assert_eq!(eval(&lua, code), want, "{code}");
    }
}

/// `==` and `~=` (registers and constants) on short strings compare identity, which interning
/// makes the same as content; every other pair compares as before.
#[test]
fn equality_is_the_plain_vm_equality() {
    let lua = Lua::new();
    let cases = [
        (r#"local a = "x" .. "y" return a == "xy""#, "true"),
        (r#"local a, b = "x" .. "y", "xy" return a == b"#, "true"),
        (r#"local a = "x" return a == "y""#, "false"),
        (r#"local a = "x" return a ~= "y""#, "true"),
        (
            r#"local a, b = string.rep("a", 50), string.rep("a", 50) return a == b"#,
            "true",
        ),
        (
            r#"local a = string.rep("b", 50) return a == "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb""#,
            "true",
        ),
        (
            r#"local a = string.rep("b", 50) return a == "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbc""#,
            "false",
        ),
        (r#"local a, b = 1, 1.0 return a == b"#, "true"),
        (r#"local a = "1" return a == 1"#, "false"),
        (
            r#"local mt = { __eq = function() return true end }
               local a, b = setmetatable({}, mt), setmetatable({}, mt) return a == b"#,
            "true",
        ),
    ];
    for (code, want) in cases {
        assert_eq!(eval(&lua, code), want, "{code}");
    }
}

/// A reader's data with [`LazyFields`] in it, and how often the reader itself was asked.
struct Data {
    fields: LazyFields,
    asked: Cell<u32>,
}

/// Declines every key, counting the calls.
unsafe extern "C-unwind" fn declining_reader(
    ud: *mut c_void,
    _l: *mut ffi::lua_State,
    _table: *const c_void,
    _key: *const c_char,
    _len: usize,
) -> c_int {
    // SAFETY: `ud` is the `Data` installed with this reader, alive while it is installed.
    let d = unsafe { &*ud.cast::<Data>() };
    d.asked.set(d.asked.get() + 1);
    0
}

/// The fields are answered by the VM while live (a null value as nil, a repeated value as
/// the cached string), only for their table and names; anything else, and everything while
/// not live, goes to the reader and then `__index`.
#[test]
fn lazy_fields_answer_only_while_live_and_only_their_names() {
    let lua = Lua::new();
    let t: mlua::Table = lua
        .load("return setmetatable({}, { __index = function(_, k) return 'index ' .. k end })")
        .eval()
        .unwrap();
    set_readonly(&lua, &t).unwrap();
    let other: mlua::Table = lua
        .load("return setmetatable({}, { __index = function(_, k) return 'other ' .. k end })")
        .eval()
        .unwrap();
    set_readonly(&lua, &other).unwrap();
    let cache = lua.create_table().unwrap();
    for i in 1..=LAZY_FIELDS {
        cache.raw_set(i, false).unwrap();
    }
    let names = lua.create_table().unwrap();
    let mut fields = LazyFields::new();
    fields.table = t.to_pointer();
    fields.cache = cache.to_pointer();
    for (i, n) in ["a", "b"].iter().enumerate() {
        let s = lua.create_string(n).unwrap();
        fields.key[i] = s.to_pointer();
        names.raw_set(i + 1, s).unwrap();
    }
    let values: [&'static str; 2] = ["first", "second"];
    fields.s[0] = values[0].as_ptr().cast();
    fields.len[0] = values[0].len();
    // Field 1 ("b") stays null: nil.
    let data = Rc::new(Data {
        fields,
        asked: Cell::new(0),
    });
    let keep = data.clone();
    set_lazy_reader(
        &lua,
        declining_reader,
        data,
        Some(|d: &Data| &d.fields as *const LazyFields),
        &[&t, &other, &cache, &names],
    )
    .unwrap();
    lua.globals().set("t", &t).unwrap();
    lua.globals().set("other", &other).unwrap();
    let set_live = |on: bool| {
        let p = (&keep.fields as *const LazyFields).cast_mut();
        // SAFETY: no Lua runs while the test writes, and the VM only reads the fields.
        unsafe { (*p).live = c_int::from(on) };
    };

    assert_eq!(eval(&lua, "return t.a"), "index a", "not live yet");
    assert_eq!(keep.asked.get(), 1);
    set_live(true);
    assert_eq!(
        eval(&lua, "return t.a .. ' ' .. tostring(t.b)"),
        "first nil"
    );
    assert_eq!(keep.asked.get(), 1, "the VM answered both");
    assert_eq!(eval(&lua, "return t.c"), "index c");
    assert_eq!(eval(&lua, "return other.a"), "other a");
    assert_eq!(
        keep.asked.get(),
        3,
        "another name, another table: the reader"
    );
    let kept: mlua::String = cache.raw_get(1).unwrap();
    assert_eq!(kept.to_str().unwrap(), "first");
    assert_eq!(
        eval(&lua, "local x = t.a return rawequal(x, t.a)"),
        "true",
        "the cached string is pushed again"
    );
    set_live(false);
    assert_eq!(eval(&lua, "return t.a"), "index a", "not live any more");
    assert_eq!(keep.asked.get(), 4);
}
