//! What the REPL sees of the HTTP upstreams (`backends()` rows) and `drain`/`enable`, which
//! set an address's drained flag in its scoreboard proc slot: every worker reads it before it
//! picks an address, so no reload is needed (HAProxy's runtime API has this; nginx does not).

use super::Watcher;
use crate::admin::scoreboard::{now_ms, PROXY_DRAINED, PROXY_UNHEALTHY};
use crate::proxy::pool::{addr_text, proc_index};
use serde_json::{json, Value};

/// Scoreboard proc slots mapped beyond the start config's needs, so FastCGI and HTTP upstream
/// addresses a reload adds have counters (and upstreams their flags) too (64 bytes each).
pub const UPSTREAM_SPARE_SLOTS: usize = 256;

impl Watcher {
    /// After the config changed (a reload, or its revert): slots that now stand for another
    /// address are reset (`proc_slots.rs`); when the upstreams or where their slots start
    /// differ from `before`'s, the health checks start over for the current ones and every
    /// upstream slot's drained and unhealthy flags are cleared. The scoreboard keeps
    /// [`UPSTREAM_SPARE_SLOTS`] spare slots for addresses a reload adds.
    pub(super) fn upstreams_reloaded(&mut self, before: &crate::config::Config) {
        self.reset_moved_slots(before);
        let base = crate::fastcgi::pool::proc_index(self.config()).end();
        let same = before.upstreams.len() == self.config().upstreams.len()
            && crate::fastcgi::pool::proc_index(before).end() == base
            && before
                .upstreams
                .iter()
                .zip(&self.config().upstreams)
                .all(|(a, b)| a.name == b.name && a.address == b.address && a.health == b.health);
        if same {
            return;
        }
        for i in base..self.board.proc_capacity() {
            if let Some(p) = self.board.proc(i) {
                p.set_flag(PROXY_DRAINED | PROXY_UNHEALTHY, false);
            }
        }
        self.health = super::health::Health::new(self.config(), std::time::Instant::now());
        tracing::info!("reload: upstreams changed; drains cleared, health checks start over");
    }

    /// One `backends()` row per upstream address.
    pub(super) fn upstream_rows(&self) -> Vec<Value> {
        let now = now_ms();
        let config = self.config();
        let index = proc_index(config);
        let mut rows = Vec::new();
        for (u, def) in config.upstreams.iter().enumerate() {
            for (a, addr) in def.address.iter().enumerate() {
                let snap = index
                    .index(u, a)
                    .and_then(|i| self.board.proc_snapshot(i, now));
                let flags = snap.as_ref().map_or(0, |s| s.flags);
                let disabled = snap.as_ref().map_or(0, |s| s.disabled_for_ms);
                let state = crate::status_page::upstream_state(flags, disabled);
                let health = match (&def.health, flags & PROXY_UNHEALTHY != 0) {
                    (None, _) => "-",
                    (Some(_), true) => "failing",
                    (Some(_), false) => "passing",
                };
                rows.push(json!({
                    "name": def.name,
                    "kind": "upstream",
                    "state": state,
                    "address": addr_text(&addr.addr),
                    "weight": addr.weight,
                    "active": snap.as_ref().map_or(0, |s| s.active),
                    "total": snap.as_ref().map_or(0, |s| s.total),
                    "errors": snap.as_ref().map_or(0, |s| s.errors),
                    "health": health,
                    "disabled_for_ms": disabled,
                }));
            }
        }
        rows
    }

    /// `drain(name, address)` (`on`) or `enable(name, address)`.
    pub(super) fn set_drained(
        &mut self,
        upstream: &str,
        address: &str,
        on: bool,
    ) -> Result<Value, String> {
        let what = if on { "drain" } else { "enable" };
        let config = self.config();
        let Some(u) = config.upstreams.iter().position(|d| d.name == upstream) else {
            let names: Vec<&str> = config.upstreams.iter().map(|d| d.name.as_str()).collect();
            return Err(format!(
                "{what}: no upstream '{upstream}' (upstreams: {})",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ));
        };
        let addrs: Vec<String> = config.upstreams[u]
            .address
            .iter()
            .map(|a| addr_text(&a.addr))
            .collect();
        let Some(a) = addrs.iter().position(|t| t == address) else {
            return Err(format!(
                "{what}: upstream '{upstream}' has no address '{address}' (addresses: {})",
                addrs.join(", ")
            ));
        };
        let (i, slot) = proc_index(config)
            .index(u, a)
            .and_then(|i| Some((i, self.board.proc(i)?)))
            .ok_or_else(|| format!("{what}: no scoreboard slot for {address}"))?;
        slot.set_flag(PROXY_DRAINED, on);
        tracing::info!("admin: upstream '{upstream}' address {address} {what}ed");
        Ok(json!({
            "name": upstream,
            "address": address,
            "state": if on { "drained" } else { "enabled" },
            "active": self.board.proc_active(i),
        }))
    }
}
