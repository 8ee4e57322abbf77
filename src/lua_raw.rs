//! Helpers for Lua functions written as raw C functions over `mlua::ffi`, for the per-request
//! calls where an mlua callback costs far more than the work (`req`'s fields, `string.find`,
//! the shared dictionaries' methods). They read their arguments with [`args`].
//!
//! Lua errors are `longjmp`s: nothing with a destructor may be alive in a raw function's frames
//! while a Lua API function that can raise (a string push meeting the memory limit) runs. Owned
//! buffers are therefore held in `ManuallyDrop` across the push and freed after it
//! ([`push_owned`]); only an out-of-memory error, which ends the call anyway, leaks that one
//! buffer.

use std::ffi::{c_char, c_int, c_void};
use std::mem::ManuallyDrop;
use std::rc::Rc;

use mlua::{ffi, Function, Lua, Table};

extern "C-unwind" {
    /// The vendored Lua's read-only flag (vendor/lua-src/LUAHTTPD.md).
    fn luahttpd_setreadonly(l: *mut ffi::lua_State, idx: c_int);
    /// The vendored Lua's reader of `n` stack slots from `from` on (vendor/lua-src/LUAHTTPD.md).
    fn luahttpd_args(l: *mut ffi::lua_State, from: c_int, n: c_int, out: *mut Arg);
    /// The vendored Lua's reader of a method's call: upvalue 1's block when argument 1 is
    /// upvalue 2, and arguments 2 ..= n + 1 (vendor/lua-src/LUAHTTPD.md).
    fn luahttpd_method(l: *mut ffi::lua_State, n: c_int, out: *mut Arg) -> *mut std::ffi::c_void;
    /// The vendored Lua's lazy reader of read-only tables (vendor/lua-src/LUAHTTPD.md).
    fn luahttpd_setlazy(
        l: *mut ffi::lua_State,
        f: Option<LazyReader>,
        ud: *mut c_void,
        fields: *const LazyFields,
    );
    /// The auxiliary data of the state's lazy reader, null when none is set.
    fn luahttpd_lazyud(l: *mut ffi::lua_State) -> *mut c_void;
    /// The vendored Lua's cached string push (vendor/lua-src/LUAHTTPD.md).
    fn luahttpd_pushcached(
        l: *mut ffi::lua_State,
        cache: *const c_void,
        slot: ffi::lua_Integer,
        s: *const c_char,
        len: usize,
    );
}

/// A state's reader of the string keys a read-only table lacks, called by the VM before the
/// table's `__index` (vendor/lua-src/LUAHTTPD.md): `(ud, l, table, key, key_len)` pushes the
/// value and returns 1, or pushes nothing, allocates nothing in Lua and returns 0 (then
/// `__index` runs as always). It runs inside the reading function's frame, with one free
/// stack slot and no pseudo-indices of its own (no upvalues); it may raise only as a push
/// does (a memory error).
pub type LazyReader = unsafe extern "C-unwind" fn(
    ud: *mut c_void,
    l: *mut ffi::lua_State,
    table: *const c_void,
    key: *const c_char,
    len: usize,
) -> c_int;

/// How many fields a [`LazyFields`] holds (`LUAHTTPD_FIELDS` in the vendored `lua.h`).
pub const LAZY_FIELDS: usize = 5;

/// String fields of one read-only table that the VM answers itself, before the state's
/// [`LazyReader`] (vendor/lua-src/LUAHTTPD.md; `luahttpd_Fields` in `lua.h`): for a read of
/// `key[i]` while `live` is nonzero, the string `s[i]` (`len[i]` bytes; null: nil), pushed
/// through array slot `i + 1` of `cache` as [`push_cached`] does. Its owner sets the values
/// for each call and clears `live` after it; the VM only reads it.
#[repr(C)]
pub struct LazyFields {
    /// The read-only table ([`Table::to_pointer`]).
    pub table: *const c_void,
    /// The string cache ([`Table::to_pointer`] of a table whose array part has the slots).
    pub cache: *const c_void,
    /// Nonzero while the values below may be read.
    pub live: c_int,
    /// The field names: short strings ([`mlua::String::to_pointer`]), kept alive by the owner.
    pub key: [*const c_void; LAZY_FIELDS],
    /// The values' bytes; null: the field is nil.
    pub s: [*const c_char; LAZY_FIELDS],
    /// The values' lengths.
    pub len: [usize; LAZY_FIELDS],
}

impl LazyFields {
    /// No table, no field, not live.
    pub fn new() -> LazyFields {
        LazyFields {
            table: std::ptr::null(),
            cache: std::ptr::null(),
            live: 0,
            key: [std::ptr::null(); LAZY_FIELDS],
            s: [std::ptr::null(); LAZY_FIELDS],
            len: [0; LAZY_FIELDS],
        }
    }
}

impl Default for LazyFields {
    fn default() -> LazyFields {
        LazyFields::new()
    }
}

/// Registry name of the userdata that owns the state's lazy reader's data.
const LAZY_ANCHOR: &std::ffi::CStr = c"luahttpd.lua_raw.lazy_reader";

/// Makes `f` the state's [`LazyReader`], with `target` as its data (the `ud` it gets) and
/// `keep` held alive for as long as it is installed (the tables whose addresses it
/// compares, so that no other table can take their address). Replaces the reader set
/// before. The data lives in a userdata in the registry; its `__gc` uninstalls the reader
/// first when it is still this one (during the state's close, finalizers that run after it
/// then read the tables through their `__index`). `fields`, if given, picks the
/// [`LazyFields`] inside the data that the VM answers before calling `f`; their names must be
/// held by something in `keep`, so that they stay the interned strings of those names.
pub fn set_lazy_reader<T: 'static>(
    lua: &Lua,
    f: LazyReader,
    target: Rc<T>,
    fields: Option<fn(&T) -> *const LazyFields>,
    keep: &[&Table],
) -> mlua::Result<()> {
    let fields: *const LazyFields = fields.map_or(std::ptr::null(), |pick| pick(&target));
    let raw = Rc::into_raw(target);
    let n = keep.len() as c_int;
    let keep: Vec<Table> = keep.iter().map(|t| (*t).clone()).collect();
    // SAFETY: runs in mlua's protected call on the main state with the `keep` tables pushed
    // as its arguments (an allocation error before the userdata exists leaks `raw`'s count,
    // harmlessly). Stack: the n tables, +1 the userdata, +1 its metatable, ±0 the field,
    // -1 setmetatable, then each table set as a user value (+1 -1), the registry store pops
    // the userdata, and the n arguments are popped: nothing left, the `()` asked for. The
    // reader is installed after the userdata holds the count, so its data (and `fields`, a
    // part of it) outlives it.
    unsafe {
        lua.exec_raw::<()>(
            mlua::MultiValue::from_iter(keep.into_iter().map(mlua::Value::Table)),
            |l| {
                let p = ffi::lua_newuserdatauv(l, std::mem::size_of::<*const T>(), n)
                    .cast::<*const T>();
                p.write(raw);
                ffi::lua_createtable(l, 0, 1);
                ffi::lua_pushcfunction(l, lazy_gc_fn::<T>);
                ffi::lua_setfield(l, -2, c"__gc".as_ptr());
                ffi::lua_setmetatable(l, -2);
                for i in 1..=n {
                    ffi::lua_pushvalue(l, i);
                    ffi::lua_setiuservalue(l, -2, i);
                }
                ffi::lua_setfield(l, ffi::LUA_REGISTRYINDEX, LAZY_ANCHOR.as_ptr());
                luahttpd_setlazy(l, Some(f), raw.cast_mut().cast::<c_void>(), fields);
                ffi::lua_settop(l, 0);
            },
        )
    }
}

/// `__gc` of [`set_lazy_reader`]'s userdata: uninstalls the reader when its data is this
/// userdata's, then gives back the strong count.
///
/// # Safety
/// Only as the `__gc` of that userdata, whose metatable Lua code cannot reach.
unsafe extern "C-unwind" fn lazy_gc_fn<T>(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: Lua calls `__gc` with the userdata made by `set_lazy_reader::<T>`, which holds
    // a pointer from `Rc::into_raw`, or null once taken.
    unsafe {
        let p = ffi::lua_touserdata(l, 1).cast::<*const T>();
        if !p.is_null() && !(*p).is_null() {
            if luahttpd_lazyud(l) == (*p).cast_mut().cast::<c_void>() {
                luahttpd_setlazy(l, None, std::ptr::null_mut(), std::ptr::null());
            }
            drop(Rc::from_raw(*p));
            *p = std::ptr::null();
        }
    }
    0
}

/// Pushes `s` through slot `slot` of the table `cache` (from `lua_topointer`, alive): the
/// string kept in that slot when its bytes are `s`, else a new one, then kept there. Spares
/// interning (hashing and looking up) a string that is mostly the one pushed last time.
///
/// # Safety
/// As [`push`] (one free slot); `cache` points to a live table, and `slot` is in its array
/// part (else the string is pushed but not kept).
pub unsafe fn push_cached(
    l: *mut ffi::lua_State,
    cache: *const c_void,
    slot: ffi::lua_Integer,
    s: &[u8],
) {
    // SAFETY: per the contract.
    unsafe { luahttpd_pushcached(l, cache, slot, s.as_ptr().cast::<c_char>(), s.len()) }
}

/// One argument of a C function as [`args`] reads it: its type and, for a number, a string
/// or a boolean, its value (`luahttpd_Arg` of the vendored `lua.h`, field for field).
#[repr(C)]
pub struct Arg {
    kind: c_int,
    isint: c_int,
    i: ffi::lua_Integer,
    n: ffi::lua_Number,
    s: *const c_char,
    len: usize,
}

impl Arg {
    /// `ffi::LUA_T…`; `LUA_TNONE` for an argument past the last.
    pub fn kind(&self) -> c_int {
        self.kind
    }

    /// Nil or absent.
    pub fn is_nil(&self) -> bool {
        self.kind <= ffi::LUA_TNIL
    }

    /// An integer number's value (a float is not converted).
    pub fn integer(&self) -> Option<ffi::lua_Integer> {
        (self.isint != 0).then_some(self.i)
    }

    /// A number's value, an integer's as a float.
    pub fn number(&self) -> Option<ffi::lua_Number> {
        (self.kind == ffi::LUA_TNUMBER).then_some(self.n)
    }

    /// A boolean's truth (false for anything else).
    pub fn boolean(&self) -> bool {
        self.kind == ffi::LUA_TBOOLEAN && self.i != 0
    }

    /// A string's bytes (a number is not converted).
    ///
    /// # Safety
    /// The slice is used only while the argument is on the stack (Lua keeps its bytes).
    pub unsafe fn bytes<'a>(&self) -> Option<&'a [u8]> {
        // SAFETY: per the contract; `s` and `len` are a Lua string's, set only for a string.
        (self.kind == ffi::LUA_TSTRING)
            .then(|| unsafe { std::slice::from_raw_parts(self.s.cast::<u8>(), self.len) })
    }

    /// The type's name for messages ("nil" for an absent argument).
    ///
    /// # Safety
    /// `l` is a running state.
    pub unsafe fn type_name<'a>(&self, l: *mut ffi::lua_State) -> &'a [u8] {
        type_name_of(l, self.kind)
    }
}

/// The name of the type `kind` (`ffi::LUA_T…`; "nil" for `LUA_TNONE`), for messages.
///
/// # Safety
/// `l` is a running state.
pub unsafe fn type_name_of<'a>(l: *mut ffi::lua_State, kind: c_int) -> &'a [u8] {
    if kind == ffi::LUA_TNONE {
        return b"nil";
    }
    // SAFETY: per the contract; Lua's type names are static C strings.
    unsafe { std::ffi::CStr::from_ptr(ffi::lua_typename(l, kind)).to_bytes() }
}

/// Arguments `from` .. `from + N - 1` of the running C function, read in one call: about 30
/// instructions an argument, where a `lua_type` and a conversion cost about 55.
///
/// # Safety
/// `l` is running a C function; `from` is positive.
pub unsafe fn args<const N: usize>(l: *mut ffi::lua_State, from: c_int) -> [Arg; N] {
    let mut out = std::mem::MaybeUninit::<[Arg; N]>::uninit();
    // SAFETY: `luahttpd_args` writes every field of the `N` entries (absent arguments as
    // LUA_TNONE), which makes the array initialised; it reads the stack and never raises.
    unsafe {
        luahttpd_args(l, from, N as c_int, out.as_mut_ptr().cast::<Arg>());
        out.assume_init()
    }
}

/// Why [`method_args`] refused a call.
pub enum NotAMethodCall {
    /// Argument 1 is not the table the methods were set on: called with `.`, not `:`.
    NoSelf,
    /// The handle's target was already given back (only from a finalizer during close).
    Closed,
}

/// For a method set by [`set_methods`]: its `Rc` target and arguments 2 ..= N + 1, after
/// checking that argument 1 is the method's own table, in one call into Lua (a `lua_rawequal`
/// and a `lua_touserdata` of the upvalues cost about 110 instructions more).
///
/// # Safety
/// `l` is running a C function made by [`set_methods::<T>`]; the reference and the arguments'
/// bytes are not used after it returns.
pub unsafe fn method_args<'a, T, const N: usize>(
    l: *mut ffi::lua_State,
) -> Result<(&'a T, [Arg; N]), NotAMethodCall> {
    let mut out = std::mem::MaybeUninit::<[Arg; N]>::uninit();
    // SAFETY: as in `args`; upvalue 1 of such a function is the handle `push_handle` made (one
    // pointer, holding a strong count until its `__gc`, which cannot run while the function,
    // which references it, runs).
    unsafe {
        let h = luahttpd_method(l, N as c_int, out.as_mut_ptr().cast::<Arg>()).cast::<*const T>();
        if h.is_null() {
            return Err(NotAMethodCall::NoSelf);
        }
        if (*h).is_null() {
            return Err(NotAMethodCall::Closed);
        }
        Ok((&**h, out.assume_init()))
    }
}

/// Makes `t` refuse every store from now on: an assignment, to a present key or a new one,
/// calls its metatable's `__newindex` (so a read-only table is given one that raises), and a
/// raw set or a new metatable raises. Reads are plain table reads, with no `__index` hop: the
/// sandbox's globals, its library tables and `shared` hold their data in themselves.
///
/// Rust code must not `raw_set` such a table: mlua calls `lua_rawset` outside a protected
/// call when the state has no memory limit, and the refusal would then abort the process.
pub fn set_readonly(lua: &Lua, t: &Table) -> mlua::Result<()> {
    // SAFETY: runs in mlua's protected call with one argument pushed, the table, which the
    // flag's setter reads at -1 (it cannot raise); popping it leaves nothing, the `()` asked.
    unsafe {
        lua.exec_raw::<()>(t, |l| {
            luahttpd_setreadonly(l, -1);
            ffi::lua_pop(l, 1);
        })
    }
}

/// Pushes a userdata holding `raw` (from `Rc::into_raw`), whose metatable's `__gc` is
/// [`gc_fn`]: the handle [`upvalue`] reads.
///
/// # Safety
/// `l` is a running state with three free slots, in a protected call (an allocation error
/// before the userdata exists leaks `raw`'s count, harmlessly); the userdata is exactly one
/// pointer, written before anything else can see it.
unsafe fn push_handle<T>(l: *mut ffi::lua_State, raw: *const T) {
    // SAFETY: per the contract. Stack: +1 userdata, +1 table, ±0 setfield, -1 setmetatable.
    unsafe {
        let p = ffi::lua_newuserdatauv(l, std::mem::size_of::<*const T>(), 0).cast::<*const T>();
        p.write(raw);
        ffi::lua_createtable(l, 0, 1);
        ffi::lua_pushcfunction(l, gc_fn::<T>);
        ffi::lua_setfield(l, -2, c"__gc".as_ptr());
        ffi::lua_setmetatable(l, -2);
    }
}

/// A C closure of `f` with two upvalues: a userdata holding a strong count on `rc` (given back
/// by its `__gc`; read it with [`upvalue`]) and `second`.
pub fn closure<T: 'static>(
    lua: &Lua,
    rc: Rc<T>,
    f: ffi::lua_CFunction,
    second: impl mlua::IntoLua,
) -> mlua::Result<Function> {
    let raw = Rc::into_raw(rc);
    // SAFETY: runs in mlua's protected call on the main state, as `push_handle` asks. Stack:
    // `second` (the argument mlua pushed), +1 the handle, rotated below it, then the closure
    // takes both: one value left, the function.
    unsafe {
        lua.exec_raw::<Function>(second, |l| {
            push_handle(l, raw);
            ffi::lua_rotate(l, -2, 1);
            ffi::lua_pushcclosure(l, f, 2);
        })
    }
}

/// Hands the running C function's whole call (its `n` arguments) to the function that is its
/// upvalue 2 and returns what that returns: a fast path's way out to the version it stands in
/// for, which then raises its own errors.
///
/// # Safety
/// `l` is running a C closure whose upvalue 2 is a function, with its `n` arguments as its
/// whole stack and a free slot; nothing with a destructor is alive in the caller's frames.
pub unsafe fn call_upvalue_2(l: *mut ffi::lua_State, n: c_int) -> c_int {
    // SAFETY: per the contract: the function is pushed and moved below the arguments, and
    // the call leaves only its results on the stack.
    unsafe {
        ffi::lua_pushvalue(l, ffi::lua_upvalueindex(2));
        ffi::lua_rotate(l, 1, 1);
        ffi::lua_callk(l, n, ffi::LUA_MULTRET, 0, None);
        ffi::lua_gettop(l)
    }
}

/// Sets each of `methods` into `table` by name: C closures as [`closure`] makes them, with
/// `table` itself as the second upvalue, all over one handle (one strong count on `rc`). The
/// stores are raw, so `table` may already have a metatable, but must not be read-only yet.
pub fn set_methods<T: 'static>(
    lua: &Lua,
    rc: Rc<T>,
    table: &Table,
    methods: &[(&str, ffi::lua_CFunction)],
) -> mlua::Result<()> {
    let raw = Rc::into_raw(rc);
    // SAFETY: runs in mlua's protected call on the main state, as `push_handle` asks. Stack:
    // the table (the argument mlua pushed), +1 the handle; per method +1 the name, +1 the
    // handle, +1 the table, -1 the closure taking both, -2 the raw set; then both popped,
    // which leaves nothing, the `()` asked for.
    unsafe {
        lua.exec_raw::<()>(table, |l| {
            push_handle(l, raw);
            for (name, f) in methods {
                push(l, name.as_bytes());
                ffi::lua_pushvalue(l, -2);
                ffi::lua_pushvalue(l, -4);
                ffi::lua_pushcclosure(l, *f, 2);
                ffi::lua_rawset(l, -4);
            }
            ffi::lua_pop(l, 2);
        })
    }
}

/// `__gc` of a userdata holding one pointer from `Rc::into_raw` (or null): gives back that
/// strong count (upvalue 1 of a [`closure`]).
///
/// # Safety
/// Only as the `__gc` of such a userdata, whose metatable Lua code cannot reach.
unsafe extern "C-unwind" fn gc_fn<T>(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: Lua calls `__gc` with the userdata made by `closure::<T>` (its metatable is not
    // reachable from Lua code), which holds a pointer from `Rc::into_raw`, or null once taken.
    unsafe {
        let p = ffi::lua_touserdata(l, 1).cast::<*const T>();
        if !p.is_null() && !(*p).is_null() {
            drop(Rc::from_raw(*p));
            *p = std::ptr::null();
        }
    }
    0
}

/// The `Rc` target held by upvalue 1 of a [`closure`] (None if it was already collected).
///
/// # Safety
/// `l` is running a C function made by [`closure::<T>`], and the reference is not used after
/// it returns.
pub unsafe fn upvalue<'a, T>(l: *mut ffi::lua_State) -> Option<&'a T> {
    // SAFETY: upvalue 1 is the userdata of `closure`, whose pointer holds a strong count
    // until its `__gc`, which cannot run while the closure, which references it, runs.
    unsafe {
        let p = ffi::lua_touserdata(l, ffi::lua_upvalueindex(1)).cast::<*const T>();
        if p.is_null() || (*p).is_null() {
            return None;
        }
        Some(&**p)
    }
}

/// The bytes of the string (or number, converted in place) at stack index `i`; None for any
/// other value.
///
/// # Safety
/// `l` is running a C function; the slice is used only while the value is on the stack.
pub unsafe fn to_bytes<'a>(l: *mut ffi::lua_State, i: c_int) -> Option<&'a [u8]> {
    // SAFETY: per the contract; Lua keeps the string's bytes while it is on the stack.
    unsafe {
        let mut len = 0usize;
        let p = ffi::lua_tolstring(l, i, &mut len);
        (!p.is_null()).then(|| std::slice::from_raw_parts(p.cast::<u8>(), len))
    }
}

/// Pushes `s` as a Lua string (may raise a memory error).
///
/// # Safety
/// `l` is a running state with a free stack slot (a C function has LUA_MINSTACK).
pub unsafe fn push(l: *mut ffi::lua_State, s: &[u8]) {
    // SAFETY: per the contract; Lua copies the bytes.
    unsafe {
        ffi::lua_pushlstring(l, s.as_ptr().cast::<c_char>(), s.len());
    }
}

/// Pushes an owned buffer, freed after the push (see the module doc).
///
/// # Safety
/// As [`push`].
pub unsafe fn push_owned(l: *mut ffi::lua_State, v: Vec<u8>) {
    let v = ManuallyDrop::new(v);
    // SAFETY: per the contract.
    unsafe { push(l, &v) };
    drop(ManuallyDrop::into_inner(v));
}

/// Raises the concatenation of `parts` as a Lua error with the caller's position in front
/// ("site.lua:7: …"), like `luaL_error`, without building the message in a Rust buffer.
///
/// # Safety
/// `l` is running a C function with `parts.len() + 1` free stack slots (a C function has
/// LUA_MINSTACK, 20); nothing with a destructor is alive in the caller's frames; the parts are
/// copied before the error unwinds.
pub unsafe fn raise(l: *mut ffi::lua_State, parts: &[&[u8]]) -> ! {
    // SAFETY: per the contract; the concatenation leaves one value, the message.
    unsafe {
        ffi::luaL_where(l, 1);
        for p in parts {
            push(l, p);
        }
        ffi::lua_concat(l, parts.len() as c_int + 1);
        ffi::lua_error(l)
    }
}

#[cfg(test)]
mod tests {
    use super::{args, set_lazy_reader, set_readonly};
    use mlua::{ffi, Lua};
    use std::cell::{Cell, RefCell};
    use std::ffi::{c_char, c_int, c_void};
    use std::rc::Rc;

    thread_local! {
        /// The [`Probe`]s alive on this test's thread, by address.
        static LIVE: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
        /// Calls of [`probe_reader`] with a probe that no longer exists.
        static STALE: Cell<u32> = const { Cell::new(0) };
    }

    /// A lazy reader's data: it answers `answer` for any string key `table` lacks.
    struct Probe {
        answer: &'static [u8],
        table: *const c_void,
    }

    impl Drop for Probe {
        fn drop(&mut self) {
            let me = self as *const Probe as usize;
            LIVE.with_borrow_mut(|l| l.retain(|&p| p != me));
        }
    }

    unsafe extern "C-unwind" fn probe_reader(
        ud: *mut c_void,
        l: *mut ffi::lua_State,
        table: *const c_void,
        _key: *const c_char,
        _len: usize,
    ) -> c_int {
        if !LIVE.with_borrow(|live| live.contains(&(ud as usize))) {
            STALE.set(STALE.get() + 1);
            return 0;
        }
        // SAFETY: a live probe (checked above); one free slot, as a lazy reader has.
        unsafe {
            let p = &*ud.cast::<Probe>();
            if table != p.table {
                return 0;
            }
            super::push(l, p.answer);
        }
        1
    }

    /// A read-only table whose `__index` answers "index".
    fn lazy_table(lua: &Lua) -> mlua::Table {
        let t: mlua::Table = lua
            .load("return setmetatable({}, { __index = function() return 'index' end })")
            .eval()
            .unwrap();
        set_readonly(lua, &t).unwrap();
        t
    }

    fn install(lua: &Lua, answer: &'static [u8], t: &mlua::Table) {
        let p = Rc::new(Probe {
            answer,
            table: t.to_pointer(),
        });
        LIVE.with_borrow_mut(|l| l.push(Rc::as_ptr(&p) as usize));
        set_lazy_reader(lua, probe_reader, p, None, &[t]).unwrap();
    }

    /// The reader answers for its table only; a new one replaces it, and the old one's
    /// finalizer leaves the new one installed; at close, finalizers that run after the
    /// reader's own never reach its freed data.
    #[test]
    fn a_lazy_reader_answers_until_replaced_and_never_after_it_is_freed() {
        let lua = Lua::new();
        lua.set_memory_limit(1 << 30).unwrap();
        let a = lazy_table(&lua);
        install(&lua, b"A", &a);
        assert_eq!(a.get::<String>("x").unwrap(), "A");
        let plain: mlua::Table = lua.load("return {}").eval().unwrap();
        assert!(plain.get::<Option<String>>("x").unwrap().is_none());
        let b = lazy_table(&lua);
        // Made before B's reader, so finalized after it when the state closes.
        lua.load("local t = ... kept = setmetatable({}, { __gc = function() local _ = t.x end })")
            .call::<()>(&b)
            .unwrap();
        install(&lua, b"B", &b);
        assert_eq!(a.get::<String>("x").unwrap(), "index");
        assert_eq!(b.get::<String>("x").unwrap(), "B");
        lua.gc_collect().unwrap();
        lua.gc_collect().unwrap();
        assert_eq!(LIVE.with_borrow(|l| l.len()), 1, "A's probe was freed");
        assert_eq!(b.get::<String>("x").unwrap(), "B");
        drop((a, b, plain));
        drop(lua);
        assert_eq!(LIVE.with_borrow(|l| l.len()), 0);
        assert_eq!(STALE.get(), 0, "a finalizer reached a freed reader");
    }

    /// Describes arguments 1..=8 as `args` reads them, one word each.
    unsafe extern "C-unwind" fn describe(l: *mut ffi::lua_State) -> c_int {
        // SAFETY: Lua calls it as a C function; the slices are read while the arguments are on
        // the stack, and the description is pushed as one string after they are no longer used.
        unsafe {
            let mut out = String::new();
            for a in args::<8>(l, 1) {
                let word = match (a.integer(), a.number(), a.bytes()) {
                    (Some(i), _, _) => format!("int:{i}"),
                    (None, Some(f), _) => format!("float:{f}"),
                    (_, _, Some(b)) => format!("str:{}", String::from_utf8_lossy(b)),
                    _ if a.kind() == ffi::LUA_TBOOLEAN => format!("bool:{}", a.boolean()),
                    _ => format!(
                        "{}{}",
                        String::from_utf8_lossy(a.type_name(l)),
                        if a.is_nil() { "!" } else { "" }
                    ),
                };
                out.push_str(&word);
                out.push(' ');
            }
            let out = std::mem::ManuallyDrop::new(out);
            super::push(l, out.trim_end().as_bytes());
            drop(std::mem::ManuallyDrop::into_inner(out));
        }
        1
    }

    /// `args` reads each kind of value as it is (no conversion) and an absent one as nil.
    #[test]
    fn args_reads_every_kind_without_converting() {
        let lua = Lua::new();
        // SAFETY: `describe` follows the rules of this module.
        let f = unsafe { lua.create_c_function(describe) }.unwrap();
        lua.globals().set("describe", f).unwrap();
        let got: String = lua
            .load("return describe(7, 2.5, '10', true, false, nil, {})")
            .eval()
            .unwrap();
        assert_eq!(
            got,
            "int:7 float:2.5 str:10 bool:true bool:false nil! table nil!"
        );
        let got: String = lua
            .load("return describe('a\\0b', 2^63, -0.0)")
            .eval()
            .unwrap();
        assert!(
            got.starts_with("str:a\u{0}b float:9223372036854776000 float:-0 nil!"),
            "{got}"
        );
    }

    /// A read-only table keeps its data for reads and refuses every kind of store.
    #[test]
    fn a_read_only_table_refuses_every_store() {
        let lua = Lua::new();
        // mlua runs a raw set unprotected when no memory limit is set (see `set_readonly`).
        lua.set_memory_limit(1 << 30).unwrap();
        let t = lua.create_table().unwrap();
        t.raw_set("a", 1).unwrap();
        let mt = lua
            .load("return { __newindex = function(_, k) error('no ' .. tostring(k)) end }")
            .eval::<mlua::Table>()
            .unwrap();
        t.set_metatable(Some(mt));
        set_readonly(&lua, &t).unwrap();
        assert_eq!(t.get::<i64>("a").unwrap(), 1);
        let e = t.raw_set("a", 2).unwrap_err().to_string();
        assert!(e.contains("read-only table"), "{e}");
        assert!(t.raw_set(1, 2).is_err());
        assert!(t.raw_seti(1, 2).is_err());
        let e = t.set("a", 2).unwrap_err().to_string();
        assert!(e.contains("no a"), "{e}");
        let f = lua
            .load("return function(t) t.b = 1 end")
            .eval::<mlua::Function>()
            .unwrap();
        let e = f.call::<()>(&t).unwrap_err().to_string();
        assert!(e.contains("no b"), "{e}");
        assert!(lua.load("local t = ... t[1] = 1").call::<()>(&t).is_err());
        assert!(lua
            .load("local t = ... setmetatable(t, nil)")
            .call::<()>(&t)
            .is_err());
        assert_eq!(t.raw_get::<i64>("a").unwrap(), 1);
        assert!(t.raw_get::<Option<i64>>("b").unwrap().is_none());
    }
}
