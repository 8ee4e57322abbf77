//! Differential tests: the Rust matcher against Lua's own `string` functions, on the same
//! subjects and patterns.

use std::cell::Cell;
use std::rc::Rc;

use mlua::{Lua, Table};

use super::*;

/// A state with Lua's functions in `C` and ours in `R` (metered by `steps`).
fn state() -> (Lua, Rc<Cell<u64>>) {
    let lua = Lua::new();
    let steps = Rc::new(Cell::new(0u64));
    let s = steps.clone();
    let r: Table = lua.create_table().unwrap();
    install(
        &lua,
        &r,
        Rc::new(move |n| {
            s.set(s.get() + n);
            Ok(())
        }),
    )
    .unwrap();
    lua.globals().set("R", r).unwrap();
    lua.load("C = { find = string.find, match = string.match, gmatch = string.gmatch, gsub = string.gsub }")
        .exec()
        .unwrap();
    lua.load(COMPARE).exec().unwrap();
    (lua, steps)
}

/// `same(name, ...)` calls `C[name](...)` and `R[name](...)` and returns nil when both gave the
/// same values (or both failed), else a description of the difference.
const COMPARE: &str = r##"
local function pack(ok, ...) return { ok = ok, n = select("#", ...), ... } end
local function show(r)
  local parts = { tostring(r.ok) }
  for i = 1, r.n do
    local v = r[i]
    -- Errors raised by Rust arrive as userdata: compare their first line, without mlua's
    -- "runtime error: " prefix.
    if type(v) == "userdata" then
      v = tostring(v):match("^runtime error: ([^\n]*)") or tostring(v)
      parts[#parts + 1] = "string:" .. v
    else
      parts[#parts + 1] = type(v) .. ":" .. tostring(v)
    end
  end
  return table.concat(parts, ", ")
end
local function collect(f, ...)
  -- gmatch: run the iterator to its end, packing every step.
  local ok, it = pcall(f, ...)
  if not ok then return { ok = false, n = 0 } end
  local out = { ok = true, n = 0 }
  for _ = 1, 1000 do
    local r = pack(pcall(it))
    out.n = out.n + 1
    out[out.n] = show(r)
    if not r.ok or r[1] == nil then break end
  end
  return out
end
function same(name, ...)
  local a, b
  if name == "gmatch" then
    a, b = collect(C.gmatch, ...), collect(R.gmatch, ...)
  else
    a, b = pack(pcall(C[name], ...)), pack(pcall(R[name], ...))
  end
  if not a.ok and not b.ok then return nil end
  local sa, sb = show(a), show(b)
  if a.ok ~= b.ok or a.n ~= b.n or sa ~= sb then
    return name .. ": lua gave " .. sa .. " but rust gave " .. sb
  end
end
"##;

fn check(lua: &Lua, name: &str, args: mlua::MultiValue) -> Option<String> {
    let same: mlua::Function = lua.globals().get("same").unwrap();
    let mut all = mlua::MultiValue::new();
    all.push_back(mlua::Value::String(lua.create_string(name).unwrap()));
    all.extend(args);
    same.call::<Option<String>>(all).unwrap()
}

const SUBJECTS: &[&str] = &[
    "",
    "hello world",
    "  padded  ",
    "/api/v1/users/42?x=1",
    "THE (quick) [brown] {fox} jumps",
    "a,b,,c,",
    "key = value; other=thing",
    "aaa",
    "abcabcabc",
    "x=(a(b)c)d(e)",
    "THE END",
    "tab\there\nnew\0nul",
    "123.45e-6 -7 0x1F",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "%d%%[]^$",
    "éàü utf8 bytes",
];

const PATTERNS: &[&str] = &[
    "",
    "o",
    "l+",
    "l*",
    "l-",
    "lo?",
    "^h",
    "d$",
    "^$",
    ".",
    "..",
    "^.-$",
    "%a+",
    "%A+",
    "%d+",
    "%D",
    "%s+",
    "%S+",
    "%w+",
    "%W",
    "%p",
    "%P+",
    "%l+",
    "%u+",
    "%x+",
    "%c",
    "%g+",
    "[aeiou]",
    "[^aeiou]+",
    "[a-z]+",
    "[%a_][%w_]*",
    "[]]",
    "[^]]+",
    "[%]]",
    "[a-]",
    "[-a]",
    "[%-]",
    "(%w+)=(%w+)",
    "(%w+)%s*=%s*(%w+)",
    "()",
    "()ll()",
    "(h)(e)(l)",
    "((%w)%w)",
    "(a*(.)%2)",
    "(.)%1",
    "%b()",
    "%b[]",
    "%b{}",
    "%bxy",
    "%f[%w]%w+",
    "%f[%W]",
    "%f[%a]%a+%f[%A]",
    "^/api/",
    "%.php$",
    "[+-]?%d+%.?%d*[eE]?[+-]?%d*",
    "0x%x+",
    "bot",
    ".*bot.*crawler",
    "(.-),",
    ",",
    "%z",
    "\0",
    "[\0-\x1f]",
    "%%",
    "%[",
    "[%%%]]",
    "a-b",
    "^(%s*)(.-)(%s*)$",
    "(()a)",
    "[%w%.]+",
    "(",
    ")",
    "%",
    "[a",
    "[^",
    "(()",
    "%b",
    "%b(",
    "%f",
    "%fa",
    "%1",
    "(a)%2",
    "%0",
    "[a-%%]",
    "x*$",
    ".-$",
    "[^%s]+$",
    "(%a+) (%a+)",
    "^(.-)%s*$",
    "((a)(b)(c))",
    "$x",
    "^^",
    "a$b",
];

/// Every pattern against every subject, with `find`, `match`, `gmatch`.
#[test]
fn find_match_gmatch_agree_with_lua() {
    let (lua, _) = state();
    let mut bad = Vec::new();
    for s in SUBJECTS {
        for p in PATTERNS {
            for name in ["find", "match", "gmatch"] {
                let args = (*s, *p).into_lua_multi(&lua).unwrap();
                if let Some(d) = check(&lua, name, args) {
                    bad.push(format!("{s:?} {p:?}: {d}"));
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "{} differences:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

/// `init` (positive, zero, negative, past the end) and `plain`.
#[test]
fn init_and_plain_arguments_agree_with_lua() {
    let (lua, _) = state();
    let mut bad = Vec::new();
    for s in ["hello world", "", "a.b.c", "%d"] {
        for p in ["o", "l+", ".", "%.", "^h", "", "%d", "(o)"] {
            for init in [-100i64, -12, -5, -1, 0, 1, 2, 5, 11, 12, 13, 100] {
                for plain in [None, Some(true), Some(false)] {
                    let args = (s, p, init, plain).into_lua_multi(&lua).unwrap();
                    if let Some(d) = check(&lua, "find", args) {
                        bad.push(format!("{s:?} {p:?} {init} {plain:?}: {d}"));
                    }
                }
                let args = (s, p, init).into_lua_multi(&lua).unwrap();
                for name in ["match", "gmatch"] {
                    if let Some(d) = check(&lua, name, args.clone()) {
                        bad.push(format!("{name} {s:?} {p:?} {init}: {d}"));
                    }
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "{} differences:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

/// `gsub` with string, table and function replacements, and the `n` limit.
#[test]
fn gsub_agrees_with_lua() {
    let (lua, _) = state();
    let results: Vec<Option<String>> = lua
        .load(
            r#"
local subjects = { "hello world", "", "a,b,,c", "key=val; k2=v2", "abc", "x(y)z", "%1" }
local pats = { "o", "%w+", "(%w+)=(%w+)", "", "^", "$", ".-", "()", "(%w)", "[,;]", "%b()", "^a",
               "(a)(b)(c)", "x*" }
local repls = { "[%0]", "%1-%1", "%%", "<%2>", "", 7, 1.5, "%", "%9", "%x",
                { hello = "HI", o = false, abc = 12, key = "K" },
                function(a, b) if a == "world" then return nil end return (b or a):upper() end,
                function() return false end, function() return {} end,
                setmetatable({}, { __index = function(_, k) return "<" .. k .. ">" end }) }
local out = {}
for _, s in ipairs(subjects) do
  for _, p in ipairs(pats) do
    for _, r in ipairs(repls) do
      for _, n in ipairs({ false, 0, 1, 2, -1 }) do
        local d
        if n then d = same("gsub", s, p, r, n) else d = same("gsub", s, p, r) end
        if d then out[#out + 1] = s .. " | " .. p .. " | " .. tostring(r) .. " | " .. tostring(n) .. ": " .. d end
      end
    end
  end
end
out[#out + 1] = same("gsub", "abc", "b", nil)
out[#out + 1] = same("gsub", "abc", "b", true)
out[#out + 1] = same("find", 12345, 3)
out[#out + 1] = same("gsub", 12345, "3", "x")
return out
"#,
        )
        .eval::<Vec<Option<String>>>()
        .unwrap();
    let bad: Vec<String> = results.into_iter().flatten().collect();
    assert!(
        bad.is_empty(),
        "{} differences:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

/// Many captures and deep patterns fail the same way as Lua's.
#[test]
fn limits_of_patterns_agree_with_lua() {
    let (lua, _) = state();
    let many = "(a)".repeat(33);
    let deep = "a?".repeat(300);
    let star = "a*".repeat(300);
    for (s, p) in [
        ("a".repeat(40), many.clone()),
        ("a".repeat(40), "(a)".repeat(32)),
        ("a".repeat(300), deep),
        ("a".repeat(300), star),
        ("b".repeat(300), "b-".repeat(250)),
    ] {
        for name in ["find", "match"] {
            let args = (s.as_str(), p.as_str()).into_lua_multi(&lua).unwrap();
            assert_eq!(check(&lua, name, args), None, "{name} {p:.20}");
        }
    }
}

/// Catastrophic backtracking is charged step by step, and a refusing meter stops it.
#[test]
fn backtracking_is_metered_and_can_be_stopped() {
    let (lua, steps) = state();
    let ua = "x".repeat(2000);
    let f: mlua::Function = lua.load("return R.find").eval().unwrap();
    let r: Option<i64> = f.call((ua.as_str(), ".*bot.*crawler")).unwrap();
    assert_eq!(r, None);
    // About n²/2 steps for two unanchored `.*`.
    assert!(steps.get() > 1_000_000, "{} steps", steps.get());

    let stopper = Lua::new();
    let t = stopper.create_table().unwrap();
    install(
        &stopper,
        &t,
        Rc::new(|_| Err(mlua::Error::RuntimeError("deadline exceeded".into()))),
    )
    .unwrap();
    let find: mlua::Function = t.get("find").unwrap();
    let big = "x".repeat(8192);
    let started = std::time::Instant::now();
    let e = find
        .call::<Option<i64>>((big.as_str(), ".*bot.*crawler"))
        .unwrap_err();
    assert!(e.to_string().contains("deadline exceeded"), "{e}");
    assert!(started.elapsed() < std::time::Duration::from_millis(500));
}

use mlua::IntoLuaMulti;
