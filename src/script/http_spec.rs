//! The options of `http.request{...}` (issue 13), checked into an [`HttpSpec`]: either a plain
//! `url = "http://IP:port/path"`, or `upstream = "name", path = "/p"`, one of the reverse
//! proxy's `upstream` blocks, whose address the worker picks (balancing, passive health, kept
//! connections) when it starts the call.

use std::time::Duration;

use mlua::Value;

use super::HttpSpec;

/// Where an `http.request` goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpTarget {
    /// A plain address from `url`.
    Addr(std::net::SocketAddr),
    /// One of the config's `upstream` blocks, by name.
    Upstream(String),
}

/// The options of `http.request{ method, url | upstream, path, headers, body, timeout, send_timeout }`.
pub(super) fn parse(o: &mlua::Table) -> Result<HttpSpec, String> {
    let get = |k: &str| o.get::<Value>(k).map_err(|e| e.to_string());
    let upstream = match get("upstream")? {
        Value::Nil => None,
        Value::String(s) => Some(s.to_str().map_err(|e| e.to_string())?.to_string()),
        other => {
            return Err(format!(
                "upstream must be the name of an upstream block, not {}",
                other.type_name()
            ))
        }
    };
    let (target, mut host, path) = match upstream {
        Some(name) => {
            if !get("url")?.is_nil() {
                return Err("give url or upstream, not both".into());
            }
            let path = match get("path")? {
                Value::Nil => "/".to_string(),
                Value::String(s) => s.to_str().map_err(|e| e.to_string())?.to_string(),
                other => return Err(format!("path must be a string, not {}", other.type_name())),
            };
            if !path.starts_with('/') {
                return Err(format!("path must start with '/': '{path}'"));
            }
            // nginx's proxy_pass http://name sends the upstream's name as Host.
            (HttpTarget::Upstream(name.clone()), name, path)
        }
        None => {
            if !get("path")?.is_nil() {
                return Err("path goes with upstream; with url, put the path in the url".into());
            }
            let url = match get("url")? {
                Value::String(s) => s.to_str().map_err(|e| e.to_string())?.to_string(),
                _ => return Err(
                    "url or upstream is required: http.request{ url = \"http://127.0.0.1:8080/path\" } or http.request{ upstream = \"app\", path = \"/path\" }"
                        .into(),
                ),
            };
            let (addr, host, path) = url_target(&url)?;
            (HttpTarget::Addr(addr), host, path)
        }
    };
    if path.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'#') {
        return Err(format!(
            "the path has a space, a control byte or '#': '{}'",
            path.escape_debug()
        ));
    }
    let upstream_mode = matches!(target, HttpTarget::Upstream(_));
    let body = match get("body")? {
        Value::Nil => Vec::new(),
        Value::String(s) => s.as_bytes().to_vec(),
        other => return Err(format!("body must be a string, not {}", other.type_name())),
    };
    let method = match get("method")? {
        Value::Nil if body.is_empty() => "GET".to_string(),
        Value::Nil => "POST".to_string(),
        Value::String(s) => {
            let m = s.to_str().map_err(|e| e.to_string())?.to_ascii_uppercase();
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
                return Err(format!("bad method '{m}'"));
            }
            m
        }
        other => {
            return Err(format!(
                "method must be a string, not {}",
                other.type_name()
            ))
        }
    };
    let mut headers = Vec::new();
    match get("headers")? {
        Value::Nil => {}
        Value::Table(t) => {
            for pair in t.pairs::<String, String>() {
                let (n, v) = pair.map_err(|_| "headers must map names to strings")?;
                let bad_name = n.is_empty() || !n.bytes().all(crate::http::chunked::is_tchar);
                if bad_name || v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                    return Err(format!("bad header '{n}'"));
                }
                if n.eq_ignore_ascii_case("host") {
                    // An upstream's name is rarely the Host its servers expect: it may be set.
                    if upstream_mode {
                        host = v;
                    }
                    continue;
                }
                if n.eq_ignore_ascii_case("connection") {
                    continue;
                }
                headers.push((n, v));
            }
        }
        other => {
            return Err(format!(
                "headers must be a table, not {}",
                other.type_name()
            ))
        }
    }
    let timeout = seconds(get("timeout")?, "timeout")?.unwrap_or(10.0);
    let send_timeout = seconds(get("send_timeout")?, "send_timeout")?;
    Ok(HttpSpec {
        method,
        target,
        host,
        path,
        headers,
        body,
        timeout: Duration::from_secs_f64(timeout.min(3600.0)),
        send_timeout: send_timeout.map(|t| Duration::from_secs_f64(t.min(3600.0))),
        max_body: 1024 * 1024,
    })
}

/// A time option in seconds (None when absent); it must be > 0.
fn seconds(v: Value, name: &str) -> Result<Option<f64>, String> {
    let t = match v {
        Value::Nil => return Ok(None),
        Value::Integer(n) => n as f64,
        Value::Number(f) => f,
        other => return Err(format!("{name} must be seconds, not {}", other.type_name())),
    };
    if t.is_nan() || t <= 0.0 {
        return Err(format!("{name} must be > 0 seconds"));
    }
    Ok(Some(t))
}

/// `http://IP[:port]/path` → the address, the Host (the authority as written) and the path.
fn url_target(url: &str) -> Result<(std::net::SocketAddr, String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// URLs are supported (no TLS yet)")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (ip, rest) = v6.split_once(']').ok_or("bad [IPv6] address")?;
        let port = match rest.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| "bad port")?,
            None => 80,
        };
        (ip.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse::<u16>().map_err(|_| "bad port")?),
            None => (authority.to_string(), 80),
        }
    };
    let ip: std::net::IpAddr = if host.eq_ignore_ascii_case("localhost") {
        std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
    } else {
        host.parse().map_err(|_| {
            format!("'{host}' is not an IP address (names are not looked up: a lookup would block the worker)")
        })?
    };
    Ok((
        std::net::SocketAddr::new(ip, port),
        authority.to_string(),
        path.to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(lua_opts: &str) -> Result<HttpSpec, String> {
        let lua = mlua::Lua::new();
        let t: mlua::Table = lua.load(format!("return {lua_opts}")).eval().unwrap();
        parse(&t)
    }

    #[test]
    fn upstream_name_path_and_host() {
        let s = spec(r#"{ upstream = "app", path = "/x?y=1" }"#).unwrap();
        assert_eq!(s.target, HttpTarget::Upstream("app".into()));
        assert_eq!((s.host.as_str(), s.path.as_str()), ("app", "/x?y=1"));
        assert_eq!(s.method, "GET");
        let s = spec(r#"{ upstream = "app", headers = { Host = "example.org" } }"#).unwrap();
        assert_eq!((s.host.as_str(), s.path.as_str()), ("example.org", "/"));
        let s = spec(r#"{ url = "http://127.0.0.1:9/a", headers = { Host = "x" } }"#).unwrap();
        assert_eq!(s.host, "127.0.0.1:9", "a url's Host is its authority");
    }

    #[test]
    fn refuses_mixed_or_bad_targets() {
        let e = spec(r#"{ upstream = "app", url = "http://127.0.0.1/" }"#).unwrap_err();
        assert!(e.contains("not both"), "{e}");
        let e = spec(r#"{ upstream = "app", path = "x" }"#).unwrap_err();
        assert!(e.contains("start with '/'"), "{e}");
        let e = spec(r#"{ upstream = "app", path = "/a b" }"#).unwrap_err();
        assert!(e.contains("space"), "{e}");
        let e = spec(r#"{ url = "http://127.0.0.1/a\r\nX: y" }"#).unwrap_err();
        assert!(e.contains("control"), "{e}");
        let e = spec(r#"{ upstream = 3 }"#).unwrap_err();
        assert!(e.contains("upstream must be"), "{e}");
        let e = spec(r#"{ url = "http://127.0.0.1/", path = "/p" }"#).unwrap_err();
        assert!(e.contains("path goes with upstream"), "{e}");
        let e = spec("{}").unwrap_err();
        assert!(e.contains("url or upstream is required"), "{e}");
    }

    #[test]
    fn timeouts_are_positive_seconds() {
        let s = spec(r#"{ url = "http://127.0.0.1:9/" }"#).unwrap();
        assert_eq!((s.timeout, s.send_timeout), (Duration::from_secs(10), None));
        let s = spec(r#"{ upstream = "a", timeout = 2, send_timeout = 0.5 }"#).unwrap();
        assert_eq!(s.timeout, Duration::from_secs(2));
        assert_eq!(s.send_timeout, Some(Duration::from_millis(500)));
        let e = spec(r#"{ upstream = "a", send_timeout = 0 }"#).unwrap_err();
        assert!(e.contains("send_timeout must be > 0"), "{e}");
        let e = spec(r#"{ upstream = "a", send_timeout = "1" }"#).unwrap_err();
        assert!(e.contains("send_timeout must be seconds"), "{e}");
    }
}
