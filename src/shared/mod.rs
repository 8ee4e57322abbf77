//! Shared dictionaries (`shared "name" { size = "8m" }`): fixed-size zones of shared memory
//! that every worker, the watcher and the admin evaluator see (issue 13).
//!
//! The watcher maps every zone before it forks anything ([`map_config`]), so the mapping is
//! inherited by workers and by the evaluator and outlives worker respawns and reloads: the
//! watcher keeps the zones in a per-process registry (it has one thread; a forked child gets
//! the registry's copy with the same mappings). A reload may add zones; a zone whose size
//! changed is refused, as a running zone cannot be resized. `zone.rs` holds the table itself,
//! `owner_lock.rs` its lock (a holder's death is detected and the lock taken over),
//! `lua_api.rs` the Lua side (`shared.NAME:get(k)` …).

mod dict_raw;
pub mod lua_api;
#[cfg(test)]
mod lua_api_tests;
mod owner_lock;
#[cfg(test)]
mod owner_lock_tests;
pub mod zone;
#[cfg(test)]
mod zone_tests;

use std::cell::RefCell;
use std::rc::Rc;

use crate::config::SharedDef;
pub use zone::{Fill, OpError, Val, Zone};

thread_local! {
    /// The zones this process has mapped or inherited, by name, in definition order.
    static ZONES: RefCell<Vec<(String, Rc<Zone>)>> = const { RefCell::new(Vec::new()) };
}

/// Maps the zones `defs` names that are not mapped yet (the watcher, at start and on reload,
/// before forking). A zone already mapped with another size is an error naming it, and then
/// nothing is mapped.
pub fn map_config(defs: &[SharedDef]) -> Result<(), String> {
    check_config(defs)?;
    let missing: Vec<&SharedDef> = defs.iter().filter(|d| zone(&d.name).is_none()).collect();
    let mut mapped = Vec::new();
    for d in missing {
        let z = Zone::map(d.size).map_err(|e| format!("shared '{}': mmap: {e}", d.name))?;
        mapped.push((d.name.clone(), Rc::new(z)));
    }
    ZONES.with(|z| z.borrow_mut().extend(mapped));
    Ok(())
}

/// Whether `defs` could be mapped by [`map_config`] (a reload's check before it starts).
pub fn check_config(defs: &[SharedDef]) -> Result<(), String> {
    ZONES.with(|z| {
        let zones = z.borrow();
        for d in defs {
            if let Some((_, zone)) = zones.iter().find(|(n, _)| *n == d.name) {
                if zone.size() != d.size {
                    return Err(format!(
                        "shared '{}' ({}) changed size from {} to {} bytes; a zone keeps its size \
                         while the server runs (restart to resize it)",
                        d.name,
                        d.defined_at,
                        zone.size(),
                        d.size
                    ));
                }
            }
        }
        Ok(())
    })
}

/// The zones of this process, in definition order.
pub fn zones() -> Vec<(String, Rc<Zone>)> {
    ZONES.with(|z| z.borrow().clone())
}

/// The zone called `name`.
pub fn zone(name: &str) -> Option<Rc<Zone>> {
    ZONES.with(|z| {
        z.borrow()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, zone)| zone.clone())
    })
}

/// Marks every zone lock that `pid` holds as held by a dead process (the watcher, once `pid`
/// has exited and before it is reaped, so the pid cannot belong to anyone else yet): the next
/// locker takes it over and repairs the zone at once, whatever it can see of the process.
/// How many locks it held.
pub fn release_locks_of(pid: u32) -> usize {
    ZONES.with(|z| {
        z.borrow()
            .iter()
            .filter(|(name, zone)| {
                let held = zone.release_dead_holder(pid);
                if held {
                    tracing::warn!("shared dict '{name}': process {pid} died holding its lock");
                }
                held
            })
            .count()
    })
}
