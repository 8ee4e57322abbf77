//! The `__index` of `req` and `req.headers`, and `req:arg(name)`, as raw Lua C functions.
//!
//! Every route reads a few fields per request, and an mlua callback costs far more than the
//! field itself (argument and result conversion, a protected frame, error boxing), as did a
//! per-call cache in Lua that had to be emptied at each call. As raw C `__index` functions a
//! read is one metamethod call, one comparison and one string push, and nothing is kept
//! between calls. Each function carries the router's [`Current`] in a userdata upvalue that
//! holds a strong count on it (its `__gc` gives it back), so the pointer stays valid for as
//! long as Lua can call the function.
//!
//! The rules for raw functions (no destructor alive across a call that can raise) are in
//! [`crate::lua_raw`].

use std::ffi::{c_char, c_int, c_void};
use std::rc::Rc;

use mlua::{ffi, Function, Lua};

use super::req::Current;
use super::{args, RouteRequest};
use crate::lua_raw::{self, closure, push, push_owned, to_bytes, upvalue, LazyFields, LAZY_FIELDS};

/// Which accessor [`function`] makes.
#[derive(Debug, Clone, Copy)]
pub(super) enum Accessor {
    /// `__index(fields, key)` → the field's value (`headers`, `arg`, `body` and `form` are
    /// found in the `fields` table of `req.lua` before this runs); a string key that is no
    /// field is an error, any other key nil.
    Field,
    /// `__index(headers, name)` → the header's value (repeated ones joined with ", ") or nil.
    Header,
    /// `arg(req, name)` → the query argument's decoded value or nil.
    Arg,
}

/// Slots of the string cache, one per string field (see [`string_cache`]).
const FIELD_SLOTS: usize = 10;
/// Slots after the fields' for header values, picked by the header's name (see
/// [`header_slot`]).
const HEADER_SLOTS: usize = 8;

/// The table in which [`Accessor::Field`] keeps the last Lua string it pushed for each field
/// (array slots 1..=[`FIELD_SLOTS`]). A request's host, method and path are mostly those of
/// the request before: pushing the kept string again, after comparing its bytes, spares
/// interning a new one (hashing it and looking it up in the state's string table, or
/// allocating it). Only the strings are kept, never which request they came from. The same
/// holds for a header's value (`User-Agent`, `Accept`, a cookie: mostly the bytes a client sent
/// before), in [`HEADER_SLOTS`] more slots.
pub(super) fn string_cache(lua: &Lua) -> mlua::Result<mlua::Table> {
    let t = lua.create_table_with_capacity(FIELD_SLOTS + HEADER_SLOTS, 0)?;
    for i in 1..=FIELD_SLOTS + HEADER_SLOTS {
        // Filled, so that every slot is in the array part from the start: setting one later
        // allocates nothing.
        t.raw_set(i, false)?;
    }
    Ok(t)
}

/// Makes the accessor `which` over `cur`; `strings` is [`Accessor::Field`]'s [`string_cache`]
/// (unused by the others).
pub(super) fn function(
    lua: &Lua,
    cur: &Rc<Current>,
    which: Accessor,
    strings: &mlua::Table,
) -> mlua::Result<Function> {
    let f: ffi::lua_CFunction = match which {
        Accessor::Field => field_fn,
        Accessor::Header => header_fn,
        Accessor::Arg => arg_fn,
    };
    closure(lua, cur.clone(), f, strings)
}

/// The request of the call in progress, through the function's upvalue; None outside a call.
///
/// # Safety
/// `l` is running a C function made by [`function`].
unsafe fn with_request<R>(
    l: *mut ffi::lua_State,
    f: impl FnOnce(&RouteRequest<'_>) -> R,
) -> Option<R> {
    // SAFETY: per this function's contract, `l` runs a closure over a `Current`.
    let cur = unsafe { upvalue::<Current>(l) }?;
    cur.with_raw(f)
}

/// Raises "req is only available during a route call".
///
/// # Safety
/// `l` is running a C function; nothing with a destructor is alive in the caller's frame.
unsafe fn outside(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: per the contract; the message is static.
    unsafe {
        push(l, b"req is only available during a route call");
        ffi::lua_error(l)
    }
}

/// Argument 2 as bytes when it is a string (numbers converted only with `coerce`), else None.
///
/// # Safety
/// `l` is running a C function.
unsafe fn string_arg<'a>(l: *mut ffi::lua_State, coerce: bool) -> Option<&'a [u8]> {
    // SAFETY: argument 2 stays on the stack (so its bytes stay alive) until the function
    // returns, and the slice is used only before that; a number is converted in place.
    unsafe {
        let [a] = lua_raw::args::<1>(l, 2);
        match a.bytes() {
            Some(b) => Some(b),
            None if coerce && a.number().is_some() => to_bytes(l, 2),
            None => None,
        }
    }
}

/// A field's value, or which kind it is.
enum Field<'r> {
    /// A string, and its slot in the string cache.
    Str(&'r [u8], ffi::lua_Integer),
    Int(i64),
    Nil,
    Unknown,
}

/// `req`'s string fields: field `i` is [`string_field`] `i` and keeps its last Lua string in
/// slot `i + 1` of the string cache. The first [`LAZY_FIELDS`], the ones routes read most,
/// are set for the VM at each call ([`fill`]); the others are read by [`lazy_fn`].
const STRING_FIELDS: [&str; FIELD_SLOTS] = [
    "path",
    "method",
    "host",
    "uri",
    "remote_addr",
    "query",
    "raw_path",
    "version",
    "scheme",
    "listener",
];

/// String field `i` of [`STRING_FIELDS`] for `r` (None: nil, or no such field).
fn string_field<'r>(r: &'r RouteRequest<'_>, i: usize) -> Option<&'r str> {
    let q = r.req;
    match i {
        0 => Some(&q.path),
        1 => Some(q.method.as_str()),
        2 => q.host.as_deref(),
        3 => Some(&q.target),
        4 => Some(r.remote_addr),
        5 => q.query.as_deref(),
        6 => Some(&q.raw_path),
        7 => Some(q.version.as_str()),
        8 => Some(r.scheme),
        9 => Some(r.listener),
        _ => None,
    }
}

fn field<'r>(r: &'r RouteRequest<'_>, key: &[u8]) -> Field<'r> {
    if key == b"remote_port" {
        return Field::Int(i64::from(r.remote_port));
    }
    match STRING_FIELDS.iter().position(|n| n.as_bytes() == key) {
        Some(i) => string_field(r, i).map_or(Field::Nil, |s| {
            Field::Str(s.as_bytes(), (i + 1) as ffi::lua_Integer)
        }),
        None => Field::Unknown,
    }
}

/// The names of the first [`LAZY_FIELDS`] of [`STRING_FIELDS`] as Lua strings, in a table
/// that keeps them (and so keeps them the interned strings of those names) for [`bind`].
pub(super) fn field_names(lua: &Lua) -> mlua::Result<mlua::Table> {
    let t = lua.create_table_with_capacity(LAZY_FIELDS, 0)?;
    for name in &STRING_FIELDS[..LAZY_FIELDS] {
        t.raw_push(lua.create_string(name)?)?;
    }
    Ok(t)
}

/// Makes `f` the string fields of `table`, named by [`field_names`]' `names`, kept in `cache`
/// (a [`string_cache`]).
pub(super) fn bind(
    f: &mut LazyFields,
    table: &mlua::Table,
    cache: &mlua::Table,
    names: &mlua::Table,
) {
    f.table = table.to_pointer();
    f.cache = cache.to_pointer();
    for (i, key) in f.key.iter_mut().enumerate() {
        *key = names
            .raw_get::<mlua::String>(i + 1)
            .map_or(std::ptr::null(), |s| s.to_pointer());
    }
}

/// Sets `f`'s values to `r`'s fields; with None, makes them not live.
pub(super) fn fill(f: &mut LazyFields, r: Option<&RouteRequest<'_>>) {
    let Some(r) = r else {
        f.live = 0;
        return;
    };
    for i in 0..LAZY_FIELDS {
        (f.s[i], f.len[i]) =
            string_field(r, i).map_or((std::ptr::null(), 0), |s| (s.as_ptr().cast(), s.len()));
    }
    f.live = 1;
}

/// The string cache that is upvalue 2 of the running function (see [`string_cache`]).
///
/// # Safety
/// `l` is running a C function made by [`function`]; the pointer is used only while it runs
/// (the function holds the table).
unsafe fn upvalue_cache(l: *mut ffi::lua_State) -> *const c_void {
    // SAFETY: per the contract.
    unsafe { ffi::lua_topointer(l, ffi::lua_upvalueindex(2)) }
}

/// Pushes a field's value, a string through `cache` (a live [`string_cache`]); false, with
/// nothing pushed, for an unknown field.
///
/// # Safety
/// `l` is a running state with a free stack slot; nothing with a destructor is alive in the
/// caller's frames (a string push may raise a memory error).
unsafe fn push_field(l: *mut ffi::lua_State, cache: *const c_void, f: Field<'_>) -> bool {
    // SAFETY: per the contract; the cache's slots are in its array part.
    unsafe {
        match f {
            Field::Str(s, slot) => lua_raw::push_cached(l, cache, slot, s),
            Field::Int(n) => ffi::lua_pushinteger(l, n),
            Field::Nil => ffi::lua_pushnil(l),
            Field::Unknown => return false,
        }
    }
    true
}

unsafe extern "C-unwind" fn field_fn(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: called by Lua as a C function made by `function` (a metamethod: the table, the
    // key; upvalue 2 the string cache); every push has a free slot (at most three values,
    // LUA_MINSTACK is 20), and nothing with a destructor is alive when one raises
    // (`with_request`'s closure only pushes borrowed bytes; the message is pushed by
    // `push_owned`).
    unsafe {
        let Some(key) = string_arg(l, false) else {
            // `req[1]`, `req[true]`: no such field, and not worth an error.
            ffi::lua_pushnil(l);
            return 1;
        };
        let pushed = {
            let cache = upvalue_cache(l);
            with_request(l, |r| push_field(l, cache, field(r, key)))
        };
        match pushed {
            Some(true) => return 1,
            None => return outside(l),
            Some(false) => {}
        }
        ffi::luaL_where(l, 1);
        push_owned(l, super::req::unknown_field(key).into_bytes());
        ffi::lua_concat(l, 2);
        ffi::lua_error(l)
    }
}

/// `req.headers[key]`, before it becomes a Lua string.
enum Header<'r> {
    Absent,
    One(&'r [u8]),
    /// Repeated headers, joined with ", ".
    Joined(Vec<u8>),
}

/// `req.headers[key]` (case-insensitive) when it needs no buffer: `Some(None)` when absent,
/// `Some(Some(value))` when sent once; None when repeated (see [`header`]).
fn single_header<'r>(r: &'r RouteRequest<'_>, key: &[u8]) -> Option<Option<&'r [u8]>> {
    let mut found = r.req.header_values(key);
    match (found.next(), found.next()) {
        (None, _) => Some(None),
        (Some(v), None) => Some(Some(v)),
        (Some(_), Some(_)) => None,
    }
}

/// `req.headers[key]`: case-insensitive, repeated headers joined with ", ".
fn header<'r>(r: &'r RouteRequest<'_>, key: &[u8]) -> Header<'r> {
    match single_header(r, key) {
        Some(None) => Header::Absent,
        Some(Some(v)) => Header::One(v),
        None => {
            let mut joined = Vec::new();
            for (i, v) in r.req.header_values(key).enumerate() {
                if i > 0 {
                    joined.extend_from_slice(b", ");
                }
                joined.extend_from_slice(v);
            }
            Header::Joined(joined)
        }
    }
}

/// The string cache slot of the value of header `name` (any case): one of [`HEADER_SLOTS`] after
/// the fields'. Two names may share a slot; the bytes are compared anyway, so that only costs
/// the cache a miss.
fn header_slot(name: &[u8]) -> ffi::lua_Integer {
    let (first, last) = match (name.first(), name.last()) {
        (Some(&f), Some(&l)) => (usize::from(f | 0x20), usize::from(l | 0x20)),
        _ => (0, 0),
    };
    let mix = name.len().wrapping_mul(31) ^ first.wrapping_mul(7) ^ last;
    (FIELD_SLOTS + 1 + mix % HEADER_SLOTS) as ffi::lua_Integer
}

unsafe extern "C-unwind" fn header_fn(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: as `field_fn` (upvalue 2 the string cache); a joined value is pushed through
    // `push_owned`, a single one from the request head, which the closure borrows.
    unsafe {
        let Some(key) = string_arg(l, false) else {
            ffi::lua_pushnil(l);
            return 1;
        };
        let cache = upvalue_cache(l);
        let pushed = with_request(l, |r| match header(r, key) {
            Header::Absent => ffi::lua_pushnil(l),
            Header::One(v) => lua_raw::push_cached(l, cache, header_slot(key), v),
            Header::Joined(v) => push_owned(l, v),
        });
        match pushed {
            Some(()) => 1,
            None => outside(l),
        }
    }
}

unsafe extern "C-unwind" fn arg_fn(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: as `field_fn`; a decoded value is pushed through `push_owned`.
    unsafe {
        let Some(name) = string_arg(l, true) else {
            push(l, b"req:arg(name): name must be a string");
            ffi::lua_error(l)
        };
        let pushed = with_request(l, |r| {
            match r.req.query.as_deref().and_then(|q| args::arg(q, name)) {
                Some(v) => push_owned(l, v),
                None => ffi::lua_pushnil(l),
            }
        });
        match pushed {
            Some(()) => 1,
            None => outside(l),
        }
    }
}

/// What [`lazy_fn`] answers for: the `req` object and its `headers` table (compared by
/// address), the string cache, and the call in progress.
pub(super) struct Lazy {
    pub(super) cur: Rc<Current>,
    pub(super) req: *const c_void,
    pub(super) headers: *const c_void,
    pub(super) cache: *const c_void,
}

/// The state's [`lua_raw::LazyReader`]: `req.<field>` and `req.headers[name]` answered by the
/// VM's read itself, without the `__index` call (about 400 instructions less a read). It
/// answers only what cannot fail and needs no buffer: a field or a single header's value
/// during a call. Everything else (an unknown field, a read outside a call, a repeated
/// header, another table) returns 0, and `__index` ([`field_fn`], [`header_fn`]) does it as
/// before.
///
/// # Safety
/// Called by the VM as a lazy reader set with a [`Lazy`] as `ud`, which the reader's anchor
/// keeps alive (with the three tables) while it is installed.
pub(super) unsafe extern "C-unwind" fn lazy_fn(
    ud: *mut c_void,
    l: *mut ffi::lua_State,
    table: *const c_void,
    key: *const c_char,
    len: usize,
) -> c_int {
    // SAFETY: per the contract; the key's bytes are a Lua string's, alive during the read;
    // each push has its slot; the pushed bytes are borrowed from the request, and nothing
    // with a destructor is alive when a push raises.
    unsafe {
        let lazy = &*ud.cast::<Lazy>();
        let key = std::slice::from_raw_parts(key.cast::<u8>(), len);
        let pushed = if table == lazy.req {
            lazy.cur
                .with_raw(|r| push_field(l, lazy.cache, field(r, key)))
        } else if table == lazy.headers {
            // A repeated header is left to `header_fn`, which joins it.
            lazy.cur.with_raw(|r| match single_header(r, key) {
                Some(None) => {
                    ffi::lua_pushnil(l);
                    true
                }
                Some(Some(v)) => {
                    lua_raw::push_cached(l, lazy.cache, header_slot(key), v);
                    true
                }
                None => false,
            })
        } else {
            None
        };
        c_int::from(pushed == Some(true))
    }
}
