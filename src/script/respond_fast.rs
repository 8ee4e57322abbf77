//! `respond(status, body)` without mlua's callback, for the common call: an integer status, a
//! string body or none, no headers. Its decision is a small userdata of its own (the status;
//! the body, a Lua string, as its user value) with no finalizer, so making one is a few API
//! calls and dropping it is free, where an mlua decision cost about 5,000 instructions made,
//! converted back and finalized. Any other call, and any call that is an error, is handed
//! whole to the mlua `respond`, which raises with the caller's position as before.

use std::ffi::{c_int, c_void};

use mlua::{ffi, Function, Lua, Table};

use super::decision::Decision;
use crate::lua_raw;

/// Registry name of the metatable of a fast `respond` decision (made once per state).
const METATABLE: &str = "luahttpd.script.respond_fast";

/// What a fast decision's userdata block holds.
#[repr(C)]
struct Block {
    status: u16,
}

/// Replaces `constructors.respond` (the mlua version) with the fast path over it.
pub(super) fn install(lua: &Lua, constructors: &Table) -> mlua::Result<()> {
    let slow: Function = constructors.raw_get("respond")?;
    let mt = metatable(lua)?;
    // SAFETY: runs in mlua's protected call with the metatable and the slow function pushed
    // as its arguments; the closure takes both as upvalues 1 and 2: one value left.
    let fast = unsafe {
        lua.exec_raw::<Function>((mt, slow), |l| {
            ffi::lua_pushcclosure(l, respond_fn, 2);
        })
    }?;
    constructors.raw_set("respond", fast)
}

/// The state's metatable of fast decisions: `__tostring` as an mlua decision's, and hidden
/// from `getmetatable`.
fn metatable(lua: &Lua) -> mlua::Result<Table> {
    if let Ok(Some(t)) = lua.named_registry_value::<Option<Table>>(METATABLE) {
        return Ok(t);
    }
    let t = lua.create_table()?;
    t.raw_set(
        "__tostring",
        lua.create_function(|_, ()| Ok("decision: respond"))?,
    )?;
    t.raw_set("__metatable", false)?;
    lua.set_named_registry_value(METATABLE, &t)?;
    Ok(t)
}

/// The address of the state's fast-decision metatable (what [`at`] compares), once made.
pub(super) fn metatable_pointer(lua: &Lua) -> *const c_void {
    match lua.named_registry_value::<Option<Table>>(METATABLE) {
        Ok(Some(t)) => t.to_pointer(),
        _ => std::ptr::null(),
    }
}

/// The decision at index `idx` of `l`'s stack when it is a fast one (`mt` from
/// [`metatable_pointer`]), else None. Raises nothing and leaves the stack as it was.
///
/// # Safety
/// `l` is a valid state (not running a C function's API call) and `idx` a valid index.
pub(super) unsafe fn at(l: *mut ffi::lua_State, idx: c_int, mt: *const c_void) -> Option<Decision> {
    // SAFETY: per the contract; reads only (a metatable, a user value), each popped again,
    // after room for them is made (lua_checkstack does not raise: it answers 0).
    unsafe {
        if mt.is_null() || ffi::lua_type(l, idx) != ffi::LUA_TUSERDATA {
            return None;
        }
        if ffi::lua_checkstack(l, 2) == 0 {
            return None;
        }
        let idx = ffi::lua_absindex(l, idx);
        if ffi::lua_getmetatable(l, idx) == 0 {
            return None;
        }
        let ours = ffi::lua_topointer(l, -1) == mt;
        ffi::lua_settop(l, -2);
        if !ours {
            return None;
        }
        let status = (*ffi::lua_touserdata(l, idx).cast::<Block>()).status;
        ffi::lua_getiuservalue(l, idx, 1);
        let body = lua_raw::to_bytes(l, -1)
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        ffi::lua_settop(l, -2);
        Some(Decision::Respond {
            status,
            body,
            headers: Vec::new(),
        })
    }
}

/// The decision `v` holds when it is a fast one (for [`super::decision::decision_of`]).
pub(super) fn of(lua: &Lua, v: &mlua::AnyUserData) -> Option<Decision> {
    let mt = metatable_pointer(lua);
    let mut found = None;
    // SAFETY: runs in mlua's protected call with the userdata pushed as its argument (index
    // 1), which `at` reads and leaves; mlua drops it.
    let ran = unsafe { lua.exec_raw::<()>(v, |l| found = at(l, 1, mt)) };
    ran.ok().and(found)
}

unsafe extern "C-unwind" fn respond_fn(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: called by Lua as the closure `install` made (upvalue 1: the metatable, 2: the
    // mlua `respond`). Nothing with a destructor is alive when an API call raises (a memory
    // error in the userdata's allocation); each push has a free slot (LUA_MINSTACK).
    unsafe {
        let n = ffi::lua_gettop(l);
        let [status, body, headers] = lua_raw::args::<3>(l, 1);
        let status = status
            .integer()
            .and_then(|s| u16::try_from(s).ok())
            .filter(|s| (200..=599).contains(s));
        let body_len = match body.kind() {
            ffi::LUA_TNIL | ffi::LUA_TNONE => Some(0),
            ffi::LUA_TSTRING => body.bytes().map(<[u8]>::len),
            _ => None,
        };
        let plain = n <= 3 && matches!(headers.kind(), ffi::LUA_TNIL | ffi::LUA_TNONE);
        match (status, body_len) {
            (Some(s), Some(len)) if plain && !(len > 0 && matches!(s, 204 | 304)) => {
                let block = ffi::lua_newuserdatauv(l, std::mem::size_of::<Block>(), 1);
                block.cast::<Block>().write(Block { status: s });
                if len > 0 {
                    ffi::lua_pushvalue(l, 2);
                    ffi::lua_setiuservalue(l, -2, 1);
                }
                ffi::lua_pushvalue(l, ffi::lua_upvalueindex(1));
                ffi::lua_setmetatable(l, -2);
                1
            }
            _ => lua_raw::call_upvalue_2(l, n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{call, request, route_request, router};
    use super::super::{Decision, Outcome, Router};

    /// The decision of one call, through mlua's call (`Router::route`, which reads a fast
    /// decision with `of`) and through the route coroutine (`start_route`, which reads it with
    /// `at`): both must agree.
    fn both(r: &mut Router) -> Decision {
        let via_mlua = call(r).unwrap();
        let req = request("GET /index.html HTTP/1.1\r\nHost: example.com\r\n\r\n");
        let Outcome::Done(Ok(via_coroutine)) = r.start_route(&route_request(&req)) else {
            panic!("the route did not finish with a decision");
        };
        assert_eq!(via_mlua, via_coroutine);
        via_mlua
    }

    fn respond(status: u16, body: &str, headers: &[(&str, &str)]) -> Decision {
        Decision::Respond {
            status,
            body: body.as_bytes().to_vec(),
            headers: super::super::tests::hdrs(headers),
        }
    }

    /// Fast calls and the ones left to the mlua `respond` make the same decisions.
    #[test]
    fn every_form_of_respond_makes_the_same_decision() {
        let cases = [
            ("respond(200, 'api')", respond(200, "api", &[])),
            ("respond(404)", respond(404, "", &[])),
            ("respond(204)", respond(204, "", &[])),
            ("respond(304, '')", respond(304, "", &[])),
            ("respond(200, '')", respond(200, "", &[])),
            ("respond(599, nil, nil)", respond(599, "", &[])),
            ("respond(201, 42)", respond(201, "42", &[])),
            (
                "respond(200, 'x', { ['X-A'] = '1' })",
                respond(200, "x", &[("X-A", "1")]),
            ),
            (
                "respond(200, ('y'):rep(3000))",
                respond(200, &"y".repeat(3000), &[]),
            ),
        ];
        for (call, want) in cases {
            let mut r = router(&format!("route(function(req) return {call} end)"));
            for _ in 0..3 {
                assert_eq!(both(&mut r), want, "{call}");
            }
        }
    }

    /// A decision made at config time is a fast one too, and every request gets it whole.
    #[test]
    fn a_decision_made_once_serves_every_request() {
        let mut r = router(
            "local OK = respond(200, 'made once')\n\
             route(function(req) return OK end)",
        );
        for _ in 0..5 {
            assert_eq!(both(&mut r), respond(200, "made once", &[]));
        }
        let mut r = router(
            "route(function(req) return respond(200, tostring(respond(200, 'x')) .. ' ' \
             .. tostring(getmetatable(respond(201)))) end)",
        );
        assert_eq!(both(&mut r), respond(200, "decision: respond false", &[]));
    }
}
