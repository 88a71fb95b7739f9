//! File descriptors that arrive from outside: over a Unix socket, or inherited from the
//! process that started this one. Each becomes exactly one `OwnedFd`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Serialises adoptions and inheritable copies, and says whether this process has made one of
/// those copies yet.
static WINDOW: std::sync::Mutex<AdoptionWindow> =
    std::sync::Mutex::new(AdoptionWindow { open: true });

struct AdoptionWindow {
    /// True until this process makes its first descriptor for a child to inherit.
    open: bool,
}

/// Takes ownership of a descriptor this process inherited, by number, from the process that
/// started it (the keeper passes the worker its channel and slot file this way, and itself its
/// notify fds across an upgrade; systemd passes a listening socket as fd 3), and marks it
/// close-on-exec.
///
/// Sound to call with any number, because this module owns the invariant it rests on: a
/// descriptor without close-on-exec has no owner in this process. Every descriptor this
/// program opens has the flag (std and nix open with `O_CLOEXEC`, [`recv_with_fds`] asks for
/// `MSG_CMSG_CLOEXEC`); the only ones without it that it makes come from [`inheritable_copy`],
/// and from the first of those on, adoption fails (`EPERM`): every process adopts at its start,
/// before it makes any (checked in the keeper, the worker and the record's loader by their
/// tests). So a descriptor this finds without the flag was inherited and not adopted yet;
/// adopting sets the flag (under the window's lock), and a second adoption of the same number
/// fails with `EBUSY`.
pub(crate) fn adopt_inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    let window = WINDOW.lock().unwrap_or_else(|p| p.into_inner());
    adopt_in(&window, fd)
}

fn adopt_in(window: &AdoptionWindow, fd: RawFd) -> io::Result<OwnedFd> {
    if !window.open {
        // A descriptor without the flag may now be one of this process's inheritable copies.
        return Err(io::Error::from_raw_os_error(libc::EPERM));
    }
    if fd < 3 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: F_GETFD only queries the descriptor's flags; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::FD_CLOEXEC != 0 {
        // Opened by this program, or adopted already: it has an owner.
        return Err(io::Error::from_raw_os_error(libc::EBUSY));
    }
    // SAFETY: F_SETFD sets the descriptor's flags; no memory is passed.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor is open and had no close-on-exec flag while no inheritable copy
    // existed in this process (the window is open), so it was inherited and has no owner; the
    // flag now set under the lock makes this its only owner.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A copy of `fd` without close-on-exec, for a child (or this process's own `execve`) to
/// inherit. From the first one on, this process adopts no descriptor ([`adopt_inherited_fd`]).
pub(crate) fn inheritable_copy(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let mut window = WINDOW.lock().unwrap_or_else(|p| p.into_inner());
    window.open = false;
    nix::unistd::dup(fd).map_err(io::Error::from)
}

/// Receives one message on a Unix socket and the descriptors sent with it (`SCM_RIGHTS`, at
/// most `N`; the kernel closes any beyond), each with exactly one owner and close-on-exec.
pub(crate) fn recv_with_fds<const N: usize>(
    sock: std::os::fd::BorrowedFd<'_>,
    buf: &mut [u8],
) -> Result<(usize, Vec<OwnedFd>), nix::errno::Errno> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut cmsg = nix::cmsg_space!([RawFd; N]);
    let mut iov = [io::IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            fds.extend(
                raw.into_iter()
                    .filter(|fd| *fd >= 0)
                    // SAFETY: the kernel installed these descriptors in this process for this
                    // message and nothing else has seen their numbers: each gets one owner.
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    Ok((msg.bytes, fds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inherited_fd_is_adopted_once() {
        let file = std::fs::File::open("/dev/null").unwrap();
        // An inherited descriptor: a copy without close-on-exec, as a parent would pass it.
        // SAFETY: dup of a descriptor this test owns; the copy is adopted below.
        let raw = unsafe { libc::dup(file.as_raw_fd()) };
        assert!(raw >= 3);
        let open = AdoptionWindow { open: true };
        let owned = adopt_in(&open, raw).unwrap();
        let again = adopt_in(&open, raw).unwrap_err();
        assert_eq!(again.raw_os_error(), Some(libc::EBUSY));
        // A descriptor this program opened has an owner already.
        let err = adopt_in(&open, file.as_raw_fd()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBUSY));
        drop(owned);
    }

    #[test]
    fn nothing_is_adopted_once_an_inheritable_copy_exists() {
        let file = std::fs::File::open("/dev/null").unwrap();
        // SAFETY: dup of a descriptor this test owns; the copy is closed below.
        let raw = unsafe { libc::dup(file.as_raw_fd()) };
        assert!(raw >= 3);
        // Such a copy, made by this process for a child, looks inherited; the closed window
        // refuses it (the process-wide window is left alone: other tests adopt).
        let closed = AdoptionWindow { open: false };
        let err = adopt_in(&closed, raw).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
        // SAFETY: `raw` is the copy made above and has no other owner.
        drop(unsafe { OwnedFd::from_raw_fd(raw) });
    }

    /// Every descriptor made for a child to inherit goes through `inheritable_copy`: a `dup`
    /// anywhere else could hand out a descriptor that adoption would take for an inherited one.
    #[test]
    fn descriptors_are_made_inheritable_here_only() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut stack = vec![src];
        let mut found = Vec::new();
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs")
                    && !path.ends_with("sys/fds.rs")
                {
                    let text = std::fs::read_to_string(&path).unwrap();
                    for needle in ["unistd::dup", "libc::dup", "F_DUPFD"] {
                        if text.contains(needle) {
                            found.push(format!("{}: {needle}", path.display()));
                        }
                    }
                }
            }
        }
        assert!(
            found.is_empty(),
            "inheritable copies made outside sys::fds: {found:?}"
        );
    }

    #[test]
    fn descriptors_arrive_owned() {
        use nix::sys::socket::{
            sendmsg, socketpair, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType,
        };
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let null = std::fs::File::open("/dev/null").unwrap();
        let fds = [null.as_raw_fd()];
        sendmsg::<()>(
            a.as_raw_fd(),
            &[std::io::IoSlice::new(b"hi")],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        let mut buf = [0u8; 8];
        let (n, got) = recv_with_fds::<2>(std::os::fd::AsFd::as_fd(&b), &mut buf).unwrap();
        assert_eq!((n, &buf[..2]), (2, &b"hi"[..]));
        assert_eq!(got.len(), 1);
        assert!(nix::sys::stat::fstat(&got[0]).is_ok());
    }
}
