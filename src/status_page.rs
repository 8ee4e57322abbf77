//! The status page (`status_path` in `server{}`, or a route's `status()` decision): the
//! scoreboard's figures as Prometheus text (the default) or JSON (`?format=json`).
//!
//! Everything is read from the shared scoreboard when the page is asked for: the request path
//! pays nothing for it (the counters it shows are the ones the workers keep anyway: by status
//! class when a request finishes, by connection state when a connection changes state).
//! Totals are the watcher's retired part plus the live slots, read consistently
//! ([`Scoreboard::consistent`]), so they never go backwards across respawns and reloads.
//!
//! Backends are both kinds that have scoreboard proc slots: FastCGI addresses
//! (`luahttpd_backend_*`, JSON `backends`) and HTTP upstream addresses (`luahttpd_upstream_*`,
//! JSON `upstreams`), each with the state the REPL's `backends()` shows.

use crate::admin::scoreboard::{
    now_ms, ProcState, Scoreboard, ServerView, State, WorkerSnapshot, CONN_STATES, PROXY_DRAINED,
    PROXY_UNHEALTHY,
};

/// Whether a worker slot holds a worker: one still starting counts (the watcher claims its
/// slot before the fork, with pid 0 until the worker writes its own).
fn occupied(w: &WorkerSnapshot) -> bool {
    w.state != State::Empty || w.pid != 0
}
use crate::config::Config;
use crate::fastcgi::pool::{proc_index, upstream_addrs};
use crate::json_text::push_quoted;
use crate::reply::{Body, Reply};
use std::fmt::Write;

/// How the page is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text exposition format 0.0.4.
    Prometheus,
    /// One JSON object.
    Json,
}

impl Format {
    /// `?format=json` (anywhere in the query) asks for JSON; anything else is Prometheus.
    pub fn from_query(query: Option<&str>) -> Format {
        let json = query.is_some_and(|q| q.split('&').any(|p| p == "format=json"));
        if json {
            Format::Json
        } else {
            Format::Prometheus
        }
    }
}

/// One backend address as the page shows it.
struct Backend {
    name: String,
    address: String,
    state: &'static str,
    up: bool,
    active: u32,
    total: u64,
    errors: u64,
}

/// The page for `config`'s server from `board`, or a 503 when there is no scoreboard.
pub fn reply(board: Option<&Scoreboard>, config: &Config, format: Format) -> Reply {
    let Some(board) = board else {
        return Reply::error(503);
    };
    let now = now_ms();
    let view = board.consistent(now);
    let backends = backends(board, config, now);
    let upstreams = upstreams(board, config, now);
    let (body, ctype) = match format {
        Format::Prometheus => (
            prometheus(&view, &backends, &upstreams).into_bytes(),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        Format::Json => (json(&view, &backends, &upstreams), "application/json"),
    };
    let mut r = Reply::new(200, Body::Bytes(body));
    r.header("Content-Type", ctype);
    r.header("Cache-Control", "no-store");
    r
}

fn backends(board: &Scoreboard, config: &Config, now: u64) -> Vec<Backend> {
    let index = proc_index(config);
    let mut out = Vec::new();
    for (b, def) in config.fastcgi.iter().enumerate() {
        for (u, addr) in upstream_addrs(def).iter().enumerate() {
            let Some(snap) = index.index(b, u).and_then(|i| board.proc_snapshot(i, now)) else {
                continue;
            };
            let disabled = snap.disabled_for_ms > 0;
            let state = match (snap.state, def.spawn.is_some()) {
                _ if disabled => "disabled",
                (ProcState::Up, _) => "up",
                (ProcState::Down, _) => "down",
                (ProcState::Respawning, _) => "respawning",
                (ProcState::Unknown, false) => "external",
                (ProcState::Unknown, true) => "unknown",
            };
            out.push(Backend {
                name: def.name.clone(),
                address: crate::fastcgi::spawn::describe(addr),
                state,
                up: matches!(state, "up" | "external"),
                active: snap.active,
                total: snap.total,
                errors: snap.errors,
            });
        }
    }
    out
}

/// What an HTTP upstream address's proc slot says: drained (by the REPL), unhealthy (its
/// health check fails), down (left out after failures) or up, as `backends()` shows it.
pub fn upstream_state(flags: u8, disabled_for_ms: u64) -> &'static str {
    if flags & PROXY_DRAINED != 0 {
        "drained"
    } else if flags & PROXY_UNHEALTHY != 0 {
        "unhealthy"
    } else if disabled_for_ms > 0 {
        "down"
    } else {
        "up"
    }
}

/// One row per HTTP upstream address (`upstream "name" { address = … }`), from its proc slot.
fn upstreams(board: &Scoreboard, config: &Config, now: u64) -> Vec<Backend> {
    let index = crate::proxy::pool::proc_index(config);
    let mut out = Vec::new();
    for (u, def) in config.upstreams.iter().enumerate() {
        for (a, addr) in def.address.iter().enumerate() {
            let Some(snap) = index.index(u, a).and_then(|i| board.proc_snapshot(i, now)) else {
                continue;
            };
            let state = upstream_state(snap.flags, snap.disabled_for_ms);
            out.push(Backend {
                name: def.name.clone(),
                address: crate::proxy::pool::addr_text(&addr.addr),
                state,
                up: state == "up",
                active: snap.active,
                total: snap.total,
                errors: snap.errors,
            });
        }
    }
    out
}

/// A backend metric: name, type, help, value.
type Metric = (
    &'static str,
    &'static str,
    &'static str,
    fn(&Backend) -> u64,
);

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// A label value escaped as the text format asks (backslash, quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn prometheus(v: &ServerView, backends: &[Backend], upstreams: &[Backend]) -> String {
    let mut o = String::with_capacity(4096);
    let t = &v.totals;
    family(
        &mut o,
        "luahttpd_requests_total",
        "counter",
        "Requests answered.",
    );
    let _ = writeln!(o, "luahttpd_requests_total {}", t.requests);
    family(
        &mut o,
        "luahttpd_responses_total",
        "counter",
        "Responses by status class.",
    );
    for (c, n) in CLASSES.iter().zip(t.statuses) {
        let _ = writeln!(o, "luahttpd_responses_total{{class=\"{c}\"}} {n}");
    }
    family(
        &mut o,
        "luahttpd_received_bytes_total",
        "counter",
        "Bytes of requests (heads and bodies) read from clients.",
    );
    let _ = writeln!(o, "luahttpd_received_bytes_total {}", t.bytes_in);
    family(
        &mut o,
        "luahttpd_sent_bytes_total",
        "counter",
        "Body bytes sent to clients (without chunk framing).",
    );
    let _ = writeln!(o, "luahttpd_sent_bytes_total {}", t.bytes_out);
    family(
        &mut o,
        "luahttpd_connections",
        "gauge",
        "Open client connections by state.",
    );
    let live: Vec<_> = v.workers.iter().filter(|w| occupied(w)).collect();
    for (i, st) in CONN_STATES.iter().enumerate() {
        let n: u64 = live.iter().map(|w| u64::from(w.conn_states[i])).sum();
        let _ = writeln!(o, "luahttpd_connections{{state=\"{}\"}} {n}", st.name());
    }
    family(
        &mut o,
        "luahttpd_workers",
        "gauge",
        "Worker processes alive.",
    );
    let _ = writeln!(o, "luahttpd_workers {}", live.len());
    family(
        &mut o,
        "luahttpd_worker_heartbeat_age_seconds",
        "gauge",
        "Time since each worker's event loop last turned.",
    );
    for (slot, w) in v.workers.iter().enumerate().filter(|(_, w)| occupied(w)) {
        let _ = writeln!(
            o,
            "luahttpd_worker_heartbeat_age_seconds{{slot=\"{slot}\",pid=\"{}\",generation=\"{}\",state=\"{}\"}} {:.3}",
            w.pid,
            w.generation,
            w.state.name(),
            w.heartbeat_age_ms as f64 / 1000.0
        );
    }
    family(
        &mut o,
        "luahttpd_worker_respawns_total",
        "counter",
        "Workers respawned after dying.",
    );
    let _ = writeln!(o, "luahttpd_worker_respawns_total {}", t.respawns);
    family(
        &mut o,
        "luahttpd_generation",
        "gauge",
        "Config generation running.",
    );
    let _ = writeln!(o, "luahttpd_generation {}", v.generation);
    family(
        &mut o,
        "luahttpd_reloads_total",
        "counter",
        "Reloads attempted.",
    );
    let _ = writeln!(o, "luahttpd_reloads_total {}", v.reloads);
    family(
        &mut o,
        "luahttpd_reload_failures_total",
        "counter",
        "Reloads that failed (the running generation went on).",
    );
    let _ = writeln!(o, "luahttpd_reload_failures_total {}", v.reload_failures);
    if let Some((at, ok)) = v.last_reload {
        family(
            &mut o,
            "luahttpd_last_reload_success",
            "gauge",
            "Whether the last reload succeeded.",
        );
        let _ = writeln!(o, "luahttpd_last_reload_success {}", u8::from(ok));
        family(
            &mut o,
            "luahttpd_last_reload_timestamp_seconds",
            "gauge",
            "When the last reload ended.",
        );
        let _ = writeln!(
            o,
            "luahttpd_last_reload_timestamp_seconds {:.3}",
            at as f64 / 1000.0
        );
    }
    if !backends.is_empty() {
        let metrics: [Metric; 4] = [
            (
                "luahttpd_backend_active",
                "gauge",
                "Requests in flight at a FastCGI address.",
                |b| u64::from(b.active),
            ),
            (
                "luahttpd_backend_requests_total",
                "counter",
                "Requests sent to a FastCGI address.",
                |b| b.total,
            ),
            (
                "luahttpd_backend_errors_total",
                "counter",
                "Failures talking to a FastCGI address.",
                |b| b.errors,
            ),
            (
                "luahttpd_backend_up",
                "gauge",
                "1 if a FastCGI address is running and not left out after a failure.",
                |b| u64::from(b.up),
            ),
        ];
        for (name, kind, help, value) in metrics {
            family(&mut o, name, kind, help);
            for b in backends {
                let _ = writeln!(
                    o,
                    "{name}{{backend=\"{}\",address=\"{}\",state=\"{}\"}} {}",
                    label(&b.name),
                    label(&b.address),
                    b.state,
                    value(b)
                );
            }
        }
    }
    if !upstreams.is_empty() {
        let metrics: [Metric; 4] = [
            (
                "luahttpd_upstream_active",
                "gauge",
                "Requests in flight at an HTTP upstream address.",
                |b| u64::from(b.active),
            ),
            (
                "luahttpd_upstream_requests_total",
                "counter",
                "Requests sent to an HTTP upstream address.",
                |b| b.total,
            ),
            (
                "luahttpd_upstream_errors_total",
                "counter",
                "Failures talking to an HTTP upstream address.",
                |b| b.errors,
            ),
            (
                "luahttpd_upstream_up",
                "gauge",
                "1 if an HTTP upstream address is neither drained, unhealthy nor left out.",
                |b| u64::from(b.up),
            ),
        ];
        for (name, kind, help, value) in metrics {
            family(&mut o, name, kind, help);
            for b in upstreams {
                let _ = writeln!(
                    o,
                    "{name}{{upstream=\"{}\",address=\"{}\",state=\"{}\"}} {}",
                    label(&b.name),
                    label(&b.address),
                    b.state,
                    value(b)
                );
            }
        }
    }
    o
}

fn json(v: &ServerView, backends: &[Backend], upstreams: &[Backend]) -> Vec<u8> {
    let t = &v.totals;
    let mut o = Vec::with_capacity(2048);
    let _ = write!(
        Text(&mut o),
        "{{\"requests\":{},\"responses\":{{",
        t.requests
    );
    for (i, (c, n)) in CLASSES.iter().zip(t.statuses).enumerate() {
        let sep = if i > 0 { "," } else { "" };
        let _ = write!(Text(&mut o), "{sep}\"{c}\":{n}");
    }
    let _ = write!(
        Text(&mut o),
        "}},\"bytes_in\":{},\"bytes_out\":{},\"connections\":{{",
        t.bytes_in,
        t.bytes_out
    );
    let live: Vec<_> = v
        .workers
        .iter()
        .enumerate()
        .filter(|(_, w)| occupied(w))
        .collect();
    for (i, st) in CONN_STATES.iter().enumerate() {
        let n: u64 = live.iter().map(|(_, w)| u64::from(w.conn_states[i])).sum();
        let sep = if i > 0 { "," } else { "" };
        let _ = write!(Text(&mut o), "{sep}\"{}\":{n}", st.name());
    }
    let _ = write!(
        Text(&mut o),
        "}},\"respawns\":{},\"generation\":{},\"reloads\":{},\"reload_failures\":{},\"last_reload\":",
        t.respawns,
        v.generation,
        v.reloads,
        v.reload_failures
    );
    match v.last_reload {
        None => o.extend_from_slice(b"null"),
        Some((at, ok)) => {
            let _ = write!(Text(&mut o), "{{\"at_ms\":{at},\"ok\":{ok}}}");
        }
    }
    o.extend_from_slice(b",\"workers\":[");
    for (n, (slot, w)) in live.iter().enumerate() {
        if n > 0 {
            o.push(b',');
        }
        let _ = write!(
            Text(&mut o),
            "{{\"slot\":{slot},\"pid\":{},\"generation\":{},\"state\":\"{}\",\"heartbeat_age_ms\":{},\"connections\":{},\"requests\":{}}}",
            w.pid,
            w.generation,
            w.state.name(),
            w.heartbeat_age_ms,
            w.connections,
            w.requests
        );
    }
    o.extend_from_slice(b"],\"backends\":");
    json_rows(&mut o, backends);
    o.extend_from_slice(b",\"upstreams\":");
    json_rows(&mut o, upstreams);
    o.extend_from_slice(b"}\n");
    o
}

/// A JSON array of backend rows.
fn json_rows(o: &mut Vec<u8>, rows: &[Backend]) {
    o.push(b'[');
    for (n, b) in rows.iter().enumerate() {
        if n > 0 {
            o.push(b',');
        }
        o.extend_from_slice(b"{\"name\":");
        push_quoted(o, &b.name);
        o.extend_from_slice(b",\"address\":");
        push_quoted(o, &b.address);
        let _ = write!(
            Text(o),
            ",\"state\":\"{}\",\"up\":{},\"active\":{},\"total\":{},\"errors\":{}}}",
            b.state,
            b.up,
            b.active,
            b.total,
            b.errors
        );
    }
    o.push(b']');
}

/// `write!` into a byte buffer.
struct Text<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Text<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::scoreboard::State;

    #[test]
    fn both_formats_show_the_counters() {
        let config = crate::config::load_source_for_tests("server { root = '.' }");
        let sb = Scoreboard::new(2, 0).unwrap();
        let slot = sb.worker(1).unwrap();
        slot.claim(77, 1, now_ms());
        slot.set_state(State::Idle);
        slot.response_status(200);
        slot.response_status(404);
        slot.request_done(10, 5);
        slot.request_done(10, 6);
        slot.conn_moved(None, Some(State::KeepAlive));
        let r = reply(Some(&sb), &config, Format::Prometheus);
        let Body::Bytes(text) = r.body else { panic!() };
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("\nluahttpd_requests_total 2\n"), "{text}");
        assert!(text.contains("luahttpd_responses_total{class=\"4xx\"} 1\n"));
        assert!(text.contains("luahttpd_connections{state=\"keepalive\"} 1\n"));
        assert!(text.contains("luahttpd_sent_bytes_total 11\n"));
        assert!(text.contains("heartbeat_age_seconds{slot=\"1\",pid=\"77\""));
        let r = reply(Some(&sb), &config, Format::Json);
        let Body::Bytes(body) = r.body else { panic!() };
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["requests"], 2);
        assert_eq!(v["responses"]["2xx"], 1);
        assert_eq!(v["connections"]["keepalive"], 1);
        assert_eq!(v["workers"][0]["pid"], 77);
        assert_eq!(Format::from_query(Some("a=1&format=json")), Format::Json);
        assert_eq!(Format::from_query(None), Format::Prometheus);
    }

    #[test]
    fn an_upstream_address_state_puts_a_drain_before_health_before_back_off() {
        assert_eq!(upstream_state(0, 0), "up");
        assert_eq!(upstream_state(0, 500), "down");
        assert_eq!(upstream_state(PROXY_UNHEALTHY, 500), "unhealthy");
        assert_eq!(
            upstream_state(PROXY_DRAINED | PROXY_UNHEALTHY, 500),
            "drained"
        );
    }

    #[test]
    fn a_worker_still_starting_is_counted() {
        let config = crate::config::load_source_for_tests("server { root = '.' }");
        let sb = Scoreboard::new(2, 0).unwrap();
        sb.worker(0).unwrap().claim(77, 1, now_ms());
        // As the watcher claims a slot before the fork: pid unknown yet, state Starting.
        sb.worker(1).unwrap().claim(0, 1, now_ms());
        let r = reply(Some(&sb), &config, Format::Prometheus);
        let Body::Bytes(text) = r.body else { panic!() };
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("\nluahttpd_workers 2\n"), "{text}");
        let r = reply(Some(&sb), &config, Format::Json);
        let Body::Bytes(body) = r.body else { panic!() };
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["workers"].as_array().map(Vec::len), Some(2), "{v}");
        assert_eq!(v["workers"][1]["state"], "starting");
    }
}
