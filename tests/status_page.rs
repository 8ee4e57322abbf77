//! The status page end to end: `status_path` and the `status()` decision, Prometheus text
//! checked by a strict parser, JSON, and totals that equal the requests made and never go
//! backwards across a worker's respawn and a reload.

mod common;
mod proxy_common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;

/// One parsed exposition: series (name with its labels, sorted) → value, and each family's type.
#[derive(Debug, Default)]
struct Exposition {
    samples: BTreeMap<String, f64>,
    types: BTreeMap<String, String>,
}

impl Exposition {
    fn get(&self, series: &str) -> f64 {
        *self
            .samples
            .get(series)
            .unwrap_or_else(|| panic!("no series {series} in {:#?}", self.samples.keys()))
    }
}

fn is_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_' || ch == ':')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
}

/// A strict parser of the text format 0.0.4: every line is a HELP, a TYPE or a sample; a
/// sample's family has a TYPE before it, names and labels are well formed, label values use
/// only the three escapes, no series appears twice, values are numbers, the text ends in '\n'.
fn parse_prometheus(text: &str) -> Exposition {
    assert!(
        text.ends_with('\n'),
        "the exposition must end with a newline"
    );
    let mut e = Exposition::default();
    for (n, line) in text.lines().enumerate() {
        let at = || format!("line {}: {line:?}", n + 1);
        if let Some(rest) = line.strip_prefix("# ") {
            let mut f = rest.splitn(3, ' ');
            let (kw, name, tail) = (f.next(), f.next(), f.next());
            let name = name.unwrap_or_else(|| panic!("{}", at()));
            assert!(is_name(name), "{}", at());
            match kw {
                Some("HELP") => assert!(tail.is_some_and(|t| !t.is_empty()), "{}", at()),
                Some("TYPE") => {
                    let t = tail.unwrap_or_else(|| panic!("{}", at()));
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                        "{}",
                        at()
                    );
                    assert!(
                        e.types.insert(name.to_string(), t.to_string()).is_none(),
                        "TYPE twice: {}",
                        at()
                    );
                }
                _ => panic!("unknown comment {}", at()),
            }
            continue;
        }
        assert!(!line.is_empty() && !line.starts_with('#'), "{}", at());
        let name_end = line.find(['{', ' ']).unwrap_or_else(|| panic!("{}", at()));
        let name = &line[..name_end];
        assert!(is_name(name), "{}", at());
        assert!(
            e.types.contains_key(name),
            "sample before its TYPE: {}",
            at()
        );
        let mut labels = Vec::new();
        let mut rest = &line[name_end..];
        if let Some(r) = rest.strip_prefix('{') {
            let mut chars = r.char_indices().peekable();
            let end;
            loop {
                // label name
                let start = chars.peek().map(|(i, _)| *i).unwrap_or(r.len());
                if r[start..].starts_with('}') {
                    end = start + 1;
                    break;
                }
                let eq = r[start..].find('=').unwrap_or_else(|| panic!("{}", at())) + start;
                let lname = &r[start..eq];
                assert!(is_name(lname) && !lname.starts_with("__"), "{}", at());
                assert!(r[eq + 1..].starts_with('"'), "{}", at());
                while chars.peek().is_some_and(|(i, _)| *i <= eq + 1) {
                    chars.next();
                }
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, '\\')) => value.push('\\'),
                            Some((_, '"')) => value.push('"'),
                            _ => panic!("bad escape {}", at()),
                        },
                        Some((_, '"')) => break,
                        Some((_, '\n')) | None => panic!("unterminated label {}", at()),
                        Some((_, c)) => value.push(c),
                    }
                }
                labels.push((lname.to_string(), value));
                match chars.next() {
                    Some((_, ',')) => continue,
                    Some((i, '}')) => {
                        end = i + 1;
                        break;
                    }
                    _ => panic!("{}", at()),
                }
            }
            rest = &r[end..];
        }
        let value = rest
            .strip_prefix(' ')
            .unwrap_or_else(|| panic!("no value: {}", at()));
        assert!(
            !value.contains(' '),
            "timestamps are not expected: {}",
            at()
        );
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {}", at()));
        labels.sort();
        let series = if labels.is_empty() {
            name.to_string()
        } else {
            let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("{name}{{{}}}", l.join(","))
        };
        assert!(
            e.samples.insert(series, v).is_none(),
            "series twice: {}",
            at()
        );
    }
    e
}

/// A request on its own connection, read to the end (the server closes it once the request
/// is counted).
fn request(s: &Server, path: &str) -> Response {
    let mut c = s.connect();
    c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes());
    let r = c.response(false);
    assert!(c.closed());
    r
}

fn metrics(s: &Server, path: &str) -> (Exposition, usize) {
    let r = request(s, path);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    (parse_prometheus(&r.text()), r.body.len())
}

#[test]
fn parser_rejects_what_is_not_the_text_format() {
    let ok = "# HELP a_total x\n# TYPE a_total counter\na_total{k=\"v\\\"\\n\"} 3\n";
    assert_eq!(parse_prometheus(ok).get("a_total{k=v\"\n}"), 3.0);
    for bad in [
        "a 1\n",                            // no TYPE
        "# TYPE a gauge\na 1",              // no final newline
        "# TYPE a gauge\na{k=v} 1\n",       // unquoted label
        "# TYPE a gauge\na 1\na 2\n",       // twice
        "# TYPE a gauge\na x\n",            // not a number
        "# TYPE a wrong\na 1\n",            // bad type
        "# TYPE a gauge\na{k=\"\\t\"} 1\n", // bad escape
    ] {
        let r = std::panic::catch_unwind(|| parse_prometheus(bad));
        assert!(r.is_err(), "accepted {bad:?}");
    }
}

#[test]
fn totals_equal_the_requests_made_and_survive_a_respawn_and_a_reload() {
    let s = Server::start(
        r#"status_path = "/server-status""#,
        &[("a.txt", b"hello"), ("b.txt", b"0123456789")],
    );
    // The harness's readiness probe reads only the start of its answer: give the worker the
    // moment it takes to count it, so that the baseline holds still.
    std::thread::sleep(Duration::from_millis(300));
    let (before, first_len) = metrics(&s, "/server-status");
    let req0 = before.get("luahttpd_requests_total");
    let ok0 = before.get("luahttpd_responses_total{class=2xx}");
    let nf0 = before.get("luahttpd_responses_total{class=4xx}");
    let out0 = before.get("luahttpd_sent_bytes_total");
    assert_eq!(before.types["luahttpd_requests_total"], "counter");
    assert_eq!(before.get("luahttpd_workers"), 2.0);
    for st in ["reading", "writing", "backend", "keepalive"] {
        assert!(before
            .samples
            .contains_key(&format!("luahttpd_connections{{state={st}}}")));
    }
    let beats: Vec<_> = before
        .samples
        .iter()
        .filter(|(k, _)| k.starts_with("luahttpd_worker_heartbeat_age_seconds{"))
        .collect();
    assert_eq!(beats.len(), 2, "{beats:?}");
    assert!(beats.iter().all(|(_, v)| **v >= 0.0 && **v < 60.0));

    // 3 × 200 (5 + 10 + 5 body bytes) and 2 × 404.
    let mut body = 0;
    for p in ["/a.txt", "/b.txt", "/a.txt", "/missing", "/missing"] {
        let r = request(&s, p);
        assert_eq!(r.status, if p == "/missing" { 404 } else { 200 });
        body += r.body.len();
    }
    let (after, _) = metrics(&s, "/server-status");
    assert_eq!(after.get("luahttpd_requests_total"), req0 + 1.0 + 5.0);
    assert_eq!(
        after.get("luahttpd_responses_total{class=2xx}"),
        ok0 + 1.0 + 3.0
    );
    assert_eq!(after.get("luahttpd_responses_total{class=4xx}"), nf0 + 2.0);
    assert_eq!(
        after.get("luahttpd_sent_bytes_total"),
        out0 + (first_len + body) as f64
    );
    let total: f64 = ["1xx", "2xx", "3xx", "4xx", "5xx"]
        .iter()
        .map(|c| after.get(&format!("luahttpd_responses_total{{class={c}}}")))
        .sum();
    assert_eq!(total, after.get("luahttpd_requests_total"));

    // A worker killed and respawned: its counts move to the retired totals, none lost.
    let pids = s.worker_pids();
    let victim = pids[0];
    assert_eq!(unsafe_kill(victim), 0);
    wait_for("a respawned worker", Duration::from_secs(10), || {
        let now = s.worker_pids();
        now.len() == 2 && !now.contains(&victim)
    });
    let (respawned, _) = metrics(&s, "/server-status");
    let req1 = respawned.get("luahttpd_requests_total");
    assert_eq!(req1, after.get("luahttpd_requests_total") + 1.0);
    assert_eq!(respawned.get("luahttpd_worker_respawns_total"), 1.0);

    // A reload: a new generation, counted, and still the same totals.
    assert_eq!(respawned.get("luahttpd_reloads_total"), 0.0);
    s.signal(10); // SIGUSR1
    wait_for("the reload", Duration::from_secs(15), || {
        let (m, _) = metrics(&s, "/server-status");
        m.get("luahttpd_reloads_total") == 1.0 && m.get("luahttpd_generation") == 2.0
    });
    let (reloaded, _) = metrics(&s, "/server-status");
    assert_eq!(reloaded.get("luahttpd_last_reload_success"), 1.0);
    assert_eq!(reloaded.get("luahttpd_reload_failures_total"), 0.0);
    assert!(reloaded.get("luahttpd_requests_total") > req1);
    assert!(
        reloaded.get("luahttpd_responses_total{class=2xx}")
            >= respawned.get("luahttpd_responses_total{class=2xx}") + 1.0
    );
}

fn unsafe_kill(pid: i32) -> i32 {
    std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .map_or(1, |s| s.code().unwrap_or(1))
}

#[test]
fn json_and_the_status_decision() {
    let s = Server::start_config(
        {
            let d = TempDir::new("status");
            std::fs::create_dir_all(d.path().join("www")).unwrap();
            d
        },
        &format!(
            "server {{ {BASE} }}\nroute(function(req)\n  if req.path == '/metrics' then return status() end\nend)\n"
        ),
    );
    assert_eq!(request(&s, "/nothing").status, 404);
    let (m, _) = metrics(&s, "/metrics");
    assert!(m.get("luahttpd_requests_total") >= 1.0);
    assert!(m.get("luahttpd_responses_total{class=4xx}") >= 1.0);
    let r = request(&s, "/metrics?format=json");
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
    assert!(v["requests"].as_u64().expect("requests") >= 2);
    assert_eq!(v["workers"].as_array().expect("workers").len(), 2);
    assert!(v["responses"]["2xx"].as_u64().expect("2xx") >= 1);
    assert!(v["connections"]["reading"].is_u64());
    assert_eq!(v["reloads"], 0);
    // Without status_path the default rules still own the path.
    assert_eq!(request(&s, "/server-status").status, 404);
}

#[test]
fn the_repl_status_shows_the_same_responses_by_class() {
    let s = Server::start(
        r#"status_path = "/server-status", admin = "admin.sock""#,
        &[("a.txt", b"x")],
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(request(&s, "/a.txt").status, 200);
    assert_eq!(request(&s, "/missing").status, 404);
    let (page, _) = metrics(&s, "/server-status");
    let out = std::process::Command::new(bin())
        .arg("repl")
        .arg(s.dir.path().join("admin.sock"))
        .args(["-e", "status()", "--json"])
        .output()
        .expect("run the repl client");
    assert!(out.status.success(), "{out:?}");
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let r = &st["totals"]["responses"];
    // The status page's own response counts once it started, after the page was made.
    assert_eq!(
        r["2xx"].as_f64(),
        Some(page.get("luahttpd_responses_total{class=2xx}") + 1.0),
        "{st}"
    );
    assert_eq!(
        r["4xx"].as_f64(),
        Some(page.get("luahttpd_responses_total{class=4xx}")),
        "{st}"
    );
}

#[test]
fn proxy_upstream_addresses_are_on_the_page() {
    let up = proxy_common::Upstream::start("u1");
    let s = Server::start_config(
        {
            let d = TempDir::new("status-upstream");
            std::fs::create_dir_all(d.path().join("www")).unwrap();
            d
        },
        &format!(
            "server {{ {BASE}, status_path = \"/server-status\" }}\n\
             upstream \"app\" {{ address = \"{}\" }}\n\
             route(function(req)\n  if req.path == '/api/name' then return proxy('app', {{ path = '/name' }}) end\nend)\n",
            up.addr
        ),
    );
    let series = |m: &str| format!("{m}{{address={},state=up,upstream=app}}", up.addr);
    let (before, _) = metrics(&s, "/server-status");
    assert_eq!(before.types["luahttpd_upstream_requests_total"], "counter");
    assert_eq!(before.get(&series("luahttpd_upstream_up")), 1.0);
    assert_eq!(before.get(&series("luahttpd_upstream_requests_total")), 0.0);
    // No FastCGI backend here, so none of its families.
    assert!(!before.types.contains_key("luahttpd_backend_up"));

    for _ in 0..3 {
        let r = request(&s, "/api/name");
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "u1");
    }
    let (after, _) = metrics(&s, "/server-status");
    assert_eq!(after.get(&series("luahttpd_upstream_requests_total")), 3.0);
    assert_eq!(after.get(&series("luahttpd_upstream_errors_total")), 0.0);
    assert_eq!(after.get(&series("luahttpd_upstream_active")), 0.0);

    let r = request(&s, "/server-status?format=json");
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
    let rows = v["upstreams"].as_array().expect("upstreams");
    assert_eq!(rows.len(), 1, "{v}");
    assert_eq!(rows[0]["name"], "app");
    assert_eq!(rows[0]["address"], up.addr.as_str());
    assert_eq!(rows[0]["state"], "up");
    assert_eq!(rows[0]["up"], true);
    assert_eq!(rows[0]["total"], 3);
    assert_eq!(v["backends"].as_array().map(Vec::len), Some(0), "{v}");
}
