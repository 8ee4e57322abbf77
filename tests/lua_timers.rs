//! `every` and `at_worker_start` (issue 13): timers in every worker and in exactly one, their
//! limits, and config errors.

mod common;

use std::time::Duration;

use common::*;

fn start(rest: &str) -> Server {
    let dir = TempDir::new("lua-timers");
    std::fs::create_dir_all(dir.path().join("www")).expect("mkdir www");
    let config = format!(
        "server {{ listen = \"127.0.0.1:0\", workers = 3, root = \"www\", error_log = \"stderr\" }}\n{rest}"
    );
    Server::start_config(dir, &config)
}

const TIMERS: &str = r#"
shared "t" { size = "64k" }
local me
at_worker_start(function() me = shared.t:incr("started", 1, 0) end)
every(0.05, function() shared.t:set("all:" .. me, true) end)
every(0.05, function() shared.t:set("one:" .. me, true) end, { worker = "one" })
every(0.05, function() if me == 1 then while true do end end end)
route(function(req)
  local keys = shared.t:keys(0)
  table.sort(keys)
  return respond(200, table.concat(keys, ","))
end)
"#;

#[test]
fn timers_run_in_every_worker_or_in_one() {
    let s = start(TIMERS);
    wait_for("every worker's timer", Duration::from_secs(10), || {
        let keys = s.get("/").text();
        ["all:1", "all:2", "all:3"].iter().all(|k| keys.contains(k))
    });
    std::thread::sleep(Duration::from_millis(300));
    let keys = s.get("/").text();
    let ones: Vec<&str> = keys.split(',').filter(|k| k.starts_with("one:")).collect();
    assert_eq!(ones.len(), 1, "{keys}");
    assert!(keys.contains("started"), "{keys}");
    // The looping timer is stopped by the budget each time, and logged; the worker lives.
    assert!(s.log_text().contains("every (given at"), "{}", s.log_text());
    assert!(
        s.log_text().contains("instruction budget"),
        "{}",
        s.log_text()
    );
    assert!(!s.log_text().contains("killed by the route backstop"));
}

#[test]
fn bad_timers_are_config_errors_with_their_line() {
    let dir = TempDir::new("lua-timers-bad");
    std::fs::create_dir_all(dir.path().join("www")).unwrap();
    let conf = dir.write(
        "site.lua",
        b"server { listen = \"127.0.0.1:0\", root = \"www\" }\nevery(\"x\", function() end)\nevery(1, function() end, { worker = \"two\" })\nat_worker_start(5)\nevery(0, function() end)\n",
    );
    let out = std::process::Command::new(bin())
        .arg("-t")
        .arg("-c")
        .arg(&conf)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("site.lua:2") && err.contains("every needs a number"),
        "{err}"
    );
    assert!(
        err.contains("site.lua:3") && err.contains("\"all\" or \"one\""),
        "{err}"
    );
    assert!(
        err.contains("site.lua:4") && err.contains("at_worker_start needs a function"),
        "{err}"
    );
    assert!(
        err.contains("site.lua:5") && err.contains("between"),
        "{err}"
    );
}
