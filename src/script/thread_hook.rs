//! The budget's count hook as a raw Lua hook, so that every thread of the state carries it.
//!
//! mlua's `set_hook` serves one thread: its hook procedure removes itself from any other thread
//! it runs on. Lua 5.4 copies the running thread's hook into each thread it creates
//! (`lua_newthread`), so with mlua's hook a coroutine made by route code (or by the config, and
//! called from route) lost the hook at its first count event and looped past every limit until
//! the worker's backstop killed the worker. This hook finds the budget through the registry,
//! whatever thread it fires on, and a coroutine inherits it like any Lua hook.
//!
//! [`carry_budget`] installs it on the config state as soon as it exists, so even coroutines
//! the config makes at load time have it; between route calls the budget is inactive and the
//! hook only counts nothing.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::rc::Rc;

use mlua::{ffi, Lua};

use super::limits::{shared, stop_message, Budget, HOOK_EVERY};

/// Its address is the registry key of the budget pointer (a light userdata).
static KEY: u8 = 0;

fn key() -> *const c_void {
    std::ptr::addr_of!(KEY).cast()
}

/// Installs the budget's count hook on `lua`'s main thread (replacing any other hook); every
/// thread created from then on inherits it. Call it early for a state that will route: the
/// config loader does, and [`super::Router::new`] does again.
pub fn carry_budget(lua: &Lua) -> mlua::Result<()> {
    let budget = shared(lua);
    install(lua, &budget)
}

/// Starts a wall-clock limit on what `lua` runs from now (a config file being evaluated for a
/// reload), through the same budget and hook that carry the route limits, so coroutines the
/// file makes are limited too; [`end_evaluation_limit`] ends it. Needs [`carry_budget`] first.
pub fn limit_evaluation(lua: &Lua, limit: std::time::Duration) {
    shared(lua).start(&super::RouterLimits {
        instructions: u64::MAX,
        deadline: limit,
        memory: usize::MAX,
    });
}

/// Ends [`limit_evaluation`]; whether the limit stopped the evaluation.
pub fn end_evaluation_limit(lua: &Lua) -> bool {
    shared(lua).finish().is_some()
}

/// See [`carry_budget`]; `budget` is the state's shared budget.
pub(super) fn install(lua: &Lua, budget: &Rc<Budget>) -> mlua::Result<()> {
    let p = Rc::as_ptr(budget).cast_mut().cast::<c_void>();
    let count = c_int::try_from(HOOK_EVERY).unwrap_or(c_int::MAX);
    // SAFETY: the closure runs on the state's main thread with mlua's stack guard around it;
    // it pushes one value and pops it (rawsetp), and sets a hook function that stays valid for
    // the program's life. The pointer stays valid for as long as the hook can run: it points
    // into the Rc that the state's app data (`SharedBudget`) holds, which mlua drops only after
    // `lua_close`, and nothing removes that app data.
    unsafe {
        lua.exec_raw::<()>((), |l| {
            ffi::lua_pushlightuserdata(l, p);
            ffi::lua_rawsetp(l, ffi::LUA_REGISTRYINDEX, key());
            ffi::lua_sethook(l, Some(count_hook), ffi::LUA_MASKCOUNT, count);
        })
    }
}

/// The count hook: charges [`HOOK_EVERY`] instructions to the budget and raises the stop as a
/// Lua error when a limit is exceeded.
unsafe extern "C-unwind" fn count_hook(l: *mut ffi::lua_State, ar: *mut ffi::lua_Debug) {
    let msg = {
        // SAFETY: Lua guarantees LUA_MINSTACK free slots to a hook; rawgetp on the registry
        // does not raise. The pointer was stored by `install` and is valid (see there).
        let budget = unsafe {
            ffi::lua_rawgetp(l, ffi::LUA_REGISTRYINDEX, key());
            let p = ffi::lua_touserdata(l, -1).cast::<Budget>();
            ffi::lua_pop(l, 1);
            match p.as_ref() {
                Some(b) => b,
                None => return,
            }
        };
        // SAFETY: `ar` is the activation record Lua passed to this hook, valid during it.
        match budget.check(|| unsafe { location(l, ar) }) {
            None => return,
            Some(trip) => stop_message(trip),
        }
    };
    // SAFETY: nothing with a destructor is alive in this frame any more (the block above
    // ended), so the longjmp of lua_error skips no Rust cleanup; raising an error from a count
    // hook is allowed by Lua. `msg` is static.
    unsafe {
        ffi::lua_pushlstring(l, msg.as_ptr().cast::<c_char>(), msg.len());
        ffi::lua_error(l);
    }
}

/// `file:line` of the code running when the hook fired.
///
/// # Safety
/// `l` and `ar` are the arguments of a running hook.
unsafe fn location(l: *mut ffi::lua_State, ar: *mut ffi::lua_Debug) -> Option<String> {
    // SAFETY: per this function's contract; "Sl" only fills fields of `ar`.
    let (line, source, short) = unsafe {
        if ffi::lua_getinfo(l, c"Sl".as_ptr(), ar) == 0 {
            return None;
        }
        let ar = &*ar;
        let source = (!ar.source.is_null())
            .then(|| CStr::from_ptr(ar.source).to_string_lossy().into_owned());
        let short = CStr::from_ptr(ar.short_src.as_ptr())
            .to_string_lossy()
            .into_owned();
        (ar.currentline, source, short)
    };
    let file = source
        .as_deref()
        .and_then(|s| s.strip_prefix('@'))
        .map(str::to_string)
        .or_else(|| (!short.is_empty()).then_some(short))?;
    Some(if line > 0 {
        format!("{file}:{line}")
    } else {
        file
    })
}
