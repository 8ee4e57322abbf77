//! A reload that changes a spawned backend restarts its processes only once no request is in
//! flight on them: php-cgi dies at once on SIGTERM, with the request it runs, and a POST cut
//! that way cannot be retried (the soak saw these around reloads).

mod admin_common;
mod common;

use admin_common::{config_text, eval_ok, site, sock, wait_for};
use common::{Client, Server};
use serde_json::Value;
use std::time::{Duration, Instant};

fn backend_pids(path: &std::path::Path) -> Vec<i64> {
    match eval_ok(path, "backends()") {
        Value::Array(rows) => rows
            .iter()
            .filter(|r| r["name"] == "t")
            .filter_map(|r| r["pid"].as_i64())
            .collect(),
        other => panic!("{other}"),
    }
}

#[test]
fn a_changed_backend_is_restarted_only_after_its_request_in_flight_ends() {
    let dir = site("reload-backend-busy", &[("t.php", b""), ("a.txt", b"a")]);
    let root = dir.path().to_path_buf();
    let config = |env: &str| {
        config_text(
            "workers = 1",
            &format!(
                "fastcgi \"t\" {{ spawn = \"{}\", procs = 1, socket = \"unix:{}/t.sock\", \
                 extensions = {{ \".php\" }}, env = {{ V = \"{env}\" }} }}\n",
                env!("CARGO_BIN_EXE_luahttpd-fcgi-test"),
                root.display()
            ),
        )
    };
    let s = Server::start_config(dir, &config("1"));
    let path = sock(&s);
    let before = backend_pids(&path);
    assert_eq!(before.len(), 1);

    // A keep-alive connection holds the old worker: the changed backend's processes are
    // restarted only once the old generation has drained.
    let mut old = s.connect();
    old.send(b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(old.response(false).status, 200);

    std::fs::write(root.join("site.lua"), config("2")).unwrap();
    assert_eq!(eval_ok(&path, "reload()")["ok"], true);
    // A POST on the new generation's worker that is still running when the old one has
    // drained.
    let mut c = Client::connect(&s.addr);
    let t0 = Instant::now();
    c.send(
        b"POST /t.php?mode=slowhead&ms=4000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
          Content-Length: 2\r\n\r\nab",
    );
    // The old worker drains once its last connection closes: while the POST runs.
    std::thread::sleep(Duration::from_millis(1000));
    drop(old);
    wait_for("the old worker gone", Duration::from_secs(2), || {
        s.log_text().contains("worker of generation 1 (pid")
    });
    let r = c.response(false);
    assert!(
        t0.elapsed() >= Duration::from_millis(3900),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("slow\n"), "{}", r.text());
    // Then the process is restarted with its new definition.
    wait_for("t restarted", Duration::from_secs(5), || {
        let now = backend_pids(&path);
        now.len() == 1 && now != before
    });
    let r = common::raw(
        &s.addr,
        b"GET /t.php?mode=pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
}
