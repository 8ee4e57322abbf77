//! From a request path under the `cgi{}` prefix to the script it runs and the command line.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::config::CgiDef;

/// The script a request names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// SCRIPT_NAME: the URL path of the script (the prefix and the script's path).
    pub script_name: String,
    /// The script's path below the CGI root (no leading '/').
    pub rel: String,
    /// PATH_INFO: what follows the script in the URL path, if anything.
    pub path_info: Option<String>,
}

/// Why a script cannot run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotRunnable {
    /// No interpreter for its suffix and not executable itself: 403.
    NotExecutable,
}

/// The script a decoded, dot-segment-free `path` names under `prefix`, found with `is_file`
/// (a lookup beneath the CGI root): the shortest leading part of the path that is a file,
/// the rest being PATH_INFO, as lighttpd and Apache do. None: not under the prefix, or no file.
pub fn locate(prefix: &str, path: &str, is_file: impl Fn(&str) -> bool) -> Option<Script> {
    let rest = path.strip_prefix(prefix)?;
    if rest.is_empty() {
        return None;
    }
    let mut ends: Vec<usize> = rest.match_indices('/').map(|(i, _)| i).collect();
    ends.push(rest.len());
    for end in ends {
        let rel = &rest[..end];
        if rel.is_empty() {
            continue;
        }
        if is_file(&format!("/{rel}")) {
            let info = &rest[end..];
            return Some(Script {
                script_name: format!("{prefix}{rel}"),
                rel: rel.to_string(),
                path_info: (!info.is_empty()).then(|| info.to_string()),
            });
        }
    }
    None
}

/// The command line that runs `file`: its suffix's interpreter with the file, else the file
/// itself when it is executable.
pub fn command(def: &CgiDef, file: &Path) -> Result<Vec<PathBuf>, NotRunnable> {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let interpreter = def
        .interpreters
        .iter()
        .filter(|(suffix, _)| name.ends_with(suffix.as_str()))
        // The longest suffix wins (".tar.sh" over ".sh").
        .max_by_key(|(suffix, _)| suffix.len())
        .map(|(_, prog)| prog.clone());
    if let Some(prog) = interpreter {
        return Ok(vec![prog, file.to_path_buf()]);
    }
    match std::fs::metadata(file) {
        Ok(m) if m.permissions().mode() & 0o111 != 0 => Ok(vec![file.to_path_buf()]),
        _ => Err(NotRunnable::NotExecutable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::time::Duration;

    #[test]
    fn the_shortest_file_prefix_is_the_script() {
        let files = ["/a.sh", "/dir/b.lua"];
        let is_file = |p: &str| files.contains(&p);
        let s = locate("/cgi-bin/", "/cgi-bin/a.sh/x/y", is_file).expect("found");
        assert_eq!(s.script_name, "/cgi-bin/a.sh");
        assert_eq!(s.rel, "a.sh");
        assert_eq!(s.path_info.as_deref(), Some("/x/y"));
        let s = locate("/cgi-bin/", "/cgi-bin/dir/b.lua", is_file).expect("found");
        assert_eq!(s.path_info, None);
        assert_eq!(s.rel, "dir/b.lua");
        assert_eq!(locate("/cgi-bin/", "/cgi-bin/", is_file), None);
        assert_eq!(locate("/cgi-bin/", "/cgi-bin/nope", is_file), None);
        assert_eq!(locate("/cgi-bin/", "/other/a.sh", is_file), None);
    }

    #[test]
    fn interpreter_by_suffix_else_the_file_itself() {
        let mut interpreters = BTreeMap::new();
        interpreters.insert(".sh".to_string(), PathBuf::from("/bin/sh"));
        let def = CgiDef {
            defined_at: String::new(),
            prefix: "/cgi-bin/".into(),
            root: PathBuf::from("/"),
            interpreters,
            timeout: Duration::from_secs(1),
            max_procs: 1,
        };
        assert_eq!(
            command(&def, Path::new("/x/A.SH")),
            Ok(vec![PathBuf::from("/bin/sh"), PathBuf::from("/x/A.SH")])
        );
        assert_eq!(
            command(&def, Path::new("/bin/sh")),
            Ok(vec![PathBuf::from("/bin/sh")])
        );
        let plain = std::env::temp_dir().join(format!("luahttpd-plain-{}", std::process::id()));
        std::fs::write(&plain, b"data").expect("write");
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let got = command(&def, &plain);
        let _ = std::fs::remove_file(&plain);
        assert_eq!(got, Err(NotRunnable::NotExecutable));
    }
}
