//! systemd socket activation: listeners handed over in `LISTEN_FDS` (from fd 3, for the pid
//! in `LISTEN_PID`; names in `LISTEN_FDNAMES`) are used instead of binding, matched to the
//! `listen` entries by address. Unmatched ones are closed with a warning. They are kept across
//! reloads like any bound listener (a reload keeps every address that stays).

use crate::config::ListenAddr;
use nix::sys::socket::{getsockname, SockaddrStorage};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// The first descriptor systemd passes (SD_LISTEN_FDS_START).
const FIRST: RawFd = 3;

/// Takes the passed listeners (the variables are removed, so no child sees them).
pub(super) fn take() -> Vec<(ListenAddr, OwnedFd)> {
    let pid = std::env::var("LISTEN_PID").ok();
    let count = std::env::var("LISTEN_FDS").ok();
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    for v in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(v);
    }
    let ours = pid.and_then(|p| p.parse::<u32>().ok()) == Some(std::process::id());
    let Some(n) = count.and_then(|c| c.parse::<RawFd>().ok()).filter(|_| ours) else {
        return Vec::new();
    };
    let names: Vec<&str> = names.split(':').collect();
    let mut out = Vec::new();
    for (i, fd) in (FIRST..FIRST.saturating_add(n.max(0))).enumerate() {
        // Close-on-exec: workers inherit them by fork; exec'd backends must not.
        let _ = nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
        // SAFETY: systemd passed this descriptor to us; nothing else in the process owns it.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let name = names.get(i).copied().unwrap_or("");
        match address(fd) {
            Some(a) => out.push((a, owned)),
            None => tracing::warn!(
                "socket activation: fd {fd} ({name}) is no listening socket I can use; closed"
            ),
        }
    }
    out
}

fn address(fd: RawFd) -> Option<ListenAddr> {
    let s = getsockname::<SockaddrStorage>(fd).ok()?;
    if let Some(v4) = s.as_sockaddr_in() {
        return Some(ListenAddr::Tcp(std::net::SocketAddrV4::from(*v4).into()));
    }
    if let Some(v6) = s.as_sockaddr_in6() {
        return Some(ListenAddr::Tcp(std::net::SocketAddrV6::from(*v6).into()));
    }
    let path = s.as_unix_addr()?.path()?;
    Some(ListenAddr::Unix(path.to_path_buf()))
}
