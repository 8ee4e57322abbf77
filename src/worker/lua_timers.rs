//! The worker's side of the config's `every` timers: run what is due, each call under the
//! backstop like a route call (script::timers has the rest).

use std::time::Instant;

use crate::script::Router;

/// Runs every timer due at `now`.
pub(super) fn run_due(router: &mut Router, now: Instant) {
    // Bounded: each run moves its timer's due time past `now`.
    for _ in 0..64 {
        let Some(i) = router.due_timer(now) else {
            return;
        };
        let _armed = super::backstop::arm(
            router
                .limits()
                .deadline
                .saturating_add(super::backstop::BOUND),
        );
        router.run_timer(i, now);
    }
}
