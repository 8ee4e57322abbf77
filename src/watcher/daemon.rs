//! Detaching into the background: fork · setsid · fork · chdir · stdio to /dev/null.
//!
//! The launching process stays until the daemon reports through a pipe that it runs (listeners
//! bound, workers forked), so `luahttpd --daemon` exits 0 only for a server that runs and
//! otherwise prints the daemon's error and exits 1.

use nix::unistd::{fork, pipe, setsid, ForkResult};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;

/// The daemon's end of the readiness pipe.
#[derive(Debug)]
pub struct Readiness {
    fd: Option<OwnedFd>,
}

impl Readiness {
    /// No launcher is waiting (foreground mode).
    pub fn none() -> Readiness {
        Readiness { fd: None }
    }

    /// The pipe's descriptor, which forked workers must close.
    pub fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.fd.as_ref().map(|f| f.as_raw_fd())
    }

    /// Tells the launcher the server runs.
    pub fn ready(&mut self) {
        if let Some(fd) = self.fd.take() {
            let mut f = std::fs::File::from(fd);
            let _ = f.write_all(b"OK\n");
        }
    }

    /// Tells the launcher why start-up failed.
    pub fn failed(&mut self, message: &str) {
        if let Some(fd) = self.fd.take() {
            let mut f = std::fs::File::from(fd);
            let line = format!("{}\n", message.replace('\n', " "));
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// Detaches. Returns in the daemon only; the launcher exits here with the daemon's verdict.
pub fn detach() -> Result<Readiness, String> {
    let (rd, wr) = pipe().map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: the process is single-threaded here (no thread has been started yet), so the
    // child may run arbitrary code after fork.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Parent { .. } => {
            drop(wr);
            // One line answers; workers forked meanwhile may hold the write end open, so
            // waiting for end-of-file could wait for ever.
            let mut msg = read_line(std::fs::File::from(rd));
            if msg == "OK" {
                std::process::exit(0);
            }
            if msg.is_empty() {
                msg = "the daemon exited during start-up (see the error log)".to_string();
            }
            eprintln!("luahttpd: {msg}");
            std::process::exit(1);
        }
        ForkResult::Child => {}
    }
    drop(rd);
    setsid().map_err(|e| format!("setsid: {e}"))?;
    // SAFETY: still single-threaded, as above.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        // The session leader exits so the daemon can never reacquire a controlling terminal.
        ForkResult::Parent { .. } => std::process::exit(0),
        ForkResult::Child => {}
    }
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))?;
    redirect_stdio().map_err(|e| format!("/dev/null: {e}"))?;
    Ok(Readiness { fd: Some(wr) })
}

fn read_line(mut f: std::fs::File) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while let Ok(1) = f.read(&mut byte) {
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    String::from_utf8_lossy(&line).into_owned()
}

fn redirect_stdio() -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    for fd in 0..3 {
        nix::unistd::dup2(null.as_raw_fd(), fd)?;
    }
    Ok(())
}
