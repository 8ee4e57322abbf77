//! Evaluating a config script: the globals it may call and turning the result into a `Config`.
//!
//! The script is real Lua with the full standard library. The config-time helpers (`server`,
//! `fastcgi`, `route`, `include`, `exists`, `read_file`) are Rust functions that record what
//! they were given in an `Eval` shared by all of them. Each call is validated when it is made,
//! so that problems found before a Lua error stops the script are still reported.
//!
//! So that one run reports every problem, no helper stops the script: a helper's error is
//! recorded and the helper returns nil (`collect`); an included file that raises a Lua error
//! stops only itself. Any other Lua error stops the file it is in (Lua cannot resume a chunk).
//! Backend names in decisions built while loading are checked once the whole script ran.
//!
//! Relative paths (root, logs, pid file, Unix sockets, `exists`, `read_file`) resolve against
//! the main config file's folder, also inside included files, so a `conf.d/` snippet can be moved
//! without its paths changing meaning. Only `include` patterns are relative to the including
//! file's folder, as that is where its neighbours are.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use mlua::{Function, IntoLua, Lua, Value};

use super::site::Site;
use super::{
    upstream, validate, Config, ConfigError, ConfigErrors, FastcgiDef, Loaded, UpstreamDef,
};

/// How deep `include` may nest; deeper is almost surely a file including itself.
const MAX_INCLUDE_DEPTH: usize = 16;

/// A file whose text we keep: for finding key lines, and its folder for `include`.
struct Source {
    text: Rc<str>,
    /// The folder `include` patterns in this file are relative to (as the user named it, so
    /// that included files are named the same way in messages).
    dir: PathBuf,
}

/// Everything the script has declared so far.
struct Eval {
    /// The main file as the user named it: where errors without a position go.
    main: String,
    /// The main config file as it goes into `Config.file`.
    config_file: PathBuf,
    /// Folder relative paths in the config resolve against (absolute).
    base: PathBuf,
    /// Texts of the main file and of every included file, by chunk name.
    sources: HashMap<String, Source>,
    /// Current `include` nesting.
    depth: usize,
    server: Option<(Config, String)>,
    fastcgi: Vec<FastcgiDef>,
    shared: Vec<super::SharedDef>,
    route: Option<(Function, String)>,
    /// The `cgi {}` block.
    cgi: Option<super::CgiDef>,
    /// The rules of `basic_auth{}` helpers, by the index their decisions carry.
    route_auth: Vec<super::AuthRule>,
    /// `site "name" {}` blocks with their route functions.
    sites: Vec<(super::VhostDef, Option<Function>)>,
    /// Backend names of `fastcgi(name, {...})` decisions built while loading, with where: checked
    /// against the definitions once the whole script ran (a definition may come later).
    decisions: Vec<(String, Site)>,
    /// HTTP upstreams (`upstream "name" {...}`).
    upstreams: Vec<UpstreamDef>,
    /// Upstream names of `proxy(name, {...})` decisions built while loading, checked likewise.
    proxy_decisions: Vec<(String, Site)>,
    /// An included file stopped with a Lua error: what it would have declared is missing, so
    /// "no server{} block" may be untrue and is not reported.
    include_failed: bool,
    errors: Vec<ConfigError>,
    /// Set once loading finished: the helpers then refuse to run (e.g. from a route function).
    done: bool,
}

type Shared = Rc<RefCell<Eval>>;

/// Reads and evaluates the config file at `path` (named in messages as given).
pub(super) fn load_file(path: &Path) -> Result<Loaded, ConfigErrors> {
    load_file_limited(path, None)
}

/// As `load_file`; with a limit, evaluation past that much wall-clock time fails.
pub(super) fn load_file_limited(
    path: &Path,
    limit: Option<std::time::Duration>,
) -> Result<Loaded, ConfigErrors> {
    let name = path.display().to_string();
    let fail = |message: String| {
        ConfigErrors(vec![ConfigError {
            file: name.clone(),
            line: None,
            message,
        }])
    };
    let src =
        std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read config: {e}")))?;
    let abs = path
        .canonicalize()
        .map_err(|e| fail(format!("cannot resolve config path: {e}")))?;
    let base = abs
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    run(&src, name, abs, base, dir, limit)
}

/// Evaluates `src` as if it were the file `name`; relative paths resolve against the current
/// directory (this is how the embedded default config is loaded).
pub(super) fn load_source(src: &str, name: &Path) -> Result<Loaded, ConfigErrors> {
    let display = name.display().to_string();
    let base = std::env::current_dir().map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: display.clone(),
            line: None,
            message: format!("cannot read the current directory: {e}"),
        }])
    })?;
    run(src, display, name.to_path_buf(), base, PathBuf::new(), None)
}

fn run(
    src: &str,
    name: String,
    config_file: PathBuf,
    base: PathBuf,
    dir: PathBuf,
    limit: Option<std::time::Duration>,
) -> Result<Loaded, ConfigErrors> {
    let text: Rc<str> = Rc::from(src);
    let mut sources = HashMap::new();
    sources.insert(
        name.clone(),
        Source {
            text: text.clone(),
            dir,
        },
    );
    let state: Shared = Rc::new(RefCell::new(Eval {
        main: name.clone(),
        config_file,
        base,
        sources,
        depth: 0,
        server: None,
        fastcgi: Vec::new(),
        shared: Vec::new(),
        route: None,
        cgi: None,
        route_auth: Vec::new(),
        sites: Vec::new(),
        decisions: Vec::new(),
        upstreams: Vec::new(),
        proxy_decisions: Vec::new(),
        include_failed: false,
        errors: Vec::new(),
        done: false,
    }));
    let lua = Lua::new();
    let result = install(&lua, &state).and_then(|()| {
        if let Some(limit) = limit {
            crate::script::limit_evaluation(&lua, limit);
        }
        lua.load(&*text).set_name(format!("@{name}")).exec()
    });
    let overran = limit.is_some() && crate::script::end_evaluation_limit(&lua);
    // The state lives on for the route function: workers set their own hooks.
    lua.remove_hook();
    if let Err(e) = result {
        let mut err = lua_error(&e, &state.borrow());
        if let (true, Some(limit)) = (overran, limit) {
            err.message = format!("evaluating the config took longer than {limit:?}");
        }
        let mut st = state.borrow_mut();
        st.done = true;
        st.errors.push(err);
        return Err(ConfigErrors(std::mem::take(&mut st.errors)));
    }
    let mut st = state.borrow_mut();
    st.done = true;
    let server = st.server.take();
    let route = st.route.take();
    let fastcgi = std::mem::take(&mut st.fastcgi);
    let shared = std::mem::take(&mut st.shared);
    let cgi = st.cgi.take();
    let route_auth = std::mem::take(&mut st.route_auth);
    let sites = std::mem::take(&mut st.sites);
    let mut errors = std::mem::take(&mut st.errors);
    let include_failed = st.include_failed;
    // A failed include may have held the backend a decision names: "unknown backend" would
    // then be false, as "no server{} block" would be.
    if !include_failed {
        errors.extend(unknown_backends(&st.decisions, &fastcgi));
        errors.extend(upstream::unknown_upstreams(
            &st.proxy_decisions,
            &st.upstreams,
        ));
    }
    let upstreams = std::mem::take(&mut st.upstreams);
    let main = st.main.clone();
    drop(st);
    let Some((mut config, _)) = server else {
        if include_failed {
            return Err(ConfigErrors(errors));
        }
        errors.push(ConfigError {
            file: main,
            line: None,
            message: "no server{} block".into(),
        });
        return Err(ConfigErrors(errors));
    };
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    config.fastcgi = fastcgi;
    config.shared = shared;
    config.cgi = cgi;
    config.route_auth = route_auth;
    let (site_defs, site_routes): (Vec<_>, Vec<_>) = sites.into_iter().unzip();
    let names: Vec<String> = config.fastcgi.iter().map(|d| d.name.clone()).collect();
    let upstream_names: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
    let errors = super::vhost::check_all(
        &site_defs,
        config.default_site.as_deref(),
        &names,
        &upstream_names,
        &main,
    );
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let site_routes: Vec<(usize, Function)> = site_routes
        .into_iter()
        .enumerate()
        .filter_map(|(i, f)| f.map(|f| (i, f)))
        .collect();
    // Sites with route functions: the Router runs one function that picks the site's.
    let route = if site_routes.is_empty() {
        route
    } else {
        let at = route.as_ref().map(|(_, at)| at.clone()).unwrap_or_default();
        let main_fn = route.map(|(f, _)| f);
        match super::vhost::combined_route(
            &lua,
            &site_defs,
            config.default_site.as_deref(),
            site_routes,
            main_fn,
        ) {
            Ok(f) => Some((f, at)),
            Err(e) => {
                return Err(ConfigErrors(vec![ConfigError {
                    file: main,
                    line: None,
                    message: format!("cannot combine the sites' route functions: {e}"),
                }]))
            }
        }
    };
    config.sites = site_defs;
    let errors = super::cgi::jail_problems(&config);
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    config.upstreams = upstreams;
    let errors = validate::finish_privileges(&mut config);
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    config.has_route = route.is_some();
    let route = match route {
        Some((f, at)) => match lua.create_registry_value(f) {
            Ok(k) => Some(k),
            Err(e) => {
                let message = format!("cannot keep the route function given at {at}: {e}");
                return Err(ConfigErrors(vec![ConfigError {
                    file: main,
                    line: None,
                    message,
                }]));
            }
        },
        None => None,
    };
    Ok(Loaded { config, lua, route })
}

/// An error for each decision built at config time that names a backend the config does not
/// define: without this it would fail on every request it answers, with no config position.
fn unknown_backends(decisions: &[(String, Site)], defs: &[FastcgiDef]) -> Vec<ConfigError> {
    let names: Vec<&str> = defs.iter().map(|d| d.name.as_str()).collect();
    decisions
        .iter()
        .filter(|(name, _)| !names.contains(&name.as_str()))
        .map(|(name, site)| {
            let hint = super::suggest::unknown_name_hint(name, &names, "fastcgi backend");
            site.error(format!("fastcgi: unknown backend '{name}'{hint}"))
        })
        .collect()
}

/// The file and line of the Lua code calling the current Rust function: the first stack level
/// with a known line (skipping C functions such as `pcall`).
fn caller(lua: &Lua) -> (Option<String>, Option<u32>) {
    for level in 1..64 {
        let Some(d) = lua.inspect_stack(level) else {
            break;
        };
        let line = d.curr_line();
        if line > 0 {
            let src = d.source();
            let file = match src.source.as_deref() {
                Some(s) if s.starts_with('@') || s.starts_with('=') => Some(s[1..].to_string()),
                _ => src.short_src.as_deref().map(str::to_string),
            };
            return (file, u32::try_from(line).ok());
        }
    }
    (None, None)
}

/// The call site of the current helper call, with the text of its file for key lines.
fn site(lua: &Lua, st: &Eval) -> Site {
    let (file, line) = caller(lua);
    let file = file.unwrap_or_else(|| st.main.clone());
    let text = st.sources.get(&file).map(|s| s.text.clone());
    Site { file, line, text }
}

/// A Lua error positioned at the caller, like `error(msg, 2)` would be.
fn error_here(lua: &Lua, msg: impl std::fmt::Display) -> mlua::Error {
    let (file, line) = caller(lua);
    let pos = match (file, line) {
        (Some(f), Some(l)) => format!("{f}:{l}: "),
        (Some(f), None) => format!("{f}: "),
        _ => String::new(),
    };
    mlua::Error::RuntimeError(format!("{pos}{msg}"))
}

fn not_while_serving(lua: &Lua, what: &str) -> mlua::Error {
    error_here(
        lua,
        format!("{what} can only be used while the config file loads"),
    )
}

/// Defines the config-time globals.
fn install(lua: &Lua, state: &Shared) -> mlua::Result<()> {
    let g = lua.globals();
    // static{}, redirect(), respond(), deny(): a config may build decisions once, at config
    // time, and return them from route (fastcgi(name, opts) is handled below).
    crate::script::install_decisions(lua, false)?;
    // Coroutines the config makes now must carry the route budget later (issue 13).
    crate::script::carry_budget(lua)?;
    for name in ["static", "redirect", "respond", "deny", "status"] {
        let inner: Function = g.get(name)?;
        let st = state.clone();
        g.set(
            name,
            lua.create_function(move |_, args: mlua::MultiValue| {
                collect(&st, inner.call::<Value>(args))
            })?,
        )?;
    }

    install_upstream(lua, state)?;

    let st = state.clone();
    g.set(
        "server",
        lua.create_function(move |lua, v: Value| {
            let (site, base, file, first) = {
                let s = st.borrow();
                if s.done {
                    return Err(not_while_serving(lua, "server{}"));
                }
                let first = s.server.as_ref().map(|(_, at)| at.clone());
                (site(lua, &s), s.base.clone(), s.config_file.clone(), first)
            };
            if let Some(first) = first {
                let e = site.error(format!("server{{}} given twice, first at {first}"));
                st.borrow_mut().errors.push(e);
                return Ok(());
            }
            let (config, errors) = validate::server(&v, &site, &base, &file);
            let mut s = st.borrow_mut();
            s.errors.extend(errors);
            s.server = Some((config, site.position()));
            Ok(())
        })?,
    )?;

    let st = state.clone();
    g.set(
        "fastcgi",
        lua.create_function(move |lua, (name, opts): (Value, Option<Value>)| {
            // fastcgi("app", {...}) with two arguments is the routing decision, which a config
            // may build once and return from its route function; fastcgi "app" {...} defines.
            if let Some(opts) = opts {
                let backend = match &name {
                    Value::String(s) => s.to_str().ok().map(|s| s.to_string()),
                    _ => None,
                };
                let made = crate::script::fastcgi_decision(lua, name, opts)
                    .and_then(|d| d.into_lua(lua));
                let made = collect(&st, made)?;
                let mut s = st.borrow_mut();
                if let (false, Some(backend), false) = (made.is_nil(), backend, s.done) {
                    let at = site(lua, &s);
                    s.decisions.push((backend, at));
                }
                return Ok(made);
            }
            if st.borrow().done {
                return Err(not_while_serving(lua, "fastcgi"));
            }
            let name = match &name {
                Value::String(s) => s.to_str().map(|s| s.to_string()).ok(),
                _ => None,
            };
            let name = name.filter(|n| validate::is_backend_name(n));
            if name.is_none() {
                let s = st.borrow();
                let e = site(lua, &s).error(
                    "fastcgi needs a name of letters, digits, '_', '-' or '.': fastcgi \"php\" { ... }",
                );
                drop(s);
                st.borrow_mut().errors.push(e);
            }
            let st = st.clone();
            lua.create_function(move |lua, v: Value| {
                let Some(name) = &name else { return Ok(()) };
                let (site, base, first) = {
                    let s = st.borrow();
                    if s.done {
                        return Err(not_while_serving(lua, "fastcgi"));
                    }
                    let first = s.fastcgi.iter().find(|d| &d.name == name).map(|d| d.defined_at.clone());
                    (site(lua, &s), s.base.clone(), first)
                };
                if let Some(first) = first {
                    let e = site.error(format!("fastcgi '{name}' defined twice, first at {first}"));
                    st.borrow_mut().errors.push(e);
                    return Ok(());
                }
                let (def, errors) = validate::fastcgi(name, &v, &site, &base);
                let mut s = st.borrow_mut();
                s.errors.extend(errors);
                s.fastcgi.push(def);
                Ok(())
            })?
            .into_lua(lua)
        })?,
    )?;

    let st = state.clone();
    g.set(
        "shared",
        lua.create_function(move |lua, name: Value| {
            if st.borrow().done {
                return Err(not_while_serving(lua, "shared"));
            }
            let name = match &name {
                Value::String(s) => s.to_str().map(|s| s.to_string()).ok(),
                _ => None,
            }
            .filter(|n| validate::is_backend_name(n));
            if name.is_none() {
                let s = st.borrow();
                let e = site(lua, &s).error(
                    "shared needs a name of letters, digits, '_', '-' or '.': shared \"sessions\" { size = \"1m\" }",
                );
                drop(s);
                st.borrow_mut().errors.push(e);
            }
            let st = st.clone();
            lua.create_function(move |lua, v: Value| {
                let Some(name) = &name else { return Ok(()) };
                let (site, first) = {
                    let s = st.borrow();
                    if s.done {
                        return Err(not_while_serving(lua, "shared"));
                    }
                    let first = s.shared.iter().find(|d| &d.name == name).map(|d| d.defined_at.clone());
                    (site(lua, &s), first)
                };
                if let Some(first) = first {
                    let e = site.error(format!("shared '{name}' defined twice, first at {first}"));
                    st.borrow_mut().errors.push(e);
                    return Ok(());
                }
                let (def, errors) = super::shared::shared(name, &v, &site);
                let mut s = st.borrow_mut();
                s.errors.extend(errors);
                s.shared.push(def);
                Ok(())
            })?
            .into_lua(lua)
        })?,
    )?;

    let st = state.clone();
    g.set(
        "basic_auth",
        lua.create_function(move |lua, v: Value| {
            let (at, base) = {
                let s = st.borrow();
                if s.done {
                    return Err(not_while_serving(lua, "basic_auth{}"));
                }
                (site(lua, &s), s.base.clone())
            };
            let (rule, errors) = super::auth::helper(&v, &at, &base);
            let mut s = st.borrow_mut();
            s.errors.extend(errors);
            let Some(rule) = rule else {
                return Ok(Value::Nil);
            };
            let index = s.route_auth.len();
            s.route_auth.push(rule);
            // The helper: admin(decision) (or admin() for the default rules) is a decision
            // that asks for a user first; the password is checked by the worker after the
            // route call, outside its time limit.
            let f = lua.create_function(move |lua, inner: Value| {
                crate::script::auth_decision(lua, index, inner)
            })?;
            Ok(Value::Function(f))
        })?,
    )?;

    let st = state.clone();
    g.set(
        "site",
        lua.create_function(move |lua, name: Value| {
            if st.borrow().done {
                return Err(not_while_serving(lua, "site"));
            }
            let name = match &name {
                Value::String(s) => s.to_str().map(|s| s.to_string()).ok(),
                _ => None,
            };
            if name.is_none() {
                let s = st.borrow();
                let e = site(lua, &s).error("site needs a host name: site \"example.com\" { ... }");
                drop(s);
                st.borrow_mut().errors.push(e);
            }
            let st = st.clone();
            lua.create_function(move |lua, v: Value| {
                let Some(name) = &name else { return Ok(()) };
                let (at, base) = {
                    let s = st.borrow();
                    if s.done {
                        return Err(not_while_serving(lua, "site"));
                    }
                    (site(lua, &s), s.base.clone())
                };
                let (def, route, errors) = super::vhost::vhost(name, &v, &at, &base);
                let mut s = st.borrow_mut();
                s.errors.extend(errors);
                s.sites.push((def, route));
                Ok(())
            })?
            .into_lua(lua)
        })?,
    )?;

    let st = state.clone();
    g.set(
        "cgi",
        lua.create_function(move |lua, v: Value| {
            let (site, base, first) = {
                let s = st.borrow();
                if s.done {
                    return Err(not_while_serving(lua, "cgi{}"));
                }
                let first = s.cgi.as_ref().map(|d| d.defined_at.clone());
                (site(lua, &s), s.base.clone(), first)
            };
            if let Some(first) = first {
                let e = site.error(format!("cgi{{}} given twice, first at {first}"));
                st.borrow_mut().errors.push(e);
                return Ok(());
            }
            let (def, errors) = super::cgi::cgi(&v, &site, &base);
            let mut s = st.borrow_mut();
            s.errors.extend(errors);
            s.cgi = Some(def);
            Ok(())
        })?,
    )?;

    let st = state.clone();
    g.set(
        "route",
        lua.create_function(move |lua, v: Value| {
            let (site, first) = {
                let s = st.borrow();
                if s.done {
                    return Err(not_while_serving(lua, "route"));
                }
                (site(lua, &s), s.route.as_ref().map(|(_, at)| at.clone()))
            };
            let mut s = st.borrow_mut();
            match (v, first) {
                (_, Some(first)) => s
                    .errors
                    .push(site.error(format!("route given twice, first at {first}"))),
                (Value::Function(f), None) => s.route = Some((f, site.position())),
                (other, None) => s.errors.push(site.error(format!(
                    "route expects a function, got {}",
                    other.type_name()
                ))),
            }
            Ok(())
        })?,
    )?;

    let st = state.clone();
    g.set(
        "respond_hook",
        lua.create_function(move |lua, v: Value| {
            let site = {
                let s = st.borrow();
                if s.done {
                    return Err(not_while_serving(lua, "respond_hook"));
                }
                site(lua, &s)
            };
            let first: Option<String> = lua.named_registry_value(crate::script::RESPOND_HOOK_AT)?;
            let e = match (v, first) {
                (_, Some(first)) => {
                    site.error(format!("respond_hook given twice, first at {first}"))
                }
                (Value::Function(f), None) => {
                    lua.set_named_registry_value(crate::script::RESPOND_HOOK, f)?;
                    lua.set_named_registry_value(crate::script::RESPOND_HOOK_AT, site.position())?;
                    return Ok(());
                }
                (other, None) => site.error(format!(
                    "respond_hook expects a function(req, res), got {}",
                    other.type_name()
                )),
            };
            st.borrow_mut().errors.push(e);
            Ok(())
        })?,
    )?;

    for kind in ["every", "at_worker_start"] {
        let st = state.clone();
        g.set(
            kind,
            lua.create_function(move |lua, args: mlua::MultiValue| {
                let site = {
                    let s = st.borrow();
                    if s.done {
                        return Err(not_while_serving(lua, kind));
                    }
                    site(lua, &s)
                };
                match super::timers::record(lua, kind, args, &site.position()) {
                    Ok(()) => {}
                    Err(m) => st.borrow_mut().errors.push(site.error(m)),
                }
                Ok(())
            })?,
        )?;
    }

    let st = state.clone();
    g.set(
        "include",
        lua.create_function(move |lua, v: Value| {
            let result = include(lua, &st, v);
            if result.is_err() {
                st.borrow_mut().include_failed = true;
            }
            collect(&st, result)
        })?,
    )?;

    let st = state.clone();
    g.set(
        "exists",
        lua.create_function(move |lua, v: Value| {
            let p = path_arg(lua, "exists", &v)?;
            let abs = super::listen::resolve(&st.borrow().base, &p);
            Ok(abs.symlink_metadata().is_ok())
        })?,
    )?;

    let st = state.clone();
    g.set(
        "read_file",
        lua.create_function(move |lua, v: Value| {
            let p = path_arg(lua, "read_file", &v)?;
            let abs = super::listen::resolve(&st.borrow().base, &p);
            match std::fs::read(&abs) {
                Ok(bytes) => Ok((Some(lua.create_string(bytes)?), None)),
                Err(e) => Ok((None, Some(format!("{}: {e}", abs.display())))),
            }
        })?,
    )?;
    Ok(())
}

/// While loading, a config helper's error is recorded and the helper returns nil, so that the
/// script goes on and every problem is reported in one run (`-t`); once loading finished (a
/// helper kept in a local and called from the route function) the error is raised as usual.
fn collect<T: Default>(st: &Shared, result: mlua::Result<T>) -> mlua::Result<T> {
    match result {
        Ok(v) => Ok(v),
        Err(e) if st.borrow().done => Err(e),
        Err(e) => {
            let err = lua_error(&e, &st.borrow());
            st.borrow_mut().errors.push(err);
            Ok(T::default())
        }
    }
}

/// The path argument of `exists`/`read_file`; a wrong type is a programming error, so a Lua error.
fn path_arg(lua: &Lua, what: &str, v: &Value) -> mlua::Result<String> {
    match v {
        Value::String(s) => Ok(s.to_str()?.to_string()),
        other => Err(error_here(
            lua,
            format!("{what} expects a path string, got {}", other.type_name()),
        )),
    }
}

/// `include "conf.d/*.lua"`: evaluates each matching file, in name order, in this same state.
fn include(lua: &Lua, st: &Shared, v: Value) -> mlua::Result<()> {
    let pattern = match &v {
        Value::String(s) => s.to_str()?.to_string(),
        other => {
            return Err(error_here(
                lua,
                format!("include expects a file pattern, got {}", other.type_name()),
            ))
        }
    };
    let (file, _) = caller(lua);
    let dir = {
        let s = st.borrow();
        if s.done {
            return Err(not_while_serving(lua, "include"));
        }
        if s.depth >= MAX_INCLUDE_DEPTH {
            return Err(error_here(
                lua,
                format!("include '{pattern}' nested more than {MAX_INCLUDE_DEPTH} deep; does a file include itself?"),
            ));
        }
        let from = file.as_deref().and_then(|f| s.sources.get(f));
        let from = from.or_else(|| s.sources.get(&s.main));
        from.map(|src| src.dir.clone()).unwrap_or_default()
    };
    let files = expand(&dir, &pattern)
        .map_err(|msg| error_here(lua, format!("include '{pattern}': {msg}")))?;
    for path in files {
        let name = path.display().to_string();
        let text: Rc<str> = match std::fs::read_to_string(&path) {
            Ok(t) => Rc::from(t),
            Err(e) => {
                return Err(error_here(
                    lua,
                    format!("include '{pattern}': cannot read {name}: {e}"),
                ))
            }
        };
        let sub_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        {
            let mut s = st.borrow_mut();
            s.sources.insert(
                name.clone(),
                Source {
                    text: text.clone(),
                    dir: sub_dir,
                },
            );
            s.depth += 1;
        }
        let result = lua.load(&*text).set_name(format!("@{name}")).exec();
        st.borrow_mut().depth -= 1;
        // One failing file does not stop the next one (nor the including file): each is
        // reported where it stopped.
        if let Err(e) = result {
            let mut s = st.borrow_mut();
            let err = lua_error(&e, &s);
            s.errors.push(err);
            s.include_failed = true;
        }
    }
    Ok(())
}

/// The files an include pattern names, relative to `dir`. A pattern with wildcards may match
/// nothing (an empty conf.d is normal); a literal path must exist.
fn expand(dir: &Path, pattern: &str) -> Result<Vec<PathBuf>, String> {
    let wild = pattern.contains(['*', '?', '[']);
    let rel = Path::new(pattern);
    if !wild {
        let path = if rel.is_absolute() {
            rel.to_path_buf()
        } else {
            dir.join(rel)
        };
        if !path.exists() {
            return Err(format!("no such file ({})", path.display()));
        }
        return Ok(vec![path]);
    }
    let full = if rel.is_absolute() || dir.as_os_str().is_empty() {
        pattern.to_string()
    } else {
        // The folder is literal text: escape it so a '[' in a folder name is not a wildcard.
        format!(
            "{}/{pattern}",
            glob::Pattern::escape(&dir.to_string_lossy())
        )
    };
    let paths = glob::glob(&full).map_err(|e| format!("bad pattern: {e}"))?;
    let mut out = Vec::new();
    for p in paths {
        match p {
            Ok(p) if p.is_file() => out.push(p),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(out)
}

/// The text of a Lua error, without mlua's wrapping ("runtime error: ", callback layers) and
/// without the stack traceback.
fn lua_error_text(e: &mlua::Error) -> String {
    let text = match e {
        mlua::Error::CallbackError { cause, .. } => return lua_error_text(cause),
        mlua::Error::WithContext { cause, .. } => return lua_error_text(cause),
        mlua::Error::RuntimeError(m) => m.clone(),
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        mlua::Error::MemoryError(m) => format!("out of memory: {m}"),
        other => other.to_string(),
    };
    match text.find("\nstack traceback:") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// Turns a Lua error into `file:line: message`, recognising the position Lua put in front.
fn lua_error(e: &mlua::Error, st: &Eval) -> ConfigError {
    let text = lua_error_text(e);
    // Known file names first: a name may itself contain ':'.
    let mut names: Vec<&str> = st.sources.keys().map(String::as_str).collect();
    crate::sort_compact::sort_by_key(&mut names, |n| std::cmp::Reverse(n.len()));
    for n in names {
        if let Some(rest) = text.strip_prefix(n).and_then(|r| r.strip_prefix(':')) {
            if let Some((line, msg)) = split_line(rest) {
                return ConfigError {
                    file: n.to_string(),
                    line: Some(line),
                    message: msg.to_string(),
                };
            }
        }
    }
    // Any other `chunk:line: message` (e.g. from load() with a chunk name of its own).
    for (i, _) in text.match_indices(':') {
        if let Some((line, msg)) = split_line(&text[i + 1..]) {
            if i > 0 {
                return ConfigError {
                    file: text[..i].to_string(),
                    line: Some(line),
                    message: msg.to_string(),
                };
            }
        }
    }
    ConfigError {
        file: st.main.clone(),
        line: None,
        message: text,
    }
}

/// `"12: message"` → `(12, "message")`.
fn split_line(s: &str) -> Option<(u32, &str)> {
    let end = s.find(|c: char| !c.is_ascii_digit())?;
    let line = s[..end].parse().ok()?;
    let msg = s[end..].strip_prefix(": ")?;
    Some((line, msg))
}

/// `upstream "name" {...}` defines an HTTP upstream; `proxy(name, {...})` built at config time
/// records its upstream name, checked once the whole script ran.
fn install_upstream(lua: &Lua, state: &Shared) -> mlua::Result<()> {
    let g = lua.globals();
    let inner: Function = g.get("proxy")?;
    let st = state.clone();
    g.set(
        "proxy",
        lua.create_function(move |lua, args: mlua::MultiValue| {
            let name = match args.front() {
                Some(Value::String(s)) => s.to_str().ok().map(|s| s.to_string()),
                _ => None,
            };
            let made = collect(&st, inner.call::<Value>(args))?;
            let mut s = st.borrow_mut();
            if let (false, Some(name), false) = (made.is_nil(), name, s.done) {
                let at = site(lua, &s);
                s.proxy_decisions.push((name, at));
            }
            Ok(made)
        })?,
    )?;
    let st = state.clone();
    g.set(
        "upstream",
        lua.create_function(move |lua, name: Value| {
            if st.borrow().done {
                return Err(not_while_serving(lua, "upstream"));
            }
            let name = match &name {
                Value::String(s) => s.to_str().map(|s| s.to_string()).ok(),
                _ => None,
            };
            let name = name.filter(|n| validate::is_backend_name(n));
            if name.is_none() {
                let s = st.borrow();
                let e = site(lua, &s).error(
                    "upstream needs a name of letters, digits, '_', '-' or '.': upstream \"app\" { ... }",
                );
                drop(s);
                st.borrow_mut().errors.push(e);
            }
            let st = st.clone();
            lua.create_function(move |lua, v: Value| {
                let Some(name) = &name else { return Ok(()) };
                let (site, base, first) = {
                    let s = st.borrow();
                    if s.done {
                        return Err(not_while_serving(lua, "upstream"));
                    }
                    let first = s
                        .upstreams
                        .iter()
                        .find(|d| &d.name == name)
                        .map(|d| d.defined_at.clone());
                    (site(lua, &s), s.base.clone(), first)
                };
                if let Some(first) = first {
                    let e = site.error(format!("upstream '{name}' defined twice, first at {first}"));
                    st.borrow_mut().errors.push(e);
                    return Ok(());
                }
                let (def, errors) = upstream::upstream(name, &v, &site, &base);
                let mut s = st.borrow_mut();
                s.errors.extend(errors);
                s.upstreams.push(def);
                Ok(())
            })?
            .into_lua(lua)
        })?,
    )
}
