//! Where notifications come from: a seccomp notify fd, behind a trait so that the serve loop and
//! the answer path can be driven by a fake source in unit tests (no filter, no kernel).

use std::io;
use std::os::fd::AsFd;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::sys::{NotifyFd, SeccompNotif, SeccompNotifResp};

/// A source of seccomp notifications and the place their answers go.
pub(crate) trait NotifySource: Send {
    /// The next notification, blocking until there is one (or, with the synchronous wake-up,
    /// until every task is gone: `ENOENT`).
    fn recv(&self) -> io::Result<SeccompNotif>;
    /// Answers a notification; `ENOENT` when its task was interrupted or is gone.
    fn send(&self, resp: &SeccompNotifResp) -> io::Result<()>;
    /// Whether notification `id` is still pending (so that its pid still names its task).
    fn id_valid(&self, id: u64) -> bool;
    /// Waits until a notification is there; false once every task of the filter is gone.
    fn wait_readable(&self) -> bool;
    /// Whether a notification is there now.
    fn readable_now(&self) -> bool;
    /// True when every task of the filter is gone and no notification is left.
    fn hung_up(&self) -> bool;
}

impl NotifySource for NotifyFd {
    fn recv(&self) -> io::Result<SeccompNotif> {
        NotifyFd::recv(self)
    }

    fn send(&self, resp: &SeccompNotifResp) -> io::Result<()> {
        NotifyFd::send(self, resp)
    }

    fn id_valid(&self, id: u64) -> bool {
        NotifyFd::id_valid(self, id)
    }

    fn wait_readable(&self) -> bool {
        loop {
            let mut fds = [PollFd::new(self.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "poll on the notify fd failed");
                    return false;
                }
            }
            let revents = fds[0].revents().unwrap_or(PollFlags::empty());
            if revents.contains(PollFlags::POLLIN) {
                return true;
            }
            if revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL) {
                // Every task of the filter is gone: the container (or the exec'd process) ended.
                return false;
            }
        }
    }

    fn readable_now(&self) -> bool {
        let mut fds = [PollFd::new(self.as_fd(), PollFlags::POLLIN)];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
            && fds[0]
                .revents()
                .is_some_and(|r| r.contains(PollFlags::POLLIN))
    }

    fn hung_up(&self) -> bool {
        let mut fds = [PollFd::new(self.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(_) => {
                let revents = fds[0].revents().unwrap_or(PollFlags::empty());
                !revents.contains(PollFlags::POLLIN)
                    && revents
                        .intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL)
            }
            Err(Errno::EINTR) => false,
            Err(_) => true,
        }
    }
}
