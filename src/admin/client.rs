//! `luahttpd repl SOCKET`: the admin client, one-shot (`-e CHUNK`) or interactive.
//!
//! Interactive mode (standard input and output are terminals, no `-e`) uses rustyline:
//! - prompt `luahttpd> `; a chunk that Lua says is incomplete (its syntax error ends with
//!   `<eof>`, tried both as `<chunk>` and as `return <chunk>`) continues on the next line under
//!   `      ...> `, and the lines are sent together;
//! - Tab completes the identifier before the cursor against the functions the server named in
//!   its hello, adding `(`;
//! - Ctrl-C drops the current line and any pending continuation lines; Ctrl-D on an empty line
//!   leaves;
//! - history in `$XDG_STATE_HOME/luahttpd/repl_history` (default
//!   `~/.local/state/luahttpd/repl_history`); if it cannot be written, the session goes on
//!   without saving it.
//!
//! Without a terminal and without `-e`, chunks are read from standard input (split by the same
//! completeness rule) and evaluated one after another; no line editor is involved.
//!
//! What a chunk printed (`print(...)`) is shown first, on standard output; then its value, by
//! [`crate::admin::format`] (nothing more when it printed and returned no value); errors go to
//! standard error as `error: …`. With `--json`, standard output carries one JSON document per
//! chunk that succeeded, its value exactly as received; standard error carries one JSON line
//! per error, `{"error":"<message>"}`, and per chunk that printed, `{"output":"<text>"}` (so a
//! script reads values from one stream and everything else, still JSON, from the other). Any
//! error makes the exit status 1. If the connection drops, the next chunk reconnects; when the
//! server closed it on purpose (it is stopping), the error says so.

use crate::admin::format::format_value;
use crate::admin::protocol::{
    eval_request, io_cause, parse_response, read_frame, response_output, write_frame, Hello,
    ProtocolError,
};
#[cfg(feature = "repl")]
use rustyline::completion::{Completer, Pair};
#[cfg(feature = "repl")]
use rustyline::error::ReadlineError;
#[cfg(feature = "repl")]
use rustyline::highlight::Highlighter;
#[cfg(feature = "repl")]
use rustyline::hint::Hinter;
#[cfg(feature = "repl")]
use rustyline::history::DefaultHistory;
#[cfg(feature = "repl")]
use rustyline::validate::Validator;
#[cfg(feature = "repl")]
use rustyline::{CompletionType, Config, Context, Editor, Helper};
use serde_json::Value;
use std::io::{self, IsTerminal, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The main prompt.
pub const PROMPT: &str = "luahttpd> ";
/// The prompt for the continuation lines of an incomplete chunk.
pub const CONTINUATION_PROMPT: &str = "      ...> ";
/// How long to wait for the server's hello after connecting.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to look for the server's closing notice once a write failed.
const NOTICE_TIMEOUT: Duration = Duration::from_millis(500);

/// What `luahttpd repl` was asked to do.
#[derive(Debug, Clone)]
pub struct ReplOptions {
    /// The admin socket's path.
    pub socket: PathBuf,
    /// `-e CHUNK`: run this one chunk and exit.
    pub eval: Option<String>,
    /// `--json`: print values as raw JSON (one line each).
    pub json: bool,
}

/// The server's answer to one chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The value, or the Lua error message.
    pub result: Result<Value, String>,
    /// What the chunk printed.
    pub output: String,
}

/// A connection to the admin socket, past the server's hello.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    hello: Hello,
}

impl Client {
    /// Connects and reads the hello. The error names the socket and the cause:
    /// `cannot connect to run/admin.sock: No such file or directory`.
    pub fn connect(path: &Path) -> Result<Client, String> {
        let shown = path.display();
        let mut stream = UnixStream::connect(path)
            .map_err(|e| format!("cannot connect to {shown}: {}", io_cause(&e)))?;
        let _ = stream.set_read_timeout(Some(HELLO_TIMEOUT));
        let first = read_frame(&mut stream).map_err(|e| match &e {
            ProtocolError::Io(io)
                if matches!(
                    io.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                format!("{shown}: no hello from the server within {HELLO_TIMEOUT:?}")
            }
            _ => format!("{shown}: no hello from the server: {e}"),
        })?;
        let hello = Hello::from_json(&first).map_err(|e| format!("{shown}: {e}"))?;
        let _ = stream.set_read_timeout(None);
        Ok(Client { stream, hello })
    }

    /// The server's hello.
    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    /// Sends one chunk and waits for its answer, or `Err` when the connection failed
    /// (`Closing` when the server said why it closed it).
    pub fn eval(&mut self, chunk: &str) -> Result<Answer, ProtocolError> {
        if let Err(e) = write_frame(&mut self.stream, &eval_request(chunk)) {
            // A server that closed on purpose left its reason in our receive buffer.
            return Err(self.closing_notice().unwrap_or(e));
        }
        let answer = read_frame(&mut self.stream)?;
        let result = parse_response(&answer)?;
        Ok(Answer {
            result,
            output: response_output(&answer).to_string(),
        })
    }

    /// The server's `{"closing":…}` notice, if it sent one before closing.
    fn closing_notice(&mut self) -> Option<ProtocolError> {
        let _ = self.stream.set_read_timeout(Some(NOTICE_TIMEOUT));
        let notice = read_frame(&mut self.stream).ok()?;
        match parse_response(&notice) {
            Err(e @ ProtocolError::Closing(_)) => Some(e),
            _ => None,
        }
    }
}

/// Runs `luahttpd repl` and returns the process exit code.
pub fn run(opts: &ReplOptions) -> i32 {
    if let Some(chunk) = &opts.eval {
        return run_once(opts, chunk);
    }
    if io::stdin().is_terminal() && io::stdout().is_terminal() {
        #[cfg(feature = "repl")]
        return interactive(opts);
        #[cfg(not(feature = "repl"))]
        eprintln!(
            "note: this luahttpd is built without the line editor (cargo feature \"repl\"): \
             chunks are read from standard input, one per line; -e CHUNK runs one"
        );
    }
    piped(opts)
}

fn run_once(opts: &ReplOptions, chunk: &str) -> i32 {
    let mut client = match Client::connect(&opts.socket) {
        Ok(c) => c,
        Err(msg) => {
            print_error(&msg, opts.json);
            return 1;
        }
    };
    match client.eval(chunk) {
        Ok(answer) => {
            if show_answer(&answer, opts.json) {
                0
            } else {
                1
            }
        }
        Err(ProtocolError::Closing(why)) => {
            print_error(
                &format!(
                    "{}: the server closed the connection: {why}",
                    opts.socket.display()
                ),
                opts.json,
            );
            1
        }
        Err(e) => {
            print_error(&format!("{}: {e}", opts.socket.display()), opts.json);
            1
        }
    }
}

/// Reads chunks from a non-terminal standard input; exit code 1 if any failed.
fn piped(opts: &ReplOptions) -> i32 {
    let mut input = String::new();
    if let Err(e) = io::stdin().read_to_string(&mut input) {
        print_error(
            &format!("cannot read standard input: {}", io_cause(&e)),
            opts.json,
        );
        return 1;
    }
    let mut session = Session::new(opts);
    let checker = mlua::Lua::new();
    let mut pending = String::new();
    let mut code = 0;
    for line in input.lines() {
        push_line(&mut pending, line);
        if pending.trim().is_empty() || is_incomplete(&checker, &pending) {
            continue;
        }
        if !session.submit(&std::mem::take(&mut pending)) {
            code = 1;
        }
    }
    if !pending.trim().is_empty() && !session.submit(&pending) {
        code = 1;
    }
    code
}

#[cfg(feature = "repl")]
fn interactive(opts: &ReplOptions) -> i32 {
    let mut session = Session::new(opts);
    // Connect at once so that a wrong path is reported before the first prompt.
    if let Err(msg) = session.ensure_connected() {
        print_error(&msg, opts.json);
        return 1;
    }
    let functions = session
        .client
        .as_ref()
        .map(|c| c.hello().functions.clone())
        .unwrap_or_default();
    if let Some(c) = &session.client {
        emit(&format!(
            "connected to luahttpd {} at {}; Tab completes, Ctrl-D leaves\n",
            c.hello().version,
            opts.socket.display()
        ));
    }
    let config = Config::builder()
        .auto_add_history(false)
        .completion_type(CompletionType::List)
        .max_history_size(1000)
        .and_then(|b| b.history_ignore_dups(true))
        .map(|b| b.build())
        .unwrap_or_default();
    let mut rl: Editor<ReplHelper, DefaultHistory> = match Editor::with_config(config) {
        Ok(rl) => rl,
        Err(e) => {
            eprintln!("error: cannot start the line editor: {e}");
            return 1;
        }
    };
    rl.set_helper(Some(ReplHelper { functions }));
    let mut history = HistoryFile::open(&mut rl);

    let checker = mlua::Lua::new();
    let mut pending = String::new();
    loop {
        let prompt = if pending.is_empty() {
            PROMPT
        } else {
            CONTINUATION_PROMPT
        };
        match rl.readline(prompt) {
            Ok(line) => {
                push_line(&mut pending, &line);
                if pending.trim().is_empty() {
                    pending.clear();
                    continue;
                }
                if is_incomplete(&checker, &pending) {
                    continue;
                }
                let chunk = std::mem::take(&mut pending);
                history.add(&mut rl, &chunk);
                session.submit(&chunk);
            }
            Err(ReadlineError::Interrupted) => pending.clear(),
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("error: reading input: {e}");
                return 1;
            }
        }
    }
    0
}

/// The connection (re-made on demand) and how to print.
struct Session<'a> {
    opts: &'a ReplOptions,
    client: Option<Client>,
}

impl<'a> Session<'a> {
    fn new(opts: &'a ReplOptions) -> Self {
        Session { opts, client: None }
    }

    fn ensure_connected(&mut self) -> Result<&mut Client, String> {
        if self.client.is_none() {
            self.client = Some(Client::connect(&self.opts.socket)?);
        }
        self.client
            .as_mut()
            .ok_or_else(|| "not connected".to_string())
    }

    /// Evaluates one chunk and prints the outcome; false if it failed.
    fn submit(&mut self, chunk: &str) -> bool {
        let json = self.opts.json;
        let client = match self.ensure_connected() {
            Ok(c) => c,
            Err(msg) => {
                print_error(&msg, json);
                return false;
            }
        };
        match client.eval(chunk) {
            Ok(answer) => show_answer(&answer, json),
            Err(e) => {
                let msg = match e {
                    ProtocolError::Closing(why) => format!(
                        "{} closed the connection: {why} (the next chunk reconnects)",
                        self.opts.socket.display()
                    ),
                    e => format!(
                        "connection to {} lost: {e} (the next chunk reconnects)",
                        self.opts.socket.display()
                    ),
                };
                print_error(&msg, json);
                self.client = None;
                false
            }
        }
    }
}

/// Shows what a chunk printed, then its value or error; false if it failed.
fn show_answer(answer: &Answer, json: bool) -> bool {
    if !answer.output.is_empty() {
        if json {
            eprint_line(&serde_json::json!({ "output": answer.output }).to_string());
        } else {
            emit(&answer.output);
        }
    }
    match &answer.result {
        // A chunk that printed and returned nothing shows just what it printed.
        Ok(Value::Null) if !json && !answer.output.is_empty() => true,
        Ok(value) => {
            print_value(value, json);
            true
        }
        Err(msg) => {
            print_error(msg, json);
            false
        }
    }
}

fn print_value(value: &Value, json: bool) {
    if json {
        emit(&format!("{value}\n"));
    } else {
        emit(&format_value(value));
    }
}

/// An error on standard error: `error: …`, or `{"error":"…"}` with `--json`.
fn print_error(msg: &str, json: bool) {
    if json {
        eprint_line(&serde_json::json!({ "error": msg }).to_string());
    } else {
        eprint_line(&format!("error: {msg}"));
    }
}

fn eprint_line(line: &str) {
    let mut err = io::stderr().lock();
    let _ = writeln!(err, "{line}");
}

/// Writes to standard output, ignoring a closed pipe (`luahttpd repl … | head`).
fn emit(text: &str) {
    let mut out = io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

fn push_line(pending: &mut String, line: &str) {
    if !pending.is_empty() {
        pending.push('\n');
    }
    pending.push_str(line);
}

/// Whether `chunk` needs more lines: it compiles neither as itself nor as `return <chunk>`,
/// and Lua reports reaching the end of input (`… near <eof>`) for at least one of them.
pub fn is_incomplete(lua: &mlua::Lua, chunk: &str) -> bool {
    // Some(true): compiles; Some(false): needs more input; None: wrong whatever follows.
    let check = |src: &str| match lua.load(src).into_function() {
        Ok(_) => Some(true),
        Err(mlua::Error::SyntaxError {
            message,
            incomplete_input,
        }) if incomplete_input || message.trim_end().ends_with("<eof>") => Some(false),
        Err(_) => None,
    };
    match (check(&format!("return {chunk}")), check(chunk)) {
        (Some(true), _) | (_, Some(true)) => false,
        (a, b) => a.is_some() || b.is_some(),
    }
}

/// Tab completion: the identifier ending at `pos` in `line`, completed against `functions`.
/// Returns where the replaced text starts and the replacements (`name(`; just `name` when a
/// `(` already follows the cursor). Nothing after `.` or `:` (a field or method name).
pub fn complete(functions: &[String], line: &str, pos: usize) -> (usize, Vec<String>) {
    let before = match line.get(..pos) {
        Some(b) => b,
        None => return (pos, Vec::new()),
    };
    let start = before
        .char_indices()
        .rev()
        .take_while(|(_, c)| c.is_ascii_alphanumeric() || *c == '_')
        .last()
        .map(|(i, _)| i)
        .unwrap_or(pos);
    let word = &before[start..];
    if before[..start].ends_with(['.', ':']) || word.starts_with(|c: char| c.is_ascii_digit()) {
        return (pos, Vec::new());
    }
    let paren_follows = line[pos..].starts_with('(');
    let mut out: Vec<String> = functions
        .iter()
        .filter(|f| f.starts_with(word))
        .map(|f| {
            if paren_follows {
                f.clone()
            } else {
                format!("{f}(")
            }
        })
        .collect();
    crate::sort_compact::sort(&mut out);
    out.dedup();
    (start, out)
}

#[cfg(feature = "repl")]
/// rustyline's helper: completion only.
struct ReplHelper {
    functions: Vec<String>,
}

#[cfg(feature = "repl")]
impl Completer for ReplHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let (start, words) = complete(&self.functions, line, pos);
        Ok((
            start,
            words
                .into_iter()
                .map(|w| Pair {
                    display: w.trim_end_matches('(').to_string(),
                    replacement: w,
                })
                .collect(),
        ))
    }
}

#[cfg(feature = "repl")]
impl Hinter for ReplHelper {
    type Hint = String;
}
#[cfg(feature = "repl")]
impl Highlighter for ReplHelper {}
#[cfg(feature = "repl")]
impl Validator for ReplHelper {}
#[cfg(feature = "repl")]
impl Helper for ReplHelper {}

/// Where the history lives: `$XDG_STATE_HOME/luahttpd/repl_history`, or
/// `$HOME/.local/state/luahttpd/repl_history` (XDG: a relative `XDG_STATE_HOME` is ignored).
pub fn history_path() -> Option<PathBuf> {
    let state = match std::env::var_os("XDG_STATE_HOME") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        _ => {
            let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
            PathBuf::from(home).join(".local/state")
        }
    };
    Some(state.join("luahttpd").join("repl_history"))
}

#[cfg(feature = "repl")]
/// The history file, or none once it turned out not to be writable.
struct HistoryFile {
    path: Option<PathBuf>,
}

#[cfg(feature = "repl")]
impl HistoryFile {
    fn open(rl: &mut Editor<ReplHelper, DefaultHistory>) -> HistoryFile {
        let path = history_path().and_then(|p| {
            let dir = p.parent()?;
            match std::fs::create_dir_all(dir) {
                Ok(()) => Some(p),
                Err(e) => {
                    eprintln!(
                        "note: history will not be saved: cannot create {}: {}",
                        dir.display(),
                        io_cause(&e)
                    );
                    None
                }
            }
        });
        if let Some(p) = &path {
            if p.exists() {
                let _ = rl.load_history(p);
            }
        }
        HistoryFile { path }
    }

    fn add(&mut self, rl: &mut Editor<ReplHelper, DefaultHistory>, chunk: &str) {
        let _ = rl.add_history_entry(chunk);
        if let Some(p) = &self.path {
            if let Err(e) = rl.append_history(p) {
                eprintln!(
                    "note: history will not be saved: cannot write {}: {e}",
                    p.display()
                );
                self.path = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fns() -> Vec<String> {
        ["status", "workers", "backends", "shutdown", "reload"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn completes_identifier_before_cursor() {
        assert_eq!(complete(&fns(), "wor", 3), (0, vec!["workers(".into()]));
        assert_eq!(
            complete(&fns(), "x = s", 5),
            (4, vec!["shutdown(".into(), "status(".into()])
        );
        assert_eq!(complete(&fns(), "re()", 2), (0, vec!["reload".into()]));
        assert_eq!(complete(&fns(), "t.st", 4).1, Vec::<String>::new());
        assert_eq!(complete(&fns(), "zzz", 3).1, Vec::<String>::new());
        assert_eq!(complete(&fns(), "", 0).1.len(), 5);
    }

    #[test]
    fn incomplete_chunks() {
        let lua = mlua::Lua::new();
        assert!(is_incomplete(&lua, "for i=1,2 do"));
        assert!(is_incomplete(&lua, "workers("));
        assert!(is_incomplete(&lua, "x = {"));
        assert!(is_incomplete(&lua, "1 +"));
        assert!(is_incomplete(&lua, "[[abc"));
        assert!(!is_incomplete(&lua, "workers()"));
        assert!(!is_incomplete(&lua, "for i=1,2 do end"));
        assert!(!is_incomplete(&lua, "x = = 1"));
        assert!(!is_incomplete(&lua, "end"));
    }

    #[test]
    fn history_path_follows_xdg() {
        // Only checks the shape; the environment is the test runner's.
        if let Some(p) = history_path() {
            assert!(p.ends_with("luahttpd/repl_history"));
        }
    }
}
