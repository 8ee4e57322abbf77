//! Shared helpers for the FastCGI integration tests: configs with spawned backends, an HTTP
//! client that decodes chunked and close-delimited bodies, a chunked encoder, the backend's
//! JSON, and process inspection.
#![allow(dead_code)]

#[allow(unused_imports)] // not every test binary uses both
pub use crate::common::{alive, wait_for};

use crate::common::{find, Server, TempDir};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The misbehaving FastCGI test backend.
pub fn fcgi_bin() -> &'static str {
    env!("CARGO_BIN_EXE_luahttpd-fcgi-test")
}

/// What a test server with one spawned backend "t" looks like.
pub struct Opts<'a> {
    /// `server.workers`.
    pub workers: u32,
    /// Extra `server { ... }` fields (without a leading comma).
    pub server_extra: &'a str,
    /// Extra spawn arguments after the program.
    pub args: &'a [&'a str],
    /// `procs`.
    pub procs: u32,
    /// Extra `fastcgi "t" { ... }` fields (without a leading comma).
    pub fcgi_extra: &'a str,
}

impl Default for Opts<'_> {
    fn default() -> Self {
        Opts {
            workers: 1,
            server_extra: "",
            args: &[],
            procs: 1,
            fcgi_extra: "",
        }
    }
}

/// A running server with the spawned test backend "t" on `<dir>/t.sock-<i>`, serving `.php`.
pub struct Fcgi {
    pub server: Server,
    /// The backend's request log (`mode=.. pid=..` per request).
    pub backend_log: PathBuf,
    /// The canonical document root.
    pub root: PathBuf,
}

/// Lua string literal for a path or text (no quotes or backslashes expected in test paths).
pub fn lua_str(s: &str) -> String {
    assert!(!s.contains('"') && !s.contains('\\'), "odd test path {s}");
    format!("\"{s}\"")
}

pub fn config_text(dir: &Path, o: &Opts<'_>) -> String {
    let mut argv = vec![lua_str(fcgi_bin())];
    argv.extend(o.args.iter().map(|a| lua_str(a)));
    let log = dir.join("backend.log");
    let sock = dir.join("t.sock");
    let sep = |s: &str| {
        if s.is_empty() {
            String::new()
        } else {
            format!(", {s}")
        }
    };
    format!(
        "server {{ listen = \"127.0.0.1:0\", workers = {}, root = \"www\", error_log = \"stderr\"{} }}\n\
         fastcgi \"t\" {{ spawn = {{ {} }}, procs = {}, socket = {}, extensions = {{ \".php\" }}, \
         env = {{ LUAHTTPD_FCGI_TEST_LOG = {} }}{} }}\n",
        o.workers,
        sep(o.server_extra),
        argv.join(", "),
        o.procs,
        lua_str(&format!("unix:{}", sock.display())),
        lua_str(&log.display().to_string()),
        sep(o.fcgi_extra),
    )
}

/// A temp dir with www/t.php (empty) in it.
pub fn site_dir() -> TempDir {
    let dir = TempDir::new("fcgi");
    dir.write("www/t.php", b"");
    dir
}

impl Fcgi {
    pub fn start(o: Opts<'_>) -> Fcgi {
        let dir = site_dir();
        let config = config_text(dir.path(), &o);
        Fcgi::start_in(dir, &config)
    }

    pub fn start_in(dir: TempDir, config: &str) -> Fcgi {
        let backend_log = dir.path().join("backend.log");
        let root = std::fs::canonicalize(dir.path().join("www")).expect("canonical root");
        let server = Server::start_config(dir, config);
        Fcgi {
            server,
            backend_log,
            root,
        }
    }

    pub fn addr(&self) -> &str {
        &self.server.addr
    }

    pub fn dir(&self) -> &Path {
        self.server.dir.path()
    }

    /// The backend's request log as (mode, pid) pairs.
    pub fn backend_requests(&self) -> Vec<(String, i32)> {
        backend_requests(&self.backend_log)
    }

    /// The watcher's children that run `luahttpd` (the workers; spawned backends excluded).
    pub fn workers(&self) -> Vec<i32> {
        children_running(self.server.pid(), crate::common::bin())
    }

    /// The watcher's children that run the test backend.
    pub fn backends(&self) -> Vec<i32> {
        children_running(self.server.pid(), fcgi_bin())
    }

    /// One GET on a fresh connection, body decoded whatever its framing.
    pub fn get(&self, target: &str) -> Resp {
        let mut c = Conn::connect(self.addr());
        c.send(format!("GET {target} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
        c.response(false)
    }
}

pub fn backend_requests(log: &Path) -> Vec<(String, i32)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (m, p) = l.split_once(' ')?;
            Some((
                m.strip_prefix("mode=")?.to_string(),
                p.strip_prefix("pid=")?.parse().ok()?,
            ))
        })
        .collect()
}

pub fn children_of(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

fn children_running(pid: i32, exe: &str) -> Vec<i32> {
    let want = std::fs::canonicalize(exe).expect("canonical exe");
    children_of(pid)
        .into_iter()
        .filter(|c| {
            std::fs::read_link(format!("/proc/{c}/exe")).is_ok_and(|p| {
                // A rebuilt binary shows as "path (deleted)"; compare the prefix.
                p == want || p.to_string_lossy() == format!("{} (deleted)", want.display())
            })
        })
        .collect()
}

/// VmRSS of a process in KiB.
pub fn rss_kib(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A deterministic pseudo-random body.
pub fn body_bytes(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Encodes `data` as a chunked body with chunk sizes cycling through `sizes`, ending with the
/// last chunk; hex case and chunk extensions vary too.
pub fn chunked(data: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 64 + 64);
    let mut pos = 0;
    let mut i = 0;
    while pos < data.len() {
        let n = sizes[i % sizes.len()].max(1).min(data.len() - pos);
        match i % 3 {
            0 => out.extend_from_slice(format!("{n:x}\r\n").as_bytes()),
            1 => out.extend_from_slice(format!("{n:X}\r\n").as_bytes()),
            _ => out.extend_from_slice(format!("{n:x};ext=1\r\n").as_bytes()),
        }
        out.extend_from_slice(&data[pos..pos + n]);
        out.extend_from_slice(b"\r\n");
        pos += n;
        i += 1;
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// The pattern the backend's `huge` mode sends: "0123456789" repeated.
pub fn check_pattern(body: &[u8]) -> Result<(), usize> {
    match body
        .iter()
        .enumerate()
        .find(|(i, &b)| b != b'0' + (i % 10) as u8)
    {
        Some((i, _)) => Err(i),
        None => Ok(()),
    }
}

/// How a response body was framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length,
    Chunked,
    Close,
}

/// Header fields as (name, value), in order.
pub type Headers = Vec<(String, String)>;

/// A response with its body decoded.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub status_line: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub framing: Framing,
    /// Whether the body was complete by its framing (false: the connection ended early).
    pub complete: bool,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The backend's `params` JSON.
    pub fn params(&self) -> BTreeMap<String, String> {
        parse_json_object(&self.text())
            .unwrap_or_else(|| panic!("not a JSON object: {:?}", self.text()))
    }
}

/// A client connection with its own read buffer.
pub struct Conn {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
}

impl Conn {
    pub fn connect(addr: &str) -> Conn {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, data: &[u8]) {
        self.stream.write_all(data).expect("send");
    }

    /// Reads more; 0 at EOF, a reset or a timeout.
    pub fn fill(&mut self) -> usize {
        let mut tmp = vec![0u8; 256 * 1024];
        match self.stream.read(&mut tmp) {
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                n
            }
            Err(_) => 0,
        }
    }

    /// Reads one response head; None if the connection ends first.
    pub fn head(&mut self) -> Option<(u16, String, Headers)> {
        let end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if self.fill() == 0 {
                return None;
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end);
        let mut lines = head.trim_end().split("\r\n");
        let status_line = lines.next()?.to_string();
        let status = status_line.split(' ').nth(1)?.parse().ok()?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        Some((status, status_line, headers))
    }

    /// Reads one response (interim 1xx responses are not skipped).
    pub fn try_response(&mut self, head_request: bool) -> Option<Resp> {
        let (status, status_line, headers) = self.head()?;
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
        };
        let mut r = Resp {
            status,
            status_line,
            headers: headers.clone(),
            body: Vec::new(),
            framing: Framing::None,
            complete: true,
        };
        if head_request || status < 200 || status == 204 || status == 304 {
            return Some(r);
        }
        if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            r.framing = Framing::Chunked;
            r.complete = self.chunked_body(&mut r.body);
        } else if let Some(len) = get("content-length") {
            r.framing = Framing::Length;
            let len: usize = len.parse().ok()?;
            while self.buf.len() < len {
                if self.fill() == 0 {
                    r.complete = false;
                    r.body = std::mem::take(&mut self.buf);
                    return Some(r);
                }
            }
            r.body = self.buf.drain(..len).collect();
        } else {
            r.framing = Framing::Close;
            while self.fill() > 0 {}
            r.body = std::mem::take(&mut self.buf);
        }
        Some(r)
    }

    pub fn response(&mut self, head_request: bool) -> Resp {
        self.try_response(head_request).unwrap_or_else(|| {
            panic!(
                "no complete response head; got {:?}",
                String::from_utf8_lossy(&self.buf[..self.buf.len().min(2000)])
            )
        })
    }

    /// Decodes a chunked body into `out`; false if the connection ends first or it is malformed.
    fn chunked_body(&mut self, out: &mut Vec<u8>) -> bool {
        let mut pos = 0;
        loop {
            // Size line.
            let line_end = loop {
                if let Some(i) = find(&self.buf[pos..], b"\r\n") {
                    break pos + i;
                }
                if self.fill() == 0 {
                    return false;
                }
            };
            let line = String::from_utf8_lossy(&self.buf[pos..line_end]).into_owned();
            let size_txt = line.split(';').next().unwrap_or("").trim();
            let Ok(size) = usize::from_str_radix(size_txt, 16) else {
                panic!("bad chunk size line {line:?}");
            };
            pos = line_end + 2;
            if size == 0 {
                // Trailers until an empty line.
                loop {
                    let end = loop {
                        if let Some(i) = find(&self.buf[pos..], b"\r\n") {
                            break pos + i;
                        }
                        if self.fill() == 0 {
                            return false;
                        }
                    };
                    let empty = end == pos;
                    pos = end + 2;
                    if empty {
                        self.buf.drain(..pos);
                        return true;
                    }
                }
            }
            while self.buf.len() < pos + size + 2 {
                if self.fill() == 0 {
                    return false;
                }
            }
            out.extend_from_slice(&self.buf[pos..pos + size]);
            assert_eq!(&self.buf[pos + size..pos + size + 2], b"\r\n", "chunk end");
            pos += size + 2;
            if pos > 1 << 20 {
                self.buf.drain(..pos);
                pos = 0;
            }
        }
    }

    /// Whether the server closed the connection (EOF within `timeout`), dropping what arrives.
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        let _ = self.stream.set_read_timeout(Some(timeout));
        let mut tmp = [0u8; 4096];
        loop {
            match self.stream.read(&mut tmp) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}

/// Parses a flat JSON object of string values, as the backend's `params` mode writes it.
pub fn parse_json_object(s: &str) -> Option<BTreeMap<String, String>> {
    let mut it = s.trim().chars().peekable();
    let mut map = BTreeMap::new();
    if it.next()? != '{' {
        return None;
    }
    fn string(it: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<String> {
        if it.next()? != '"' {
            return None;
        }
        let mut out = String::new();
        loop {
            match it.next()? {
                '"' => return Some(out),
                '\\' => match it.next()? {
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    'u' => {
                        let hex: String = (0..4).filter_map(|_| it.next()).collect();
                        out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                    }
                    c => out.push(c),
                },
                c => out.push(c),
            }
        }
    }
    if it.peek() == Some(&'}') {
        return Some(map);
    }
    loop {
        let k = string(&mut it)?;
        if it.next()? != ':' {
            return None;
        }
        let v = string(&mut it)?;
        map.insert(k, v);
        match it.next()? {
            ',' => continue,
            '}' => return Some(map),
            _ => return None,
        }
    }
}

/// A port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().unwrap().port()
}

/// A test backend started by the test with `--listen`, killed on drop.
pub struct Standalone {
    pub child: std::process::Child,
    pub addr: String,
}

impl Standalone {
    pub fn start(log: Option<&Path>) -> Standalone {
        let port = closed_port();
        let addr = format!("127.0.0.1:{port}");
        let mut cmd = std::process::Command::new(fcgi_bin());
        cmd.args(["--listen", &addr])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        if let Some(l) = log {
            cmd.env("LUAHTTPD_FCGI_TEST_LOG", l);
        }
        let child = cmd.spawn().expect("spawn test backend");
        wait_for("the standalone backend", Duration::from_secs(5), || {
            TcpStream::connect(&addr).is_ok()
        });
        Standalone { child, addr }
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
