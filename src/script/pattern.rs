//! Lua 5.4 patterns (manual §6.4.1) in Rust, so that every matching step is charged to the
//! calling route's budget.
//!
//! The C implementation in `lstrlib.c` cannot be interrupted: one `("x"):rep(8192):find(".*a.*b")`
//! backtracks for seconds inside a single C call, where no hook runs. This matcher has the same
//! semantics (classes, sets, `%b`, `%f`, captures, position captures, anchors, back references)
//! and calls a meter every [`STEP_CHUNK`] steps; when the meter refuses, the call stops with the
//! meter's error. [`install`] puts `find`, `match`, `gmatch` and `gsub` built on it into a table.

use std::cell::RefCell;
use std::rc::Rc;

use mlua::{Lua, MultiValue, Table, Value};

/// Matching steps charged to the meter at a time.
pub(crate) const STEP_CHUNK: u64 = 1024;
/// Nested matcher calls before "pattern too complex" (Lua's `MAXCCALLS`).
const MAX_DEPTH: usize = 200;
/// Captures per pattern (Lua's `LUA_MAXCAPTURES`).
const MAX_CAPTURES: usize = 32;
/// The characters that make a pattern more than a plain string.
pub(super) const SPECIALS: &[u8] = b"^$*+?.([%-";

/// Whether a byte is one of [`SPECIALS`] (one load instead of ten comparisons).
pub(super) fn is_special(c: u8) -> bool {
    const TABLE: [bool; 256] = {
        let mut t = [false; 256];
        let mut i = 0;
        while i < SPECIALS.len() {
            t[SPECIALS[i] as usize] = true;
            i += 1;
        }
        t
    };
    TABLE[usize::from(c)]
}

/// The meter: told how many steps were taken; an `Err` stops the match with that error.
pub(crate) type Meter = Rc<dyn Fn(u64) -> mlua::Result<()>>;

/// Why a match stopped without an answer.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The pattern is malformed (Lua's message).
    Pattern(String),
    /// The meter refused.
    Meter(mlua::Error),
}

impl From<Stop> for mlua::Error {
    fn from(s: Stop) -> mlua::Error {
        match s {
            Stop::Pattern(m) => mlua::Error::RuntimeError(m),
            Stop::Meter(e) => e,
        }
    }
}

type R<T> = Result<T, Stop>;

fn bad(msg: impl Into<String>) -> Stop {
    Stop::Pattern(msg.into())
}

/// One capture: where it starts and what is known of its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cap {
    /// Opened, not closed yet.
    Open(usize),
    /// A closed capture `start..end`.
    Closed(usize, usize),
    /// A position capture `()`.
    Position(usize),
}

/// A capture's value, ready for Lua.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Capture<'s> {
    /// The bytes of the subject the capture covers.
    Text(&'s [u8]),
    /// A position capture: a 1-based index.
    Position(i64),
}

/// A matcher for one subject and one pattern.
pub(crate) struct Matcher<'a> {
    src: &'a [u8],
    pat: &'a [u8],
    caps: Vec<Cap>,
    depth: usize,
    steps: u64,
    meter: &'a dyn Fn(u64) -> mlua::Result<()>,
}

impl<'a> Matcher<'a> {
    /// A matcher of `pat` over `src`, charging `meter`.
    pub(crate) fn new(
        src: &'a [u8],
        pat: &'a [u8],
        meter: &'a dyn Fn(u64) -> mlua::Result<()>,
    ) -> Self {
        Matcher {
            src,
            pat,
            caps: Vec::new(),
            depth: 0,
            steps: 0,
            meter,
        }
    }

    /// Charges what is left of the steps taken (call once at the end of a Lua call).
    pub(crate) fn settle(&mut self) -> R<()> {
        let n = self.steps % STEP_CHUNK;
        self.steps = 0;
        if n > 0 {
            (self.meter)(n).map_err(Stop::Meter)?;
        }
        Ok(())
    }

    fn tick(&mut self) -> R<()> {
        self.steps += 1;
        if self.steps.is_multiple_of(STEP_CHUNK) {
            (self.meter)(STEP_CHUNK).map_err(Stop::Meter)?;
        }
        Ok(())
    }

    /// Tries the pattern from `pstart` at subject position `s`; the end of the match.
    pub(crate) fn try_at(&mut self, s: usize, pstart: usize) -> R<Option<usize>> {
        self.caps.clear();
        self.depth = 0;
        self.do_match(s, pstart)
    }

    fn do_match(&mut self, mut s: usize, mut p: usize) -> R<Option<usize>> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(bad("pattern too complex"));
        }
        let r = self.match_loop(&mut s, &mut p);
        self.depth -= 1;
        r
    }

    fn match_loop(&mut self, s: &mut usize, p: &mut usize) -> R<Option<usize>> {
        let (src, pat) = (self.src, self.pat);
        loop {
            self.tick()?;
            if *p == pat.len() {
                return Ok(Some(*s));
            }
            match pat[*p] {
                b'(' => {
                    return if pat.get(*p + 1) == Some(&b')') {
                        self.start_capture(*s, *p + 2, true)
                    } else {
                        self.start_capture(*s, *p + 1, false)
                    };
                }
                b')' => return self.end_capture(*s, *p + 1),
                b'$' if *p + 1 == pat.len() => {
                    return Ok((*s == src.len()).then_some(*s));
                }
                b'%' if pat.get(*p + 1) == Some(&b'b') => match self.balance(*s, *p + 2)? {
                    Some(e) => {
                        *s = e;
                        *p += 4;
                        continue;
                    }
                    None => return Ok(None),
                },
                b'%' if pat.get(*p + 1) == Some(&b'f') => {
                    *p += 2;
                    if pat.get(*p) != Some(&b'[') {
                        return Err(bad("missing '[' after '%f' in pattern"));
                    }
                    let ep = self.class_end(*p)?;
                    let prev = if *s == 0 { 0 } else { src[*s - 1] };
                    let cur = src.get(*s).copied().unwrap_or(0);
                    if !self.in_set(prev, *p, ep - 1) && self.in_set(cur, *p, ep - 1) {
                        *p = ep;
                        continue;
                    }
                    return Ok(None);
                }
                b'%' if pat.get(*p + 1).is_some_and(u8::is_ascii_digit) => {
                    match self.back_reference(*s, pat[*p + 1])? {
                        Some(e) => {
                            *s = e;
                            *p += 2;
                            continue;
                        }
                        None => return Ok(None),
                    }
                }
                _ => {}
            }
            let ep = self.class_end(*p)?;
            let here = *s < src.len() && self.single(src[*s], *p, ep);
            match pat.get(ep) {
                Some(b'?') => {
                    if here {
                        if let Some(e) = self.do_match(*s + 1, ep + 1)? {
                            return Ok(Some(e));
                        }
                    }
                    *p = ep + 1;
                }
                Some(b'+') => {
                    return if here {
                        self.max_expand(*s + 1, *p, ep)
                    } else {
                        Ok(None)
                    };
                }
                Some(b'*') if here => return self.max_expand(*s, *p, ep),
                Some(b'-') if here => return self.min_expand(*s, *p, ep),
                // An optional item that does not match here: go on after it.
                Some(b'*' | b'-') if !here => *p = ep + 1,
                _ => {
                    if !here {
                        return Ok(None);
                    }
                    *s += 1;
                    *p = ep;
                }
            }
        }
    }

    /// The index just past the single-character class starting at `p`.
    fn class_end(&self, mut p: usize) -> R<usize> {
        let pat = self.pat;
        let c = pat[p];
        p += 1;
        match c {
            b'%' => {
                if p >= pat.len() {
                    return Err(bad("malformed pattern (ends with '%')"));
                }
                Ok(p + 1)
            }
            b'[' => {
                if pat.get(p) == Some(&b'^') {
                    p += 1;
                }
                // The first character of a set is never its end: `[]]` is a set of `]`.
                loop {
                    if p >= pat.len() {
                        return Err(bad("malformed pattern (missing ']')"));
                    }
                    let c = pat[p];
                    p += 1;
                    if c == b'%' && p < pat.len() {
                        p += 1;
                    }
                    if pat.get(p) == Some(&b']') {
                        return Ok(p + 1);
                    }
                }
            }
            _ => Ok(p),
        }
    }

    /// Whether byte `c` matches the class `pat[p..ep]`.
    fn single(&self, c: u8, p: usize, ep: usize) -> bool {
        match self.pat[p] {
            b'.' => true,
            b'%' => class(c, self.pat[p + 1]),
            b'[' => self.in_set(c, p, ep - 1),
            lit => lit == c,
        }
    }

    /// Whether `c` is in the set `pat[p..=end]` (`pat[p]` is `[`, `pat[end]` is `]`).
    fn in_set(&self, c: u8, p: usize, end: usize) -> bool {
        let pat = self.pat;
        let mut i = p + 1;
        let mut yes = true;
        if pat[i] == b'^' {
            yes = false;
            i += 1;
        }
        while i < end {
            if pat[i] == b'%' {
                i += 1;
                if class(c, pat[i]) {
                    return yes;
                }
                i += 1;
            } else if pat[i + 1] == b'-' && i + 2 < end {
                if pat[i] <= c && c <= pat[i + 2] {
                    return yes;
                }
                i += 3;
            } else {
                if pat[i] == c {
                    return yes;
                }
                i += 1;
            }
        }
        !yes
    }

    fn max_expand(&mut self, s: usize, p: usize, ep: usize) -> R<Option<usize>> {
        let mut n = 0;
        while s + n < self.src.len() && self.single(self.src[s + n], p, ep) {
            self.tick()?;
            n += 1;
        }
        loop {
            if let Some(e) = self.do_match(s + n, ep + 1)? {
                return Ok(Some(e));
            }
            if n == 0 {
                return Ok(None);
            }
            n -= 1;
        }
    }

    fn min_expand(&mut self, mut s: usize, p: usize, ep: usize) -> R<Option<usize>> {
        loop {
            if let Some(e) = self.do_match(s, ep + 1)? {
                return Ok(Some(e));
            }
            if s < self.src.len() && self.single(self.src[s], p, ep) {
                s += 1;
            } else {
                return Ok(None);
            }
        }
    }

    fn start_capture(&mut self, s: usize, p: usize, position: bool) -> R<Option<usize>> {
        if self.caps.len() >= MAX_CAPTURES {
            return Err(bad("too many captures"));
        }
        self.caps.push(if position {
            Cap::Position(s)
        } else {
            Cap::Open(s)
        });
        let r = self.do_match(s, p)?;
        if r.is_none() {
            self.caps.pop();
        }
        Ok(r)
    }

    fn end_capture(&mut self, s: usize, p: usize) -> R<Option<usize>> {
        let Some(l) = self.caps.iter().rposition(|c| matches!(c, Cap::Open(_))) else {
            return Err(bad("invalid pattern capture"));
        };
        let Cap::Open(start) = self.caps[l] else {
            return Err(bad("invalid pattern capture"));
        };
        self.caps[l] = Cap::Closed(start, s);
        let r = self.do_match(s, p)?;
        if r.is_none() {
            self.caps[l] = Cap::Open(start);
        }
        Ok(r)
    }

    fn back_reference(&mut self, s: usize, digit: u8) -> R<Option<usize>> {
        let l = usize::from(digit).wrapping_sub(usize::from(b'1'));
        let (a, b) = match self.caps.get(l) {
            Some(Cap::Closed(a, b)) => (*a, *b),
            // Lua compares a position capture's negative length as a huge size: no match.
            Some(Cap::Position(_)) => return Ok(None),
            _ => return Err(bad(format!("invalid capture index %{}", l.wrapping_add(1)))),
        };
        let len = b - a;
        if self.src.len() - s >= len && self.src[a..b] == self.src[s..s + len] {
            Ok(Some(s + len))
        } else {
            Ok(None)
        }
    }

    fn balance(&mut self, s: usize, p: usize) -> R<Option<usize>> {
        if p + 1 >= self.pat.len() {
            return Err(bad("malformed pattern (missing arguments to '%b')"));
        }
        let (open, close) = (self.pat[p], self.pat[p + 1]);
        if self.src.get(s) != Some(&open) {
            return Ok(None);
        }
        let mut depth = 1;
        for i in s + 1..self.src.len() {
            self.tick()?;
            let c = self.src[i];
            if c == close {
                depth -= 1;
                if depth == 0 {
                    return Ok(Some(i + 1));
                }
            } else if c == open {
                depth += 1;
            }
        }
        Ok(None)
    }

    /// Capture `i` of the match `s..e` (the whole match when the pattern has none and `i` is 0).
    pub(crate) fn capture(&self, i: usize, s: usize, e: usize) -> R<Capture<'a>> {
        match self.caps.get(i) {
            None if i == 0 => Ok(Capture::Text(&self.src[s..e])),
            None => Err(bad(format!("invalid capture index %{}", i + 1))),
            Some(Cap::Open(_)) => Err(bad("unfinished capture")),
            Some(Cap::Closed(a, b)) => Ok(Capture::Text(&self.src[*a..*b])),
            Some(Cap::Position(a)) => Ok(Capture::Position(*a as i64 + 1)),
        }
    }

    /// How many values a match yields: its captures, or the whole match when it has none.
    pub(crate) fn capture_count(&self, whole: bool) -> usize {
        if self.caps.is_empty() && whole {
            1
        } else {
            self.caps.len()
        }
    }
}

/// Whether `c` is in the class `%cl` (C locale).
fn class(c: u8, cl: u8) -> bool {
    let yes = match cl.to_ascii_lowercase() {
        b'a' => c.is_ascii_alphabetic(),
        b'c' => c.is_ascii_control(),
        b'd' => c.is_ascii_digit(),
        b'g' => c.is_ascii_graphic(),
        b'l' => c.is_ascii_lowercase(),
        b'p' => c.is_ascii_punctuation(),
        b's' => matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'),
        b'u' => c.is_ascii_uppercase(),
        b'w' => c.is_ascii_alphanumeric(),
        b'x' => c.is_ascii_hexdigit(),
        // Deprecated in 5.2 but still accepted by 5.4: the NUL byte.
        b'z' => c == 0,
        _ => return cl == c,
    };
    if cl.is_ascii_uppercase() {
        !yes
    } else {
        yes
    }
}

/// Lua 5.4's `posrelatI` minus one: a 0-based start from a 1-based, possibly negative, index.
pub(super) fn start_index(init: Option<i64>, len: usize) -> usize {
    let len_i = len as i64;
    match init.unwrap_or(1) {
        i if i > 0 => usize::try_from(i - 1).unwrap_or(usize::MAX),
        0 => 0,
        i if i < -len_i => 0,
        i => (len_i + i) as usize,
    }
}

pub(super) fn find_plain(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    memchr::memmem::find(hay, needle)
}

/// Pushes the captures of a match (or the whole match) onto `out`.
fn push_captures(
    lua: &Lua,
    m: &Matcher<'_>,
    s: usize,
    e: usize,
    whole: bool,
    out: &mut MultiValue,
) -> mlua::Result<()> {
    for i in 0..m.capture_count(whole) {
        out.push_back(capture_value(lua, m.capture(i, s, e)?)?);
    }
    Ok(())
}

fn capture_value(lua: &Lua, c: Capture<'_>) -> mlua::Result<Value> {
    Ok(match c {
        Capture::Text(t) => Value::String(lua.create_string(t)?),
        Capture::Position(i) => Value::Integer(i),
    })
}

/// `string.find` (`find` true) and `string.match`.
fn find_aux(
    lua: &Lua,
    meter: &dyn Fn(u64) -> mlua::Result<()>,
    find: bool,
    (s, p, init, plain): (mlua::String, mlua::String, Option<i64>, Option<Value>),
) -> mlua::Result<MultiValue> {
    let (src, pat) = (s.as_bytes(), p.as_bytes());
    let mut out = MultiValue::new();
    let init = start_index(init, src.len());
    if init > src.len() {
        out.push_back(Value::Nil);
        return Ok(out);
    }
    let plain = plain.is_some_and(|v| !matches!(v, Value::Nil | Value::Boolean(false)));
    if find && (plain || !pat.iter().any(|&c| is_special(c))) {
        // The plain search is one memmem: charge it by the bytes it may look at.
        meter((src.len() - init) as u64 / 16)?;
        match find_plain(&src[init..], &pat) {
            Some(i) => {
                out.push_back(Value::Integer((init + i + 1) as i64));
                out.push_back(Value::Integer((init + i + pat.len()) as i64));
            }
            None => out.push_back(Value::Nil),
        }
        return Ok(out);
    }
    let anchor = pat.first() == Some(&b'^');
    let pstart = usize::from(anchor);
    let mut m = Matcher::new(&src, &pat, meter);
    let mut s1 = init;
    loop {
        if let Some(e) = m.try_at(s1, pstart)? {
            if find {
                out.push_back(Value::Integer(s1 as i64 + 1));
                out.push_back(Value::Integer(e as i64));
                push_captures(lua, &m, s1, e, false, &mut out)?;
            } else {
                push_captures(lua, &m, s1, e, true, &mut out)?;
            }
            m.settle()?;
            return Ok(out);
        }
        s1 += 1;
        if anchor || s1 > src.len() {
            break;
        }
    }
    m.settle()?;
    out.push_back(Value::Nil);
    Ok(out)
}

/// The state of one `gmatch` iteration.
struct Gmatch {
    src: mlua::String,
    pat: mlua::String,
    pos: usize,
    last: Option<usize>,
}

fn gmatch_next(
    lua: &Lua,
    meter: &dyn Fn(u64) -> mlua::Result<()>,
    g: &mut Gmatch,
) -> mlua::Result<MultiValue> {
    let (src, pat) = (g.src.as_bytes(), g.pat.as_bytes());
    let mut m = Matcher::new(&src, &pat, meter);
    let mut out = MultiValue::new();
    let mut s = g.pos;
    while s <= src.len() {
        if let Some(e) = m.try_at(s, 0)? {
            if Some(e) != g.last {
                g.pos = e;
                g.last = Some(e);
                push_captures(lua, &m, s, e, true, &mut out)?;
                m.settle()?;
                return Ok(out);
            }
        }
        s += 1;
    }
    g.pos = s;
    m.settle()?;
    Ok(out)
}

/// A string or number as Lua's `tostring` writes it.
fn lua_text(lua: &Lua, v: Value) -> mlua::Result<mlua::String> {
    lua.coerce_string(v)?
        .ok_or_else(|| mlua::Error::RuntimeError("expected a string or a number".into()))
}

/// Appends the replacement for the match `s..e` to `out`.
fn add_value(
    lua: &Lua,
    m: &Matcher<'_>,
    s: usize,
    e: usize,
    repl: &Value,
    out: &mut Vec<u8>,
) -> mlua::Result<()> {
    let whole = &m.src[s..e];
    let value = match repl {
        Value::String(_) | Value::Integer(_) | Value::Number(_) => {
            let r = lua_text(lua, repl.clone())?;
            return add_string(m, s, e, &r.as_bytes(), out);
        }
        Value::Table(t) => t.get::<Value>(capture_value(lua, m.capture(0, s, e)?)?)?,
        Value::Function(f) => {
            let mut args = MultiValue::new();
            push_captures(lua, m, s, e, true, &mut args)?;
            f.call::<Value>(args)?
        }
        _ => return Ok(()),
    };
    match value {
        Value::Nil | Value::Boolean(false) => out.extend_from_slice(whole),
        Value::String(v) => out.extend_from_slice(&v.as_bytes()),
        v @ (Value::Integer(_) | Value::Number(_)) => {
            out.extend_from_slice(&lua_text(lua, v)?.as_bytes())
        }
        other => {
            return Err(mlua::Error::RuntimeError(format!(
                "invalid replacement value (a {})",
                other.type_name()
            )))
        }
    }
    Ok(())
}

/// A replacement string: `%0`..`%9` are captures, `%%` is `%`.
fn add_string(
    m: &Matcher<'_>,
    s: usize,
    e: usize,
    r: &[u8],
    out: &mut Vec<u8>,
) -> mlua::Result<()> {
    let mut i = 0;
    while i < r.len() {
        let c = r[i];
        i += 1;
        if c != b'%' {
            out.push(c);
            continue;
        }
        let d = r.get(i).copied();
        i += 1;
        match d {
            Some(b'%') => out.push(b'%'),
            Some(b'0') => out.extend_from_slice(&m.src[s..e]),
            Some(d @ b'1'..=b'9') => match m.capture(usize::from(d - b'1'), s, e)? {
                Capture::Text(t) => out.extend_from_slice(t),
                Capture::Position(p) => out.extend_from_slice(p.to_string().as_bytes()),
            },
            _ => {
                return Err(mlua::Error::RuntimeError(
                    "invalid use of '%' in replacement string".into(),
                ))
            }
        }
    }
    Ok(())
}

fn gsub(
    lua: &Lua,
    meter: &dyn Fn(u64) -> mlua::Result<()>,
    (s, p, repl, max): (mlua::String, mlua::String, Value, Option<i64>),
) -> mlua::Result<(mlua::String, i64)> {
    if !matches!(
        repl,
        Value::String(_)
            | Value::Integer(_)
            | Value::Number(_)
            | Value::Table(_)
            | Value::Function(_)
    ) {
        return Err(mlua::Error::RuntimeError(format!(
            "bad argument #3 to 'gsub' (string/function/table expected, got {})",
            repl.type_name()
        )));
    }
    let (src, pat) = (s.as_bytes(), p.as_bytes());
    let max = max.unwrap_or(src.len() as i64 + 1);
    let anchor = pat.first() == Some(&b'^');
    let pstart = usize::from(anchor);
    let mut m = Matcher::new(&src, &pat, meter);
    let mut out = Vec::new();
    let (mut pos, mut last, mut n) = (0usize, None, 0i64);
    while n < max {
        let e = m.try_at(pos, pstart)?;
        match e {
            Some(e) if Some(e) != last => {
                n += 1;
                add_value(lua, &m, pos, e, &repl, &mut out)?;
                pos = e;
                last = Some(e);
            }
            _ if pos < src.len() => {
                out.push(src[pos]);
                pos += 1;
            }
            _ => break,
        }
        if anchor {
            break;
        }
    }
    m.settle()?;
    if n == 0 {
        return Ok((s.clone(), 0));
    }
    out.extend_from_slice(&src[pos..]);
    Ok((lua.create_string(out)?, n))
}

/// Sets `find`, `match`, `gmatch` and `gsub` in `target`, charging every matching step to
/// `meter` (which may also be asked for a share of a plain search or a replacement's copying).
pub(crate) fn install(lua: &Lua, target: &Table, meter: Meter) -> mlua::Result<()> {
    let m = meter.clone();
    target.raw_set(
        "find",
        lua.create_function(move |lua, args| find_aux(lua, &*m, true, args))?,
    )?;
    let m = meter.clone();
    target.raw_set(
        "match",
        lua.create_function(move |lua, args| find_aux(lua, &*m, false, args))?,
    )?;
    let m = meter.clone();
    target.raw_set(
        "gsub",
        lua.create_function(move |lua, args| gsub(lua, &*m, args))?,
    )?;
    let m = meter;
    target.raw_set(
        "gmatch",
        lua.create_function(
            move |lua, (s, p, init): (mlua::String, mlua::String, Option<i64>)| {
                let len = s.as_bytes().len();
                let pos = start_index(init, len).min(len + 1);
                let state = RefCell::new(Gmatch {
                    src: s,
                    pat: p,
                    pos,
                    last: None,
                });
                let m = m.clone();
                lua.create_function(move |lua, ()| {
                    let mut g = state.try_borrow_mut().map_err(|_| {
                        mlua::Error::RuntimeError("gmatch iterator called recursively".into())
                    })?;
                    gmatch_next(lua, &*m, &mut g)
                })
            },
        )?,
    )?;
    Ok(())
}

#[cfg(test)]
#[path = "pattern_tests.rs"]
mod tests;
