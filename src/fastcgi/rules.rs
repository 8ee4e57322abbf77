//! The default rules that send a request to a FastCGI backend: a `prefix` mounts an app, an
//! `extension` names a script (`/env.php/foo/bar` → SCRIPT_NAME=/env.php, PATH_INFO=/foo/bar).

use crate::config::Config;

/// Where a request goes when a backend takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The backend's index in the config.
    pub backend: usize,
    /// SCRIPT_NAME.
    pub script_name: String,
    /// PATH_INFO (None when empty).
    pub path_info: Option<String>,
    /// Whether the script must exist under the root (extension matches with `check_local`).
    pub check_local: bool,
}

/// The backend target for a decoded path, by the config's rules in order: prefixes first
/// (an app owns its whole mount), then extensions. For a path ending in '/', `index` names
/// that carry a backend's extension are tried as scripts when `exists` says they exist.
/// Only the rules of backends `allows` admits count (a site's `fastcgi` list): a backend
/// left out must not hide another's rule, or a site whose list leaves out the `/app/`
/// backend would serve `/app/x.php` as a static file, its source.
pub fn match_path(
    config: &Config,
    path: &str,
    index: &[String],
    exists: impl Fn(&str) -> bool,
    allows: impl Fn(usize) -> bool,
) -> Option<Target> {
    for (b, def) in config.fastcgi.iter().enumerate() {
        if !allows(b) {
            continue;
        }
        if let Some(prefix) = &def.prefix {
            let mount = prefix.trim_end_matches('/');
            if path == mount || path.starts_with(prefix.as_str()) || prefix == "/" {
                let rest = &path[mount.len().min(path.len())..];
                return Some(Target {
                    backend: b,
                    script_name: mount.to_string(),
                    path_info: (!rest.is_empty()).then(|| rest.to_string()),
                    check_local: false,
                });
            }
        }
    }
    if path.ends_with('/') {
        for name in index {
            let candidate = format!("{path}{name}");
            if let Some(t) = match_extension(config, &candidate, &allows) {
                if exists(&candidate) {
                    return Some(t);
                }
            }
        }
        return None;
    }
    match_extension(config, path, &allows)
}

fn match_extension(config: &Config, path: &str, allows: &impl Fn(usize) -> bool) -> Option<Target> {
    // Each segment end is a candidate script end: the first that carries an extension wins,
    // so /a.php/b.php runs /a.php with PATH_INFO=/b.php, as lighttpd and PHP expect.
    let ends = path
        .match_indices('/')
        .map(|(i, _)| i)
        .skip(1)
        .chain(std::iter::once(path.len()));
    for end in ends {
        let script = &path[..end];
        for (b, def) in config.fastcgi.iter().enumerate() {
            if allows(b)
                && def
                    .extensions
                    .iter()
                    .any(|e| ends_with_ignore_case(script, e))
            {
                let rest = &path[end..];
                return Some(Target {
                    backend: b,
                    script_name: script.to_string(),
                    path_info: (!rest.is_empty()).then(|| rest.to_string()),
                    check_local: def.check_local,
                });
            }
        }
    }
    None
}

/// Case-insensitive, so that `x.PHP` is never served as source on a case-insensitive mount.
fn ends_with_ignore_case(s: &str, suffix: &str) -> bool {
    s.len() >= suffix.len()
        && s.as_bytes()[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FastcgiDef;
    use std::time::Duration;

    fn config() -> Config {
        let src = "server { root = '.', listen = '127.0.0.1:1' }";
        let mut c = crate::config::load_source_for_tests(src);
        let def = |name: &str, ext: &[&str], prefix: Option<&str>| FastcgiDef {
            name: name.into(),
            defined_at: String::new(),
            spawn: None,
            procs: 1,
            socket: None,
            address: vec![],
            env: Default::default(),
            extensions: ext.iter().map(|s| s.to_string()).collect(),
            prefix: prefix.map(String::from),
            check_local: true,
            keepalive: true,
            request_buffering: true,
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            disable_time: Duration::from_secs(1),
            user: None,
            socket_owner: None,
        };
        c.fastcgi = vec![def("php", &[".php"], None), def("app", &[], Some("/app/"))];
        c
    }

    #[test]
    fn extensions_split_script_and_path_info() {
        let c = config();
        let t = match_path(&c, "/env.php/foo/bar", &[], |_| true, |_| true).unwrap();
        assert_eq!((t.backend, t.script_name.as_str()), (0, "/env.php"));
        assert_eq!(t.path_info.as_deref(), Some("/foo/bar"));
        assert!(t.check_local);
        let t = match_path(&c, "/a/x.PHP", &[], |_| true, |_| true).unwrap();
        assert_eq!((t.script_name.as_str(), t.path_info), ("/a/x.PHP", None));
        assert!(match_path(&c, "/a.php.txt", &[], |_| true, |_| true).is_none());
        assert!(match_path(&c, "/dir.php.d/x", &[], |_| true, |_| true).is_none());
    }

    #[test]
    fn prefix_mounts_an_app() {
        let c = config();
        let t = match_path(&c, "/app/users/1", &[], |_| true, |_| true).unwrap();
        assert_eq!((t.backend, t.script_name.as_str()), (1, "/app"));
        assert_eq!(t.path_info.as_deref(), Some("/users/1"));
        assert!(!t.check_local);
        let t = match_path(&c, "/app", &[], |_| true, |_| true).unwrap();
        assert_eq!(t.path_info, None);
        assert!(match_path(&c, "/application", &[], |_| true, |_| true).is_none());
    }

    #[test]
    fn a_backend_left_out_does_not_hide_another_s_rule() {
        let c = config();
        // Without "app" (index 1), /app/x.php is "php"'s script, not a static file.
        let t = match_path(&c, "/app/x.php", &[], |_| true, |b| b == 0).unwrap();
        assert_eq!((t.backend, t.script_name.as_str()), (0, "/app/x.php"));
        assert!(match_path(&c, "/app/x", &[], |_| true, |b| b == 0).is_none());
        assert!(match_path(&c, "/x.php", &[], |_| true, |b| b == 1).is_none());
        let index = vec!["index.php".to_string()];
        assert!(match_path(&c, "/", &index, |_| true, |_| false).is_none());
    }

    #[test]
    fn index_scripts_for_directories() {
        let c = config();
        let index = vec!["index.php".to_string(), "index.html".to_string()];
        let t = match_path(&c, "/", &index, |p| p == "/index.php", |_| true).unwrap();
        assert_eq!(t.script_name, "/index.php");
        assert!(match_path(&c, "/", &index, |_| false, |_| true).is_none());
    }
}
