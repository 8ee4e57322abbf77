//! Reopened log files passed from the watcher to its workers (SIGHUP, logrotate).
//!
//! Workers may run as an unprivileged `user` and inside a `chroot`, where they could not open
//! the log paths again. So the watcher, which still runs as root outside any jail, reopens
//! every log file itself and sends each new descriptor to every worker over that worker's
//! datagram socketpair (SCM_RIGHTS), before it sends SIGHUP. A message is the descriptor
//! number the file has in the worker (the same as in the watcher: the worker inherited it by
//! fork) plus the new descriptor; the worker moves it onto that number with dup3, so every
//! writer of the number follows without knowing.

use nix::errno::Errno;
use nix::sys::socket::{
    recv, recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned,
    MsgFlags, SockFlag, SockType,
};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

/// This process's receiving end (a worker), -1 when there is none (the watcher, tests).
static RECEIVER: AtomicI32 = AtomicI32::new(-1);

/// A socketpair for one worker: (the watcher's end, the worker's end), close-on-exec.
pub fn channel() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(socketpair(
        AddressFamily::Unix,
        SockType::Datagram,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )?)
}

/// Makes `end` the socket this process (a worker, after fork) takes reopened logs from. The
/// descriptor is kept open for the life of the process.
pub fn install_receiver(end: OwnedFd) {
    use std::os::fd::IntoRawFd;
    RECEIVER.store(end.into_raw_fd(), Ordering::Relaxed);
}

/// Whether reopened logs come from the watcher in this process.
pub fn has_receiver() -> bool {
    RECEIVER.load(Ordering::Relaxed) >= 0
}

/// Sends `file` to the worker behind `to`, for its descriptor number `target`.
pub fn send(to: &OwnedFd, target: RawFd, file: RawFd) -> std::io::Result<()> {
    let payload = target.to_ne_bytes();
    let fds = [file];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    sendmsg::<()>(
        to.as_raw_fd(),
        &[IoSlice::new(&payload)],
        &cmsg,
        MsgFlags::MSG_DONTWAIT,
        None,
    )?;
    Ok(())
}

/// Takes the new descriptor the watcher sent for `target` and moves it onto `target`.
///
/// Messages for numbers that are not among `known` (this process's log descriptors) are
/// stale (a file this worker never had) and are dropped; one for another known number is
/// left for that file's own reopen. Errors when the watcher sent nothing for `target` (it
/// could not reopen the file and said so in its own log).
pub fn receive(target: RawFd, known: &[RawFd]) -> std::io::Result<()> {
    let rx = RECEIVER.load(Ordering::Relaxed);
    if rx < 0 {
        return Err(std::io::Error::other("no channel to the watcher"));
    }
    receive_on(rx, target, known)
}

fn receive_on(rx: RawFd, target: RawFd, known: &[RawFd]) -> std::io::Result<()> {
    loop {
        // Peek without a control buffer: no descriptor is installed until we take it.
        let mut head = [0u8; 4];
        let n = match recv(rx, &mut head, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT) {
            Ok(n) => n,
            Err(Errno::EAGAIN) => {
                return Err(std::io::Error::other(
                    "the watcher passed no new descriptor (see its log)",
                ))
            }
            Err(e) => return Err(e.into()),
        };
        let for_number = (n == 4).then(|| RawFd::from_ne_bytes(head));
        if for_number != Some(target) && for_number.is_some_and(|t| known.contains(&t)) {
            return Err(std::io::Error::other(
                "the watcher passed no new descriptor (see its log)",
            ));
        }
        let new = take_one(rx)?;
        match (for_number, new) {
            (Some(t), Some(fd)) if t == target => {
                nix::unistd::dup3(fd.as_raw_fd(), target, nix::fcntl::OFlag::O_CLOEXEC)?;
                return Ok(());
            }
            // Stale or malformed: dropped (its descriptor, if any, closes here).
            _ => continue,
        }
    }
}

/// Receives one message and its descriptor, if it carried one.
fn take_one(rx: RawFd) -> std::io::Result<Option<OwnedFd>> {
    let mut head = [0u8; 4];
    let mut iov = [IoSliceMut::new(&mut head)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        rx,
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut got = None;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for fd in fds {
                // SAFETY: the kernel just installed this descriptor for us; nothing else owns it.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                if got.is_none() {
                    got = Some(owned);
                }
            }
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_passed_descriptor_lands_on_its_number_and_others_wait() {
        let (watcher, worker) = channel().unwrap();
        let dir = std::env::temp_dir().join(format!("luahttpd-handoff-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let old_a = std::fs::File::create(dir.join("a.old")).unwrap();
        let old_b = std::fs::File::create(dir.join("b.old")).unwrap();
        let new_a = std::fs::File::create(dir.join("a.new")).unwrap();
        let (a, b) = (old_a.as_raw_fd(), old_b.as_raw_fd());
        // A stale message first (a number this process has no log on), then b's, no a's.
        send(&watcher, 9999, new_a.as_raw_fd()).unwrap();
        send(&watcher, b, new_a.as_raw_fd()).unwrap();
        let rx = worker.as_raw_fd();
        let e = receive_on(rx, a, &[a, b]).unwrap_err();
        assert!(e.to_string().contains("no new descriptor"), "{e}");
        receive_on(rx, b, &[a, b]).unwrap();
        use std::io::Write;
        let mut via_b = &old_b;
        via_b.write_all(b"moved").unwrap();
        assert_eq!(std::fs::read(dir.join("a.new")).unwrap(), b"moved");
        assert_eq!(std::fs::read(dir.join("b.old")).unwrap(), b"");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
