//! The worker's side of the config's `every` timers: run what is due, each call under the
//! backstop like a route call, a `{ worker = "one" }` timer only while this process holds
//! the scoreboard's timer lease (script::timers has the rest).

use std::time::Instant;

use crate::admin::scoreboard::Scoreboard;
use crate::script::Router;

/// Runs every timer due at `now`. `board`: where the lease of the `{ worker = "one" }` timers
/// is (none: this process is the only one that could run them).
pub(super) fn run_due(router: &mut Router, board: Option<&Scoreboard>, now: Instant) {
    run_due_with(router, board, now, |router, i| {
        let _armed = super::backstop::arm(
            router
                .limits()
                .deadline
                .saturating_add(super::backstop::BOUND),
        );
        router.run_timer(i, now);
    });
}

/// [`run_due`] with the run of timer `i` given (the tests run it without the backstop, whose
/// process-wide alarm would outlive them).
pub(super) fn run_due_with(
    router: &mut Router,
    board: Option<&Scoreboard>,
    now: Instant,
    mut run: impl FnMut(&mut Router, usize),
) {
    // Bounded: each run moves its timer's due time past `now`.
    for _ in 0..64 {
        let Some(i) = router.due_timer(now) else {
            return;
        };
        if router.timer_is_one(i) && board.is_some_and(|b| !b.take_timer_lease(std::process::id()))
        {
            router.skip_timer(i, now);
            continue;
        }
        run(router, i);
    }
}
