//! `access_log_format` end to end: the json format (escaping for any byte), a template with
//! every field, the body byte count without chunk framing, and a bad template refused by -t
//! with file:line.

mod common;
mod fcgi_common;

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use common::*;

fn log_lines(path: &Path, want: usize) -> Vec<String> {
    let mut lines = Vec::new();
    wait_for("access log lines", Duration::from_secs(5), || {
        lines = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect();
        lines.len() >= want
    });
    lines
}

/// Sends a request on its own connection and reads to the end.
fn send(s: &Server, req: &[u8]) -> Response {
    let mut c = s.connect();
    c.send(req);
    let r = c.response(false);
    assert!(c.closed());
    r
}

#[test]
fn json_lines_escape_any_byte() {
    let s = Server::start(
        r#"access_log = "access.log", access_log_format = "json""#,
        &[("a.txt", b"hello")],
    );
    // The harness's probe wrote a line first; ours are the last two.
    let before = log_lines(&s.dir.path().join("access.log"), 1).len();
    let mut req = b"GET /a.txt?q=\"x\\y HTTP/1.1\r\nHost: t\r\nConnection: close\r\nUser-Agent: a \"quoted\" \\ agent\r\nReferer: http://r/\xff\xc3\xa9\r\n\r\n".to_vec();
    assert_eq!(send(&s, &req).status, 200);
    req = b"GET /nope HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_vec();
    assert_eq!(send(&s, &req).status, 404);
    let lines = log_lines(&s.dir.path().join("access.log"), before + 2);
    let parse = |l: &str| -> serde_json::Value {
        serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))
    };
    // Two workers flush their buffers independently: find each line by its request.
    let ours: Vec<serde_json::Value> = lines[before..].iter().map(|l| parse(l)).collect();
    let by = |path: &str| {
        ours.iter()
            .find(|v| v["request"].as_str().is_some_and(|r| r.contains(path)))
            .unwrap_or_else(|| panic!("no line for {path}: {lines:?}"))
    };
    let a = by("/a.txt");
    assert_eq!(a["remote_addr"], "127.0.0.1");
    assert_eq!(a["request"], "GET /a.txt?q=\"x\\y HTTP/1.1");
    assert_eq!(a["status"], 200);
    assert_eq!(a["body_bytes_sent"], 5);
    assert!(a["request_time"].as_f64().is_some_and(|t| t >= 0.0));
    assert_eq!(a["http_user_agent"], "a \"quoted\" \\ agent");
    // A byte that is not UTF-8 keeps its value; valid UTF-8 stays as it is.
    assert_eq!(a["http_referer"], "http://r/\u{ff}é");
    assert_eq!(a["upstream_addr"], "");
    assert_eq!(a["tls_version"], "");
    assert!(a["time_local"].as_str().is_some_and(|t| t.contains('/')));
    let b = by("/nope");
    assert_eq!(b["status"], 404);
    assert_eq!(b["http_referer"], "");
    assert!(b["body_bytes_sent"].as_u64().is_some_and(|n| n > 0));
}

#[test]
fn a_template_has_every_field() {
    let fmt = "$remote_addr|$remote_port|$status|$body_bytes_sent|$request_method|$request_uri|$http_x_test|$request_time|$upstream_addr|$upstream_response_time|$tls_version|${status}ok";
    let s = Server::start(
        &format!(r#"access_log = "access.log", access_log_format = "{fmt}""#),
        &[("a.txt", b"hello")],
    );
    let path = s.dir.path().join("access.log");
    let before = log_lines(&path, 1).len();
    let mut c = s.connect();
    let port = c.stream.local_addr().unwrap().port();
    c.send(b"HEAD /a.txt?x=1 HTTP/1.1\r\nHost: t\r\nX-Test: v \"1\"\r\nConnection: close\r\n\r\n");
    let r = c.response(true);
    assert_eq!(r.status, 200);
    assert!(c.closed());
    let lines = log_lines(&path, before + 1);
    let f: Vec<&str> = lines[before].split('|').collect();
    assert_eq!(f.len(), 12, "{}", lines[before]);
    assert_eq!(f[0], "127.0.0.1");
    assert_eq!(f[1], port.to_string());
    assert_eq!(&f[2..7], ["200", "0", "HEAD", "/a.txt?x=1", "v \\\"1\\\""]);
    let t = f[7];
    assert!(
        t.split_once('.')
            .is_some_and(|(s, ms)| s.parse::<u64>().is_ok() && ms.len() == 3),
        "{t}"
    );
    assert_eq!(&f[8..], ["-", "-", "-", "200ok"]);
}

#[test]
fn body_bytes_leave_out_chunk_framing() {
    let dir = fcgi_common::site_dir();
    let o = fcgi_common::Opts {
        server_extra: r#"access_log = "access.log""#,
        ..Default::default()
    };
    let config = fcgi_common::config_text(dir.path(), &o);
    let f = fcgi_common::Fcgi::start_in(dir, &config);
    let path = f.dir().join("access.log");
    let before = log_lines(&path, 1).len();
    let n = 300_000;
    let mut c = std::net::TcpStream::connect(f.addr()).unwrap();
    std::io::Write::write_all(
        &mut c,
        format!("GET /t.php?mode=huge&bytes={n} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    let mut raw = Vec::new();
    c.read_to_end(&mut raw).unwrap();
    let head_end = find(&raw, b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    // On the wire: the body plus its framing.
    assert!(raw.len() - head_end > n);
    let lines = log_lines(&path, before + 1);
    let line = &lines[before];
    assert!(
        line.contains(&format!("\" 200 {n} \"")),
        "the logged count is the body without framing: {line}"
    );
}

#[test]
fn a_bad_template_is_refused_with_its_line() {
    let dir = TempDir::new("logfmt");
    std::fs::create_dir_all(dir.path().join("www")).unwrap();
    let conf = dir.write(
        "site.lua",
        b"server { root = \"www\",\n  access_log_format = \"$remote_addr $nope\" }\n",
    );
    let out = std::process::Command::new(bin())
        .arg("-t")
        .arg("-c")
        .arg(&conf)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("site.lua:"), "{text}");
    assert!(text.contains("unknown field $nope"), "{text}");
}
