//! Validation of the tables given to `server{}` and `fastcgi "name" {}`.
//!
//! Each function checks a whole table and returns the normalised value together with every
//! problem found (not just the first), each placed at the line of the key it is about. Where a
//! value is wrong the default stands in, so later checks still run; the caller only builds a
//! `Config` when no problem was found at all.
//!
//! Only raw table access is used (`pairs` is `lua_next`, `raw_get`), so no metamethod, and so no
//! user code, runs during validation.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mlua::{Table, Value};

mod static_opts;
pub(super) use static_opts::{is_rule_table as is_rule_headers, read_site as read_site_statics};
#[path = "tls.rs"]
pub(super) mod tls;

use super::listen::{self, resolve};
use super::site::Site;
use super::suggest::did_you_mean;
use super::{
    Config, ConfigError, Dotfiles, FastcgiDef, Limits, ListenAddr, LogTarget, RunAs, Timeouts,
};

/// Keys of `server{}`.
pub(super) const SERVER_KEYS: &[&str] = &[
    "listen",
    "workers",
    "root",
    "index",
    "dotfiles",
    "server_name",
    "mime",
    "error_log",
    "access_log",
    "pid_file",
    "admin",
    "daemon",
    "user",
    "group",
    "chroot",
    "limits",
    "timeouts",
    "status_path",
    "access_log_format",
    "trusted_proxies",
    // Static-file extras (validate/static_opts.rs).
    "compress",
    "precompressed",
    "error_pages",
    "headers",
    "expires",
    "dir_listing",
    "auth",
    "access",
    "default_site",
    "tls",
];
/// Keys of `server { limits = {...} }`.
const LIMIT_KEYS: &[&str] = &[
    "connections",
    "header_bytes",
    "keepalive_requests",
    "body_bytes",
    "connections_per_ip",
    "lua_wall",
    "lua_body_bytes",
];
/// Keys of `server { timeouts = {...} }`.
const TIMEOUT_KEYS: &[&str] = &[
    "read_idle",
    "write_idle",
    "keepalive_idle",
    "graceful",
    "handshake",
];
/// Keys of `fastcgi "name" {...}`.
pub(super) const FASTCGI_KEYS: &[&str] = &[
    "spawn",
    "procs",
    "socket",
    "env",
    "extensions",
    "prefix",
    "address",
    "check_local",
    "keepalive",
    "request_buffering",
    "connect_timeout",
    "read_timeout",
    "disable_time",
    "user",
    "group",
];

/// Most worker processes; more is surely a typo (each worker serves thousands of connections).
const MAX_WORKERS: i64 = 1024;
/// Most spawned processes per FastCGI backend.
const MAX_PROCS: i64 = 1024;
/// Longest timeout accepted, one day: a longer idle time is a mistake, not a policy.
const MAX_SECONDS: f64 = 86_400.0;

/// The address used when `server{}` has no `listen`.
pub(super) const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// The defaults of `limits`.
pub(super) fn default_limits() -> Limits {
    Limits {
        connections: 10_000,
        header_bytes: 8192,
        keepalive_requests: 1000,
        body_bytes: 16 * 1024 * 1024,
        connections_per_ip: 0,
        lua_wall: Duration::from_secs(30),
        lua_body_bytes: 1024 * 1024,
    }
}

/// The defaults of `timeouts`.
pub(super) fn default_timeouts() -> Timeouts {
    Timeouts {
        read_idle: Duration::from_secs(60),
        write_idle: Duration::from_secs(360),
        keepalive_idle: Duration::from_secs(5),
        graceful: Duration::from_secs(30),
        handshake: Duration::from_secs(10),
    }
}

/// Collects the problems of one call, prefixing each message (e.g. "fastcgi 'php': ").
pub(super) struct Report<'a> {
    pub(super) site: &'a Site,
    pub(super) prefix: String,
    pub(super) errors: Vec<ConfigError>,
}

impl Report<'_> {
    pub(super) fn at(&mut self, path: &[&str], msg: impl std::fmt::Display) {
        let e = self.site.error_at(path, format!("{}{msg}", self.prefix));
        self.errors.push(e);
    }

    pub(super) fn at_value(&mut self, path: &[&str], value: &str, msg: impl std::fmt::Display) {
        let e = self
            .site
            .error_at_value(path, value, format!("{}{msg}", self.prefix));
        self.errors.push(e);
    }

    pub(super) fn at_call(&mut self, msg: impl std::fmt::Display) {
        let e = self.site.error(format!("{}{msg}", self.prefix));
        self.errors.push(e);
    }

    /// The problems in line order, so messages read top to bottom like the file.
    pub(super) fn finish(mut self) -> Vec<ConfigError> {
        crate::sort_compact::sort_by_key(&mut self.errors, |e| e.line);
        self.errors
    }
}

/// The dotted name of a key, for messages ("limits.connections").
pub(super) fn name(path: &[&str]) -> String {
    path.join(".")
}

/// How a wrong value is described after "got": numbers by value, others by type.
pub(super) fn got(v: &Value) -> String {
    match v {
        Value::Integer(i) => i.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Boolean(b) => format!("boolean {b}"),
        other => other.type_name().to_string(),
    }
}

/// A Lua table read as a record: its string keys and values, unknown keys already reported.
/// `None` (with a problem reported) when `v` is not a table.
pub(super) fn record(
    rep: &mut Report,
    path: &[&str],
    v: &Value,
    known: &[&str],
    what: &str,
) -> Option<BTreeMap<String, Value>> {
    let Value::Table(t) = v else {
        if path.is_empty() {
            rep.at_call(format!("{what} expects a table, got {}", got(v)));
        } else {
            rep.at(
                path,
                format!("{} must be a table, got {}", name(path), got(v)),
            );
        }
        return None;
    };
    let mut fields = BTreeMap::new();
    for pair in t.pairs::<Value, Value>() {
        let (k, val) = match pair {
            Ok(kv) => kv,
            Err(e) => {
                rep.at(path, format!("cannot read {what}: {e}"));
                break;
            }
        };
        let key = match &k {
            Value::String(s) => s.to_str().map(|s| s.to_string()).ok(),
            _ => None,
        };
        let Some(key) = key else {
            rep.at(
                path,
                format!(
                    "{what} has an entry without a name ([{}]); write name = value",
                    got(&k)
                ),
            );
            continue;
        };
        if !known.contains(&key.as_str()) {
            let mut p = path.to_vec();
            p.push(&key);
            let hint = match did_you_mean(&key, known) {
                Some(s) => format!("; did you mean '{s}'?"),
                None => format!(" (known keys: {})", known.join(", ")),
            };
            rep.at(&p, format!("unknown key '{key}' in {what}{hint}"));
            continue;
        }
        fields.insert(key, val);
    }
    Some(fields)
}

/// An integer in `min..=max`. Floats with an integral value (`1e6`) are accepted.
pub(super) fn integer(
    rep: &mut Report,
    path: &[&str],
    v: &Value,
    min: i64,
    max: i64,
) -> Option<i64> {
    let i = match v {
        Value::Integer(i) => *i,
        // The range check keeps the cast exact; i64::MAX as f64 rounds up, hence `<`.
        Value::Number(n) if n.fract() == 0.0 && *n >= i64::MIN as f64 && *n < i64::MAX as f64 => {
            *n as i64
        }
        other => {
            rep.at(
                path,
                format!("{} must be an integer, got {}", name(path), got(other)),
            );
            return None;
        }
    };
    if i < min {
        rep.at(
            path,
            format!("{} must be at least {min}, got {i}", name(path)),
        );
        return None;
    }
    if i > max {
        rep.at(
            path,
            format!("{} must be at most {max}, got {i}", name(path)),
        );
        return None;
    }
    Some(i)
}

/// A number of seconds, > 0 (or >= 0 with `allow_zero`), at most a day; fractions allowed.
pub(super) fn seconds(
    rep: &mut Report,
    path: &[&str],
    v: &Value,
    allow_zero: bool,
) -> Option<Duration> {
    let s = match v {
        Value::Integer(i) => *i as f64,
        Value::Number(n) => *n,
        other => {
            rep.at(
                path,
                format!(
                    "{} must be a number of seconds, got {}",
                    name(path),
                    got(other)
                ),
            );
            return None;
        }
    };
    let low_ok = if allow_zero { s >= 0.0 } else { s > 0.0 };
    if !s.is_finite() || !low_ok || s > MAX_SECONDS {
        let low = if allow_zero { ">= 0" } else { "> 0" };
        rep.at(
            path,
            format!(
                "{} must be a number of seconds {low} and at most {MAX_SECONDS}, got {s}",
                name(path)
            ),
        );
        return None;
    }
    Duration::try_from_secs_f64(s).ok()
}

pub(super) fn boolean(rep: &mut Report, path: &[&str], v: &Value) -> Option<bool> {
    match v {
        Value::Boolean(b) => Some(*b),
        other => {
            rep.at(
                path,
                format!("{} must be true or false, got {}", name(path), got(other)),
            );
            None
        }
    }
}

/// A Lua string as UTF-8 text.
pub(super) fn string(rep: &mut Report, path: &[&str], v: &Value) -> Option<String> {
    match v {
        Value::String(s) => match s.to_str() {
            Ok(s) => Some(s.to_string()),
            Err(_) => {
                rep.at(path, format!("{} must be valid UTF-8", name(path)));
                None
            }
        },
        other => {
            rep.at(
                path,
                format!("{} must be a string, got {}", name(path), got(other)),
            );
            None
        }
    }
}

/// One string, or a list (sequence) of strings.
pub(super) fn string_list(rep: &mut Report, path: &[&str], v: &Value) -> Option<Vec<String>> {
    let t: &Table = match v {
        Value::String(_) => return string(rep, path, v).map(|s| vec![s]),
        Value::Table(t) => t,
        other => {
            rep.at(
                path,
                format!(
                    "{} must be a string or a list of strings, got {}",
                    name(path),
                    got(other)
                ),
            );
            return None;
        }
    };
    let len = t.raw_len();
    if t.pairs::<Value, Value>().count() != len {
        rep.at(
            path,
            format!(
                "{} must be a list of strings (it has named keys or holes)",
                name(path)
            ),
        );
        return None;
    }
    let mut out = Vec::with_capacity(len);
    let mut ok = true;
    for i in 1..=len {
        let item = t.raw_get::<Value>(i).unwrap_or(Value::Nil);
        match &item {
            Value::String(s) => match s.to_str() {
                Ok(s) => out.push(s.to_string()),
                Err(_) => {
                    rep.at(path, format!("{} item {i} must be valid UTF-8", name(path)));
                    ok = false;
                }
            },
            other => {
                rep.at(
                    path,
                    format!(
                        "{} item {i} must be a string, got {}",
                        name(path),
                        got(other)
                    ),
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// A non-empty path string without NUL, made absolute against `base`.
pub(super) fn path_value(
    rep: &mut Report,
    path: &[&str],
    v: &Value,
    base: &Path,
) -> Option<PathBuf> {
    let s = string(rep, path, v)?;
    if s.is_empty() || s.contains('\0') {
        rep.at(
            path,
            format!("{} must be a non-empty path without NUL bytes", name(path)),
        );
        return None;
    }
    Some(resolve(base, &s))
}

/// Reports a file the server creates at start (log, pid file, socket) whose folder does not
/// exist: the server creates no folders, so the start would fail; `-t` says so first.
fn folder_exists(rep: &mut Report, path: &[&str], value: Option<&str>, file: &Path) {
    let Some(dir) = file.parent() else { return };
    let problem = match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => return,
        Ok(_) => "is not a directory".to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            "does not exist (the server creates no folders)".to_string()
        }
        Err(e) => format!("cannot be used: {e}"),
    };
    let msg = format!("{}: the folder of {} {problem}", name(path), file.display());
    match value {
        Some(v) => rep.at_value(path, v, msg),
        None => rep.at(path, msg),
    }
}

/// Addresses from one string or a list, each parsed for `usage`, duplicates reported.
fn addresses(
    rep: &mut Report,
    path: &[&str],
    v: &Value,
    base: &Path,
    usage: listen::Use,
) -> Vec<ListenAddr> {
    let mut out: Vec<ListenAddr> = Vec::new();
    for s in string_list(rep, path, v).unwrap_or_default() {
        match listen::parse(&s, base, usage) {
            Ok(a) if out.contains(&a) => {
                rep.at_value(
                    path,
                    &s,
                    format!("{} address '{s}' given twice", name(path)),
                );
            }
            Ok(a) => {
                if let (listen::Use::Listen, ListenAddr::Unix(p)) = (usage, &a) {
                    folder_exists(rep, path, Some(&s), p);
                }
                out.push(a)
            }
            Err(msg) => rep.at_value(path, &s, format!("{} {msg}", name(path))),
        }
    }
    out
}

pub(super) fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// Validates the table given to `server{}`. `file` is the main config file; `base` the folder
/// relative paths are resolved against. The returned `Config` has no FastCGI backends or route
/// yet; the caller adds them.
pub(super) fn server(
    v: &Value,
    site: &Site,
    base: &Path,
    file: &Path,
) -> (Config, Vec<ConfigError>) {
    let mut cfg = Config {
        file: file.to_path_buf(),
        listen: Vec::new(),
        workers: 2,
        root: PathBuf::new(),
        index: vec!["index.html".to_string()],
        dotfiles: Dotfiles::Allow,
        server_name: "luahttpd".to_string(),
        mime: BTreeMap::new(),
        error_log: LogTarget::Stderr,
        access_log: None,
        pid_file: None,
        admin: None,
        daemon: false,
        user: None,
        chroot: None,
        limits: default_limits(),
        timeouts: default_timeouts(),
        fastcgi: Vec::new(),
        shared: Vec::new(),
        upstreams: Vec::new(),
        has_route: false,
        ops: Default::default(),
        static_opts: Default::default(),
        cgi: None,
        auth: Vec::new(),
        access: Vec::new(),
        route_auth: Vec::new(),
        sites: Vec::new(),
        default_site: None,
        tls: Default::default(),
    };
    let mut rep = Report {
        site,
        prefix: String::new(),
        errors: Vec::new(),
    };
    let Some(fields) = record(&mut rep, &[], v, SERVER_KEYS, "server{}") else {
        return (cfg, rep.finish());
    };
    cfg.ops = super::ops::server(&fields, &mut |p, m| rep.at(p, m));
    let r = &mut rep;

    match fields.get("listen") {
        Some(v) => {
            cfg.ops.proxy_protocol = super::ops::listen_tables(v, base, &mut |p, m| r.at(p, m));
            let (addrs, kinds) = tls::listen_entries(r, v, base);
            cfg.listen = addrs;
            cfg.tls.listen = kinds;
            if matches!(v, Value::Table(t) if t.raw_len() == 0) {
                r.at(&["listen"], "listen must name at least one address");
            }
        }
        None => {
            cfg.listen = listen::parse(DEFAULT_LISTEN, base, listen::Use::Listen)
                .into_iter()
                .collect();
        }
    }
    if let Some(v) = fields.get("workers") {
        if let Some(n) = integer(r, &["workers"], v, 1, MAX_WORKERS) {
            cfg.workers = n as usize;
        }
    }
    if let Some(v) = fields.get("chroot") {
        cfg.chroot = jail_dir(r, v, base);
    }
    cfg.user = run_as(r, fields.get("user"), fields.get("group"));
    match fields.get("root") {
        Some(v) => {
            let root = match &cfg.chroot {
                Some(jail) => root_in_jail(r, v, jail),
                None => root_dir(r, v, base),
            };
            if let Some(root) = root {
                cfg.root = root;
            }
        }
        None => r.at_call("server{} needs root (the document root directory)"),
    }
    if let Some(v) = fields.get("index") {
        if let Some(list) = string_list(r, &["index"], v) {
            for n in &list {
                if n.is_empty() || n.contains('/') || n.contains('\0') {
                    r.at_value(
                        &["index"],
                        n,
                        format!("index names are file names without '/', got '{n}'"),
                    );
                }
            }
            cfg.index = list;
        }
    }
    if let Some(v) = fields.get("dotfiles") {
        if let Some(d) = super::vhost::dotfiles(r, v) {
            cfg.dotfiles = d;
        }
    }
    if let Some(v) = fields.get("server_name") {
        if let Some(s) = string(r, &["server_name"], v) {
            if has_control(&s) {
                r.at(
                    &["server_name"],
                    "server_name must not contain control characters",
                );
            }
            cfg.server_name = s;
        }
    }
    if let Some(v) = fields.get("mime") {
        cfg.mime = mime(r, v);
    }
    if let Some(v) = fields.get("error_log") {
        if let Some(s) = string(r, &["error_log"], v) {
            if s == "stderr" {
                cfg.error_log = LogTarget::Stderr;
            } else if let Some(p) = path_value(r, &["error_log"], v, base) {
                folder_exists(r, &["error_log"], None, &p);
                cfg.error_log = LogTarget::File(p);
            }
        }
    }
    match fields.get("access_log") {
        None | Some(Value::Boolean(false)) => {}
        Some(v @ Value::String(_)) => {
            cfg.access_log = path_value(r, &["access_log"], v, base);
            if let Some(p) = &cfg.access_log {
                folder_exists(r, &["access_log"], None, p);
            }
        }
        Some(other) => r.at(
            &["access_log"],
            format!("access_log must be a path or false, got {}", got(other)),
        ),
    }
    match fields.get("pid_file") {
        None | Some(Value::Boolean(false)) => {}
        Some(v) => {
            cfg.pid_file = path_value(r, &["pid_file"], v, base);
            if let Some(p) = &cfg.pid_file {
                folder_exists(r, &["pid_file"], None, p);
            }
        }
    }
    match fields.get("admin") {
        None | Some(Value::Boolean(false)) => {}
        Some(v) => {
            cfg.admin = path_value(r, &["admin"], v, base);
            if let Some(p) = &cfg.admin {
                // sun_path holds 108 bytes with its NUL.
                if p.as_os_str().len() > 107 {
                    r.at(
                        &["admin"],
                        format!("admin socket path {} is longer than 107 bytes", p.display()),
                    );
                }
                folder_exists(r, &["admin"], None, p);
            }
        }
    }
    if let Some(v) = fields.get("daemon") {
        if let Some(b) = boolean(r, &["daemon"], v) {
            cfg.daemon = b;
        }
    }
    if let Some(v) = fields.get("limits") {
        cfg.limits = limits(r, v);
    }
    if let Some(v) = fields.get("timeouts") {
        cfg.timeouts = timeouts(r, v);
    }
    cfg.static_opts = static_opts::read(r, &fields);
    if let Some(v) = fields.get("auth") {
        cfg.auth = super::auth::auth_rules(r, v, base);
    }
    if let Some(v) = fields.get("access") {
        cfg.access = super::auth::access_rules(r, v);
    }
    if let Some(v) = fields.get("default_site") {
        cfg.default_site = string(r, &["default_site"], v).map(|s| super::normalise_host(&s));
    }
    let kinds = std::mem::take(&mut cfg.tls.listen);
    cfg.tls = tls::settings(r, fields.get("tls"), base, kinds);
    if cfg.daemon {
        if let Some(why) = super::daemon_problem(&cfg) {
            r.at(&["daemon"], format!("daemon = true: {why}"));
        }
    }
    (cfg, rep.finish())
}

/// What needs the server and its backends together: spawned backends run as the server's
/// `user` unless they name their own, and with `chroot` every Unix socket a worker connects
/// to must lie inside the jail (workers see it at the path below the jail).
pub(super) fn finish_privileges(cfg: &mut Config) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    for def in &mut cfg.fastcgi {
        if def.spawn.is_some() && def.user.is_none() {
            def.user = cfg.user.clone();
        }
        if def.spawn.is_some() {
            def.socket_owner = cfg.user.as_ref().map(|u| (u.uid, u.gid));
        }
        let Some(jail) = &cfg.chroot else { continue };
        for a in def.socket.iter().chain(&def.address) {
            if let ListenAddr::Unix(p) = a {
                if !p.starts_with(jail) {
                    errors.push(ConfigError {
                        file: def.defined_at.clone(),
                        line: None,
                        message: format!(
                            "fastcgi '{}': unix:{} is outside the chroot {}, so chrooted \
                             workers cannot reach it (put it inside the jail, or use TCP)",
                            def.name,
                            p.display(),
                            jail.display()
                        ),
                    });
                }
            }
        }
    }
    errors
}

/// `user` and `group`: both looked up now, so `-t` reports a name that does not exist.
fn run_as(r: &mut Report, user: Option<&Value>, group: Option<&Value>) -> Option<RunAs> {
    let group_name = group.and_then(|g| string(r, &["group"], g));
    let Some(user) = user else {
        if group.is_some() {
            r.at(&["group"], "group needs user (the user workers switch to)");
        }
        return None;
    };
    let name = string(r, &["user"], user)?;
    match super::identity::resolve(&name, group_name.as_deref()) {
        Ok(a) => Some(a),
        Err(e) if e.starts_with("group") => {
            r.at(&["group"], e);
            None
        }
        Err(e) => {
            r.at(&["user"], e);
            None
        }
    }
}

/// `chroot`: an existing directory, canonicalised (the jail's real path, for the check of
/// paths inside it).
fn jail_dir(r: &mut Report, v: &Value, base: &Path) -> Option<PathBuf> {
    let abs = path_value(r, &["chroot"], v, base)?;
    match abs.canonicalize() {
        Ok(p) if p.is_dir() => Some(p),
        Ok(_) => {
            r.at(
                &["chroot"],
                format!("chroot {} is not a directory", abs.display()),
            );
            None
        }
        Err(e) => {
            r.at(
                &["chroot"],
                format!("chroot {} cannot be used: {e}", abs.display()),
            );
            None
        }
    }
}

/// With `chroot`, `root` is the path the workers see inside the jail: it must be absolute,
/// and the jail's folder at that path must be a directory that stays inside the jail.
fn root_in_jail(r: &mut Report, v: &Value, jail: &Path) -> Option<PathBuf> {
    let given = string(r, &["root"], v)?;
    let inside = Path::new(&given);
    if !inside.is_absolute() {
        r.at(
            &["root"],
            format!(
                "with chroot, root is a path inside the jail and must be absolute, got '{given}'"
            ),
        );
        return None;
    }
    let outside = jail.join(inside.strip_prefix("/").unwrap_or(inside));
    match outside.canonicalize() {
        Ok(p) if p.is_dir() && p.starts_with(jail) => {
            let rel = p.strip_prefix(jail).unwrap_or(Path::new(""));
            Some(Path::new("/").join(rel))
        }
        Ok(p) if p.is_dir() => {
            r.at(
                &["root"],
                format!(
                    "root '{given}' leads out of the chroot {} (to {})",
                    jail.display(),
                    p.display()
                ),
            );
            None
        }
        Ok(_) => {
            r.at(
                &["root"],
                format!(
                    "root '{given}' is not a directory inside the chroot ({})",
                    outside.display()
                ),
            );
            None
        }
        Err(e) => {
            r.at(
                &["root"],
                format!(
                    "root '{given}' cannot be used inside the chroot ({}): {e}",
                    outside.display()
                ),
            );
            None
        }
    }
}

/// The document root: must exist and be a directory; canonicalised so that the safe-open
/// beneath it compares against the real path.
pub(super) fn root_dir(r: &mut Report, v: &Value, base: &Path) -> Option<PathBuf> {
    let given = string(r, &["root"], v)?;
    let abs = path_value(r, &["root"], v, base)?;
    match abs.canonicalize() {
        Ok(p) if p.is_dir() => Some(p),
        Ok(_) => {
            r.at(
                &["root"],
                format!("root '{given}' is not a directory ({})", abs.display()),
            );
            None
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            r.at(
                &["root"],
                format!("root '{given}' does not exist ({})", abs.display()),
            );
            None
        }
        Err(e) => {
            r.at(
                &["root"],
                format!("root '{given}' cannot be used ({}): {e}", abs.display()),
            );
            None
        }
    }
}

/// The entries of a table keyed by strings (`mime`, `env`); a value that is not a table, or a
/// key that is not a string, is reported (as "`field` must be `what`" / "`field` keys must be
/// `keys`") and left out.
pub(super) fn string_keyed(
    r: &mut Report,
    field: &str,
    v: &Value,
    what: &str,
    keys: &str,
) -> Vec<(String, Value)> {
    let Value::Table(t) = v else {
        r.at(&[field], format!("{field} must be {what}, got {}", got(v)));
        return Vec::new();
    };
    let mut out = Vec::new();
    for pair in t.pairs::<Value, Value>() {
        let Ok((k, val)) = pair else { continue };
        match &k {
            Value::String(s) => match s.to_str() {
                Ok(key) => out.push((key.to_string(), val)),
                Err(_) => r.at(
                    &[field],
                    format!("{field} keys must be {keys}, got {}", got(&k)),
                ),
            },
            _ => r.at(
                &[field],
                format!("{field} keys must be {keys}, got {}", got(&k)),
            ),
        }
    }
    out
}

/// `mime = { [".webp"] = "image/webp" }`: suffixes lowercased, values checked for header safety.
pub(super) fn mime(r: &mut Report, v: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let entries = string_keyed(
        r,
        "mime",
        v,
        "a table of [\".ext\"] = \"type\"",
        "suffixes like \".webp\"",
    );
    for (key, val) in entries {
        let path = ["mime", key.as_str()];
        if key.len() < 2 || !key.starts_with('.') || key.contains('/') || has_control(&key) {
            r.at(
                &path,
                format!("mime key '{key}' must be a suffix starting with '.', like \".webp\""),
            );
            continue;
        }
        let Some(ty) = string(r, &path, &val) else {
            continue;
        };
        if ty.is_empty() || has_control(&ty) {
            r.at(
                &path,
                format!("mime type for '{key}' must be non-empty, without control characters"),
            );
            continue;
        }
        let lower = key.to_ascii_lowercase();
        if out.insert(lower.clone(), ty).is_some() {
            r.at(
                &path,
                format!("mime suffix '{lower}' given twice (suffixes are not case-sensitive)"),
            );
        }
    }
    out
}

fn limits(r: &mut Report, v: &Value) -> Limits {
    let mut l = default_limits();
    let Some(f) = record(r, &["limits"], v, LIMIT_KEYS, "limits") else {
        return l;
    };
    // Bounds: a worker needs at least one connection; a request head must fit a request line
    // and a few headers, and more than 1 MiB of head is an attack, not a request.
    if let Some(v) = f.get("connections") {
        if let Some(n) = integer(r, &["limits", "connections"], v, 1, 10_000_000) {
            l.connections = n as usize;
        }
    }
    if let Some(v) = f.get("header_bytes") {
        if let Some(n) = integer(r, &["limits", "header_bytes"], v, 1024, 1024 * 1024) {
            l.header_bytes = n as usize;
        }
    }
    if let Some(v) = f.get("keepalive_requests") {
        if let Some(n) = integer(r, &["limits", "keepalive_requests"], v, 1, i64::MAX) {
            l.keepalive_requests = n as u64;
        }
    }
    if let Some(v) = f.get("body_bytes") {
        if let Some(n) = integer(r, &["limits", "body_bytes"], v, 0, i64::MAX) {
            l.body_bytes = n as u64;
        }
    }
    // 0 turns the per-address limit off; more than `connections` could never apply.
    if let Some(v) = f.get("connections_per_ip") {
        if let Some(n) = integer(r, &["limits", "connections_per_ip"], v, 0, 10_000_000) {
            l.connections_per_ip = n as usize;
        }
    }
    if let Some(v) = f.get("lua_body_bytes") {
        if let Some(n) = integer(r, &["limits", "lua_body_bytes"], v, 0, 1 << 30) {
            l.lua_body_bytes = n as u64;
        }
    }
    if let Some(v) = f.get("lua_wall") {
        if let Some(d) = seconds(r, &["limits", "lua_wall"], v, false) {
            l.lua_wall = d;
        }
    }
    l
}

fn timeouts(r: &mut Report, v: &Value) -> Timeouts {
    let mut t = default_timeouts();
    let Some(f) = record(r, &["timeouts"], v, TIMEOUT_KEYS, "timeouts") else {
        return t;
    };
    let slots: [(&str, &mut Duration); 5] = [
        ("read_idle", &mut t.read_idle),
        ("write_idle", &mut t.write_idle),
        ("keepalive_idle", &mut t.keepalive_idle),
        ("graceful", &mut t.graceful),
        ("handshake", &mut t.handshake),
    ];
    for (key, slot) in slots {
        if let Some(v) = f.get(key) {
            if let Some(d) = seconds(r, &["timeouts", key], v, false) {
                *slot = d;
            }
        }
    }
    t
}

/// Whether `name` is acceptable as a backend name: routes and the admin REPL refer to it.
pub(super) fn is_backend_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Validates the table given to `fastcgi "name" {...}`.
pub(super) fn fastcgi(
    name: &str,
    v: &Value,
    site: &Site,
    base: &Path,
) -> (FastcgiDef, Vec<ConfigError>) {
    let mut def = FastcgiDef {
        name: name.to_string(),
        defined_at: site.position(),
        spawn: None,
        procs: 1,
        socket: None,
        address: Vec::new(),
        env: BTreeMap::new(),
        extensions: Vec::new(),
        prefix: None,
        check_local: true,
        keepalive: true,
        request_buffering: true,
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(30),
        disable_time: Duration::from_secs(1),
        user: None,
        socket_owner: None,
    };
    let mut rep = Report {
        site,
        prefix: format!("fastcgi '{name}': "),
        errors: Vec::new(),
    };
    let what = format!("fastcgi '{name}'");
    let Some(f) = record(&mut rep, &[], v, FASTCGI_KEYS, &what) else {
        return (def, rep.finish());
    };
    let r = &mut rep;

    if let Some(v) = f.get("spawn") {
        def.spawn = spawn(r, v, base);
    }
    if let Some(v) = f.get("procs") {
        if let Some(n) = integer(r, &["procs"], v, 1, MAX_PROCS) {
            def.procs = n as usize;
        }
    }
    if let Some(v) = f.get("socket") {
        if let Some(s) = string(r, &["socket"], v) {
            match listen::parse(&s, base, listen::Use::Backend) {
                Ok(a) => {
                    // The server creates this socket (for spawn), so its folder must exist.
                    if let ListenAddr::Unix(p) = &a {
                        folder_exists(r, &["socket"], None, p);
                    }
                    def.socket = Some(a)
                }
                Err(msg) => r.at(&["socket"], format!("socket {msg}")),
            }
        }
    }
    if let Some(v) = f.get("env") {
        def.env = env(r, v);
    }
    if let Some(v) = f.get("extensions") {
        for e in string_list(r, &["extensions"], v).unwrap_or_default() {
            if e.len() < 2 || !e.starts_with('.') || e.contains('/') {
                r.at_value(
                    &["extensions"],
                    &e,
                    format!("extensions must start with '.', like \".php\", got '{e}'"),
                );
            } else {
                def.extensions.push(e);
            }
        }
    }
    if let Some(v) = f.get("prefix") {
        if let Some(p) = string(r, &["prefix"], v) {
            if !p.starts_with('/') || has_control(&p) {
                r.at(
                    &["prefix"],
                    format!("prefix must be a URL path starting with '/', got '{p}'"),
                );
            } else {
                def.prefix = Some(p);
            }
        }
    }
    if let Some(v) = f.get("address") {
        def.address = addresses(r, &["address"], v, base, listen::Use::Backend);
    }
    if let Some(v) = f.get("check_local") {
        if let Some(b) = boolean(r, &["check_local"], v) {
            def.check_local = b;
        }
    }
    if let Some(v) = f.get("keepalive") {
        if let Some(b) = boolean(r, &["keepalive"], v) {
            def.keepalive = b;
        }
    }
    if let Some(v) = f.get("request_buffering") {
        if let Some(b) = boolean(r, &["request_buffering"], v) {
            def.request_buffering = b;
        }
    }
    if let Some(v) = f.get("connect_timeout") {
        if let Some(d) = seconds(r, &["connect_timeout"], v, false) {
            def.connect_timeout = d;
        }
    }
    if let Some(v) = f.get("read_timeout") {
        if let Some(d) = seconds(r, &["read_timeout"], v, false) {
            def.read_timeout = d;
        }
    }
    if let Some(v) = f.get("disable_time") {
        // Zero is allowed: retry a refusing backend at once.
        if let Some(d) = seconds(r, &["disable_time"], v, true) {
            def.disable_time = d;
        }
    }

    def.user = run_as(r, f.get("user"), f.get("group"));
    if (f.contains_key("user") || f.contains_key("group")) && !f.contains_key("spawn") {
        r.at(&["user"], "user and group only apply with spawn");
    }

    // Where the requests go: a program we start, or an address someone else serves.
    let has_spawn = f.contains_key("spawn");
    let has_address = f.contains_key("address");
    match (has_spawn, has_address) {
        (false, false) => r.at_call(
            "needs spawn (a program for the server to start) or address (a running backend)",
        ),
        (true, true) => r.at(&["address"], "give spawn or address, not both"),
        (true, false) if !f.contains_key("socket") => r.at(
            &["spawn"],
            "spawn needs socket, the address the spawned processes listen on",
        ),
        _ => {}
    }
    if f.contains_key("socket") && !has_spawn {
        r.at(
            &["socket"],
            "socket only applies with spawn (use address for a running backend)",
        );
    }
    if f.contains_key("procs") && !has_spawn {
        r.at(&["procs"], "procs only applies with spawn");
    }
    if has_spawn {
        proc_sockets_fit(r, &def);
    }
    (def, rep.finish())
}

/// Process i of a spawned backend listens on `socket` + "-i" (Unix) or port + i (TCP): every
/// one of those must be a valid address too, or the start fails.
fn proc_sockets_fit(r: &mut Report, def: &FastcgiDef) {
    let last = def.procs.saturating_sub(1);
    match &def.socket {
        Some(ListenAddr::Tcp(a)) => {
            let fits = u16::try_from(last)
                .ok()
                .and_then(|n| a.port().checked_add(n))
                .is_some();
            if !fits {
                r.at(
                    &["socket"],
                    format!(
                        "{} procs from port {} run past port 65535 (proc i listens on port + i)",
                        def.procs,
                        a.port()
                    ),
                );
            }
        }
        Some(ListenAddr::Unix(p)) => {
            let len = p.as_os_str().len() + format!("-{last}").len();
            if len > listen::UNIX_PATH_MAX {
                r.at(
                    &["socket"],
                    format!(
                        "socket {}-{last} (proc i listens on socket-i) is {len} bytes long, \
                         Unix sockets allow at most {}",
                        p.display(),
                        listen::UNIX_PATH_MAX
                    ),
                );
            }
        }
        None => {}
    }
}

/// `spawn`: a command line (split on whitespace) or an argv list. The program must exist and be
/// executable; it is made absolute (searched in PATH when it has no '/') because the watcher
/// execs it without a PATH search, after privileges may have changed.
fn spawn(r: &mut Report, v: &Value, base: &Path) -> Option<Vec<String>> {
    let mut argv = match v {
        Value::String(_) => string(r, &["spawn"], v)?
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>(),
        Value::Table(_) => string_list(r, &["spawn"], v)?,
        other => {
            r.at(
                &["spawn"],
                format!(
                    "spawn must be a command string or a list of strings, got {}",
                    got(other)
                ),
            );
            return None;
        }
    };
    let Some(prog) = argv.first() else {
        r.at(&["spawn"], "spawn must name a program");
        return None;
    };
    if argv.iter().any(|a| a.contains('\0')) {
        r.at(&["spawn"], "spawn arguments must not contain NUL bytes");
        return None;
    }
    let found = if prog.contains('/') {
        Some(resolve(base, prog))
    } else {
        search_path(prog)
    };
    let Some(path) = found else {
        r.at(
            &["spawn"],
            format!("spawn program '{prog}' not found in PATH"),
        );
        return None;
    };
    match std::fs::metadata(&path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => {}
        Ok(_) => {
            r.at(
                &["spawn"],
                format!("spawn program {} is not an executable file", path.display()),
            );
            return None;
        }
        Err(e) => {
            r.at(&["spawn"], format!("spawn program {}: {e}", path.display()));
            return None;
        }
    }
    argv[0] = path.to_string_lossy().into_owned();
    Some(argv)
}

/// The first executable file named `prog` in the PATH directories.
fn search_path(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(prog))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// `env = { NAME = "value" }`; numbers are accepted as values and kept as their text.
fn env(r: &mut Report, v: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let entries = string_keyed(r, "env", v, "a table of NAME = \"value\"", "variable names");
    for (key, val) in entries {
        let path = ["env", key.as_str()];
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            r.at(
                &path,
                format!("env name '{key}' must be non-empty, without '=' or NUL"),
            );
            continue;
        }
        let value = match &val {
            Value::Integer(i) => i.to_string(),
            Value::Number(n) => n.to_string(),
            _ => match string(r, &path, &val) {
                Some(s) => s,
                None => continue,
            },
        };
        if value.contains('\0') {
            r.at(
                &path,
                format!("env value of '{key}' must not contain NUL bytes"),
            );
            continue;
        }
        out.insert(key, value);
    }
    out
}
