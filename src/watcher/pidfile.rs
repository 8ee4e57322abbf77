//! The pid file: written once the server runs, removed when it stops.

use std::path::{Path, PathBuf};

/// A pid file this process wrote.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    pid: i32,
}

impl PidFile {
    /// Writes our pid, refusing if the file names a process that is still alive.
    pub fn create(path: &Path) -> Result<PidFile, String> {
        if let Ok(old) = std::fs::read_to_string(path) {
            if let Ok(pid) = old.trim().parse::<i32>() {
                let alive = pid > 0
                    && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
                if alive && pid != std::process::id() as i32 {
                    return Err(format!(
                        "{}: another server is running (pid {pid})",
                        path.display()
                    ));
                }
            }
        }
        let pid = std::process::id() as i32;
        // Write to a temporary name and rename, so a reader never sees a half-written file.
        let tmp = path.with_extension("pid.tmp");
        std::fs::write(&tmp, format!("{pid}\n"))
            .and_then(|_| std::fs::rename(&tmp, path))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(PidFile {
            path: path.to_path_buf(),
            pid,
        })
    }

    /// Removes the file if it still holds our pid.
    pub fn remove(&self) {
        if let Ok(s) = std::fs::read_to_string(&self.path) {
            if s.trim().parse::<i32>().ok() == Some(self.pid) {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}
