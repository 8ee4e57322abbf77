//! Graceful reload (SIGUSR1 or `reload()` in the REPL).
//!
//! The config file is evaluated again in a fresh Lua state and validated; on error the running
//! generation goes on and the failure is reported (and shown by `status()`). On success:
//! listeners whose address is unchanged are kept as they are (never re-bound, so no connection
//! is refused), new ones are bound, removed ones are closed once the old workers drain; the new
//! generation is forked from the new state; once every new worker runs (its scoreboard slot left
//! "starting"), the old generation is told to drain. If the new generation does not come up
//! within `CONFIRM`, it is stopped and the old one goes on as if nothing happened. A `reload()`
//! from the REPL is answered with that outcome (`Watcher::reload_waiters`).

use super::config_check::{ConfigCheck, CHECK_LIMIT};
use super::listeners::{self, Bound};
use super::{Watcher, WorkerSlot};
use crate::admin::scoreboard::State;
use crate::config::{FastcgiDef, ListenAddr, Loaded};
use crate::log::LogFile;
use nix::sys::signal::{kill, Signal};
use std::time::{Duration, Instant, SystemTime};

/// How long a new generation gets to come up.
const CONFIRM: Duration = Duration::from_secs(10);

/// A reload whose new generation is starting: everything needed to finish it, or to go back.
pub(super) struct Pending {
    started: Instant,
    /// The configuration the old generation runs, to go back to.
    old_loaded: Loaded,
    /// The scoreboard slots of the old generation's workers.
    old_board_slots: Vec<usize>,
    /// Listeners the new config dropped: closed (and unlinked) only once it runs.
    removed: Vec<Bound>,
    /// Listeners the new config added: dropped if it does not come up.
    added: Vec<ListenAddr>,
    /// The old access log, when the new config changed it.
    old_access_log: Option<Option<LogFile>>,
    /// Whether FastCGI definitions changed (applied once the old workers drained).
    backends_changed: bool,
}

impl Watcher {
    /// Records the outcome of a reload, for `status()` and the status page.
    fn set_last_reload(&mut self, result: Result<(), String>) {
        let at = SystemTime::now();
        let ms = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.board.reload_done(result.is_ok(), ms.max(1));
        self.last_reload = Some((at, result));
    }

    /// Starts a reload from the config file the server was started with: a forked checker
    /// evaluates it first (`config_check.rs`); `finish_reload_check` carries on once it has
    /// answered. An error here means the check could not start.
    pub(super) fn reload_from_file(&mut self) -> Result<(), String> {
        if self.pending_reload.is_some() || self.reload_check.is_some() {
            return Err("reload: a reload is already in progress".to_string());
        }
        self.notify_send(&super::notify::reloading());
        let file = self.config().file.clone();
        match ConfigCheck::start(&file, self.poll.registry()) {
            Ok(check) => {
                self.reload_check = Some(check);
                Ok(())
            }
            Err(e) => {
                self.reload_failed(&e);
                Err(e)
            }
        }
    }

    /// Once the checker has answered: load the file here and start the new generation, or
    /// report why not. Kills a checker that overran its time.
    pub(super) fn finish_reload_check(&mut self, now: Instant) {
        let Some(check) = &mut self.reload_check else {
            return;
        };
        check.enforce(now);
        let Some(verdict) = check.verdict() else {
            return;
        };
        if let Some(c) = self.reload_check.take() {
            c.deregister(self.poll.registry());
        }
        let result = match verdict {
            Ok(()) => self.reload_checked(),
            Err(errors) => {
                let text = format!("reload failed, the running configuration stays:\n{errors}");
                self.set_last_reload(Err(errors.clone()));
                Err(text)
            }
        };
        if let Err(e) = result {
            tracing::error!("{e}");
            self.reload_failed(&e);
            self.answer_reload_waiters(Err(e));
        }
    }

    /// Tells systemd a reload failed (the running generation goes on).
    fn reload_failed(&self, e: &str) {
        let first = e.lines().next().unwrap_or("reload failed");
        self.notify_send(&format!("READY=1\nSTATUS=reload failed: {first}\n"));
    }

    /// Evaluates the checked file here, with a wall-clock hook in case it changed since.
    fn reload_checked(&mut self) -> Result<(), String> {
        let file = self.config().file.clone();
        let loaded = if file.as_os_str() == crate::config::DEFAULT_CONFIG_NAME {
            crate::config::load_default()
        } else {
            crate::config::load_file_within(&file, CHECK_LIMIT)
        };
        match loaded {
            Ok(l) => {
                for w in &l.config.tls.warnings {
                    tracing::warn!("reload: {w}");
                }
                self.start_reload(l)
            }
            Err(errors) => {
                let text = format!("reload failed, the running configuration stays:\n{errors}");
                self.set_last_reload(Err(errors.to_string()));
                Err(text)
            }
        }
    }

    /// Starts the new generation for a loaded and validated configuration.
    pub(super) fn start_reload(&mut self, loaded: Loaded) -> Result<(), String> {
        let result = self.try_start_reload(loaded);
        if let Err(e) = &result {
            self.set_last_reload(Err(e.clone()));
        }
        result
    }

    fn try_start_reload(&mut self, loaded: Loaded) -> Result<(), String> {
        if self.pending_reload.is_some() {
            return Err("reload: a reload is already in progress".to_string());
        }
        let new = &loaded.config;
        for (what, changed) in [
            ("admin", new.admin != self.config().admin),
            ("pid_file", new.pid_file != self.config().pid_file),
            ("daemon", new.daemon != self.config().daemon),
            ("error_log", new.error_log != self.config().error_log),
        ] {
            if changed {
                tracing::warn!("reload: '{what}' changed; it takes effect on the next restart");
            }
        }
        // Scoreboard slots for the new generation: any not held by a live worker.
        let used: Vec<usize> = self
            .slots
            .iter()
            .chain(&self.old)
            .map(|s| s.board_slot)
            .collect();
        let free: Vec<usize> = (0..self.board.worker_capacity())
            .filter(|i| !used.contains(i))
            .take(new.workers)
            .collect();
        if free.len() < new.workers {
            return Err(format!(
                "reload: no room for {} more workers while the old ones drain; try again later",
                new.workers
            ));
        }
        // Shared dicts: a zone cannot change size; new ones are mapped before the fork.
        crate::shared::map_config(&new.shared).map_err(|e| format!("reload: {e}"))?;
        // Bind new addresses first: a failure leaves everything as it was.
        let mut fresh = Vec::new();
        for addr in &new.listen {
            if !self.bound.iter().any(|b| &b.addr == addr) {
                fresh.extend(listeners::bind_all(std::slice::from_ref(addr))?);
            }
        }
        // New backends start now; changed ones are replaced once the old workers drained.
        let backends_changed = !same_backends(&new.fastcgi, &self.config().fastcgi);
        if backends_changed {
            self.backends.prepare_reload(&new.fastcgi)?;
        }
        let access_changed = new.access_log != self.config().access_log;
        let new_access = if access_changed {
            match &new.access_log {
                Some(p) => Some(LogFile::open(p).map_err(|e| format!("reload: access log: {e}"))?),
                None => None,
            }
        } else {
            None
        };
        let added: Vec<ListenAddr> = fresh.iter().map(|b| b.addr.clone()).collect();
        let mut kept = Vec::new();
        let mut old_bound = std::mem::take(&mut self.bound);
        for addr in &new.listen {
            if let Some(pos) = old_bound.iter().position(|b| &b.addr == addr) {
                kept.push(old_bound.remove(pos));
            } else if let Some(pos) = fresh.iter().position(|b| &b.addr == addr) {
                kept.push(fresh.remove(pos));
            }
        }
        // Addresses no longer listed stay open until the new generation runs.
        let removed = old_bound;
        self.bound = kept;
        let old_access_log = if access_changed {
            Some(std::mem::replace(&mut self.access_log, new_access))
        } else {
            None
        };

        let now = Instant::now();
        self.generation += 1;
        let old_board_slots = self.slots.iter().map(|s| s.board_slot).collect();
        let old_generation: Vec<WorkerSlot> = std::mem::take(&mut self.slots);
        // Only running workers drain; a slot whose worker is gone (awaiting its respawn) was
        // retired at the reap and would otherwise wait in `old` for an exit that never comes.
        self.old
            .extend(old_generation.into_iter().filter(|s| s.pid.is_some()));
        let old_loaded = std::mem::replace(&mut self.loaded, loaded);
        self.upstreams_reloaded(&old_loaded.config);
        self.slots = free
            .into_iter()
            .map(|board_slot| WorkerSlot {
                pid: None,
                started: now,
                crashes: 0,
                respawn_at: None,
                generation: self.generation,
                board_slot,
                respawns: 0,
            })
            .collect();
        self.pending_reload = Some(Pending {
            started: now,
            old_loaded,
            old_board_slots,
            removed,
            added,
            old_access_log,
            backends_changed,
        });
        for i in 0..self.slots.len() {
            if let Err(e) = self.spawn(i) {
                tracing::error!("reload: {e}");
                self.slots[i].respawn_at = Some(now + Duration::from_secs(1));
            }
        }
        tracing::info!(
            "reload: generation {} starting ({} workers)",
            self.generation,
            self.slots.len()
        );
        Ok(())
    }

    /// Once the new generation runs, the old one drains; if it does not come up, it goes.
    pub(super) fn check_reload(&mut self, now: Instant) {
        let Some(p) = &self.pending_reload else {
            return;
        };
        let running = self.slots.iter().all(|s| {
            s.pid.is_some()
                && self
                    .board
                    .worker(s.board_slot)
                    .is_some_and(|w| !matches!(w.state(), State::Starting | State::Empty))
        });
        if running {
            if let Some(p) = self.pending_reload.take() {
                // The old workers keep their own copies until they drain.
                listeners::unlink_unix(&p.removed);
                self.backends_after_drain |= p.backends_changed;
            }
            let old: Vec<_> = self.old.iter().filter_map(|s| s.pid).collect();
            for pid in &old {
                let _ = kill(*pid, Signal::SIGQUIT);
            }
            tracing::info!(
                "reload: generation {} runs; {} old workers drain",
                self.generation,
                old.len()
            );
            self.set_last_reload(Ok(()));
            self.notify_ready();
            let answer = serde_json::json!({
                "ok": true,
                "config": self.config().file.display().to_string(),
                "generation": self.generation,
                "note": format!(
                    "generation {} runs; {} old workers drain",
                    self.generation,
                    old.len()
                ),
            });
            self.answer_reload_waiters(Ok(answer));
        } else if now.duration_since(p.started) > CONFIRM {
            self.revert_reload();
        }
    }

    /// The new generation did not come up: stop it and go on with the old one.
    fn revert_reload(&mut self) {
        let Some(p) = self.pending_reload.take() else {
            return;
        };
        tracing::error!(
            "reload: generation {} did not come up within {CONFIRM:?}; keeping generation {}",
            self.generation,
            self.generation - 1
        );
        let failed: Vec<WorkerSlot> = std::mem::take(&mut self.slots);
        for s in &failed {
            if let Some(pid) = s.pid {
                let _ = kill(pid, Signal::SIGTERM);
            }
        }
        self.generation -= 1;
        // The old generation's workers come back; one that exited meanwhile is respawned.
        let now = Instant::now();
        for board_slot in p.old_board_slots {
            match self.old.iter().position(|s| s.board_slot == board_slot) {
                Some(i) => self.slots.push(self.old.remove(i)),
                None => self.slots.push(WorkerSlot {
                    pid: None,
                    started: now,
                    crashes: 0,
                    respawn_at: Some(now),
                    generation: self.generation,
                    board_slot,
                    respawns: 0,
                }),
            }
        }
        self.old
            .extend(failed.into_iter().filter(|s| s.pid.is_some()));
        let tried = std::mem::replace(&mut self.loaded, p.old_loaded);
        self.upstreams_reloaded(&tried.config);
        if p.backends_changed {
            self.backends.revert_reload();
        }
        self.bound.retain(|b| !p.added.contains(&b.addr));
        self.bound.extend(p.removed);
        let order = &self.loaded.config.listen;
        crate::sort_compact::sort_by_key(&mut self.bound, |b| {
            order
                .iter()
                .position(|a| a == &b.addr)
                .unwrap_or(usize::MAX)
        });
        if let Some(log) = p.old_access_log {
            self.access_log = log;
        }
        self.set_last_reload(Err("the new generation did not come up".to_string()));
        self.notify_send(&format!(
            "READY=1\nSTATUS=reload failed, generation {} goes on\n",
            self.generation
        ));
        self.answer_reload_waiters(Err(format!(
            "reload: the new generation did not come up within {CONFIRM:?}; generation {} goes on",
            self.generation
        )));
    }

    /// A stop during a reload: every worker, old and new, is stopped with the rest.
    pub(super) fn abort_reload(&mut self) {
        let checking = self.reload_check.take().map(|c| {
            c.kill();
            c.deregister(self.poll.registry());
        });
        if self.pending_reload.take().is_some() || checking.is_some() {
            self.answer_reload_waiters(
                Err("reload: abandoned, the server is stopping".to_string()),
            );
        }
    }

    /// Restarts changed backends' processes once no request is in flight on them, closing
    /// each to new requests first (the scoreboard's restart gate), so a reload cuts no request.
    pub(super) fn restart_idle_backends(&mut self, now: Instant) {
        if !self.backends.restarts_pending() {
            return;
        }
        let gate = BoardGate {
            config: &self.loaded.config,
            index: crate::fastcgi::pool::proc_index(&self.loaded.config),
            board: &self.board,
            settled: self.pending_reload.is_none() && self.old.is_empty(),
        };
        self.backends.restart_idle(now, &gate);
    }

    /// Backend changes of a reload wait until no worker of an older generation uses them.
    pub(super) fn finish_backends_if_drained(&mut self) {
        if self.backends_after_drain && self.old.is_empty() {
            self.backends_after_drain = false;
            self.backends.finish_reload();
        }
    }
}

/// The restart gate as `Backends` sees it: a process by backend name and index, at its proc
/// slot in the current config's layout, which every live worker uses once no reload is under
/// way and the older generations are gone (`settled`).
struct BoardGate<'a> {
    config: &'a crate::config::Config,
    index: crate::admin::scoreboard::ProcIndex,
    board: &'a crate::admin::scoreboard::Scoreboard,
    settled: bool,
}

impl crate::fastcgi::spawn_backends::ProcGate for BoardGate<'_> {
    fn settled(&self) -> bool {
        self.settled
    }

    fn slot(&self, name: &str, i: usize) -> Option<usize> {
        let b = self.config.fastcgi.iter().position(|d| d.name == name)?;
        self.index.index(b, i)
    }

    fn close(&self, slot: usize) -> bool {
        self.board.close_proc(slot)
    }

    fn open(&self, slot: usize) {
        self.board.open_proc(slot);
    }
}

/// Backend definitions compared without where they were written.
fn same_backends(a: &[FastcgiDef], b: &[FastcgiDef]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            let mut x = x.clone();
            x.defined_at = y.defined_at.clone();
            &x == y
        })
}
