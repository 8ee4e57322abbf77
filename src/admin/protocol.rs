//! The admin protocol: how `luahttpd repl` talks to the watcher over its admin Unix socket.
//!
//! This comment is the specification; both sides use the helpers below.
//!
//! # Transport
//!
//! A Unix stream socket (the path comes from the config). Every message, in both directions, is
//! a **frame**: a 4-byte big-endian length `N`, then `N` bytes of one UTF-8 JSON document.
//! `N` is at most [`MAX_FRAME`] (1 MiB). A peer that reads a larger length answers nothing and
//! closes the connection ([`ProtocolError::TooLarge`]); the stream can no longer be framed.
//! A frame whose bytes are not valid JSON is a [`ProtocolError::Json`]; the framing is intact,
//! so the server answers it with an error response and keeps the connection.
//!
//! # Conversation
//!
//! 1. On connect the **server speaks first**, with a hello ([`hello`], read by [`Hello::from_json`]):
//!    ```json
//!    {"hello":"luahttpd","version":"0.1.0",
//!     "functions":["status","workers","backends","shutdown","reload","reopen_logs","config","certificates","help"]}
//!    ```
//!    `functions` are the globals the server offers; the client completes them with Tab.
//!    [`FUNCTIONS`] is the list the watcher is expected to provide.
//! 2. The client sends a request ([`eval_request`], read by [`parse_request`]):
//!    `{"eval":"<lua chunk>"}`. The chunk is sent as the user typed it (possibly several lines
//!    joined with `\n`); it may be a bare expression such as `workers()`.
//! 3. The server answers ([`ok_response`] / [`error_response`], read by [`parse_response`]):
//!    `{"ok":true,"value":<json>}` or `{"ok":false,"error":"<message>"}`; either carries
//!    `"output":"<text>"` ([`with_output`], read by [`response_output`]) when the chunk called
//!    `print`, which writes as Lua's does (`tostring` of each argument, tabs, a newline).
//! 4. Steps 2–3 repeat: one request at a time per connection (the client waits for the answer
//!    before sending the next), any number of requests per connection. A client that sends
//!    several at once gets the answers in request order. Either side may close at any time; a
//!    request in flight when the server closes gets no answer.
//! 5. When the server closes a connection on its own (it is stopping; the client was idle for
//!    5 minutes), its last frame is `{"closing":"<reason>"}` ([`closing`]; [`parse_response`]
//!    gives [`ProtocolError::Closing`]). A client whose write fails finds it still readable.
//!
//! A request that is not an object with a string `eval` gets
//! `{"ok":false,"error":"bad request: …"}` and the connection stays open.
//!
//! # Evaluation (server side; [`eval_chunk`] implements it)
//!
//! The server compiles the chunk with the chunk name [`CHUNK_NAME`] (`=repl`, so messages read
//! `repl:1: …`):
//! - first as `return <chunk>`; if that compiles, it runs that (so `workers()` and `1+1` give
//!   their value);
//! - otherwise as `<chunk>` itself (statements such as `for i=1,2 do print(i) end` or
//!   `x = 1`); if that does not compile either, the error is this second compile's message.
//!
//! The value of a call that returns nothing is `null`; one value is that value; several values
//! are a JSON array of them. A Lua error gives `{"ok":false,"error":"repl:1: …"}` (the message
//! without mlua's stack traceback). The server may run the chunk with limits of its own
//! (instructions, time); hitting one is an error response like any other. The watcher runs
//! chunks in its admin evaluator process ([`super::evaluator`]), 10 million instructions and
//! 5 s of run time each; past the time limit the evaluator is replaced and its globals are gone.
//!
//! # Lua values as JSON ([`lua_to_json`])
//!
//! | Lua | JSON |
//! |---|---|
//! | `nil` | `null` |
//! | boolean | boolean |
//! | integer, float | number (NaN and ±inf become the strings `"nan"`, `"inf"`, `"-inf"`) |
//! | string | string (invalid UTF-8 replaced, lossily) |
//! | table with keys exactly `1..n`, `n ≥ 1` | array |
//! | empty table | `[]` |
//! | any other table | object: keys as strings, sorted (integers numerically, before other keys, then by string), except that `slot`, `name`, `pid`, `generation`, `state` come first, in that order, when present |
//! | function, userdata, thread, … | `"<function>"`, `"<userdata>"`, `"<thread>"`, … |
//! | a table whose metatable has `__tostring` | the string it returns, as `print` shows it (`shared.sessions` → `"shared dict 'sessions' (…)"`); if it fails or returns no string, the rows above; it runs in the evaluator before the answer is sent, so the chunk's 5 s limit bounds it (not its instruction count) |
//! | a table inside itself (a cycle), or nesting deeper than [`MAX_DEPTH`] | `"<…>"` |
//!
//! Other metamethods are ignored (`__pairs`, `__index`, `__tojson` do nothing). Objects keep their key
//! order on the wire (`serde_json` with `preserve_order`), so the client shows columns in the
//! order the server chose.
//!
//! # What the client shows
//!
//! The REPL prints an array of objects as a table whose columns are the keys in the order
//! received, so functions that list things (`workers()`, `backends()`) should return sequences
//! of tables; [`lua_to_json`] puts `slot`, `name`, `pid`, `generation`, `state` first. An
//! object prints as `key  value` lines, a string as itself, `null` as `nil`. `luahttpd repl
//! SOCKET -e CHUNK --json` prints the value exactly as received, for scripts; its errors (and
//! printed output) go to standard error as JSON lines (see [`super::client`]).
//!
//! # Server loop sketch
//!
//! ```text
//! accept → write encode_frame(&hello(VERSION, FUNCTIONS)) → loop {
//!     decoder.feed(bytes read);                       // FrameDecoder, non-blocking
//!     while let Some(req) = decoder.next_frame()? {   // Err(TooLarge) → close
//!         queue encode_response(&answer(&lua, req))   // answer(): parse + eval + convert
//!     }
//! }
//! ```
//! A frame that is not JSON comes out of [`FrameDecoder::next_frame`] as `Err(Json)`; answer it
//! with `error_response("bad request: …")` and go on.

use serde_json::{Map, Number, Value};
use std::collections::HashSet;
use std::fmt;
use std::io::{self, Read, Write};

/// The largest frame payload, in bytes, either side accepts (1 MiB).
pub const MAX_FRAME: usize = 1 << 20;

/// The deepest table nesting [`lua_to_json`] converts; deeper tables become `"<…>"`.
pub const MAX_DEPTH: usize = 16;

/// The value of the hello's `"hello"` key.
pub const PRODUCT: &str = "luahttpd";

/// The functions the watcher offers to admin chunks (announced in the hello).
pub const FUNCTIONS: &[&str] = &[
    "status",
    "workers",
    "backends",
    "shutdown",
    "reload",
    "reopen_logs",
    "config",
    "certificates",
    "help",
];

/// The chunk name the server compiles requests under (`=` means "use as is" in Lua messages).
pub const CHUNK_NAME: &str = "=repl";

/// What stands in for a cycle or a table nested deeper than [`MAX_DEPTH`].
pub const ELIDED: &str = "<…>";

/// Keys of an object that come first, in this order, when present.
const FIRST_KEYS: &[&str] = &["slot", "name", "pid", "generation", "state"];

/// A failure to read or write a frame.
#[derive(Debug)]
pub enum ProtocolError {
    /// The socket failed.
    Io(io::Error),
    /// The peer closed the connection cleanly, between frames.
    Closed,
    /// The peer closed the connection in the middle of a frame.
    Truncated,
    /// A frame announced (or would need) more than [`MAX_FRAME`] bytes; the connection must close.
    TooLarge(usize),
    /// A frame's payload is not a JSON document.
    Json(serde_json::Error),
    /// A well-formed JSON document that is not the message expected here.
    Unexpected(String),
    /// The server said it closes the connection, and why (`{"closing":"…"}`).
    Closing(String),
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::Io(e) => write!(f, "{}", io_cause(e)),
            ProtocolError::Closed => write!(f, "connection closed by the peer"),
            ProtocolError::Truncated => write!(f, "connection closed in the middle of a frame"),
            ProtocolError::TooLarge(n) => {
                write!(
                    f,
                    "frame of {n} bytes is over the limit of {MAX_FRAME} bytes"
                )
            }
            ProtocolError::Json(e) => write!(f, "frame is not valid JSON: {e}"),
            ProtocolError::Unexpected(what) => write!(f, "unexpected message: {what}"),
            ProtocolError::Closing(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for ProtocolError {}

impl From<io::Error> for ProtocolError {
    fn from(e: io::Error) -> Self {
        ProtocolError::Io(e)
    }
}

/// An I/O error in words, without Rust's " (os error N)" suffix: "No such file or directory".
pub fn io_cause(e: &io::Error) -> String {
    let s = e.to_string();
    match s.rfind(" (os error ") {
        Some(i) if s.ends_with(')') => s[..i].to_string(),
        _ => s,
    }
}

// ---------------------------------------------------------------------------------------------
// Framing
// ---------------------------------------------------------------------------------------------

/// One frame's bytes (length prefix and JSON), ready to write; `TooLarge` over [`MAX_FRAME`].
pub fn encode_frame(value: &Value) -> Result<Vec<u8>, ProtocolError> {
    encode_frame_within(value, MAX_FRAME)
}

/// [`encode_frame`] with another payload limit.
pub fn encode_frame_within(value: &Value, limit: usize) -> Result<Vec<u8>, ProtocolError> {
    let body = serde_json::to_vec(value).map_err(ProtocolError::Json)?;
    if body.len() > limit {
        return Err(ProtocolError::TooLarge(body.len()));
    }
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Writes one frame and flushes (blocking).
pub fn write_frame(w: &mut impl Write, value: &Value) -> Result<(), ProtocolError> {
    let bytes = encode_frame(value)?;
    w.write_all(&bytes)?;
    w.flush()?;
    Ok(())
}

/// Reads one frame (blocking). `Closed` on a clean end of stream before the length prefix.
pub fn read_frame(r: &mut impl Read) -> Result<Value, ProtocolError> {
    read_frame_within(r, MAX_FRAME)
}

/// [`read_frame`] with another payload limit.
pub fn read_frame_within(r: &mut impl Read, limit: usize) -> Result<Value, ProtocolError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Err(ProtocolError::Closed),
            Ok(0) => return Err(ProtocolError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ProtocolError::Io(e)),
        }
    }
    let n = u32::from_be_bytes(len) as usize;
    if n > limit {
        return Err(ProtocolError::TooLarge(n));
    }
    let mut body = vec![0u8; n];
    r.read_exact(&mut body).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            ProtocolError::Truncated
        } else {
            ProtocolError::Io(e)
        }
    })?;
    serde_json::from_slice(&body).map_err(ProtocolError::Json)
}

/// Incremental, sans-IO frame decoder for a non-blocking loop: feed it whatever bytes arrived,
/// then take complete frames out with [`FrameDecoder::next_frame`] until it returns `Ok(None)`.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Start of the undecoded bytes in `buf` (consumed bytes are dropped lazily).
    start: usize,
    /// The largest payload accepted.
    limit: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::with_limit(MAX_FRAME)
    }
}

impl FrameDecoder {
    /// An empty decoder for frames of at most [`MAX_FRAME`] bytes.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty decoder for frames of at most `limit` bytes (the watcher's link to its admin
    /// evaluator carries a whole client frame plus a few fields).
    pub fn with_limit(limit: usize) -> Self {
        FrameDecoder {
            buf: Vec::new(),
            start: 0,
            limit,
        }
    }

    /// Appends bytes read from the socket.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed. `Err(TooLarge)` is final
    /// (close the connection); `Err(Json)` consumed its frame and decoding may go on.
    pub fn next_frame(&mut self) -> Result<Option<Value>, ProtocolError> {
        let avail = &self.buf[self.start..];
        if avail.len() < 4 {
            self.compact();
            return Ok(None);
        }
        let n = u32::from_be_bytes([avail[0], avail[1], avail[2], avail[3]]) as usize;
        if n > self.limit {
            return Err(ProtocolError::TooLarge(n));
        }
        if avail.len() < 4 + n {
            self.compact();
            return Ok(None);
        }
        let parsed = serde_json::from_slice(&avail[4..4 + n]);
        self.start += 4 + n;
        parsed.map(Some).map_err(ProtocolError::Json)
    }

    /// How many bytes are buffered and not yet decoded (a partial frame, if non-zero at EOF).
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

/// The server's greeting: `{"hello":"luahttpd","version":…,"functions":[…]}`.
pub fn hello(version: &str, functions: &[&str]) -> Value {
    let mut m = Map::new();
    m.insert("hello".into(), Value::from(PRODUCT));
    m.insert("version".into(), Value::from(version));
    m.insert(
        "functions".into(),
        Value::Array(functions.iter().map(|f| Value::from(*f)).collect()),
    );
    Value::Object(m)
}

/// The server's greeting as the client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The server's version, `x.y.z`.
    pub version: String,
    /// The global functions the server offers (for completion).
    pub functions: Vec<String>,
}

impl Hello {
    /// Reads a hello message; `Unexpected` if it is anything else.
    pub fn from_json(v: &Value) -> Result<Hello, ProtocolError> {
        if v.get("hello").and_then(Value::as_str) != Some(PRODUCT) {
            return Err(ProtocolError::Unexpected(format!(
                "expected a {PRODUCT} hello, got {}",
                truncate(&v.to_string(), 200)
            )));
        }
        let version = v
            .get("version")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let functions = v
            .get("functions")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        Ok(Hello { version, functions })
    }
}

/// A request: `{"eval":"<chunk>"}`.
pub fn eval_request(chunk: &str) -> Value {
    let mut m = Map::new();
    m.insert("eval".into(), Value::from(chunk));
    Value::Object(m)
}

/// The chunk of a request (server side), or the message of a `bad request: …` error response.
pub fn parse_request(v: &Value) -> Result<String, String> {
    match v.get("eval") {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err("bad request: \"eval\" must be a string".into()),
        None => Err("bad request: expected {\"eval\":\"<lua chunk>\"}".into()),
    }
}

/// A success response: `{"ok":true,"value":…}`.
pub fn ok_response(value: Value) -> Value {
    let mut m = Map::new();
    m.insert("ok".into(), Value::Bool(true));
    m.insert("value".into(), value);
    Value::Object(m)
}

/// An error response: `{"ok":false,"error":"…"}`.
pub fn error_response(message: &str) -> Value {
    let mut m = Map::new();
    m.insert("ok".into(), Value::Bool(false));
    m.insert("error".into(), Value::from(message));
    Value::Object(m)
}

/// A response with what the chunk printed: `"output":"…"` added when `output` is not empty.
pub fn with_output(mut response: Value, output: &str) -> Value {
    if let (Value::Object(m), false) = (&mut response, output.is_empty()) {
        m.insert("output".into(), Value::from(output));
    }
    response
}

/// What a response's chunk printed (empty when nothing).
pub fn response_output(v: &Value) -> &str {
    v.get("output").and_then(Value::as_str).unwrap_or("")
}

/// The last frame the server sends on a connection it closes on its own (it is stopping, or
/// the client was idle too long): `{"closing":"<reason>"}`.
pub fn closing(reason: &str) -> Value {
    let mut m = Map::new();
    m.insert("closing".into(), Value::from(reason));
    Value::Object(m)
}

/// A response as the client reads it: `Ok(Ok(value))`, `Ok(Err(message))`, `Closing` for the
/// server's closing notice, or `Unexpected`.
pub fn parse_response(v: &Value) -> Result<Result<Value, String>, ProtocolError> {
    if let Some(reason) = v.get("closing").and_then(Value::as_str) {
        return Err(ProtocolError::Closing(reason.to_string()));
    }
    match v.get("ok") {
        Some(Value::Bool(true)) => Ok(Ok(v.get("value").cloned().unwrap_or(Value::Null))),
        Some(Value::Bool(false)) => Ok(Err(v
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("unknown error")
            .to_string())),
        _ => Err(ProtocolError::Unexpected(format!(
            "expected a response, got {}",
            truncate(&v.to_string(), 200)
        ))),
    }
}

/// A response's frame bytes; a value too large for a frame becomes an error response instead.
pub fn encode_response(response: &Value) -> Vec<u8> {
    match encode_frame(response) {
        Ok(bytes) => bytes,
        Err(e) => {
            let msg = format!("the answer is too large to send: {e}");
            // A short error message always fits in a frame.
            encode_frame(&error_response(&msg)).unwrap_or_default()
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Server side: evaluation and Lua → JSON
// ---------------------------------------------------------------------------------------------

/// Evaluates a request chunk in `lua` by the rule above (`return <chunk>` first, then
/// `<chunk>`) and converts its results with [`lua_to_json`]; `Err` holds the Lua message.
pub fn eval_chunk(lua: &mlua::Lua, chunk: &str) -> Result<Value, String> {
    let func = compile_chunk(lua, chunk)?;
    let values: mlua::MultiValue = func.call(()).map_err(|e| lua_error_message(&e))?;
    Ok(values_to_json(&values))
}

/// Compiles a request chunk by the rule above (`return <chunk>` first, then `<chunk>`).
pub fn compile_chunk(lua: &mlua::Lua, chunk: &str) -> Result<mlua::Function, String> {
    let with_return = format!("return {chunk}");
    match lua
        .load(with_return.as_str())
        .set_name(CHUNK_NAME)
        .into_function()
    {
        Ok(f) => Ok(f),
        Err(_) => lua
            .load(chunk)
            .set_name(CHUNK_NAME)
            .into_function()
            .map_err(|e| lua_error_message(&e)),
    }
}

/// A chunk's results as one JSON value: `null` for none, the value for one, else an array.
pub fn values_to_json(values: &mlua::MultiValue) -> Value {
    match values.len() {
        0 => Value::Null,
        1 => lua_to_json(&values[0]),
        _ => Value::Array(values.iter().map(lua_to_json).collect()),
    }
}

/// The answer to one request frame: parses it, evaluates it with [`eval_chunk`], and builds
/// the response (`encode_response` turns it into bytes).
pub fn answer(lua: &mlua::Lua, request: &Value) -> Value {
    match parse_request(request).and_then(|chunk| eval_chunk(lua, &chunk)) {
        Ok(v) => ok_response(v),
        Err(msg) => error_response(&msg),
    }
}

/// A Lua error as a one-paragraph message: `repl:1: attempt to call a nil value (global 'x')`,
/// without mlua's stack traceback or wrapper text.
pub fn lua_error_message(e: &mlua::Error) -> String {
    let raw = match e {
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        mlua::Error::RuntimeError(m) | mlua::Error::MemoryError(m) => m.clone(),
        mlua::Error::CallbackError { cause, .. } => return lua_error_message(cause),
        mlua::Error::WithContext { cause, .. } => return lua_error_message(cause),
        other => other.to_string(),
    };
    match raw.find("\nstack traceback:") {
        Some(i) => raw[..i].to_string(),
        None => raw,
    }
}

/// Converts a Lua value to JSON by the table in the module documentation.
pub fn lua_to_json(value: &mlua::Value) -> Value {
    let mut path = HashSet::new();
    convert(value, 0, &mut path)
}

fn convert(value: &mlua::Value, depth: usize, path: &mut HashSet<usize>) -> Value {
    use mlua::Value as L;
    match value {
        L::Nil => Value::Null,
        L::Boolean(b) => Value::Bool(*b),
        L::Integer(i) => Value::from(*i),
        L::Number(f) => float_to_json(*f),
        L::String(s) => Value::String(String::from_utf8_lossy(&s.as_bytes()).into_owned()),
        L::Table(t) => {
            if let Some(shown) = shown_by_tostring(t) {
                return Value::String(shown);
            }
            let id = t.to_pointer() as usize;
            if depth >= MAX_DEPTH || path.contains(&id) {
                return Value::from(ELIDED);
            }
            path.insert(id);
            let v = convert_table(t, depth, path);
            path.remove(&id);
            v
        }
        other => Value::String(format!("<{}>", other.type_name())),
    }
}

/// What the value's own `__tostring` makes of it, if its metatable has one that answers with a
/// string (a shared dictionary names itself this way, where its fields would be twelve
/// functions).
fn shown_by_tostring(t: &mlua::Table) -> Option<String> {
    let f: mlua::Function = t.metatable()?.raw_get("__tostring").ok()?;
    let s: mlua::String = f.call(t).ok()?;
    Some(String::from_utf8_lossy(&s.as_bytes()).into_owned())
}

fn float_to_json(f: f64) -> Value {
    match Number::from_f64(f) {
        Some(n) => Value::Number(n),
        None if f.is_nan() => Value::from("nan"),
        None if f > 0.0 => Value::from("inf"),
        None => Value::from("-inf"),
    }
}

/// How an object key sorts: first keys by their rank, then integers, then strings.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum KeyRank {
    First(usize),
    Int(i64),
    Other(String),
}

fn convert_table(t: &mlua::Table, depth: usize, path: &mut HashSet<usize>) -> Value {
    let mut entries: Vec<(mlua::Value, mlua::Value)> = Vec::new();
    for pair in t.pairs::<mlua::Value, mlua::Value>() {
        match pair {
            Ok(kv) => entries.push(kv),
            Err(_) => continue,
        }
    }
    if entries.is_empty() {
        return Value::Array(Vec::new());
    }
    // A sequence: every key an integer in 1..=n, n = number of keys (so no duplicates, no gaps).
    let n = entries.len();
    let is_seq = entries
        .iter()
        .all(|(k, _)| matches!(k, mlua::Value::Integer(i) if *i >= 1 && (*i as usize) <= n));
    if is_seq {
        let mut slots: Vec<Value> = vec![Value::Null; n];
        for (k, v) in &entries {
            if let mlua::Value::Integer(i) = k {
                slots[(*i as usize) - 1] = convert(v, depth + 1, path);
            }
        }
        return Value::Array(slots);
    }
    let mut keyed: Vec<(KeyRank, String, &mlua::Value)> = entries
        .iter()
        .map(|(k, v)| {
            let name = key_to_string(k);
            let rank = match (k, FIRST_KEYS.iter().position(|f| *f == name)) {
                (mlua::Value::String(_), Some(p)) => KeyRank::First(p),
                (mlua::Value::Integer(i), _) => KeyRank::Int(*i),
                _ => KeyRank::Other(name.clone()),
            };
            (rank, name, v)
        })
        .collect();
    crate::sort_compact::sort_by(&mut keyed, |a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    let mut m = Map::new();
    for (_, name, v) in keyed {
        let converted = convert(v, depth + 1, path);
        // Two keys with the same text (1 and "1"): the first in sorted order wins.
        m.entry(name).or_insert(converted);
    }
    Value::Object(m)
}

fn key_to_string(k: &mlua::Value) -> String {
    use mlua::Value as L;
    match k {
        L::String(s) => String::from_utf8_lossy(&s.as_bytes()).into_owned(),
        L::Integer(i) => i.to_string(),
        L::Number(f) => f.to_string(),
        L::Boolean(b) => b.to_string(),
        other => format!("<{}>", other.type_name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn frame_round_trip_and_size() {
        let v = json!({"eval": "workers()"});
        let bytes = encode_frame(&v).expect("encode");
        assert_eq!(&bytes[..4], &(bytes.len() as u32 - 4).to_be_bytes());
        let mut cur = io::Cursor::new(bytes);
        assert_eq!(read_frame(&mut cur).expect("read"), v);
        assert!(matches!(read_frame(&mut cur), Err(ProtocolError::Closed)));
    }

    #[test]
    fn frame_exactly_at_limit_passes_one_over_fails() {
        // A JSON string of MAX_FRAME - 2 characters plus its quotes is exactly MAX_FRAME bytes.
        let at = Value::String("a".repeat(MAX_FRAME - 2));
        let bytes = encode_frame(&at).expect("at the limit");
        assert_eq!(bytes.len(), 4 + MAX_FRAME);
        assert_eq!(read_frame(&mut io::Cursor::new(bytes)).expect("read"), at);
        let over = Value::String("a".repeat(MAX_FRAME - 1));
        assert!(matches!(
            encode_frame(&over),
            Err(ProtocolError::TooLarge(n)) if n == MAX_FRAME + 1
        ));
    }

    #[test]
    fn oversized_length_prefix_is_refused_without_reading() {
        let mut bytes = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        assert!(matches!(
            read_frame(&mut io::Cursor::new(bytes.clone())),
            Err(ProtocolError::TooLarge(_))
        ));
        let mut d = FrameDecoder::new();
        d.feed(&bytes);
        assert!(matches!(d.next_frame(), Err(ProtocolError::TooLarge(_))));
    }

    #[test]
    fn truncated_frames() {
        assert!(matches!(
            read_frame(&mut io::Cursor::new(vec![0, 0])),
            Err(ProtocolError::Truncated)
        ));
        assert!(matches!(
            read_frame(&mut io::Cursor::new(vec![0, 0, 0, 5, b'{'])),
            Err(ProtocolError::Truncated)
        ));
    }

    #[test]
    fn decoder_handles_partial_and_multiple_frames() {
        let a = encode_frame(&json!({"eval": "a"})).expect("a");
        let b = encode_frame(&json!({"eval": "bb"})).expect("b");
        let mut all = a.clone();
        all.extend_from_slice(&b);
        // Byte by byte.
        let mut d = FrameDecoder::new();
        let mut got = Vec::new();
        for byte in &all {
            d.feed(std::slice::from_ref(byte));
            while let Some(v) = d.next_frame().expect("decode") {
                got.push(v);
            }
        }
        assert_eq!(got, vec![json!({"eval": "a"}), json!({"eval": "bb"})]);
        assert_eq!(d.buffered(), 0);
        // Both at once, plus half of a third.
        let mut d = FrameDecoder::new();
        d.feed(&all);
        d.feed(&a[..3]);
        assert_eq!(d.next_frame().expect("1"), Some(json!({"eval": "a"})));
        assert_eq!(d.next_frame().expect("2"), Some(json!({"eval": "bb"})));
        assert_eq!(d.next_frame().expect("3"), None);
        assert_eq!(d.buffered(), 3);
        d.feed(&a[3..]);
        assert_eq!(d.next_frame().expect("4"), Some(json!({"eval": "a"})));
    }

    #[test]
    fn decoder_bad_json_is_consumed_and_decoding_goes_on() {
        let mut d = FrameDecoder::new();
        d.feed(&[0, 0, 0, 3]);
        d.feed(b"{x}");
        d.feed(&encode_frame(&json!(1)).expect("1"));
        assert!(matches!(d.next_frame(), Err(ProtocolError::Json(_))));
        assert_eq!(d.next_frame().expect("next"), Some(json!(1)));
    }

    #[test]
    fn messages() {
        let h = hello("1.2.3", FUNCTIONS);
        assert_eq!(
            h.to_string(),
            r#"{"hello":"luahttpd","version":"1.2.3","functions":["status","workers","backends","shutdown","reload","reopen_logs","config","certificates","help"]}"#
        );
        let parsed = Hello::from_json(&h).expect("hello");
        assert_eq!(parsed.version, "1.2.3");
        assert_eq!(parsed.functions.len(), FUNCTIONS.len());
        assert!(Hello::from_json(&json!({"ok": true})).is_err());
        assert_eq!(eval_request("x").to_string(), r#"{"eval":"x"}"#);
        assert_eq!(parse_request(&eval_request("x")), Ok("x".into()));
        assert!(parse_request(&json!({"eval": 1})).is_err());
        assert!(parse_request(&json!([1])).is_err());
        assert_eq!(
            ok_response(json!(1)).to_string(),
            r#"{"ok":true,"value":1}"#
        );
        assert_eq!(
            error_response("e").to_string(),
            r#"{"ok":false,"error":"e"}"#
        );
        assert_eq!(
            parse_response(&ok_response(json!(1))).expect("ok"),
            Ok(json!(1))
        );
        assert_eq!(
            parse_response(&error_response("e")).expect("err"),
            Err("e".into())
        );
        assert!(parse_response(&json!({})).is_err());
    }

    #[test]
    fn output_and_closing_notice() {
        let r = with_output(ok_response(json!(1)), "a\tb\n");
        assert_eq!(r.to_string(), r#"{"ok":true,"value":1,"output":"a\tb\n"}"#);
        assert_eq!(response_output(&r), "a\tb\n");
        assert_eq!(parse_response(&r).expect("ok"), Ok(json!(1)));
        assert_eq!(with_output(error_response("e"), ""), error_response("e"));
        assert_eq!(response_output(&error_response("e")), "");
        let c = closing("the server is stopping");
        assert_eq!(c.to_string(), r#"{"closing":"the server is stopping"}"#);
        match parse_response(&c) {
            Err(ProtocolError::Closing(why)) => assert_eq!(why, "the server is stopping"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn too_large_answer_becomes_an_error_response() {
        let big = ok_response(Value::String("a".repeat(MAX_FRAME)));
        let bytes = encode_response(&big);
        let v = read_frame(&mut io::Cursor::new(bytes)).expect("frame");
        assert_eq!(v["ok"], json!(false));
        assert!(v["error"].as_str().expect("msg").contains("too large"));
    }

    fn eval(lua: &mlua::Lua, chunk: &str) -> Value {
        eval_chunk(lua, chunk).expect(chunk)
    }

    #[test]
    fn lua_to_json_scalars_and_sequences() {
        let lua = mlua::Lua::new();
        assert_eq!(eval(&lua, "nil"), Value::Null);
        assert_eq!(eval(&lua, "true"), json!(true));
        assert_eq!(eval(&lua, "42"), json!(42));
        assert_eq!(eval(&lua, "1.5"), json!(1.5));
        assert_eq!(eval(&lua, "0/0"), json!("nan"));
        assert_eq!(eval(&lua, "-1/0"), json!("-inf"));
        assert_eq!(eval(&lua, "'hé'"), json!("hé"));
        assert_eq!(eval(&lua, "'\\xff'"), json!("\u{fffd}"));
        assert_eq!(eval(&lua, "{}"), json!([]));
        assert_eq!(eval(&lua, "{1, 'a', {}}"), json!([1, "a", []]));
        // A gap or an extra key makes it an object.
        assert_eq!(eval(&lua, "{[1]=1, [3]=3}"), json!({"1": 1, "3": 3}));
        assert_eq!(eval(&lua, "{1, x=2}"), json!({"1": 1, "x": 2}));
        assert_eq!(eval(&lua, "print"), json!("<function>"));
        assert_eq!(eval(&lua, "coroutine.create(print)"), json!("<thread>"));
        assert_eq!(eval(&lua, "1, 'b'"), json!([1, "b"]));
        assert_eq!(eval(&lua, "x = 1"), Value::Null);
        // A table that names itself with __tostring is shown by it, as print shows it; one
        // whose __tostring fails or answers no string is shown by its fields.
        assert_eq!(
            eval(
                &lua,
                "setmetatable({a = 1}, {__tostring = function(t) return 'T' .. t.a end})"
            ),
            json!("T1")
        );
        assert_eq!(
            eval(
                &lua,
                "{ d = setmetatable({}, {__tostring = function() return 'dict' end}) }"
            ),
            json!({"d": "dict"})
        );
        assert_eq!(
            eval(
                &lua,
                "setmetatable({a = 1}, {__tostring = function() error('no') end})"
            ),
            json!({"a": 1})
        );
        assert_eq!(
            eval(
                &lua,
                "setmetatable({a = 1}, {__tostring = function() return {} end})"
            ),
            json!({"a": 1})
        );
        assert_eq!(eval(&lua, "setmetatable({a = 1}, {})"), json!({"a": 1}));
    }

    #[test]
    fn lua_to_json_key_order() {
        let lua = mlua::Lua::new();
        let v = eval(
            &lua,
            "{ zeta=1, state='busy', alpha=2, pid=7, slot=0, [10]='t', [2]='w', generation=3, name='w0' }",
        );
        let keys: Vec<&str> = v
            .as_object()
            .expect("object")
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(
            keys,
            [
                "slot",
                "name",
                "pid",
                "generation",
                "state",
                "2",
                "10",
                "alpha",
                "zeta"
            ]
        );
        assert_eq!(
            v.to_string(),
            r#"{"slot":0,"name":"w0","pid":7,"generation":3,"state":"busy","2":"w","10":"t","alpha":2,"zeta":1}"#
        );
    }

    #[test]
    fn lua_to_json_cycles_and_depth() {
        let lua = mlua::Lua::new();
        assert_eq!(
            eval(
                &lua,
                "(function() local t = {a=1}; t.self = t; return t end)()"
            ),
            json!({"a": 1, "self": ELIDED})
        );
        // A table shared twice (not a cycle) is shown both times.
        assert_eq!(
            eval(&lua, "(function() local s = {1}; return {a=s, b=s} end)()"),
            json!({"a": [1], "b": [1]})
        );
        let deep = eval(
            &lua,
            "(function() local t = {} local c = t for i=1,20 do c.n = {} c = c.n end return t end)()",
        );
        let mut cur = &deep;
        let mut levels = 0;
        while let Some(next) = cur.get("n") {
            cur = next;
            levels += 1;
        }
        assert_eq!(levels, MAX_DEPTH);
        assert_eq!(cur, &json!(ELIDED));
    }

    #[test]
    fn eval_errors_carry_chunk_and_line() {
        let lua = mlua::Lua::new();
        assert_eq!(
            eval_chunk(&lua, "boom()"),
            Err("repl:1: attempt to call a nil value (global 'boom')".into())
        );
        let e = eval_chunk(&lua, "local x =\n\nerror('bad')").expect_err("error");
        assert_eq!(e, "repl:3: bad");
        let e = eval_chunk(&lua, "for").expect_err("syntax");
        assert!(e.starts_with("repl:1:"), "{e}");
        assert_eq!(
            answer(&lua, &eval_request("1+1")),
            json!({"ok": true, "value": 2})
        );
        assert_eq!(answer(&lua, &json!({}))["ok"], json!(false));
    }

    #[test]
    fn io_cause_drops_os_error_suffix() {
        let e = io::Error::from_raw_os_error(2);
        assert_eq!(io_cause(&e), "No such file or directory");
    }
}
