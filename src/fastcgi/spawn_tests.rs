//! Tests of src/fastcgi/spawn.rs that start real processes. Each test kills and reaps (by
//! pid, never waitpid(-1): tests run in parallel) every child it starts.

use super::spawn::*;
use crate::config::{FastcgiDef, ListenAddr};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A fresh directory under the temp dir, removed on drop.
/// Waits until nothing answers on `addr` any more. Other tests of this process fork children;
/// one forked while a listener of ours was open holds a copy of it until its exec closes it
/// (close-on-exec), and the address answers until then, which `spawn_proc` would take for a
/// running backend.
fn wait_until_refused(addr: &ListenAddr) {
    let t = Instant::now();
    while answers(addr) {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{addr:?} still answers"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        // The time too: process ids repeat across runs (and PID namespaces), and a socket left
        // by an earlier run's spawned child could still answer under a reused name.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let p = std::env::temp_dir().join(format!(
            "lh-spawn-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kills and reaps a child when dropped, so a failed assertion leaves nothing behind.
struct Child(Pid);

impl Child {
    /// The child was reaped by the test: its pid may be reused, so it must not be killed.
    fn reaped(self) {
        std::mem::forget(self);
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGKILL);
        let _ = waitpid(self.0, None);
    }
}

fn def(argv: &[&str], socket: ListenAddr, env: &[(&str, &str)]) -> FastcgiDef {
    FastcgiDef {
        name: "php".to_string(),
        defined_at: "test:1".to_string(),
        spawn: Some(argv.iter().map(|s| s.to_string()).collect()),
        procs: 1,
        socket: Some(socket),
        address: Vec::new(),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        extensions: vec![".php".to_string()],
        prefix: None,
        check_local: true,
        keepalive: true,
        request_buffering: true,
        connect_timeout: Duration::from_secs(1),
        read_timeout: Duration::from_secs(1),
        disable_time: Duration::from_secs(1),
        user: None,
        socket_owner: None,
    }
}

fn status_field(pid: Pid, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

#[test]
fn proc_addrs_number_sockets_and_ports() {
    let mut d = def(
        &["/bin/true"],
        ListenAddr::Unix("/run/php.sock".into()),
        &[],
    );
    d.procs = 3;
    assert_eq!(
        proc_addrs(&d).expect("addrs"),
        ["/run/php.sock-0", "/run/php.sock-1", "/run/php.sock-2"]
            .map(|p| ListenAddr::Unix(p.into()))
    );
    d.socket = Some(ListenAddr::Tcp("127.0.0.1:9100".parse().expect("addr")));
    assert_eq!(
        proc_addrs(&d).expect("addrs"),
        ["127.0.0.1:9100", "127.0.0.1:9101", "127.0.0.1:9102"]
            .map(|a| ListenAddr::Tcp(a.parse().expect("addr")))
    );
    d.socket = Some(ListenAddr::Tcp("127.0.0.1:65534".parse().expect("addr")));
    let e = proc_addrs(&d).expect_err("past 65535");
    assert!(e.contains("65535"), "{e}");
    d.socket = Some(ListenAddr::Tcp("127.0.0.1:0".parse().expect("addr")));
    assert!(proc_addrs(&d).expect_err("port 0").contains("port 0"));
    d.socket = None;
    assert!(proc_addrs(&d).is_err());
}

/// The contract of the child: fd 0 is the listening socket, fd 1 /dev/null, fd 2 inherited,
/// nothing else open; exactly the configured environment plus PATH; no blocked or ignored
/// signals; parent-death signal SIGTERM.
#[test]
fn child_gets_socket_on_fd0_clean_fds_env_and_signals() {
    let dir = TempDir::new();
    let addr = ListenAddr::Unix(dir.0.join("php.sock-0"));
    let d = def(
        &["/bin/sleep", "30"],
        ListenAddr::Unix(dir.0.join("php.sock")),
        &[("PHP_FCGI_CHILDREN", "0"), ("FOO", "bar baz")],
    );
    // Leak-bait: a descriptor without close-on-exec, and a blocked signal on this thread
    // (the forking thread's mask is what the child inherits). Rust ignores SIGPIPE already.
    let bait = nix::fcntl::open(
        "/dev/null",
        nix::fcntl::OFlag::O_RDONLY,
        nix::sys::stat::Mode::empty(),
    )
    .expect("open");
    let mut usr2 = nix::sys::signal::SigSet::empty();
    usr2.add(Signal::SIGUSR2);
    usr2.thread_block().expect("block");
    let outcome = spawn_proc(&d, 0, &addr, &mut None);
    usr2.thread_unblock().expect("unblock");
    let _ = nix::unistd::close(bait);
    let pid = match outcome {
        Ok(SpawnOutcome::Spawned { pid }) => pid,
        other => panic!("expected a spawned child, got {other:?}"),
    };
    let _child = Child(pid);

    // exec has happened when spawn_proc returns.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).expect("comm");
    assert_eq!(comm.trim(), "sleep");

    // Right after exec the dynamic loader of `sleep` briefly opens ld.so.cache and libraries;
    // a descriptor leaked through the exec stays open for good, so look until it settles.
    let stdio: BTreeSet<String> = ["0", "1", "2"].map(String::from).into_iter().collect();
    let t = Instant::now();
    let fds = loop {
        let fds: BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .expect("fd dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        if fds == stdio || t.elapsed() > Duration::from_secs(2) {
            break fds;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(fds, stdio, "only stdio may be open in the child");
    let fd0 = std::fs::read_link(format!("/proc/{pid}/fd/0")).expect("fd 0");
    assert!(fd0.to_string_lossy().starts_with("socket:["), "{fd0:?}");
    let fd1 = std::fs::read_link(format!("/proc/{pid}/fd/1")).expect("fd 1");
    assert_eq!(fd1, PathBuf::from("/dev/null"));

    // Our copy of the socket is closed, so a connection succeeding means the child holds
    // the listening socket.
    std::os::unix::net::UnixStream::connect(dir.0.join("php.sock-0")).expect("connect");

    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    let mut vars: Vec<&[u8]> = environ
        .split(|&b| b == 0)
        .filter(|v| !v.is_empty())
        .collect();
    vars.sort();
    assert_eq!(
        vars,
        [
            &b"FOO=bar baz"[..],
            b"PATH=/usr/local/bin:/usr/bin:/bin",
            b"PHP_FCGI_CHILDREN=0"
        ]
    );

    assert_eq!(status_field(pid, "SigBlk:"), "0000000000000000");
    // SAFETY: getpgid only reads the process's group id.
    assert_eq!(
        unsafe { libc::getpgid(pid.as_raw()) },
        pid.as_raw(),
        "its own process group"
    );
    // Default dispositions but SIGTTOU's: the child is a background job of a terminal.
    assert_eq!(
        status_field(pid, "SigIgn:"),
        format!("{:016x}", 1u64 << (libc::SIGTTOU - 1))
    );
    assert_eq!(
        status_field(pid, "PPid:"),
        std::process::id().to_string(),
        "no double fork"
    );
}

/// The brief's shell variant: the program itself sees fd 0 as a socket, no other inherited
/// descriptor, and a PATH given in env replaces the default.
#[test]
fn shell_child_sees_the_same_contract() {
    let dir = TempDir::new();
    let out = dir.0.join("fds");
    let env_out = dir.0.join("env");
    let d = def(
        &[
            "/bin/sh",
            "-c",
            "ls -l /proc/self/fd > \"$OUT\"; env > \"$ENV_OUT\"; exec sleep 30",
        ],
        ListenAddr::Tcp("127.0.0.1:1".parse().expect("addr")),
        &[
            ("OUT", out.to_str().expect("utf-8")),
            ("ENV_OUT", env_out.to_str().expect("utf-8")),
            ("PATH", "/usr/bin:/bin"),
        ],
    );
    // A free TCP port: bind port 0, read it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let addr = ListenAddr::Tcp(format!("127.0.0.1:{port}").parse().expect("addr"));
    wait_until_refused(&addr);
    let pid = match spawn_proc(&d, 0, &addr, &mut None) {
        Ok(SpawnOutcome::Spawned { pid }) => pid,
        other => panic!("expected a spawned child, got {other:?}"),
    };
    let _child = Child(pid);
    std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the child's socket");
    let deadline = Instant::now() + Duration::from_secs(10);
    let comm = || std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    while comm().trim() != "sleep" {
        assert!(Instant::now() < deadline, "the shell never reached sleep");
        std::thread::sleep(Duration::from_millis(10));
    }
    let fds = std::fs::read_to_string(&out).expect("fd listing");
    let mut numbers = Vec::new();
    for line in fds.lines().filter(|l| l.contains(" -> ")) {
        let name = line
            .split(" -> ")
            .next()
            .and_then(|l| l.split_whitespace().last());
        numbers.push(name.unwrap_or("?").to_string());
        if name == Some("0") {
            assert!(line.contains("socket:["), "{line}");
        }
    }
    // 0, 1 (the redirect), 2, and 3: the directory ls itself opened.
    assert_eq!(numbers, ["0", "1", "2", "3"], "{fds}");
    let env = std::fs::read_to_string(&env_out).expect("env listing");
    let mut names: Vec<&str> = env.lines().filter_map(|l| l.split('=').next()).collect();
    names.sort();
    // What shells add themselves (dash: PWD; bash also SHLVL and _).
    names.retain(|n| !["PWD", "OLDPWD", "SHLVL", "_"].contains(n));
    assert_eq!(names, ["ENV_OUT", "OUT", "PATH"], "{env}");
    assert!(env.contains("PATH=/usr/bin:/bin\n"), "{env}");
}

#[test]
fn exec_failures_are_reported_in_words() {
    let dir = TempDir::new();
    let sock = ListenAddr::Unix(dir.0.join("php.sock"));
    let addr = ListenAddr::Unix(dir.0.join("php.sock-0"));

    let missing = dir.0.join("no-such-php-cgi");
    let missing = missing.to_str().expect("utf-8");
    let e =
        spawn_proc(&def(&[missing], sock.clone(), &[]), 0, &addr, &mut None).expect_err("missing");
    assert_eq!(
        e.to_string(),
        format!("fastcgi 'php' proc 0: cannot execute {missing}: No such file or directory")
    );
    // The socket made for it is gone again.
    assert!(!dir.0.join("php.sock-0").exists());

    let plain = dir.0.join("not-executable");
    std::fs::write(&plain, "#!/bin/sh\n").expect("write");
    let plain = plain.to_str().expect("utf-8");
    let e = spawn_proc(&def(&[plain], sock, &[]), 0, &addr, &mut None).expect_err("not executable");
    // As root, a file without any x bit still fails with EACCES.
    assert_eq!(
        e.to_string(),
        format!("fastcgi 'php' proc 0: cannot execute {plain}: Permission denied")
    );
}

#[test]
fn something_already_answering_is_used() {
    let dir = TempDir::new();
    let path = dir.0.join("php.sock-0");
    let _running = std::os::unix::net::UnixListener::bind(&path).expect("bind");
    let d = def(
        &["/bin/sleep", "30"],
        ListenAddr::Unix(dir.0.join("php.sock")),
        &[],
    );
    let r = spawn_proc(&d, 0, &ListenAddr::Unix(path.clone()), &mut None);
    assert_eq!(r, Ok(SpawnOutcome::External));
    assert!(path.exists(), "the other server's socket stays");
}

#[test]
fn stale_socket_is_replaced_but_other_files_are_not() {
    let dir = TempDir::new();
    let path = dir.0.join("php.sock-0");
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
    assert!(path.exists(), "a stale socket file is left behind");
    wait_until_refused(&ListenAddr::Unix(path.clone()));
    let d = def(
        &["/bin/sleep", "30"],
        ListenAddr::Unix(dir.0.join("php.sock")),
        &[],
    );
    let pid = match spawn_proc(&d, 0, &ListenAddr::Unix(path.clone()), &mut None) {
        Ok(SpawnOutcome::Spawned { pid }) => pid,
        other => panic!("expected a spawned child, got {other:?}"),
    };
    let child = Child(pid);
    std::os::unix::net::UnixStream::connect(&path).expect("connect");
    drop(child);

    let file = dir.0.join("php.sock-1");
    std::fs::write(&file, "data").expect("write");
    let e =
        spawn_proc(&d, 1, &ListenAddr::Unix(file.clone()), &mut None).expect_err("not a socket");
    assert!(e.to_string().contains("exists and is not a socket"), "{e}");
    assert_eq!(std::fs::read(&file).expect("kept"), b"data");
}

#[test]
fn backends_start_respawn_stop_and_clean_up() {
    let dir = TempDir::new();
    let mut d = def(
        &["/bin/sleep", "30"],
        ListenAddr::Unix(dir.0.join("php.sock")),
        &[],
    );
    d.procs = 2;
    let mut ext = def(&["/bin/true"], ListenAddr::Unix(dir.0.join("x")), &[]);
    ext.name = "remote".to_string();
    ext.spawn = None;
    ext.socket = None;
    ext.address = vec![ListenAddr::Tcp("127.0.0.1:9000".parse().expect("addr"))];
    let mut b = Backends::start(&[d, ext]).expect("start");
    let mut guards: Vec<Child> = b.pids().into_iter().map(Child).collect();
    assert_eq!(b.live(), 2);
    let addrs = b.addresses("php");
    assert_eq!(addrs.len(), 2);
    for a in &addrs {
        assert!(answers(a), "{a:?}");
    }
    assert_eq!(b.addresses("remote").len(), 1);

    // Proc 0 dies at once: a crash, respawned after 100 ms, at the same address.
    let old = b.pids()[0];
    kill(old, Signal::SIGKILL).expect("kill");
    let status = waitpid(old, None).expect("reap");
    guards.remove(0).reaped();
    assert!(matches!(
        status,
        WaitStatus::Signaled(_, Signal::SIGKILL, _)
    ));
    let now = Instant::now();
    assert!(b.on_exit(old, &status, now));
    assert_eq!(b.live(), 1);
    let due = b.next_respawn().expect("scheduled");
    assert_eq!(due, now + Duration::from_millis(100));
    b.respawn_due(now);
    assert_eq!(b.live(), 1, "not due yet");
    b.respawn_due(due);
    assert_eq!(b.live(), 2);
    assert_eq!(b.next_respawn(), None);
    let new = b.pids()[0];
    guards.push(Child(new));
    assert_ne!(new, old);
    assert!(answers(&addrs[0]));

    b.stop();
    for pid in b.pids() {
        let status = waitpid(pid, None).expect("reap");
        if let Some(i) = guards.iter().position(|g| g.0 == pid) {
            guards.remove(i).reaped();
        }
        assert!(matches!(
            status,
            WaitStatus::Signaled(_, Signal::SIGTERM, _)
        ));
        assert!(b.on_exit(pid, &status, Instant::now()));
    }
    assert_eq!(b.live(), 0);
    assert_eq!(b.next_respawn(), None);
    b.cleanup();
    for a in &addrs {
        if let ListenAddr::Unix(p) = a {
            assert!(!p.exists(), "{p:?} removed");
        }
    }
    assert!(guards.is_empty());
}

#[test]
fn backends_start_fails_cleanly() {
    let dir = TempDir::new();
    let mut d = def(
        &["/bin/sleep", "30"],
        ListenAddr::Unix(dir.0.join("a.sock")),
        &[],
    );
    d.procs = 2;
    let mut bad = def(
        &["/nonexistent/php-cgi"],
        ListenAddr::Unix(dir.0.join("b.sock")),
        &[],
    );
    bad.name = "bad".to_string();
    let e = Backends::start(&[d, bad]).expect_err("must fail");
    assert_eq!(
        e,
        "fastcgi 'bad' proc 0: cannot execute /nonexistent/php-cgi: No such file or directory"
    );
    // The good backend's processes were killed and reaped, their sockets removed.
    let left: Vec<_> = std::fs::read_dir(&dir.0)
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
