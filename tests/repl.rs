//! `luahttpd repl` against a fake admin server run inside the test: a thread with a Unix
//! listener that speaks the admin protocol with the crate's own helpers and evaluates chunks in
//! a Lua state where `workers()`, `status()` and `help()` are defined (and `boom()` is not).
//! The interactive test drives the real binary through a pseudo-terminal.

mod common;

use common::pty::{plain, Pty};
use common::TempDir;
use luahttpd::admin::protocol::{self, FUNCTIONS};
use std::io::Write;
use std::os::unix::net::UnixListener;
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
