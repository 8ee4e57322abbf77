//! `fs.read(path, max_bytes)` at request time (route, timers, respond hook; issue 13): a
//! small, read-only file helper, so that a timer can look at a flag or a small data file
//! without the config capturing `io`. (Not `read_file`: that name is the config-time helper,
//! which the request-time sandbox removes.)
//!
//! A relative path is opened beneath the config file's folder (`crate::beneath`: openat2's
//! RESOLVE_BENEATH, or the same rule walked in user space) through a handle the worker takes
//! before any chroot ([`remember_config_dir`]): `..` or a symlink leading out of that folder
//! fails. An absolute path is opened as the worker's user sees it (inside the jail with
//! `chroot`). Only regular files; at most
//! `max_bytes` (default [`DEFAULT_MAX`], ceiling [`CEILING`]); nothing is ever written. The read
//! is a plain blocking read of a small local file, which is fine between requests (a timer) or
//! once in a while in a route, not per request on a slow or network file system.

use std::fs::File;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::OnceLock;

use mlua::{Lua, Value};

/// Bytes read when no `max_bytes` is given.
pub const DEFAULT_MAX: u64 = 64 * 1024;
/// Most bytes one call reads.
pub const CEILING: u64 = 1024 * 1024;

/// The config file's folder, opened before the worker's chroot.
static CONFIG_DIR: OnceLock<OwnedFd> = OnceLock::new();

/// Opens the folder of `config_file` for later relative reads. Call it in the worker before
/// entering a chroot; the first call wins (a worker reads one config).
pub fn remember_config_dir(config_file: &Path) {
    let dir = config_file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Ok(fd) = nix::fcntl::open(
        dir,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) {
        // SAFETY: `open` just returned this descriptor and nothing else owns it.
        let _ = CONFIG_DIR.set(unsafe { OwnedFd::from_raw_fd(fd) });
    }
}

/// Defines the global `fs` (`fs.read`), unless the config defined one. Must run before the
/// sandbox (it keeps Lua values, not C functions: hence the Lua wrapper).
pub(super) fn install(lua: &Lua) -> mlua::Result<()> {
    if !lua.globals().get::<Value>("fs")?.is_nil() {
        return Ok(());
    }
    let f = lua.create_function(|lua, (path, max): (Value, Value)| {
        let path = match &path {
            Value::String(s) => s.to_str()?.to_string(),
            other => {
                return Err(mlua::Error::runtime(format!(
                    "fs.read(path, max_bytes): path must be a string, not {}",
                    other.type_name()
                )))
            }
        };
        let max = match max {
            Value::Nil => DEFAULT_MAX,
            Value::Integer(n) if n >= 0 => (n as u64).min(CEILING),
            Value::Number(n) if n >= 0.0 => (n as u64).min(CEILING),
            _ => {
                return Err(mlua::Error::runtime(
                    "fs.read(path, max_bytes): max_bytes must be a number >= 0",
                ))
            }
        };
        match read(&path, max) {
            Ok(bytes) => Ok((Some(lua.create_string(bytes)?), None)),
            Err(e) => Ok((None, Some(e))),
        }
    })?;
    let fs: mlua::Table = lua
        .load("local f = ... return { read = function(path, max) return f(path, max) end }")
        .set_name("=luahttpd fs")
        .call(f)?;
    lua.globals().set("fs", fs)
}

/// Reads at most `max` bytes of the regular file at `path`; "too large" past it.
pub fn read(path: &str, max: u64) -> Result<Vec<u8>, String> {
    if path.is_empty() || path.contains('\0') {
        return Err("bad path".into());
    }
    let file = open(path).map_err(|e| format!("{path}: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("{path}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{path}: not a regular file"));
    }
    if meta.len() > max {
        return Err("too large".into());
    }
    let mut out = Vec::with_capacity(meta.len() as usize);
    // One byte past the limit tells a file that grew since the stat.
    file.take(max + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("{path}: {e}"))?;
    if out.len() as u64 > max {
        return Err("too large".into());
    }
    Ok(out)
}

/// O_NONBLOCK: opening a FIFO must not block the worker (it is refused after the open).
fn open(path: &str) -> std::io::Result<File> {
    use nix::fcntl::OFlag;
    use std::os::fd::AsFd;
    if path.starts_with('/') {
        return std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc_flags())
            .open(path);
    }
    let Some(dir) = CONFIG_DIR.get() else {
        return Err(std::io::Error::other(
            "relative paths need the config's folder, which this process did not open",
        ));
    };
    let flags = OFlag::O_RDONLY | OFlag::O_NOCTTY | OFlag::O_NONBLOCK;
    match crate::beneath::open(dir.as_fd(), path, flags) {
        Ok(fd) => Ok(File::from(fd)),
        Err(nix::errno::Errno::EXDEV) => Err(std::io::Error::other(
            "outside the config's folder (relative paths stay beneath it)",
        )),
        Err(e) => Err(e.into()),
    }
}

fn libc_flags() -> i32 {
    (nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_NOCTTY).bits()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_small_regular_files_only_within_the_limit() {
        let dir = std::env::temp_dir().join(format!("luahttpd-read-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("flag");
        std::fs::write(&f, b"on\n").unwrap();
        let p = f.to_str().unwrap();
        assert_eq!(read(p, 10).unwrap(), b"on\n");
        assert_eq!(read(p, 3).unwrap(), b"on\n");
        assert_eq!(read(p, 2).unwrap_err(), "too large");
        assert!(read(dir.to_str().unwrap(), 10)
            .unwrap_err()
            .contains("not a regular file"));
        let missing = read(dir.join("nope").to_str().unwrap(), 10).unwrap_err();
        assert!(missing.contains("No such file"), "{missing}");
        assert_eq!(read("", 10).unwrap_err(), "bad path");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
