//! Binding the configured addresses, once, in the watcher; workers inherit the sockets.

use crate::config::ListenAddr;
use crate::worker::Listener;
use std::os::fd::{AsRawFd, OwnedFd};

/// The listen queue length asked for (the kernel caps it at net.core.somaxconn).
const BACKLOG: i32 = 4096;

/// A bound, listening socket.
#[derive(Debug)]
pub struct Bound {
    /// What the config asked for.
    pub addr: ListenAddr,
    fd: OwnedFd,
    /// Passed by systemd (socket activation): its socket file is systemd's, never unlinked.
    pub activated: bool,
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

/// Binds every address, taking the matching ones from `passed` (socket activation) instead;
/// passed sockets no address names are closed with a warning.
pub fn bind_or_take(
    addrs: &[ListenAddr],
    mut passed: Vec<(ListenAddr, OwnedFd)>,
) -> Result<Vec<Bound>, String> {
    let mut out = Vec::new();
    for a in addrs {
        match passed.iter().position(|(p, _)| p == a) {
            Some(i) => {
                let (addr, fd) = passed.remove(i);
                tracing::info!("using the socket systemd passed for {}", describe(&addr));
                out.push(Bound {
                    addr,
                    fd,
                    activated: true,
                });
            }
            None => out.extend(bind_all(std::slice::from_ref(a))?),
        }
    }
    for (a, _) in passed {
        tracing::warn!(
            "socket activation: {} is in no listen entry; closed",
            describe(&a)
        );
    }
    Ok(out)
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
    for b in bound.iter().filter(|b| !b.activated) {
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
    Ok(Bound {
        addr: addr.clone(),
        fd: crate::sockets::listen_on(addr, BACKLOG)?,
        activated: false,
    })
}
