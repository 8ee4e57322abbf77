//! A pseudo-terminal driver for the interactive REPL tests: the real binary on the slave side,
//! the test on the master side.
#![allow(dead_code)]

use super::find;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The master side of a pty with the child on its slave; answers cursor-position queries.
pub struct Pty {
    master: OwnedFd,
    pub child: Child,
    out: Vec<u8>,
    /// How much of `out` earlier `expect` calls consumed.
    seen: usize,
    /// How many `ESC [ 6 n` queries were answered.
    answered: usize,
}

impl Pty {
    pub fn spawn(args: &[&std::ffi::OsStr], env: &[(&str, &Path)]) -> Pty {
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

    pub fn send(&mut self, bytes: &[u8]) {
        nix::unistd::write(&self.master, bytes).expect("write to pty");
    }

    /// Reads what is available (waiting up to `wait`); false at end of output.
    pub fn pump(&mut self, wait: Duration) -> bool {
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
    pub fn expect(&mut self, needle: &str) -> String {
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

    pub fn wait_exit(&mut self) -> Option<i32> {
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

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

/// Removes ANSI escape sequences (CSI) and carriage returns, to compare what a person sees.
pub fn plain(s: &str) -> String {
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
