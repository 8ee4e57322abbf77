//! Dropping root in a forked child: workers (after everything outside the jail is open) and
//! the admin evaluator. The ids were resolved when the config was loaded
//! (src/config/identity.rs), so nothing here reads /etc after a chroot.

use crate::config::{Config, RunAs};
use std::path::{Path, PathBuf};

/// Refuses what cannot be done: `user` or `chroot` when not started as root. Warns once when
/// running as root with no `user` (every worker would serve as root).
pub(super) fn check_start(config: &Config) -> Result<(), String> {
    let root = nix::unistd::geteuid().is_root();
    let wants = config.user.is_some()
        || config.chroot.is_some()
        || config.fastcgi.iter().any(|d| d.user.is_some());
    if wants && !root {
        return Err(
            "user, group and chroot need the server started as root (it switches to them)"
                .to_string(),
        );
    }
    if root && config.user.is_none() {
        tracing::warn!("running as root with no user set: workers serve as root");
    }
    Ok(())
}

/// The document root as the watcher sees it (outside the jail), for the start-up check.
pub(super) fn outside_root(config: &Config) -> PathBuf {
    match &config.chroot {
        Some(jail) => jail.join(config.root.strip_prefix("/").unwrap_or(&config.root)),
        None => config.root.clone(),
    }
}

/// With a chroot, Unix socket paths of backends as seen inside the jail (the config check
/// made sure they lie inside it).
pub(super) fn paths_inside(config: &mut Config) {
    let Some(jail) = config.chroot.clone() else {
        return;
    };
    for def in &mut config.fastcgi {
        for a in def.socket.iter_mut().chain(def.address.iter_mut()) {
            if let crate::config::ListenAddr::Unix(p) = a {
                if let Ok(rel) = p.strip_prefix(&jail) {
                    *p = Path::new("/").join(rel);
                }
            }
        }
    }
}

/// Enters `jail` (if any) and becomes `who` (if any): setgroups, chroot, chdir, setresgid,
/// setresuid, then checks that real, effective and saved ids all changed.
pub(super) fn enter(who: Option<&RunAs>, jail: Option<&Path>) -> Result<(), String> {
    if let Some(u) = who {
        let groups: Vec<nix::unistd::Gid> = u
            .groups
            .iter()
            .map(|g| nix::unistd::Gid::from_raw(*g))
            .collect();
        nix::unistd::setgroups(&groups).map_err(|e| format!("setgroups: {e}"))?;
    }
    if let Some(dir) = jail {
        nix::unistd::chroot(dir).map_err(|e| format!("chroot {}: {e}", dir.display()))?;
        nix::unistd::chdir("/").map_err(|e| format!("chdir / in the chroot: {e}"))?;
    }
    let Some(u) = who else { return Ok(()) };
    let (uid, gid) = (
        nix::unistd::Uid::from_raw(u.uid),
        nix::unistd::Gid::from_raw(u.gid),
    );
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| format!("setresgid {}: {e}", u.gid))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| format!("setresuid {}: {e}", u.uid))?;
    let r = nix::unistd::getresuid().map_err(|e| format!("getresuid: {e}"))?;
    let g = nix::unistd::getresgid().map_err(|e| format!("getresgid: {e}"))?;
    if [r.real, r.effective, r.saved] != [uid; 3] || [g.real, g.effective, g.saved] != [gid; 3] {
        return Err(format!("the switch to {}:{} did not take", u.user, u.group));
    }
    // Changing credentials cleared the parent-death signal: set it again.
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    Ok(())
}
