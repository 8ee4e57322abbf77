//! The zone's operations on a private mapping (no fork: the cross-process tests are in
//! tests/lua_shared.rs).

use std::time::Duration;

use super::zone::*;

fn zone() -> Zone {
    Zone::map(MIN_SIZE).expect("map")
}

fn s(v: &str) -> Val {
    Val::Str(v.as_bytes().to_vec())
}

#[test]
fn set_get_add_replace_delete() {
    let z = zone();
    assert_eq!(z.get(b"a").unwrap(), None);
    assert!(!z.set(b"a", &s("one"), None).unwrap().evicted);
    assert_eq!(z.get(b"a").unwrap(), Some((s("one"), None)));
    assert_eq!(z.add(b"a", &s("two"), None), Err(OpError::Exists));
    assert_eq!(z.replace(b"b", &s("two"), None), Err(OpError::NotFound));
    z.replace(b"a", &Val::Bool(true), None).unwrap();
    assert_eq!(z.get(b"a").unwrap().unwrap().0, Val::Bool(true));
    z.add(b"b", &Val::Float(1.5), None).unwrap();
    assert_eq!(z.get(b"b").unwrap().unwrap().0, Val::Float(1.5));
    assert!(z.delete(b"a").unwrap());
    assert!(!z.delete(b"a").unwrap());
    assert_eq!(z.get(b"a").unwrap(), None);
    assert_eq!(z.keys(0), vec![b"b".to_vec()]);
    z.flush();
    assert!(z.keys(0).is_empty());
    assert_eq!(z.free_space(), z.capacity() * ENTRY_BYTES);
}

#[test]
fn incr_counts_and_converts() {
    let z = zone();
    assert_eq!(
        z.incr(b"n", &Val::Int(1), None, None),
        Err(OpError::NotFound)
    );
    assert_eq!(
        z.incr(b"n", &Val::Int(1), Some(&Val::Int(0)), None)
            .unwrap()
            .0,
        Val::Int(1)
    );
    for _ in 0..99 {
        z.incr(b"n", &Val::Int(1), Some(&Val::Int(0)), None)
            .unwrap();
    }
    assert_eq!(z.get(b"n").unwrap().unwrap().0, Val::Int(100));
    assert_eq!(
        z.incr(b"n", &Val::Float(0.5), None, None).unwrap().0,
        Val::Float(100.5)
    );
    z.set(b"s", &s("x"), None).unwrap();
    assert_eq!(
        z.incr(b"s", &Val::Int(1), None, None),
        Err(OpError::NotANumber)
    );
}

#[test]
fn limits_on_keys_and_values() {
    let z = zone();
    assert_eq!(z.set(b"", &s("x"), None), Err(OpError::BadKey));
    assert_eq!(
        z.set(&[b'k'; MAX_KEY + 1], &s("x"), None),
        Err(OpError::BadKey)
    );
    let big = "v".repeat(DATA_BYTES - 1);
    assert_eq!(z.set(b"kk", &s(&big), None), Err(OpError::TooLarge));
    z.set(b"k", &s(&big), None).unwrap();
    assert_eq!(z.get(b"k").unwrap().unwrap().0, s(&big));
}

#[test]
fn ttl_expires_entries() {
    let z = zone();
    z.set(b"t", &s("x"), Some(0.05)).unwrap();
    let ttl = z.ttl(b"t").unwrap().unwrap().unwrap();
    assert!(ttl > 0.0 && ttl <= 0.05, "{ttl}");
    z.set(b"forever", &s("x"), None).unwrap();
    assert_eq!(z.ttl(b"forever").unwrap(), Some(None));
    std::thread::sleep(Duration::from_millis(80));
    assert_eq!(z.get(b"t").unwrap(), None);
    assert_eq!(z.ttl(b"t").unwrap(), None);
    assert!(z.expire(b"forever", Some(0.01)).unwrap());
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(z.get(b"forever").unwrap(), None);
}

#[test]
fn a_full_zone_evicts_the_least_recently_used() {
    let z = zone();
    let n = z.capacity() * 3;
    let mut evicted = 0;
    for i in 0..n {
        // Key 0 is read before every write: it stays the most recently used.
        let _ = z.get(b"key0").unwrap();
        if z.set(format!("key{i}").as_bytes(), &Val::Int(i as i64), None)
            .unwrap()
            .evicted
        {
            evicted += 1;
        }
    }
    assert!(evicted >= n - z.capacity(), "{evicted} evictions");
    assert_eq!(z.get(b"key0").unwrap().unwrap().0, Val::Int(0));
    let last = format!("key{}", n - 1);
    assert!(z.get(last.as_bytes()).unwrap().is_some());
    let f = z.fill();
    assert!(f.live <= f.capacity && f.evictions as usize == evicted);
}

#[test]
fn a_holder_that_died_is_recovered_from() {
    let z = std::sync::Arc::new(SendZone(zone()));
    z.0.set(b"half", &s("x"), None).unwrap();
    z.0.set(b"whole", &Val::Int(7), None).unwrap();
    let z2 = z.clone();
    // A thread that exits holding the zone lock, mid-write of "half".
    std::thread::spawn(move || z2.0.lock_and_die(Some(b"half")))
        .join()
        .unwrap();
    assert_eq!(z.0.get(b"half").unwrap(), None);
    assert_eq!(z.0.get(b"whole").unwrap().unwrap().0, Val::Int(7));
    z.0.set(b"half", &s("again"), None).unwrap();
    assert_eq!(z.0.get(b"half").unwrap().unwrap().0, s("again"));
}

struct SendZone(Zone);
// SAFETY: test only: the zone is used by one thread at a time (spawn, then join), and its
// operations lock the process-shared mutex anyway.
unsafe impl Send for SendZone {}
// SAFETY: as above.
unsafe impl Sync for SendZone {}

#[test]
fn the_leaky_bucket_admits_rate_plus_burst() {
    let z = zone();
    // rate 10/s, burst 2: the first request, then two more at once; the fourth waits.
    assert_eq!(z.leaky_bucket(b"ip", 10.0, 2.0).unwrap(), None);
    assert_eq!(z.leaky_bucket(b"ip", 10.0, 2.0).unwrap(), None);
    assert_eq!(z.leaky_bucket(b"ip", 10.0, 2.0).unwrap(), None);
    let wait = z.leaky_bucket(b"ip", 10.0, 2.0).unwrap().expect("refused");
    assert!(wait > 0.0 && wait <= 0.1 + 1e-9, "{wait}");
    // Another key has its own bucket.
    assert_eq!(z.leaky_bucket(b"other", 10.0, 0.0).unwrap(), None);
    assert!(z.leaky_bucket(b"other", 10.0, 0.0).unwrap().is_some());
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(z.leaky_bucket(b"ip", 10.0, 2.0).unwrap(), None);
}

#[test]
fn a_drained_bucket_admits_rate_plus_burst_again() {
    let z = zone();
    // rate 10/s, burst 2: 1 + 2 at once, then refused.
    for _ in 0..3 {
        assert_eq!(z.leaky_bucket(b"ip", 10.0, 2.0).unwrap(), None);
    }
    assert!(z.leaky_bucket(b"ip", 10.0, 2.0).unwrap().is_some());
    // Long enough to drain it: as many at once as a new key gets (nginx adds, then clamps).
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..3 {
        assert_eq!(
            z.leaky_bucket(b"ip", 10.0, 2.0).unwrap(),
            None,
            "request {i}"
        );
    }
    assert!(z.leaky_bucket(b"ip", 10.0, 2.0).unwrap().is_some());
}

/// Keys that differ only at their end spread over the whole zone: it fills to most of its
/// capacity before the first eviction (a poor home slot would crowd a few windows).
#[test]
fn keys_spread_over_the_zone_before_anything_is_evicted() {
    for size in [MIN_SIZE, 8 * MIN_SIZE] {
        let z = Zone::map(size).expect("map");
        let mut stored = 0;
        while !z
            .set(
                format!("hits:/path/{stored}").as_bytes(),
                &Val::Int(1),
                None,
            )
            .unwrap()
            .evicted
        {
            stored += 1;
        }
        // About 88 % and 72 % here; a hash whose high bits ignore the key's end gives 4 %.
        assert!(
            stored * 100 >= z.capacity() * 60,
            "first eviction after {stored} of {} entries",
            z.capacity()
        );
    }
}
