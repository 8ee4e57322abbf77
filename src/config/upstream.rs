//! `upstream "name" {...}`: an HTTP backend the reverse proxy forwards requests to, validated
//! with `file:line` like every other config call.
//!
//! ```lua
//! upstream "app" {
//!   address  = { "127.0.0.1:3000", { "127.0.0.1:3001", weight = 2 }, "unix:/run/app.sock" },
//!   balance  = "least_conn",          -- or "round_robin" (default), "hash" (with hash_key)
//!   keepalive = 32,                   -- idle connections kept per worker
//!   connect_timeout = 2, read_timeout = 60, send_timeout = 60,
//!   health = { path = "/healthz", interval = 5, fails = 3, passes = 2 },
//!   prefix = "/app/",
//!   via = true,                       -- optional: `Via: 1.1 luahttpd` both ways
//! }
//! ```

use std::path::Path;
use std::time::Duration;

use mlua::Value;

use super::listen;
use super::site::Site;
use super::validate::{boolean, got, has_control, integer, name, record, seconds, string, Report};
use super::{ConfigError, ListenAddr};

/// Keys of `upstream "name" {...}`.
pub(super) const UPSTREAM_KEYS: &[&str] = &[
    "address",
    "balance",
    "hash_key",
    "keepalive",
    "connect_timeout",
    "read_timeout",
    "send_timeout",
    "health",
    "prefix",
    "via",
];
/// Keys of `health = {...}`.
const HEALTH_KEYS: &[&str] = &["path", "interval", "fails", "passes"];
/// Most idle connections kept per worker and upstream.
const MAX_KEEPALIVE: i64 = 100_000;
/// Largest weight of one address.
const MAX_WEIGHT: i64 = 1000;

/// How an upstream's requests are spread over its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balance {
    /// In turn, weighted (nginx's smooth weighted round robin).
    RoundRobin,
    /// To the address with the fewest requests in flight (per weight) in this worker.
    LeastConn,
    /// By a hash of the key, so one client sticks to one address while it is up.
    Hash(HashKey),
}

/// What `balance = "hash"` hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The client's address (`hash_key = "remote_addr"`, the default).
    RemoteAddr,
    /// A request header, lowercased name (`hash_key = "X-User"`).
    Header(String),
}

/// Active health checks (`health = {...}`), run from the watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// The path requested (`GET path`); a 2xx or 3xx answer is healthy.
    pub path: String,
    /// Time between two checks of one address.
    pub interval: Duration,
    /// Failed checks in a row that take an address out (also the passive limit).
    pub fails: u32,
    /// Passed checks in a row that bring it back.
    pub passes: u32,
}

/// One address of an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamAddr {
    /// Where to connect.
    pub addr: ListenAddr,
    /// Its share of the requests (round_robin, least_conn, hash), default 1.
    pub weight: u32,
}

/// An HTTP upstream (`upstream "name" {...}`).
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamDef {
    /// The name `proxy("name", ...)` uses, unique among upstreams.
    pub name: String,
    /// Where it was defined, for messages.
    pub defined_at: String,
    /// Its addresses, at least one.
    pub address: Vec<UpstreamAddr>,
    /// The balancing method.
    pub balance: Balance,
    /// Idle connections kept per worker (0: a connection per request).
    pub keepalive: usize,
    /// Time allowed for a connect.
    pub connect_timeout: Duration,
    /// Time allowed for the response head, and between two reads of the response.
    pub read_timeout: Duration,
    /// Time allowed between two writes of the request to the upstream.
    pub send_timeout: Duration,
    /// Active checks, when set.
    pub health: Option<Health>,
    /// URL prefix proxied here without a route decision (`prefix`).
    pub prefix: Option<String>,
    /// Whether `Via` is added to the request and the response (RFC 9110 §7.6.3).
    pub via: bool,
}

impl UpstreamDef {
    /// Failures in a row (passive, or active checks) that take an address out.
    pub fn max_fails(&self) -> u32 {
        self.health.as_ref().map_or(3, |h| h.fails)
    }
}

/// Validates the table given to `upstream "name" {...}`.
pub(super) fn upstream(
    upstream_name: &str,
    v: &Value,
    site: &Site,
    base: &Path,
) -> (UpstreamDef, Vec<ConfigError>) {
    let mut def = UpstreamDef {
        name: upstream_name.to_string(),
        defined_at: site.position(),
        address: Vec::new(),
        balance: Balance::RoundRobin,
        keepalive: 32,
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(60),
        send_timeout: Duration::from_secs(60),
        health: None,
        prefix: None,
        via: false,
    };
    let mut rep = Report {
        site,
        prefix: format!("upstream '{upstream_name}': "),
        errors: Vec::new(),
    };
    let what = format!("upstream '{upstream_name}'");
    let Some(f) = record(&mut rep, &[], v, UPSTREAM_KEYS, &what) else {
        return (def, rep.finish());
    };
    let r = &mut rep;
    match f.get("address") {
        Some(v) => def.address = addresses(r, v, base),
        None => r.at_call("needs address (one address or a list of them)"),
    }
    if f.contains_key("address") && def.address.is_empty() && r.errors.is_empty() {
        r.at(&["address"], "address must name at least one address");
    }
    let hash_key = f.get("hash_key").and_then(|v| string(r, &["hash_key"], v));
    if let Some(v) = f.get("balance") {
        match string(r, &["balance"], v).as_deref() {
            Some("round_robin") => def.balance = Balance::RoundRobin,
            Some("least_conn") => def.balance = Balance::LeastConn,
            Some("hash") => {
                def.balance = Balance::Hash(match hash_key.as_deref() {
                    None | Some("remote_addr") => HashKey::RemoteAddr,
                    Some(h) if is_token(h) => HashKey::Header(h.to_ascii_lowercase()),
                    Some(h) => {
                        r.at(
                            &["hash_key"],
                            format!("hash_key must be \"remote_addr\" or a header name, got '{h}'"),
                        );
                        HashKey::RemoteAddr
                    }
                })
            }
            Some(other) => r.at(
                &["balance"],
                format!(
                    "balance must be \"round_robin\", \"least_conn\" or \"hash\", got '{other}'"
                ),
            ),
            None => {}
        }
    }
    if hash_key.is_some() && !matches!(def.balance, Balance::Hash(_)) {
        r.at(
            &["hash_key"],
            "hash_key only applies with balance = \"hash\"",
        );
    }
    if let Some(v) = f.get("keepalive") {
        if let Some(n) = integer(r, &["keepalive"], v, 0, MAX_KEEPALIVE) {
            def.keepalive = n as usize;
        }
    }
    let slots: [(&str, &mut Duration); 3] = [
        ("connect_timeout", &mut def.connect_timeout),
        ("read_timeout", &mut def.read_timeout),
        ("send_timeout", &mut def.send_timeout),
    ];
    for (key, slot) in slots {
        if let Some(v) = f.get(key) {
            if let Some(d) = seconds(r, &[key], v, false) {
                *slot = d;
            }
        }
    }
    if let Some(v) = f.get("health") {
        def.health = health(r, v);
    }
    if let Some(v) = f.get("prefix") {
        if let Some(p) = string(r, &["prefix"], v) {
            if !p.starts_with('/') || has_control(&p) || p.contains(' ') {
                r.at(
                    &["prefix"],
                    format!("prefix must be a URL path starting with '/', got '{p}'"),
                );
            } else {
                def.prefix = Some(p);
            }
        }
    }
    if let Some(v) = f.get("via") {
        if let Some(b) = boolean(r, &["via"], v) {
            def.via = b;
        }
    }
    (def, rep.finish())
}

/// `address`: one string, or a list of strings and `{ "addr", weight = n }` tables.
fn addresses(r: &mut Report, v: &Value, base: &Path) -> Vec<UpstreamAddr> {
    let items: Vec<Value> = match v {
        Value::String(_) => vec![v.clone()],
        Value::Table(t) => {
            let len = t.raw_len();
            if t.pairs::<Value, Value>().count() != len {
                r.at(
                    &["address"],
                    "address must be a list (it has named keys or holes)",
                );
                return Vec::new();
            }
            (1..=len)
                .map(|i| t.raw_get::<Value>(i).unwrap_or(Value::Nil))
                .collect()
        }
        other => {
            r.at(
                &["address"],
                format!(
                    "address must be a string or a list of addresses, got {}",
                    got(other)
                ),
            );
            return Vec::new();
        }
    };
    let mut out: Vec<UpstreamAddr> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let (text, weight) = match item {
            Value::String(_) => (string(r, &["address"], item), 1),
            Value::Table(t) => {
                let mut weight = 1;
                let mut text = None;
                for pair in t.pairs::<Value, Value>() {
                    let Ok((k, val)) = pair else { continue };
                    match &k {
                        Value::Integer(1) => text = string(r, &["address"], &val),
                        Value::String(s) if s.as_bytes().as_ref() == b"weight" => {
                            if let Some(w) = integer(r, &["address", "weight"], &val, 1, MAX_WEIGHT)
                            {
                                weight = w as u32;
                            }
                        }
                        other => r.at(
                            &["address"],
                            format!(
                                "address item {} has an unknown entry [{}]; write {{ \"host:port\", weight = n }}",
                                i + 1,
                                got(other)
                            ),
                        ),
                    }
                }
                if text.is_none() {
                    r.at(
                        &["address"],
                        format!("address item {} needs the address first: {{ \"host:port\", weight = n }}", i + 1),
                    );
                }
                (text, weight)
            }
            other => {
                r.at(
                    &["address"],
                    format!(
                        "address item {} must be a string or {{ \"host:port\", weight = n }}, got {}",
                        i + 1,
                        got(other)
                    ),
                );
                (None, 1)
            }
        };
        let Some(s) = text else { continue };
        match listen::parse(&s, base, listen::Use::Backend) {
            Ok(a) if out.iter().any(|u| u.addr == a) => {
                r.at_value(&["address"], &s, format!("address '{s}' given twice"))
            }
            Ok(addr) => out.push(UpstreamAddr { addr, weight }),
            Err(msg) => r.at_value(&["address"], &s, format!("address {msg}")),
        }
    }
    out
}

fn health(r: &mut Report, v: &Value) -> Option<Health> {
    let f = record(r, &["health"], v, HEALTH_KEYS, "health")?;
    let mut h = Health {
        path: String::new(),
        interval: Duration::from_secs(5),
        fails: 3,
        passes: 2,
    };
    match f.get("path") {
        Some(v) => {
            if let Some(p) = string(r, &["health", "path"], v) {
                if !p.starts_with('/') || p.bytes().any(|b| b <= b' ' || b == 0x7f) {
                    r.at(
                        &["health", "path"],
                        format!(
                            "{} must be a URL path starting with '/', without spaces, got '{p}'",
                            name(&["health", "path"])
                        ),
                    );
                } else {
                    h.path = p;
                }
            }
        }
        None => r.at(
            &["health"],
            "health needs path (the URL the checks request)",
        ),
    }
    if let Some(v) = f.get("interval") {
        if let Some(d) = seconds(r, &["health", "interval"], v, false) {
            h.interval = d;
        }
    }
    if let Some(v) = f.get("fails") {
        if let Some(n) = integer(r, &["health", "fails"], v, 1, 1000) {
            h.fails = n as u32;
        }
    }
    if let Some(v) = f.get("passes") {
        if let Some(n) = integer(r, &["health", "passes"], v, 1, 1000) {
            h.passes = n as u32;
        }
    }
    Some(h)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(crate::http::chunked::is_tchar)
}

/// An error for each `proxy` decision built at config time that names no defined upstream.
pub(super) fn unknown_upstreams(
    decisions: &[(String, Site)],
    defs: &[UpstreamDef],
) -> Vec<ConfigError> {
    let names: Vec<&str> = defs.iter().map(|d| d.name.as_str()).collect();
    decisions
        .iter()
        .filter(|(n, _)| !names.contains(&n.as_str()))
        .map(|(n, site)| {
            let hint = super::suggest::unknown_name_hint(n, &names, "upstream");
            site.error(format!("proxy: unknown upstream '{n}'{hint}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::lua_api::load_source;
    use super::*;

    fn load(src: &str) -> Result<super::super::Config, Vec<String>> {
        let text = format!("server {{ root = '.', listen = '127.0.0.1:1' }}\n{src}");
        load_source(&text, Path::new("t.lua"))
            .map(|l| l.config)
            .map_err(|e| e.0.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn a_full_upstream_is_read_with_defaults_filled_in() {
        let c = load(
            "upstream 'app' {\n  address = { '127.0.0.1:3000', { '127.0.0.1:3001', weight = 3 }, 'unix:/run/app.sock' },\n  balance = 'hash', hash_key = 'X-User',\n  keepalive = 8, connect_timeout = 1, read_timeout = 5,\n  health = { path = '/healthz' },\n  prefix = '/app/',\n}\nroute(function(req) return proxy('app', { path = '/x', host = 'h', headers = { ['X-A'] = '1' } }) end)",
        )
        .unwrap();
        let u = &c.upstreams[0];
        assert_eq!(u.name, "app");
        assert_eq!(u.address.len(), 3);
        assert_eq!(u.address[1].weight, 3);
        assert_eq!(u.balance, Balance::Hash(HashKey::Header("x-user".into())));
        assert_eq!(u.keepalive, 8);
        assert_eq!(u.read_timeout, Duration::from_secs(5));
        assert_eq!(u.send_timeout, Duration::from_secs(60));
        let h = u.health.as_ref().unwrap();
        assert_eq!((h.path.as_str(), h.fails, h.passes), ("/healthz", 3, 2));
        assert_eq!(h.interval, Duration::from_secs(5));
        assert_eq!(u.prefix.as_deref(), Some("/app/"));
        let c = load("upstream 'b' { address = '127.0.0.1:1' }").unwrap();
        assert_eq!(c.upstreams[0].balance, Balance::RoundRobin);
        assert_eq!(c.upstreams[0].keepalive, 32);
    }

    #[test]
    fn mistakes_are_reported_at_their_line() {
        let e = load(
            "upstream 'app' {\n  address = { '127.0.0.1:3000', 'nonsense' },\n  balance = 'random',\n  keepalive = -1,\n  health = { interval = 0 },\n  prefix = 'app',\n  hash_key = 'remote_addr',\n  colour = 1,\n}",
        )
        .unwrap_err();
        let all = e.join("\n");
        for want in [
            "t.lua:3: upstream 'app': address 'nonsense' is not IP:port",
            "t.lua:4: upstream 'app': balance must be",
            "t.lua:5: upstream 'app': keepalive must be at least 0",
            "t.lua:6: upstream 'app': health needs path",
            "t.lua:6: upstream 'app': health.interval must be",
            "t.lua:7: upstream 'app': prefix must be",
            "t.lua:8: upstream 'app': hash_key only applies",
            "t.lua:9: upstream 'app': unknown key 'colour'",
        ] {
            assert!(all.contains(want), "missing {want:?} in:\n{all}");
        }
        let e = load("upstream 'a' {}\nupstream 'a' { address = '127.0.0.1:1' }").unwrap_err();
        assert!(e[0].contains("needs address"), "{e:?}");
        let e = load(
            "upstream 'a' { address = '127.0.0.1:1' }\nupstream 'a' { address = '127.0.0.1:2' }",
        )
        .unwrap_err();
        assert!(
            e[0].contains("t.lua:3: upstream 'a' defined twice, first at t.lua:2"),
            "{e:?}"
        );
    }

    #[test]
    fn a_proxy_decision_must_name_an_upstream() {
        let e = load("upstream 'app' { address = '127.0.0.1:1' }\nlocal d = proxy('ap', {})\nroute(function() return d end)")
            .unwrap_err();
        assert!(
            e[0].contains("t.lua:3: proxy: unknown upstream 'ap'; did you mean 'app'?"),
            "{e:?}"
        );
        let e = load("local d = proxy('app', { headers = { Connection = 'x' } })").unwrap_err();
        assert!(
            e[0].contains("header 'Connection' is set by the proxy"),
            "{e:?}"
        );
        let e = load("local d = proxy('app', { path = 'rel' })").unwrap_err();
        assert!(e[0].contains("path must start with '/'"), "{e:?}");
    }
}

/// Appends `def` as the Lua that defines it (for `-p` and the REPL's `config()`).
pub(super) fn print(o: &mut String, def: &UpstreamDef) {
    use std::fmt::Write;
    let q = |s: &str| format!("{s:?}");
    let secs = |d: Duration| {
        let s = d.as_secs_f64();
        if s.fract() == 0.0 {
            format!("{}", s as u64)
        } else {
            format!("{s}")
        }
    };
    let _ = writeln!(o, "-- defined at {}", def.defined_at.replace('\n', " "));
    let _ = writeln!(o, "upstream {} {{", q(&def.name));
    let addrs: Vec<String> = def
        .address
        .iter()
        .map(|a| {
            let t = q(&listen::format(&a.addr));
            if a.weight == 1 {
                t
            } else {
                format!("{{ {t}, weight = {} }}", a.weight)
            }
        })
        .collect();
    let _ = writeln!(o, "  address = {{ {} }},", addrs.join(", "));
    match &def.balance {
        Balance::RoundRobin => o.push_str("  balance = \"round_robin\",\n"),
        Balance::LeastConn => o.push_str("  balance = \"least_conn\",\n"),
        Balance::Hash(k) => {
            let key = match k {
                HashKey::RemoteAddr => "remote_addr".to_string(),
                HashKey::Header(h) => h.clone(),
            };
            let _ = writeln!(o, "  balance = \"hash\", hash_key = {},", q(&key));
        }
    }
    let _ = writeln!(o, "  keepalive = {},", def.keepalive);
    let _ = writeln!(o, "  connect_timeout = {},", secs(def.connect_timeout));
    let _ = writeln!(o, "  read_timeout = {},", secs(def.read_timeout));
    let _ = writeln!(o, "  send_timeout = {},", secs(def.send_timeout));
    if let Some(h) = &def.health {
        let _ = writeln!(
            o,
            "  health = {{ path = {}, interval = {}, fails = {}, passes = {} }},",
            q(&h.path),
            secs(h.interval),
            h.fails,
            h.passes
        );
    }
    if let Some(p) = &def.prefix {
        let _ = writeln!(o, "  prefix = {},", q(p));
    }
    if def.via {
        o.push_str("  via = true,\n");
    }
    o.push_str("}\n");
}

#[cfg(test)]
mod print_tests {
    use super::super::lua_api::load_source;
    use std::path::Path;

    #[test]
    fn printed_upstreams_load_back_the_same() {
        let src = "server { root = '.', listen = '127.0.0.1:1' }\nupstream 'app' { address = { '127.0.0.1:3000', { '127.0.0.1:3001', weight = 2 } }, balance = 'hash', hash_key = 'X-User', read_timeout = 1.5, health = { path = '/h' }, prefix = '/app/' }";
        let a = load_source(src, Path::new("a.lua")).unwrap().config;
        let printed = super::super::print(&a);
        assert!(printed.contains("upstream \"app\" {"), "{printed}");
        let b = load_source(&printed, Path::new("b.lua")).unwrap().config;
        let strip = |mut u: super::UpstreamDef| {
            u.defined_at.clear();
            u
        };
        assert_eq!(strip(a.upstreams[0].clone()), strip(b.upstreams[0].clone()));
    }
}
