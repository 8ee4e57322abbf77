//! Test harness: starts the real `luahttpd` binary on an ephemeral loopback port with a
//! config and document root in a temporary directory, and speaks raw HTTP to it.
#![allow(dead_code)]

pub mod pty;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let p =
            std::env::temp_dir().join(format!("luahttpd-it-{}-{}-{}", tag, std::process::id(), n));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn write(&self, rel: &str, data: &[u8]) -> PathBuf {
        let p = self.0.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, data).expect("write file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_luahttpd")
}

/// A running server. Killed (the whole watcher; workers die with it) on drop.
pub struct Server {
    pub child: Child,
    pub addr: String,
    pub dir: TempDir,
    pub log: Arc<Mutex<Vec<String>>>,
}

/// The `server { ... }` fields every test server gets unless it overrides them.
pub const BASE: &str = r#"listen = "127.0.0.1:0", workers = 2, root = "www", error_log = "stderr""#;

impl Server {
    /// Starts with `server { BASE, <extra> }`; `files` are written under www/.
    pub fn start(extra: &str, files: &[(&str, &[u8])]) -> Server {
        let dir = TempDir::new("srv");
        std::fs::create_dir_all(dir.path().join("www")).expect("mkdir www");
        for (name, data) in files {
            dir.write(&format!("www/{name}"), data);
        }
        let config = format!("server {{ {BASE}, {extra} }}\n");
        Server::start_config(dir, &config)
    }

    /// Starts with a whole config text written to site.lua in `dir`.
    pub fn start_config(dir: TempDir, config: &str) -> Server {
        Server::start_with(dir, config, |_| {})
    }

    /// As `start_config`, with a last say on the command (limits, environment).
    pub fn start_with(dir: TempDir, config: &str, prepare: impl FnOnce(&mut Command)) -> Server {
        let conf = dir.write("site.lua", config.as_bytes());
        let mut cmd = Command::new(bin());
        cmd.arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        prepare(&mut cmd);
        let mut child = cmd.spawn().expect("spawn luahttpd");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(i) = line.find("listening on ") {
                    let _ = tx.send(line[i + "listening on ".len()..].trim().to_string());
                }
                log2.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "server did not start; log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        let s = Server {
            child,
            addr,
            dir,
            log,
        };
        s.wait_ready();
        s
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut c) = TcpStream::connect(&self.addr) {
                let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                if c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .is_ok()
                {
                    let mut buf = [0u8; 16];
                    if matches!(c.read(&mut buf), Ok(n) if n > 0) {
                        return;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("server at {} never answered", self.addr);
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the watcher to exit; None on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn connect(&self) -> Client {
        Client::connect(&self.addr)
    }

    /// One request on a fresh connection.
    pub fn get(&self, path: &str) -> Response {
        let mut c = self.connect();
        c.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
        c.response(false)
    }

    /// The pids of the watcher's children: the workers (and FastCGI processes it spawned), not
    /// the admin evaluator.
    pub fn worker_pids(&self) -> Vec<i32> {
        let path = format!("/proc/{}/task/{}/children", self.pid(), self.pid());
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|s| s.parse().ok())
            // The admin evaluator is a child too, but no worker.
            .filter(|p| !is_admin_evaluator(*p))
            .collect()
    }

    /// The admin evaluator's pid, once a chunk has started it.
    pub fn admin_evaluator_pid(&self) -> Option<i32> {
        let path = format!("/proc/{}/task/{}/children", self.pid(), self.pid());
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|s| s.parse().ok())
            .find(|p| is_admin_evaluator(*p))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub header_list: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A raw client connection.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: &str) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// A client over an already connected stream (e.g. bound to another source address).
    pub fn from_stream(stream: TcpStream) -> Client {
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, data: &[u8]) {
        self.stream.write_all(data).expect("send");
    }

    fn fill(&mut self) -> usize {
        let mut tmp = [0u8; 65536];
        match self.stream.read(&mut tmp) {
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                n
            }
            Err(_) => 0,
        }
    }

    /// Reads one response; `head_request` = the request was HEAD (no body follows).
    pub fn response(&mut self, head_request: bool) -> Response {
        self.try_response(head_request).unwrap_or_else(|| {
            panic!(
                "no complete response; got {:?}",
                String::from_utf8_lossy(&self.buf)
            )
        })
    }

    pub fn try_response(&mut self, head_request: bool) -> Option<Response> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if self.fill() == 0 {
                return None;
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next()?;
        let status: u16 = status_line.split(' ').nth(1)?.parse().ok()?;
        let mut headers = HashMap::new();
        let mut header_list = Vec::new();
        for l in lines {
            if let Some((k, v)) = l.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                header_list.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        self.buf.drain(..head_end);
        let no_body = head_request || status == 304 || status == 204 || status < 200;
        let body = if no_body {
            Vec::new()
        } else if let Some(len) = headers.get("content-length") {
            let len: usize = len.parse().ok()?;
            while self.buf.len() < len {
                if self.fill() == 0 {
                    return None;
                }
            }
            self.buf.drain(..len).collect()
        } else {
            while self.fill() > 0 {}
            std::mem::take(&mut self.buf)
        };
        Some(Response {
            status,
            headers,
            header_list,
            body,
        })
    }

    /// Whether the server closed the connection (reads EOF within the timeout).
    pub fn closed(&mut self) -> bool {
        let _ = self.stream.set_read_timeout(Some(Duration::from_secs(5)));
        let mut tmp = [0u8; 1024];
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

/// Copies the files the appliance examples (examples/appliance-cgi.lua, appliance-tls.lua) use
/// beside them into `dir`; the examples folder's path.
pub fn copy_appliance_files(dir: &TempDir) -> &'static str {
    let ex = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    for f in [
        "appliance.htpasswd",
        "cgi-bin/status.sh",
        "cgi-bin/status.lua",
        "www/index.html",
    ] {
        let data = std::fs::read(format!("{ex}/{f}")).expect("example file");
        dir.write(f, &data);
    }
    ex
}

/// A `/proc/PID/status` figure in KiB (`key` such as "VmRSS:" or "VmHWM:"; 0 if unreadable).
pub fn status_kib(pid: i32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// VmRSS of a process in KiB (0 if unreadable).
pub fn rss_kib(pid: i32) -> u64 {
    status_kib(pid, "VmRSS:")
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Sends one raw request on a fresh connection and returns the response.
pub fn raw(addr: &str, data: &[u8]) -> Response {
    let mut c = Client::connect(addr);
    c.send(data);
    c.response(false)
}

/// Whether a process exists and is not a zombie (a zombie still has /proc/PID).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.contains(") Z "),
        Err(_) => false,
    }
}

/// Polls `f` every 20 ms until it holds; panics naming `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Checks log rotation on a server with `access_log = "access.log"` serving `/a`: after a
/// rename and `reopen()` (SIGHUP, or the admin `reopen_logs()`), new lines go to a new file.
pub fn assert_access_log_reopens(s: &Server, reopen: impl FnOnce()) {
    let log = s.dir.path().join("access.log");
    let has = |p: &Path, needle: &str| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .contains(needle)
    };
    assert_eq!(s.get("/a?first").status, 200);
    wait_for("first line", Duration::from_secs(3), || {
        has(&log, "/a?first")
    });
    let rotated = s.dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).expect("rename the access log");
    reopen();
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..4 {
        assert_eq!(s.get("/a?second").status, 200);
    }
    wait_for(
        "second line in the new file",
        Duration::from_secs(3),
        || has(&log, "/a?second"),
    );
    let old = std::fs::read_to_string(&rotated).unwrap_or_default();
    assert!(
        old.contains("/a?first") && !old.contains("/a?second"),
        "{old}"
    );
}

/// Whether `pid` is the admin evaluator (it names itself so).
pub fn is_admin_evaluator(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "luahttpd-admin")
}
