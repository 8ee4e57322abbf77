//! Spawning FastCGI backend processes the lighttpd way (mod_fastcgi's `bin-path`), for the
//! watcher.
//!
//! For each process: probe the address (if something already answers there, use it and spawn
//! nothing) · socket · bind · listen · fork · in the child: listening socket → fd 0
//! (`FCGI_LISTENSOCK_FILENO`), /dev/null → fd 1, fd 2 kept (so php-cgi's own errors show),
//! every other descriptor closed, signal dispositions and mask reset, `PR_SET_PDEATHSIG`,
//! exactly the configured environment · execve. The parent closes its copy of the socket (the
//! child holds it; a respawn binds a new one at the same address) and learns whether the exec
//! worked from a close-on-exec pipe: end of file with no data means it did; otherwise the child
//! wrote which step failed and its errno before `_exit(127)`.
//!
//! Between fork and exec the child runs only raw system calls on memory prepared before the
//! fork (no allocation, no locks), so spawning is safe even from a multi-threaded process such
//! as the test harness.
//!
//! The supervisor that respawns exited processes is `Backends` (src/fastcgi/spawn_backends.rs).

use crate::config::{FastcgiDef, ListenAddr};
use nix::errno::Errno;
use nix::unistd::{fork, ForkResult, Pid};
use std::ffi::{CString, OsString};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::Duration;

pub use super::spawn_backends::{backoff, Backends, CRASH_WINDOW, MAX_BACKOFF};

/// The listen queue length of a backend socket (lighttpd uses 1024 too).
pub const LISTEN_BACKLOG: i32 = 1024;
/// PATH given to a spawned process whose `env` does not set one.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// How long the probe for an already running backend waits for a TCP connection.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// What `spawn_proc` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpawnOutcome {
    /// Something already answers at the address; it is used as it is and nothing was spawned.
    External,
    /// A process was started and has exec'd the program.
    Spawned {
        /// Its pid (a child of the calling process: reap it with waitpid).
        pid: Pid,
    },
}

/// Why a backend process could not be started, in words, naming backend and process.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fastcgi '{backend}' proc {index}: {reason}")]
pub struct SpawnError {
    /// The backend's name.
    pub backend: String,
    /// The process index within the backend.
    pub index: usize,
    /// What went wrong, e.g. "cannot execute /usr/bin/php-cgi: Permission denied".
    pub reason: String,
}

/// The text of an address as the config writes it.
pub fn describe(addr: &ListenAddr) -> String {
    match addr {
        ListenAddr::Tcp(s) => s.to_string(),
        ListenAddr::Unix(p) => format!("unix:{}", p.display()),
    }
}

/// The address of every process of a spawned backend: with `socket = "unix:/run/php.sock"`
/// process i listens on `/run/php.sock-i`; with `socket = "127.0.0.1:9100"` on port 9100+i.
///
/// Errors when the definition has no `socket`, when its port is 0 (workers could not know
/// where to connect) or when the ports would run past 65535.
pub fn proc_addrs(def: &FastcgiDef) -> Result<Vec<ListenAddr>, String> {
    let Some(socket) = &def.socket else {
        return Err(format!("fastcgi '{}': spawn needs a socket", def.name));
    };
    match socket {
        ListenAddr::Unix(path) => Ok((0..def.procs)
            .map(|i| {
                let mut p = OsString::from(path.as_os_str());
                p.push(format!("-{i}"));
                ListenAddr::Unix(PathBuf::from(p))
            })
            .collect()),
        ListenAddr::Tcp(sa) => {
            if sa.port() == 0 {
                return Err(format!(
                    "fastcgi '{}': socket {sa} has port 0; spawned processes need a fixed port",
                    def.name
                ));
            }
            (0..def.procs)
                .map(|i| {
                    let port = u16::try_from(i)
                        .ok()
                        .and_then(|i| sa.port().checked_add(i))
                        .ok_or_else(|| {
                            format!(
                                "fastcgi '{}': {} procs from port {} run past port 65535",
                                def.name,
                                def.procs,
                                sa.port()
                            )
                        })?;
                    let mut a = *sa;
                    a.set_port(port);
                    Ok(ListenAddr::Tcp(a))
                })
                .collect()
        }
    }
}

/// Whether something accepts connections at `addr` (a wildcard TCP address is probed on the
/// loopback address of its family).
pub fn answers(addr: &ListenAddr) -> bool {
    match addr {
        ListenAddr::Unix(p) => std::os::unix::net::UnixStream::connect(p).is_ok(),
        ListenAddr::Tcp(sa) => {
            let mut target = *sa;
            if sa.ip().is_unspecified() {
                target.set_ip(match sa.ip() {
                    IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
                });
            }
            std::net::TcpStream::connect_timeout(&target, PROBE_TIMEOUT).is_ok()
        }
    }
}

/// Starts process `index` of the spawned backend `def`, listening on `addr` (one of
/// `proc_addrs(def)`), unless something already answers there.
///
/// `kept` holds the process's listening socket across respawns: the first start creates it,
/// later starts hand the same socket to the new process. Connections made while a process is
/// being replaced (php-cgi exits on purpose after PHP_FCGI_MAX_REQUESTS) then wait in its
/// listen queue instead of being refused.
///
/// Blocks only until the child has exec'd (or failed to). The child's pid must later be reaped
/// by the caller (the watcher's waitpid loop) and passed to `Backends::on_exit`. On an exec
/// failure the child is reaped here, the socket dropped and a Unix socket file removed.
pub fn spawn_proc(
    def: &FastcgiDef,
    index: usize,
    addr: &ListenAddr,
    kept: &mut Option<OwnedFd>,
) -> Result<SpawnOutcome, SpawnError> {
    let fail = |reason: String| SpawnError {
        backend: def.name.clone(),
        index,
        reason,
    };
    let argv = match &def.spawn {
        Some(a) if !a.is_empty() => a,
        _ => return Err(fail("no program to spawn".to_string())),
    };
    if kept.is_none() && answers(addr) {
        tracing::info!(
            "fastcgi '{}' proc {}: something already answers on {}; using it, not spawning",
            def.name,
            index,
            describe(addr)
        );
        return Ok(SpawnOutcome::External);
    }
    // Everything the child needs is allocated now: after fork it may not allocate.
    let exec = ExecImage::new(argv, &def.env).map_err(&fail)?;
    if kept.is_none() {
        let fd = create_listener(addr)
            .and_then(|fd| above_stdio(fd).map_err(|e| e.desc().to_string()))
            .map_err(|e| fail(format!("cannot listen on {}: {e}", describe(addr))))?;
        // Workers running as `user` connect to the socket file: it must be theirs.
        if let (ListenAddr::Unix(p), Some((uid, gid))) = (addr, def.socket_owner) {
            let ids = (
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
            );
            if let Err(e) = nix::unistd::chown(p, ids.0, ids.1) {
                let _ = std::fs::remove_file(p);
                return Err(fail(format!(
                    "cannot give {} to uid {uid}: {e}",
                    p.display()
                )));
            }
        }
        *kept = Some(fd);
    }
    let Some(listener) = kept.as_ref() else {
        return Err(fail("no listening socket".to_string()));
    };
    let ids = def.user.as_ref().map(|u| Ids {
        uid: u.uid,
        gid: u.gid,
        groups: u.groups.clone(),
    });
    let result = fork_exec(&exec, listener.as_raw_fd(), ids.as_ref()).map_err(|e| match e {
        ForkError::Setup(what) => fail(what),
        ForkError::Child { stage, errno } => fail(stage.describe(&argv[0], errno)),
    });
    if result.is_err() {
        *kept = None;
        if let ListenAddr::Unix(p) = addr {
            let _ = std::fs::remove_file(p);
        }
    }
    result.map(|pid| SpawnOutcome::Spawned { pid })
}

/// Who the child becomes before exec (`user`/`group`), prepared before fork.
struct Ids {
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
}

/// argv and envp as C strings with their NULL-terminated pointer arrays, built before fork.
struct ExecImage {
    _strings: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

impl ExecImage {
    fn new(
        argv: &[String],
        env: &std::collections::BTreeMap<String, String>,
    ) -> Result<ExecImage, String> {
        let nul = |what: &str| format!("{what} contains a NUL byte");
        let args: Vec<CString> = argv
            .iter()
            .map(|a| CString::new(a.as_str()).map_err(|_| nul("an argument")))
            .collect::<Result<_, _>>()?;
        let mut vars: Vec<CString> = Vec::with_capacity(env.len() + 1);
        for (k, v) in env {
            if k.is_empty() || k.contains('=') {
                return Err(format!("environment name '{k}' is empty or contains '='"));
            }
            vars.push(CString::new(format!("{k}={v}")).map_err(|_| nul("the environment"))?);
        }
        if !env.contains_key("PATH") {
            vars.push(CString::new(format!("PATH={DEFAULT_PATH}")).map_err(|_| nul("PATH"))?);
        }
        // The pointers point into the CStrings' heap buffers, which do not move when the
        // CStrings themselves are moved into `_strings`.
        let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = vars.iter().map(|v| v.as_ptr()).collect();
        envp.push(std::ptr::null());
        let mut strings = args;
        strings.extend(vars);
        Ok(ExecImage {
            _strings: strings,
            argv,
            envp,
        })
    }
}

/// Creates the listening socket for a backend process (close-on-exec; the child moves it to
/// fd 0, which clears the flag there).
pub fn create_listener(addr: &ListenAddr) -> Result<OwnedFd, String> {
    crate::sockets::listen_on(addr, LISTEN_BACKLOG)
}

/// The step of the child's set-up that failed, sent through the error pipe with the errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Stage {
    Signals = 1,
    DeathSignal = 2,
    ListenFd = 3,
    DevNull = 4,
    CloseFds = 5,
    Exec = 6,
    Identity = 7,
    Verify = 8,
}

impl Stage {
    fn from_u8(b: u8) -> Option<Stage> {
        Some(match b {
            1 => Stage::Signals,
            2 => Stage::DeathSignal,
            3 => Stage::ListenFd,
            4 => Stage::DevNull,
            5 => Stage::CloseFds,
            6 => Stage::Exec,
            7 => Stage::Identity,
            8 => Stage::Verify,
            _ => return None,
        })
    }

    fn describe(self, program: &str, errno: i32) -> String {
        let why = Errno::from_raw(errno).desc();
        match self {
            Stage::Exec => format!("cannot execute {program}: {why}"),
            Stage::Signals => format!("cannot reset signals before exec: {why}"),
            Stage::DeathSignal => format!("cannot set the parent-death signal: {why}"),
            Stage::ListenFd => format!("cannot move the listening socket to fd 0: {why}"),
            Stage::DevNull => format!("cannot point fd 1 at /dev/null: {why}"),
            Stage::CloseFds => format!("cannot close inherited descriptors: {why}"),
            Stage::Identity => format!("cannot switch to the configured user and group: {why}"),
            Stage::Verify => "the user switch did not take (ids differ after it)".to_string(),
        }
    }
}

enum ForkError {
    /// Something failed in the parent before or at fork.
    Setup(String),
    /// The child reported a failed step.
    Child { stage: Stage, errno: i32 },
}

/// What the child reads after fork; every field is plain data prepared by the parent.
struct ChildPlan<'a> {
    exec: &'a ExecImage,
    ids: Option<&'a Ids>,
    listen_fd: RawFd,
    devnull_fd: RawFd,
    err_fd: RawFd,
    parent: libc::pid_t,
    /// Upper bound for the close loop when close_range is not available.
    max_fd: libc::c_int,
}

fn fork_exec(exec: &ExecImage, listen_fd: RawFd, ids: Option<&Ids>) -> Result<Pid, ForkError> {
    let setup = |what: &str, e: &dyn std::fmt::Display| ForkError::Setup(format!("{what}: {e}"));
    let devnull: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| setup("/dev/null", &e))?
        .into();
    let devnull = above_stdio(devnull).map_err(|e| setup("/dev/null", &e))?;
    let (err_r, err_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| setup("pipe", &e))?;
    let err_w = above_stdio(err_w).map_err(|e| setup("pipe", &e))?;
    let max_fd = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft.min(libc::c_int::MAX as u64) as libc::c_int)
        .unwrap_or(65536);
    let plan = ChildPlan {
        exec,
        ids,
        listen_fd,
        devnull_fd: devnull.as_raw_fd(),
        err_fd: err_w.as_raw_fd(),
        parent: std::process::id() as libc::pid_t,
        max_fd,
    };
    // SAFETY: the child runs only `child_exec`, which makes raw system calls on memory
    // prepared before the fork and never returns; it neither allocates nor takes a lock, so
    // it is sound even if other threads held locks at fork time.
    let pid = match unsafe { fork() } {
        Ok(ForkResult::Child) => child_exec(&plan),
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => return Err(setup("fork", &e)),
    };
    // The caller keeps its listening socket for the next respawn. Our copy of the pipe's
    // write end must go, or the read below would never see end of file.
    drop(devnull);
    drop(err_w);
    let mut buf = [0u8; 5];
    let mut got = 0;
    while got < buf.len() {
        match nix::unistd::read(err_r.as_raw_fd(), &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(Errno::EINTR) => continue,
            // Cannot tell: assume the exec worked; an early exit is seen by the reaper.
            Err(_) => break,
        }
    }
    if got == 0 {
        return Ok(pid);
    }
    // The child has failed and is exiting: collect it so the watcher never sees it.
    let _ = nix::sys::wait::waitpid(pid, None);
    let stage = Stage::from_u8(buf[0]).unwrap_or(Stage::Exec);
    let errno = if got == buf.len() {
        i32::from_ne_bytes([buf[1], buf[2], buf[3], buf[4]])
    } else {
        libc::EIO
    };
    Err(ForkError::Child { stage, errno })
}

/// Moves a descriptor to a number above 2, so that dup2 onto 0 and 1 in the child cannot
/// clobber it (only happens when the watcher was started with stdio closed).
fn above_stdio(fd: OwnedFd) -> nix::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    let new = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))?;
    // SAFETY: fcntl just returned this new descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// The child between fork and exec. Only async-signal-safe system calls on the plan's
/// prepared memory; never returns.
fn child_exec(plan: &ChildPlan) -> ! {
    let fail = |stage: Stage| -> ! {
        let errno = Errno::last_raw().to_ne_bytes();
        let msg = [stage as u8, errno[0], errno[1], errno[2], errno[3]];
        // SAFETY: write and _exit are async-signal-safe; `msg` lives on this stack frame.
        unsafe {
            libc::write(plan.err_fd, msg.as_ptr().cast(), msg.len());
            libc::_exit(127)
        }
    };
    // SAFETY (whole block): every call is a system call, raw through syscall(2)
    // (rt_sigaction, rt_sigprocmask, close_range, setgroups, setres[ug]id, getres[ug]id;
    // the group list is the parent's prepared Vec) or through a wrapper POSIX lists as
    // async-signal-safe (prctl, getppid, setpgid, sigaction, dup2, close, execve, write,
    // _exit); nothing allocates or locks. The pointers passed point at this frame's locals, sized for what the kernel
    // reads, or at the NULL-terminated arrays of the ExecImage, which the parent built before
    // fork and which stay valid in the child's copy of the address space.
    unsafe {
        // Default dispositions for every signal: a signal ignored here would stay ignored
        // after exec (the watcher ignores SIGPIPE; whoever started us may ignore others).
        // The raw system call, because glibc's sigaction refuses its internal signals 32 and
        // 33. The kernel's struct sigaction is all zeros for SIG_DFL with no flags and an
        // empty mask whatever its layout on the architecture, so 32 zero bytes (larger than
        // any layout with a 64-bit mask) describe it everywhere. SIGKILL and SIGSTOP answer
        // EINVAL, which is fine.
        let dfl = [0u64; 4];
        for sig in 1..=64 {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig as libc::c_long,
                dfl.as_ptr(),
                std::ptr::null_mut::<u64>(),
                std::mem::size_of::<u64>(),
            );
        }
        // The raw system call: glibc's sigprocmask wrapper leaves its internal signals
        // (32, 33) as they are.
        let empty: u64 = 0;
        if libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &empty as *const u64,
            std::ptr::null_mut::<u64>(),
            std::mem::size_of::<u64>(),
        ) != 0
        {
            fail(Stage::Signals);
        }
        // The configured user, before the parent-death signal: changing credentials clears
        // it. Raw system calls: they change only this (the only) thread, with no glibc lock.
        if let Some(ids) = plan.ids {
            if libc::syscall(libc::SYS_setgroups, ids.groups.len(), ids.groups.as_ptr()) != 0
                || libc::syscall(libc::SYS_setresgid, ids.gid, ids.gid, ids.gid) != 0
                || libc::syscall(libc::SYS_setresuid, ids.uid, ids.uid, ids.uid) != 0
            {
                fail(Stage::Identity);
            }
            // Checked, not assumed: real, effective and saved ids all switched.
            let (mut r, mut e, mut s) = (0, 0, 0);
            let (mut gr, mut ge, mut gs) = (0, 0, 0);
            libc::syscall(
                libc::SYS_getresuid,
                &mut r as *mut libc::uid_t,
                &mut e as *mut libc::uid_t,
                &mut s as *mut libc::uid_t,
            );
            libc::syscall(
                libc::SYS_getresgid,
                &mut gr as *mut libc::gid_t,
                &mut ge as *mut libc::gid_t,
                &mut gs as *mut libc::gid_t,
            );
            if [r, e, s] != [ids.uid; 3] || [gr, ge, gs] != [ids.gid; 3] {
                fail(Stage::Verify);
            }
        }
        // Die with the parent (no setsid: the backend stays in this server's session). If
        // the parent is already gone, the signal was missed: stop here.
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
            fail(Stage::DeathSignal);
        }
        if libc::getppid() != plan.parent {
            libc::_exit(0);
        }
        // Its own process group: a terminal's Ctrl-C goes to the foreground group, and
        // php-cgi dies on SIGINT with the request it runs, while the workers' graceful stop
        // waits for it. The watcher stops its backends itself once the workers drained. A
        // failure (none is expected for our own child) only leaves it in the server's group.
        // Now a background job of the terminal, it would be stopped by SIGTTOU at its first
        // write to a terminal stderr under `stty tostop`: that one signal stays ignored.
        if libc::setpgid(0, 0) == 0 {
            let mut ign: libc::sigaction = std::mem::zeroed();
            ign.sa_sigaction = libc::SIG_IGN;
            libc::sigaction(libc::SIGTTOU, &ign, std::ptr::null_mut());
        }
        // FCGI_LISTENSOCK_FILENO. dup2 onto another number clears close-on-exec on fd 0.
        if libc::dup2(plan.listen_fd, 0) < 0 {
            fail(Stage::ListenFd);
        }
        if libc::dup2(plan.devnull_fd, 1) < 0 {
            fail(Stage::DevNull);
        }
        // Close everything from 3 up except the error pipe (close-on-exec: it closes at a
        // successful exec, and stays open to report a failed one).
        let e = plan.err_fd as libc::c_uint;
        if (e > 3 && close_range(3, e - 1) != 0) || close_range(e + 1, libc::c_uint::MAX) != 0 {
            if Errno::last_raw() != libc::ENOSYS {
                fail(Stage::CloseFds);
            }
            // Kernels before 5.9 have no close_range: close one by one.
            let mut fd = 3;
            while fd < plan.max_fd {
                if fd != plan.err_fd {
                    libc::close(fd);
                }
                fd += 1;
            }
        }
        // argv has at least the program and the NULL (ExecImage::new got a non-empty argv).
        libc::execve(
            *plan.exec.argv.as_ptr(),
            plan.exec.argv.as_ptr(),
            plan.exec.envp.as_ptr(),
        );
        fail(Stage::Exec)
    }
}

/// close_range(2) with no flags; -1 with errno set on failure (ENOSYS before Linux 5.9).
///
/// # Safety
/// Closes descriptors by number: the caller must own every descriptor in the range (here: the
/// child between fork and exec, which owns all of them).
unsafe fn close_range(first: libc::c_uint, last: libc::c_uint) -> libc::c_int {
    libc::syscall(libc::SYS_close_range, first, last, 0 as libc::c_uint) as libc::c_int
}
