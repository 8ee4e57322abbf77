//! The methods of a shared dictionary (`shared.NAME:incr(k, 1, 0)` …) as raw Lua C functions.
//!
//! A route that counts calls `incr` on every request; as an mlua userdata method each call cost
//! about 1,900 instructions of dispatch (the userdata's type check, argument conversion, a
//! protected frame) around a zone operation of about 400. Here a dictionary is a read-only
//! table ([`crate::lua_raw::set_readonly`]) holding its methods, so `shared.NAME:incr` is two
//! plain lookups: each method is a C closure over one shared handle, a strong count on the
//! [`Zone`] (given back by its `__gc`), and over the dictionary's table. One call into Lua
//! ([`method_args`]) checks that argument 1 is that table (a call without the colon is a clear
//! error rather than a key taken for `self`) and reads the handle and the other arguments.
//!
//! The rules of [`crate::lua_raw`] hold: arguments are read and checked (raising on misuse)
//! before anything is owned; the zone operation runs with only borrowed arguments or a copied
//! value, which is freed before the results are pushed; owned results go through `push_owned`.

use std::ffi::c_int;
use std::io::Write;
use std::rc::Rc;

use mlua::{ffi, Lua, Table};

use super::zone::{OpError, Val, Zone, MAX_KEY};
use crate::lua_raw::{
    method_args, push, push_owned, raise, set_methods, type_name_of, Arg, NotAMethodCall,
};

/// Every method, by name.
const METHODS: [(&str, ffi::lua_CFunction); 12] = [
    ("get", get_fn),
    ("set", store_fn::<SET>),
    ("add", store_fn::<ADD>),
    ("replace", store_fn::<REPLACE>),
    ("incr", incr_fn),
    ("leaky_bucket", leaky_bucket_fn),
    ("delete", delete_fn),
    ("ttl", ttl_fn),
    ("expire", expire_fn),
    ("keys", keys_fn),
    ("flush", flush_fn),
    ("free_space", free_space_fn),
];

/// Which store [`store_fn`] makes.
const SET: u8 = 0;
const ADD: u8 = 1;
const REPLACE: u8 = 2;

/// `keys()` without a maximum lists at most this many.
const DEFAULT_KEYS: usize = 1024;

/// A dictionary's table (to be made read-only by the caller) holding its methods: C closures
/// over one strong count on `zone` and over the table itself (see [`this`]).
pub(super) fn methods_table(lua: &Lua, zone: &Rc<Zone>) -> mlua::Result<Table> {
    let dict = lua.create_table_with_capacity(0, METHODS.len())?;
    set_methods(lua, zone.clone(), &dict, &METHODS)?;
    Ok(dict)
}

/// The zone of the call and its arguments 2 ..= N + 1, after checking that argument 1 is the
/// dictionary (a call with `:`).
///
/// # Safety
/// `l` is running a method made by [`methods_table`]; the reference and the arguments are not
/// used after it returns.
unsafe fn this<'a, const N: usize>(l: *mut ffi::lua_State, method: &str) -> (&'a Zone, [Arg; N]) {
    // SAFETY: per the contract, the function was set by `set_methods::<Zone>`.
    unsafe {
        match method_args::<Zone, N>(l) {
            Ok(call) => call,
            Err(NotAMethodCall::NoSelf) => raise(
                l,
                &[
                    b"shared dict methods take a colon: shared.NAME:",
                    method.as_bytes(),
                    b"(...)",
                ],
            ),
            Err(NotAMethodCall::Closed) => raise(l, &[b"shared dict: closed"]),
        }
    }
}

/// A key: a string, or a number written as its decimal text (an integer as Lua writes it, a
/// float as Rust does), the way earlier versions took it.
// A value of one call's frame: boxing the text would cost an allocation per number key.
#[allow(clippy::large_enum_variant)]
enum Key<'a> {
    Bytes(&'a [u8]),
    /// A number's text; a text longer than [`MAX_KEY`] is cut at `MAX_KEY + 1` bytes, which the
    /// zone refuses as it would the whole.
    Text([u8; MAX_KEY + 1], usize),
}

impl Key<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Key::Bytes(b) => b,
            Key::Text(buf, n) => &buf[..*n],
        }
    }
}

/// The key argument `a`; anything but a string or a number raises.
///
/// # Safety
/// As [`Arg::bytes`] (the slice lives as long as the argument); nothing with a destructor is
/// alive in the caller's frames.
#[inline]
unsafe fn key_of<'a>(l: *mut ffi::lua_State, a: &Arg) -> Key<'a> {
    // SAFETY: per the contract.
    unsafe {
        match a.bytes() {
            Some(b) => Key::Bytes(b),
            None => number_key(l, a),
        }
    }
}

/// [`key_of`] for anything but a string, out of line: a string key is the common case.
///
/// # Safety
/// As [`key_of`].
#[cold]
unsafe fn number_key<'a>(l: *mut ffi::lua_State, a: &Arg) -> Key<'a> {
    // SAFETY: per the contract.
    unsafe {
        let Some(f) = a.number() else {
            raise(l, &[b"shared dict keys are strings, not ", a.type_name(l)])
        };
        let mut buf = [0u8; MAX_KEY + 1];
        let mut w = &mut buf[..];
        let written = match a.integer() {
            Some(n) => write!(w, "{n}"),
            None => write!(w, "{f}"),
        };
        let n = match written {
            Ok(()) => MAX_KEY + 1 - w.len(),
            Err(_) => MAX_KEY + 1,
        };
        Key::Text(buf, n)
    }
}

/// Raises "`what` must be a number, not …" for the argument `a`.
///
/// # Safety
/// As [`raise`].
unsafe fn not_a_number(l: *mut ffi::lua_State, a: &Arg, what: &[u8]) -> ! {
    // SAFETY: per the contract.
    unsafe { raise(l, &[what, b" must be a number, not ", a.type_name(l)]) }
}

/// The argument `a` as a number, integers kept as such (no string coercion), or None when nil
/// or absent; anything else raises "`what` must be a number, not …".
///
/// # Safety
/// As [`key_of`].
unsafe fn num_of(l: *mut ffi::lua_State, a: &Arg, what: &[u8]) -> Option<Val> {
    // SAFETY: per the contract.
    unsafe {
        if let Some(n) = a.integer() {
            return Some(Val::Int(n));
        }
        if let Some(f) = a.number() {
            return Some(Val::Float(f));
        }
        if !a.is_nil() {
            not_a_number(l, a, what)
        }
        None
    }
}

/// The argument `a`, at stack index `i`, as a number the way Lua's `tonumber` takes it (a
/// number or a numeric string: a ttl, a rate, a burst), or None when nil or absent; anything
/// else raises.
///
/// # Safety
/// As [`key_of`].
unsafe fn tonumber_of(l: *mut ffi::lua_State, a: &Arg, i: c_int, what: &[u8]) -> Option<f64> {
    // SAFETY: per the contract; `lua_tonumberx` converts a numeric string without changing
    // the stack.
    unsafe {
        if a.is_nil() {
            return None;
        }
        if let Some(n) = a.number() {
            return Some(n);
        }
        let mut ok = 0;
        let n = ffi::lua_tonumberx(l, i, &mut ok);
        if ok == 0 {
            not_a_number(l, a, what)
        }
        Some(n)
    }
}

/// Pushes `v` (a string through `push_owned`).
///
/// # Safety
/// As `push`; nothing else with a destructor is alive in the caller's frames.
unsafe fn push_val(l: *mut ffi::lua_State, v: Val) {
    // SAFETY: per the contract.
    unsafe {
        match v {
            Val::Str(s) => push_owned(l, s),
            Val::Int(n) => ffi::lua_pushinteger(l, n),
            Val::Float(f) => ffi::lua_pushnumber(l, f),
            Val::Bool(b) => ffi::lua_pushboolean(l, c_int::from(b)),
        }
    }
}

/// Returns `nil, message`: a failure that depends on the data.
///
/// # Safety
/// As `push`, with two free slots.
unsafe fn fail(l: *mut ffi::lua_State, e: OpError) -> c_int {
    // SAFETY: per the contract.
    unsafe {
        ffi::lua_pushnil(l);
        push(l, e.message().as_bytes());
    }
    2
}

/// Raises "shared dict: message": a failure of the zone itself where the method has no
/// `nil, message` result.
///
/// # Safety
/// As [`raise`].
unsafe fn op_error(l: *mut ffi::lua_State, e: OpError) -> ! {
    // SAFETY: per the contract.
    unsafe { raise(l, &[b"shared dict: ", e.message().as_bytes()]) }
}

/// `d:get(key)` → value and remaining seconds (nil: no expiry), or nil, or nil and a message.
unsafe extern "C-unwind" fn get_fn(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: Lua calls it as a method made by `methods_table`; the key is borrowed from the stack
    // for the zone operation; results are pushed after it, an owned string by `push_val`.
    unsafe {
        let (zone, [k]) = this::<1>(l, "get");
        let key = key_of(l, &k);
        match zone.get(key.bytes()) {
            Ok(Some((v, ttl))) => {
                push_val(l, v);
                match ttl {
                    Some(t) => ffi::lua_pushnumber(l, t),
                    None => ffi::lua_pushnil(l),
                }
                2
            }
            Ok(None) => {
                ffi::lua_pushnil(l);
                ffi::lua_pushnil(l);
                2
            }
            Err(e) => fail(l, e),
        }
    }
}

/// `d:set(key, value, ttl)`, `d:add(…)`, `d:replace(…)` → true and whether an entry was
/// evicted for it, or nil and a message. `set` of nil deletes.
unsafe extern "C-unwind" fn store_fn<const WHICH: u8>(l: *mut ffi::lua_State) -> c_int {
    let name = match WHICH {
        SET => "set",
        ADD => "add",
        _ => "replace",
    };
    // SAFETY: as `get_fn`. The copied value is dropped before anything is pushed.
    unsafe {
        let (zone, [k, v, t]) = this::<3>(l, name);
        let ttl_what: &[u8] = match WHICH {
            SET => b"set: ttl",
            ADD => b"add: ttl",
            _ => b"replace: ttl",
        };
        let ttl = tonumber_of(l, &t, 4, ttl_what);
        let key = key_of(l, &k);
        let val = match v.kind() {
            ffi::LUA_TNIL | ffi::LUA_TNONE if WHICH == SET => None,
            ffi::LUA_TSTRING => v.bytes().map(|s| Val::Str(s.to_vec())),
            ffi::LUA_TNUMBER => num_of(l, &v, name.as_bytes()),
            ffi::LUA_TBOOLEAN => Some(Val::Bool(v.boolean())),
            _ => raise(
                l,
                &[
                    name.as_bytes(),
                    b": shared dict values are strings, numbers or booleans, not ",
                    v.type_name(l),
                ],
            ),
        };
        let Some(val) = val else {
            if let Err(e) = zone.delete(key.bytes()) {
                op_error(l, e)
            }
            ffi::lua_pushboolean(l, 1);
            ffi::lua_pushboolean(l, 0);
            return 2;
        };
        let stored = match WHICH {
            SET => zone.set(key.bytes(), &val, ttl),
            ADD => zone.add(key.bytes(), &val, ttl),
            _ => zone.replace(key.bytes(), &val, ttl),
        };
        drop(val);
        match stored {
            Ok(s) => {
                ffi::lua_pushboolean(l, 1);
                ffi::lua_pushboolean(l, c_int::from(s.evicted));
                2
            }
            Err(e) => fail(l, e),
        }
    }
}

/// `d:incr(key, step, init, ttl)` → the new value and whether an entry was evicted, or nil
/// and a message.
unsafe extern "C-unwind" fn incr_fn(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: as `get_fn`; numbers are values, the key is borrowed.
    unsafe {
        let (zone, [k, s, i, t]) = this::<4>(l, "incr");
        let Some(step) = num_of(l, &s, b"incr: step") else {
            not_a_number(l, &s, b"incr: step")
        };
        let init = num_of(l, &i, b"incr: initial value");
        let ttl = tonumber_of(l, &t, 5, b"incr: ttl");
        let key = key_of(l, &k);
        match zone.incr(key.bytes(), &step, init.as_ref(), ttl) {
            Ok((v, s)) => {
                push_val(l, v);
                ffi::lua_pushboolean(l, c_int::from(s.evicted));
                2
            }
            Err(e) => fail(l, e),
        }
    }
}

/// `d:leaky_bucket(key, rate, burst)` → nil when admitted, or the seconds until there is room;
/// or nil and a message.
unsafe extern "C-unwind" fn leaky_bucket_fn(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: as `get_fn`.
    unsafe {
        let (zone, [k, r, b]) = this::<3>(l, "leaky_bucket");
        let rate = tonumber_of(l, &r, 3, b"leaky_bucket: rate").unwrap_or(f64::NAN);
        if rate.is_nan() || rate <= 0.0 {
            raise(l, &[b"leaky_bucket: rate must be > 0"])
        }
        let burst = tonumber_of(l, &b, 4, b"leaky_bucket: burst").unwrap_or(0.0);
        let key = key_of(l, &k);
        match zone.leaky_bucket(key.bytes(), rate, burst.max(0.0)) {
            Ok(None) => {
                ffi::lua_pushnil(l);
                ffi::lua_pushnil(l);
                2
            }
            Ok(Some(wait)) => {
                ffi::lua_pushnumber(l, wait);
                ffi::lua_pushnil(l);
                2
            }
            Err(e) => fail(l, e),
        }
    }
}

/// `d:delete(key)` → whether the key was there.
unsafe extern "C-unwind" fn delete_fn(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: as `get_fn`.
    unsafe {
        let (zone, [k]) = this::<1>(l, "delete");
        let key = key_of(l, &k);
        match zone.delete(key.bytes()) {
            Ok(was) => {
                ffi::lua_pushboolean(l, c_int::from(was));
                1
            }
            Err(e) => op_error(l, e),
        }
    }
}

/// `d:ttl(key)` → the remaining seconds (0: no expiry), or nil and a message.
unsafe extern "C-unwind" fn ttl_fn(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: as `get_fn`.
    unsafe {
        let (zone, [k]) = this::<1>(l, "ttl");
        let key = key_of(l, &k);
        match zone.ttl(key.bytes()) {
            Ok(Some(t)) => {
                // A key that never expires says 0, an integer as the README writes it.
                match t {
                    Some(t) => ffi::lua_pushnumber(l, t),
                    None => ffi::lua_pushinteger(l, 0),
                }
                ffi::lua_pushnil(l);
                2
            }
            Ok(None) => fail(l, OpError::NotFound),
            Err(e) => fail(l, e),
        }
    }
}

/// `d:expire(key, ttl)` → true, or nil and a message.
unsafe extern "C-unwind" fn expire_fn(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: as `get_fn`.
    unsafe {
        let (zone, [k, t]) = this::<2>(l, "expire");
        let ttl = tonumber_of(l, &t, 3, b"expire: ttl");
        let key = key_of(l, &k);
        match zone.expire(key.bytes(), ttl) {
            Ok(true) => {
                ffi::lua_pushboolean(l, 1);
                ffi::lua_pushnil(l);
                2
            }
            Ok(false) => fail(l, OpError::NotFound),
            Err(e) => fail(l, e),
        }
    }
}

/// `d:keys(max)` → a list of at most `max` keys (default [`DEFAULT_KEYS`]).
unsafe extern "C-unwind" fn keys_fn(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: as `get_fn`. The list of keys is owned while the table is filled: only a memory
    // error there leaks it (see `crate::lua_raw`).
    unsafe {
        let (zone, []) = this::<0>(l, "keys");
        let max = if ffi::lua_type(l, 2) <= ffi::LUA_TNIL {
            DEFAULT_KEYS
        } else {
            let mut ok = 0;
            let n = ffi::lua_tointegerx(l, 2, &mut ok);
            if ok == 0 {
                raise(
                    l,
                    &[
                        b"keys(max): max must be an integer, not ",
                        type_name_of(l, ffi::lua_type(l, 2)),
                    ],
                )
            }
            usize::try_from(n).unwrap_or(0)
        };
        let keys = std::mem::ManuallyDrop::new(zone.keys(max));
        ffi::lua_createtable(l, c_int::try_from(keys.len()).unwrap_or(0), 0);
        for (i, k) in keys.iter().enumerate() {
            push(l, k);
            ffi::lua_rawseti(l, -2, i as ffi::lua_Integer + 1);
        }
        drop(std::mem::ManuallyDrop::into_inner(keys));
        1
    }
}

/// `d:flush()`: every entry gone.
unsafe extern "C-unwind" fn flush_fn(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: as `get_fn`.
    unsafe {
        let (zone, []) = this::<0>(l, "flush");
        zone.flush();
        0
    }
}

/// `d:free_space()` → the bytes free for new entries (free or expired ones).
unsafe extern "C-unwind" fn free_space_fn(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: as `get_fn`.
    unsafe {
        let (zone, []) = this::<0>(l, "free_space");
        ffi::lua_pushinteger(l, zone.free_space() as ffi::lua_Integer);
        1
    }
}
