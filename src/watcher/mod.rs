//! The watcher: binds the listeners, forks the workers, and supervises them.
//!
//! It is single-threaded and never blocks in wait(): SIGCHLD and every other signal arrive
//! through a signalfd in its mio loop. No thread exists when it forks, so a child may run any
//! code after fork (the Lua state and config are inherited as they are). It runs no admin Lua:
//! REPL chunks run in a forked admin evaluator (`admin_proc.rs`), which it kills when a chunk
//! overruns its time limit.

mod activation;
mod admin_proc;
mod admin_view;
mod config_check;
pub mod control;
mod daemon;
mod health;
mod listeners;
mod notify;
mod pidfile;
mod privileges;
mod proc_slots;
mod reload;
mod signals;
mod upstream_view;

use crate::admin::scoreboard::{now_ms, Scoreboard, Totals};
use crate::admin::server::{self as admin, AdminServer};
use crate::config::{Config, Loaded};
use crate::fastcgi::pool;
use crate::fastcgi::spawn::{backoff, Backends};
use crate::log::{AccessLog, ErrorLog, LogFile};
use crate::script::{Router, RouterLimits};
use crate::static_files::Site;
use crate::worker::{self, WorkerSetup};
use daemon::Readiness;
use listeners::Bound;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::{kill, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use pidfile::PidFile;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

const SIGNAL: Token = Token(0);
/// How long workers get to exit after an immediate stop before they are killed.
const FAST_STOP: Duration = Duration::from_secs(5);
/// How long the watcher waits at exit for admin answers still in the works (the answer to the
/// `shutdown()` that stopped it, say).
const ADMIN_LINGER: Duration = Duration::from_secs(2);

/// How the server is to run, from the command line.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// `--daemon` (or `daemon = true` in the config).
    pub daemon: bool,
}

#[derive(Debug)]
struct WorkerSlot {
    pid: Option<Pid>,
    started: Instant,
    crashes: u32,
    respawn_at: Option<Instant>,
    /// The generation (1, then one more per reload) this worker belongs to.
    generation: u32,
    /// Its slot in the shared scoreboard.
    board_slot: usize,
    /// How often this slot's worker was respawned.
    respawns: u32,
}

/// Worker slots in the scoreboard: room for a generation starting while the old one drains.
fn board_capacity(workers: usize) -> usize {
    (workers * 2).max(16)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// Graceful stop: workers finish in-flight requests until the deadline.
    Draining(Instant),
    /// Immediate stop: workers were told to exit at once.
    Stopping(Instant),
}

struct Watcher {
    loaded: Loaded,
    poll: Poll,
    signals: SignalFd,
    bound: Vec<Bound>,
    error_log: ErrorLog,
    access_log: Option<LogFile>,
    slots: Vec<WorkerSlot>,
    phase: Phase,
    pid_file: Option<PidFile>,
    /// The daemon's readiness pipe, open while start-up runs; workers close their copy.
    readiness_fd: Option<RawFd>,
    /// Spawned FastCGI processes.
    backends: Backends,
    /// When the backends were told to stop (after the workers drained).
    backends_stopping: Option<Instant>,
    /// The shared scoreboard.
    board: Rc<Scoreboard>,
    /// Counters of workers that have exited.
    retired: Totals,
    /// The current generation.
    generation: u32,
    /// Workers of older generations, draining after a reload (never respawned).
    old: Vec<WorkerSlot>,
    /// A reload whose new generation has not been confirmed running yet.
    pending_reload: Option<reload::Pending>,
    /// A reload whose config file is being evaluated by a forked checker.
    reload_check: Option<config_check::ConfigCheck>,
    /// The outcome of the last reload: when, and the error if it failed.
    last_reload: Option<(std::time::SystemTime, Result<(), String>)>,
    /// The admin socket, when configured.
    admin: Option<AdminServer>,
    /// When the watcher started.
    started_at: Instant,
    /// A confirmed reload changed FastCGI backends: apply once the old generation is gone.
    backends_after_drain: bool,
    /// Active health checks of the HTTP upstreams.
    health: health::Health,
    /// Admin chunks waiting in `reload()` for the outcome of the reload under way.
    reload_waiters: Vec<u64>,
    /// The chunks the last reload outcome was for (until their answer is sent to them).
    reload_answered: Vec<u64>,
    /// Everything has stopped; admin answers still in the works get until then.
    exit_at: Option<Instant>,
    /// systemd's notify socket, when `NOTIFY_SOCKET` was set.
    notify: Option<notify::Notifier>,
    /// Each live worker's channel for reopened log files (src/log_handoff.rs), by pid.
    log_channels: std::collections::HashMap<Pid, std::os::fd::OwnedFd>,
    /// Whether systemd still waits for the start's READY=1 (sent once the scoreboard shows
    /// every worker past "starting", see notify.rs).
    ready: notify::Ready,
}

/// Runs the server described by `loaded` until it is stopped; returns the exit code.
pub fn serve(loaded: Loaded, opts: RunOptions) -> i32 {
    let mut readiness = if opts.daemon || loaded.config.daemon {
        // Never detach into silence (the CLI and the config check this first, too).
        if let Some(why) = crate::config::daemon_problem(&loaded.config) {
            eprintln!("luahttpd: {why}");
            return 1;
        }
        match daemon::detach() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("luahttpd: {e}");
                return 1;
            }
        }
    } else {
        Readiness::none()
    };
    let mut watcher = match Watcher::start(loaded, readiness.raw_fd()) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("luahttpd: {e}");
            readiness.failed(&e);
            return 1;
        }
    };
    readiness.ready();
    // Closed now: respawned workers must not close whatever reuses the number.
    watcher.readiness_fd = None;
    let code = watcher.run();
    watcher.cleanup();
    code
}

impl Watcher {
    fn start(loaded: Loaded, readiness_fd: Option<RawFd>) -> Result<Watcher, String> {
        let config = &loaded.config;
        privileges::check_start(config)?;
        let signals = signals::install().map_err(|e| format!("signals: {e}"))?;
        let error_log = ErrorLog::open(&config.error_log, readiness_fd.is_some())
            .map_err(|e| format!("error log: {e}"))?;
        let access_log = match &config.access_log {
            Some(p) => Some(LogFile::open(p).map_err(|e| format!("access log: {e}"))?),
            None => None,
        };
        // Open the root once here so a problem is reported at start, not by every worker.
        let mut check = config.clone();
        check.root = privileges::outside_root(config);
        Site::new(&check).map_err(|e| format!("root {}: {e}", check.root.display()))?;
        if !crate::beneath::has_openat2() {
            tracing::info!(
                "this kernel refuses openat2 (Linux 5.6 or later has it, unless a seccomp filter \
                 is against it): paths beneath the root are resolved one component at a time \
                 instead, with the same rules"
            );
        }
        let bound = listeners::bind_or_take(&config.listen, activation::take())?;
        let poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
        poll.registry()
            .register(
                &mut SourceFd(&signals.as_raw_fd()),
                SIGNAL,
                Interest::READABLE,
            )
            .map_err(|e| format!("poll: {e}"))?;
        // Everything that can fail without leaving anything behind comes before the backends
        // and the pid file, which a failure must undo.
        let admin = match &config.admin {
            Some(path) => Some(AdminServer::bind(path, poll.registry())?),
            None => None,
        };
        // Backends first: up before a request can need them, and no worker inherits theirs.
        let mut backends = match Backends::start(&config.fastcgi) {
            Ok(b) => b,
            Err(e) => {
                if let Some(a) = &admin {
                    a.remove_socket();
                }
                return Err(e);
            }
        };
        let pid_file = match config.pid_file.as_deref().map(PidFile::create).transpose() {
            Ok(p) => p,
            Err(e) => {
                backends.stop();
                backends.cleanup();
                if let Some(a) = &admin {
                    a.remove_socket();
                }
                return Err(e);
            }
        };
        let now = Instant::now();
        // Shared dicts are mapped before any fork, so every process shares them.
        crate::shared::map_config(&config.shared)?;
        let board = Scoreboard::new(
            board_capacity(config.workers),
            // FastCGI addresses, then the HTTP upstreams' (after them in the same layout).
            pool::proc_index(config)
                .total()
                .max(crate::proxy::pool::proc_index(config).end())
                + upstream_view::UPSTREAM_SPARE_SLOTS,
        )
        .map_err(|e| format!("scoreboard: {e}"))?;
        let slots = (0..config.workers)
            .map(|i| WorkerSlot {
                pid: None,
                started: now,
                crashes: 0,
                respawn_at: Some(now),
                generation: 1,
                board_slot: i,
                respawns: 0,
            })
            .collect();
        let health = health::Health::new(config, now);
        let mut w = Watcher {
            loaded,
            poll,
            signals,
            bound,
            error_log,
            access_log,
            slots,
            phase: Phase::Running,
            pid_file,
            readiness_fd,
            backends,
            backends_stopping: None,
            board: Rc::new(board),
            retired: Totals::default(),
            generation: 1,
            old: Vec::new(),
            pending_reload: None,
            reload_check: None,
            last_reload: None,
            admin,
            started_at: now,
            backends_after_drain: false,
            health,
            reload_waiters: Vec::new(),
            reload_answered: Vec::new(),
            exit_at: None,
            log_channels: std::collections::HashMap::new(),
            notify: notify::Notifier::from_env(),
            ready: notify::Ready::Waiting,
        };
        for i in 0..w.slots.len() {
            if let Err(e) = w.spawn(i) {
                // Undo the start: workers already forked, backends, pid file, sockets.
                w.signal_workers(Signal::SIGKILL);
                w.backends.stop();
                w.cleanup();
                return Err(e);
            }
        }
        // Logged once every worker runs: scripts and tests take this line as "ready".
        for b in &w.bound {
            tracing::info!("listening on {}", b.bound_addr());
        }
        tracing::info!(
            "luahttpd {} started: pid {}, {} workers, root {}",
            env!("CARGO_PKG_VERSION"),
            std::process::id(),
            w.slots.len(),
            w.loaded.config.root.display()
        );
        if w.loaded.config.tls.server.is_some() {
            crate::tls::ktls::log_once(w.loaded.config.tls.ktls);
        }
        Ok(w)
    }

    /// Tells systemd (when it asked) that workers run, with the generation and worker count.
    fn notify_ready(&self) {
        self.notify_send(&format!(
            "READY=1\nSTATUS=generation {}, {} workers\n",
            self.generation,
            self.slots.len()
        ));
    }

    fn notify_send(&self, msg: &str) {
        if let Some(n) = &self.notify {
            n.send(msg);
        }
    }

    fn config(&self) -> &Config {
        &self.loaded.config
    }

    /// Forks the worker for slot `i`.
    fn spawn(&mut self, i: usize) -> Result<(), String> {
        let watcher_pid = nix::unistd::getpid();
        let (ours, theirs) =
            crate::log_handoff::channel().map_err(|e| format!("log channel: {e}"))?;
        // A health check's socket would outlive the check in the child: start those again.
        self.health.before_fork(Instant::now());
        // Claimed before the fork, so that the slot reads "starting" until the worker runs.
        if let Some(s) = self.board.worker(self.slots[i].board_slot) {
            s.claim(0, self.slots[i].generation, now_ms());
        }
        // SAFETY: the watcher never starts a thread, so the child is a complete copy of a
        // single-threaded process and may run any code.
        match unsafe { fork() } {
            Ok(ForkResult::Parent { child }) => {
                drop(theirs);
                self.log_channels.insert(child, ours);
                let slot = &mut self.slots[i];
                slot.pid = Some(child);
                slot.started = Instant::now();
                slot.respawn_at = None;
                Ok(())
            }
            Ok(ForkResult::Child) => {
                drop(ours);
                self.log_channels.clear();
                crate::log_handoff::install_receiver(theirs);
                self.notify = None;
                let code = self.become_worker(watcher_pid, i);
                std::process::exit(code);
            }
            Err(e) => Err(format!("fork: {e}")),
        }
    }

    /// The child side of `spawn`: never returns to the watcher's loop.
    fn become_worker(&mut self, watcher_pid: Pid, index: usize) -> i32 {
        // Die with the watcher, whatever kills it. SIGKILL, not SIGTERM: a worker that is
        // wedged (busy in a loop, never back in poll) would never read a SIGTERM from its
        // signalfd, and an orphaned worker must not outlive the server.
        // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and touches no memory.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        }
        if nix::unistd::getppid() != watcher_pid {
            return 0;
        }
        // The watcher's epoll and signalfd are of no use here.
        let _ = nix::unistd::close(self.poll.as_raw_fd());
        let _ = nix::unistd::close(self.signals.as_raw_fd());
        if let Some(fd) = self.readiness_fd {
            let _ = nix::unistd::close(fd);
        }
        if let Some(c) = &self.reload_check {
            let _ = nix::unistd::close(c.raw_fd());
        }
        if let Some(admin) = &self.admin {
            for fd in admin.raw_fds() {
                let _ = nix::unistd::close(fd);
            }
        }
        self.backends.close_in_child();
        let bound = std::mem::take(&mut self.bound);
        let proxied = (bound.iter())
            .map(|b| self.loaded.config.ops.proxy_protocol.contains(&b.addr))
            .collect();
        let listeners = match bound.into_iter().map(Bound::into_listener).collect() {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("worker: listeners: {e}");
                return 1;
            }
        };
        // fs.read's relative paths: beneath the config's folder, even inside a jail.
        crate::script::remember_config_dir(&self.loaded.config.file);
        // Everything outside is open: into the jail and down to the configured user.
        let config = &mut self.loaded.config;
        if let Err(e) = privileges::enter(config.user.as_ref(), config.chroot.as_deref()) {
            tracing::error!("worker: {e}");
            return 1;
        }
        if nix::unistd::getppid() != watcher_pid {
            return 0;
        }
        privileges::paths_inside(config);
        let site = match Site::new(&self.loaded.config) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("worker: root: {e}");
                return 1;
            }
        };
        let access_log = self.access_log.take().map(AccessLog::new);
        if self.loaded.route.is_none() {
            // A respond_hook needs a Router even without route(fn).
            self.loaded.route = crate::script::hook_only_route(&self.loaded.lua);
        }
        let router = match &self.loaded.route {
            Some(key) => {
                let names: Vec<String> = self
                    .loaded
                    .config
                    .shared
                    .iter()
                    .map(|d| d.name.clone())
                    .collect();
                if let Err(e) = crate::shared::lua_api::publish(&self.loaded.lua, &names) {
                    tracing::error!("worker: shared dicts: {e}");
                    return 1;
                }
                let names = self.loaded.config.fastcgi.iter().map(|d| d.name.clone());
                match Router::new(&self.loaded.lua, key, names, RouterLimits::default()) {
                    Ok(mut r) => {
                        r.set_upstreams(
                            self.loaded.config.upstreams.iter().map(|u| u.name.clone()),
                        );
                        Some(r)
                    }
                    Err(e) => {
                        tracing::error!("worker: route function: {e}");
                        return 1;
                    }
                }
            }
            None => None,
        };
        worker::run(WorkerSetup {
            config: &self.loaded.config,
            listeners,
            proxied,
            error_log: &self.error_log,
            access_log,
            site,
            index,
            router,
            board: Some((
                self.board.clone(),
                self.slots[index].board_slot,
                self.slots[index].generation,
            )),
        })
    }

    fn run(&mut self) -> i32 {
        let mut events = Events::with_capacity(16);
        loop {
            let now = Instant::now();
            let timeout = self.next_wakeup().map(|t| t.saturating_duration_since(now));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    tracing::error!("poll: {e}");
                    return 1;
                }
            }
            for event in events.iter() {
                match event.token() {
                    SIGNAL => self.on_signals(),
                    admin::LISTENER => {
                        if let Some(a) = &mut self.admin {
                            a.accept(self.poll.registry());
                        }
                    }
                    admin::EVALUATOR => self.on_evaluator(),
                    config_check::TOKEN => {
                        if let Some(c) = &mut self.reload_check {
                            c.on_readable();
                        }
                    }
                    Token(t) if t >= admin::CLIENT_BASE => {
                        if let Some(a) = &mut self.admin {
                            a.client_ready(t - admin::CLIENT_BASE);
                        }
                    }
                    _ => {}
                }
            }
            self.reap();
            self.finish_reload_check(Instant::now());
            self.board.publish(&self.retired, self.generation);
            self.announce_ready_once_running();
            self.health.step(Instant::now(), &self.board);
            self.finish_backends_if_drained();
            if let Some(a) = &mut self.admin {
                a.expire(Instant::now());
            }
            self.check_reload(Instant::now());
            self.pump_admin();
            let now = Instant::now();
            // php-cgi exits on purpose after PHP_FCGI_MAX_REQUESTS, draining or not.
            if self.backends_stopping.is_none() {
                self.restart_idle_backends(now);
                self.backends.respawn_due(now);
            }
            match self.phase {
                Phase::Running => self.respawn_due(now),
                Phase::Draining(deadline) | Phase::Stopping(deadline) => {
                    if self.live_workers() == 0 {
                        // Backends go only after the workers that use them have drained.
                        match self.backends_stopping {
                            None if self.backends.live() > 0 => {
                                self.backends.stop();
                                self.backends_stopping = Some(now + FAST_STOP);
                            }
                            Some(t) if self.backends.live() > 0 && now >= t => {
                                tracing::warn!("FastCGI processes still running; killing them");
                                self.backends.signal(Signal::SIGKILL);
                                self.backends_stopping = Some(now + FAST_STOP);
                            }
                            _ if self.backends.live() == 0 => {
                                // The answer to the shutdown() that stopped us, say.
                                let exit_at = *self.exit_at.get_or_insert(now + ADMIN_LINGER);
                                let admin_busy = self.admin.as_ref().is_some_and(|a| a.busy());
                                if !admin_busy || now >= exit_at {
                                    tracing::info!("all workers have exited; stopping");
                                    return 0;
                                }
                            }
                            _ => {}
                        }
                    } else if now >= deadline {
                        tracing::warn!("workers still running at the deadline; killing them");
                        self.signal_workers(Signal::SIGKILL);
                        // Keep reaping until they are gone.
                        self.phase = Phase::Stopping(now + FAST_STOP);
                    }
                }
            }
        }
    }

    fn next_wakeup(&self) -> Option<Instant> {
        let own = match self.phase {
            Phase::Running => self.slots.iter().filter_map(|s| s.respawn_at).min(),
            Phase::Draining(d) | Phase::Stopping(d) => Some(d),
        };
        // Admin clients' idle time and a reload's confirmation are checked by polling.
        let poll_soon = if self.pending_reload.is_some()
            || self.backends.restarts_pending()
            || self.ready == notify::Ready::Waiting
        {
            Some(Instant::now() + Duration::from_millis(50))
        } else if self.admin.as_ref().is_some_and(AdminServer::has_clients) {
            Some(Instant::now() + Duration::from_secs(1))
        } else {
            None
        };
        [
            own,
            self.backends.next_respawn(),
            self.backends_stopping,
            poll_soon,
            self.reload_check.as_ref().and_then(|c| c.deadline()),
            self.admin.as_ref().and_then(AdminServer::deadline),
            self.exit_at,
            self.health.next_wakeup(Instant::now()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn live_workers(&self) -> usize {
        self.slots
            .iter()
            .chain(&self.old)
            .filter(|s| s.pid.is_some())
            .count()
    }

    fn on_signals(&mut self) {
        loop {
            let sig = match self.signals.read_signal() {
                Ok(Some(info)) => Signal::try_from(info.ssi_signo as i32),
                Ok(None) => return,
                Err(e) => {
                    tracing::error!("signalfd: {e}");
                    return;
                }
            };
            match (sig, self.phase) {
                (Ok(Signal::SIGCHLD), _) => {}
                (Ok(Signal::SIGINT), Phase::Running) | (Ok(Signal::SIGQUIT), Phase::Running) => {
                    self.graceful_stop()
                }
                (Ok(Signal::SIGINT), _) | (Ok(Signal::SIGTERM), _) => self.fast_stop(),
                (Ok(Signal::SIGHUP), _) => self.reopen_logs(),
                (Ok(Signal::SIGUSR1), Phase::Running) => {
                    let result = self.reload_from_file();
                    if let Err(e) = result {
                        tracing::error!("{e}");
                    }
                }
                _ => {}
            }
        }
    }

    fn graceful_stop(&mut self) {
        let grace = self.config().timeouts.graceful;
        self.graceful_stop_within(grace);
    }

    fn graceful_stop_within(&mut self, grace: Duration) {
        self.notify_send("STOPPING=1\nSTATUS=stopping (graceful)\n");
        self.abort_reload();
        tracing::info!(
            "graceful stop: workers finish in-flight requests (at most {:?})",
            grace
        );
        self.phase = Phase::Draining(Instant::now() + grace);
        // The backends keep serving the drain (each is in its own process group, so a
        // terminal's Ctrl-C does not reach it); one that exits now (PHP_FCGI_MAX_REQUESTS)
        // is respawned, as requests already accepted need it.
        self.backends.draining();
        // Close our copies of the listeners: once the workers close theirs, new connections
        // are refused instead of waiting in a queue nobody will serve.
        self.close_listeners();
        self.signal_workers(Signal::SIGQUIT);
    }

    fn fast_stop(&mut self) {
        if matches!(self.phase, Phase::Stopping(_)) {
            return;
        }
        tracing::info!("immediate stop");
        self.notify_send("STOPPING=1\nSTATUS=stopping (immediate)\n");
        self.abort_reload();
        self.backends.stop();
        self.backends_stopping = Some(Instant::now() + FAST_STOP);
        self.phase = Phase::Stopping(Instant::now() + FAST_STOP);
        self.close_listeners();
        self.signal_workers(Signal::SIGTERM);
    }

    fn close_listeners(&mut self) {
        listeners::unlink_unix(&self.bound);
        self.bound.clear();
    }

    fn signal_workers(&self, sig: Signal) {
        for pid in self.slots.iter().chain(&self.old).filter_map(|s| s.pid) {
            let _ = kill(pid, sig);
        }
    }

    fn reopen_logs(&mut self) {
        tracing::info!("reopening log files");
        if let Err(e) = self.error_log.reopen() {
            tracing::error!("reopen error log: {e}");
        }
        if let Some(a) = &self.access_log {
            if let Err(e) = a.reopen() {
                tracing::error!("reopen access log: {e}");
            }
        }
        // Workers get the files from us: they may not be able to open the paths themselves.
        let files: Vec<RawFd> = self
            .error_log
            .file()
            .into_iter()
            .chain(self.access_log.as_ref())
            .map(LogFile::raw_fd)
            .collect();
        for (pid, channel) in &self.log_channels {
            for fd in &files {
                if let Err(e) = crate::log_handoff::send(channel, *fd, *fd) {
                    tracing::error!("reopen: passing a log file to worker {pid}: {e}");
                }
            }
        }
        self.signal_workers(Signal::SIGHUP);
    }

    /// Collects every exited child without blocking. Each is first looked at without being
    /// reaped, so that the shared-dictionary locks and the timer lease it held are given up
    /// while its pid cannot be anyone else's (`shared::release_locks_of`).
    fn reap(&mut self) {
        loop {
            let exited = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
            let pid = match waitid(Id::All, exited) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(s) => match s.pid() {
                    Some(pid) => pid,
                    None => return,
                },
            };
            crate::shared::release_locks_of(pid.as_raw() as u32);
            self.board.give_back_timer_lease(pid.as_raw() as u32);
            let status = match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(s) => s,
            };
            self.log_channels.remove(&pid);
            if let Some(c) = self.reload_check.as_mut().filter(|c| c.pid() == pid) {
                // The config checker is no worker either.
                c.reaped(status);
                continue;
            }
            if let Some(a) = &mut self.admin {
                // The admin evaluator is no worker: its exit never triggers worker logic.
                if a.reaped(self.poll.registry(), pid, &describe_exit(&status)) {
                    continue;
                }
            }
            if let Some(j) = self.old.iter().position(|s| s.pid == Some(pid)) {
                // A worker of an older generation has drained: its slot is free again.
                let old = self.old.remove(j);
                self.board
                    .retire(old.board_slot, &mut self.retired, now_ms());
                tracing::info!(
                    "worker of generation {} (pid {pid}) {}",
                    old.generation,
                    describe_exit(&status)
                );
                continue;
            }
            let Some(i) = self.slots.iter().position(|s| s.pid == Some(pid)) else {
                self.backends.on_exit(pid, &status, Instant::now());
                continue;
            };
            let now = Instant::now();
            if let WaitStatus::Signaled(_, Signal::SIGALRM, _) = status {
                let route = self
                    .loaded
                    .route
                    .as_ref()
                    .and_then(|k| crate::script::route_location(&self.loaded.lua, k));
                log_backstop(
                    i,
                    pid.as_raw(),
                    self.board.worker(self.slots[i].board_slot),
                    route,
                );
            }
            self.board
                .retire(self.slots[i].board_slot, &mut self.retired, now_ms());
            let slot = &mut self.slots[i];
            slot.pid = None;
            if self.phase != Phase::Running {
                continue;
            }
            self.retired.respawns += 1;
            slot.respawns += 1;
            let (crashes, delay) = backoff(now.duration_since(slot.started), slot.crashes);
            slot.crashes = crashes;
            slot.respawn_at = Some(now + delay);
            tracing::warn!(
                "worker {} (pid {}) {}; respawning in {:?}",
                i,
                pid,
                describe_exit(&status),
                delay
            );
        }
    }

    fn respawn_due(&mut self, now: Instant) {
        for i in 0..self.slots.len() {
            if self.slots[i].respawn_at.is_some_and(|t| t <= now) {
                if let Err(e) = self.spawn(i) {
                    tracing::error!("respawn worker {i}: {e}");
                    self.slots[i].respawn_at = Some(now + Duration::from_secs(1));
                }
            }
        }
    }

    fn cleanup(&mut self) {
        listeners::unlink_unix(&self.bound);
        if let Some(a) = &mut self.admin {
            a.cleanup(self.poll.registry());
        }
        self.backends.cleanup();
        if let Some(p) = &self.pid_file {
            p.remove();
        }
    }
}

/// A worker killed by its route backstop (`worker::backstop`): say which request it was in
/// and which route function (`file:line` where it is defined).
fn log_backstop(
    i: usize,
    pid: i32,
    slot: Option<&crate::admin::scoreboard::WorkerSlot>,
    route: Option<String>,
) {
    let req = slot.and_then(|s| s.snapshot(now_ms()).request);
    let what = match req {
        Some(r) => format!(
            "{} {} (host {}, from {}, started {} ms before)",
            r.method, r.path, r.host, r.client, r.elapsed_ms
        ),
        None => "an unknown request".to_string(),
    };
    tracing::error!(
        "worker {i} (pid {pid}) was killed by the route backstop: a call of the route function \
         at {} ran more than its deadline plus {} ms inside code the limits cannot interrupt; \
         request: {what}",
        route.as_deref().unwrap_or("?"),
        crate::worker::backstop::BOUND.as_millis()
    );
}

fn describe_exit(status: &WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exited with status {code}"),
        WaitStatus::Signaled(_, sig, _) => format!("was killed by {sig}"),
        other => format!("stopped ({other:?})"),
    }
}
