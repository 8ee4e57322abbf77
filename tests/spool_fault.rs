//! A request body that cannot be spooled (the file system refuses the write) is answered 500
//! by the worker that read it, which goes on serving: here the server runs under an
//! `RLIMIT_FSIZE` smaller than the body, so the spool file's write fails with EFBIG.

mod common;
mod fcgi_common;

use common::Server;
use fcgi_common::*;
use std::os::unix::process::CommandExt;

/// Largest file the server may write (bytes): above the spool's 16 KiB in memory, below the
/// body sent.
const FSIZE: u64 = 48 * 1024;

#[test]
fn a_spool_write_failure_gives_500_and_the_worker_goes_on() {
    let dir = site_dir();
    let config = config_text(dir.path(), &Opts::default());
    let server = Server::start_with(dir, &config, |cmd| {
        // SAFETY: setrlimit is async-signal-safe and touches only this (forked) process.
        unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: FSIZE,
                    rlim_max: FSIZE,
                };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    let workers = server.worker_pids();

    let large = body_bytes(200 * 1024);
    let mut c = Conn::connect(&server.addr);
    let mut req = format!(
        "POST /t.php?mode=sha256 HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        large.len()
    )
    .into_bytes();
    req.extend_from_slice(&large);
    c.send(&req);
    let r = c.response(false);
    assert_eq!(r.status, 500, "{}", r.text());
    wait_for(
        "the spool failure logged",
        std::time::Duration::from_secs(3),
        || server.log_text().contains("holding the request body"),
    );

    // The worker that answered is the one that runs on: a small body (held in memory) goes
    // through.
    let small = b"hello".to_vec();
    let mut c = Conn::connect(&server.addr);
    let mut req = format!(
        "POST /t.php?mode=sha256 HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        small.len()
    )
    .into_bytes();
    req.extend_from_slice(&small);
    c.send(&req);
    let r = c.response(false);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.text(),
        format!("sha256={}\nlength=5\n", sha256_hex(&small))
    );
    assert_eq!(server.worker_pids(), workers, "no worker died");
    assert!(
        !server.log_text().contains("respawning"),
        "{}",
        server.log_text()
    );
}
