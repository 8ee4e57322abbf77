//! Scoreboard proc slots across a reload: the layout (FastCGI addresses in config order,
//! then the HTTP upstreams' after them) is a function of the config, so a reload that adds,
//! removes or reorders a backend or an address makes a slot stand for another address. Such a
//! slot is reset, so its new address starts from zero rather than with another's figures; the
//! scoreboard keeps `UPSTREAM_SPARE_SLOTS` spare slots beyond the start config's needs, for
//! FastCGI and upstream addresses a reload adds alike.

use super::Watcher;
use crate::config::Config;
use std::collections::HashMap;

/// Who a slot stands for: the kind (FastCGI or HTTP upstream), the name and the address.
type Owner = (bool, String, String);

/// Every slot's owner under `config`'s layout.
fn owners(config: &Config) -> HashMap<usize, Owner> {
    let mut at = HashMap::new();
    let fcgi = crate::fastcgi::pool::proc_index(config);
    for (b, def) in config.fastcgi.iter().enumerate() {
        for (u, addr) in crate::fastcgi::pool::upstream_addrs(def).iter().enumerate() {
            if let Some(i) = fcgi.index(b, u) {
                let addr = crate::fastcgi::spawn::describe(addr);
                at.insert(i, (false, def.name.clone(), addr));
            }
        }
    }
    let up = crate::proxy::pool::proc_index(config);
    for (u, def) in config.upstreams.iter().enumerate() {
        for (a, addr) in def.address.iter().enumerate() {
            if let Some(i) = up.index(u, a) {
                let addr = crate::proxy::pool::addr_text(&addr.addr);
                at.insert(i, (true, def.name.clone(), addr));
            }
        }
    }
    at
}

impl Watcher {
    /// After the config changed from `before` (a reload, or its revert): resets every slot
    /// that now stands for another address than it did.
    pub(super) fn reset_moved_slots(&self, before: &Config) {
        let (old, new) = (owners(before), owners(self.config()));
        for (i, owner) in &new {
            if old.get(i) != Some(owner) {
                if let Some(p) = self.board.proc(*i) {
                    p.reset();
                }
            }
        }
    }
}
