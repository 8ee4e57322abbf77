//! Active health checks of HTTP upstreams (`health = { path, interval, fails, passes }`), run
//! by the watcher, not by each worker, so an upstream sees one check per interval whatever the
//! number of workers. The verdict goes into the address's scoreboard proc slot
//! (`PROXY_UNHEALTHY`), which every worker reads before it picks an address.
//!
//! No thread: each check is a non-blocking socket the watcher's loop steps on every wake-up
//! (`Health::step`); while a check is under way the loop wakes every [`STEP`].
//!
//! ```text
//! Waiting(next) → Connecting(stream) → Sent(stream, response bytes) → verdict → Waiting
//! ```
//! A 2xx or 3xx status line within the timeout passes; anything else fails. `fails` failures
//! in a row take the address out, `passes` passes in a row bring it back.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::admin::scoreboard::{ProcIndex, Scoreboard, PROXY_UNHEALTHY};
use crate::config::{Config, Health as HealthDef};
use crate::proxy::pool::addr_text;
use crate::proxy::response;
use crate::transport::Stream;

/// How often a check under way is stepped.
pub const STEP: Duration = Duration::from_millis(20);
/// Longest time one check may take.
const MAX_CHECK: Duration = Duration::from_secs(5);

enum Phase {
    Waiting(Instant),
    Connecting(Stream, Instant),
    Sent(Stream, Vec<u8>, Instant),
}

struct Check {
    upstream: usize,
    addr: usize,
    target: crate::config::ListenAddr,
    text: String,
    host: String,
    def: HealthDef,
    phase: Phase,
    fails: u32,
    passes: u32,
    healthy: bool,
}

/// Every address of every upstream that has `health`.
pub struct Health {
    checks: Vec<Check>,
    index: ProcIndex,
}

impl Health {
    /// The checks of `config`, the first due at once.
    pub fn new(config: &Config, now: Instant) -> Health {
        let mut checks = Vec::new();
        for (u, def) in config.upstreams.iter().enumerate() {
            let Some(h) = &def.health else { continue };
            for (a, addr) in def.address.iter().enumerate() {
                let text = addr_text(&addr.addr);
                let host = match &addr.addr {
                    crate::config::ListenAddr::Tcp(s) => s.to_string(),
                    crate::config::ListenAddr::Unix(_) => "localhost".to_string(),
                };
                checks.push(Check {
                    upstream: u,
                    addr: a,
                    target: addr.addr.clone(),
                    text,
                    host,
                    def: h.clone(),
                    phase: Phase::Waiting(now),
                    fails: 0,
                    passes: 0,
                    healthy: true,
                });
            }
        }
        Health {
            checks,
            index: crate::proxy::pool::proc_index(config),
        }
    }

    /// When the loop must wake for the checks next.
    pub fn next_wakeup(&self, now: Instant) -> Option<Instant> {
        self.checks
            .iter()
            .map(|c| match c.phase {
                Phase::Waiting(at) => at,
                _ => now + STEP,
            })
            .min()
    }

    /// Before the watcher forks a worker: checks under way drop their sockets (and start
    /// again on the next step, with no verdict), so no worker inherits one.
    pub fn before_fork(&mut self, now: Instant) {
        for c in &mut self.checks {
            if !matches!(c.phase, Phase::Waiting(_)) {
                c.phase = Phase::Waiting(now);
            }
        }
    }

    /// Steps every check; verdicts go to `board`.
    pub fn step(&mut self, now: Instant, board: &Scoreboard) {
        for c in &mut self.checks {
            if let Some(pass) = c.step(now) {
                c.verdict(pass);
                if let Some(slot) = self
                    .index
                    .index(c.upstream, c.addr)
                    .and_then(|i| board.proc(i))
                {
                    slot.set_flag(PROXY_UNHEALTHY, !c.healthy);
                }
            }
        }
    }
}

impl Check {
    fn timeout(&self) -> Duration {
        self.def.interval.min(MAX_CHECK)
    }

    /// Moves the check on; Some(verdict) when one check ended.
    fn step(&mut self, now: Instant) -> Option<bool> {
        match std::mem::replace(&mut self.phase, Phase::Waiting(now)) {
            Phase::Waiting(at) if now < at => {
                self.phase = Phase::Waiting(at);
                None
            }
            Phase::Waiting(_) => match Stream::connect(&self.target) {
                Ok(s) => {
                    self.phase = Phase::Connecting(s, now + self.timeout());
                    None
                }
                Err(_) => self.end(now, false),
            },
            Phase::Connecting(mut s, deadline) => match s.connected() {
                Ok(()) => {
                    let req = format!(
                        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: luahttpd-health\r\nConnection: close\r\n\r\n",
                        self.def.path, self.host
                    );
                    // One small write on a fresh socket: it fits the send buffer.
                    match s.write(req.as_bytes()) {
                        Ok(n) if n == req.len() => {
                            self.phase = Phase::Sent(s, Vec::new(), deadline);
                            None
                        }
                        _ => self.end(now, false),
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotConnected && now < deadline => {
                    self.phase = Phase::Connecting(s, deadline);
                    None
                }
                Err(_) => self.end(now, false),
            },
            Phase::Sent(mut s, mut buf, deadline) => {
                let mut tmp = [0u8; 1024];
                loop {
                    match s.read(&mut tmp) {
                        Ok(0) => return self.judge(now, &buf, true),
                        Ok(n) => {
                            buf.extend_from_slice(&tmp[..n]);
                            if let Some(v) = self.judge(now, &buf, false) {
                                return Some(v);
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => return self.end(now, false),
                    }
                }
                if now >= deadline {
                    return self.end(now, false);
                }
                self.phase = Phase::Sent(s, buf, deadline);
                None
            }
        }
    }

    /// A verdict from the response bytes so far: the status of a complete head.
    fn judge(&mut self, now: Instant, buf: &[u8], eof: bool) -> Option<bool> {
        match response::parse(buf, 16 * 1024, true) {
            Ok(Some(h)) if h.is_interim() => {
                // Skip a 1xx and judge what follows.
                let rest = buf[h.head_len..].to_vec();
                self.judge(now, &rest, eof)
            }
            Ok(Some(h)) => self.end(now, (200..400).contains(&h.status)),
            Ok(None) if !eof => None,
            _ => self.end(now, false),
        }
    }

    fn end(&mut self, now: Instant, pass: bool) -> Option<bool> {
        self.phase = Phase::Waiting(now + self.def.interval);
        Some(pass)
    }

    fn verdict(&mut self, pass: bool) {
        if pass {
            self.fails = 0;
            self.passes += 1;
            if !self.healthy && self.passes >= self.def.passes {
                self.healthy = true;
                tracing::info!(
                    "upstream address {}: health check passes; back in",
                    self.text
                );
            }
        } else {
            self.passes = 0;
            self.fails += 1;
            if self.healthy && self.fails >= self.def.fails {
                self.healthy = false;
                tracing::warn!(
                    "upstream address {}: {} health checks failed; taken out",
                    self.text,
                    self.fails
                );
            }
        }
    }
}
