//! systemd's readiness protocol, by hand: one datagram to `NOTIFY_SOCKET` per state change
//! (`READY=1`, `RELOADING=1` with `MONOTONIC_USEC`, `STOPPING=1`, `STATUS=` lines).

use std::os::unix::net::UnixDatagram;

/// The notify socket named by `NOTIFY_SOCKET`, when systemd (or a test) set one.
#[derive(Debug)]
pub(super) struct Notifier {
    socket: UnixDatagram,
    target: String,
}

impl Notifier {
    /// Takes `NOTIFY_SOCKET` from the environment (so no child inherits it).
    pub(super) fn from_env() -> Option<Notifier> {
        let target = std::env::var("NOTIFY_SOCKET").ok()?;
        std::env::remove_var("NOTIFY_SOCKET");
        if target.is_empty() {
            return None;
        }
        match UnixDatagram::unbound() {
            Ok(socket) => Some(Notifier { socket, target }),
            Err(e) => {
                tracing::warn!("NOTIFY_SOCKET: {e}");
                None
            }
        }
    }

    /// Sends one message; a failure is logged (the server runs on regardless).
    pub(super) fn send(&self, msg: &str) {
        let sent = match self.target.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                    .and_then(|a| self.socket.send_to_addr(msg.as_bytes(), &a))
            }
            None => self.socket.send_to(msg.as_bytes(), &self.target),
        };
        if let Err(e) = sent {
            tracing::warn!("NOTIFY_SOCKET {}: {e}", self.target);
        }
    }
}

/// `RELOADING=1` with the monotonic time systemd asks for.
pub(super) fn reloading() -> String {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `t`, which lives on this frame.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t);
    }
    let usec = t.tv_sec as i128 * 1_000_000 + t.tv_nsec as i128 / 1000;
    format!("RELOADING=1\nMONOTONIC_USEC={usec}\nSTATUS=reloading\n")
}

/// Whether the start's `READY=1` was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ready {
    /// Workers are forked; not every one has said (in the scoreboard) that it runs.
    Waiting,
    /// Sent (or given up: the server is stopping).
    Sent,
}

impl super::Watcher {
    /// Sends the start's `READY=1` once every worker of the first generation has left
    /// "starting" in the scoreboard (it set up its listeners and dropped privileges), not at
    /// fork: systemd then starts units ordered after this one when requests can be served.
    pub(super) fn announce_ready_once_running(&mut self) {
        if self.ready == Ready::Sent {
            return;
        }
        if self.phase != super::Phase::Running {
            self.ready = Ready::Sent;
            return;
        }
        let running = self.slots.iter().all(|s| {
            s.pid.is_some()
                && self.board.worker(s.board_slot).is_some_and(|w| {
                    !matches!(
                        w.state(),
                        crate::admin::scoreboard::State::Empty
                            | crate::admin::scoreboard::State::Starting
                    )
                })
        });
        if running {
            self.ready = Ready::Sent;
            self.notify_ready();
        }
    }
}
