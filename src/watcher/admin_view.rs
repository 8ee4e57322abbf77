//! What the admin REPL sees of the watcher, and carrying out what it asks.

use super::{Phase, Watcher};
use crate::admin::scoreboard::now_ms;
use crate::admin::server::{AdminState, Command};
use crate::fastcgi::pool::{proc_index, upstream_addrs};
use serde_json::{json, Value};

impl Watcher {
    /// Serves an admin client's event, then carries out the commands its chunks gave.
    pub(super) fn on_admin_client(&mut self, key: usize) {
        let Some(mut admin) = self.admin.take() else {
            return;
        };
        admin.client_ready(key, &mut |st| self.fill_admin_state(st));
        let (commands, mut reloaded) = {
            let mut st = admin.state.borrow_mut();
            (std::mem::take(&mut st.commands), st.reloaded.take())
        };
        self.admin = Some(admin);
        for command in commands {
            match command {
                Command::Shutdown { now: true, .. } => self.fast_stop(),
                Command::Shutdown {
                    timeout,
                    now: false,
                } => {
                    if self.phase == Phase::Running {
                        let grace = timeout.unwrap_or(self.config().timeouts.graceful);
                        self.graceful_stop_within(grace);
                    }
                }
                Command::Reload if self.phase != Phase::Running => {}
                Command::Reload => {
                    if let Some(loaded) = reloaded.take() {
                        if let Err(e) = self.start_reload(loaded) {
                            tracing::error!("{e}");
                        }
                    }
                }
                Command::ReopenLogs => self.reopen_logs(),
                Command::ReloadFailed(errors) => {
                    tracing::error!("reload failed, the running configuration stays:\n{errors}");
                    self.last_reload = Some((std::time::SystemTime::now(), Err(errors)));
                }
            }
        }
    }

    /// Fills the view the admin functions read, just before a chunk runs.
    fn fill_admin_state(&self, st: &mut AdminState) {
        let now = now_ms();
        let config = self.config();
        let totals = self.board.totals(&self.retired);
        let phase = match self.phase {
            Phase::Running if self.pending_reload.is_some() => "reloading",
            Phase::Running => "running",
            Phase::Draining(_) => "draining",
            Phase::Stopping(_) => "stopping",
        };
        let last_reload = match &self.last_reload {
            None => Value::Null,
            Some((at, result)) => json!({
                "at": crate::http::date::format(*at),
                "ok": result.is_ok(),
                "error": result.as_ref().err(),
            }),
        };
        st.status = json!({
            "pid": std::process::id(),
            "version": env!("CARGO_PKG_VERSION"),
            "state": phase,
            "uptime_seconds": self.started_at.elapsed().as_secs(),
            "generation": self.generation,
            "config": config.file.display().to_string(),
            "workers": config.workers,
            "live_workers": self.live_workers(),
            "listeners": self.bound.iter().map(|b| b.bound_addr()).collect::<Vec<_>>(),
            "last_reload": last_reload,
            "totals": {
                "requests": totals.requests,
                "bytes_in": totals.bytes_in,
                "bytes_out": totals.bytes_out,
                "respawns": totals.respawns,
            },
        });
        let mut rows = Vec::new();
        for (i, w) in self.slots.iter().chain(&self.old).enumerate() {
            let Some(slot) = self.board.worker(w.board_slot) else {
                continue;
            };
            let snap = slot.snapshot(now);
            let (request, client, elapsed) = match &snap.request {
                Some(r) if r.in_flight => (
                    format!("{} {}{}", r.method, r.host, r.path),
                    r.client.clone(),
                    Value::from(r.elapsed_ms),
                ),
                _ => (String::new(), String::new(), Value::Null),
            };
            rows.push(json!({
                "slot": i,
                "pid": w.pid.map(|p| p.as_raw()),
                "generation": w.generation,
                "state": snap.state.name(),
                "uptime_s": snap.uptime_ms / 1000,
                "heartbeat_ms": snap.heartbeat_age_ms,
                "respawns": w.respawns,
                "connections": snap.connections,
                "requests": snap.requests,
                "bytes_in": snap.bytes_in,
                "bytes_out": snap.bytes_out,
                "request": request,
                "client": client,
                "elapsed_ms": elapsed,
            }));
        }
        st.workers = Value::Array(rows);
        let index = proc_index(config);
        let mut rows = Vec::new();
        for (b, def) in config.fastcgi.iter().enumerate() {
            let states = self.backends.proc_states(&def.name);
            for (u, addr) in upstream_addrs(def).iter().enumerate() {
                let slot = index.index(b, u).and_then(|i| self.board.proc(i));
                let snap = slot.map(|p| p.snapshot(now));
                let (pid, external) = states.get(u).copied().unwrap_or((None, true));
                let state = if def.spawn.is_none() || external {
                    "external"
                } else if pid.is_some() {
                    "up"
                } else {
                    "down"
                };
                rows.push(json!({
                    "name": def.name,
                    "pid": pid.map(|p| p.as_raw()),
                    "state": state,
                    "address": crate::fastcgi::spawn::describe(addr),
                    "active": snap.as_ref().map_or(0, |s| s.active),
                    "total": snap.as_ref().map_or(0, |s| s.total),
                    "errors": snap.as_ref().map_or(0, |s| s.errors),
                    "disabled_for_ms": snap.as_ref().map_or(0, |s| s.disabled_for_ms),
                }));
            }
        }
        st.backends = Value::Array(rows);
        st.config_text = crate::config::print(config);
        st.config_file = config.file.clone();
        st.live_workers = self.live_workers();
        st.graceful = config.timeouts.graceful;
        st.reload_in_progress = self.pending_reload.is_some();
        st.stopping = self.phase != Phase::Running;
    }
}
