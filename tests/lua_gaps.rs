//! Issue 13 behaviours that had no integration test of their own: the shared dict's whole API
//! through Lua in a route (TTLs, expiry, LRU eviction in a full zone), an `http.request`
//! response over its bound, a runaway `respond_hook`, `req:body()` before `proxy()`, a
//! `{ worker = "one" }` timer across a SIGKILL of its worker and across a reload, and
//! `limit_req` draining.

mod common;
mod proxy_common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

fn start(workers: usize, server_extra: &str, rest: &str) -> Server {
    let dir = TempDir::new("lua-gaps");
    std::fs::create_dir_all(dir.path().join("www")).expect("mkdir www");
    let config = format!(
        "server {{ listen = \"127.0.0.1:0\", workers = {workers}, root = \"www\", error_log = \"stderr\"{server_extra} }}\n{rest}"
    );
    Server::start_config(dir, &config)
}

/// One GET on a fresh connection that closes; the status and the body as text.
fn fetch(addr: &str, target: &str) -> (u16, String) {
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(
        format!("GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut buf = Vec::new();
    let _ = c.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_string())
}

// ---------------------------------------------------------------------------------------
// 1. The shared dict through Lua.

/// A route that runs one dict operation per request and prints what it returned.
const DICT_ROUTE: &str = r##"
shared "d" { size = "64k" }
local function show(...)
  local out = {}
  for i = 1, select("#", ...) do out[i] = tostring((select(i, ...))) end
  return respond(200, table.concat(out, " "))
end
route(function(req)
  local d, k, op = shared.d, req:arg("k"), req.path:sub(2)
  local v = req:arg("v")
  if req:arg("n") then v = tonumber(req:arg("n")) end
  local ttl = tonumber(req:arg("ttl") or "")
  if op == "set" then return show(d:set(k, v, ttl))
  elseif op == "replace" then return show(d:replace(k, v, ttl))
  elseif op == "get" then return show(d:get(k))
  elseif op == "gettype" then local x = d:get(k) return show(math.type(x) or type(x))
  elseif op == "delete" then return show(d:delete(k))
  elseif op == "ttl" then return show(d:ttl(k))
  elseif op == "flush" then return show(d:flush())
  elseif op == "free" then return show(d:free_space())
  elseif op == "keys" then
    local ks = d:keys(req:arg("max") and tonumber(req:arg("max")) or nil)
    table.sort(ks)
    return respond(200, #ks .. ":" .. table.concat(ks, ","))
  end
end)
"##;

/// Entries of a 64 KiB zone: (65536 - 256 bytes of header) / 512.
const ENTRIES_64K: u64 = 127;
/// Probe window of a key (see the README's "Shared dictionaries").
const WINDOW: u64 = 32;

/// The zone's home slot of a key (src/shared/zone.rs `hash` and `home_slot`: FNV-1a 64,
/// mixed, scaled into the table by a multiply), so the test can pick keys that compete for one
/// place and check which of them is evicted.
fn home_slot(key: &str, entries: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key.as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let h = (h ^ (h >> 29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    ((u128::from(h) * u128::from(entries)) >> 64) as u64
}

#[test]
fn the_shared_dict_api_through_lua_in_a_route() {
    let s = start(2, "", DICT_ROUTE);
    let q = |t: &str| {
        let (st, b) = fetch(&s.addr, t);
        assert_eq!(st, 200, "{t}: {b}");
        b
    };
    let capacity = ENTRIES_64K * 512;
    assert_eq!(q("/free"), capacity.to_string());

    // set / get: the value, and the remaining TTL (nil without one).
    assert_eq!(q("/set?k=a&v=one"), "true false");
    assert_eq!(q("/get?k=a"), "one nil");
    assert_eq!(q("/set?k=n&n=42"), "true false");
    assert_eq!(q("/gettype?k=n"), "integer", "integers stay integers");
    assert_eq!(q("/set?k=t&v=x&ttl=100"), "true false");
    let got = q("/get?k=t");
    let (v, ttl) = got.split_once(' ').unwrap();
    assert_eq!(v, "x");
    let ttl: f64 = ttl.parse().unwrap_or_else(|_| panic!("ttl of {got:?}"));
    assert!(ttl > 90.0 && ttl <= 100.0, "{got}");
    // ttl(): remaining seconds, 0 for no expiry, nil + "not found" when absent.
    let t: f64 = q("/ttl?k=t").split(' ').next().unwrap().parse().unwrap();
    assert!(t > 90.0 && t <= 100.0, "{t}");
    // An integer 0, as README documents it (not the float 0.0).
    assert_eq!(q("/ttl?k=a"), "0 nil");
    assert_eq!(q("/ttl?k=nope"), "nil not found");
    assert_eq!(q("/get?k=nope"), "nil nil");

    // replace: only if present.
    assert_eq!(q("/replace?k=nope&v=1"), "nil not found");
    assert_eq!(q("/get?k=nope"), "nil nil");
    assert_eq!(q("/replace?k=a&v=two"), "true false");
    assert_eq!(q("/get?k=a"), "two nil");

    // free_space: one 512-byte entry per live key.
    assert_eq!(q("/free"), (capacity - 3 * 512).to_string());

    // delete: whether it was there.
    assert_eq!(q("/delete?k=a"), "true");
    assert_eq!(q("/delete?k=a"), "false");
    assert_eq!(q("/get?k=a"), "nil nil");
    assert_eq!(q("/free"), (capacity - 2 * 512).to_string());

    // keys(max): up to max, 0 all.
    for i in 0..5 {
        q(&format!("/set?k=key{i}&v=x"));
    }
    assert_eq!(q("/keys?max=0"), "7:key0,key1,key2,key3,key4,n,t");
    assert_eq!(q("/keys?max=3").split(':').next(), Some("3"));
    assert_eq!(q("/keys").split(':').next(), Some("7"), "default 1024");

    // A short TTL expires: there, then gone (get, ttl and keys agree).
    assert_eq!(q("/set?k=short&v=s&ttl=0.3"), "true false");
    assert!(q("/get?k=short").starts_with("s 0."));
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(q("/get?k=short"), "nil nil");
    assert_eq!(q("/ttl?k=short"), "nil not found");
    assert!(!q("/keys?max=0").contains("short"));

    // flush: everything gone.
    assert_eq!(q("/flush"), "");
    assert_eq!(q("/keys?max=0"), "0:");
    assert_eq!(q("/free"), capacity.to_string());

    // A full place evicts its least recently used entry, and set says so. 33 keys with one
    // home slot (in an empty zone they take that slot and the 31 after it, the whole window):
    // the first 32 fit, key 0 is then read (so key 1 is the least recently used), and the
    // 33rd evicts key 1, only it.
    let same: Vec<String> = (0..)
        .map(|i| format!("lru{i}"))
        .filter(|k| home_slot(k, ENTRIES_64K) == 5)
        .take(WINDOW as usize + 1)
        .collect();
    for k in &same[..WINDOW as usize] {
        assert_eq!(q(&format!("/set?k={k}&v=x")), "true false", "{k}");
    }
    assert_eq!(q(&format!("/get?k={}", same[0])), "x nil");
    assert_eq!(
        q(&format!("/set?k={}&v=x", same[WINDOW as usize])),
        "true true",
        "the 33rd key of one place evicts"
    );
    assert_eq!(
        q(&format!("/get?k={}", same[1])),
        "nil nil",
        "the LRU one went"
    );
    for k in same
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, k)| k)
    {
        assert_eq!(q(&format!("/get?k={k}")), "x nil", "{k} was kept");
    }
    assert_eq!(q("/keys?max=0").split(':').next(), Some("32"));

    // Filling the whole zone (more keys than entries): sets report evictions, the zone stays
    // at its capacity, and a key read after every set survives while the oldest go.
    q("/flush");
    assert_eq!(q("/set?k=hot&v=h"), "true false");
    let mut evicted = 0;
    for i in 0..(ENTRIES_64K * 2) {
        let r = q(&format!("/set?k=fill{i}&v=x"));
        assert!(r == "true false" || r == "true true", "{r}");
        evicted += usize::from(r == "true true");
        assert_eq!(q("/get?k=hot"), "h nil", "the hot key stays, after fill{i}");
    }
    assert!(evicted >= ENTRIES_64K as usize, "{evicted} evictions");
    let live: usize = q("/keys?max=0").split(':').next().unwrap().parse().unwrap();
    assert!(live <= ENTRIES_64K as usize, "{live}");
    assert_eq!(q("/get?k=fill0"), "nil nil", "the oldest went");
    assert_eq!(
        q(&format!("/get?k=fill{}", ENTRIES_64K * 2 - 1)),
        "x nil",
        "the newest stays"
    );
}

// ---------------------------------------------------------------------------------------
// 2. `http.request` with a response over `limits.lua_body_bytes`.

#[test]
fn http_request_over_its_response_bound_is_nil_and_an_error() {
    let up = proxy_common::Upstream::start("big");
    let route = format!(
        r#"
route(function(req)
  if req.path == "/plain" then return respond(200, "plain") end
  local r, err = http.request{{ url = "http://{}" .. req.uri:sub(4), timeout = 5 }}
  if r then return respond(200, "ok " .. #r.body) end
  return respond(502, "nil " .. tostring(err))
end)
"#,
        up.addr
    );
    let s = start(1, ", limits = { lua_body_bytes = 1000 }", &route);
    let worker = s.worker_pids();
    assert_eq!(worker.len(), 1, "{worker:?}");
    // Within the bound: the whole body.
    assert_eq!(fetch(&s.addr, "/up/big?n=1000"), (200, "ok 1000".into()));
    assert_eq!(fetch(&s.addr, "/up/chunked?n=900"), (200, "ok 900".into()));
    // Over it, whatever the framing: nil, "response too large".
    for t in [
        "/up/big?n=1001",
        "/up/big?n=100000",
        "/up/chunked?n=5000",
        "/up/close?n=5000",
    ] {
        assert_eq!(
            fetch(&s.addr, t),
            (502, "nil response too large".into()),
            "{t}"
        );
    }
    // The worker goes on serving: the same process, plain requests and calls.
    assert_eq!(fetch(&s.addr, "/plain"), (200, "plain".into()));
    assert_eq!(fetch(&s.addr, "/up/big?n=10"), (200, "ok 10".into()));
    assert_eq!(s.worker_pids(), worker);
}

// ---------------------------------------------------------------------------------------
// 3. A runaway respond hook.

#[test]
fn a_runaway_respond_hook_is_stopped_and_the_response_goes_out_unchanged() {
    let route = r#"
route(function(req)
  return respond(201, "body of " .. req.path .. "\n", { ["X-Route"] = "r" })
end)
respond_hook(function(req, res)
  res.headers["X-Hooked"] = "yes"
  res.headers["X-Route"] = nil
  if req and req.path == "/loop" then while true do end end
end)
"#;
    let s = start(1, "", route);
    let worker = s.worker_pids();
    let mut c = s.connect();
    let t = Instant::now();
    c.send(b"GET /loop HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.response(false);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(r.status, 201);
    assert_eq!(r.text(), "body of /loop\n");
    // Unchanged: the hook's edits before the loop are dropped with it.
    assert_eq!(r.header("x-route"), Some("r"), "{:?}", r.header_list);
    assert_eq!(r.header("x-hooked"), None, "{:?}", r.header_list);
    wait_for("the hook's error logged", Duration::from_secs(5), || {
        let log = s.log_text();
        log.contains("respond_hook (GET /loop)")
            && log.contains("instruction budget")
            && log.contains("the response goes out unchanged")
    });
    // The next request, on the same connection, is served normally (hook included).
    c.send(b"GET /next HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.response(false);
    assert_eq!(r.status, 201);
    assert_eq!(r.text(), "body of /next\n");
    assert_eq!(r.header("x-hooked"), Some("yes"));
    assert_eq!(r.header("x-route"), None);
    assert_eq!(s.worker_pids(), worker, "no worker was killed");
    assert!(!s.log_text().contains("killed by the route backstop"));
}

// ---------------------------------------------------------------------------------------
// 4. `req:body()` in the route, then `proxy()`.

#[test]
fn a_body_read_by_the_route_reaches_a_proxied_upstream_byte_exact() {
    let up = proxy_common::Upstream::start("app");
    let route = format!(
        r#"
upstream "app" {{ address = "{}" }}
route(function(req)
  local b, err = req:body()
  if not b then return respond(500, "body: " .. err) end
  local n = tonumber(req:arg("n"))
  if #b ~= n then return respond(500, "route read " .. #b .. " of " .. n) end
  -- The pattern byte i (from 0) is i % 251: check a few, including the last.
  if n > 0 then
    for _, i in ipairs({{ 0, 250, 251, n // 2, n - 1 }}) do
      if b:byte(i + 1) ~= i % 251 then return respond(500, "byte " .. i) end
    end
  end
  return proxy("app", {{ path = "/echo" }})
end)
"#,
        up.addr
    );
    let s = start(2, "", &route);

    // Content-Length, larger than a socket read, sent in pieces.
    let body = proxy_common::pattern(300_000);
    let mut c = s.connect();
    c.send(
        format!(
            "POST /x?n={} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            body.len(),
            body.len()
        )
        .as_bytes(),
    );
    for piece in body.chunks(70_000) {
        c.send(piece);
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = c.response(false);
    assert_eq!(
        r.status,
        200,
        "{}",
        String::from_utf8_lossy(&r.body[..r.body.len().min(200)])
    );
    assert_eq!(r.header("x-method"), Some("echo"));
    assert_eq!(r.body.len(), body.len());
    assert!(r.body == body, "the upstream got the body byte-exact");

    // Chunked, in chunks of odd sizes (with an extension), on the same connection.
    let body = proxy_common::pattern(150_001);
    let mut wire = format!(
        "POST /x?n={} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
        body.len()
    )
    .into_bytes();
    let mut off = 0;
    let mut size = 1;
    while off < body.len() {
        let n = size.min(body.len() - off);
        wire.extend_from_slice(format!("{n:x};ext=1\r\n").as_bytes());
        wire.extend_from_slice(&body[off..off + n]);
        wire.extend_from_slice(b"\r\n");
        off += n;
        size = size * 3 + 7;
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    c.send(&wire);
    let r = c.response(false);
    assert_eq!(
        r.status,
        200,
        "{}",
        String::from_utf8_lossy(&r.body[..r.body.len().min(200)])
    );
    assert_eq!(r.body.len(), body.len());
    assert!(
        r.body == body,
        "the upstream got the chunked body byte-exact"
    );

    // An empty body: "" for the route, nothing for the upstream.
    let r = raw(
        &s.addr,
        b"POST /x?n=0 HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-method"), Some("echo"));
    assert!(r.body.is_empty(), "{}", r.text());
}

// ---------------------------------------------------------------------------------------
// 5. A `{ worker = "one" }` timer across a SIGKILL of its worker.

const ONE_TIMER: &str = r#"
shared "t" { size = "64k" }
-- The worker's pid, from /proc/self/stat (fs.read takes absolute paths as the worker sees them).
local pid
at_worker_start(function() pid = fs.read("/proc/self/stat", 4096):match("^(%d+)") end)
every(0.05, function() shared.t:incr("runs:" .. pid, 1, 0) end, { worker = "one" })
route(function(req)
  -- Keeps its worker busy (and so draining, after a reload) until /release.
  if req.path == "/slow" then
    shared.t:set("slow", true)
    while not shared.t:get("release") do sleep(0.05) end
  end
  if req.path == "/release" then shared.t:set("release", true) end
  if req.path == "/slow-started" then return respond(200, tostring(shared.t:get("slow"))) end
  local out = {}
  for _, k in ipairs(shared.t:keys(0)) do
    if k:sub(1, 5) == "runs:" then out[#out + 1] = k:sub(6) .. "=" .. shared.t:get(k) end
  end
  return respond(200, table.concat(out, ","))
end)
"#;

/// pid → runs of the timer, as the route reports them.
fn runs(s: &Server) -> BTreeMap<i32, u64> {
    let (st, b) = fetch(&s.addr, "/");
    assert_eq!(st, 200, "{b}");
    b.split(',')
        .filter(|x| !x.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.parse().unwrap(), v.parse().unwrap())
        })
        .collect()
}

/// The pids whose count grew between two snapshots.
fn grew(a: &BTreeMap<i32, u64>, b: &BTreeMap<i32, u64>) -> Vec<i32> {
    b.iter()
        .filter(|(p, n)| a.get(p).is_none_or(|m| *n > m))
        .map(|(p, _)| *p)
        .collect()
}

#[test]
fn a_worker_one_timer_runs_in_one_process_and_again_in_one_after_a_kill() {
    let s = start(3, "", ONE_TIMER);
    wait_for("three workers", Duration::from_secs(5), || {
        s.worker_pids().len() == 3
    });
    wait_for("the timer's first run", Duration::from_secs(5), || {
        !runs(&s).is_empty()
    });
    let a = runs(&s);
    std::thread::sleep(Duration::from_millis(500));
    let b = runs(&s);
    assert_eq!(b.len(), 1, "one process ran it: {b:?}");
    let first: Vec<i32> = grew(&a, &b);
    assert_eq!(first.len(), 1, "{a:?} → {b:?}");
    let victim = first[0];
    let before = s.worker_pids();
    assert!(before.contains(&victim), "{victim} is a worker: {before:?}");

    let ok = std::process::Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    wait_for("the worker respawned", Duration::from_secs(10), || {
        let now = s.worker_pids();
        now.len() == 3 && !now.contains(&victim)
    });
    let after = s.worker_pids();
    let fresh: Vec<i32> = after
        .iter()
        .copied()
        .filter(|p| !before.contains(p))
        .collect();
    assert_eq!(fresh.len(), 1, "{before:?} → {after:?}");
    wait_for(
        "the timer in the respawned worker",
        Duration::from_secs(10),
        || runs(&s).contains_key(&fresh[0]),
    );
    let c = runs(&s);
    std::thread::sleep(Duration::from_millis(500));
    let d = runs(&s);
    assert_eq!(
        grew(&c, &d),
        vec![fresh[0]],
        "only the respawned worker runs it: {c:?} → {d:?}"
    );
    // Over the whole run, only the killed and the respawned worker ever ran it.
    let ran: Vec<i32> = d.keys().copied().collect();
    let mut expected = vec![victim, fresh[0]];
    expected.sort();
    assert_eq!(ran, expected, "{d:?}");
}

/// Through a reload, the old generation's worker runs the timer until it starts draining and
/// never after, even while a request keeps it alive; the new one runs it from then on, never
/// both at once.
#[test]
fn a_worker_one_timer_moves_to_the_new_generation_at_a_reload_and_never_runs_twice() {
    let s = start(1, "", ONE_TIMER);
    wait_for("the timer's first run", Duration::from_secs(5), || {
        !runs(&s).is_empty()
    });
    let old = s.worker_pids();
    assert_eq!(old.len(), 1, "{old:?}");
    let old = old[0];
    // A request in its route keeps the old worker draining after the reload until /release.
    let mut slow = TcpStream::connect(&s.addr).expect("connect");
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    slow.write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    wait_for("the old worker in /slow", Duration::from_secs(5), || {
        fetch(&s.addr, "/slow-started").1 == "true"
    });
    s.signal(libc::SIGUSR1);
    // (The reload's config checker is a child of the watcher for a moment too.)
    wait_for(
        "the new generation's worker",
        Duration::from_secs(5),
        || s.worker_pids().iter().any(|p| *p != old),
    );
    // Who ran it in each 100 ms, while the old worker is still there, draining.
    let mut samples = Vec::new();
    let mut prev = runs(&s);
    for _ in 0..12 {
        std::thread::sleep(Duration::from_millis(100));
        let now = runs(&s);
        samples.push(grew(&prev, &now));
        prev = now;
    }
    assert!(alive(old), "the old worker still drains: {samples:?}");
    let mut others: Vec<i32> = samples
        .iter()
        .flatten()
        .copied()
        .filter(|p| *p != old)
        .collect();
    others.sort();
    others.dedup();
    assert_eq!(others.len(), 1, "one new process ran it: {samples:?}");
    let new = others[0];
    assert!(s.worker_pids().contains(&new), "{new} is a worker");
    let last_old = samples.iter().rposition(|g| g.contains(&old));
    let first_new = samples.iter().position(|g| g.contains(&new));
    let first_new = first_new.unwrap_or_else(|| panic!("the new worker never ran it: {samples:?}"));
    // One 100 ms window may hold the hand-over: the old one's last run and the new one's first.
    assert!(
        last_old.is_none_or(|o| o <= first_new),
        "old {old} ran it after new {new} did: {samples:?}"
    );
    assert!(
        samples[first_new + 1..]
            .iter()
            .all(|g| g.iter().all(|p| *p == new)),
        "only the new worker after the hand-over: {samples:?}"
    );
    let ran = samples[first_new..]
        .iter()
        .filter(|g| !g.is_empty())
        .count();
    assert!(ran >= 4, "the new worker runs it: {samples:?}");
    assert_eq!(fetch(&s.addr, "/release").0, 200);
    let mut body = String::new();
    let _ = slow.read_to_string(&mut body);
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    wait_for("the old worker to leave", Duration::from_secs(5), || {
        !alive(old)
    });
}

// ---------------------------------------------------------------------------------------
// 6. `limit_req`: 429 past rate + burst, admitted again once the bucket drained.

#[test]
fn limit_req_refuses_past_its_burst_and_admits_again_at_its_rate() {
    let route = r#"
shared "rl" { size = "64k" }
route(function(req)
  -- Not "/": the harness asks for it once while it waits for the server.
  if req.path ~= "/rl" then return nil end
  local d = limit_req{ zone = "rl", key = "one-key", rate = 1, burst = 2 }
  if d then return d end
  return respond(200, "in")
end)
"#;
    let s = start(2, "", route);
    let get = |what: &str| {
        let r = s.get("/rl");
        (
            r.status,
            r.header("retry-after").map(str::to_string),
            what.to_string(),
        )
    };
    let admitted = |what: &str| {
        let (st, ra, w) = get(what);
        assert_eq!((st, ra), (200, None), "{w}");
    };
    let refused = |what: &str| {
        let (st, ra, w) = get(what);
        assert_eq!(st, 429, "{w}");
        let secs: u64 = ra
            .unwrap_or_else(|| panic!("{w}: no Retry-After"))
            .parse()
            .unwrap();
        assert!((1..=3).contains(&secs), "{w}: Retry-After {secs}");
    };
    // One, plus a burst of two, at once; the next is refused (and refusing adds nothing).
    admitted("1st");
    admitted("2nd (burst)");
    admitted("3rd (burst)");
    refused("4th");
    refused("5th");
    // One request's worth drains in 1/rate s: one is admitted, the next refused again.
    std::thread::sleep(Duration::from_millis(1200));
    admitted("after 1.2 s");
    refused("right after it");
    // Drained completely: a whole burst again.
    std::thread::sleep(Duration::from_millis(3500));
    admitted("drained, 1st");
    admitted("drained, 2nd");
    admitted("drained, 3rd");
    refused("drained, 4th");
}

/// A body the route read with `req:body()` is in the connection's buffer already: answering
/// with `respond()` keeps the connection however long the body was (only a body nobody read,
/// over 64 KiB, closes, since it would still have to come in).
#[test]
fn a_big_body_read_by_the_route_keeps_the_connection_alive() {
    let s = start(
        1,
        "",
        "route(function(req) if req.path == \"/echo\" then return respond(200, req:body()) end end)\n",
    );
    let mut c = Client::connect(&s.addr);
    for n in [100usize, 70_000, 600_000] {
        let body: Vec<u8> = (0..n).map(|i| (i * 13 % 256) as u8).collect();
        c.send(format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {n}\r\n\r\n").as_bytes());
        c.send(&body);
        let r = c.response(false);
        assert_eq!(r.status, 200, "{n}");
        assert!(r.body == body, "{n}: the echo differs");
        assert_eq!(r.header("connection"), None, "{n}: closed after the body");
    }
    // An unread body over 64 KiB still closes.
    let n = 100_000;
    c.send(format!("POST /other HTTP/1.1\r\nHost: t\r\nContent-Length: {n}\r\n\r\n").as_bytes());
    let r = c.response(false);
    assert_eq!(r.status, 404);
    assert_eq!(r.header("connection"), Some("close"));
}
