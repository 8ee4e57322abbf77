//! Requests under the `cgi{}` prefix: which script they run (dispatch calls `route`), and
//! what is checked and gathered before the run starts (the connection calls `admit`).

use super::cgi::Command;
use super::cgi_procs;
use super::dispatch::{FcgiExtra, OtherSites, Routed};
use super::fcgi::{Facts, RequestBody};
use super::fcgi_admit;
use super::peer::Peer;
use super::timers::Kind;
use crate::cgi::script::{self, Script};
use crate::config::Config;
use crate::fastcgi::rules::Target;
use crate::http::request::Request;
use crate::reply::Reply;
use crate::static_files::open::Lookup;
use crate::static_files::Site;
use std::path::PathBuf;

/// A request routed to a CGI script.
pub struct CgiTarget {
    script: Script,
    /// SCRIPT_FILENAME.
    file: PathBuf,
    argv: Vec<PathBuf>,
    /// Params a route decision or an auth rule adds (REMOTE_USER).
    pub params: Vec<(String, String)>,
}

/// The run's time limit: the timer kind after the FastCGI backends' and upstreams' (src/worker/mod.rs gives
/// it `cgi.timeout`).
pub fn timer_kind(config: &Config) -> Kind {
    Kind::backend_read(config.fastcgi.len() + 2 * config.upstreams.len())
}

/// Where a request under the CGI prefix goes: a script (found beneath the CGI root with the
/// same beneath-the-root rule as static files), else 404, or 403 when it cannot be run. None: not
/// under the prefix (or no `cgi{}`).
pub fn route(
    config: &Config,
    other_sites: &mut OtherSites,
    main: &Site,
    req: &Request,
) -> Option<Routed> {
    let def = config.cgi.as_ref()?;
    if !req.path.starts_with(&def.prefix) {
        return None;
    }
    // `dotfiles = "deny"` keeps .git/ or .env under cgi-bin/ from running, as from serving.
    if main.dotfiles == crate::config::Dotfiles::Deny
        && crate::static_files::is_dotfile_path(&req.path)
    {
        return Some(Routed::Reply(Reply::error(404)));
    }
    let site = match other_sites.site(&def.root, main) {
        Ok(site) => site,
        Err(e) => {
            tracing::error!("cgi: root {}: {e}", def.root.display());
            return Some(Routed::Reply(Reply::error(500)));
        }
    };
    let found = script::locate(&def.prefix, &req.path, |p| {
        matches!(site.root.lookup(p, &[]), Lookup::File(..))
    });
    let Some(script) = found else {
        return Some(Routed::Reply(Reply::error(404)));
    };
    let file = def.root.join(&script.rel);
    match script::command(def, &file) {
        Ok(argv) => Some(Routed::Cgi(CgiTarget {
            script,
            file,
            argv,
            params: Vec::new(),
        })),
        Err(script::NotRunnable::NotExecutable) => {
            tracing::info!(
                "cgi: {} has no interpreter and is not executable",
                file.display()
            );
            Some(Routed::Reply(Reply::error(403)))
        }
    }
}

/// Checks the request (411, 413, 503 when the worker runs `max_procs` scripts already) and
/// gathers the run's facts and command; a refusal gives the request back with its status.
pub fn admit(
    req: Request,
    t: CgiTarget,
    config: &Config,
    site: &Site,
    server_addr: (String, u16),
    peer: &Peer,
) -> Result<(Facts, Command, RequestBody), Box<(Request, u16)>> {
    let max = config.cgi.as_ref().map_or(0, |d| d.max_procs);
    let target = Target {
        backend: 0,
        script_name: t.script.script_name.clone(),
        path_info: t.script.path_info.clone(),
        check_local: false,
    };
    let body = match fcgi_admit::admit(&req, &target, site, &config.limits) {
        Ok(body) => body,
        Err(refusal) => return Err(Box::new((req, refusal.status()))),
    };
    if cgi_procs::running() >= max {
        tracing::warn!("cgi: {max} scripts already run in this worker (max_procs); 503");
        return Err(Box::new((req, 503)));
    }
    let dir = t
        .file
        .parent()
        .map_or_else(|| PathBuf::from("/"), |p| p.to_path_buf());
    let extra = FcgiExtra {
        script_filename: Some(t.file.to_string_lossy().into_owned()),
        params: t.params,
        headers: Vec::new(),
    };
    let facts = fcgi_admit::facts(req, target, extra, config, server_addr, peer);
    let cmd = Command {
        argv: t.argv,
        dir,
        kind: timer_kind(config),
    };
    Ok((facts, cmd, body))
}
