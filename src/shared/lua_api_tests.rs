//! The dictionaries' methods as Lua code calls them, on a private zone (the cross-process and
//! route tests are in tests/lua_shared.rs).

use std::rc::Rc;

use mlua::{Lua, Value};

use super::lua_api::object;
use super::zone::{Zone, MIN_SIZE};

/// A state whose global `shared` has one dictionary, `d`, over `zone`.
fn state(zone: &Rc<Zone>) -> Lua {
    let lua = Lua::new();
    let obj = object(&lua, vec![("d".to_string(), zone.clone())]).expect("object");
    lua.globals().set("shared", obj).expect("global");
    lua
}

fn new_zone() -> Rc<Zone> {
    Rc::new(Zone::map(MIN_SIZE).expect("map"))
}

/// Runs `code` (a chunk that returns a string) and gives its result.
fn eval(lua: &Lua, code: &str) -> String {
    lua.load(code)
        .set_name("=t")
        .eval::<String>()
        .unwrap_or_else(|e| panic!("{code}: {e}"))
}

/// The message of the error `code` raises.
fn error_of(lua: &Lua, code: &str) -> String {
    match lua.load(code).set_name("=t").exec() {
        Ok(()) => panic!("{code}: no error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn every_method_gives_its_documented_results() {
    let z = new_zone();
    let lua = state(&z);
    let got = eval(
        &lua,
        r#"
        local d, out = shared.d, {}
        local function put(...) local t = table.pack(...)
          for i = 1, t.n do t[i] = tostring(t[i]) end
          out[#out + 1] = table.concat(t, ",", 1, t.n) end
        put(d:get("a"))
        put(d:set("a", "one"))
        put(d:get("a"))
        put(d:add("a", "two"))
        put(d:replace("b", 1))
        put(d:add("b", 2.5, 100))
        local v, ttl = d:get("b") put(v, ttl > 99 and ttl <= 100)
        put(d:replace("a", true))
        put(d:get("a"))
        put(d:incr("n", 1))
        put(d:incr("n", 5, 10))
        put(d:incr("n", 2))
        put(d:incr("n", 0.5))
        put(d:incr("a", 1))
        put(d:ttl("a"))
        put(d:ttl("zz"))
        put(d:expire("a", 50))
        put(select(1, d:ttl("a")) > 49)
        put(d:expire("zz", 5))
        put(d:delete("a"), d:delete("a"))
        put(d:set("b", nil))
        put(d:get("b"))
        put(d:leaky_bucket("lb", 1, 0))
        put(type(select(1, d:leaky_bucket("lb", 1, 0))))
        put(#d:keys(), #d:keys(1))
        put(math.type(d:free_space()))
        d:flush()
        put(#d:keys(), d:get("n"))
        return table.concat(out, "|")
        "#,
    );
    let want = [
        "nil,nil",
        "true,false",
        "one,nil",
        "nil,exists",
        "nil,not found",
        "true,false",
        "2.5,true",
        "true,false",
        "true,nil",
        "nil,not found",
        "15,false",
        "17,false",
        "17.5,false",
        "nil,not a number",
        "0,nil",
        "nil,not found",
        "true,nil",
        "true",
        "nil,not found",
        "true,false",
        "true,false",
        "nil,nil",
        "nil,nil",
        "number",
        "2,1",
        "integer",
        "0,nil,nil",
    ];
    assert_eq!(got.split('|').collect::<Vec<_>>(), want);
}

#[test]
fn number_keys_are_their_decimal_text() {
    let z = new_zone();
    let lua = state(&z);
    assert_eq!(
        eval(
            &lua,
            r#"shared.d:set(5, "i") shared.d:set(1.5, "f") shared.d:incr(2.0, 1, 0)
            return shared.d:get("5") .. shared.d:get("1.5") .. shared.d:get("2")"#
        ),
        "if1"
    );
    // A number whose text is longer than a key may be is refused like any long key.
    assert_eq!(
        eval(&lua, "return select(2, shared.d:set(1e300, 1))"),
        "bad key"
    );
}

#[test]
fn misuse_is_an_error_with_the_callers_position() {
    let z = new_zone();
    let lua = state(&z);
    for (code, msg) in [
        (
            "shared.d:set('k', {})",
            "t:1: set: shared dict values are strings, numbers or booleans, not table",
        ),
        (
            "shared.d:get({})",
            "t:1: shared dict keys are strings, not table",
        ),
        (
            "shared.d:incr('k')",
            "t:1: incr: step must be a number, not nil",
        ),
        (
            "shared.d:incr('k', 1, 'x')",
            "t:1: incr: initial value must be a number, not string",
        ),
        (
            "shared.d:incr('k', '1')",
            "t:1: incr: step must be a number, not string",
        ),
        (
            "shared.d:set('k', 1, {})",
            "t:1: set: ttl must be a number, not table",
        ),
        (
            "shared.d:add('k', 1, true)",
            "t:1: add: ttl must be a number, not boolean",
        ),
        (
            "shared.d:replace('k', 1, 'soon')",
            "t:1: replace: ttl must be a number, not string",
        ),
        (
            "shared.d.incr('k', 1, 0)",
            "t:1: shared dict methods take a colon: shared.NAME:incr(...)",
        ),
        (
            "shared.d.get(shared.d, 'k') shared.d.get({}, 'k')",
            "t:1: shared dict methods take a colon: shared.NAME:get(...)",
        ),
        (
            "shared.d:leaky_bucket('k', 0)",
            "t:1: leaky_bucket: rate must be > 0",
        ),
        (
            "shared.d:keys('many')",
            "t:1: keys(max): max must be an integer, not string",
        ),
    ] {
        let e = error_of(&lua, code);
        assert!(e.contains(msg), "{code}: {e}");
    }
    // pcall sees a string, as from error().
    assert_eq!(
        eval(
            &lua,
            "local ok, e = pcall(shared.d.get, shared.d, {}) return type(e)"
        ),
        "string"
    );
}

#[test]
fn a_ttl_may_be_a_numeric_string_and_a_step_a_float() {
    let z = new_zone();
    let lua = state(&z);
    assert_eq!(
        eval(
            &lua,
            r#"shared.d:set("k", "v", "30") local _, t = shared.d:get("k")
            local n = shared.d:incr("f", 0.25, 1)
            return tostring(t > 29) .. " " .. n .. " " .. math.type(n)"#
        ),
        "true 1.25 float"
    );
}

#[test]
fn the_dictionary_is_hidden_and_read_only() {
    let z = new_zone();
    let lua = state(&z);
    assert_eq!(
        eval(&lua, "return tostring(getmetatable(shared.d))"),
        "false"
    );
    assert!(eval(&lua, "return tostring(shared.d)").starts_with("shared dict 'd' ("));
    assert!(error_of(&lua, "shared.d.incr = print")
        .contains("shared dict 'd' is changed through its methods: shared.d:set(key, value)"));
    assert!(error_of(&lua, "shared.d.other = 1").contains("is changed through its methods"));
    assert!(error_of(&lua, "rawset(shared.d, 'incr', print)").contains("read-only"));
    assert!(error_of(&lua, "setmetatable(shared.d, {})").contains("protected metatable"));
    assert_eq!(eval(&lua, "return type(shared.d)"), "table");
    // A method still works after the refused stores, and only on its own dictionary.
    assert_eq!(eval(&lua, "return tostring(shared.d:incr('k', 1, 0))"), "1");
    assert!(error_of(&lua, "shared.d.incr({}, 'k', 1, 0)").contains("take a colon"));
}

#[test]
fn closing_the_state_gives_the_zone_back() {
    let z = new_zone();
    let lua = state(&z);
    eval(&lua, "shared.d:incr('k', 1, 0) return ''");
    // Ours, the overview's (`shared()`), and the one handle all twelve methods share.
    assert_eq!(Rc::strong_count(&z), 3);
    drop(lua);
    assert_eq!(Rc::strong_count(&z), 1);
}

#[test]
fn a_string_result_survives_the_call() {
    let z = new_zone();
    let lua = state(&z);
    let long = "x".repeat(400);
    lua.globals().set("long", long.as_str()).expect("global");
    assert_eq!(
        eval(
            &lua,
            "shared.d:set('s', long) collectgarbage() return (shared.d:get('s'))"
        ),
        long
    );
    assert!(matches!(
        lua.load("return shared.d:get('nope')")
            .eval::<Value>()
            .expect("get"),
        Value::Nil
    ));
}

/// A method called after its dictionary's handle was finalized (a finalizer that runs later
/// while the state closes) raises "closed" instead of touching a zone it no longer holds.
#[test]
fn a_method_called_after_the_handle_was_finalized_says_closed() {
    let z = new_zone();
    let lua = Lua::new();
    let seen = Rc::new(std::cell::RefCell::new(None::<String>));
    let record = {
        let seen = seen.clone();
        lua.create_function(move |_, msg: String| {
            *seen.borrow_mut() = Some(msg);
            Ok(())
        })
        .unwrap()
    };
    lua.globals().set("record", record).unwrap();
    // Marked for finalization before the dictionary's handle exists: Lua finalizes the newest
    // first, so this one runs after the handle's.
    lua.load(
        r#"late = setmetatable({}, {__gc = function()
             local ok, err = pcall(function() return dict:get("k") end)
             record(ok and "no error" or tostring(err))
           end})"#,
    )
    .exec()
    .unwrap();
    let obj = object(&lua, vec![("d".to_string(), z.clone())]).expect("object");
    lua.globals().set("shared", obj).unwrap();
    lua.load("dict = shared.d; dict:set('k', 1)")
        .exec()
        .unwrap();
    assert_eq!(Rc::strong_count(&z), 3, "ours, shared()'s and the handle's");
    drop(lua);
    let msg = seen.borrow().clone().expect("the late finalizer ran");
    assert!(msg.contains("shared dict: closed"), "{msg}");
    assert_eq!(Rc::strong_count(&z), 1, "every count given back");
}
