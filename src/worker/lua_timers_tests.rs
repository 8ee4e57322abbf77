//! `run_due` and the timer lease: a `{ worker = "one" }` timer runs only while this process
//! holds the scoreboard's lease; the other timers run regardless. (Through `run_due_with`,
//! without the backstop: its alarm is process-wide and no handler is installed here.)

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use mlua::Lua;

use super::lua_timers::run_due_with;
use crate::admin::scoreboard::Scoreboard;
use crate::script::{Router, RouterLimits, TIMERS};

/// A router with two 10 ms timers recorded as the config records them: one in every worker,
/// one `{ worker = "one" }`; and their run counts (every, one).
fn router_with_timers() -> (Router, Rc<Cell<u32>>, Rc<Cell<u32>>) {
    let lua = Lua::new();
    let (every, one) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
    let list = lua.create_table().unwrap();
    for (count, is_one) in [(every.clone(), false), (one.clone(), true)] {
        let e = lua.create_table().unwrap();
        e.set("kind", "every").unwrap();
        e.set("period", 0.01).unwrap();
        e.set("one", is_one).unwrap();
        e.set("at", "site.lua:1").unwrap();
        let f = lua
            .create_function(move |_, ()| {
                count.set(count.get() + 1);
                Ok(())
            })
            .unwrap();
        e.set("fn", f).unwrap();
        list.push(e).unwrap();
    }
    lua.set_named_registry_value(TIMERS, list).unwrap();
    let route = lua.create_function(|_, ()| Ok(())).unwrap();
    let key = lua.create_registry_value(route).unwrap();
    let r = Router::new(&lua, &key, Vec::<String>::new(), RouterLimits::default()).unwrap();
    (r, every, one)
}

/// Runs what is due `ms` after `t0`, each timer plainly.
fn run_at(r: &mut Router, board: Option<&Scoreboard>, t0: Instant, ms: u64) {
    let now = t0 + Duration::from_millis(ms);
    run_due_with(r, board, now, |r, i| r.run_timer(i, now));
}

#[test]
fn a_one_timer_waits_for_the_lease_and_the_others_do_not() {
    let (mut r, every, one) = router_with_timers();
    let t0 = Instant::now();
    r.start_timers(0, t0);
    let board = Scoreboard::new(2, 0).unwrap();
    let me = std::process::id();
    // Another process (the old generation's worker) holds the lease.
    let other = me + 1;
    assert!(board.take_timer_lease(other));

    run_at(&mut r, Some(&board), t0, 15);
    assert_eq!(
        (every.get(), one.get()),
        (1, 0),
        "skipped while another holds it"
    );
    assert!(
        r.next_timer()
            .is_some_and(|t| t > t0 + Duration::from_millis(15)),
        "the skipped run is rescheduled"
    );

    // It gives the lease back (it drains): the next due run takes it.
    assert!(board.give_back_timer_lease(other));
    run_at(&mut r, Some(&board), t0, 30);
    assert_eq!((every.get(), one.get()), (2, 1));
    assert!(!board.take_timer_lease(other), "held by this process now");
    assert!(board.take_timer_lease(me));

    // Without a scoreboard this process is the only candidate.
    run_at(&mut r, None, t0, 45);
    assert_eq!((every.get(), one.get()), (3, 2));

    // A draining worker drops its `one` timers and keeps the others.
    r.stop_one_timers();
    run_at(&mut r, Some(&board), t0, 60);
    assert_eq!((every.get(), one.get()), (4, 2));
}

#[test]
fn only_slot_0_arms_one_timers() {
    let (mut r, every, one) = router_with_timers();
    let t0 = Instant::now();
    r.start_timers(1, t0);
    let board = Scoreboard::new(2, 0).unwrap();
    run_at(&mut r, Some(&board), t0, 15);
    assert_eq!((every.get(), one.get()), (1, 0));
    assert!(board.take_timer_lease(1), "slot 1 never took the lease");
}
