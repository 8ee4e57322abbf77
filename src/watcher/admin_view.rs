//! What the admin REPL sees of the watcher, and carrying out what it asks. The evaluator
//! process sends typed calls; each is answered here without running any Lua, at once, except
//! `reload()`, which is answered when the new generation runs or is given up.

use super::{Phase, Watcher};
use crate::admin::scoreboard::now_ms;
use crate::admin::wire::Call;
use crate::fastcgi::pool::{proc_index, upstream_addrs};
use serde_json::{json, Value};

impl Watcher {
    /// Handles the evaluator link's readiness and answers the calls its chunks make.
    pub(super) fn on_evaluator(&mut self) {
        let Some(admin) = &mut self.admin else {
            return;
        };
        let calls = admin.evaluator_ready(self.poll.registry());
        for (id, call) in calls {
            if let Some(result) = self.answer_call(id, call) {
                if let Some(a) = &mut self.admin {
                    a.reply(id, result);
                }
            }
        }
    }

    /// Starts an evaluator when chunks wait, enforces the chunk limit, feeds the evaluator.
    pub(super) fn pump_admin(&mut self) {
        self.spawn_evaluator_if_needed();
        if let Some(a) = &mut self.admin {
            a.pump(self.poll.registry(), std::time::Instant::now());
        }
    }

    /// The answer to one call; None when it comes later (a reload that started).
    fn answer_call(&mut self, id: u64, call: Call) -> Option<Result<Value, String>> {
        Some(match call {
            Call::Status => Ok(self.status_view()),
            Call::Workers => Ok(self.workers_view()),
            Call::Backends => Ok(self.backends_view()),
            Call::Drain { upstream, address } => self.set_drained(&upstream, &address, true),
            Call::Enable { upstream, address } => self.set_drained(&upstream, &address, false),
            Call::Config => Ok(Value::from(crate::config::print(self.config()))),
            Call::Certificates => Ok(crate::tls::certs::listing(&self.config().tls.certificates)),
            Call::ReopenLogs => {
                self.reopen_logs();
                Ok(Value::Bool(true))
            }
            Call::Shutdown { timeout, now } => {
                let workers = self.live_workers();
                let answer = if now {
                    json!({"workers": workers, "stopping": "now"})
                } else {
                    let grace = timeout.unwrap_or(self.config().timeouts.graceful);
                    json!({
                        "workers": workers,
                        "draining": workers,
                        "deadline_seconds": grace.as_secs_f64(),
                    })
                };
                if now {
                    self.fast_stop();
                } else if self.phase == Phase::Running {
                    let grace = timeout.unwrap_or(self.config().timeouts.graceful);
                    self.graceful_stop_within(grace);
                }
                Ok(answer)
            }
            Call::Reload => {
                if self.phase != Phase::Running {
                    return Some(Err("reload: the server is stopping".to_string()));
                }
                // In progress until the chunks that asked for it have their answer, so that
                // requests sent together see the first reload, wherever it stands.
                let answering = self
                    .reload_answered
                    .iter()
                    .any(|id| self.admin.as_ref().is_some_and(|a| a.reply_queued(*id)));
                if self.pending_reload.is_some() || self.reload_check.is_some() || answering {
                    return Some(Err("reload: a reload is already in progress".to_string()));
                }
                match self.reload_from_file() {
                    Ok(()) => {
                        self.reload_waiters.push(id);
                        return None;
                    }
                    Err(e) => {
                        tracing::error!("{e}");
                        Err(e)
                    }
                }
            }
        })
    }

    /// Answers the chunks waiting in `reload()` with the outcome.
    pub(super) fn answer_reload_waiters(&mut self, outcome: Result<Value, String>) {
        let waiters = std::mem::take(&mut self.reload_waiters);
        if let Some(a) = &mut self.admin {
            for id in &waiters {
                a.reply(*id, outcome.clone());
            }
        }
        self.reload_answered = waiters;
    }

    /// `status()`.
    fn status_view(&self) -> Value {
        let config = self.config();
        let totals = self.board.totals(&self.retired);
        let phase = match self.phase {
            Phase::Running if self.pending_reload.is_some() || self.reload_check.is_some() => {
                "reloading"
            }
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
        json!({
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
                "responses": {
                    "1xx": totals.statuses[0],
                    "2xx": totals.statuses[1],
                    "3xx": totals.statuses[2],
                    "4xx": totals.statuses[3],
                    "5xx": totals.statuses[4],
                },
            },
        })
    }

    /// `workers()`.
    fn workers_view(&self) -> Value {
        let now = now_ms();
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
                "lua_ms": snap.lua_ms,
            }));
        }
        Value::Array(rows)
    }

    /// `backends()`.
    fn backends_view(&self) -> Value {
        let now = now_ms();
        let config = self.config();
        let index = proc_index(config);
        let mut rows = Vec::new();
        for (b, def) in config.fastcgi.iter().enumerate() {
            let states = self.backends.proc_states(&def.name);
            for (u, addr) in upstream_addrs(def).iter().enumerate() {
                let snap = index
                    .index(b, u)
                    .and_then(|i| self.board.proc_snapshot(i, now));
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
        rows.extend(self.upstream_rows());
        Value::Array(rows)
    }
}
