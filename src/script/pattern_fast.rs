//! `string.find` in route code without mlua's callback cost, for the common call: a string
//! subject, a string pattern without captures, maybe a start index. It runs the same metered
//! matcher (`pattern`) as a raw C function; any other call, and any call that fails (a
//! malformed pattern, a limit), is handed whole to the mlua version, which raises the error
//! exactly as before (a failing call is repeated, which only matters to the call that fails).

use std::ffi::c_int;
use std::rc::Rc;

use mlua::{ffi, Function, Lua, Table};

use super::limits::Budget;
use super::pattern::{find_plain, start_index, Matcher, SPECIALS};
use super::req_raw;

/// Replaces `metered.find` (the mlua version) with the fast path over it.
pub(super) fn install(lua: &Lua, metered: &Table, budget: Rc<Budget>) -> mlua::Result<()> {
    let slow: Function = metered.raw_get("find")?;
    let fast = req_raw::closure(lua, budget, find_fn, slow)?;
    metered.raw_set("find", fast)
}

/// What a fast `find` found.
enum Found {
    At(usize, usize),
    Nothing,
    /// Not for the fast path, or it failed: ask the mlua version.
    Slow,
}

/// `find(src, pat, init)` for a pattern without captures, as `pattern::find_aux` does it.
fn find(src: &[u8], pat: &[u8], init: Option<i64>, budget: &Budget) -> Found {
    let init = start_index(init, src.len());
    if init > src.len() {
        return Found::Nothing;
    }
    let meter = |n| budget.charge(n);
    if !pat.iter().any(|c| SPECIALS.contains(c)) {
        if meter((src.len() - init) as u64 / 16).is_err() {
            return Found::Slow;
        }
        return match find_plain(&src[init..], pat) {
            Some(i) => Found::At(init + i + 1, init + i + pat.len()),
            None => Found::Nothing,
        };
    }
    if pat.contains(&b'(') {
        return Found::Slow;
    }
    let anchor = pat.first() == Some(&b'^');
    let pstart = usize::from(anchor);
    let mut m = Matcher::new(src, pat, &meter);
    let mut s1 = init;
    loop {
        match m.try_at(s1, pstart) {
            Ok(Some(e)) => {
                return match m.settle() {
                    Ok(()) => Found::At(s1 + 1, e),
                    Err(_) => Found::Slow,
                }
            }
            Ok(None) => {}
            Err(_) => return Found::Slow,
        }
        s1 += 1;
        if anchor || s1 > src.len() {
            break;
        }
    }
    match m.settle() {
        Ok(()) => Found::Nothing,
        Err(_) => Found::Slow,
    }
}

/// Argument `i` as bytes if it is a string (not a number).
///
/// # Safety
/// `l` is running a C function; the slice is used only while the argument is on the stack.
unsafe fn bytes<'a>(l: *mut ffi::lua_State, i: c_int) -> Option<&'a [u8]> {
    // SAFETY: per the contract.
    unsafe {
        if ffi::lua_type(l, i) != ffi::LUA_TSTRING {
            return None;
        }
        let mut len = 0usize;
        let p = ffi::lua_tolstring(l, i, &mut len);
        (!p.is_null()).then(|| std::slice::from_raw_parts(p.cast::<u8>(), len))
    }
}

unsafe extern "C-unwind" fn find_fn(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: called by Lua as the closure `install` made (upvalue 1: the budget, 2: the mlua
    // `find`). `find` returns a plain value (its matcher is dropped inside it), so nothing
    // with a destructor is alive when a push or the slow call raises. The pushes have room
    // (LUA_MINSTACK free slots above the arguments).
    unsafe {
        let n = ffi::lua_gettop(l);
        let init = match n {
            2 => Some(None),
            3 if ffi::lua_isinteger(l, 3) != 0 => Some(Some(ffi::lua_tointeger(l, 3))),
            _ => None,
        };
        let found = match (
            init,
            bytes(l, 1),
            bytes(l, 2),
            req_raw::upvalue::<Budget>(l),
        ) {
            (Some(init), Some(src), Some(pat), Some(budget)) => find(src, pat, init, budget),
            _ => Found::Slow,
        };
        match found {
            Found::At(s, e) => {
                ffi::lua_pushinteger(l, s as ffi::lua_Integer);
                ffi::lua_pushinteger(l, e as ffi::lua_Integer);
                2
            }
            Found::Nothing => {
                ffi::lua_pushnil(l);
                1
            }
            Found::Slow => {
                ffi::lua_pushvalue(l, ffi::lua_upvalueindex(2));
                ffi::lua_rotate(l, 1, 1);
                ffi::lua_callk(l, n, ffi::LUA_MULTRET, 0, None);
                ffi::lua_gettop(l)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{call, eval, fails_then_recovers, respond_body, BAD};
    use super::super::RouteErrorKind;

    fn run(expr: &str) -> String {
        respond_body(call(&mut eval(expr)).unwrap())
    }

    #[test]
    fn fast_calls_answer_as_lua() {
        let cases = [
            (r#"table.concat({("/api/x"):find("^/api/")}, ",")"#, "1,5"),
            (r#"("/index.html"):find("^/api/")"#, "nil"),
            (
                r#"table.concat({("a.b.c"):find(".", 1, true)}, ",")"#,
                "2,2",
            ),
            (r#"table.concat({("abcabc"):find("b", 3)}, ",")"#, "5,5"),
            (r#"table.concat({("abcabc"):find("c", -2)}, ",")"#, "6,6"),
            (r#"("abc"):find("a", 10)"#, "nil"),
            (r#"table.concat({("abc"):find("")}, ",")"#, "1,0"),
            (r#"table.concat({("x12y"):find("%d+")}, ",")"#, "2,3"),
            (
                r#"table.concat({("key=val"):find("(%w+)=(%w+)")}, ",")"#,
                "1,7,key,val",
            ),
            (r#"table.concat({("x1"):find("()%d")}, ",")"#, "2,2,2"),
            (r#"table.concat({string.find(12345, "3")}, ",")"#, "3,3"),
            (r#"table.concat({("abc"):find("b", 1.0)}, ",")"#, "2,2"),
        ];
        for (expr, want) in cases {
            assert_eq!(run(expr), want, "{expr}");
        }
    }

    #[test]
    fn a_malformed_pattern_fails_as_before() {
        let e = fails_then_recovers(
            r#"return respond(200, tostring(("abc"):find("%")))"#,
            BAD,
            RouteErrorKind::Lua,
        );
        assert!(e.message.contains("malformed pattern"), "{e}");
    }
}
