//! Binding the configured addresses, once, in the watcher; workers inherit the sockets.

use crate::config::ListenAddr;
use crate::worker::Listener;
use nix::errno::Errno;
use nix::sys::socket::{
    bind, connect, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
    SockaddrIn, SockaddrIn6, UnixAddr,
};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

/// The listen queue length asked for (the kernel caps it at net.core.somaxconn).
const BACKLOG: i32 = 4096;

/// A bound, listening socket.
#[derive(Debug)]
pub struct Bound {
    /// What the config asked for.
    pub addr: ListenAddr,
    fd: OwnedFd,
}

impl Bound {
    /// Turns this socket into a worker's non-blocking listener (in the worker, after fork:
    /// the worker then holds the only copy of the descriptor in its process, so dropping the
    /// listener on a graceful stop really closes it there).
    pub fn into_listener(self) -> std::io::Result<Listener> {
        let fd = self.fd;
        Ok(match self.addr {
            ListenAddr::Tcp(_) => {
                let l = std::net::TcpListener::from(fd);
                l.set_nonblocking(true)?;
                Listener::Tcp(mio::net::TcpListener::from_std(l))
            }
            ListenAddr::Unix(_) => {
                let l = std::os::unix::net::UnixListener::from(fd);
                l.set_nonblocking(true)?;
                Listener::Unix(mio::net::UnixListener::from_std(l))
            }
        })
    }

    /// The address actually bound, as text: with port 0 in the config, the port the kernel
    /// chose (tests and scripts read it from the start-up log line).
    pub fn bound_addr(&self) -> String {
        if let ListenAddr::Unix(p) = &self.addr {
            return format!("unix:{}", p.display());
        }
        let name =
            nix::sys::socket::getsockname::<nix::sys::socket::SockaddrStorage>(self.fd.as_raw_fd());
        match name {
            Ok(s) => {
                if let Some(v4) = s.as_sockaddr_in() {
                    std::net::SocketAddrV4::from(*v4).to_string()
                } else if let Some(v6) = s.as_sockaddr_in6() {
                    std::net::SocketAddrV6::from(*v6).to_string()
                } else {
                    describe(&self.addr)
                }
            }
            Err(_) => describe(&self.addr),
        }
    }
}

/// Binds every address; the error names the address.
pub fn bind_all(addrs: &[ListenAddr]) -> Result<Vec<Bound>, String> {
    addrs
        .iter()
        .map(|a| bind_one(a).map_err(|e| format!("cannot listen on {}: {e}", describe(a))))
        .collect()
}

/// Removes the socket files of Unix listeners (at exit).
pub fn unlink_unix(bound: &[Bound]) {
    for b in bound {
        if let ListenAddr::Unix(p) = &b.addr {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn describe(a: &ListenAddr) -> String {
    match a {
        ListenAddr::Tcp(s) => s.to_string(),
        ListenAddr::Unix(p) => format!("unix:{}", p.display()),
    }
}

fn bind_one(addr: &ListenAddr) -> Result<Bound, String> {
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
            // [::]:80 means IPv6 only, so that 0.0.0.0:80 can be listed beside it.
            setsockopt(&fd, sockopt::Ipv6V6Only, &true).map_err(err)?;
            bind(fd.as_raw_fd(), &SockaddrIn6::from(*a)).map_err(err)?;
            fd
        }
        ListenAddr::Unix(path) => {
            remove_stale_socket(path)?;
            let fd = socket(AddressFamily::Unix, SockType::Stream, flags, None).map_err(err)?;
            let ua = UnixAddr::new(path.as_path()).map_err(err)?;
            bind(fd.as_raw_fd(), &ua).map_err(err)?;
            fd
        }
    };
    let backlog = Backlog::new(BACKLOG).unwrap_or(Backlog::MAXCONN);
    listen(&fd, backlog).map_err(err)?;
    Ok(Bound {
        addr: addr.clone(),
        fd,
    })
}

fn err(e: Errno) -> String {
    e.desc().to_string()
}

/// A socket file left by a previous run is replaced only if nobody answers on it.
pub(crate) fn remove_stale_socket(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(_) => return Ok(()),
    };
    if !meta.file_type().is_socket() {
        return Err(format!("{} exists and is not a socket", path.display()));
    }
    if answers(path) {
        return Err(format!("{} is in use by a running server", path.display()));
    }
    std::fs::remove_file(path).map_err(|e| e.to_string())
}

fn answers(path: &Path) -> bool {
    let Ok(fd) = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    ) else {
        return false;
    };
    match UnixAddr::new(path) {
        Ok(ua) => connect(fd.as_raw_fd(), &ua).is_ok(),
        Err(_) => false,
    }
}
