//! `user` / `group` (in `server{}` and per spawned FastCGI backend), resolved from the
//! system's user and group databases when the config is loaded.
//!
//! Resolution happens in the watcher, before any fork and before any `chroot`: a chrooted
//! worker has no /etc/passwd or /etc/group, and `initgroups` would read them. The child only
//! makes the system calls (setgroups, setresgid, setresuid) with the ids found here.

use nix::unistd::{Gid, Group, User};
use std::ffi::CString;

/// Who a process runs as after the switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// The user's name, as configured.
    pub user: String,
    /// Its uid.
    pub uid: u32,
    /// The group's name (the configured `group`, else the user's primary group).
    pub group: String,
    /// Its gid.
    pub gid: u32,
    /// Supplementary groups, as `initgroups` would set them (the user's groups plus `gid`).
    pub groups: Vec<u32>,
}

/// Looks up `user` and `group` (default: the user's primary group).
pub fn resolve(user: &str, group: Option<&str>) -> Result<RunAs, String> {
    let u = match User::from_name(user) {
        Ok(Some(u)) => u,
        Ok(None) => return Err(format!("user '{user}' does not exist")),
        Err(e) => return Err(format!("user '{user}': cannot look it up: {e}")),
    };
    let g = match group {
        Some(name) => match Group::from_name(name) {
            Ok(Some(g)) => g,
            Ok(None) => return Err(format!("group '{name}' does not exist")),
            Err(e) => return Err(format!("group '{name}': cannot look it up: {e}")),
        },
        None => match Group::from_gid(u.gid) {
            Ok(Some(g)) => g,
            // A primary gid without a name in /etc/group still is a valid gid.
            Ok(None) | Err(_) => Group {
                name: u.gid.as_raw().to_string(),
                passwd: CString::default(),
                gid: u.gid,
                mem: Vec::new(),
            },
        },
    };
    let groups = supplementary(&u.name, g.gid)?;
    Ok(RunAs {
        user: user.to_string(),
        uid: u.uid.as_raw(),
        group: g.name,
        gid: g.gid.as_raw(),
        groups,
    })
}

/// The groups `initgroups(user, gid)` would set: every group listing the user, and `gid`.
fn supplementary(user: &str, gid: Gid) -> Result<Vec<u32>, String> {
    let name = CString::new(user).map_err(|_| format!("user '{user}' contains a NUL byte"))?;
    let list = nix::unistd::getgrouplist(&name, gid)
        .map_err(|e| format!("user '{user}': cannot list its groups: {e}"))?;
    let mut ids: Vec<u32> = list.into_iter().map(Gid::as_raw).collect();
    crate::sort_compact::sort(&mut ids);
    ids.dedup();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_resolves_with_its_primary_group() {
        let r = resolve("root", None).unwrap();
        assert_eq!((r.uid, r.gid), (0, 0));
        assert!(r.groups.contains(&0));
    }

    #[test]
    fn unknown_user_and_group_are_named() {
        let e = resolve("no-such-user-luahttpd", None).unwrap_err();
        assert!(
            e.contains("user 'no-such-user-luahttpd' does not exist"),
            "{e}"
        );
        let e = resolve("root", Some("no-such-group-luahttpd")).unwrap_err();
        assert!(
            e.contains("group 'no-such-group-luahttpd' does not exist"),
            "{e}"
        );
    }
}
