//! The Lua configuration: evaluating a site script, validating it, and the normalised `Config`.
//!
//! The public contract is the Lua API (`server{}`, `fastcgi "name" {}`, `route(fn)`, `include`),
//! documented in README.md. Everything here turns that script into plain Rust values; errors are
//! collected (not stopped at the first one) and carry `file:line`.

mod auth;
mod cgi;
mod error;
mod eval_limit;
mod identity;
mod listen;
mod lua_api;
mod ops;
mod print;
mod shared;
mod site;
#[cfg(test)]
mod sites_tests;
pub mod static_opts;
mod suggest;
#[cfg(test)]
mod tests;
mod timers;
mod upstream;
mod validate;
mod vhost;

pub use auth::{AccessRule, AuthRule};
pub use cgi::CgiDef;
pub use error::{ConfigError, ConfigErrors};
pub use identity::{resolve as resolve_run_as, RunAs};
pub use ops::Ops;
pub use print::print;
pub use shared::SharedDef;
pub use timers::print as print_lua_hooks;
pub use upstream::{Balance, HashKey, Health, UpstreamAddr, UpstreamDef};
pub use validate::tls::{ListenKind, ServerHandle, Tls};
pub use vhost::{normalise_host, Picker, SiteProxy, VhostDef};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The embedded default configuration, used when no `-c` is given.
pub const DEFAULT_CONFIG: &str = include_str!("../../lua/default.lua");
/// The name the embedded default configuration reports in messages.
pub const DEFAULT_CONFIG_NAME: &str = "<default>/default.lua";

/// One address the server listens on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ListenAddr {
    /// A TCP address (`127.0.0.1:8080`, `[::1]:8080`, `*:8080` = `0.0.0.0:8080`).
    Tcp(SocketAddr),
    /// A Unix stream socket path (`unix:/run/site.sock`), absolute after normalisation.
    Unix(PathBuf),
}

/// Where the error log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// The process's standard error.
    Stderr,
    /// A file, opened for append and reopened on SIGHUP.
    File(PathBuf),
}

/// Whether static files whose path has a segment starting with '.' are served
/// (`server { dotfiles = "allow" | "deny" }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dotfiles {
    /// Served like any other file (the default, as lighttpd and nginx do).
    Allow,
    /// Answered 404, except under `/.well-known/` (RFC 8615): `.git/`, `.env`, `.ssh/` stay
    /// private when a root is a home or project folder.
    Deny,
}

/// Resource limits (`server { limits = {...} }`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Connections per worker; at the limit a worker stops accepting until a slot frees.
    pub connections: usize,
    /// Largest request head (request line plus headers) in bytes; larger → 431.
    pub header_bytes: usize,
    /// Requests served on one keep-alive connection before it is closed.
    pub keepalive_requests: u64,
    /// Largest request body in bytes; larger → 413.
    pub body_bytes: u64,
    /// Connections one client address may hold in one worker (0: no limit). Workers count
    /// separately, so an address may hold up to this times `workers` in all; over it, a new
    /// connection gets 503 and is closed.
    pub connections_per_ip: usize,
    /// Wall-clock time a route call may take, its waits (`sleep`) included; past it → 504.
    pub lua_wall: Duration,
    /// Ceiling (and default) of `req:body(max)` in bytes; over it → `nil, "too large"`.
    pub lua_body_bytes: u64,
}

/// Timeouts (`server { timeouts = {...} }`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    /// Time allowed to receive a whole request head (slowloris protection), and body idle time.
    pub read_idle: Duration,
    /// Time a response may make no progress because the client does not read.
    pub write_idle: Duration,
    /// Time an idle keep-alive connection is kept open.
    pub keepalive_idle: Duration,
    /// Time in-flight requests get to finish on a graceful stop before workers are killed.
    pub graceful: Duration,
    /// Time a TLS client gets to finish its handshake (`timeouts.handshake`, default 10 s).
    pub handshake: Duration,
}

/// A FastCGI backend definition (`fastcgi "name" {...}`), validated but not yet served.
#[derive(Debug, Clone, PartialEq)]
pub struct FastcgiDef {
    /// The backend's name, unique in the config.
    pub name: String,
    /// Where it was defined, for messages.
    pub defined_at: String,
    /// argv of the program the watcher spawns (`spawn`), if any.
    pub spawn: Option<Vec<String>>,
    /// How many processes to spawn (`procs`, default 1).
    pub procs: usize,
    /// Where spawned processes listen (`socket`).
    pub socket: Option<ListenAddr>,
    /// External addresses (`address`).
    pub address: Vec<ListenAddr>,
    /// Environment of spawned processes (`env`).
    pub env: BTreeMap<String, String>,
    /// Path suffixes routed here (`extensions`).
    pub extensions: Vec<String>,
    /// URL prefix mounted here (`prefix`).
    pub prefix: Option<String>,
    /// Whether the script must exist under the root (`check_local`, default true).
    pub check_local: bool,
    /// Whether backend connections are reused (`keepalive`, default true).
    pub keepalive: bool,
    /// Whether the whole request body is read before a backend process is taken
    /// (`request_buffering`, default true, as nginx's `fastcgi_request_buffering`); false
    /// streams it to the backend as it arrives.
    pub request_buffering: bool,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Time allowed between bytes from the backend.
    pub read_timeout: Duration,
    /// How long a backend that refused a connection is left out.
    pub disable_time: Duration,
    /// Who spawned processes run as (`user`/`group`; default: the server's `user`), None: as
    /// the watcher.
    pub user: Option<RunAs>,
    /// uid and gid a spawned Unix socket file is given to: the workers' `user`, who connect
    /// to it (filled in from `server{}`), None: left to the watcher (root).
    pub socket_owner: Option<(u32, u32)>,
}

/// The normalised configuration: every path absolute, every default filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The main config file (absolute), or `DEFAULT_CONFIG_NAME` for the embedded default.
    pub file: PathBuf,
    /// Addresses to listen on, at least one, no duplicates.
    pub listen: Vec<ListenAddr>,
    /// Number of worker processes, at least 1.
    pub workers: usize,
    /// Document root, an existing directory (absolute).
    pub root: PathBuf,
    /// Index file names tried for a directory.
    pub index: Vec<String>,
    /// Whether dotfiles are served as static files.
    pub dotfiles: Dotfiles,
    /// Value of the Server header.
    pub server_name: String,
    /// MIME overrides: lowercased suffix with its dot (".webp") → type.
    pub mime: BTreeMap<String, String>,
    /// Error log target.
    pub error_log: LogTarget,
    /// Access log file (combined format), or None when disabled.
    pub access_log: Option<PathBuf>,
    /// Pid file written by the watcher and removed on exit.
    pub pid_file: Option<PathBuf>,
    /// The admin socket (`admin = "run/admin.sock"`), off when None.
    pub admin: Option<PathBuf>,
    /// Whether to detach into the background.
    pub daemon: bool,
    /// Who workers run as (`user`/`group`), None: as the watcher.
    pub user: Option<RunAs>,
    /// The folder workers are jailed in (`chroot`); `root` is then a path inside it.
    pub chroot: Option<PathBuf>,
    /// Limits.
    pub limits: Limits,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// FastCGI backends.
    pub fastcgi: Vec<FastcgiDef>,
    /// Shared dictionaries (`shared "name" { size = ... }`).
    pub shared: Vec<SharedDef>,
    /// HTTP upstreams (`upstream "name" {...}`), for `proxy` decisions and prefixes.
    pub upstreams: Vec<UpstreamDef>,
    /// Whether a `route(fn)` was given.
    pub has_route: bool,
    /// The status page, the access log format, real client addresses (`ops.rs`).
    pub ops: Ops,
    /// Static-file extras: compression, error pages, headers, expiry, listings.
    pub static_opts: static_opts::StaticOptions,
    /// The `cgi {}` block, if any.
    pub cgi: Option<CgiDef>,
    /// Basic authentication per path prefix (`auth`).
    pub auth: Vec<AuthRule>,
    /// Client networks per path prefix (`access`).
    pub access: Vec<AccessRule>,
    /// The `basic_auth{}` helpers' rules (no prefix), by the index their decisions carry.
    pub route_auth: Vec<AuthRule>,
    /// Virtual hosts (`site "name" {}`), in the order defined.
    pub sites: Vec<VhostDef>,
    /// The site unknown hosts go to (`default_site`), None: `server{}`'s own.
    pub default_site: Option<String>,
    /// HTTPS: what each listener speaks, certificates, versions (`tls = {...}`).
    pub tls: Tls,
}

/// A loaded configuration together with the Lua state that evaluated it.
///
/// The state is kept because workers inherit it by fork to run the route function.
pub struct Loaded {
    /// The normalised configuration.
    pub config: Config,
    /// The Lua state the script ran in.
    pub lua: mlua::Lua,
    /// The route function, stored in the state's registry.
    pub route: Option<mlua::RegistryKey>,
}

/// Why `config` cannot run detached (`--daemon` or `daemon = true`), if it cannot: a daemon's
/// stderr is /dev/null, so with `error_log = "stderr"` every later log line would be lost.
pub fn daemon_problem(config: &Config) -> Option<String> {
    let stream = match &config.error_log {
        LogTarget::Stderr => "\"stderr\"".to_string(),
        LogTarget::File(p) if is_standard_stream(p) => format!("{:?}", p.display().to_string()),
        LogTarget::File(_) => return None,
    };
    Some(format!(
        "a daemon needs error_log set to a file (its stdout and stderr are /dev/null, so with \
         error_log = {stream} every log line would be lost)"
    ))
}

/// Whether `path`, once its symlinks are followed, names the process's stdout or stderr
/// (/dev/stderr, /dev/stdout, /dev/fd/1|2, /proc/self/fd/1|2 and the like).
fn is_standard_stream(path: &Path) -> bool {
    let mut p = path.to_path_buf();
    // Each round resolves the directory, checks the name, then follows the name if it is a
    // link (/dev/stderr → /proc/self/fd/2); a bounded number, as the kernel's ELOOP.
    for _ in 0..16 {
        let (Some(parent), Some(name)) = (p.parent(), p.file_name()) else {
            return false;
        };
        let parent = std::fs::canonicalize(if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        })
        .unwrap_or_else(|_| parent.to_path_buf());
        let is_fd_dir = parent == Path::new("/dev/fd")
            || (parent.starts_with("/proc") && parent.file_name() == Some("fd".as_ref()));
        let std_name = name == "1" || name == "2";
        let dev_name = parent == Path::new("/dev") && (name == "stdout" || name == "stderr");
        if (is_fd_dir && std_name) || dev_name {
            return true;
        }
        let full = parent.join(name);
        match std::fs::read_link(&full) {
            Ok(target) => p = parent.join(target),
            Err(_) => return false,
        }
    }
    false
}

/// Evaluates the config file at `path` and validates it.
pub fn load_file(path: &Path) -> Result<Loaded, ConfigErrors> {
    lua_api::load_file(path)
}

/// As `load_file`, failing once evaluation has taken `limit` of wall-clock time (checked by an
/// instruction hook, so one long C call is not interrupted).
pub fn load_file_within(path: &Path, limit: Duration) -> Result<Loaded, ConfigErrors> {
    lua_api::load_file_limited(path, Some(limit))
}

/// Evaluates the embedded default configuration, relative to the current directory.
pub fn load_default() -> Result<Loaded, ConfigErrors> {
    lua_api::load_source(DEFAULT_CONFIG, Path::new(DEFAULT_CONFIG_NAME))
}

/// A config from Lua source evaluated relative to the current directory (for unit tests of
/// other modules).
#[cfg(test)]
pub fn load_source_for_tests(src: &str) -> Config {
    match lua_api::load_source(src, Path::new("test.lua")) {
        Ok(l) => l.config,
        Err(e) => panic!("{e}"),
    }
}

#[cfg(test)]
mod stream_tests {
    use super::is_standard_stream;
    use std::path::Path;

    #[test]
    fn standard_streams_are_recognised_through_links() {
        for p in [
            "/dev/stderr",
            "/dev/stdout",
            "/dev/fd/1",
            "/dev/fd/2",
            "/proc/self/fd/1",
            "/proc/self/fd/2",
            "/dev/./stderr",
        ] {
            assert!(is_standard_stream(Path::new(p)), "{p}");
        }
        for p in [
            "/var/log/luahttpd/error.log",
            "/dev/null",
            "/proc/self/fd/3",
            "err.log",
        ] {
            assert!(!is_standard_stream(Path::new(p)), "{p}");
        }
    }
}
