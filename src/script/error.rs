//! `RouteError`: what went wrong in a route call, ready for the error log.

use std::fmt;

/// Which limit or rule a failed route call broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteErrorKind {
    /// A Lua error raised by the route function (or by a decision constructor it called).
    Lua,
    /// The instruction budget per call ran out.
    Instructions,
    /// The wall-clock deadline per call passed.
    Deadline,
    /// The state's memory limit was reached.
    Memory,
    /// The route function returned something that is not a valid decision (for example a
    /// `fastcgi` decision naming a backend the config does not define).
    BadDecision,
}

impl RouteErrorKind {
    fn label(self) -> &'static str {
        match self {
            RouteErrorKind::Lua => "Lua error",
            RouteErrorKind::Instructions => "instruction budget exceeded",
            RouteErrorKind::Deadline => "deadline exceeded",
            RouteErrorKind::Memory => "memory limit reached",
            RouteErrorKind::BadDecision => "bad decision",
        }
    }
}

/// A failed route call. The caller answers 500 and logs it (its `Display` is one paragraph:
/// kind, `file:line`, message, traceback) together with the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteError {
    /// What kind of failure this is.
    pub kind: RouteErrorKind,
    /// `file:line` of the Lua code at fault, when known.
    pub location: Option<String>,
    /// The message, without the `file:line: ` prefix Lua puts in front.
    pub message: String,
    /// The Lua stack traceback, one frame per line, when known.
    pub traceback: Option<String>,
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "route: {}", self.kind.label())?;
        if let Some(at) = &self.location {
            write!(f, " at {at}")?;
        }
        write!(f, ": {}", one_line(&self.message))?;
        if let Some(tb) = &self.traceback {
            let frames: Vec<&str> = tb
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && *l != "stack traceback:" && !l.starts_with("__mlua"))
                .collect();
            if !frames.is_empty() {
                write!(f, " (traceback: {})", frames.join(" <- "))?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for RouteError {}

fn one_line(s: &str) -> String {
    s.split(['\r', '\n'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

impl RouteError {
    /// Builds a `RouteError` from an mlua error, splitting off `file:line` and the traceback.
    pub(super) fn from_lua(kind: RouteErrorKind, e: &mlua::Error) -> RouteError {
        let (text, traceback) = flatten(e);
        let (text, tb2) = split_traceback(&text);
        let traceback = traceback.or(tb2);
        let (mut location, message) = split_location(&text);
        if location.is_none() {
            // Errors raised by Rust (req fields, decisions) carry no position: take the first
            // Lua frame of the traceback.
            location = traceback.as_deref().and_then(first_lua_frame);
        }
        RouteError {
            kind,
            location,
            message,
            traceback,
        }
    }

    /// A `RouteError` with a message of our own.
    pub(super) fn new(kind: RouteErrorKind, location: Option<String>, message: String) -> Self {
        RouteError {
            kind,
            location,
            message,
            traceback: None,
        }
    }
}

/// The innermost message of an mlua error and the outermost traceback mlua recorded.
fn flatten(e: &mlua::Error) -> (String, Option<String>) {
    match e {
        mlua::Error::CallbackError { traceback, cause } => {
            let (text, inner) = flatten(cause);
            (text, inner.or_else(|| Some(traceback.clone())))
        }
        mlua::Error::WithContext { context, cause } => {
            let (text, tb) = flatten(cause);
            (format!("{context}: {text}"), tb)
        }
        mlua::Error::RuntimeError(m) => (m.clone(), None),
        mlua::Error::MemoryError(m) => (m.clone(), None),
        other => (other.to_string(), None),
    }
}

fn split_traceback(text: &str) -> (String, Option<String>) {
    match text.find("\nstack traceback:") {
        Some(i) => (text[..i].to_string(), Some(text[i + 1..].to_string())),
        None => (text.to_string(), None),
    }
}

/// `"site.lua:12: boom"` → `(Some("site.lua:12"), "boom")`.
pub(super) fn split_location(text: &str) -> (Option<String>, String) {
    for (i, _) in text.match_indices(':') {
        if i == 0 {
            continue;
        }
        let rest = &text[i + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            continue;
        }
        if let Some(msg) = rest[digits..].strip_prefix(": ") {
            return (Some(text[..i + 1 + digits].to_string()), msg.to_string());
        }
    }
    (None, text.to_string())
}

/// `file:line` of the first frame of a traceback that is Lua code of the config.
fn first_lua_frame(tb: &str) -> Option<String> {
    tb.lines()
        .map(str::trim)
        .filter(|l| {
            !l.starts_with('[')
                && !l.starts_with("__mlua")
                && !l.starts_with("luahttpd ")
                && !l.starts_with('(')
        })
        .find_map(|l| split_location(l).0)
}
