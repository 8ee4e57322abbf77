//! The operator keys of `server{}`: `status_path`, `access_log_format`, `trusted_proxies`, and
//! `proxy_protocol` on a listen entry written as a table (`{ "*:80", proxy_protocol = true }`).

use std::collections::BTreeMap;
use std::path::Path;

use mlua::Value;

use super::listen;
use super::ListenAddr;
use crate::log_format::LogFormat;
use crate::real_ip::Cidr;

/// What an operator sets beside serving: the status page, the log format, real client
/// addresses.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Ops {
    /// The path the status page answers at (`status_path = "/server-status"`), None: off.
    pub status_path: Option<String>,
    /// The access log's format (`access_log_format`, default `"combined"`).
    pub access_log_format: LogFormat,
    /// Peers whose `X-Forwarded-For` and PROXY header are believed (`trusted_proxies`).
    pub trusted_proxies: Vec<Cidr>,
    /// Listen addresses whose connections start with a PROXY protocol header.
    pub proxy_protocol: Vec<ListenAddr>,
}

/// A problem with a key: its path and the message.
pub(super) type Problem<'a> = &'a mut dyn FnMut(&[&str], String);

/// Reads the operator keys from `fields` (the server table's known keys).
pub(super) fn server(fields: &BTreeMap<String, Value>, problem: Problem<'_>) -> Ops {
    let mut ops = Ops::default();
    match fields.get("status_path") {
        None | Some(Value::Boolean(false)) => {}
        Some(Value::String(s)) => match s.to_str() {
            Ok(p) if p.starts_with('/') && !p.contains(['?', '#']) && !has_control(&p) => {
                ops.status_path = Some(p.to_string())
            }
            _ => problem(
                &["status_path"],
                "status_path must be a path starting with '/' (no query), e.g. \"/server-status\""
                    .into(),
            ),
        },
        Some(other) => problem(
            &["status_path"],
            format!(
                "status_path must be a path or false, got a {}",
                other.type_name()
            ),
        ),
    }
    match fields.get("access_log_format") {
        None => {}
        Some(Value::String(s)) => match s.to_str() {
            Ok(t) => match LogFormat::parse(&t) {
                Ok(f) => ops.access_log_format = f,
                Err(e) => problem(&["access_log_format"], e),
            },
            Err(_) => problem(
                &["access_log_format"],
                "access_log_format must be valid UTF-8".into(),
            ),
        },
        Some(other) => problem(
            &["access_log_format"],
            format!(
                "access_log_format must be \"combined\", \"json\" or a template with $fields, got a {}",
                other.type_name()
            ),
        ),
    }
    match fields.get("trusted_proxies") {
        None => {}
        Some(v) => {
            let list: Vec<Value> = match v {
                Value::String(_) => vec![v.clone()],
                Value::Table(t) => t.clone().sequence_values::<Value>().flatten().collect(),
                other => {
                    problem(
                        &["trusted_proxies"],
                        format!(
                            "trusted_proxies must be a list of addresses or ranges, got a {}",
                            other.type_name()
                        ),
                    );
                    Vec::new()
                }
            };
            for item in list {
                let text = match &item {
                    Value::String(s) => s.to_str().map(|s| s.to_string()).unwrap_or_default(),
                    other => other.type_name().to_string(),
                };
                match Cidr::parse(&text) {
                    Ok(c) => ops.trusted_proxies.push(c),
                    Err(e) => problem(&["trusted_proxies"], format!("trusted_proxies: {e}")),
                }
            }
        }
    }
    ops
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// The `proxy_protocol` key of listen entries written as tables, `{ "addr", proxy_protocol =
/// true }`: the addresses marked are returned, parsed as `listen` addresses. The value is left
/// as it is; `tls::listen_entries` reads the addresses and the other keys of the same entries.
pub(super) fn listen_tables(v: &Value, base: &Path, problem: Problem<'_>) -> Vec<ListenAddr> {
    let mut marked = Vec::new();
    let Value::Table(list) = v else {
        return marked;
    };
    // `listen = { "*:80", proxy_protocol = true }`: one entry written without the list around
    // it (as tls::listen_entries reads it too).
    let lone = list
        .clone()
        .pairs::<Value, Value>()
        .any(|p| matches!(p, Ok((Value::String(_), _))));
    let entries: Vec<(i64, mlua::Table)> = if lone {
        vec![(1, list.clone())]
    } else {
        list.clone()
            .sequence_values::<Value>()
            .enumerate()
            .filter_map(|(i, e)| match e {
                Ok(Value::Table(t)) => Some((i as i64 + 1, t)),
                _ => None,
            })
            .collect()
    };
    for (i, t) in entries {
        // A table without an address is reported by tls::listen_entries, which reads the
        // addresses and the tls keys of the same entries.
        let Some(addr) = t.raw_get::<Option<String>>(1).ok().flatten() else {
            continue;
        };
        for pair in t.clone().pairs::<Value, Value>().flatten() {
            match pair {
                (Value::String(k), Value::Boolean(b))
                    if k.to_str().is_ok_and(|k| k == "proxy_protocol") =>
                {
                    // A bad address is reported with the address list.
                    match listen::parse(&addr, base, listen::Use::Listen) {
                        Ok(a) if b => marked.push(a),
                        _ => {}
                    }
                }
                (Value::String(k), v) if k.to_str().is_ok_and(|k| k == "proxy_protocol") => {
                    problem(
                        &["listen", "proxy_protocol"],
                        format!(
                        "listen entry {i} ('{addr}'): proxy_protocol must be true or false, got {}",
                        v.type_name()
                    ),
                    )
                }
                // The address and the other keys (tls, redirect_to_https) are read, and
                // unknown keys reported, by tls::listen_entries.
                _ => {}
            }
        }
    }
    marked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(src: &str) -> Result<super::super::Config, String> {
        super::super::lua_api::load_source(src, Path::new("test.lua"))
            .map(|l| l.config)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn keys_parse_print_and_load_again() {
        let c = load(
            r#"server { root = ".", status_path = "/server-status",
  access_log_format = "$remote_addr $status $request_time",
  trusted_proxies = { "10.0.0.0/8", "::1" },
  listen = { "127.0.0.1:8080", { "127.0.0.1:8081", proxy_protocol = true },
             { "127.0.0.1:8082", proxy_protocol = false } } }"#,
        )
        .expect("loads");
        assert_eq!(c.ops.status_path.as_deref(), Some("/server-status"));
        assert_eq!(
            c.ops.access_log_format.source,
            "$remote_addr $status $request_time"
        );
        assert_eq!(c.ops.trusted_proxies.len(), 2);
        assert_eq!(c.listen.len(), 3);
        assert_eq!(c.ops.proxy_protocol, vec![c.listen[1].clone()]);
        let text = super::super::print(&c);
        assert!(
            text.contains("{ \"127.0.0.1:8081\", proxy_protocol = true }"),
            "{text}"
        );
        let again = load(&text).expect("printed config loads");
        assert_eq!(again.ops, c.ops, "{text}");
        assert_eq!(again.listen, c.listen);
    }

    #[test]
    fn problems_are_reported_with_the_line() {
        for (src, want) in [
            (
                "status_path = 'server-status'",
                "status_path must be a path starting with '/'",
            ),
            ("access_log_format = '$bogus'", "unknown field $bogus"),
            ("access_log_format = 3", "access_log_format must be"),
            ("trusted_proxies = { '10.0.0.0/40' }", "prefix length"),
            (
                "trusted_proxies = { 'proxy.local' }",
                "is not an IP address",
            ),
            (
                "listen = { { proxy_protocol = true } }",
                "starts with its address",
            ),
            (
                "listen = { { '127.0.0.1:1', proxy_protocol = 1 } }",
                "proxy_protocol must be true or false",
            ),
            (
                "listen = { { '127.0.0.1:1', bogus = true } }",
                "unknown key 'bogus'",
            ),
        ] {
            let err = load(&format!("server {{ root = '.',\n {src} }}")).expect_err(src);
            assert!(
                err.contains("test.lua:") && err.contains(want),
                "{src}: {err}"
            );
        }
    }
}
