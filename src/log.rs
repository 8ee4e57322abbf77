//! Logs: the error log through tracing (stderr or a file) and the access log, both reopenable.
//!
//! A log file is reopened by opening the path again and moving the new descriptor onto the old
//! descriptor's number with dup3. Everything that writes to the number (the tracing writer,
//! the access log flush) then writes to the new file without knowing, and a watcher that
//! reopens before forking hands the new file to the workers it forks afterwards.

use crate::config::LogTarget;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

/// The descriptor the error log writes to (2 = stderr until a file is configured).
static ERROR_LOG_FD: AtomicI32 = AtomicI32::new(2);

/// The access log's descriptor in this process (-1: none), for the log handoff.
static ACCESS_LOG_FD: AtomicI32 = AtomicI32::new(-1);
/// The worker's buffered access-log lines not yet written (start and length), for
/// `write_pending_access_lines`: a worker the route backstop kills writes them on its way out.
static ACCESS_PENDING_PTR: std::sync::atomic::AtomicPtr<u8> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());
static ACCESS_PENDING_LEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Writes the access-log lines still buffered, from a signal handler: only atomics and
/// write(2), both async-signal-safe. For the route backstop's SIGALRM, which ends the worker
/// in the middle of a route call; the buffer is not touched during a route call, so what was
/// published is whole and still allocated.
pub fn write_pending_access_lines() {
    let fd = ACCESS_LOG_FD.load(Ordering::Relaxed);
    let ptr = ACCESS_PENDING_PTR.load(Ordering::Relaxed);
    let mut len = ACCESS_PENDING_LEN.load(Ordering::Relaxed);
    let mut at = ptr;
    while fd >= 0 && !at.is_null() && len > 0 {
        // SAFETY: `at..at+len` lies within the access buffer published by `AccessLog::publish`,
        // which stays allocated and unchanged while a route call runs (the only time the
        // backstop's signal arrives); write(2) only reads it.
        let n = unsafe { libc::write(fd, at.cast(), len) };
        if n <= 0 {
            return;
        }
        len -= n as usize;
        // SAFETY: n <= len, so the pointer stays within (or one past) the same buffer.
        at = unsafe { at.add(n as usize) };
    }
}

/// The descriptor the error log writes to now (a forked child that closes everything else
/// keeps this one).
pub fn error_log_fd() -> RawFd {
    ERROR_LOG_FD.load(Ordering::Relaxed)
}

/// A log file that can be reopened in place.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    fd: OwnedFd,
}

impl LogFile {
    /// Opens `path` for appending, creating it (mode 0644) if needed.
    pub fn open(path: &Path) -> io::Result<LogFile> {
        Ok(LogFile {
            path: path.to_path_buf(),
            fd: open_append(path)?,
        })
    }

    /// Opens the path again and moves the new file onto this descriptor number. In a worker
    /// the watcher does the opening and passes the file on (src/log_handoff.rs): a worker
    /// may run as a `user` that cannot open the path, or inside a `chroot`.
    pub fn reopen(&self) -> io::Result<()> {
        if crate::log_handoff::has_receiver() {
            let known = [error_log_fd(), ACCESS_LOG_FD.load(Ordering::Relaxed)];
            return crate::log_handoff::receive(self.fd.as_raw_fd(), &known);
        }
        let new = open_append(&self.path)?;
        nix::unistd::dup3(new.as_raw_fd(), self.fd.as_raw_fd(), OFlag::O_CLOEXEC)?;
        Ok(())
    }

    /// The descriptor number, stable across reopens.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Writes all of `buf` (O_APPEND keeps whole writes from several processes apart).
    pub fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match nix::unistd::write(&self.fd, buf) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => buf = &buf[n..],
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<OwnedFd> {
    let fd = nix::fcntl::open(
        path,
        OFlag::O_WRONLY | OFlag::O_APPEND | OFlag::O_CREAT | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    )
    .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
    // SAFETY: open just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The error log: stderr, or a reopenable file.
#[derive(Debug)]
pub struct ErrorLog {
    file: Option<LogFile>,
}

impl ErrorLog {
    /// Opens the configured target and points the tracing writer at it. With `as_stderr`
    /// (a daemon, whose stderr is /dev/null) the file also becomes descriptor 2, so whatever
    /// writes to stderr, a FastCGI process or a panic, lands in the error log too, and a
    /// reopen moves descriptor 2 along.
    pub fn open(target: &LogTarget, as_stderr: bool) -> io::Result<ErrorLog> {
        let mut file = match target {
            LogTarget::Stderr => None,
            LogTarget::File(p) => Some(LogFile::open(p)?),
        };
        if let (Some(f), true) = (&mut file, as_stderr) {
            nix::unistd::dup2(f.fd.as_raw_fd(), 2)?;
            // SAFETY: descriptor 2 now refers to the log file and this LogFile owns it from
            // here on (the old descriptor closes when the replaced OwnedFd drops).
            f.fd = unsafe { OwnedFd::from_raw_fd(2) };
        }
        let fd = file.as_ref().map(LogFile::raw_fd).unwrap_or(2);
        ERROR_LOG_FD.store(fd, Ordering::Relaxed);
        Ok(ErrorLog { file })
    }

    /// The log file, when the target is a file.
    pub fn file(&self) -> Option<&LogFile> {
        self.file.as_ref()
    }

    /// Reopens the file (nothing to do for stderr).
    pub fn reopen(&self) -> io::Result<()> {
        match &self.file {
            Some(f) => f.reopen(),
            None => Ok(()),
        }
    }
}

impl Drop for ErrorLog {
    fn drop(&mut self) {
        // The file closes with us: later events (a start-up error) go to stderr.
        ERROR_LOG_FD.store(2, Ordering::Relaxed);
    }
}

/// Writes tracing events to the error log descriptor, one write per event.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorLogWriter;

impl io::Write for ErrorLogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let fd = ERROR_LOG_FD.load(Ordering::Relaxed);
        // SAFETY: the descriptor is owned by the process-wide ErrorLog (or is stderr) and stays
        // open for the life of the process; we only borrow it for this write.
        let bfd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        nix::unistd::write(bfd, buf).map_err(io::Error::from)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ErrorLogWriter {
    type Writer = ErrorLogWriter;
    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

/// Installs the tracing subscriber that writes to the error log. `RUST_LOG` overrides the
/// default level (info). Called once, before any fork, and never spawns a thread.
pub fn init_tracing() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = log_filter(std::env::var("RUST_LOG").ok().as_deref());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(ErrorLogWriter)
        .with_ansi(false)
        .with_target(false);
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(filter)
        .try_init();
}

/// The filter `RUST_LOG` asks for: comma-separated `level` and `target=level` directives
/// (`debug`, `luahttpd::worker=trace,info`); unset, empty or unreadable means `info`.
pub fn log_filter(spec: Option<&str>) -> tracing_subscriber::filter::Targets {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    let info = || Targets::new().with_default(LevelFilter::INFO);
    match spec.map(str::trim) {
        None | Some("") => info(),
        Some(s) => s.parse().unwrap_or_else(|_| info()),
    }
}

/// A worker's access log: lines are buffered and written in batches.
#[derive(Debug)]
pub struct AccessLog {
    file: LogFile,
    buf: Vec<u8>,
}

/// Flush when this much is buffered, even before the once-a-second flush.
const ACCESS_FLUSH_BYTES: usize = 32 * 1024;

impl AccessLog {
    /// Wraps an open log file.
    pub fn new(file: LogFile) -> AccessLog {
        ACCESS_LOG_FD.store(file.raw_fd(), Ordering::Relaxed);
        AccessLog {
            file,
            buf: Vec::with_capacity(ACCESS_FLUSH_BYTES + 1024),
        }
    }

    /// The buffer to append one whole line to; `line_done` must follow.
    pub fn line(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Flushes if the buffer is large.
    pub fn line_done(&mut self) {
        if self.buf.len() >= ACCESS_FLUSH_BYTES {
            self.flush();
        }
        self.publish();
    }

    /// Makes the buffered lines known to `write_pending_access_lines`.
    fn publish(&mut self) {
        ACCESS_PENDING_PTR.store(self.buf.as_mut_ptr(), Ordering::Relaxed);
        ACCESS_PENDING_LEN.store(self.buf.len(), Ordering::Relaxed);
    }

    /// Writes everything buffered.
    pub fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        if let Err(e) = self.file.write_all(&self.buf) {
            tracing::error!("access log: {e}");
        }
        self.buf.clear();
        self.publish();
    }

    /// Flushes, then reopens the file.
    pub fn reopen(&mut self) -> io::Result<()> {
        self.flush();
        self.file.reopen()
    }
}

/// Appends `bytes` to `out` for a quoted access log field: `"` and `\` escaped, bytes outside
/// printable ASCII as `\xHH`, so a request cannot forge log lines.
pub fn push_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        match b {
            b'"' | b'\\' => {
                out.push(b'\\');
                out.push(b);
            }
            0x20..=0x7e => out.push(b),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\x");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 15) as usize]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_quotes_and_controls() {
        let mut out = Vec::new();
        push_escaped(&mut out, b"a\"b\\c\n\xff");
        assert_eq!(out, b"a\\\"b\\\\c\\x0a\\xff");
    }

    #[test]
    fn rust_log_takes_levels_and_targets() {
        use tracing_subscriber::filter::LevelFilter;
        assert_eq!(log_filter(None).default_level(), Some(LevelFilter::INFO));
        assert_eq!(
            log_filter(Some("")).default_level(),
            Some(LevelFilter::INFO)
        );
        assert_eq!(
            log_filter(Some("debug")).default_level(),
            Some(LevelFilter::DEBUG)
        );
        let t = log_filter(Some("luahttpd::worker=trace,warn"));
        assert_eq!(t.default_level(), Some(LevelFilter::WARN));
        assert!(t.would_enable("luahttpd::worker::conn", &tracing::Level::TRACE));
        assert!(!t.would_enable("luahttpd::watcher", &tracing::Level::INFO));
        // Garbage is not a silent "off": the default level stays.
        assert_eq!(
            log_filter(Some("=no=")).default_level(),
            Some(LevelFilter::INFO)
        );
    }

    #[test]
    fn reopen_follows_a_rename() {
        let dir = std::env::temp_dir().join(format!("luahttpd-log-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.log");
        let mut log = AccessLog::new(LogFile::open(&path).unwrap());
        log.line().extend_from_slice(b"one\n");
        log.flush();
        std::fs::rename(&path, dir.join("access.log.1")).unwrap();
        log.reopen().unwrap();
        log.line().extend_from_slice(b"two\n");
        log.flush();
        assert_eq!(std::fs::read(dir.join("access.log.1")).unwrap(), b"one\n");
        assert_eq!(std::fs::read(&path).unwrap(), b"two\n");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
