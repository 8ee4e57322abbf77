//! `luahttpd -s reload|stop|quit|reopen`: signals the server named by the config's
//! `pid_file`, as nginx's `-s` does.

use crate::config::Config;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::Path;

/// What a pid file says about the server it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Running {
    /// A live luahttpd with this pid.
    Yes(i32),
    /// No server: why, in words.
    No(String),
}

/// Reads `path` and checks that the pid in it is alive and is a luahttpd.
pub fn running(path: &Path) -> Running {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Running::No(format!(
                "no pid file at {}: is the server running?",
                path.display()
            ))
        }
        Err(e) => return Running::No(format!("{}: {e}", path.display())),
    };
    let Ok(pid) = text.trim().parse::<i32>() else {
        return Running::No(format!("{} holds no pid", path.display()));
    };
    if pid <= 0 || kill(Pid::from_raw(pid), None).is_err() {
        return Running::No(format!(
            "process {pid} named by {} is gone (a stale pid file)",
            path.display()
        ));
    }
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if !comm.trim().starts_with("luahttpd") {
        return Running::No(format!(
            "process {pid} named by {} is not luahttpd ({}; a stale pid file)",
            path.display(),
            comm.trim()
        ));
    }
    Running::Yes(pid)
}

/// Sends the signal for `action` to the server of `config`; the answer says what was done.
pub fn signal(config: &Config, action: &str) -> Result<String, String> {
    let sig = match action {
        "reload" => Signal::SIGUSR1,
        "stop" => Signal::SIGTERM,
        "quit" => Signal::SIGQUIT,
        "reopen" => Signal::SIGHUP,
        other => {
            return Err(format!(
                "-s {other}: unknown signal name (reload, stop, quit or reopen)"
            ))
        }
    };
    let Some(path) = &config.pid_file else {
        return Err(format!(
            "-s {action}: {} has no pid_file, so the server cannot be found",
            config.file.display()
        ));
    };
    match running(path) {
        Running::Yes(pid) => kill(Pid::from_raw(pid), sig)
            .map(|_| format!("sent {sig} ({action}) to luahttpd pid {pid}"))
            .map_err(|e| format!("-s {action}: pid {pid}: {e}")),
        Running::No(why) => Err(format!("-s {action}: {why}")),
    }
}
