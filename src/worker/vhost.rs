//! Virtual hosts in the worker: the site a request's Host names (config::Picker, the same
//! matching the combined route function uses), its static site opened on first use, and what
//! the site changes in an answer (its headers; its root for FastCGI's SCRIPT_FILENAME and
//! DOCUMENT_ROOT).

use super::dispatch::{OtherSites, Routed};
use crate::config::{Config, Picker, VhostDef};
use crate::reply::Reply;
use crate::static_files::mime::MimeTable;
use crate::static_files::open::{Lookup, Root};
use crate::static_files::Site;

impl OtherSites {
    /// The index of the site for `host`, None: `server{}`'s own.
    pub(super) fn pick_vhost(&mut self, config: &Config, host: Option<&str>) -> Option<usize> {
        if config.sites.is_empty() {
            return None;
        }
        self.picker
            .get_or_insert_with(|| Picker::new(&config.sites, config.default_site.as_deref()))
            .pick(host)
    }

    /// Takes site `i`'s static site out (opening it the first time), for one request; give
    /// it back with `put_vhost`.
    pub(super) fn take_vhost(&mut self, i: usize, config: &Config) -> std::io::Result<Site> {
        if let Some(site) = self.vhosts.remove(&i) {
            return Ok(site);
        }
        let def = config
            .sites
            .get(i)
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))?;
        let mut mime = config.mime.clone();
        mime.extend(def.mime.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(Site {
            root: Root::open(&def.root)?,
            index: def.index.clone().unwrap_or_else(|| config.index.clone()),
            dotfiles: def.dotfiles.unwrap_or(config.dotfiles),
            mime: MimeTable::new(&mime),
            cache: Default::default(),
            // The server's compression, error pages, header and expiry rules, unless the site
            // sets its own; listings are the server's (a site's flat `headers` lines are added
            // by `worker::vhost::finish`).
            opts: std::rc::Rc::new(config.static_opts.overlaid(&def.statics)),
            variants: Default::default(),
        })
    }

    /// Gives site `i`'s static site back.
    pub(super) fn put_vhost(&mut self, i: usize, site: Site) {
        self.vhosts.insert(i, site);
    }
}

/// Whether the default FastCGI rules of backend `b` apply in `vhost` (all do in `server{}`'s
/// own site and in a site without `fastcgi`).
pub fn allows_backend(config: &Config, vhost: Option<&VhostDef>, b: usize) -> bool {
    match vhost.and_then(|v| v.fastcgi.as_ref()) {
        None => true,
        Some(names) => config
            .fastcgi
            .get(b)
            .is_some_and(|d| names.contains(&d.name)),
    }
}

/// The upstream whose default rule takes `path` in `vhost`: the site's own `proxy` entries
/// when it has them (the longest prefix), else the upstreams' `prefix` rules, as in
/// `server{}`'s own site.
pub fn proxy_prefix(config: &Config, vhost: Option<&VhostDef>, path: &str) -> Option<usize> {
    let Some(rules) = vhost.and_then(|v| v.proxy.as_ref()) else {
        return crate::proxy::match_prefix(config, path);
    };
    let rule = rules
        .iter()
        .filter(|r| crate::proxy::mounts(&r.prefix, path))
        .max_by_key(|r| r.prefix.len())?;
    // The name was checked at load; a config without it cannot be running.
    config
        .upstreams
        .iter()
        .position(|u| u.name == rule.upstream)
}

/// What site `def` changes in `routed`: its headers on replies made here, its root as
/// SCRIPT_FILENAME and DOCUMENT_ROOT of a FastCGI request (checked to exist beneath it when
/// the backend says `check_local`).
pub fn finish(routed: Routed, def: &VhostDef, site: &Site) -> Routed {
    match routed {
        Routed::Reply(mut reply) => {
            add_missing(&mut reply, &def.headers);
            Routed::Reply(reply)
        }
        Routed::FastCgi(mut t, mut extra) => {
            if t.check_local && !matches!(site.root.lookup(&t.script_name, &[]), Lookup::File(..)) {
                return Routed::Reply(Reply::error(404));
            }
            t.check_local = false;
            let root = def.root.to_string_lossy().into_owned();
            if extra.script_filename.is_none() {
                let file = def.root.join(t.script_name.trim_start_matches('/'));
                extra.script_filename = Some(file.to_string_lossy().into_owned());
            }
            // First, so a route decision's own DOCUMENT_ROOT still wins.
            extra.params.insert(0, ("DOCUMENT_ROOT".into(), root));
            Routed::FastCgi(t, extra)
        }
        other => other,
    }
}

/// Adds each header the reply does not carry yet.
fn add_missing(reply: &mut Reply, headers: &[(String, String)]) {
    for (name, value) in headers {
        let has = |lines: &[u8]| {
            lines.split(|&b| b == b'\n').any(|l| {
                l.len() > name.len()
                    && l[..name.len()].eq_ignore_ascii_case(name.as_bytes())
                    && l[name.len()] == b':'
            })
        };
        if !has(&reply.headers) && !has(&reply.overrides) {
            reply.header(name, value);
        }
    }
}

/// The page for an error status (`error_pages`), found beneath the root of the site `host`
/// names (a virtual host's own root, else `server{}`'s), so a site's errors look like it.
pub(super) fn error_page(
    other: &mut OtherSites,
    config: &Config,
    main: &mut Site,
    host: Option<&str>,
    reply: Reply,
    now: std::time::Instant,
) -> Reply {
    use crate::static_files::extras::error_page as page;
    let any_pages = !config.static_opts.error_pages.is_empty()
        || config.sites.iter().any(|s| {
            s.statics
                .error_pages
                .as_ref()
                .is_some_and(|p| !p.is_empty())
        });
    if reply.status < 400 || !any_pages {
        return reply;
    }
    let Some(i) = other.pick_vhost(config, host) else {
        return page(main, reply, now);
    };
    match other.take_vhost(i, config) {
        Ok(mut site) => {
            let reply = page(&mut site, reply, now);
            other.put_vhost(i, site);
            reply
        }
        // Its root cannot be opened: dispatch said so already; the built-in page goes out.
        Err(_) => reply,
    }
}

/// The compression of the site `req`'s Host names: its own `compress`, else `server{}`'s.
pub fn compress_for<'c>(
    other: &mut OtherSites,
    config: &'c Config,
    req: &crate::http::request::Request,
) -> Option<&'c crate::config::static_opts::Compress> {
    let own = other
        .pick_vhost(config, req.host.as_deref())
        .and_then(|i| config.sites.get(i))
        .and_then(|def| def.statics.compress.as_ref());
    match own {
        Some(c) => c.as_ref(),
        None => config.static_opts.compress.as_ref(),
    }
}
