//! `server { auth = {...}, access = {...} }`: Basic authentication and client-network rules
//! per path prefix. The htpasswd files are read at load, so `-t` reports a bad line and a
//! reload reads them again.

use std::path::{Path, PathBuf};

use mlua::Value;

use super::validate::{self, Report};
use crate::auth::cidr::Cidr;
use crate::auth::htpasswd::Users;

/// Keys of one `auth` rule.
const AUTH_KEYS: &[&str] = &["prefix", "realm", "users"];
/// Keys of one `access` rule.
const ACCESS_KEYS: &[&str] = &["prefix", "allow", "deny"];

/// `auth = { { prefix = "/admin/", realm = "Admin", users = "htpasswd" } }`: requests under
/// the prefix need a user of the file (Basic), else 401.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthRule {
    /// URL path prefix.
    pub prefix: String,
    /// The realm the browser shows.
    pub realm: String,
    /// The htpasswd file (absolute).
    pub file: PathBuf,
    /// Its users, read at load.
    pub users: Users,
}

/// `access = { { prefix = "/admin/", allow = { "10.0.0.0/8" }, deny = { "all" } } }`: a
/// client under the prefix is refused (403) when `allow` is given and none of it matches,
/// or when a `deny` entry matches and no `allow` entry does.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessRule {
    /// URL path prefix.
    pub prefix: String,
    /// Networks let in.
    pub allow: Vec<Cidr>,
    /// Networks refused.
    pub deny: Vec<Cidr>,
}

impl AccessRule {
    /// Whether the client at `ip` may go on.
    pub fn admits(&self, ip: &str) -> bool {
        let allowed = self.allow.iter().any(|c| c.contains(ip));
        if allowed {
            return true;
        }
        self.allow.is_empty() && !self.deny.iter().any(|c| c.contains(ip))
    }
}

/// The items of a list of rule tables.
fn items(r: &mut Report, key: &str, v: &Value) -> Vec<Value> {
    let Value::Table(t) = v else {
        r.at(
            &[key],
            format!(
                "{key} must be a list of rule tables, got {}",
                validate::got(v)
            ),
        );
        return Vec::new();
    };
    let len = t.raw_len();
    if t.pairs::<Value, Value>().count() != len {
        r.at(
            &[key],
            format!("{key} must be a list of rule tables: {key} = {{ {{ prefix = \"/admin/\", ... }} }}"),
        );
        return Vec::new();
    }
    (1..=len)
        .map(|i| t.raw_get::<Value>(i).unwrap_or(Value::Nil))
        .collect()
}

fn prefix(r: &mut Report, key: &str, v: Option<&Value>) -> Option<String> {
    let Some(v) = v else {
        r.at(
            &[key],
            format!("each {key} rule needs a prefix (\"/admin/\")"),
        );
        return None;
    };
    let p = validate::string(r, &[key, "prefix"], v)?;
    if !p.starts_with('/') || p.chars().any(char::is_control) {
        r.at(
            &[key, "prefix"],
            format!("{key} prefix must be a URL path starting with '/', got '{p}'"),
        );
        return None;
    }
    Some(p)
}

/// The htpasswd file `v` names, read and parsed.
fn users(r: &mut Report, key: &[&str], v: &Value, base: &Path) -> Option<(PathBuf, Users)> {
    let file = validate::path_value(r, key, v, base)?;
    match std::fs::read_to_string(&file) {
        Ok(text) => match Users::parse(&text) {
            Ok(u) => Some((file, u)),
            Err((line, msg)) => {
                r.at(key, format!("{}:{line}: {msg}", file.display()));
                None
            }
        },
        Err(e) => {
            r.at(key, format!("users file {}: {e}", file.display()));
            None
        }
    }
}

/// A realm: it goes into a quoted string of `WWW-Authenticate`.
fn realm(r: &mut Report, key: &[&str], v: &Value) -> Option<String> {
    let s = validate::string(r, key, v)?;
    if s.is_empty() || s.contains(['"', '\\']) || s.chars().any(char::is_control) {
        r.at(
            key,
            "realm must be non-empty text without '\"', '\\' or control characters",
        );
        return None;
    }
    Some(s)
}

/// Validates `basic_auth { realm = ..., users = ... }`, the route helper.
pub(super) fn helper(
    v: &Value,
    site: &super::site::Site,
    base: &Path,
) -> (Option<AuthRule>, Vec<super::ConfigError>) {
    let mut rep = Report {
        site,
        prefix: "basic_auth: ".into(),
        errors: Vec::new(),
    };
    let r = &mut rep;
    let Some(f) = validate::record(r, &[], v, &["realm", "users"], "basic_auth{}") else {
        return (None, rep.finish());
    };
    let realm = match f.get("realm") {
        Some(v) => realm(r, &["realm"], v),
        None => {
            r.at_call("basic_auth{} needs a realm");
            None
        }
    };
    let users = match f.get("users") {
        Some(v) => users(r, &["users"], v, base),
        None => {
            r.at_call("basic_auth{} needs users (an htpasswd file)");
            None
        }
    };
    let rule = match (realm, users) {
        (Some(realm), Some((file, users))) => Some(AuthRule {
            prefix: String::new(),
            realm,
            file,
            users,
        }),
        _ => None,
    };
    (rule, rep.finish())
}

/// Validates `auth`.
pub(super) fn auth_rules(r: &mut Report, v: &Value, base: &Path) -> Vec<AuthRule> {
    let mut out = Vec::new();
    for item in items(r, "auth", v) {
        let Some(f) = validate::record(r, &["auth"], &item, AUTH_KEYS, "an auth rule") else {
            continue;
        };
        let prefix = prefix(r, "auth", f.get("prefix"));
        let realm = match f.get("realm") {
            Some(v) => realm(r, &["auth", "realm"], v),
            None => {
                r.at(&["auth"], "each auth rule needs a realm");
                None
            }
        };
        let users = match f.get("users") {
            Some(v) => users(r, &["auth", "users"], v, base),
            None => {
                r.at(&["auth"], "each auth rule needs users (an htpasswd file)");
                None
            }
        };
        if let (Some(prefix), Some(realm), Some((file, users))) = (prefix, realm, users) {
            out.push(AuthRule {
                prefix,
                realm,
                file,
                users,
            });
        }
    }
    out
}

fn networks(r: &mut Report, key: &str, v: Option<&Value>) -> Vec<Cidr> {
    let Some(v) = v else { return Vec::new() };
    let mut out = Vec::new();
    for s in validate::string_list(r, &["access", key], v).unwrap_or_default() {
        match Cidr::parse(&s) {
            Ok(c) => out.push(c),
            Err(e) => r.at_value(&["access", key], &s, format!("access {key}: {e}")),
        }
    }
    out
}

/// Validates `access`.
pub(super) fn access_rules(r: &mut Report, v: &Value) -> Vec<AccessRule> {
    let mut out = Vec::new();
    for item in items(r, "access", v) {
        let Some(f) = validate::record(r, &["access"], &item, ACCESS_KEYS, "an access rule") else {
            continue;
        };
        let prefix = prefix(r, "access", f.get("prefix"));
        let allow = networks(r, "allow", f.get("allow"));
        let deny = networks(r, "deny", f.get("deny"));
        if allow.is_empty() && deny.is_empty() {
            r.at(
                &["access"],
                "an access rule needs allow or deny (lists of networks)",
            );
            continue;
        }
        if let Some(prefix) = prefix {
            out.push(AccessRule {
                prefix,
                allow,
                deny,
            });
        }
    }
    out
}

/// The rules as `-p` prints them (inside `server{}`).
pub(super) fn print(o: &mut String, auth: &[AuthRule], access: &[AccessRule]) {
    use super::print::{field, lua_string, path};
    if !auth.is_empty() {
        let rules: Vec<String> = auth
            .iter()
            .map(|a| {
                format!(
                    "{{ prefix = {}, realm = {}, users = {} }}",
                    lua_string(&a.prefix),
                    lua_string(&a.realm),
                    path(&a.file)
                )
            })
            .collect();
        field(o, "auth", &format!("{{ {} }}", rules.join(", ")));
    }
    if !access.is_empty() {
        let list = |c: &[Cidr]| {
            let items: Vec<String> = c.iter().map(|c| lua_string(&c.to_string())).collect();
            format!("{{ {} }}", items.join(", "))
        };
        let rules: Vec<String> = access
            .iter()
            .map(|a| {
                format!(
                    "{{ prefix = {}, allow = {}, deny = {} }}",
                    lua_string(&a.prefix),
                    list(&a.allow),
                    list(&a.deny)
                )
            })
            .collect();
        field(o, "access", &format!("{{ {} }}", rules.join(", ")));
    }
}
