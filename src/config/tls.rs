//! HTTPS in the config: `listen` entries written as tables (`{ "*:443", tls = true }`,
//! `{ "*:80", redirect_to_https = true }`) and `server { tls = {...} }`: certificates (read,
//! parsed, matched with their keys and checked against their names here, so `-t` and a reload
//! catch a bad one), `min_version`, `max_version`, `ciphers`, `prefer_server_ciphers`,
//! `session_tickets`, `ktls`.
//!
//! A child of `validate` (declared there) so it shares its helpers and `Report`.

use std::path::Path;
use std::sync::Arc;

use mlua::Value;

use super::super::ListenAddr;
use super::listen;
use super::{addresses, boolean, got, path_value, record, string, string_list, Report};
#[cfg(not(feature = "tls"))]
use crate::tls as rustls;
use crate::tls::{server, suites, Certificate, MinVersion};

/// Keys of `server { tls = {...} }`.
const TLS_KEYS: &[&str] = &[
    "certificates",
    "min_version",
    "max_version",
    "ciphers",
    "prefer_server_ciphers",
    "session_tickets",
    "ktls",
];
/// Keys of one entry of `tls.certificates`.
const CERT_KEYS: &[&str] = &["cert", "key", "names"];
/// Keys of a `listen` entry written as a table, besides its address at [1].
const LISTEN_KEYS: &[&str] = &["tls", "redirect_to_https", "proxy_protocol"];
/// A certificate that ends within this many days is warned about.
const EXPIRY_WARN_DAYS: i64 = 14;

/// What one listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenKind {
    /// Plain HTTP.
    Plain,
    /// HTTPS (`tls = true`).
    Tls,
    /// Plain HTTP whose every request is answered `301` to the same URL on https
    /// (`redirect_to_https = true`).
    RedirectToHttps,
}

/// The rustls configuration built at load, shared by the workers through fork.
#[derive(Clone)]
pub struct ServerHandle(pub Arc<rustls::ServerConfig>);

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerConfig")
    }
}

impl PartialEq for ServerHandle {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// HTTPS settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Tls {
    /// What each `listen` address speaks, in the order of `Config::listen`.
    pub listen: Vec<ListenKind>,
    /// The certificates; the first is the default, SNI picks the others by their names.
    pub certificates: Vec<Certificate>,
    /// The lowest version offered.
    pub min_version: MinVersion,
    /// The highest version offered.
    pub max_version: MinVersion,
    /// The cipher suites in the server's order (`ciphers`); empty: the provider's.
    pub ciphers: Vec<rustls::CipherSuite>,
    /// The server's order of suites wins over the client's.
    pub prefer_server_ciphers: bool,
    /// Whether session tickets are issued (keys shared by all workers, rotated hourly).
    pub session_tickets: bool,
    /// Whether connections move to kernel TLS after the handshake where the kernel offers
    /// it (`ktls`, default on).
    pub ktls: bool,
    /// The server configuration, when some listener speaks TLS.
    pub server: Option<ServerHandle>,
    /// `file:line: warning: ...` lines (a certificate about to expire), printed at load.
    pub warnings: Vec<String>,
}

impl Default for Tls {
    fn default() -> Tls {
        Tls {
            listen: Vec::new(),
            certificates: Vec::new(),
            min_version: MinVersion::Tls12,
            max_version: MinVersion::Tls13,
            ciphers: Vec::new(),
            prefer_server_ciphers: false,
            session_tickets: true,
            ktls: true,
            server: None,
            warnings: Vec::new(),
        }
    }
}

impl Tls {
    /// What listener `i` (in config order) speaks.
    pub fn kind(&self, i: usize) -> ListenKind {
        self.listen.get(i).copied().unwrap_or(ListenKind::Plain)
    }

    /// The port of the first TLS listener (for redirects), if there is one.
    pub fn https_port(&self, listen: &[ListenAddr]) -> Option<u16> {
        listen
            .iter()
            .zip(&self.listen)
            .find(|(_, k)| **k == ListenKind::Tls)
            .and_then(|(a, _)| match a {
                ListenAddr::Tcp(s) => Some(s.port()),
                ListenAddr::Unix(_) => None,
            })
    }
}

/// `listen`: one string, a list of strings, or a list mixing strings and tables
/// `{ "addr", tls = true }` / `{ "addr", redirect_to_https = true }`.
pub(super) fn listen_entries(
    r: &mut Report,
    v: &Value,
    base: &Path,
) -> (Vec<ListenAddr>, Vec<ListenKind>) {
    let path = &["listen"];
    let Value::Table(t) = v else {
        let a = addresses(r, path, v, base, listen::Use::Listen);
        let kinds = vec![ListenKind::Plain; a.len()];
        return (a, kinds);
    };
    // `listen = { "*:443", tls = true }`: one entry written without the list around it.
    let named = t
        .pairs::<Value, Value>()
        .any(|p| matches!(p, Ok((Value::String(_), _))));
    if named {
        return match entry_kind(r, t) {
            Some((addr, kind)) => {
                let a = addresses(r, path, &addr, base, listen::Use::Listen);
                let text = string(r, path, &addr).unwrap_or_default();
                if kind != ListenKind::Plain && a.iter().any(|a| matches!(a, ListenAddr::Unix(_))) {
                    r.at_value(
                        path,
                        &text,
                        format!("listen '{text}': tls and redirect_to_https need a TCP address"),
                    );
                }
                let kinds = vec![kind; a.len()];
                (a, kinds)
            }
            None => (Vec::new(), Vec::new()),
        };
    }
    let has_tables =
        (1..=t.raw_len()).any(|i| matches!(t.raw_get::<Value>(i), Ok(Value::Table(_))));
    if !has_tables {
        let a = addresses(r, path, v, base, listen::Use::Listen);
        let kinds = vec![ListenKind::Plain; a.len()];
        return (a, kinds);
    }
    let mut out: Vec<ListenAddr> = Vec::new();
    let mut kinds = Vec::new();
    for i in 1..=t.raw_len() {
        let item = t.raw_get::<Value>(i).unwrap_or(Value::Nil);
        let (addr_value, kind) = match &item {
            Value::String(_) => (item.clone(), ListenKind::Plain),
            Value::Table(e) => match entry_kind(r, e) {
                Some(x) => x,
                None => continue,
            },
            other => {
                r.at(
                    path,
                    format!(
                        "listen item {i} must be an address or a table like {{ \"*:443\", tls = true }}, got {}",
                        got(other)
                    ),
                );
                continue;
            }
        };
        let before = out.len();
        let mut one = addresses(r, path, &addr_value, base, listen::Use::Listen);
        if let Some(a) = one.pop() {
            if out.contains(&a) {
                let text = string(r, path, &addr_value).unwrap_or_default();
                r.at_value(path, &text, format!("listen address '{text}' given twice"));
            } else if kind != ListenKind::Plain && matches!(a, ListenAddr::Unix(_)) {
                let text = string(r, path, &addr_value).unwrap_or_default();
                r.at_value(
                    path,
                    &text,
                    format!("listen '{text}': tls and redirect_to_https need a TCP address"),
                );
            } else {
                out.push(a);
                kinds.push(kind);
            }
        }
        debug_assert!(out.len() <= before + 1);
    }
    (out, kinds)
}

/// The address and kind of a table entry of `listen`.
fn entry_kind(r: &mut Report, e: &mlua::Table) -> Option<(Value, ListenKind)> {
    let path = &["listen"];
    let addr = e.raw_get::<Value>(1).unwrap_or(Value::Nil);
    if !matches!(addr, Value::String(_)) {
        r.at(
            path,
            "a listen table starts with its address: { \"*:443\", tls = true }",
        );
        return None;
    }
    let mut tls = false;
    let mut redirect = false;
    for pair in e.pairs::<Value, Value>() {
        let Ok((k, val)) = pair else { break };
        match &k {
            Value::Integer(1) => {}
            Value::String(s) => {
                let key = s.to_str().map(|s| s.to_string()).unwrap_or_default();
                let b = match key.as_str() {
                    "tls" => &mut tls,
                    "redirect_to_https" => &mut redirect,
                    // Read by config::ops::listen_tables.
                    "proxy_protocol" => continue,
                    _ => {
                        r.at(
                            &["listen", &key],
                            format!(
                                "unknown key '{key}' in a listen entry (known keys: {})",
                                LISTEN_KEYS.join(", ")
                            ),
                        );
                        continue;
                    }
                };
                if let Some(x) = boolean(r, &["listen", &key], &val) {
                    *b = x;
                }
            }
            other => r.at(
                path,
                format!(
                    "a listen table holds its address and named keys only, got [{}]",
                    got(other)
                ),
            ),
        }
    }
    let kind = match (tls, redirect) {
        (true, true) => {
            r.at(
                &["listen", "redirect_to_https"],
                "a listen entry cannot be both tls and redirect_to_https",
            );
            ListenKind::Tls
        }
        (true, false) => ListenKind::Tls,
        (false, true) => ListenKind::RedirectToHttps,
        (false, false) => ListenKind::Plain,
    };
    if kind == ListenKind::Tls && !cfg!(feature = "tls") {
        r.at(&["listen", "tls"], "this build has no TLS (feature `tls`)");
    }
    Some((addr, kind))
}

/// `server { tls = {...} }` against the listeners: certificates are loaded now.
pub(super) fn settings(
    r: &mut Report,
    v: Option<&Value>,
    base: &Path,
    kinds: Vec<ListenKind>,
) -> Tls {
    let mut t = Tls {
        listen: kinds,
        ..Tls::default()
    };
    let any_tls = t.listen.contains(&ListenKind::Tls);
    let any_redirect = t.listen.contains(&ListenKind::RedirectToHttps);
    if !cfg!(feature = "tls") {
        // The listen entries said so already; `tls = {...}` alone is refused here.
        if v.is_some() {
            r.at(&["tls"], "this build has no TLS (feature `tls`)");
        }
        return t;
    }
    let Some(v) = v else {
        if any_tls {
            r.at(
                &["listen"],
                "a listen entry has tls = true but server{} has no tls = { certificates = {...} }",
            );
        }
        if any_redirect && !any_tls {
            r.at(
                &["listen", "redirect_to_https"],
                "redirect_to_https needs a listen entry with tls = true to redirect to",
            );
        }
        return t;
    };
    let Some(f) = record(r, &["tls"], v, TLS_KEYS, "tls") else {
        return t;
    };
    if let Some(v) = version(r, &f, "min_version") {
        t.min_version = v;
    }
    if let Some(v) = version(r, &f, "max_version") {
        t.max_version = v;
    }
    if t.max_version < t.min_version {
        r.at(
            &["tls", "max_version"],
            format!(
                "tls.max_version \"{}\" is below min_version \"{}\": no version is left to offer",
                t.max_version.name(),
                t.min_version.name()
            ),
        );
    }
    if let Some(v) = f.get("ciphers") {
        t.ciphers = ciphers(r, v);
    }
    if let Some(v) = f.get("prefer_server_ciphers") {
        if let Some(b) = boolean(r, &["tls", "prefer_server_ciphers"], v) {
            t.prefer_server_ciphers = b;
        }
    }
    if let Some(v) = f.get("session_tickets") {
        if let Some(b) = boolean(r, &["tls", "session_tickets"], v) {
            t.session_tickets = b;
        }
    }
    if let Some(v) = f.get("ktls") {
        if let Some(b) = boolean(r, &["tls", "ktls"], v) {
            t.ktls = b;
        }
    }
    match f.get("certificates") {
        Some(v) => t.certificates = certificates(r, v, base, &mut t.warnings),
        None => r.at(
            &["tls"],
            "tls needs certificates = { { cert = \"site.pem\", key = \"site.key\" } }",
        ),
    }
    if !any_tls {
        r.at(
            &["tls"],
            "server{} has tls settings but no listen entry with tls = true",
        );
    }
    if any_redirect && !any_tls {
        r.at(
            &["listen", "redirect_to_https"],
            "redirect_to_https needs a listen entry with tls = true to redirect to",
        );
    }
    if any_tls && !t.certificates.is_empty() {
        // Drawn here, in the watcher, before any worker is forked: all of them share it.
        crate::tls::tickets::init();
        let opts = server::Options {
            min_version: t.min_version,
            max_version: t.max_version,
            ciphers: t.ciphers.clone(),
            prefer_server_ciphers: t.prefer_server_ciphers,
            session_tickets: t.session_tickets,
            ktls: t.ktls,
        };
        match server::build(&t.certificates, &opts) {
            Ok(s) => t.server = Some(ServerHandle(s)),
            Err(e) => r.at(&["tls"], format!("tls: {e}")),
        }
    }
    t
}

/// `tls.min_version` or `tls.max_version`, if given and right.
fn version(
    r: &mut Report,
    f: &std::collections::BTreeMap<String, Value>,
    key: &str,
) -> Option<MinVersion> {
    let v = f.get(key)?;
    let text = string(r, &["tls", key], v)?;
    let got = MinVersion::from_name(&text);
    if got.is_none() {
        r.at(
            &["tls", key],
            format!("tls.{key} must be \"1.2\" or \"1.3\", got '{text}'"),
        );
    }
    got
}

/// `tls.ciphers`: a list of suite names, or one string of them separated by colons (as
/// nginx's `ssl_ciphers` and Mozilla's generator write it), in the server's order.
fn ciphers(r: &mut Report, v: &Value) -> Vec<rustls::CipherSuite> {
    let path = &["tls", "ciphers"];
    let names: Vec<String> = match v {
        Value::String(_) => string(r, path, v)
            .unwrap_or_default()
            .split(':')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        _ => string_list(r, path, v).unwrap_or_default(),
    };
    let mut out = Vec::new();
    for n in &names {
        match suites::by_name(n) {
            Some(s) if !out.contains(&s) => out.push(s),
            Some(_) => {}
            None => r.at(
                path,
                format!(
                    "tls.ciphers: '{n}' is not a suite rustls offers (it has: {})",
                    suites::known()
                ),
            ),
        }
    }
    if out.is_empty() && !names.is_empty() {
        r.at(path, "tls.ciphers names no suite");
    }
    out
}

fn certificates(
    r: &mut Report,
    v: &Value,
    base: &Path,
    warnings: &mut Vec<String>,
) -> Vec<Certificate> {
    let path = &["tls", "certificates"];
    let Value::Table(list) = v else {
        r.at(
            path,
            format!(
                "tls.certificates must be a list of {{ cert = ..., key = ... }}, got {}",
                got(v)
            ),
        );
        return Vec::new();
    };
    if list.raw_len() == 0 {
        r.at(path, "tls.certificates must name at least one certificate");
    }
    let provider = server::provider();
    let now = crate::tls::certs::now_unix();
    let mut out = Vec::new();
    for i in 1..=list.raw_len() {
        let item = list.raw_get::<Value>(i).unwrap_or(Value::Nil);
        let Some(f) = record(r, path, &item, CERT_KEYS, "a tls certificate") else {
            continue;
        };
        let cert_text = f.get("cert").and_then(|v| match v {
            Value::String(s) => s.to_str().ok().map(|s| s.to_string()),
            _ => None,
        });
        let (Some(cv), Some(kv)) = (f.get("cert"), f.get("key")) else {
            r.at(
                path,
                format!("tls.certificates item {i} needs cert and key"),
            );
            continue;
        };
        let (Some(cert), Some(key)) = (
            path_value(r, &["tls", "certificates", "cert"], cv, base),
            path_value(r, &["tls", "certificates", "key"], kv, base),
        ) else {
            continue;
        };
        let names = match f.get("names") {
            Some(v) => string_list(r, &["tls", "certificates", "names"], v).unwrap_or_default(),
            None => Vec::new(),
        };
        let at = cert_text.unwrap_or_default();
        match crate::tls::certs::load(&cert, &key, &names, &provider) {
            Ok(c) => {
                let left = c.not_after - now;
                if left < EXPIRY_WARN_DAYS * 86_400 {
                    let when = httpdate::fmt_http_date(crate::tls::certs::unix_time(c.not_after));
                    let e = r.site.error_at_value(
                        path,
                        &at,
                        format!(
                            "warning: certificate {} expires in {} days ({when})",
                            cert.display(),
                            (left + 86_399) / 86_400
                        ),
                    );
                    warnings.push(e.to_string());
                }
                out.push(c);
            }
            Err(e) => r.at_value(path, &at, format!("tls.certificates item {i}: {e}")),
        }
    }
    out
}
