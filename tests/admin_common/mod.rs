//! Helpers for the admin socket tests: a server with `admin = "admin.sock"`, a protocol-level
//! admin client, the `luahttpd repl` command line with a deadline, polling, and a
//! pseudo-terminal driver for the interactive client.
#![allow(dead_code)]

#[allow(unused_imports)] // not every test binary uses both
pub use crate::common::{alive, wait_for};

use crate::common::{Server, TempDir};
use luahttpd::admin::protocol::{eval_request, parse_response, read_frame, write_frame};
use serde_json::Value;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `server { ... }` fields every admin test server gets.
pub const ADMIN_BASE: &str =
    r#"listen = "127.0.0.1:0", root = "www", error_log = "stderr", admin = "admin.sock""#;

/// The config text for `server { ADMIN_BASE, <server_extra> }` followed by `rest`.
pub fn config_text(server_extra: &str, rest: &str) -> String {
    let sep = if server_extra.is_empty() { "" } else { ", " };
    format!("server {{ {ADMIN_BASE}{sep}{server_extra} }}\n{rest}")
}

/// A temp dir with `www/` and the given files under it.
pub fn site(tag: &str, files: &[(&str, &[u8])]) -> TempDir {
    let dir = TempDir::new(tag);
    std::fs::create_dir_all(dir.path().join("www")).expect("mkdir www");
    for (name, data) in files {
        dir.write(&format!("www/{name}"), data);
    }
    dir
}

/// Starts a server with an admin socket: `server { ADMIN_BASE, <server_extra> }`.
pub fn start(server_extra: &str, files: &[(&str, &[u8])]) -> Server {
    let dir = site("admin", files);
    Server::start_config(dir, &config_text(server_extra, ""))
}

/// The admin socket of a server started by [`start`].
pub fn sock(s: &Server) -> PathBuf {
    s.dir.path().join("admin.sock")
}

/// A protocol-level admin client (blocking, with a read timeout).
pub struct Admin {
    pub stream: UnixStream,
    pub hello: Value,
}

impl Admin {
    pub fn connect(path: &Path) -> Admin {
        let mut stream =
            UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let hello = read_frame(&mut stream).expect("hello frame");
        Admin { stream, hello }
    }

    /// Sends one chunk; the value or the error message.
    pub fn eval(&mut self, chunk: &str) -> Result<Value, String> {
        write_frame(&mut self.stream, &eval_request(chunk))
            .unwrap_or_else(|e| panic!("send {chunk:?}: {e}"));
        let answer =
            read_frame(&mut self.stream).unwrap_or_else(|e| panic!("answer to {chunk:?}: {e}"));
        parse_response(&answer).unwrap_or_else(|e| panic!("answer to {chunk:?}: {e}"))
    }

    /// Sends one chunk that must succeed.
    pub fn ok(&mut self, chunk: &str) -> Value {
        self.eval(chunk)
            .unwrap_or_else(|e| panic!("{chunk:?} failed: {e}"))
    }
}

/// One chunk on a fresh connection; must succeed.
pub fn eval_ok(path: &Path, chunk: &str) -> Value {
    Admin::connect(path).ok(chunk)
}

/// `status()`.
pub fn status(path: &Path) -> Value {
    eval_ok(path, "status()")
}

/// `workers()` rows.
pub fn workers(path: &Path) -> Vec<Value> {
    match eval_ok(path, "workers()") {
        Value::Array(a) => a,
        other => panic!("workers() is not an array: {other}"),
    }
}

/// `status().totals.requests`.
pub fn total_requests(path: &Path) -> u64 {
    status(path)["totals"]["requests"]
        .as_u64()
        .expect("totals.requests")
}

/// `totals.requests` once the harness's readiness probe (one request) is counted and the
/// value holds still for 200 ms.
pub fn settled_requests(path: &Path) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut last = total_requests(path);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = total_requests(path);
        if now >= 1 && now == last {
            return now;
        }
        assert!(Instant::now() < deadline, "totals.requests never settled");
        last = now;
    }
}

/// Waits for a child with a deadline; kills it if the deadline passes.
pub fn wait_output(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("output");
                panic!("child did not finish in time: {out:?}");
            }
        }
    }
    child.wait_with_output().expect("output")
}

/// `luahttpd repl SOCKET <args>` with no input; at most 15 s.
pub fn repl(socket: &Path, args: &[&str]) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_luahttpd"))
        .arg("repl")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn luahttpd repl");
    wait_output(child, Duration::from_secs(15))
}

/// A copy of the binary that uid 65534 can execute: the build directory may sit in a
/// checkout only root can enter (a `mktemp -d` clone is mode 0700).
fn binary_for_nobody() -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("luahttpd-nobody-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir for the nobody binary");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    let bin = dir.join("luahttpd");
    if !bin.exists() {
        let tmp = dir.join(format!("luahttpd.{:?}", std::thread::current().id()));
        std::fs::copy(env!("CARGO_BIN_EXE_luahttpd"), &tmp).expect("copy the binary");
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::rename(&tmp, &bin).expect("place the binary");
    }
    bin
}

/// `luahttpd repl SOCKET <args>` run as uid/gid 65534 (nobody); at most 15 s.
pub fn repl_as_nobody(socket: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(binary_for_nobody());
    cmd.arg("repl")
        .arg(socket)
        .args(args)
        .env("HOME", "/nonexistent")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: only async-signal-safe system calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(65534) != 0
                || libc::setuid(65534) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().expect("spawn luahttpd repl as nobody");
    wait_output(child, Duration::from_secs(15))
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

#[allow(unused_imports)] // not every test binary drives a terminal
pub use crate::common::pty::{plain, Pty};
