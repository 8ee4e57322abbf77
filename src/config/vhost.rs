//! `site "example.com" { root = ..., aliases = {...}, route = function ... end, ... }`: virtual
//! hosts. A request whose Host names a site (or one of its aliases) is served from the site's
//! root, index, MIME types, headers and route function; any other host goes to `server{}`'s
//! own site, or to `default_site`. The worker's side is src/worker/vhost.rs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mlua::{Function, Lua, Value};

use super::site::Site;
use super::validate::{self, Report};
use super::{ConfigError, Dotfiles};

/// Keys of `site "name" {...}`.
pub(super) const VHOST_KEYS: &[&str] = &[
    "root",
    "index",
    "aliases",
    "route",
    "headers",
    "mime",
    "dotfiles",
    "fastcgi",
    "proxy",
    "auth",
    "access",
    "compress",
    "error_pages",
    "expires",
];

/// A validated `site` block.
#[derive(Debug, Clone, PartialEq)]
pub struct VhostDef {
    /// The site's name (a host, lowercased, without a trailing dot).
    pub name: String,
    /// Other hosts served by it (`aliases`); `*.example.com` matches any subdomain.
    pub aliases: Vec<String>,
    /// Where it was defined, for messages.
    pub defined_at: String,
    /// Document root (absolute, canonical).
    pub root: PathBuf,
    /// Index file names (default: `server{}`'s).
    pub index: Option<Vec<String>>,
    /// Dotfiles rule (default: `server{}`'s).
    pub dotfiles: Option<Dotfiles>,
    /// MIME overrides added to `server{}`'s.
    pub mime: BTreeMap<String, String>,
    /// Response headers added to every answer of the site that does not set them itself.
    pub headers: Vec<(String, String)>,
    /// The FastCGI backends whose `prefix`/`extensions` rules apply here (None: all).
    pub fastcgi: Option<Vec<String>>,
    /// The site's own proxy rules (`proxy = { ["/app/"] = "name" }`), in place of the
    /// upstreams' `prefix` rules for its requests (None: those rules).
    pub proxy: Option<Vec<SiteProxy>>,
    /// Whether the site has its own route function.
    pub has_route: bool,
    /// Basic auth per path prefix for this site, beside `server{}`'s (`auth`).
    pub auth: Vec<super::AuthRule>,
    /// Client networks per path prefix for this site, beside `server{}`'s (`access`).
    pub access: Vec<super::AccessRule>,
    /// `compress`, `error_pages`, `expires` and path-rule `headers` of this site, in place of
    /// `server{}`'s for its requests (each key it leaves out is `server{}`'s).
    pub statics: super::static_opts::SiteStatics,
}

/// One entry of a site's `proxy` table: requests under `prefix` go to upstream `upstream`
/// unchanged, as an upstream's own `prefix` sends them.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteProxy {
    /// The URL prefix (starts with '/'); `/app/` also takes `/app`.
    pub prefix: String,
    /// The upstream's name (checked to exist once every block is read).
    pub upstream: String,
    /// `file:line` of the entry, for the unknown-upstream message.
    pub defined_at: String,
}

impl VhostDef {
    /// Whether `host` (lowercased, no port, no trailing dot) is this site.
    pub fn serves(&self, host: &str) -> bool {
        std::iter::once(&self.name)
            .chain(&self.aliases)
            .any(|n| host_matches(n, host))
    }
}

/// `name` (a site name or alias) against a request host: exactly, or `*.example.com` for any
/// subdomain of example.com (not example.com itself).
pub fn host_matches(name: &str, host: &str) -> bool {
    match name.strip_prefix("*.") {
        Some(parent) => host
            .strip_suffix(parent)
            .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
        None => name == host,
    }
}

/// A request's Host as sites are matched: lowercased, without port and trailing dot.
pub fn normalise_host(host: &str) -> String {
    let h = host.to_ascii_lowercase();
    let h = if h.starts_with('[') {
        match h.find(']') {
            Some(i) => h[..=i].to_string(),
            None => h,
        }
    } else {
        match h.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name.to_string(),
            _ => h,
        }
    };
    h.trim_end_matches('.').to_string()
}

/// A site name or alias, normalised, or the reason it cannot be one.
fn host_name(s: &str) -> Result<String, String> {
    let n = normalise_host(s);
    let body = n.strip_prefix("*.").unwrap_or(&n);
    let ok = !body.is_empty()
        && (body.starts_with('[') && body.ends_with(']')
            || body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_'));
    if ok && n == s.to_ascii_lowercase().trim_end_matches('.') {
        Ok(n)
    } else {
        Err(format!(
            "'{s}' is not a host name (letters, digits, '-', '.'; '*.' for subdomains; no port)"
        ))
    }
}

/// `dotfiles = "allow" | "deny"`, or `true` / `false` (the spelling) for the same.
pub(super) fn dotfiles(r: &mut Report, v: &Value) -> Option<Dotfiles> {
    if let Value::Boolean(b) = v {
        return Some(if *b { Dotfiles::Allow } else { Dotfiles::Deny });
    }
    match validate::string(r, &["dotfiles"], v).as_deref() {
        Some("allow") => Some(Dotfiles::Allow),
        Some("deny") => Some(Dotfiles::Deny),
        Some(other) => {
            r.at(
                &["dotfiles"],
                format!("dotfiles must be \"allow\" or \"deny\", got '{other}'"),
            );
            None
        }
        None => None,
    }
}

/// Validates `site name {...}`; the route function, if any, comes back beside the site.
pub(super) fn vhost(
    name: &str,
    v: &Value,
    site: &Site,
    base: &Path,
) -> (VhostDef, Option<Function>, Vec<ConfigError>) {
    let mut def = VhostDef {
        name: String::new(),
        aliases: Vec::new(),
        defined_at: site.position(),
        root: PathBuf::new(),
        index: None,
        dotfiles: None,
        mime: BTreeMap::new(),
        headers: Vec::new(),
        fastcgi: None,
        proxy: None,
        has_route: false,
        auth: Vec::new(),
        access: Vec::new(),
        statics: Default::default(),
    };
    let mut rep = Report {
        site,
        prefix: format!("site '{name}': "),
        errors: Vec::new(),
    };
    match host_name(name) {
        Ok(n) => def.name = n,
        Err(e) => rep.at_call(e),
    }
    let Some(fields) = validate::record(&mut rep, &[], v, VHOST_KEYS, "site{}") else {
        return (def, None, rep.finish());
    };
    let r = &mut rep;
    match fields.get("root") {
        Some(v) => {
            if let Some(root) = validate::root_dir(r, v, base) {
                def.root = root;
            }
        }
        None => r.at_call("a site needs root (its document root directory)"),
    }
    if let Some(v) = fields.get("aliases") {
        for a in validate::string_list(r, &["aliases"], v).unwrap_or_default() {
            match host_name(&a) {
                Ok(n) => def.aliases.push(n),
                Err(e) => r.at_value(&["aliases"], &a, e),
            }
        }
    }
    if let Some(v) = fields.get("index") {
        def.index = validate::string_list(r, &["index"], v);
    }
    if let Some(v) = fields.get("dotfiles") {
        def.dotfiles = dotfiles(r, v);
    }
    if let Some(v) = fields.get("auth") {
        def.auth = super::auth::auth_rules(r, v, base);
    }
    if let Some(v) = fields.get("access") {
        def.access = super::auth::access_rules(r, v);
    }
    if let Some(v) = fields.get("mime") {
        def.mime = validate::mime(r, v);
    }
    def.statics = validate::read_site_statics(r, &fields);
    // `headers` of the path-rule shape was read into `statics`; the flat shape is the site's
    // lines on every answer.
    if let Some(v) = fields
        .get("headers")
        .filter(|v| !validate::is_rule_headers(v))
    {
        let entries = validate::string_keyed(
            r,
            "headers",
            v,
            "a table of [\"Name\"] = \"value\"",
            "header names",
        );
        for (name, val) in entries {
            let path = ["headers", name.as_str()];
            let Some(val) = validate::string(r, &path, &val) else {
                continue;
            };
            let token = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !token || val.chars().any(|c| matches!(c, '\r' | '\n' | '\0')) {
                r.at(
                    &path,
                    format!("headers: '{name}' is not a valid header line"),
                );
                continue;
            }
            def.headers.push((name, val));
        }
        crate::sort_compact::sort(&mut def.headers);
    }
    if let Some(v) = fields.get("fastcgi") {
        def.fastcgi = validate::string_list(r, &["fastcgi"], v);
    }
    if let Some(v) = fields.get("proxy") {
        def.proxy = Some(proxy_rules(r, v));
    }
    let route = match fields.get("route") {
        Some(Value::Function(f)) => {
            def.has_route = true;
            Some(f.clone())
        }
        Some(other) => {
            r.at(
                &["route"],
                format!("route must be a function, got {}", validate::got(other)),
            );
            None
        }
        None => None,
    };
    (def, route, rep.finish())
}

/// `proxy = { ["/app/"] = "app", ... }`: URL prefixes (the shape of an upstream's `prefix`)
/// to upstream names, sorted by prefix; the names are checked in `check_all`.
fn proxy_rules(r: &mut Report, v: &Value) -> Vec<SiteProxy> {
    let entries = validate::string_keyed(
        r,
        "proxy",
        v,
        "a table of [\"/prefix/\"] = \"upstream name\"",
        "URL prefixes like \"/app/\"",
    );
    let mut out = Vec::new();
    for (prefix, val) in entries {
        let path = ["proxy", prefix.as_str()];
        if !prefix.starts_with('/') || validate::has_control(&prefix) || prefix.contains(' ') {
            r.at(
                &path,
                format!("proxy: prefix must be a URL path starting with '/', got '{prefix}'"),
            );
            continue;
        }
        let Some(upstream) = validate::string(r, &path, &val) else {
            continue;
        };
        let site = r.site;
        let defined_at = match site.line_of(&path, Some(&upstream)) {
            Some(line) => format!("{}:{line}", site.file),
            None => site.file.clone(),
        };
        out.push(SiteProxy {
            prefix,
            upstream,
            defined_at,
        });
    }
    crate::sort_compact::sort_by(&mut out, |a, b| a.prefix.cmp(&b.prefix));
    out
}

/// Checks that need every site and the backends: unique names, `default_site` and the
/// backends and upstreams a site names existing.
pub(super) fn check_all(
    sites: &[VhostDef],
    default_site: Option<&str>,
    backends: &[String],
    upstreams: &[&str],
    main: &str,
) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let err = |at: &str, message: String| {
        let (file, line) = match at.rsplit_once(':') {
            Some((f, l)) if l.parse::<u32>().is_ok() => (f.to_string(), l.parse().ok()),
            _ => (at.to_string(), None),
        };
        ConfigError {
            file,
            line,
            message,
        }
    };
    for (i, s) in sites.iter().enumerate() {
        for n in std::iter::once(&s.name).chain(&s.aliases) {
            if let Some(first) = sites[..i]
                .iter()
                .find(|o| std::iter::once(&o.name).chain(&o.aliases).any(|m| m == n))
            {
                errors.push(err(
                    &s.defined_at,
                    format!(
                        "site '{}': host '{n}' is already site '{}' ({})",
                        s.name, first.name, first.defined_at
                    ),
                ));
            }
        }
        for b in s.fastcgi.iter().flatten() {
            if !backends.contains(b) {
                errors.push(err(
                    &s.defined_at,
                    format!("site '{}': fastcgi: unknown backend '{b}'", s.name),
                ));
            }
        }
        for p in s.proxy.iter().flatten() {
            if !upstreams.contains(&p.upstream.as_str()) {
                let hint = super::suggest::unknown_name_hint(&p.upstream, upstreams, "upstream");
                errors.push(err(
                    &p.defined_at,
                    format!(
                        "site '{}': proxy: unknown upstream '{}' for '{}'{hint}",
                        s.name, p.upstream, p.prefix
                    ),
                ));
            }
        }
    }
    if let Some(d) = default_site {
        if !sites.iter().any(|s| s.name == d) {
            errors.push(ConfigError {
                file: main.to_string(),
                line: None,
                message: format!("default_site '{d}' is not a site (site \"{d}\" {{ ... }})"),
            });
        }
    }
    errors
}

/// The one route function a worker's Router runs when sites have their own: it picks the
/// function of the request's site (`pick` gives the site's index from `req.host`), else (no
/// site, or a site without one) the `server{}` route, and returns nil (the default rules)
/// when there is none.
pub(super) fn combined_route(
    lua: &Lua,
    sites: &[VhostDef],
    default_site: Option<&str>,
    routes: Vec<(usize, Function)>,
    main: Option<Function>,
) -> mlua::Result<Function> {
    let table = lua.create_table()?;
    for (i, f) in routes {
        table.raw_set(i + 1, f)?;
    }
    let picker = Picker::new(sites, default_site);
    let pick = lua.create_function(move |_, host: Option<String>| {
        Ok(picker.pick(host.as_deref()).map(|i| i + 1))
    })?;
    let chooser: Function = lua
        .load(
            "local pick, routes, main = ...\n\
             return function(req)\n\
               local i = pick(req.host)\n\
               local f = (i and routes[i]) or main\n\
               if f then return f(req) end\n\
               return nil\n\
             end",
        )
        .set_name("=luahttpd sites")
        .into_function()?;
    chooser.call::<Function>((pick, table, main))
}

/// Which site a host names: the matching used by the worker too.
#[derive(Debug, Clone)]
pub struct Picker {
    names: Vec<(String, usize)>,
    default: Option<usize>,
}

impl Picker {
    /// The matching of `sites`, with `default_site`.
    pub fn new(sites: &[VhostDef], default_site: Option<&str>) -> Picker {
        let names = sites
            .iter()
            .enumerate()
            .flat_map(|(i, s)| {
                std::iter::once(&s.name)
                    .chain(&s.aliases)
                    .map(move |n| (n.clone(), i))
            })
            .collect();
        let default = default_site.and_then(|d| sites.iter().position(|s| s.name == d));
        Picker { names, default }
    }

    /// The index of the site for `host` (as the request gives it), exact names before
    /// wildcards; else `default_site`; None: `server{}`'s own site.
    pub fn pick(&self, host: Option<&str>) -> Option<usize> {
        let Some(host) = host else {
            return self.default;
        };
        let h = normalise_host(host);
        self.names
            .iter()
            .find(|(n, _)| *n == h)
            .or_else(|| self.names.iter().find(|(n, _)| host_matches(n, &h)))
            .map(|(_, i)| *i)
            .or(self.default)
    }
}

/// The sites as `-p` prints them.
pub(super) fn print(o: &mut String, sites: &[VhostDef]) {
    use super::print::{field, lua_string, path};
    let list = |items: &[String]| {
        let v: Vec<String> = items.iter().map(|s| lua_string(s)).collect();
        format!("{{ {} }}", v.join(", "))
    };
    for s in sites {
        o.push('\n');
        o.push_str(&format!(
            "-- defined at {}\n",
            s.defined_at.replace('\n', " ")
        ));
        o.push_str(&format!("site {} {{\n", lua_string(&s.name)));
        field(o, "root", &path(&s.root));
        if !s.aliases.is_empty() {
            field(o, "aliases", &list(&s.aliases));
        }
        if let Some(index) = &s.index {
            field(o, "index", &list(index));
        }
        if let Some(d) = s.dotfiles {
            let d = match d {
                Dotfiles::Allow => "allow",
                Dotfiles::Deny => "deny",
            };
            field(o, "dotfiles", &lua_string(d));
        }
        let map = |m: &mut dyn Iterator<Item = (&String, &String)>| {
            let v: Vec<String> = m
                .map(|(k, v)| format!("[{}] = {}", lua_string(k), lua_string(v)))
                .collect();
            format!("{{ {} }}", v.join(", "))
        };
        if !s.mime.is_empty() {
            field(o, "mime", &map(&mut s.mime.iter()));
        }
        if !s.headers.is_empty() {
            field(
                o,
                "headers",
                &map(&mut s.headers.iter().map(|(k, v)| (k, v))),
            );
        }
        if let Some(f) = &s.fastcgi {
            field(o, "fastcgi", &list(f));
        }
        if let Some(p) = &s.proxy {
            field(
                o,
                "proxy",
                &map(&mut p.iter().map(|r| (&r.prefix, &r.upstream))),
            );
        }
        super::print::static_opts::print_site(o, &s.statics);
        super::auth::print(o, &s.auth, &s.access);
        if s.has_route {
            o.push_str("  -- route = function(req) ... end is set in the original config.\n");
        }
        o.push_str("}\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(name: &str, aliases: &[&str]) -> VhostDef {
        VhostDef {
            name: name.into(),
            aliases: aliases.iter().map(|s| s.to_string()).collect(),
            defined_at: String::new(),
            root: PathBuf::new(),
            index: None,
            dotfiles: None,
            mime: BTreeMap::new(),
            headers: Vec::new(),
            fastcgi: None,
            proxy: None,
            has_route: false,
            auth: Vec::new(),
            access: Vec::new(),
            statics: Default::default(),
        }
    }

    #[test]
    fn hosts_are_matched_without_case_port_and_trailing_dot() {
        let sites = [
            def("example.com", &["www.example.com"]),
            def("other.test", &["*.other.test"]),
        ];
        let p = Picker::new(&sites, None);
        for h in [
            "example.com",
            "EXAMPLE.com",
            "example.com.",
            "example.com:8080",
            "www.example.com.:80",
        ] {
            assert_eq!(p.pick(Some(h)), Some(0), "{h}");
        }
        assert_eq!(p.pick(Some("a.b.other.test")), Some(1));
        assert_eq!(p.pick(Some("other.test")), Some(1));
        assert_eq!(p.pick(Some("xother.test")), None);
        assert_eq!(p.pick(Some("unknown.test")), None);
        assert_eq!(p.pick(None), None);
        let p = Picker::new(&sites, Some("other.test"));
        assert_eq!(p.pick(Some("unknown.test")), Some(1));
        assert_eq!(p.pick(None), Some(1));
        assert_eq!(normalise_host("[::1]:8080"), "[::1]");
    }

    #[test]
    fn site_names_are_checked() {
        assert_eq!(host_name("Example.COM."), Ok("example.com".into()));
        assert_eq!(host_name("*.example.com"), Ok("*.example.com".into()));
        assert!(host_name("example.com:80").is_err());
        assert!(host_name("exa mple").is_err());
        assert!(host_name("").is_err());
    }
}
