//! Dispatch: from a request to where it goes. The route function's decision (or the default
//! rules when there is none) becomes a reply made here or a FastCGI target; the connection
//! that asked only carries out the answer.

use crate::config::Config;
use crate::fastcgi::pool::Pool;
use crate::fastcgi::rules::{self, Target};
use crate::http::request::Request;
use crate::log::push_escaped;
use crate::proxy::ProxyTarget;
use crate::reply::{Body, Reply};
use crate::script::{Decision, Outcome, Resume, RouteRequest, Router, Ticket};
use crate::static_files::open::Lookup;
use crate::static_files::{self, Site};
use std::time::Instant;

/// What dispatch needs from the worker.
pub struct Dispatch<'a> {
    /// The route function, when the config has one.
    pub router: Option<&'a mut Router>,
    /// The main static site.
    pub site: &'a mut Site,
    /// Document roots chosen by route decisions.
    pub other_sites: &'a mut OtherSites,
    /// The FastCGI backends (names to indexes).
    pub pool: &'a Pool,
    /// The configuration (default FastCGI rules).
    pub config: &'a Config,
    /// Now, for the static file cache.
    pub now: Instant,
    /// The scoreboard, for the status page.
    pub board: Option<&'a crate::admin::scoreboard::Scoreboard>,
    /// Set to the user an `auth` rule authenticated (for REMOTE_USER and the access log).
    pub user: &'a mut Option<String>,
}

/// Who asked, as the route function sees it.
pub struct Client<'a> {
    /// The client's address as text.
    pub ip: &'a str,
    /// The client's port.
    pub port: u16,
    /// The listener's address as text.
    pub listener: &'a str,
    /// Whether the connection is TLS (`req.scheme` "https").
    pub https: bool,
    /// When the listener answers every request with a redirect to https: the https port.
    pub redirect_to_https: Option<u16>,
}

/// Where a request goes.
pub enum Routed {
    /// To a FastCGI backend, with what a route decision adds.
    FastCgi(Target, FcgiExtra),
    /// To an HTTP upstream (a `proxy` decision or an upstream's `prefix`).
    Proxy(ProxyTarget),
    /// An answer made here (static file, in-memory reply, redirect, refusal).
    Reply(Reply),
    /// To a CGI script (src/worker/cgi_admit.rs).
    Cgi(super::cgi_admit::CgiTarget),
    /// The route function waits for an `http.request` (or must be told its options were
    /// wrong).
    Http {
        /// The suspended call.
        ticket: Ticket,
        /// What to send.
        spec: Result<crate::script::HttpSpec, String>,
    },
    /// The route function waits for the request body (`req:body(max)`).
    Body {
        /// The suspended call.
        ticket: Ticket,
        /// The most bytes it wants.
        max: Option<u64>,
    },
    /// The route function waits (`sleep`) until `until`.
    Wait {
        /// The suspended call.
        ticket: Ticket,
        /// When to resume it.
        until: Instant,
    },
}

/// What a route decision adds to a FastCGI request.
#[derive(Default)]
pub struct FcgiExtra {
    /// SCRIPT_FILENAME chosen by the decision.
    pub script_filename: Option<String>,
    /// Extra params.
    pub params: Vec<(String, String)>,
    /// Response headers that replace the backend's.
    pub headers: Vec<(String, String)>,
}

/// Adds a decision's headers: each name replaces the handler's lines of that name, and
/// repeated names in the decision (a list value, e.g. several Set-Cookie) all go out.
fn add_headers(reply: &mut Reply, headers: &[(String, String)]) {
    for (name, value) in headers {
        reply.override_header(name, value);
    }
}

fn escape_log(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    push_escaped(&mut out, bytes);
    out
}

/// Sites for the document roots that `static{ root = ... }` decisions name, opened on first use.
#[derive(Default)]
pub struct OtherSites {
    sites: std::collections::HashMap<std::path::PathBuf, Site>,
    /// The virtual hosts' static sites, by index in `config.sites` (src/worker/vhost.rs).
    pub(super) vhosts: std::collections::HashMap<usize, Site>,
    /// Which site a Host names, built on first use.
    pub(super) picker: Option<crate::config::Picker>,
}

impl OtherSites {
    /// The site for `root` (index files and MIME types as the main site's).
    pub(super) fn site(
        &mut self,
        root: &std::path::Path,
        main: &Site,
    ) -> std::io::Result<&mut Site> {
        if !self.sites.contains_key(root) {
            let site = Site {
                root: crate::static_files::open::Root::open(root)?,
                index: main.index.clone(),
                dotfiles: main.dotfiles,
                mime: main.mime.clone(),
                cache: Default::default(),
                opts: main.opts.clone(),
                variants: Default::default(),
            };
            self.sites.insert(root.to_path_buf(), site);
        }
        self.sites
            .get_mut(root)
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
    }
}

/// The status page (`status_path` or a `status` decision), from the scoreboard.
fn status_page(
    board: Option<&crate::admin::scoreboard::Scoreboard>,
    config: &Config,
    req: &Request,
) -> Routed {
    let format = crate::status_page::Format::from_query(req.query.as_deref());
    Routed::Reply(crate::status_page::reply(board, config, format))
}

/// Where a request goes: first its site (a `site "host" {}` its Host names, else
/// `server{}`'s own), then the route function's decision, else the default rules (a FastCGI
/// prefix or extension, else a static file). The route may wait (`sleep`, `req:body`,
/// `http.request`): `Routed::Wait`/`Body`/`Http`, then [`resume`] it when its time has come.
pub fn route(ctx: Dispatch<'_>, req: &Request, client: &Client<'_>) -> Routed {
    route_with(ctx, req, client, None)
}

/// Continues a route call that waited, as [`route`] does.
pub fn resume(
    ctx: Dispatch<'_>,
    req: &Request,
    client: &Client<'_>,
    ticket: Ticket,
    with: Resume,
) -> Routed {
    route_with(ctx, req, client, Some((ticket, with)))
}

fn route_with(
    ctx: Dispatch<'_>,
    req: &Request,
    client: &Client<'_>,
    ticket: Option<(Ticket, Resume)>,
) -> Routed {
    if let Some(port) = client.redirect_to_https {
        return Routed::Reply(super::https_redirect::reply(req, port));
    }
    if ctx.config.ops.status_path.as_deref() == Some(req.path.as_str()) {
        return status_page(ctx.board, ctx.config, req);
    }
    let Some(i) = ctx.other_sites.pick_vhost(ctx.config, req.host.as_deref()) else {
        return route_site(ctx, req, client, None, ticket);
    };
    let def = &ctx.config.sites[i];
    let mut site = match ctx.other_sites.take_vhost(i, ctx.config) {
        Ok(site) => site,
        Err(e) => {
            tracing::error!("site '{}': root {}: {e}", def.name, def.root.display());
            return Routed::Reply(Reply::error(500));
        }
    };
    let inner = Dispatch {
        router: ctx.router,
        site: &mut site,
        other_sites: &mut *ctx.other_sites,
        pool: ctx.pool,
        config: ctx.config,
        now: ctx.now,
        user: &mut *ctx.user,
        board: ctx.board,
    };
    let routed = route_site(inner, req, client, Some(def), ticket);
    let routed = super::vhost::finish(routed, def, &site);
    ctx.other_sites.put_vhost(i, site);
    routed
}

/// `route` within one site (`vhost` None: `server{}`'s own).
fn route_site(
    ctx: Dispatch<'_>,
    req: &Request,
    client: &Client<'_>,
    vhost: Option<&crate::config::VhostDef>,
    ticket: Option<(Ticket, Resume)>,
) -> Routed {
    *ctx.user = None;
    match super::auth_check::check(ctx.config, vhost, req, client.ip) {
        super::auth_check::Gate::Pass(user) => *ctx.user = user,
        super::auth_check::Gate::Refuse(reply) => return Routed::Reply(reply),
    }
    let decision = match ctx.router {
        Some(router) => {
            let rr = RouteRequest {
                req,
                remote_addr: client.ip,
                remote_port: client.port,
                listener: client.listener,
                scheme: if client.https { "https" } else { "http" },
            };
            let routed = {
                // The backstop kills the worker if one call outlives its deadline by BOUND
                // inside a C function the hook cannot interrupt. One clock read serves it and
                // the call's budget.
                let now = std::time::Instant::now();
                let _armed = super::backstop::arm_at(
                    now,
                    router
                        .limits()
                        .deadline
                        .saturating_add(super::backstop::BOUND),
                );
                match ticket {
                    None => router.start_route_at(&rr, now),
                    Some((t, with)) => router.resume_route_at(t, &rr, with, now),
                }
            };
            let routed = match routed {
                Outcome::Done(r) => r,
                Outcome::Wait { ticket, until } => return Routed::Wait { ticket, until },
                Outcome::Body { ticket, max } => return Routed::Body { ticket, max },
                Outcome::Http { ticket, spec } => return Routed::Http { ticket, spec },
            };
            match routed {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(
                        "{e}; request: {} {} from {}:{}",
                        req.method.as_str(),
                        String::from_utf8_lossy(&escape_log(req.target.as_bytes())),
                        client.ip,
                        client.port
                    );
                    return Routed::Reply(Reply::error(500));
                }
            }
        }
        None => Decision::FallThrough,
    };
    // basic_auth{}'s decision: a user first (of each helper, when nested), then what it wraps.
    let mut decision = decision;
    while let Decision::Auth { rule, then } = decision {
        let Some(r) = ctx.config.route_auth.get(rule) else {
            return Routed::Reply(Reply::error(500));
        };
        match super::auth_check::check_rule(r, req, client.ip) {
            super::auth_check::Gate::Pass(user) => *ctx.user = user,
            super::auth_check::Gate::Refuse(reply) => return Routed::Reply(reply),
        }
        decision = *then;
    }
    let auth_params = super::auth_check::params(ctx.user.as_deref());
    match decision {
        Decision::FallThrough => {}
        Decision::Status => return status_page(ctx.board, ctx.config, req),
        // Unwrapped above, never reached.
        Decision::Auth { .. } => return Routed::Reply(Reply::error(500)),
        Decision::Static { root, headers } => {
            let mut reply = match root {
                None => static_files::serve(req, ctx.site, ctx.now),
                Some(root) => match ctx.other_sites.site(&root, ctx.site) {
                    Ok(site) => static_files::serve(req, site, ctx.now),
                    Err(e) => {
                        tracing::error!("route: static root {}: {e}", root.display());
                        Reply::error(500)
                    }
                },
            };
            add_headers(&mut reply, &headers);
            return Routed::Reply(reply);
        }
        Decision::FastCgi {
            backend,
            script,
            path_info,
            params,
            headers,
        } => {
            let Some(b) = ctx.pool.index_of(&backend) else {
                return Routed::Reply(Reply::error(500));
            };
            // SCRIPT_NAME is the path without the PATH_INFO the route chose.
            let script_name = match &path_info {
                Some(pi) if req.path.ends_with(pi.as_str()) => {
                    req.path[..req.path.len() - pi.len()].to_string()
                }
                _ => req.path.to_string(),
            };
            let target = Target {
                backend: b,
                script_name,
                path_info,
                check_local: false,
            };
            // A decision's params come last, so they replace the auth ones.
            let mut all = auth_params;
            all.extend(params);
            let extra = FcgiExtra {
                script_filename: script,
                params: all,
                headers,
            };
            return Routed::FastCgi(target, extra);
        }
        Decision::Proxy {
            upstream,
            path,
            headers,
            host,
        } => {
            let Some(u) = ctx.config.upstreams.iter().position(|d| d.name == upstream) else {
                return Routed::Reply(Reply::error(500));
            };
            return Routed::Proxy(ProxyTarget {
                upstream: u,
                path,
                headers,
                host,
            });
        }
        Decision::Redirect {
            status,
            location,
            headers,
        } => {
            let mut reply = Reply::error(status);
            reply.header("Location", &location);
            add_headers(&mut reply, &headers);
            return Routed::Reply(reply);
        }
        Decision::Respond {
            status,
            body,
            headers,
        } => {
            let mut reply = Reply::new(status, Body::Bytes(body));
            if !headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
            {
                reply.header("Content-Type", "text/plain; charset=utf-8");
            }
            add_headers(&mut reply, &headers);
            return Routed::Reply(reply);
        }
        Decision::Deny { status, headers } => {
            let mut reply = Reply::error(status);
            add_headers(&mut reply, &headers);
            return Routed::Reply(reply);
        }
    }
    if let Some(mut routed) = super::cgi_admit::route(ctx.config, ctx.other_sites, ctx.site, req) {
        if let Routed::Cgi(t) = &mut routed {
            t.params = auth_params;
        }
        return routed;
    }
    if let Some(u) = super::vhost::proxy_prefix(ctx.config, vhost, &req.path) {
        return Routed::Proxy(ProxyTarget {
            upstream: u,
            ..ProxyTarget::default()
        });
    }
    if !ctx.config.fastcgi.is_empty() {
        let site = &*ctx.site;
        // Only the backends the site lets in are matched at all: a filter after the match
        // let a left-out backend's rule (an `/app/` prefix) hide another's (`.php`), and the
        // script went out as a static file.
        let target = rules::match_path(
            ctx.config,
            &req.path,
            &site.index,
            |p| matches!(site.root.lookup(p, &[]), Lookup::File(..)),
            |b| super::vhost::allows_backend(ctx.config, vhost, b),
        );
        if let Some(t) = target {
            let extra = FcgiExtra {
                params: auth_params,
                ..FcgiExtra::default()
            };
            return Routed::FastCgi(t, extra);
        }
    }
    Routed::Reply(static_files::serve(req, ctx.site, ctx.now))
}
