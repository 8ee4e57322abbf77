//! The admin socket, watcher side: accepts REPL clients on a Unix socket, checks who they are,
//! and evaluates their Lua chunks in an admin state whose functions read the watcher's state.
//!
//! Everything is non-blocking and bounded, so a slow or hostile admin client can never stall
//! supervision: frames are at most 1 MiB, a client's unsent output at most 8 MiB, an idle
//! client is dropped after 5 minutes, and a chunk runs at most 10 million Lua instructions.

use super::protocol::{self, FrameDecoder};
use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};
use mlua::{HookTriggers, Lua, Value, VmState};
use slab::Slab;
use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The watcher's token for the admin listener.
pub const LISTENER: Token = Token(1);
/// Admin client `k` has token `CLIENT_BASE + k`.
pub const CLIENT_BASE: usize = 1000;
/// An admin client idle this long is dropped.
const IDLE: Duration = Duration::from_secs(300);
/// Unsent output beyond which a client that does not read is dropped.
const MAX_OUT: usize = 8 << 20;
/// Lua instructions a chunk may run.
const INSTRUCTIONS: u64 = 10_000_000;
/// Memory of the admin Lua state.
const MEMORY: usize = 64 << 20;

/// What an admin function asked the watcher to do once the chunk has run.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// A graceful stop with this deadline (the config's graceful timeout when None), or an
    /// immediate one.
    Shutdown {
        /// The drain deadline.
        timeout: Option<Duration>,
        /// Stop at once.
        now: bool,
    },
    /// Start the new generation prepared by `reload()`.
    Reload,
    /// Reopen every log file.
    ReopenLogs,
    /// `reload()` found the config broken: the watcher records it for `status()`.
    ReloadFailed(String),
}

/// What the admin functions see and what they ask for. The watcher fills the view before each
/// chunk and carries out the commands after it.
#[derive(Default)]
pub struct AdminState {
    /// `status()`.
    pub status: serde_json::Value,
    /// `workers()`.
    pub workers: serde_json::Value,
    /// `backends()`.
    pub backends: serde_json::Value,
    /// `config()`.
    pub config_text: String,
    /// The config file `reload()` evaluates.
    pub config_file: PathBuf,
    /// The live workers and the graceful timeout, for `shutdown()`'s answer.
    pub live_workers: usize,
    /// The config's graceful timeout.
    pub graceful: Duration,
    /// Commands to carry out.
    pub commands: Vec<Command>,
    /// A new configuration `reload()` loaded and validated.
    pub reloaded: Option<crate::config::Loaded>,
    /// Whether a reload is under way (a second one is refused until it settles).
    pub reload_in_progress: bool,
    /// Whether the server is stopping (a reload is refused).
    pub stopping: bool,
}

struct Client {
    stream: UnixStream,
    decoder: FrameDecoder,
    out: Vec<u8>,
    out_pos: usize,
    last: Instant,
}

/// The admin socket and its clients.
pub struct AdminServer {
    path: PathBuf,
    listener: UnixListener,
    clients: Slab<Client>,
    lua: Lua,
    /// Shared with the admin functions.
    pub state: Rc<RefCell<AdminState>>,
}

impl AdminServer {
    /// Creates the socket with mode 0600 (under a tight umask, so it never exists with wider
    /// permissions), replacing a stale one only if nobody answers on it.
    pub fn bind(path: &Path, registry: &Registry) -> Result<AdminServer, String> {
        crate::sockets::remove_stale_socket(path)?;
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
        let bound = UnixListener::bind(path);
        nix::sys::stat::umask(old);
        let mut listener = bound.map_err(|e| format!("admin socket {}: {e}", path.display()))?;
        registry
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(|e| format!("admin socket: {e}"))?;
        let state = Rc::new(RefCell::new(AdminState::default()));
        let lua = admin_lua(&state).map_err(|e| format!("admin Lua state: {e}"))?;
        Ok(AdminServer {
            path: path.to_path_buf(),
            listener,
            clients: Slab::new(),
            lua,
            state,
        })
    }

    /// Whether any client is connected (the watcher then wakes at least once a second).
    pub fn has_clients(&self) -> bool {
        !self.clients.is_empty()
    }

    /// Accepts pending clients; refuses those that are neither root nor our own user.
    pub fn accept(&mut self, registry: &Registry) {
        loop {
            let (mut stream, _) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!("admin accept: {e}");
                    return;
                }
            };
            if let Err(why) = peer_allowed(&stream) {
                tracing::warn!("admin: refused a client: {why}");
                let frame = protocol::encode_response(&protocol::error_response(&format!(
                    "permission denied: {why}"
                )));
                let _ = stream.write(&frame);
                continue;
            }
            let entry = self.clients.vacant_entry();
            let token = Token(CLIENT_BASE + entry.key());
            if registry
                .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                .is_err()
            {
                continue;
            }
            let hello = protocol::hello(env!("CARGO_PKG_VERSION"), protocol::FUNCTIONS);
            let out = protocol::encode_frame(&hello).unwrap_or_default();
            entry.insert(Client {
                stream,
                decoder: FrameDecoder::new(),
                out,
                out_pos: 0,
                last: Instant::now(),
            });
        }
    }

    /// Handles an event of client `key`: reads requests, answers them, writes. `refresh` fills
    /// the admin state just before a chunk runs.
    pub fn client_ready(&mut self, key: usize, refresh: &mut dyn FnMut(&mut AdminState)) {
        let Some(c) = self.clients.get_mut(key) else {
            return;
        };
        let mut buf = [0u8; 16 * 1024];
        let mut open = true;
        loop {
            match c.stream.read(&mut buf) {
                Ok(0) => {
                    open = false;
                    break;
                }
                Ok(n) => {
                    c.decoder.feed(&buf[..n]);
                    c.last = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    open = false;
                    break;
                }
            }
        }
        loop {
            let request = match c.decoder.next_frame() {
                Ok(Some(v)) => v,
                Ok(None) => break,
                Err(protocol::ProtocolError::Json(e)) => {
                    let r = protocol::error_response(&format!("bad request: {e}"));
                    c.out.extend_from_slice(&protocol::encode_response(&r));
                    continue;
                }
                Err(_) => {
                    open = false;
                    break;
                }
            };
            refresh(&mut self.state.borrow_mut());
            self.lua.set_app_data(0u64);
            let response = protocol::answer(&self.lua, &request);
            c.out
                .extend_from_slice(&protocol::encode_response(&response));
        }
        if c.out.len() - c.out_pos > MAX_OUT {
            open = false;
        }
        while open && c.out_pos < c.out.len() {
            match c.stream.write(&c.out[c.out_pos..]) {
                Ok(n) => c.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => open = false,
            }
        }
        if c.out_pos == c.out.len() {
            c.out.clear();
            c.out_pos = 0;
        }
        if !open {
            self.clients.remove(key);
        }
    }

    /// Drops clients idle for too long.
    pub fn expire(&mut self, now: Instant) {
        let idle: Vec<usize> = self
            .clients
            .iter()
            .filter(|(_, c)| now.duration_since(c.last) > IDLE)
            .map(|(k, _)| k)
            .collect();
        for k in idle {
            self.clients.remove(k);
        }
    }

    /// Removes the socket file (at exit).
    pub fn cleanup(&self) {
        let _ = std::fs::remove_file(&self.path);
    }

    /// The listener's descriptor (closed in forked workers).
    pub fn raw_fds(&self) -> Vec<i32> {
        let mut fds = vec![self.listener.as_raw_fd()];
        fds.extend(self.clients.iter().map(|(_, c)| c.stream.as_raw_fd()));
        fds
    }
}

/// Root, or the user the server runs as.
fn peer_allowed(stream: &UnixStream) -> Result<(), String> {
    let cred = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| format!("SO_PEERCRED: {e}"))?;
    let me = nix::unistd::geteuid().as_raw();
    if cred.uid() == 0 || cred.uid() == me {
        Ok(())
    } else {
        Err(format!("uid {} is neither root nor uid {me}", cred.uid()))
    }
}

/// The admin Lua state: the admin functions, a safe part of the standard library, and an
/// instruction limit per chunk.
fn admin_lua(state: &Rc<RefCell<AdminState>>) -> mlua::Result<Lua> {
    let lua = Lua::new();
    let g = lua.globals();
    for name in [
        "io",
        "dofile",
        "loadfile",
        "require",
        "package",
        "debug",
        "coroutine",
    ] {
        g.set(name, Value::Nil)?;
    }
    if let Ok(os) = g.get::<mlua::Table>("os") {
        for name in [
            "exit",
            "execute",
            "remove",
            "rename",
            "tmpname",
            "setlocale",
        ] {
            os.set(name, Value::Nil)?;
        }
    }
    g.set(
        "print",
        lua.create_function(|_, args: mlua::Variadic<Value>| {
            let text: Vec<String> = args.iter().map(|v| format!("{v:?}")).collect();
            tracing::info!("admin print: {}", text.join("\t"));
            Ok(())
        })?,
    )?;
    let view = |f: fn(&AdminState) -> serde_json::Value| {
        let st = state.clone();
        move |lua: &Lua, ()| json_to_lua(lua, &f(&st.borrow()))
    };
    g.set("status", lua.create_function(view(|s| s.status.clone()))?)?;
    g.set("workers", lua.create_function(view(|s| s.workers.clone()))?)?;
    g.set(
        "backends",
        lua.create_function(view(|s| s.backends.clone()))?,
    )?;
    let st = state.clone();
    g.set(
        "config",
        lua.create_function(move |_, ()| Ok(st.borrow().config_text.clone()))?,
    )?;
    let st = state.clone();
    g.set(
        "shutdown",
        lua.create_function(move |lua, opts: Option<mlua::Table>| {
            let mut timeout = None;
            let mut now = false;
            if let Some(t) = &opts {
                // Strict: a misspelled key or a wrong type must not turn into a default stop.
                for pair in t.pairs::<Value, Value>() {
                    let (k, v) = pair?;
                    match (k.to_string()?.as_str(), v) {
                        ("timeout", Value::Integer(n)) if n >= 0 => {
                            timeout = Some(Duration::from_secs(n as u64))
                        }
                        ("timeout", Value::Number(x)) if x.is_finite() && x >= 0.0 => {
                            timeout = Some(Duration::from_secs_f64(x))
                        }
                        ("timeout", _) => {
                            return Err(mlua::Error::runtime(
                                "shutdown: timeout must be a number of seconds >= 0",
                            ))
                        }
                        ("now", Value::Boolean(b)) => now = b,
                        ("now", _) => {
                            return Err(mlua::Error::runtime("shutdown: now must be true or false"))
                        }
                        (other, _) => {
                            return Err(mlua::Error::runtime(format!(
                                "shutdown: unknown option '{other}' (timeout, now)"
                            )))
                        }
                    }
                }
            }
            let mut s = st.borrow_mut();
            s.commands.push(Command::Shutdown { timeout, now });
            let answer = lua.create_table()?;
            answer.set("workers", s.live_workers)?;
            if now {
                answer.set("stopping", "now")?;
            } else {
                let grace = timeout.unwrap_or(s.graceful);
                answer.set("draining", s.live_workers)?;
                answer.set("deadline_seconds", grace.as_secs_f64())?;
            }
            Ok(answer)
        })?,
    )?;
    let st = state.clone();
    g.set(
        "reload",
        lua.create_function(move |lua, ()| {
            let file = {
                let s = st.borrow();
                if s.stopping {
                    return Err(mlua::Error::runtime("reload: the server is stopping"));
                }
                if s.reload_in_progress || s.reloaded.is_some() {
                    return Err(mlua::Error::runtime(
                        "reload: a reload is already in progress",
                    ));
                }
                s.config_file.clone()
            };
            match crate::config::load_file(&file) {
                Ok(loaded) => {
                    let mut s = st.borrow_mut();
                    s.reloaded = Some(loaded);
                    s.commands.push(Command::Reload);
                    let t = lua.create_table()?;
                    t.set("ok", true)?;
                    t.set("config", file.display().to_string())?;
                    t.set(
                        "note",
                        "the new generation starts now; the old one drains once it runs",
                    )?;
                    Ok(t)
                }
                Err(errors) => {
                    st.borrow_mut()
                        .commands
                        .push(Command::ReloadFailed(errors.to_string()));
                    Err(mlua::Error::runtime(format!(
                        "reload failed, the running configuration stays:\n{errors}"
                    )))
                }
            }
        })?,
    )?;
    let st = state.clone();
    g.set(
        "reopen_logs",
        lua.create_function(move |_, ()| {
            st.borrow_mut().commands.push(Command::ReopenLogs);
            Ok(true)
        })?,
    )?;
    g.set("help", lua.create_function(|_, ()| Ok(HELP))?)?;
    // Bound every chunk: the watcher runs it in its own loop. Once over the limit every later
    // check fails too, so a pcall cannot catch the error and start over; the count is reset
    // only when the next chunk starts.
    lua.set_hook(
        HookTriggers::new().every_nth_instruction(10_000),
        move |lua, _| {
            let n = lua.app_data_ref::<u64>().map_or(0, |c| *c) + 10_000;
            lua.set_app_data(n);
            if n > INSTRUCTIONS {
                return Err(mlua::Error::runtime("instruction limit reached"));
            }
            Ok(VmState::Continue)
        },
    );
    // string.rep and big tables must not exhaust the watcher's memory.
    lua.set_memory_limit(MEMORY)?;
    // A stop by the instruction limit must not be caught by pcall/xpcall (nor by a coroutine,
    // which is why coroutine is gone): the wrappers pass it on.
    g.set(
        "__tripped",
        lua.create_function(|lua, ()| {
            Ok(lua.app_data_ref::<u64>().is_some_and(|c| *c > INSTRUCTIONS))
        })?,
    )?;
    lua.load(
        r#"
        local raw_pcall, raw_xpcall, tripped = pcall, xpcall, __tripped
        __tripped = nil
        local function pass(ok, ...)
          if not ok and tripped() then error((...), 0) end
          return ok, ...
        end
        pcall = function(f, ...) return pass(raw_pcall(f, ...)) end
        xpcall = function(f, h, ...) return pass(raw_xpcall(f, h, ...)) end
        "#,
    )
    .set_name("=admin")
    .exec()?;
    drop(g);
    Ok(lua)
}

const HELP: &str = "\
status()                 uptime, generation, last reload, listeners, totals
workers()                one row per worker (old generations included while they drain)
backends()               one row per FastCGI process or address
shutdown()               graceful stop (the config's graceful timeout)
shutdown{timeout = 10}   graceful stop with this deadline in seconds
shutdown{now = true}     immediate stop
reload()                 evaluate the config file again; on success start a new generation
reopen_logs()            reopen the error and access logs (as SIGHUP)
config()                 the running configuration, normalised
help()                   this text";

/// A JSON value as a Lua value (objects become tables, arrays sequences).
fn json_to_lua(lua: &Lua, v: &serde_json::Value) -> mlua::Result<Value> {
    Ok(match v {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Boolean(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Number(n.as_f64().unwrap_or(0.0)),
        },
        serde_json::Value::String(s) => Value::String(lua.create_string(s)?),
        serde_json::Value::Array(a) => {
            let t = lua.create_table()?;
            for (i, x) in a.iter().enumerate() {
                t.raw_set(i + 1, json_to_lua(lua, x)?)?;
            }
            Value::Table(t)
        }
        serde_json::Value::Object(o) => {
            let t = lua.create_table()?;
            for (k, x) in o {
                t.raw_set(k.as_str(), json_to_lua(lua, x)?)?;
            }
            Value::Table(t)
        }
    })
}
