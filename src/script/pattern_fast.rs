//! `string.find` in route code without mlua's callback cost, for the common call: a string
//! subject, a string pattern without captures, maybe a start index. It runs the same metered
//! matcher (`pattern`) as a raw C function; any other call, and any call that fails (a
//! malformed pattern, a limit), is handed whole to the mlua version, which raises the error
//! exactly as before (a failing call is repeated, which only matters to the call that fails).

use std::ffi::c_int;
use std::rc::Rc;

use mlua::{ffi, Function, Lua, Table};

use super::limits::Budget;
use super::pattern::{find_plain, is_special, start_index, Matcher};
use crate::lua_raw;

/// Replaces `metered.find` (the mlua version) with the fast path over it.
pub(super) fn install(lua: &Lua, metered: &Table, budget: Rc<Budget>) -> mlua::Result<()> {
    let slow: Function = metered.raw_get("find")?;
    let fast = lua_raw::closure(lua, budget, find_fn, slow)?;
    metered.raw_set("find", fast)
}

/// What a fast `find` found.
#[derive(Debug, PartialEq, Eq)]
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
    if !pat.iter().any(|&c| is_special(c)) {
        if meter((src.len() - init) as u64 / 16).is_err() {
            return Found::Slow;
        }
        return match find_plain(&src[init..], pat) {
            Some(i) => Found::At(init + i + 1, init + i + pat.len()),
            None => Found::Nothing,
        };
    }
    if let Some(lit) = Literal::of(pat) {
        return lit.find(src, init, budget);
    }
    if pat.contains(&b'(') {
        return Found::Slow;
    }
    find_matched(src, pat, init, budget)
}

/// [`find`] through the matcher (`init` already 0-based and at most `src.len()`).
fn find_matched(src: &[u8], pat: &[u8], init: usize, budget: &Budget) -> Found {
    let meter = |n| budget.charge(n);
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

/// Longest escaped literal [`Literal::of`] decodes (longer ones go to the matcher).
const LITERAL_MAX: usize = 64;

/// A pattern that matches one fixed string: literal bytes and escaped punctuation (`%.`), with
/// an optional `^` in front and `$` at the end, as route code writes a prefix or suffix test
/// (`"^/api/"`, `"%.php$"`). Found by a comparison instead of the matcher, which tries every
/// position of the subject for an unanchored pattern. It is parsed again at every call (route
/// code passes the same constant each time), so parsing copies nothing: an escaped literal is
/// compared through its escapes, and decoded into a buffer only for a search through the
/// subject.
struct Literal<'p> {
    start: bool,
    end: bool,
    /// The pattern's bytes between the anchors, escapes included.
    body: &'p [u8],
    /// Whether `body` has an escape (`%` and the byte it stands for).
    escaped: bool,
    /// The length of the string it stands for.
    len: usize,
}

impl<'p> Literal<'p> {
    /// The literal `pat` stands for; None if any part of it is more than a literal byte.
    fn of(pat: &'p [u8]) -> Option<Literal<'p>> {
        let (start, mut body) = match pat.split_first() {
            Some((b'^', rest)) => (true, rest),
            _ => (false, pat),
        };
        let mut end = false;
        if let Some((b'$', rest)) = body.split_last() {
            // `%$` is a literal dollar, `%%$` a literal percent sign and the anchor.
            let escapes = rest.iter().rev().take_while(|&&c| c == b'%').count();
            if escapes % 2 == 0 {
                end = true;
                body = rest;
            }
        }
        let mut len = 0;
        let mut escaped = false;
        let mut i = 0;
        while i < body.len() {
            let c = body[i];
            if c == b'%' {
                // `%` and a letter or digit is a class (`%d`, `%a`, `%b`, `%f`, `%1`).
                if body.get(i + 1)?.is_ascii_alphanumeric() {
                    return None;
                }
                escaped = true;
                i += 1;
            } else if is_special(c) || c == b')' {
                return None;
            }
            len += 1;
            i += 1;
        }
        if escaped && len > LITERAL_MAX {
            return None;
        }
        Some(Literal {
            start,
            end,
            body,
            escaped,
            len,
        })
    }

    /// Whether `s` (of [`Literal::len`] bytes) is the string the literal stands for.
    fn is(&self, s: &[u8]) -> bool {
        if !self.escaped {
            return s == self.body;
        }
        let mut want = self.body.iter();
        s.iter().all(|&c| {
            let w = match want.next() {
                Some(b'%') => want.next(),
                w => w,
            };
            w == Some(&c)
        })
    }

    /// Where the literal is in `src` from `init` (0-based, at most `src.len()`), charged as
    /// the matcher's steps would be: one per literal byte compared, and for a search through
    /// the subject as much as a plain search.
    fn find(&self, src: &[u8], init: usize, budget: &Budget) -> Found {
        let hay = &src[init..];
        let len = self.len;
        let steps = len as u64 + 1;
        let steps = if self.start {
            steps
        } else {
            steps + hay.len() as u64 / 16
        };
        if budget.charge(steps).is_err() {
            return Found::Slow;
        }
        let at = match (self.start, self.end) {
            (true, true) => (hay.len() == len && self.is(hay)).then_some(0),
            (true, false) => hay.get(..len).is_some_and(|h| self.is(h)).then_some(0),
            (false, true) => hay.len().checked_sub(len).filter(|&i| self.is(&hay[i..])),
            (false, false) if !self.escaped => find_plain(hay, self.body),
            (false, false) => {
                let mut buf = [0u8; LITERAL_MAX];
                let mut n = 0;
                let mut bytes = self.body.iter();
                while let Some(&c) = bytes.next() {
                    let c = if c == b'%' {
                        bytes.next().copied()
                    } else {
                        Some(c)
                    };
                    match (c, buf.get_mut(n)) {
                        (Some(c), Some(slot)) => *slot = c,
                        _ => return Found::Slow,
                    }
                    n += 1;
                }
                find_plain(hay, &buf[..n])
            }
        };
        match at {
            Some(i) => Found::At(init + i + 1, init + i + len),
            None => Found::Nothing,
        }
    }
}

unsafe extern "C-unwind" fn find_fn(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: called by Lua as the closure `install` made (upvalue 1: the budget, 2: the mlua
    // `find`). `find` returns a plain value (its matcher is dropped inside it), so nothing
    // with a destructor is alive when a push or the slow call raises. The pushes have room
    // (LUA_MINSTACK free slots above the arguments).
    unsafe {
        let n = ffi::lua_gettop(l);
        let [src, pat, start] = lua_raw::args::<3>(l, 1);
        let init = match n {
            2 => Some(None),
            3 => start.integer().map(Some),
            _ => None,
        };
        let found = match (
            init,
            src.bytes(),
            pat.bytes(),
            lua_raw::upvalue::<Budget>(l),
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
            Found::Slow => lua_raw::call_upvalue_2(l, n),
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
            (r#"("/index.html"):find("%.php$")"#, "nil"),
            (r#"table.concat({("/a.php"):find("%.php$")}, ",")"#, "3,6"),
            (r#"table.concat({("/a.php.x"):find("%.php")}, ",")"#, "3,6"),
            (
                r#"table.concat({("admin.x"):find("^admin%.")}, ",")"#,
                "1,6",
            ),
            (r#"("xadmin.x"):find("^admin%.")"#, "nil"),
            (r#"table.concat({("ab"):find("^ab$")}, ",")"#, "1,2"),
            (r#"("abc"):find("^ab$")"#, "nil"),
            (r#"table.concat({("abc"):find("^bc", 2)}, ",")"#, "2,3"),
            (r#"table.concat({("abc"):find("$")}, ",")"#, "4,3"),
            (r#"table.concat({("abc"):find("^")}, ",")"#, "1,0"),
            (r#"table.concat({("a$"):find("a%$")}, ",")"#, "1,2"),
            (r#"table.concat({("a%"):find("a%%$")}, ",")"#, "1,2"),
            (r#"("a%b"):find("a%%$")"#, "nil"),
            (r#"table.concat({("x^y"):find("x^y")}, ",")"#, "1,3"),
            (r#"table.concat({("a]b"):find("^a]")}, ",")"#, "1,2"),
            (r#"table.concat({("a.b"):find("^a%.b$")}, ",")"#, "1,3"),
            (r#"table.concat({("abcbc"):find("bc$", 3)}, ",")"#, "4,5"),
            (r#"("abc"):find("bc$", 3)"#, "nil"),
        ];
        for (expr, want) in cases {
            assert_eq!(run(expr), want, "{expr}");
        }
    }

    #[test]
    fn literal_patterns_find_what_the_matcher_finds() {
        use super::{find_matched, Literal};
        let budget = super::Budget::default();
        let subjects = [
            "",
            "a",
            "/api/x",
            "/x/api/",
            "a.php",
            "/a.php.php",
            "admin.x",
            "%$",
            "a$b$",
        ];
        let patterns = [
            "^/api/", "/api/", "%.php$", "%.php", "^a%.php$", "^", "$", "^$", "a%$", "%$$", "%%$",
            "%%%$", "^admin%.", "b%$", "p$", "^%/", "]",
        ];
        for src in subjects {
            for pat in patterns {
                let lit = Literal::of(pat.as_bytes()).expect(pat);
                for init in 0..=src.len() {
                    let fast = lit.find(src.as_bytes(), init, &budget);
                    let slow = find_matched(src.as_bytes(), pat.as_bytes(), init, &budget);
                    assert_eq!(fast, slow, "{src:?}:find({pat:?}, {})", init + 1);
                }
            }
        }
        for pat in [
            "%d", "a.b", "a*", "(a)", "a)", "%", "[a]", "a-", "x^y", "%f[a]", "$%$",
        ] {
            assert!(Literal::of(pat.as_bytes()).is_none(), "{pat}");
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
