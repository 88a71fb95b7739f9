//! File descriptors that arrive from outside: over a Unix socket, or inherited from the
//! process that started this one. Each becomes exactly one `OwnedFd`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Takes ownership of a descriptor this process inherited, by number, from the process that
/// started it (the keeper passes the worker its channel and slot file this way, and itself its
/// notify fds across an upgrade; systemd passes a listening socket as fd 3), and marks it
/// close-on-exec.
///
/// Sound to call with any number: ownership is tracked by the close-on-exec flag. Every
/// descriptor this program opens has it (std and nix open with `O_CLOEXEC`, and
/// [`recv_with_fds`] asks for `MSG_CMSG_CLOEXEC`); the only exceptions, the keeper's `dup`s for a
/// worker to inherit and for its own re-execution (an upgrade) to carry across, live between
/// the `dup` and the worker's start, or the `execve`, inside one function. So a
/// descriptor without the flag was inherited and not adopted yet; adopting sets the flag (under
/// a lock), and a second adoption of the same number fails with `EBUSY`.
pub(crate) fn adopt_inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    static ADOPTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = ADOPTING.lock().unwrap_or_else(|p| p.into_inner());
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
    // SAFETY: the descriptor is open and had no close-on-exec flag, so (see above) it was
    // inherited and has no owner; the flag now set under the lock makes this its only owner.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
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
        let owned = adopt_inherited_fd(raw).unwrap();
        let again = adopt_inherited_fd(raw).unwrap_err();
        assert_eq!(again.raw_os_error(), Some(libc::EBUSY));
        // A descriptor this program opened has an owner already.
        let err = adopt_inherited_fd(file.as_raw_fd()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBUSY));
        drop(owned);
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
