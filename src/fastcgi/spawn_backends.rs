//! `Backends`: the watcher's supervisor of spawned FastCGI processes.
//!
//! The watcher owns one `Backends`. It starts every process of every `spawn` backend before
//! the workers are forked, hands it each reaped pid (`on_exit`), wakes up at `next_respawn`
//! and calls `respawn_due`, and on shutdown calls `stop` then `cleanup`. Respawns follow the
//! workers' rule: a process that lived longer than `CRASH_WINDOW` is replaced at once (php-cgi
//! exits on purpose after PHP_FCGI_MAX_REQUESTS), one that dies sooner is replaced after an
//! exponential back-off from 100 ms up to `MAX_BACKOFF`.
//!
//! Wiring into the watcher (src/watcher/mod.rs):
//! - `Backends::start(&config.fastcgi)` after `signals::install()` and the listeners, before
//!   the first worker is forked: backends are up before a request can need them, and workers
//!   inherit no backend descriptor (the parent keeps none). An `Err` is a start-up failure.
//! - In `reap()`, for every pid that is not a worker: `backends.on_exit(pid, &status, now)`.
//!   (Exec failures are reaped inside `spawn_proc`, so the watcher never sees those pids.)
//! - `next_wakeup()` also considers `backends.next_respawn()`; the loop calls
//!   `backends.respawn_due(now)` in every phase, draining included: in-flight PHP requests
//!   still need php-cgi replaced when it exits after PHP_FCGI_MAX_REQUESTS.
//! - After a reload that changed a backend (`prepare_reload`, then `finish_reload` once the
//!   old workers drained): `restart_idle(now, gate)` in every loop while `restarts_pending()`,
//!   with the scoreboard's restart gate as the `ProcGate`.
//! - Graceful stop: stop the backends only once the workers are gone (`stop()`, then wait for
//!   `live() == 0` with a deadline, then `signal(SIGKILL)`); immediate stop: `stop()` along
//!   with the workers. At exit: `cleanup()`.

use super::spawn::{describe, proc_addrs, spawn_proc, SpawnOutcome};
use crate::config::{FastcgiDef, ListenAddr};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

/// A process that exits sooner than this after its start counts as crashing.
pub const CRASH_WINDOW: Duration = Duration::from_secs(2);
/// The first back-off after a crash.
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait before respawning a process that keeps crashing.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long a process stopped for a restart has to exit on SIGTERM before SIGKILL (it has no
/// request in flight, so php-cgi goes at once).
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// The respawn rule, as a pure function: given how long the process lived and how many times
/// in a row it had crashed before, returns the new crash count and the delay before the
/// respawn (zero after a long life; 100 ms, 200 ms, 400 ms … capped at 10 s after crashes).
pub fn backoff(lived: Duration, crashes: u32) -> (u32, Duration) {
    if lived > CRASH_WINDOW {
        return (0, Duration::ZERO);
    }
    let crashes = crashes.saturating_add(1);
    // 100 ms · 2^(crashes-1); 2^7 · 100 ms is already past the cap.
    let delay = MIN_BACKOFF
        .saturating_mul(1u32 << (crashes - 1).min(7))
        .min(MAX_BACKOFF);
    (crashes, delay)
}

#[derive(Debug)]
struct Proc {
    addr: ListenAddr,
    pid: Option<Pid>,
    /// Something else answered at the address: used, never spawned or respawned by us.
    external: bool,
    /// We bound a Unix socket file at `addr` (removed by `cleanup`).
    owns_socket: bool,
    /// The listening socket, kept across respawns (see `spawn_proc`).
    listener: Option<OwnedFd>,
    started: Instant,
    crashes: u32,
    respawn_at: Option<Instant>,
    /// Where its restart with a new definition stands (`restart_idle`).
    restart: Restart,
}

/// A process's restart for a reload that changed its definition. Its slot at the gate
/// (`ProcGate`) is closed from the first settled `Waiting` check until the process was
/// reaped, so no request begins on it meanwhile; each state keeps the slot it closed (None:
/// none closed), so the slot opened is the one closed even if a later reload renumbered them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Restart {
    /// No restart under way.
    None,
    /// To be stopped once no request is in flight on it; `closed`: the slot closed and the
    /// deadline after which it is stopped anyway, the backend's `read_timeout` from the
    /// closing (what was in flight then has had its time).
    Waiting { closed: Option<(usize, Instant)> },
    /// SIGTERM sent; the exit is ours, respawned at once with the new definition. SIGKILL
    /// follows at `kill_at`. `also`: the slot a reload since numbers it with, closed too,
    /// since that generation's workers must not begin on it either.
    Stopping {
        kill_at: Instant,
        closed: Option<usize>,
        also: Option<usize>,
    },
    /// Reaped: the gate opens at the next `restart_idle` (new connections wait in the listen
    /// queue the watcher keeps for the successor).
    Exited {
        closed: Option<usize>,
        also: Option<usize>,
    },
}

/// The watcher's handle on the scoreboard's restart gate (src/admin/scoreboard/proc_gate.rs).
pub trait ProcGate {
    /// Whether every live worker numbers the proc slots as the current config does (no reload
    /// under way, no older generation left): only then is a process closed and stopped.
    fn settled(&self) -> bool;
    /// The gate slot of process `i` of backend `name` (None: it has none, so no gate).
    fn slot(&self, name: &str, i: usize) -> Option<usize>;
    /// Closes `slot` to new requests; whether no worker holds it.
    fn close(&self, slot: usize) -> bool;
    /// Opens `slot` again.
    fn open(&self, slot: usize);
}

#[derive(Debug)]
struct Backend {
    def: FastcgiDef,
    /// Empty for `address` backends.
    procs: Vec<Proc>,
    /// After a reload: the definition that replaces `def` once the old workers drained.
    replace_with: Option<FastcgiDef>,
    /// After a reload that dropped it: stopped once the old workers drained, never respawned.
    retired: bool,
    /// Started for a reload that is not confirmed yet (stopped if it is reverted).
    provisional: bool,
}

/// Every FastCGI backend of the config and the processes spawned for them.
#[derive(Debug, Default)]
pub struct Backends {
    backends: Vec<Backend>,
    phase: Supervision,
}

/// Where supervision stands.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Supervision {
    /// Exits are respawned.
    #[default]
    Running,
    /// A graceful stop drains the workers: exits are still respawned (requests already
    /// accepted wait for a process), but are logged as part of the stop.
    Draining,
    /// The processes are being stopped: exits are expected and not respawned.
    Stopped,
}

/// Two definitions that differ only in where they were written.
fn same_def(a: &FastcgiDef, b: &FastcgiDef) -> bool {
    let mut a = a.clone();
    a.defined_at = b.defined_at.clone();
    &a == b
}

impl Backends {
    /// Spawns every process of every backend that has `spawn` (after probing each address:
    /// one that already answers is used as it is). On the first failure the processes already
    /// started are killed and reaped, their socket files removed, and the error returned.
    pub fn start(defs: &[FastcgiDef]) -> Result<Backends, String> {
        let mut all = Backends::default();
        for def in defs {
            if let Err(e) = all.add(def, false) {
                all.abort();
                return Err(e);
            }
        }
        Ok(all)
    }

    /// Starts one backend's processes and adds it. On failure the processes it started are
    /// left in the list (as a backend) so that `abort` or `revert_reload` collects them.
    fn add(&mut self, def: &FastcgiDef, provisional: bool) -> Result<(), String> {
        let now = Instant::now();
        let mut backend = Backend {
            def: def.clone(),
            procs: Vec::new(),
            replace_with: None,
            retired: false,
            provisional,
        };
        let mut result = Ok(());
        if def.spawn.is_some() {
            let addrs = proc_addrs(def)?;
            for (i, addr) in addrs.into_iter().enumerate() {
                let mut p = Proc {
                    addr,
                    pid: None,
                    external: false,
                    owns_socket: false,
                    listener: None,
                    started: now,
                    crashes: 0,
                    respawn_at: None,
                    restart: Restart::None,
                };
                match spawn_proc(def, i, &p.addr, &mut p.listener) {
                    Ok(outcome) => p.started_as(outcome, now),
                    Err(e) => {
                        backend.procs.push(p);
                        result = Err(e.to_string());
                        break;
                    }
                }
                backend.procs.push(p);
            }
        }
        let spawned: Vec<String> = backend
            .procs
            .iter()
            .filter_map(|p| {
                p.pid
                    .map(|pid| format!("{} (pid {pid})", describe(&p.addr)))
            })
            .collect();
        if !spawned.is_empty() && result.is_ok() {
            tracing::info!("fastcgi '{}': spawned {}", def.name, spawned.join(", "));
        }
        self.backends.push(backend);
        result
    }

    /// Prepares the backends for a reloaded configuration: new backends start now (the new
    /// workers need them); a changed definition at the same addresses replaces the old one
    /// once the old workers drained (its processes are then restarted with it, on the sockets
    /// they keep, so nothing is refused); a dropped backend stops then. A backend whose
    /// addresses changed cannot be swapped under running workers: that reload is refused.
    pub fn prepare_reload(&mut self, defs: &[FastcgiDef]) -> Result<(), String> {
        for def in defs {
            let Some(old) = self
                .backends
                .iter()
                .find(|b| b.def.name == def.name && !b.retired)
            else {
                continue;
            };
            if same_def(&old.def, def) {
                continue;
            }
            let addrs = |d: &FastcgiDef| {
                if d.spawn.is_some() {
                    proc_addrs(d).unwrap_or_default()
                } else {
                    d.address.clone()
                }
            };
            if addrs(&old.def) != addrs(def) || old.def.spawn.is_some() != def.spawn.is_some() {
                return Err(format!(
                    "reload: fastcgi '{}' changed its addresses or processes; restart to apply",
                    def.name
                ));
            }
        }
        for def in defs {
            if !self
                .backends
                .iter()
                .any(|b| b.def.name == def.name && !b.retired)
            {
                if let Err(e) = self.add(def, true) {
                    self.revert_reload();
                    return Err(format!("reload: {e}"));
                }
            }
        }
        for b in &mut self.backends {
            if b.provisional {
                continue;
            }
            match defs.iter().find(|d| d.name == b.def.name) {
                None => b.retired = true,
                Some(d) if !same_def(&b.def, d) => b.replace_with = Some(d.clone()),
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// The reload was confirmed and the old workers drained: replacements and retirements
    /// take effect.
    pub fn finish_reload(&mut self) {
        for b in &mut self.backends {
            b.provisional = false;
            if let Some(def) = b.replace_with.take() {
                tracing::info!(
                    "fastcgi '{}': restarting its processes with the new definition",
                    def.name
                );
                // php-cgi (PHP_FCGI_CHILDREN=0) dies at once on SIGTERM, with the request it
                // runs: each process is closed to new requests and restarted only once the
                // workers have none in flight on it (`restart_idle`), so a POST is not cut by
                // a reload. One already waiting or stopping goes on: its respawn takes `b.def`.
                b.def = def;
                for p in &mut b.procs {
                    if p.restart == Restart::None && p.pid.is_some() {
                        p.restart = Restart::Waiting { closed: None };
                    }
                }
            }
            if b.retired {
                tracing::info!(
                    "fastcgi '{}': no longer configured; stopping it",
                    b.def.name
                );
                for p in &mut b.procs {
                    p.respawn_at = None;
                    if let Some(pid) = p.pid {
                        let _ = kill(pid, Signal::SIGTERM);
                    }
                }
            }
        }
    }

    /// The reload was reverted: backends it started stop, nothing is replaced or retired.
    pub fn revert_reload(&mut self) {
        for b in &mut self.backends {
            b.replace_with = None;
            b.retired = false;
            if b.provisional {
                b.retired = true;
                b.provisional = false;
                for p in &mut b.procs {
                    p.respawn_at = None;
                    if let Some(pid) = p.pid {
                        let _ = kill(pid, Signal::SIGTERM);
                    }
                }
            }
        }
    }

    /// Handles a reaped child. Returns true if `pid` was one of our processes (the watcher
    /// then knows it is not a worker); schedules its respawn unless stopping.
    pub fn on_exit(&mut self, pid: Pid, status: &WaitStatus, now: Instant) -> bool {
        let phase = self.phase;
        for b in &mut self.backends {
            let Some((i, p)) = b
                .procs
                .iter_mut()
                .enumerate()
                .find(|(_, p)| p.pid == Some(pid))
            else {
                continue;
            };
            p.pid = None;
            let intended = match p.restart {
                Restart::Stopping { closed, also, .. } => {
                    p.restart = Restart::Exited { closed, also };
                    true
                }
                _ => false,
            };
            if phase == Supervision::Stopped || b.retired {
                // Expected: the server stops the processes, or a reload dropped this backend.
                let why = if phase == Supervision::Stopped {
                    "during the stop"
                } else {
                    "after its backend was dropped by a reload"
                };
                tracing::info!(
                    "fastcgi '{}' proc {i} (pid {pid}) {} {why}; not respawned",
                    b.def.name,
                    describe_exit(status)
                );
                return true;
            }
            let lived = now.saturating_duration_since(p.started);
            // php-cgi exits with 0 on purpose after PHP_FCGI_MAX_REQUESTS, however soon under
            // load, and a restart for a reload is ours: only an abnormal exit counts as a crash.
            let (crashes, delay) = if intended || matches!(status, WaitStatus::Exited(_, 0)) {
                (0, Duration::ZERO)
            } else {
                backoff(lived, p.crashes)
            };
            p.crashes = crashes;
            p.respawn_at = Some(now + delay);
            if phase == Supervision::Draining {
                // php-cgi at PHP_FCGI_MAX_REQUESTS, or killed by someone, while the workers
                // drain: requests already accepted still need a process.
                tracing::info!(
                    "fastcgi '{}' proc {i} (pid {pid}) {} during the stop; respawned for the drain",
                    b.def.name,
                    describe_exit(status)
                );
                return true;
            }
            let message = format!(
                "fastcgi '{}' proc {i} (pid {pid}) {} after {:.1?}; respawning {}",
                b.def.name,
                describe_exit(status),
                lived,
                if delay.is_zero() {
                    "now".to_string()
                } else {
                    format!("in {delay:?}")
                }
            );
            // A clean exit is php-cgi's PHP_FCGI_MAX_REQUESTS at work, not a problem.
            if crashes == 0 {
                tracing::info!("{message}");
            } else {
                tracing::warn!("{message}");
            }
            return true;
        }
        false
    }

    /// Whether a restart for a reload is under way (the watcher then calls `restart_idle`
    /// often).
    pub fn restarts_pending(&self) -> bool {
        self.procs().any(|p| p.restart != Restart::None)
    }

    /// Moves each restart on: once the gate is settled, a waiting process is closed there and
    /// stopped once no worker holds it, or at its deadline; a reaped one is opened again.
    /// While a reload is under way a waiting process is opened and left alone: the workers of
    /// two configs may number the slots differently.
    pub fn restart_idle(&mut self, now: Instant, gate: &impl ProcGate) {
        let settled = gate.settled();
        let open = |closed: Option<usize>| {
            if let Some(slot) = closed {
                gate.open(slot);
            }
        };
        for b in &mut self.backends {
            for (i, p) in b.procs.iter_mut().enumerate() {
                match (p.restart, p.pid) {
                    (Restart::None, _) => {}
                    (Restart::Exited { closed, also }, _)
                    | (Restart::Stopping { closed, also, .. }, None) => {
                        // Gone by our signal: its respawn uses the new definition.
                        open(closed);
                        open(also);
                        p.restart = Restart::None;
                    }
                    (Restart::Waiting { closed }, None) => {
                        // Gone meanwhile: its respawn uses the new definition.
                        open(closed.map(|(slot, _)| slot));
                        p.restart = Restart::None;
                    }
                    (
                        Restart::Stopping {
                            mut kill_at,
                            closed,
                            also,
                        },
                        Some(pid),
                    ) => {
                        // Renumbered by a reload while it stops: closed there too.
                        let also = match (also, gate.slot(&b.def.name, i)) {
                            (None, Some(now_slot)) if Some(now_slot) != closed => {
                                gate.close(now_slot);
                                Some(now_slot)
                            }
                            (also, _) => also,
                        };
                        if now >= kill_at {
                            tracing::warn!(
                                "fastcgi '{}' proc {i} (pid {pid}) ignored SIGTERM for {:?}; \
                                 killing it",
                                b.def.name,
                                STOP_GRACE
                            );
                            let _ = kill(pid, Signal::SIGKILL);
                            kill_at = now + STOP_GRACE;
                        }
                        p.restart = Restart::Stopping {
                            kill_at,
                            closed,
                            also,
                        };
                    }
                    (Restart::Waiting { closed }, Some(_)) if b.retired || !settled => {
                        // Dropped by a reload since (stopped as such), or a reload runs.
                        open(closed.map(|(slot, _)| slot));
                        p.restart = if b.retired {
                            Restart::None
                        } else {
                            Restart::Waiting { closed: None }
                        };
                    }
                    (Restart::Waiting { closed }, Some(pid)) => {
                        let slot = gate.slot(&b.def.name, i);
                        // Closed anew (first, or at a slot renumbered): the deadline starts now.
                        let closed = match (closed, slot) {
                            (Some((was, deadline)), Some(slot)) if was == slot => {
                                Some((slot, deadline))
                            }
                            (was, slot) => {
                                open(was.map(|(slot, _)| slot));
                                slot.map(|slot| (slot, now + b.def.read_timeout))
                            }
                        };
                        let quiet = closed.is_none_or(|(slot, _)| gate.close(slot));
                        p.restart = Restart::Waiting { closed };
                        let due = closed.is_some_and(|(_, deadline)| now >= deadline);
                        if !quiet && !due {
                            continue;
                        }
                        if !quiet {
                            tracing::warn!(
                                "fastcgi '{}' proc {i}: requests still in flight {:?} after it \
                                 was closed for its restart; restarting it anyway",
                                b.def.name,
                                b.def.read_timeout
                            );
                        }
                        p.restart = Restart::Stopping {
                            kill_at: now + STOP_GRACE,
                            closed: closed.map(|(slot, _)| slot),
                            also: None,
                        };
                        let _ = kill(pid, Signal::SIGTERM);
                    }
                }
            }
        }
    }

    /// When `respawn_due` next has work, if ever.
    pub fn next_respawn(&self) -> Option<Instant> {
        if self.phase == Supervision::Stopped {
            return None;
        }
        self.procs().filter_map(|p| p.respawn_at).min()
    }

    /// Respawns every process whose time has come. A failure is logged and retried with the
    /// back-off.
    pub fn respawn_due(&mut self, now: Instant) {
        if self.phase == Supervision::Stopped {
            return;
        }
        for b in &mut self.backends {
            for (i, p) in b.procs.iter_mut().enumerate() {
                if p.respawn_at.is_none_or(|t| t > now) {
                    continue;
                }
                p.respawn_at = None;
                match spawn_proc(&b.def, i, &p.addr, &mut p.listener) {
                    Ok(outcome) => {
                        if outcome == SpawnOutcome::External {
                            tracing::warn!(
                                "fastcgi '{}' proc {i}: another process now serves {}; \
                                 it is no longer supervised",
                                b.def.name,
                                describe(&p.addr)
                            );
                        }
                        p.started_as(outcome, now);
                    }
                    Err(e) => {
                        let (crashes, delay) = backoff(Duration::ZERO, p.crashes);
                        p.crashes = crashes;
                        p.respawn_at = Some(now + delay);
                        tracing::error!("{e}; retrying in {delay:?}");
                    }
                }
            }
        }
    }

    /// Stops supervising: no more respawns, SIGTERM to every process (php-cgi passes it on to
    /// its own children). Reap them as usual (`on_exit`), then call `cleanup`.
    pub fn stop(&mut self) {
        self.phase = Supervision::Stopped;
        self.signal(Signal::SIGTERM);
    }

    /// The server is stopping but the workers still drain: the processes keep running and
    /// an exit is still respawned (a request already accepted must get a process), only
    /// logged as part of the stop.
    pub fn draining(&mut self) {
        if self.phase == Supervision::Running {
            self.phase = Supervision::Draining;
        }
    }

    /// Sends `sig` to every live process (e.g. SIGKILL to what is left after a deadline).
    pub fn signal(&self, sig: Signal) {
        for pid in self.procs().filter_map(|p| p.pid) {
            let _ = kill(pid, sig);
        }
    }

    /// How many spawned processes are running (not yet reaped).
    pub fn live(&self) -> usize {
        self.procs().filter(|p| p.pid.is_some()).count()
    }

    /// The pids of the running processes.
    pub fn pids(&self) -> Vec<Pid> {
        self.procs().filter_map(|p| p.pid).collect()
    }

    /// Closes the kept listening sockets in a forked worker, which must not hold them.
    pub fn close_in_child(&mut self) {
        for b in &mut self.backends {
            for p in &mut b.procs {
                p.listener = None;
            }
        }
    }

    /// Removes the Unix socket files bound for our processes (at exit, after `stop`).
    pub fn cleanup(&mut self) {
        for b in &mut self.backends {
            for p in &mut b.procs {
                p.listener = None;
                if let (true, ListenAddr::Unix(path)) = (p.owns_socket, &p.addr) {
                    let _ = std::fs::remove_file(path);
                    p.owns_socket = false;
                }
            }
        }
    }

    /// Where workers connect for backend `name`: the process addresses of a spawned backend,
    /// the configured `address` list otherwise; empty for an unknown name.
    pub fn addresses(&self, name: &str) -> Vec<ListenAddr> {
        let Some(b) = self
            .backends
            .iter()
            .find(|b| b.def.name == name && !b.retired)
        else {
            return Vec::new();
        };
        if b.def.spawn.is_some() {
            b.procs.iter().map(|p| p.addr.clone()).collect()
        } else {
            b.def.address.clone()
        }
    }

    /// For each process of backend `name`: its pid (None while it is down, or when something
    /// else serves the address) and whether it is external.
    pub fn proc_states(&self, name: &str) -> Vec<(Option<Pid>, bool)> {
        self.backends
            .iter()
            .find(|b| b.def.name == name && !b.retired)
            .map(|b| b.procs.iter().map(|p| (p.pid, p.external)).collect())
            .unwrap_or_default()
    }

    fn procs(&self) -> impl Iterator<Item = &Proc> {
        self.backends.iter().flat_map(|b| b.procs.iter())
    }

    /// Start-up failed: kill and reap what was started, remove its socket files.
    fn abort(&mut self) {
        self.phase = Supervision::Stopped;
        self.signal(Signal::SIGKILL);
        for b in &mut self.backends {
            for p in &mut b.procs {
                if let Some(pid) = p.pid.take() {
                    let _ = nix::sys::wait::waitpid(pid, None);
                }
            }
        }
        self.cleanup();
    }
}

impl Proc {
    fn started_as(&mut self, outcome: SpawnOutcome, now: Instant) {
        self.started = now;
        match outcome {
            SpawnOutcome::External => {
                self.external = true;
                self.pid = None;
            }
            SpawnOutcome::Spawned { pid } => {
                self.external = false;
                self.pid = Some(pid);
                self.owns_socket = matches!(self.addr, ListenAddr::Unix(_));
            }
        }
    }
}

fn describe_exit(status: &WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exited with status {code}"),
        WaitStatus::Signaled(_, sig, core) => {
            format!(
                "was killed by {sig}{}",
                if *core { " (core dumped)" } else { "" }
            )
        }
        other => format!("changed state ({other:?})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn backoff_is_immediate_after_a_long_life() {
        assert_eq!(backoff(Duration::from_secs(3), 5), (0, Duration::ZERO));
        assert_eq!(backoff(Duration::from_secs(3600), 0), (0, Duration::ZERO));
    }

    #[test]
    fn backoff_doubles_from_100ms_to_10s() {
        let mut crashes = 0;
        let mut delays = Vec::new();
        for _ in 0..10 {
            let (c, d) = backoff(Duration::from_millis(50), crashes);
            crashes = c;
            delays.push(d.as_millis());
        }
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000, 10000]
        );
        assert_eq!(crashes, 10);
        // Exactly the window still counts as a crash; the count never overflows.
        assert_eq!(backoff(CRASH_WINDOW, 0).0, 1);
        assert_eq!(backoff(Duration::ZERO, u32::MAX), (u32::MAX, MAX_BACKOFF));
    }

    fn def(name: &str) -> FastcgiDef {
        FastcgiDef {
            name: name.to_string(),
            defined_at: "test:1".to_string(),
            spawn: Some(vec!["/bin/true".to_string()]),
            procs: 2,
            socket: Some(ListenAddr::Unix("/nonexistent/php.sock".into())),
            address: Vec::new(),
            env: BTreeMap::new(),
            extensions: vec![".php".to_string()],
            prefix: None,
            check_local: true,
            keepalive: true,
            request_buffering: true,
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            disable_time: Duration::from_secs(1),
            user: None,
            socket_owner: None,
        }
    }

    /// A supervisor with fake pids, for the scheduling logic without processes.
    fn fake(start: Instant) -> Backends {
        let d = def("php");
        let procs = proc_addrs(&d)
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, addr)| Proc {
                addr,
                pid: Some(Pid::from_raw(2_000_000_000 + i as i32)),
                external: false,
                owns_socket: false,
                listener: None,
                started: start,
                crashes: 0,
                respawn_at: None,
                restart: Restart::None,
            })
            .collect();
        let mut ext = def("remote");
        ext.spawn = None;
        ext.socket = None;
        ext.address = vec![ListenAddr::Tcp("10.0.0.1:9000".parse().unwrap())];
        Backends {
            backends: vec![
                Backend {
                    def: d,
                    procs,
                    replace_with: None,
                    retired: false,
                    provisional: false,
                },
                Backend {
                    def: ext,
                    procs: Vec::new(),
                    replace_with: None,
                    retired: false,
                    provisional: false,
                },
            ],
            phase: Supervision::Running,
        }
    }

    #[test]
    fn exits_are_scheduled_for_respawn() {
        let t0 = Instant::now();
        let mut b = fake(t0);
        assert_eq!(b.live(), 2);
        assert_eq!(b.next_respawn(), None);
        let p0 = Pid::from_raw(2_000_000_000);
        let p1 = Pid::from_raw(2_000_000_001);
        // Not ours.
        assert!(!b.on_exit(
            Pid::from_raw(12345),
            &WaitStatus::Exited(Pid::from_raw(12345), 0),
            t0
        ));
        // A crash 1 s after start: 100 ms back-off.
        let t1 = t0 + Duration::from_secs(1);
        assert!(b.on_exit(p0, &WaitStatus::Exited(p0, 255), t1));
        assert_eq!(b.live(), 1);
        assert_eq!(b.next_respawn(), Some(t1 + Duration::from_millis(100)));
        // A planned exit after a long life: respawn at once, which comes first.
        let t2 = t0 + Duration::from_secs(60);
        assert!(b.on_exit(p1, &WaitStatus::Signaled(p1, Signal::SIGTERM, false), t2));
        assert_eq!(b.live(), 0);
        assert_eq!(b.next_respawn(), Some(t1 + Duration::from_millis(100)));
        assert_eq!(b.backends[0].procs[1].respawn_at, Some(t2));
        // The same pid again is no longer ours.
        assert!(!b.on_exit(p0, &WaitStatus::Exited(p0, 0), t2));
    }

    #[test]
    fn no_respawn_while_stopping() {
        let t0 = Instant::now();
        let mut b = fake(t0);
        b.phase = Supervision::Stopped;
        let p0 = Pid::from_raw(2_000_000_000);
        assert!(b.on_exit(p0, &WaitStatus::Exited(p0, 0), t0));
        assert_eq!(b.next_respawn(), None);
        assert_eq!(b.backends[0].procs[0].respawn_at, None);
        b.respawn_due(t0 + Duration::from_secs(100));
        assert_eq!(b.live(), 1);
    }

    #[test]
    fn exits_during_a_drain_are_respawned() {
        let t0 = Instant::now();
        let mut b = fake(t0);
        b.draining();
        // Nothing was signalled: both processes are still counted as running.
        assert_eq!(b.live(), 2);
        let p0 = Pid::from_raw(2_000_000_000);
        assert!(b.on_exit(p0, &WaitStatus::Signaled(p0, Signal::SIGINT, false), t0));
        // A request accepted before the stop may be waiting for this process.
        let at = b.backends[0].procs[0].respawn_at;
        assert!(
            at.is_some(),
            "scheduled for respawn (with the usual back-off)"
        );
        assert_eq!(b.next_respawn(), at);
        b.stop();
        assert_eq!(b.next_respawn(), None);
    }

    /// A gate whose processes are busy or idle, settled or not, and numbered from `base`, as
    /// the test says; it records what was asked.
    struct FakeGate {
        busy: std::cell::Cell<bool>,
        settled: std::cell::Cell<bool>,
        base: std::cell::Cell<usize>,
        log: std::cell::RefCell<Vec<String>>,
    }

    impl FakeGate {
        fn new() -> FakeGate {
            FakeGate {
                busy: false.into(),
                settled: true.into(),
                base: 0.into(),
                log: Default::default(),
            }
        }

        fn take_log(&self) -> Vec<String> {
            std::mem::take(&mut *self.log.borrow_mut())
        }
    }

    impl ProcGate for FakeGate {
        fn settled(&self) -> bool {
            self.settled.get()
        }
        fn slot(&self, name: &str, i: usize) -> Option<usize> {
            (name == "php").then(|| self.base.get() + i)
        }
        fn close(&self, slot: usize) -> bool {
            self.log.borrow_mut().push(format!("close {slot}"));
            !self.busy.get()
        }
        fn open(&self, slot: usize) {
            self.log.borrow_mut().push(format!("open {slot}"));
        }
    }

    /// `fake` after a reload that changed "php" and was confirmed, its old workers drained.
    fn changed(t0: Instant) -> Backends {
        let mut b = fake(t0);
        let mut php = def("php");
        php.env.insert("NEW".into(), "1".into());
        let remote = b.backends[1].def.clone();
        b.prepare_reload(&[php, remote]).unwrap();
        b.finish_reload();
        b
    }

    /// `changed`, its processes busy, after the first `restart_idle`: both closed, waiting.
    fn closed_while_busy(t0: Instant) -> (Backends, FakeGate) {
        let mut b = changed(t0);
        let gate = FakeGate::new();
        gate.busy.set(true);
        b.restart_idle(t0, &gate);
        assert_eq!(gate.take_log(), ["close 0", "close 1"]);
        (b, gate)
    }

    fn state(b: &Backends, i: usize) -> Restart {
        b.backends[0].procs[i].restart
    }

    #[test]
    fn a_restart_closes_the_gate_until_the_process_was_reaped() {
        let t0 = Instant::now();
        assert!(changed(t0).restarts_pending());
        // Busy: closed, not stopped.
        let (mut b, gate) = closed_while_busy(t0);
        assert!(matches!(
            state(&b, 0),
            Restart::Waiting {
                closed: Some((0, _))
            }
        ));
        gate.busy.set(false);
        b.restart_idle(t0, &gate);
        assert_eq!(gate.take_log(), ["close 0", "close 1"]);
        assert!(matches!(
            state(&b, 0),
            Restart::Stopping {
                closed: Some(0),
                ..
            }
        ));
        // Still running: the gate stays shut, nothing more is asked.
        b.restart_idle(t0, &gate);
        assert!(gate.take_log().is_empty());
        let p0 = Pid::from_raw(2_000_000_000);
        assert!(b.on_exit(p0, &WaitStatus::Signaled(p0, Signal::SIGTERM, false), t0));
        // Our own stop: respawned at once, not counted as a crash.
        assert_eq!(b.backends[0].procs[0].respawn_at, Some(t0));
        assert_eq!(b.backends[0].procs[0].crashes, 0);
        b.restart_idle(t0, &gate);
        assert_eq!(gate.take_log(), ["open 0"]);
        assert_eq!(state(&b, 0), Restart::None);
        assert!(b.restarts_pending(), "proc 1 has not exited yet");
        // Proc 1 ignores SIGTERM: SIGKILL after the grace, and the gate stays shut.
        b.restart_idle(t0 + STOP_GRACE, &gate);
        assert!(matches!(
            state(&b, 1),
            Restart::Stopping {
                closed: Some(1),
                ..
            }
        ));
        assert!(gate.take_log().is_empty());
        let p1 = Pid::from_raw(2_000_000_001);
        assert!(b.on_exit(p1, &WaitStatus::Signaled(p1, Signal::SIGKILL, false), t0));
        b.restart_idle(t0 + STOP_GRACE, &gate);
        assert_eq!(gate.take_log(), ["open 1"]);
        assert!(!b.restarts_pending());
    }

    #[test]
    fn a_busy_process_is_restarted_at_its_deadline_and_a_dead_one_opens() {
        let t0 = Instant::now();
        let (b, gate) = closed_while_busy(t0);
        assert!(matches!(state(&b, 0), Restart::Waiting { .. }));
        // `def`'s read_timeout is 1 s, counted from the closing (at t1), not from the reload.
        let t1 = t0 + Duration::from_secs(5);
        let stopped_only_at_the_deadline = |b: &mut Backends| {
            b.restart_idle(t1, &gate);
            b.restart_idle(t1 + Duration::from_millis(900), &gate);
            assert!(matches!(state(b, 0), Restart::Waiting { .. }));
            b.restart_idle(t1 + Duration::from_millis(1000), &gate);
            assert!(matches!(state(b, 0), Restart::Stopping { .. }));
        };
        stopped_only_at_the_deadline(&mut changed(t0));
        // Opened while a reload ran: closed again later, with a new deadline.
        let mut reopened = changed(t0);
        reopened.restart_idle(t0, &gate);
        gate.settled.set(false);
        reopened.restart_idle(t0, &gate);
        gate.settled.set(true);
        stopped_only_at_the_deadline(&mut reopened);
        // A process that died by itself while waiting: its slot opens, its respawn is normal.
        let mut b = changed(t0);
        b.restart_idle(t0, &gate);
        gate.take_log();
        let p0 = Pid::from_raw(2_000_000_000);
        assert!(b.on_exit(p0, &WaitStatus::Exited(p0, 0), t0));
        b.restart_idle(t0, &gate);
        assert_eq!(gate.take_log(), ["open 0", "close 1"]);
        assert_eq!(state(&b, 0), Restart::None);
    }

    #[test]
    fn a_reload_under_way_opens_the_gate_and_the_slot_closed_is_the_slot_opened() {
        let t0 = Instant::now();
        let (mut b, gate) = closed_while_busy(t0);
        // Another reload starts: workers of two layouts may run, so nothing stays closed and
        // nothing is stopped, however idle.
        gate.settled.set(false);
        gate.busy.set(false);
        b.restart_idle(t0, &gate);
        assert_eq!(gate.take_log(), ["open 0", "open 1"]);
        assert!(matches!(state(&b, 0), Restart::Waiting { closed: None }));
        b.restart_idle(t0, &gate);
        assert!(gate.take_log().is_empty());
        // It renumbered the slots (a backend added before "php"): closed at the new ones.
        gate.settled.set(true);
        gate.base.set(5);
        gate.busy.set(true);
        b.restart_idle(t0, &gate);
        assert_eq!(gate.take_log(), ["close 5", "close 6"]);
        // Renumbered again while closed: the old slot opens, the new one closes.
        gate.base.set(7);
        b.restart_idle(t0, &gate);
        assert_eq!(gate.take_log(), ["open 5", "close 7", "open 6", "close 8"]);
        gate.busy.set(false);
        b.restart_idle(t0, &gate);
        assert_eq!(gate.take_log(), ["close 7", "close 8"]);
        // Stopping at slot 7, renumbered by yet another reload: closed at its new slot too,
        // and both open once it was reaped.
        gate.base.set(0);
        gate.settled.set(false);
        b.restart_idle(t0, &gate);
        assert_eq!(gate.take_log(), ["close 0", "close 1"]);
        b.restart_idle(t0, &gate);
        assert!(gate.take_log().is_empty(), "closed there once");
        let p0 = Pid::from_raw(2_000_000_000);
        assert!(b.on_exit(p0, &WaitStatus::Signaled(p0, Signal::SIGTERM, false), t0));
        b.restart_idle(t0, &gate);
        assert_eq!(gate.take_log(), ["open 7", "open 0"]);
    }

    #[test]
    fn a_backend_dropped_while_its_restart_waits_opens_its_slot() {
        let t0 = Instant::now();
        let (mut b, gate) = closed_while_busy(t0);
        let remote = b.backends[1].def.clone();
        b.prepare_reload(&[remote]).unwrap();
        b.finish_reload();
        // Its processes are stopped as a dropped backend's (SIGTERM, never respawned); its
        // slots, which a backend of that name configured again would use, open.
        b.restart_idle(t0, &gate);
        assert_eq!(gate.take_log(), ["open 0", "open 1"]);
        assert!(!b.restarts_pending());
    }

    #[test]
    fn addresses_for_workers() {
        let b = fake(Instant::now());
        assert_eq!(
            b.addresses("php"),
            vec![
                ListenAddr::Unix("/nonexistent/php.sock-0".into()),
                ListenAddr::Unix("/nonexistent/php.sock-1".into()),
            ]
        );
        assert_eq!(
            b.addresses("remote"),
            vec![ListenAddr::Tcp("10.0.0.1:9000".parse().unwrap())]
        );
        assert!(b.addresses("nope").is_empty());
    }
}
