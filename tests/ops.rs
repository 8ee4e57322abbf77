//! Operating it for real: privileges (the test runs as root, as in CI).

mod common;

use common::Server;
use std::time::{Duration, Instant};

/// The four ids of a `Uid:` or `Gid:` line of /proc/PID/status.
fn ids(pid: i32, key: &str) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn workers_run_as_the_configured_user_and_still_reopen_logs() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let s = Server::start(
        r#"user = "nobody", group = "nogroup", access_log = "access.log""#,
        &[("a.txt", b"hello")],
    );
    let workers = s.worker_pids();
    assert_eq!(workers.len(), 2, "{workers:?}");
    // A worker that has only just forked has not switched yet: wait until both ran start-up.
    wait_for("both workers to switch", || {
        workers.iter().all(|p| ids(*p, "Uid:") != vec![0; 4])
    });
    for pid in &workers {
        assert_eq!(ids(*pid, "Uid:"), vec![65534; 4], "worker {pid}");
        assert_eq!(ids(*pid, "Gid:"), vec![65534; 4], "worker {pid}");
    }
    assert!(s.log_text().matches("running as root").count() == 0);
    // The log folder is root's (0755): a worker as nobody could not create the new file.
    let log = s.dir.path().join("access.log");
    assert_eq!(s.get("/a.txt").status, 200);
    wait_for("the first access log line", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("/a.txt"))
    });
    std::fs::rename(&log, s.dir.path().join("access.log.1")).unwrap();
    s.signal(libc::SIGHUP);
    wait_for("the reopened access log", || log.exists());
    assert_eq!(s.get("/after-reopen").status, 404);
    assert_eq!(s.get("/after-reopen").status, 404);
    wait_for("a line in the new access log", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("/after-reopen"))
    });
    assert!(
        !s.log_text().contains("reopen access log"),
        "{}",
        s.log_text()
    );
}

#[test]
fn root_without_user_warns_once() {
    if !is_root() {
        return;
    }
    let s = Server::start("", &[]);
    assert_eq!(
        s.log_text().matches("running as root with no user").count(),
        1
    );
}

#[test]
fn a_chrooted_worker_serves_files() {
    if !is_root() {
        return;
    }
    let dir = common::TempDir::new("jail");
    dir.write("jail/site/index.html", b"inside the jail");
    let config = r#"server { listen = "127.0.0.1:0", workers = 1, error_log = "stderr",
        user = "nobody", chroot = "jail", root = "/site" }"#;
    let s = Server::start_config(dir, config);
    let r = s.get("/index.html");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"inside the jail");
    let pid = s.worker_pids()[0];
    let root = std::fs::read_link(format!("/proc/{pid}/root")).unwrap();
    assert!(root.ends_with("jail"), "{}", root.display());
}

#[test]
fn check_names_a_user_that_does_not_exist() {
    let dir = common::TempDir::new("user");
    std::fs::create_dir_all(dir.path().join("www")).unwrap();
    let conf = dir.write(
        "site.lua",
        b"server { root = \"www\",\n user = \"no-such-user-x\" }\n",
    );
    let out = std::process::Command::new(common::bin())
        .arg("-t")
        .arg("-c")
        .arg(&conf)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("site.lua:2: user 'no-such-user-x' does not exist"),
        "{err}"
    );
}

#[test]
fn spawned_fastcgi_processes_run_as_the_user_and_workers_reach_them() {
    if !is_root() {
        return;
    }
    let dir = common::TempDir::new("fcgiuser");
    std::fs::create_dir_all(dir.path().join("www")).unwrap();
    let backend = backend_for_nobody();
    let config = format!(
        "server {{ listen = \"127.0.0.1:0\", workers = 1, root = \"www\", error_log = \"stderr\", \
         user = \"nobody\", group = \"nogroup\" }}\n\
         fastcgi \"t\" {{ spawn = \"{}\", socket = \"unix:{}/t.sock\", extensions = {{ \".php\" }}, \
         check_local = false }}\n",
        backend.display(),
        dir.path().display()
    );
    let s = Server::start_config(dir, &config);
    let children = s.worker_pids();
    assert_eq!(
        children.len(),
        2,
        "one worker and one backend: {children:?}"
    );
    for pid in &children {
        assert_eq!(ids(*pid, "Uid:"), vec![65534; 4], "child {pid}");
        assert_eq!(ids(*pid, "Gid:"), vec![65534; 4], "child {pid}");
    }
    // The worker, as nobody, connects to the socket the watcher created as root.
    let r = s.get("/x.php");
    assert!(r.status < 500, "status {}: {}", r.status, s.log_text());
    drop(s);
    let _ = std::fs::remove_dir_all(backend.parent().expect("the copy's folder"));
}

/// A copy of the test backend that uid 65534 can execute: the build directory may sit in a
/// checkout only root can enter (a `mktemp -d` clone is mode 0700, as CI's may be).
fn backend_for_nobody() -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("luahttpd-fcgi-nobody-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir for the backend copy");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    let bin = dir.join("luahttpd-fcgi-test");
    std::fs::copy(env!("CARGO_BIN_EXE_luahttpd-fcgi-test"), &bin).expect("copy the backend");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    bin
}

fn run(args: &[&std::ffi::OsStr]) -> (i32, String) {
    let out = std::process::Command::new(common::bin())
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn signal_flag_reloads_and_stops_the_server_of_the_pid_file() {
    let mut s = Server::start(r#"pid_file = "luahttpd.pid""#, &[]);
    let conf = s.dir.path().join("site.lua");
    let c = conf.as_os_str();
    let (code, out) = run(&["-c".as_ref(), c]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("already running (pid {}", s.pid())),
        "{out}"
    );
    let (code, out) = run(&["-s".as_ref(), "reload".as_ref(), "-c".as_ref(), c]);
    assert_eq!(code, 0, "{out}");
    wait_for("the reload", || s.log_text().contains("generation 2 runs"));
    let (code, out) = run(&["-s".as_ref(), "bogus".as_ref(), "-c".as_ref(), c]);
    assert_eq!(code, 1, "{out}");
    let (code, out) = run(&["-s".as_ref(), "stop".as_ref(), "-c".as_ref(), c]);
    assert_eq!(code, 0, "{out}");
    assert!(
        s.wait_exit(Duration::from_secs(10)).is_some(),
        "server did not stop"
    );
    let (code, out) = run(&["-s".as_ref(), "stop".as_ref(), "-c".as_ref(), c]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no pid file"), "{out}");
}

#[test]
fn a_config_file_without_c_gets_a_hint() {
    let (code, out) = run(&["site.lua".as_ref()]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("did you mean -c site.lua"), "{out}");
}

#[test]
fn notify_socket_gets_ready_reloading_and_stopping_in_order() {
    let dir = common::TempDir::new("notify");
    std::fs::create_dir_all(dir.path().join("www")).unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let config = format!("server {{ {} }}\n", common::BASE);
    let mut s = Server::start_with(dir, &config, |cmd| {
        cmd.env("NOTIFY_SOCKET", &sock_path);
    });
    let next = || {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("a notify message");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let m = next();
    assert!(
        m.starts_with("READY=1\n") && m.contains("STATUS=generation 1, 2 workers"),
        "{m}"
    );
    s.signal(libc::SIGUSR1);
    let m = next();
    assert!(m.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{m}");
    let m = next();
    assert!(
        m.starts_with("READY=1\n") && m.contains("generation 2"),
        "{m}"
    );
    s.signal(libc::SIGTERM);
    let m = next();
    assert!(m.starts_with("STOPPING=1\n"), "{m}");
    assert!(s.wait_exit(Duration::from_secs(10)).is_some());
}

/// Binds a listener on an ephemeral port, writes a config listing it (plus one entry
/// more, and passes a socket no entry names), sets LISTEN_FDS and execs the server in
/// place, so LISTEN_PID is the server's pid.
const ACTIVATE: &str = r#"
import os, socket, sys
dir, bin = sys.argv[1], sys.argv[2]
a = socket.socket(); a.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
a.bind(("127.0.0.1", 0)); a.listen(16)
b = socket.socket(); b.bind(("127.0.0.1", 0)); b.listen(16)
os.dup2(a.fileno(), 3); os.dup2(b.fileno(), 4)
os.set_inheritable(3, True); os.set_inheritable(4, True)
port = a.getsockname()[1]
open(dir + "/site.lua", "w").write('server { listen = { "127.0.0.1:%d" }, workers = 1, root = "www", error_log = "stderr" }\n' % port)
os.environ.update(LISTEN_FDS="2", LISTEN_PID=str(os.getpid()), LISTEN_FDNAMES="web:stray")
os.execv(bin, [bin, "-c", dir + "/site.lua"])
"#;

#[test]
fn socket_activation_uses_the_passed_listener() {
    use std::io::{BufRead, BufReader};
    let dir = common::TempDir::new("activate");
    dir.write("www/index.html", b"activated");
    let mut child = std::process::Command::new("python3")
        .args(["-c", ACTIVATE])
        .arg(dir.path())
        .arg(common::bin())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    let mut addr = None;
    for line in lines.by_ref() {
        let line = line.unwrap_or_default();
        log.push_str(&line);
        log.push('\n');
        if let Some(i) = line.find("listening on ") {
            addr = Some(line[i + 13..].trim().to_string());
            break;
        }
    }
    let addr = addr.unwrap_or_else(|| panic!("no start: {log}"));
    let mut c = common::Client::connect(&addr);
    c.send(b"GET /index.html HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let r = c.response(false);
    assert_eq!(r.body, b"activated");
    // Kept across a reload: the new generation serves on the same passed socket.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .unwrap();
    for line in lines.by_ref() {
        let line = line.unwrap_or_default();
        log.push_str(&line);
        log.push('\n');
        if line.contains("generation 2 runs") || line.contains("reload failed") {
            break;
        }
    }
    let mut c = common::Client::connect(&addr);
    c.send(b"GET /index.html HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let r = c.response(false);
    let _ = child.kill();
    let _ = child.wait();
    assert!(log.contains("generation 2 runs"), "{log}");
    assert_eq!(r.body, b"activated");
    assert!(log.contains("using the socket systemd passed"), "{log}");
    assert!(log.contains("is in no listen entry; closed"), "{log}");
}
