//! The `access` and `auth` rules applied to a request before it is routed: a client network
//! outside the rule gets 403, a missing or wrong Basic user 401 with the realm.
//!
//! A password hash costs milliseconds (bcrypt by design), and a browser sends the
//! credentials with every request; a worker blocked that long per asset would stall all its
//! connections, so credentials that verified are remembered for a minute in a per-worker
//! table keyed by their SHA-256 (never the password itself). Wrong ones are never
//! remembered, so every guess pays the full hash.

use crate::auth::basic;
use crate::config::{AccessRule, AuthRule, Config, VhostDef};
use crate::http::request::Request;
use crate::reply::Reply;
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long verified credentials are trusted without hashing again.
const REMEMBER: Duration = Duration::from_secs(60);
/// Most credentials remembered; the table is emptied when full.
const REMEMBER_MAX: usize = 1024;

/// What the rules say about a request.
pub enum Gate {
    /// It goes on, as this user when an auth rule applied.
    Pass(Option<String>),
    /// It is answered with this refusal (401 or 403).
    Refuse(Reply),
}

thread_local! {
    static VERIFIED: RefCell<HashMap<[u8; 32], Instant>> = RefCell::new(HashMap::new());
}

/// The rule with the longest prefix that `path` starts with, of the server's and then the
/// site's rules (the site's wins a tie: `max_by_key` keeps the last maximum).
fn longest<'a, T>(
    server: &'a [T],
    site: &'a [T],
    path: &str,
    prefix: impl Fn(&T) -> &str,
) -> Option<&'a T> {
    server
        .iter()
        .chain(site)
        .filter(|r| path.starts_with(prefix(r)))
        .max_by_key(|r| prefix(r).len())
}

/// Applies `access` then `auth` to `req` from the client at `ip`: `server{}`'s rules and,
/// for a request of a `site{}`, the site's own beside them.
pub fn check(config: &Config, vhost: Option<&VhostDef>, req: &Request, ip: &str) -> Gate {
    let (site_access, site_auth) = match vhost {
        Some(v) => (&v.access[..], &v.auth[..]),
        None => (&[][..], &[][..]),
    };
    if let Some(rule) = longest(&config.access, site_access, &req.path, |r: &AccessRule| {
        &r.prefix
    }) {
        if !rule.admits(ip) {
            tracing::info!("access: {ip} refused for {}", rule.prefix);
            return Gate::Refuse(Reply::error(403));
        }
    }
    let Some(rule) = longest(&config.auth, site_auth, &req.path, |r: &AuthRule| &r.prefix) else {
        return Gate::Pass(None);
    };
    check_rule(rule, req, ip)
}

/// Applies one auth rule (a path rule, or a `basic_auth{}` helper's) to `req`.
pub fn check_rule(rule: &AuthRule, req: &Request, ip: &str) -> Gate {
    let creds = req.header("authorization").and_then(basic::parse);
    if let Some(c) = creds {
        if verified(rule, &c.user, &c.password) {
            return Gate::Pass(Some(c.user));
        }
        tracing::info!("auth: wrong user or password from {ip} for {}", rule.prefix);
    }
    let mut reply = Reply::error(401);
    reply.header(
        "WWW-Authenticate",
        &format!("Basic realm=\"{}\", charset=\"UTF-8\"", rule.realm),
    );
    Gate::Refuse(reply)
}

/// Whether `user` and `password` are right for `rule`, from the table of recent ones or by
/// checking the hash.
fn verified(rule: &AuthRule, user: &str, password: &[u8]) -> bool {
    let mut h = Sha256::new();
    h.update(rule.file.as_os_str().as_encoded_bytes());
    h.update([0]);
    h.update(user.as_bytes());
    h.update([0]);
    h.update(password);
    let key: [u8; 32] = h.finalize().into();
    let now = Instant::now();
    let known = VERIFIED.with(|v| {
        v.borrow()
            .get(&key)
            .is_some_and(|at| now.duration_since(*at) < REMEMBER)
    });
    if known {
        return true;
    }
    if !rule.users.verify(user, password) {
        return false;
    }
    VERIFIED.with(|v| {
        let mut v = v.borrow_mut();
        if v.len() >= REMEMBER_MAX {
            v.clear();
        }
        v.insert(key, now);
    });
    true
}

/// The CGI params of an authenticated user (RFC 3875 §4.1.1, §4.1.11).
pub fn params(user: Option<&str>) -> Vec<(String, String)> {
    match user {
        Some(u) => vec![
            ("AUTH_TYPE".into(), "Basic".into()),
            ("REMOTE_USER".into(), u.into()),
        ],
        None => Vec::new(),
    }
}
