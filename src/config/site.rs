//! Where a config call was made, and the line of a key inside it.
//!
//! Lua only tells us the line of the call (`server {` …), but a problem with `workers` is easier
//! to fix when the message points at the `workers = …` line. So we keep each file's source text
//! and scan it: from the call line, over the balanced `{…}`/`(…)` that starts there, for the key
//! written as `key =` or `["key"] =`. Strings and comments are skipped, so a key mentioned in a
//! comment does not count. When the table was not written literally at the call (a variable was
//! passed), the scan finds nothing and the call line is used.

use std::rc::Rc;

use super::ConfigError;

/// A call of `server`, `fastcgi` or `route`: its file (as the user named it), its line and the
/// text of that file when known.
#[derive(Debug, Clone)]
pub(super) struct Site {
    /// The file, as named in the chunk name (the path the user gave, or as `include` found it).
    pub file: String,
    /// The line of the call, when Lua knew it.
    pub line: Option<u32>,
    /// The file's source text, for finding the line of a key.
    pub text: Option<Rc<str>>,
}

impl Site {
    /// `file:line` (or just `file`), for messages such as "first at site.lua:3".
    pub fn position(&self) -> String {
        match self.line {
            Some(line) => format!("{}:{}", self.file, line),
            None => self.file.clone(),
        }
    }

    /// An error placed at the call itself.
    pub fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            line: self.line,
            message: message.into(),
        }
    }

    /// An error placed at the line of the key `path` (nested keys: `["limits", "connections"]`).
    pub fn error_at(&self, path: &[&str], message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            line: self.line_of(path, None),
            message: message.into(),
        }
    }

    /// An error placed at the line of the string literal `value` written after the key `path`
    /// (e.g. one address in a `listen` list), else at the key's line.
    pub fn error_at_value(
        &self,
        path: &[&str],
        value: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            line: self.line_of(path, Some(value)),
            message: message.into(),
        }
    }

    /// The line of the key `path` (and then of the string `value` after it), falling back to the
    /// deepest part found, then to the call line.
    pub fn line_of(&self, path: &[&str], value: Option<&str>) -> Option<u32> {
        let (Some(text), Some(line)) = (self.text.as_deref(), self.line) else {
            return self.line;
        };
        let lines = LineIndex::new(text);
        let Some(start) = lines.start_of(line) else {
            return self.line;
        };
        let region = call_region(text, start, &lines, line);
        let mut found = self.line;
        let mut from = 0;
        for key in path {
            match find_key(&region, from, key) {
                Some(i) => {
                    found = Some(lines.line_at(region[i].pos));
                    from = i + 1;
                }
                None => return found,
            }
        }
        if let Some(value) = value {
            let hit = region[from.min(region.len())..]
                .iter()
                .find(|t| matches!(&t.tok, Tok::Str(s) if s == value));
            if let Some(t) = hit {
                found = Some(lines.line_at(t.pos));
            }
        }
        found
    }
}

/// Byte offsets of line starts, to turn an offset into a 1-based line number and back.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(
            text.bytes()
                .enumerate()
                .filter(|&(_, b)| b == b'\n')
                .map(|(i, _)| i + 1),
        );
        LineIndex { starts }
    }

    fn start_of(&self, line: u32) -> Option<usize> {
        let i = usize::try_from(line).ok()?.checked_sub(1)?;
        self.starts.get(i).copied()
    }

    fn line_at(&self, pos: usize) -> u32 {
        let n = self.starts.partition_point(|&s| s <= pos);
        u32::try_from(n).unwrap_or(u32::MAX)
    }
}

/// The tokens the key scan cares about; everything else is `Other`.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Name(String),
    /// A string literal's raw content (escapes are not decoded; keys and addresses rarely have any).
    Str(String),
    Open(u8),
    Close(u8),
    /// A single `=` (assignment or table field), not `==`, `<=`, `>=` or `~=`.
    Assign,
    Other,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    pos: usize,
}

/// The tokens of the call starting on `line` (at byte `start`): from there through the first
/// bracket opened on that line to its matching close. If no bracket opens on the call line, only
/// the call line's tokens.
fn call_region(text: &str, start: usize, lines: &LineIndex, line: u32) -> Vec<Token> {
    let mut lexer = Lexer {
        src: text.as_bytes(),
        pos: start,
    };
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut opened = false;
    while let Some(t) = lexer.next_token() {
        if !opened && lines.line_at(t.pos) > line {
            break;
        }
        match t.tok {
            Tok::Open(_) => {
                depth += 1;
                opened = true;
            }
            Tok::Close(_) => depth = depth.saturating_sub(1),
            _ => {}
        }
        out.push(t);
        if opened && depth == 0 {
            break;
        }
    }
    out
}

/// Index of the first token at or after `from` that writes `key` as a table key.
fn find_key(tokens: &[Token], from: usize, key: &str) -> Option<usize> {
    (from..tokens.len()).find(|&i| {
        let at = |j: usize| tokens.get(j).map(|t| &t.tok);
        match at(i) {
            Some(Tok::Name(n)) => n == key && at(i + 1) == Some(&Tok::Assign),
            Some(Tok::Open(b'[')) => {
                matches!(at(i + 1), Some(Tok::Str(s)) if s == key)
                    && at(i + 2) == Some(&Tok::Close(b']'))
                    && at(i + 3) == Some(&Tok::Assign)
            }
            _ => false,
        }
    })
}

/// A small Lua lexer: just enough to skip comments and strings and to see names, brackets and `=`.
struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
}

impl Lexer<'_> {
    fn peek(&self, off: usize) -> Option<u8> {
        self.src.get(self.pos + off).copied()
    }

    /// If a long bracket `[==[` starts at `pos + off`, its level (number of `=`).
    fn long_bracket(&self, off: usize) -> Option<usize> {
        if self.peek(off) != Some(b'[') {
            return None;
        }
        let mut level = 0;
        while self.peek(off + 1 + level) == Some(b'=') {
            level += 1;
        }
        (self.peek(off + 1 + level) == Some(b'[')).then_some(level)
    }

    /// Skips past the `]==]` closing a long bracket of `level`; returns the content's end.
    fn skip_long(&mut self, level: usize) -> usize {
        while self.pos < self.src.len() {
            if self.src[self.pos] == b']' {
                let eqs = (0..level).all(|k| self.peek(1 + k) == Some(b'='));
                if eqs && self.peek(1 + level) == Some(b']') {
                    let end = self.pos;
                    self.pos += level + 2;
                    return end;
                }
            }
            self.pos += 1;
        }
        self.src.len()
    }

    fn text(&self, a: usize, b: usize) -> String {
        String::from_utf8_lossy(&self.src[a..b]).into_owned()
    }

    fn next_token(&mut self) -> Option<Token> {
        loop {
            let c = self.peek(0)?;
            let pos = self.pos;
            if c.is_ascii_whitespace() {
                self.pos += 1;
                continue;
            }
            if c == b'-' && self.peek(1) == Some(b'-') {
                if let Some(level) = self.long_bracket(2) {
                    self.pos += level + 4;
                    self.skip_long(level);
                } else {
                    while self.peek(0).is_some_and(|b| b != b'\n') {
                        self.pos += 1;
                    }
                }
                continue;
            }
            let tok = match c {
                b'"' | b'\'' => {
                    self.pos += 1;
                    let a = self.pos;
                    while let Some(b) = self.peek(0) {
                        if b == c || b == b'\n' {
                            break;
                        }
                        self.pos += if b == b'\\' { 2 } else { 1 };
                    }
                    let b = self.pos.min(self.src.len());
                    self.pos = b + 1;
                    Tok::Str(self.text(a, b))
                }
                b'[' => match self.long_bracket(0) {
                    Some(level) => {
                        self.pos += level + 2;
                        let a = self.pos;
                        let b = self.skip_long(level);
                        Tok::Str(self.text(a, b))
                    }
                    None => {
                        self.pos += 1;
                        Tok::Open(c)
                    }
                },
                b'{' | b'(' => {
                    self.pos += 1;
                    Tok::Open(c)
                }
                b'}' | b')' | b']' => {
                    self.pos += 1;
                    Tok::Close(c)
                }
                b'=' | b'<' | b'>' | b'~' => {
                    if self.peek(1) == Some(b'=') {
                        self.pos += 2;
                        Tok::Other
                    } else {
                        self.pos += 1;
                        if c == b'=' {
                            Tok::Assign
                        } else {
                            Tok::Other
                        }
                    }
                }
                c if c.is_ascii_alphabetic() || c == b'_' => {
                    while self
                        .peek(0)
                        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
                    {
                        self.pos += 1;
                    }
                    Tok::Name(self.text(pos, self.pos))
                }
                c if c.is_ascii_digit() => {
                    while self
                        .peek(0)
                        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
                    {
                        self.pos += 1;
                    }
                    Tok::Other
                }
                _ => {
                    self.pos += 1;
                    Tok::Other
                }
            };
            return Some(Token { tok, pos });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(text: &str, line: u32) -> Site {
        Site {
            file: "t.lua".into(),
            line: Some(line),
            text: Some(Rc::from(text)),
        }
    }

    const SRC: &str = r#"-- workers = 99 in a comment
local x = "workers = 1"
server {
  listen = { "127.0.0.1:80",
             "bad" },
  --[[ root = "x" ]]
  root = "www",
  limits = {
    connections = 0,
  },
  ["server_name"] = "x",
}
workers = 5
"#;

    #[test]
    fn finds_keys_after_the_call_line() {
        let s = site(SRC, 3);
        assert_eq!(s.line_of(&["root"], None), Some(7));
        assert_eq!(s.line_of(&["listen"], None), Some(4));
        assert_eq!(s.line_of(&["listen"], Some("bad")), Some(5));
        assert_eq!(s.line_of(&["limits", "connections"], None), Some(9));
        assert_eq!(s.line_of(&["server_name"], None), Some(11));
    }

    #[test]
    fn falls_back_to_the_call_line_outside_the_call() {
        let s = site(SRC, 3);
        // `workers` appears in a comment, a string and after the call: none of them count.
        assert_eq!(s.line_of(&["workers"], None), Some(3));
        assert_eq!(s.line_of(&["limits", "nothing"], None), Some(8));
    }

    #[test]
    fn variable_argument_uses_the_call_line() {
        let s = site(
            "local t = { workers = 1 }\nserver(t)\nx = { workers = 2 }\n",
            2,
        );
        assert_eq!(s.line_of(&["workers"], None), Some(2));
    }

    #[test]
    fn no_text_or_line_is_fine() {
        let s = Site {
            file: "x".into(),
            line: None,
            text: None,
        };
        assert_eq!(s.line_of(&["a"], None), None);
        assert_eq!(s.position(), "x");
        let s = site("", 40);
        assert_eq!(s.line_of(&["a"], None), Some(40));
    }
}
