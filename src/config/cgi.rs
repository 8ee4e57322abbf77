//! `cgi { prefix = "/cgi-bin/", root = "cgi-bin", interpreters = {...} }`: scripts run as
//! RFC 3875 CGI processes, one per request, forked by the worker (src/worker/cgi.rs).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mlua::Value;

use super::site::Site;
use super::validate::{self, Report};
use super::ConfigError;

/// Keys of `cgi {...}`.
pub(super) const CGI_KEYS: &[&str] = &["prefix", "root", "interpreters", "timeout", "max_procs"];

/// Most CGI processes one worker may run at once; more is surely a typo.
const MAX_PROCS: i64 = 4096;

/// A validated `cgi {}` block.
#[derive(Debug, Clone, PartialEq)]
pub struct CgiDef {
    /// Where it was defined, for messages.
    pub defined_at: String,
    /// URL prefix whose requests run scripts (`prefix`, starts and ends with '/').
    pub prefix: String,
    /// The folder the scripts are in (`root`, absolute, canonical).
    pub root: PathBuf,
    /// Lowercased suffix with its dot → the interpreter's absolute path (`interpreters`). A
    /// script whose suffix has none is executed itself, if it is executable.
    pub interpreters: BTreeMap<String, PathBuf>,
    /// Time one run may take from its start to its last byte (`timeout`, default 60 s); then
    /// the process is killed and the client gets 504 (or a cut response).
    pub timeout: Duration,
    /// Processes one worker runs at once (`max_procs`, default 16); over it, 503.
    pub max_procs: usize,
}

/// Validates the table given to `cgi {}`.
pub(super) fn cgi(v: &Value, site: &Site, base: &Path) -> (CgiDef, Vec<ConfigError>) {
    let mut def = CgiDef {
        defined_at: site.position(),
        prefix: "/cgi-bin/".into(),
        root: PathBuf::new(),
        interpreters: BTreeMap::new(),
        timeout: Duration::from_secs(60),
        max_procs: 16,
    };
    let mut rep = Report {
        site,
        prefix: "cgi: ".into(),
        errors: Vec::new(),
    };
    let Some(fields) = validate::record(&mut rep, &[], v, CGI_KEYS, "cgi{}") else {
        return (def, rep.finish());
    };
    let r = &mut rep;
    if let Some(v) = fields.get("prefix") {
        if let Some(p) = validate::string(r, &["prefix"], v) {
            if !p.starts_with('/') || p.contains(['?', '#', '\0']) || p.contains("/../") {
                r.at(
                    &["prefix"],
                    format!("prefix must be a URL path starting with '/', got '{p}'"),
                );
            } else {
                // "/cgi-bin" and "/cgi-bin/" mean the same folder.
                def.prefix = if p.ends_with('/') { p } else { format!("{p}/") };
            }
        }
    }
    match fields.get("root") {
        Some(v) => {
            if let Some(abs) = validate::path_value(r, &["root"], v, base) {
                match abs.canonicalize() {
                    Ok(p) if p.is_dir() => def.root = p,
                    Ok(_) => r.at(
                        &["root"],
                        format!("root {} is not a directory", abs.display()),
                    ),
                    Err(e) => r.at(
                        &["root"],
                        format!("root {} cannot be used: {e}", abs.display()),
                    ),
                }
            }
        }
        None => r.at_call("cgi{} needs root (the folder of the scripts)"),
    }
    if let Some(v) = fields.get("interpreters") {
        let entries = validate::string_keyed(
            r,
            "interpreters",
            v,
            "a table of suffix = program",
            "suffixes like \".sh\"",
        );
        for (suffix, prog) in entries {
            let path = ["interpreters", suffix.as_str()];
            if !suffix.starts_with('.') || suffix.len() < 2 || suffix.contains('/') {
                r.at(
                    &path,
                    format!("interpreters key must be a suffix like \".sh\", got '{suffix}'"),
                );
                continue;
            }
            let Some(prog) = validate::string(r, &path, &prog) else {
                continue;
            };
            let p = PathBuf::from(&prog);
            if !p.is_absolute() {
                r.at(
                    &path,
                    format!("interpreter for {suffix} must be an absolute path, got '{prog}'"),
                );
                continue;
            }
            match std::fs::metadata(&p) {
                Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => {
                    def.interpreters.insert(suffix.to_ascii_lowercase(), p);
                }
                Ok(_) => r.at(
                    &path,
                    format!("interpreter {prog} for {suffix} is not an executable file"),
                ),
                Err(e) => r.at(&path, format!("interpreter {prog} for {suffix}: {e}")),
            }
        }
    }
    if let Some(v) = fields.get("timeout") {
        if let Some(d) = validate::seconds(r, &["timeout"], v, false) {
            def.timeout = d;
        }
    }
    if let Some(v) = fields.get("max_procs") {
        if let Some(n) = validate::integer(r, &["max_procs"], v, 1, MAX_PROCS) {
            def.max_procs = n as usize;
        }
    }
    (def, rep.finish())
}

/// The block as `-p` prints it.
pub(super) fn print(def: &CgiDef) -> String {
    use super::print::{field, lua_string, path, seconds};
    let mut o = String::from("cgi {\n");
    field(&mut o, "prefix", &lua_string(&def.prefix));
    field(&mut o, "root", &path(&def.root));
    let interp: Vec<String> = def
        .interpreters
        .iter()
        .map(|(k, v)| format!("[{}] = {}", lua_string(k), path(v)))
        .collect();
    field(
        &mut o,
        "interpreters",
        &format!("{{ {} }}", interp.join(", ")),
    );
    field(&mut o, "timeout", &seconds(def.timeout));
    field(&mut o, "max_procs", &def.max_procs.to_string());
    o.push_str("}\n");
    o
}

/// What `chroot` cannot serve yet: CGI scripts and site roots are paths outside the jail,
/// which the jailed workers would not find; refused at load rather than failing per request.
pub(super) fn jail_problems(config: &super::Config) -> Vec<ConfigError> {
    if config.chroot.is_none() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let at = |defined_at: &str, message: String| {
        let (file, line) = match defined_at.rsplit_once(':') {
            Some((f, l)) if l.parse::<u32>().is_ok() => (f.to_string(), l.parse().ok()),
            _ => (defined_at.to_string(), None),
        };
        ConfigError {
            file,
            line,
            message,
        }
    };
    if let Some(def) = &config.cgi {
        out.push(at(
            &def.defined_at,
            "cgi{} cannot be used with chroot yet (scripts and interpreters are outside the jail)"
                .into(),
        ));
    }
    for s in &config.sites {
        out.push(at(
            &s.defined_at,
            format!(
                "site '{}' cannot be used with chroot yet (its root is outside the jail)",
                s.name
            ),
        ));
    }
    out
}
