//! `luahttpd repl` against a fake admin server run inside the test: a thread with a Unix
//! listener that speaks the admin protocol with the crate's own helpers and evaluates chunks in
//! a Lua state where `workers()`, `status()` and `help()` are defined (and `boom()` is not).
//! The interactive test drives the real binary through a pseudo-terminal.

mod common;

use common::TempDir;
use luahttpd::admin::protocol::{self, FUNCTIONS};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The Lua side of the fake watcher.
const FAKE_API: &str = r#"
function workers()
  return {
    { slot = 0, name = "worker", pid = 101, generation = 1, state = "idle", requests = 5 },
    { slot = 1, name = "worker", pid = 20202, generation = 1, state = "busy", requests = 12345 },
  }
end
function status()
  return { pid = 4242, version = "0.1.0", workers = 2 }
end
function help() return "status() workers() ..." end
"#;

/// A fake admin server; records every chunk it was sent.
struct FakeServer {
    _dir: TempDir,
    socket: PathBuf,
    chunks: Arc<Mutex<Vec<String>>>,
}

impl FakeServer {
    fn start(tag: &str) -> FakeServer {
        let dir = TempDir::new(tag);
        let socket = dir.path().join("admin.sock");
        let listener = UnixListener::bind(&socket).expect("bind admin socket");
        let chunks = Arc::new(Mutex::new(Vec::new()));
        let seen = chunks.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { break };
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let lua = mlua::Lua::new();
                    lua.load(FAKE_API).exec().expect("fake api");
                    let hello = protocol::hello("0.1.0", FUNCTIONS);
                    if protocol::write_frame(&mut conn, &hello).is_err() {
                        return;
                    }
                    while let Ok(request) = protocol::read_frame(&mut conn) {
                        if let Ok(chunk) = protocol::parse_request(&request) {
                            seen.lock().expect("lock").push(chunk.clone());
                            if chunk == "hangup()" {
                                return; // closes without an answer
                            }
                        }
                        let answer = protocol::answer(&lua, &request);
                        if conn.write_all(&protocol::encode_response(&answer)).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        FakeServer {
            _dir: dir,
            socket,
            chunks,
        }
    }

    fn chunks(&self) -> Vec<String> {
        self.chunks.lock().expect("lock").clone()
    }
}

fn repl(socket: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_luahttpd"))
        .arg("repl")
        .arg(socket)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn luahttpd repl");
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin.as_bytes());
    }
    wait_output(child, Duration::from_secs(20))
}

/// Waits for a child with a deadline; kills it if the deadline passes.
fn wait_output(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("output");
                panic!("luahttpd repl did not finish in time: {out:?}");
            }
        }
    }
    child.wait_with_output().expect("output")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const WORKERS_TABLE: &str = "\
slot  name      pid  generation  state  requests
   0  worker    101           1  idle          5
   1  worker  20202           1  busy      12345
";

#[test]
fn eval_prints_a_table_and_exits_0() {
    let srv = FakeServer::start("repl-e");
    let out = repl(&srv.socket, &["-e", "workers()"], "");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(text(&out.stdout), WORKERS_TABLE);
    assert_eq!(text(&out.stderr), "");
    assert_eq!(srv.chunks(), ["workers()"]);
}

#[test]
fn eval_prints_an_object_as_aligned_lines() {
    let srv = FakeServer::start("repl-obj");
    let out = repl(&srv.socket, &["-e", "status()"], "");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        text(&out.stdout),
        "pid      4242\nversion  0.1.0\nworkers  2\n"
    );
}

#[test]
fn eval_error_goes_to_stderr_and_exits_1() {
    let srv = FakeServer::start("repl-err");
    let out = repl(&srv.socket, &["-e", "boom()"], "");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(text(&out.stdout), "");
    assert_eq!(
        text(&out.stderr),
        "error: repl:1: attempt to call a nil value (global 'boom')\n"
    );
}

#[test]
fn json_prints_the_raw_value_in_server_order() {
    let srv = FakeServer::start("repl-json");
    let out = repl(&srv.socket, &["--json", "-e", "workers()"], "");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        text(&out.stdout),
        concat!(
            r#"[{"slot":0,"name":"worker","pid":101,"generation":1,"state":"idle","requests":5},"#,
            r#"{"slot":1,"name":"worker","pid":20202,"generation":1,"state":"busy","requests":12345}]"#,
            "\n"
        )
    );
    let out = repl(&srv.socket, &["--json", "-e", "nil"], "");
    assert_eq!(text(&out.stdout), "null\n");
}

#[test]
fn unreachable_socket_is_named_with_its_cause() {
    let dir = TempDir::new("repl-nosock");
    let sock = dir.path().join("admin.sock");
    let out = repl(&sock, &["-e", "workers()"], "");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        text(&out.stderr),
        format!(
            "error: cannot connect to {}: No such file or directory\n",
            sock.display()
        )
    );
}

#[test]
fn piped_stdin_runs_chunks_in_turn() {
    let srv = FakeServer::start("repl-pipe");
    let out = repl(
        &srv.socket,
        &[],
        "help()\nfor i = 1, 2 do\n  n = (n or 0) + i\nend\nn\nboom()\n",
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(text(&out.stdout), "status() workers() ...\nnil\n3\n");
    assert!(text(&out.stderr).contains("error: repl:1: attempt to call a nil value"));
    assert_eq!(
        srv.chunks(),
        [
            "help()",
            "for i = 1, 2 do\n  n = (n or 0) + i\nend",
            "n",
            "boom()"
        ]
    );
}

#[test]
fn lost_connection_is_reported_and_the_next_chunk_reconnects() {
    let srv = FakeServer::start("repl-lost");
    let out = repl(&srv.socket, &["-e", "hangup()"], "");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        text(&out.stderr),
        format!(
            "error: {}: connection closed by the peer\n",
            srv.socket.display()
        )
    );
    let out = repl(&srv.socket, &[], "hangup()\nhelp()\n");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out.stderr).contains("lost: connection closed by the peer"),
        "{out:?}"
    );
    assert_eq!(text(&out.stdout), "status() workers() ...\n");
}

// ---------------------------------------------------------------------------------------------
// Through a pseudo-terminal
// ---------------------------------------------------------------------------------------------

/// The master side of a pty with the child on its slave; answers cursor-position queries.
struct Pty {
    master: OwnedFd,
    child: Child,
    out: Vec<u8>,
    /// How much of `out` earlier `expect` calls consumed.
    seen: usize,
    /// How many `ESC [ 6 n` queries were answered.
    answered: usize,
}

impl Pty {
    fn spawn(args: &[&std::ffi::OsStr], env: &[(&str, &Path)]) -> Pty {
        let ws = nix::pty::Winsize {
            ws_row: 24,
            ws_col: 100,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(&ws, None).expect("openpty");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_luahttpd"));
        cmd.args(args)
            .env("TERM", "xterm")
            .stdin(Stdio::from(pty.slave.try_clone().expect("dup")))
            .stdout(Stdio::from(pty.slave.try_clone().expect("dup")))
            .stderr(Stdio::from(pty.slave.try_clone().expect("dup")));
        for (k, v) in env {
            cmd.env(k, v);
        }
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn on pty");
        drop(pty.slave);
        let flags = nix::fcntl::fcntl(pty.master.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)
            .expect("getfl");
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(pty.master.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags))
            .expect("setfl");
        Pty {
            master: pty.master,
            child,
            out: Vec::new(),
            seen: 0,
            answered: 0,
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        nix::unistd::write(&self.master, bytes).expect("write to pty");
    }

    /// Reads what is available (waiting up to `wait`); false at end of output.
    fn pump(&mut self, wait: Duration) -> bool {
        let mut fds = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&self.master),
            nix::poll::PollFlags::POLLIN,
        )];
        let ms = wait.as_millis().min(1000) as u16;
        let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms));
        let mut buf = [0u8; 4096];
        let alive = loop {
            match nix::unistd::read(self.master.as_raw_fd(), &mut buf) {
                Ok(0) => break false,
                Ok(n) => self.out.extend_from_slice(&buf[..n]),
                Err(nix::errno::Errno::EAGAIN) => break true,
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => break false, // EIO: the child closed the terminal
            }
        };
        let queries = count(&self.out, b"\x1b[6n");
        while self.answered < queries {
            self.answered += 1;
            self.send(b"\x1b[1;1R");
        }
        alive
    }

    /// Waits until `needle` appears after what earlier calls consumed; returns the text up to
    /// and including it.
    fn expect(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(i) = find(&self.out[self.seen..], needle.as_bytes()) {
                let end = self.seen + i + needle.len();
                let got = text(&self.out[self.seen..end]);
                self.seen = end;
                return got;
            }
            if Instant::now() > deadline || !self.pump(Duration::from_millis(100)) {
                // One last read, then fail.
                let _ = self.child.kill();
                panic!(
                    "did not see {needle:?}; the terminal showed:\n{:?}",
                    text(&self.out[self.seen..])
                );
            }
        }
    }

    fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            self.pump(Duration::from_millis(20));
            match self.child.try_wait() {
                Ok(Some(status)) => return status.code(),
                Ok(None) if Instant::now() < deadline => {}
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!("repl did not exit; terminal:\n{:?}", text(&self.out));
                }
            }
        }
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

/// Removes ANSI escape sequences (CSI) and carriage returns, to compare what a person sees.
fn plain(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        if c != '\r' {
            out.push(c);
        }
    }
    out
}

#[test]
fn interactive_session_through_a_pty() {
    let srv = FakeServer::start("repl-pty");
    let state = TempDir::new("repl-state");
    let mut pty = Pty::spawn(
        &["repl".as_ref(), srv.socket.as_os_str()],
        &[("XDG_STATE_HOME", state.path())],
    );
    let banner = pty.expect("luahttpd> ");
    assert!(
        plain(&banner).contains("connected to luahttpd 0.1.0"),
        "{banner:?}"
    );

    // Tab completion from the hello's function names, then the table.
    pty.send(b"wor\t");
    pty.expect("workers(");
    pty.send(b")\r");
    let shown = plain(&pty.expect("luahttpd> "));
    assert!(shown.contains(WORKERS_TABLE), "{shown:?}");

    // A multi-line chunk: continuation prompt, sent as one chunk.
    pty.send(b"for i=1,2 do\r");
    pty.expect("      ...> ");
    pty.send(b"  n = (n or 0) + i\r");
    pty.expect("      ...> ");
    pty.send(b"end\r");
    let shown = plain(&pty.expect("luahttpd> "));
    assert!(shown.contains("nil\n"), "{shown:?}");
    pty.send(b"n\r");
    let shown = plain(&pty.expect("luahttpd> "));
    assert!(shown.contains("3\n"), "{shown:?}");

    // Ctrl-C drops a pending multi-line chunk.
    pty.send(b"if true then\r");
    pty.expect("      ...> ");
    pty.send(b"\x03");
    pty.expect("luahttpd> ");
    pty.send(b"boom()\r");
    let shown = plain(&pty.expect("luahttpd> "));
    assert!(
        shown.contains("error: repl:1: attempt to call a nil value (global 'boom')"),
        "{shown:?}"
    );

    // Ctrl-D on an empty line leaves.
    pty.send(b"\x04");
    assert_eq!(pty.wait_exit(), Some(0));

    assert_eq!(
        srv.chunks(),
        [
            "workers()",
            "for i=1,2 do\n  n = (n or 0) + i\nend",
            "n",
            "boom()"
        ]
    );
    let history =
        std::fs::read_to_string(state.path().join("luahttpd/repl_history")).expect("history file");
    assert!(history.contains("workers()"), "{history:?}");
    assert!(history.contains("boom()"), "{history:?}");
}
