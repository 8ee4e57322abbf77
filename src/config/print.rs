//! `luahttpd -p`: the normalised config printed back as Lua.
//!
//! Every default is written out and every path is absolute, so the output shows what the server
//! will really do, and loading it again gives the same `Config` (except for where things were
//! defined, and the route: a Lua function cannot be printed, so it is noted in a comment).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

pub(super) mod static_opts;

use super::listen;
use super::{Config, Dotfiles, FastcgiDef, ListenAddr, LogTarget};

/// `user` and `group`, when set (the group always written out: it is what the switch uses).
fn run_as(o: &mut String, user: Option<&super::RunAs>) {
    if let Some(u) = user {
        field(o, "user", &lua_string(&u.user));
        field(o, "group", &lua_string(&u.group));
    }
}

/// Prints the normalised config as Lua that `-c` would accept again.
pub fn print(config: &Config) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "-- luahttpd configuration, normalised from {}",
        config.file.display()
    );
    o.push_str("server {\n");
    let entries = config.listen.iter().enumerate().map(|(i, a)| {
        let pp = if config.ops.proxy_protocol.contains(a) {
            ", proxy_protocol = true"
        } else {
            ""
        };
        match config.tls.kind(i) {
            super::ListenKind::Plain if pp.is_empty() => addr(a),
            super::ListenKind::Plain => format!("{{ {}{pp} }}", addr(a)),
            super::ListenKind::Tls => format!("{{ {}, tls = true{pp} }}", addr(a)),
            super::ListenKind::RedirectToHttps => {
                format!("{{ {}, redirect_to_https = true{pp} }}", addr(a))
            }
        }
    });
    field(&mut o, "listen", &list(entries));
    field(&mut o, "workers", &config.workers.to_string());
    field(&mut o, "root", &path(&config.root));
    field(
        &mut o,
        "index",
        &list(config.index.iter().map(|s| lua_string(s))),
    );
    let dotfiles = match config.dotfiles {
        Dotfiles::Allow => "allow",
        Dotfiles::Deny => "deny",
    };
    field(&mut o, "dotfiles", &lua_string(dotfiles));
    field(&mut o, "server_name", &lua_string(&config.server_name));
    field(&mut o, "mime", &map(config.mime.iter()));
    let error_log = match &config.error_log {
        LogTarget::Stderr => lua_string("stderr"),
        LogTarget::File(p) => path(p),
    };
    field(&mut o, "error_log", &error_log);
    let access_log = config
        .access_log
        .as_deref()
        .map_or_else(|| "false".to_string(), path);
    field(&mut o, "access_log", &access_log);
    let ops = &config.ops;
    field(
        &mut o,
        "access_log_format",
        &lua_string(&ops.access_log_format.source),
    );
    if let Some(p) = &ops.status_path {
        field(&mut o, "status_path", &lua_string(p));
    }
    if !ops.trusted_proxies.is_empty() {
        let nets = ops
            .trusted_proxies
            .iter()
            .map(|c| lua_string(&c.to_string()));
        field(&mut o, "trusted_proxies", &list(nets));
    }
    if let Some(p) = &config.pid_file {
        field(&mut o, "pid_file", &path(p));
    }
    if let Some(p) = &config.admin {
        field(&mut o, "admin", &path(p));
    }
    field(&mut o, "daemon", &config.daemon.to_string());
    run_as(&mut o, config.user.as_ref());
    if let Some(p) = &config.chroot {
        field(&mut o, "chroot", &path(p));
    }
    let l = &config.limits;
    field(
        &mut o,
        "limits",
        &format!(
            "{{ connections = {}, header_bytes = {}, keepalive_requests = {}, body_bytes = {}, \
             connections_per_ip = {}, lua_body_bytes = {}, lua_wall = {} }}",
            l.connections,
            l.header_bytes,
            l.keepalive_requests,
            l.body_bytes,
            l.connections_per_ip,
            l.lua_body_bytes,
            seconds(l.lua_wall)
        ),
    );
    let t = &config.timeouts;
    field(
        &mut o,
        "timeouts",
        &format!(
            "{{ read_idle = {}, write_idle = {}, keepalive_idle = {}, graceful = {}, handshake = {} }}",
            seconds(t.read_idle),
            seconds(t.write_idle),
            seconds(t.keepalive_idle),
            seconds(t.graceful),
            seconds(t.handshake)
        ),
    );
    static_opts::print(&mut o, &config.static_opts);
    super::auth::print(&mut o, &config.auth, &config.access);
    if let Some(d) = &config.default_site {
        field(&mut o, "default_site", &lua_string(d));
    }
    if !config.tls.certificates.is_empty() {
        field(&mut o, "tls", &tls(&config.tls));
    }
    o.push_str("}\n");
    for def in &config.fastcgi {
        o.push('\n');
        fastcgi(&mut o, def);
    }
    super::vhost::print(&mut o, &config.sites);
    if let Some(def) = &config.cgi {
        o.push('\n');
        o.push_str(&super::cgi::print(def));
    }
    for def in &config.upstreams {
        o.push('\n');
        super::upstream::print(&mut o, def);
    }
    for def in &config.shared {
        o.push('\n');
        super::shared::print(&mut o, def);
    }
    if config.has_route {
        o.push_str("\n-- route(function(req) ... end) is set in the original config; a Lua function cannot be printed.\n");
    }
    o
}

fn fastcgi(o: &mut String, d: &FastcgiDef) {
    let _ = writeln!(o, "-- defined at {}", d.defined_at.replace('\n', " "));
    let _ = writeln!(o, "fastcgi {} {{", lua_string(&d.name));
    if let Some(argv) = &d.spawn {
        field(o, "spawn", &list(argv.iter().map(|s| lua_string(s))));
        field(o, "procs", &d.procs.to_string());
    }
    if let Some(s) = &d.socket {
        field(o, "socket", &addr(s));
    }
    if !d.address.is_empty() {
        field(o, "address", &list(d.address.iter().map(addr)));
    }
    if !d.env.is_empty() {
        field(o, "env", &map(d.env.iter()));
    }
    if !d.extensions.is_empty() {
        field(
            o,
            "extensions",
            &list(d.extensions.iter().map(|s| lua_string(s))),
        );
    }
    if let Some(p) = &d.prefix {
        field(o, "prefix", &lua_string(p));
    }
    field(o, "check_local", &d.check_local.to_string());
    field(o, "keepalive", &d.keepalive.to_string());
    field(o, "request_buffering", &d.request_buffering.to_string());
    field(o, "connect_timeout", &seconds(d.connect_timeout));
    field(o, "read_timeout", &seconds(d.read_timeout));
    field(o, "disable_time", &seconds(d.disable_time));
    run_as(o, d.user.as_ref());
    o.push_str("}\n");
}

pub(super) fn field(o: &mut String, key: &str, value: &str) {
    let _ = writeln!(o, "  {key} = {value},");
}

fn tls(t: &super::Tls) -> String {
    let certs = t.certificates.iter().map(|c| {
        format!(
            "{{ cert = {}, key = {}, names = {} }}",
            path(&c.cert_path),
            path(&c.key_path),
            list(c.names.iter().map(|n| lua_string(n)))
        )
    });
    let ciphers = t
        .ciphers
        .iter()
        .map(|c| lua_string(crate::tls::suites::name(*c)));
    format!(
        "{{ certificates = {}, min_version = {}, max_version = {}, ciphers = {}, \
         prefer_server_ciphers = {}, session_tickets = {}, ktls = {} }}",
        list(certs),
        lua_string(t.min_version.name()),
        lua_string(t.max_version.name()),
        list(ciphers),
        t.prefer_server_ciphers,
        t.session_tickets,
        t.ktls
    )
}

fn list(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.collect();
    if items.is_empty() {
        "{}".to_string()
    } else {
        format!("{{ {} }}", items.join(", "))
    }
}

fn map<'a>(items: impl Iterator<Item = (&'a String, &'a String)>) -> String {
    list(items.map(|(k, v)| format!("[{}] = {}", lua_string(k), lua_string(v))))
}

fn addr(a: &ListenAddr) -> String {
    lua_string(&listen::format(a))
}

pub(super) fn path(p: &Path) -> String {
    lua_string(&p.to_string_lossy())
}

/// Seconds written exactly: whole seconds as an integer, else the decimal with nanosecond
/// digits (trailing zeros dropped), which Lua reads back to the same `Duration`.
pub(super) fn seconds(d: Duration) -> String {
    let nanos = d.subsec_nanos();
    if nanos == 0 {
        return d.as_secs().to_string();
    }
    let frac = format!("{nanos:09}");
    format!("{}.{}", d.as_secs(), frac.trim_end_matches('0'))
}

/// A Lua string literal for `s`: printable ASCII and UTF-8 as-is, everything else escaped.
/// Decimal escapes are always three digits so a following digit cannot join them.
pub(super) fn lua_string(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(o, "\\{:03}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lua_strings() {
        assert_eq!(lua_string("a\"b\\c\nd\u{1}9"), "\"a\\\"b\\\\c\\nd\\0019\"");
        assert_eq!(lua_string("é"), "\"é\"");
    }

    #[test]
    fn seconds_are_exact() {
        assert_eq!(seconds(Duration::from_secs(30)), "30");
        assert_eq!(seconds(Duration::from_millis(2500)), "2.5");
        assert_eq!(seconds(Duration::from_nanos(1)), "0.000000001");
    }

    #[test]
    fn strings_read_back_in_lua() {
        let lua = mlua::Lua::new();
        for s in [
            "plain",
            "q\"uote",
            "back\\slash",
            "nl\nx",
            "\u{1}2\u{7f}",
            "ünï",
        ] {
            let back: String = lua.load(lua_string(s)).eval().expect("valid Lua string");
            assert_eq!(back, s);
        }
    }
}
