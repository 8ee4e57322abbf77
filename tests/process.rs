//! The process model: respawn, graceful and immediate stops, log reopening, timeouts.

mod common;

use common::{alive, wait_for, Client, Server};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

#[test]
fn killed_worker_is_respawned_and_requests_keep_succeeding() {
    let s = Server::start("workers = 2", &[("a.txt", b"hello")]);
    let before = s.worker_pids();
    assert_eq!(before.len(), 2, "two workers: {before:?}");
    std::process::Command::new("kill")
        .args(["-9", &before[0].to_string()])
        .status()
        .unwrap();
    wait_for("a new worker", Duration::from_secs(5), || {
        let now = s.worker_pids();
        now.len() == 2 && !now.contains(&before[0])
    });
    for _ in 0..50 {
        let r = s.get("/a.txt");
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"hello");
    }
    assert!(
        s.log_text().contains("was killed by SIGKILL"),
        "{}",
        s.log_text()
    );
}

#[test]
fn sigint_lets_a_slow_download_finish_byte_exact_then_exits() {
    slow_download_through_a_stop(false);
}

#[test]
fn ctrl_c_in_a_terminal_lets_a_slow_download_finish_too() {
    // The terminal sends SIGINT to its foreground process group: the watcher and the workers
    // at once. The worker also gets the watcher's SIGQUIT; taking the two for a second
    // Ctrl-C cut the download.
    slow_download_through_a_stop(true);
}

/// A 20 MiB download read slowly while the server stops on SIGINT: to the watcher alone, or
/// (`group`) to the process group the server leads, as a terminal's Ctrl-C.
fn slow_download_through_a_stop(group: bool) {
    let data: Vec<u8> = (0..20 * 1024 * 1024u32)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let dir = common::TempDir::new("srv");
    dir.write("www/big.bin", &data);
    let config = format!("server {{ {}, workers = 1 }}\n", common::BASE);
    let mut s = Server::start_with(dir, &config, |cmd| {
        use std::os::unix::process::CommandExt;
        if group {
            cmd.process_group(0);
        }
    });
    let mut c = s.connect();
    c.send(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    // Read the head and a little of the body, then stop the server mid-download.
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while got.len() < 256 * 1024 {
        let n = c.stream.read(&mut buf).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    if group {
        // SAFETY: kill(2) with a negative pid signals the group the server leads (its own,
        // made by `process_group(0)`), never this test's.
        assert_eq!(
            unsafe { libc::kill(-(s.child.id() as i32), libc::SIGINT) },
            0
        );
    } else {
        s.signal(2);
    }
    // A new connection is refused or closed once the listeners are gone.
    std::thread::sleep(Duration::from_millis(200));
    // Keep reading slowly until the server closes.
    loop {
        let n = c.stream.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        std::thread::sleep(Duration::from_millis(2));
    }
    let head_end = common::find(&got, b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&got[..head_end]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // The response started before the stop: it keeps its framing, a whole Content-Length.
    assert!(
        head.contains(&format!("Content-Length: {}\r\n", data.len())),
        "{head}"
    );
    assert_eq!(got.len() - head_end, data.len(), "whole body received");
    assert!(got[head_end..] == data[..], "body is byte-exact");
    let st = s
        .wait_exit(Duration::from_secs(10))
        .expect("server exits after the drain");
    assert!(st.success(), "{st:?}");
}

#[test]
fn graceful_stop_closes_idle_keepalive_connections_and_refuses_new_ones() {
    let mut s = Server::start("workers = 1", &[("a.txt", b"a")]);
    let mut idle = s.connect();
    idle.send(b"GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(idle.response(false).status, 200);
    let addr = s.addr.clone();
    s.signal(3); // SIGQUIT
    assert!(idle.closed(), "idle keep-alive connection is closed");
    let st = s.wait_exit(Duration::from_secs(5)).expect("exits");
    assert!(st.success());
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "nothing listens any more"
    );
}

#[test]
fn second_sigint_stops_at_once() {
    let data = vec![b'x'; 8 * 1024 * 1024];
    let mut s = Server::start(
        "workers = 1, timeouts = { graceful = 30 }",
        &[("big", &data)],
    );
    let mut c = s.connect();
    c.send(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut buf = [0u8; 1024];
    assert!(c.stream.read(&mut buf).unwrap() > 0);
    // The client stops reading: the download cannot finish by itself.
    s.signal(2);
    std::thread::sleep(Duration::from_millis(300));
    assert!(s.child.try_wait().unwrap().is_none(), "still draining");
    s.signal(2);
    let st = s
        .wait_exit(Duration::from_secs(5))
        .expect("second SIGINT stops it");
    assert!(st.success());
}

#[test]
fn sigterm_stops_at_once_and_workers_die_with_the_watcher() {
    let mut s = Server::start("workers = 2", &[]);
    let workers = s.worker_pids();
    s.signal(15);
    s.wait_exit(Duration::from_secs(5)).expect("exits");
    wait_for("workers gone", Duration::from_secs(5), || {
        workers.iter().all(|&p| !alive(p))
    });

    let s = Server::start("workers = 2", &[]);
    let workers = s.worker_pids();
    std::process::Command::new("kill")
        .args(["-9", &s.pid().to_string()])
        .status()
        .unwrap();
    wait_for("orphaned workers exit", Duration::from_secs(5), || {
        workers.iter().all(|&p| !alive(p))
    });
}

#[test]
fn sighup_reopens_the_access_log_after_a_rename() {
    let s = Server::start(r#"workers = 2, access_log = "access.log""#, &[("a", b"a")]);
    common::assert_access_log_reopens(&s, || s.signal(1));
}

#[test]
fn slowloris_is_cut_off_while_others_are_served() {
    let s = Server::start("workers = 1, timeouts = { read_idle = 1 }", &[("a", b"a")]);
    let mut slow = s.connect();
    slow.send(b"GET /a HTTP/1.1\r\n");
    let start = Instant::now();
    // Trickle header bytes: the whole head must still arrive within read_idle.
    let mut cut = false;
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(100));
        if slow.stream.write_all(b"X-a: b\r\n").is_err() {
            cut = true;
            break;
        }
        assert_eq!(s.get("/a").status, 200, "others are served meanwhile");
        let mut b = [0u8; 1];
        slow.stream.set_nonblocking(true).unwrap();
        let r = slow.stream.read(&mut b);
        slow.stream.set_nonblocking(false).unwrap();
        if matches!(r, Ok(0)) || matches!(&r, Err(e) if e.kind() != std::io::ErrorKind::WouldBlock)
        {
            cut = true;
            break;
        }
    }
    assert!(cut, "slow client was not cut off");
    let took = start.elapsed();
    assert!(took < Duration::from_millis(2500), "cut off after {took:?}");
}

#[test]
fn idle_keepalive_connection_is_closed_after_keepalive_idle() {
    let s = Server::start(
        "workers = 1, timeouts = { keepalive_idle = 1 }",
        &[("a", b"a")],
    );
    let mut c = s.connect();
    c.send(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response(false).status, 200);
    let start = Instant::now();
    assert!(c.closed());
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[test]
fn client_that_stops_reading_is_cut_off_after_write_idle() {
    let data = vec![b'y'; 32 * 1024 * 1024];
    let s = Server::start(
        "workers = 1, timeouts = { write_idle = 1 }",
        &[("big", &data)],
    );
    let mut c = s.connect();
    c.send(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n");
    std::thread::sleep(Duration::from_millis(2500));
    // Now read everything the kernel buffered: the server must have given up.
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    c.stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    loop {
        match c.stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
    assert!(
        total < data.len(),
        "the stalled download was cut off ({total} bytes)"
    );
    assert_eq!(s.get("/big").status, 200, "the worker still serves");
}

#[test]
fn at_the_connection_limit_new_clients_wait_for_a_free_slot() {
    let s = Server::start(
        "workers = 1, limits = { connections = 2 }, timeouts = { keepalive_idle = 30 }",
        &[("a", b"a")],
    );
    let mut a = s.connect();
    let mut b = s.connect();
    for c in [&mut a, &mut b] {
        c.send(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(c.response(false).status, 200);
    }
    // The third connects (kernel backlog) but is not served while both slots are held.
    let mut third = Client::connect(&s.addr);
    third.send(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n");
    third
        .stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert!(
        third.stream.read(&mut buf).is_err(),
        "served beyond the limit"
    );
    drop(a);
    third
        .stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(third.response(false).status, 200);
}

/// CPU time (user + system, in clock ticks) a process has used.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

#[test]
fn running_out_of_descriptors_never_spins_and_recovers() {
    use std::os::unix::process::CommandExt;
    let dir = common::TempDir::new("emfile");
    std::fs::create_dir_all(dir.path().join("www")).unwrap();
    dir.write("www/a", b"a");
    let config = format!(
        "server {{ {}, workers = 1 }}\n",
        common::BASE.replace("workers = 2, ", "")
    );
    let s = Server::start_with(dir, &config, |cmd| {
        // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: 48,
                    rlim_max: 48,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    let worker = s.worker_pids()[0];
    // Far more connections than the worker has descriptors for.
    let held: Vec<_> = (0..120)
        .filter_map(|_| std::net::TcpStream::connect(&s.addr).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_ticks(worker);
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(worker) - before;
    // A spinning loop would use about 200 ticks in 2 s.
    assert!(
        used < 40,
        "worker used {used} ticks in 2 s while out of descriptors"
    );
    assert!(s.log_text().contains("pausing accepts"), "{}", s.log_text());
    drop(held);
    wait_for("requests served again", Duration::from_secs(10), || {
        let mut c = Client::connect(&s.addr);
        c.send(b"GET /a HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        c.try_response(false).is_some_and(|r| r.status == 200)
    });
}
