//! The zone lock on its own: exclusion between threads and processes, and taking it over from
//! a holder that died (a thread that ended, a forked process killed and not yet reaped), also
//! while signals keep cutting the waiter's sleeps short.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::mman::{mmap_anonymous, munmap, MapFlags, ProtFlags};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult};

use super::owner_lock::{thread_id, OwnerLock, Taken};

#[test]
fn a_free_lock_is_taken_and_given_back() {
    let l = OwnerLock::new();
    assert_eq!(l.lock(), Taken::Free);
    assert_eq!(l.holder(), thread_id());
    l.unlock();
    assert_eq!(l.holder(), 0);
    assert_eq!(l.lock(), Taken::Free);
    l.unlock();
}

#[test]
fn threads_exclude_each_other() {
    struct Counted {
        lock: OwnerLock,
        n: std::cell::UnsafeCell<u64>,
    }
    // SAFETY: `n` is read and written only while `lock` is held.
    unsafe impl Sync for Counted {}
    let c = Arc::new(Counted {
        lock: OwnerLock::new(),
        n: std::cell::UnsafeCell::new(0),
    });
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let c = c.clone();
            std::thread::spawn(move || {
                for _ in 0..20_000 {
                    assert_eq!(c.lock.lock(), Taken::Free);
                    // SAFETY: under the lock (what this test checks).
                    unsafe {
                        let v = c.n.get().read_volatile();
                        std::hint::spin_loop();
                        c.n.get().write_volatile(v + 1);
                    }
                    c.lock.unlock();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // SAFETY: every thread has ended.
    assert_eq!(unsafe { *c.n.get() }, 80_000);
    assert_eq!(c.lock.holder(), 0);
}

/// A lock whose holder is a thread that has ended.
fn held_by_an_ended_thread() -> Arc<OwnerLock> {
    let l = Arc::new(OwnerLock::new());
    let l2 = l.clone();
    std::thread::spawn(move || {
        assert_eq!(l2.lock(), Taken::Free);
    })
    .join()
    .unwrap();
    l
}

#[test]
fn a_thread_that_ended_holding_it_is_taken_over() {
    let l = held_by_an_ended_thread();
    assert_ne!(l.holder(), 0);
    let t = Instant::now();
    assert_eq!(l.lock(), Taken::FromDead);
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert_eq!(l.holder(), thread_id());
    l.unlock();
    assert_eq!(l.lock(), Taken::Free);
    l.unlock();
}

#[test]
fn a_holder_forgotten_by_this_thread_is_taken_over() {
    let l = OwnerLock::new();
    assert_eq!(l.lock(), Taken::Free);
    assert_eq!(l.lock(), Taken::FromDead);
    l.unlock();
}

/// A forked child takes the lock under its own id (not its parent's cached one) and dies
/// holding it; the parent takes it over while the child is still an unreaped zombie, as the
/// watcher must (it reaps only from its event loop).
#[test]
fn a_process_killed_holding_it_is_taken_over_before_it_is_reaped() {
    let len = NonZeroUsize::new(4096).unwrap();
    // SAFETY: a fresh anonymous shared mapping, aliasing nothing; unmapped at the end.
    let base = unsafe {
        mmap_anonymous(
            None,
            len,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED,
        )
    }
    .expect("mmap");
    // SAFETY: zero-filled, page-aligned memory is a free OwnerLock; it outlives every use.
    let l: &OwnerLock = unsafe { base.cast::<OwnerLock>().as_ref() };
    // The parent's id is cached before the fork.
    assert_eq!(l.lock(), Taken::Free);
    l.unlock();
    // SAFETY: the child only takes the lock (atomics, a system call) and ends with _exit.
    let child = match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            l.lock();
            // SAFETY: ends the child at once, holding the lock, as SIGKILL would.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => child,
    };
    let t = Instant::now();
    while l.holder() == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the child never took it"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(l.holder(), child.as_raw() as u32);
    // Wait until the child has ended (a zombie: not reaped yet).
    while std::fs::read_to_string(format!("/proc/{child}/stat"))
        .map(|s| !s.contains(") Z"))
        .unwrap_or(false)
    {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the child never ended"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let t = Instant::now();
    assert_eq!(l.lock(), Taken::FromDead);
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    l.unlock();
    waitpid(child, None).expect("reap");
    // SAFETY: the mapping made above; `l` is not used after this.
    unsafe { munmap(base, 4096) }.expect("munmap");
}

#[test]
fn a_live_holder_is_waited_for_however_long_it_holds() {
    let l = Arc::new(OwnerLock::new());
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let l2 = l.clone();
    let holder = std::thread::spawn(move || {
        assert_eq!(l2.lock(), Taken::Free);
        held_tx.send(()).unwrap();
        // Five slices: the waiter asks about us several times and must find us alive.
        std::thread::sleep(Duration::from_millis(50));
        l2.unlock();
    });
    held_rx.recv().unwrap();
    let t = Instant::now();
    assert_eq!(l.lock(), Taken::Free, "a live holder's lock was taken over");
    assert!(
        t.elapsed() >= Duration::from_millis(40),
        "{:?}",
        t.elapsed()
    );
    l.unlock();
    holder.join().unwrap();
}

#[test]
fn two_waiters_on_a_dead_holder_take_it_over_once() {
    let l = held_by_an_ended_thread();
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let l = l.clone();
            std::thread::spawn(move || {
                let taken = l.lock();
                std::thread::sleep(Duration::from_millis(5));
                l.unlock();
                taken
            })
        })
        .collect();
    let mut taken: Vec<Taken> = waiters.into_iter().map(|w| w.join().unwrap()).collect();
    taken.sort_by_key(|t| *t == Taken::FromDead);
    assert_eq!(taken, [Taken::Free, Taken::FromDead]);
}

/// What the watcher does for a worker it has not reaped yet: the lock is marked dead and the
/// next locker takes it over at once, even though it could still see the holder (here a live
/// thread, which no waiter would ever take it from on its own).
#[test]
fn a_lock_marked_dead_is_taken_over_at_once() {
    let l = Arc::new(OwnerLock::new());
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let l2 = l.clone();
    let holder = std::thread::spawn(move || {
        assert_eq!(l2.lock(), Taken::Free);
        tx.send(thread_id()).unwrap();
        // Alive, holding, until the test is over; it never gives the lock back.
        let _ = done_rx.recv();
    });
    let id = rx.recv().unwrap();
    assert!(!l.release_dead(id + 1), "another id does not hold it");
    assert_eq!(l.holder(), id);
    assert!(l.release_dead(id));
    let t = Instant::now();
    assert_eq!(l.lock(), Taken::FromDead);
    assert!(t.elapsed() < Duration::from_millis(5), "{:?}", t.elapsed());
    assert_eq!(l.holder(), thread_id());
    l.unlock();
    assert!(!l.release_dead(id), "free now");
    done_tx.send(()).unwrap();
    holder.join().unwrap();
}

extern "C" fn ignore_signal(_: libc::c_int) {}

/// A waiter whose sleeps are cut short by a signal every millisecond (EINTR, never a whole
/// slice asleep in one go) still asks about its holder once a slice has passed by the clock,
/// and takes the lock over from a holder that ended while it waited.
#[test]
fn a_waiter_interrupted_by_signals_still_takes_over_from_a_dead_holder() {
    use std::os::unix::thread::JoinHandleExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    // SAFETY: installs a handler that does nothing for SIGURG, whose default action is to be
    // ignored, so no other test sees a difference; without SA_RESTART, a futex wait it
    // interrupts returns EINTR.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = ignore_signal as extern "C" fn(libc::c_int) as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGURG, &sa, std::ptr::null_mut()), 0);
    }
    let l = Arc::new(OwnerLock::new());
    let (l2, locked) = (l.clone(), Arc::new(AtomicBool::new(false)));
    let locked2 = locked.clone();
    let holder = std::thread::spawn(move || {
        assert_eq!(l2.lock(), Taken::Free);
        locked2.store(true, Ordering::Release);
        // Ends holding it while the waiter sleeps on it.
        std::thread::sleep(Duration::from_millis(50));
    });
    while !locked.load(Ordering::Acquire) {
        std::thread::yield_now();
    }
    let done = Arc::new(AtomicBool::new(false));
    let done2 = done.clone();
    let l3 = l.clone();
    let waiter = std::thread::spawn(move || {
        let taken = l3.lock();
        done2.store(true, Ordering::Release);
        taken
    });
    let t = Instant::now();
    let id = waiter.as_pthread_t();
    while !done.load(Ordering::Acquire) && t.elapsed() < Duration::from_secs(5) {
        // SAFETY: the waiter thread has not been joined, so its pthread_t is valid.
        unsafe { libc::pthread_kill(id, libc::SIGURG) };
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        done.load(Ordering::Acquire),
        "still waiting after {:?}",
        t.elapsed()
    );
    assert_eq!(waiter.join().unwrap(), Taken::FromDead);
    holder.join().unwrap();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}
