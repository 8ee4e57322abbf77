//! Listening sockets, shared by the watcher's listeners, the FastCGI spawner and the admin
//! socket.

use crate::config::ListenAddr;
use nix::errno::Errno;
use nix::sys::socket::{
    bind, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
    SockaddrIn, SockaddrIn6, UnixAddr,
};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

/// A listening socket on `addr` (close-on-exec, SO_REUSEADDR; IPv6 only for IPv6 addresses, so
/// that `0.0.0.0:80` and `[::]:80` can both be listed). A Unix socket file nobody answers on is
/// replaced; any other file at the path is an error.
pub fn listen_on(addr: &ListenAddr, backlog: i32) -> Result<OwnedFd, String> {
    let flags = SockFlag::SOCK_CLOEXEC;
    let fd = match addr {
        ListenAddr::Tcp(SocketAddr::V4(a)) => {
            let fd = socket(AddressFamily::Inet, SockType::Stream, flags, None).map_err(err)?;
            setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(err)?;
            bind(fd.as_raw_fd(), &SockaddrIn::from(*a)).map_err(err)?;
            fd
        }
        ListenAddr::Tcp(SocketAddr::V6(a)) => {
            let fd = socket(AddressFamily::Inet6, SockType::Stream, flags, None).map_err(err)?;
            setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(err)?;
            setsockopt(&fd, sockopt::Ipv6V6Only, &true).map_err(err)?;
            bind(fd.as_raw_fd(), &SockaddrIn6::from(*a)).map_err(err)?;
            fd
        }
        ListenAddr::Unix(path) => {
            remove_stale_socket(path)?;
            let ua = UnixAddr::new(path.as_path()).map_err(|e| match e {
                Errno::ENAMETOOLONG => "the socket path is too long".to_string(),
                e => err(e),
            })?;
            let fd = socket(AddressFamily::Unix, SockType::Stream, flags, None).map_err(err)?;
            bind(fd.as_raw_fd(), &ua).map_err(err)?;
            fd
        }
    };
    let backlog = Backlog::new(backlog).unwrap_or(Backlog::MAXCONN);
    listen(&fd, backlog).map_err(err)?;
    Ok(fd)
}

fn err(e: Errno) -> String {
    e.desc().to_string()
}

/// Removes a socket file left by a previous run, only if nobody answers on it.
pub fn remove_stale_socket(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(_) => return Ok(()),
    };
    if !meta.file_type().is_socket() {
        return Err(format!("{} exists and is not a socket", path.display()));
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(format!("{} is in use by a running server", path.display()));
    }
    std::fs::remove_file(path).map_err(|e| format!("cannot remove stale {}: {e}", path.display()))
}
