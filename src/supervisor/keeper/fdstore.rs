//! systemd's file descriptor store: a keeper that dies on a systemd host costs a pause, not
//! every running guarded build. The keeper hands systemd a copy of each notify fd it holds
//! (`FDSTORE=1`, named `notify-N` by its slot), of runc's message for it (a memfd,
//! `state-N`) and of the slot file (`slots`); systemd keeps them open while it restarts the
//! service (`Restart=always`), so the kernel keeps guarded execs waiting instead of failing
//! them, and passes them back to the new keeper with `LISTEN_FDS`/`LISTEN_FDNAMES`. A notify
//! fd whose container is gone hangs up, and systemd drops it by itself; the keeper also
//! removes it (`FDSTOREREMOVE=1`). Needs `FileDescriptorStoreMax=` and `NotifyAccess=` in
//! the unit; without `NOTIFY_SOCKET` (no systemd) nothing is stored.

use std::io::{Read, Seek, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::sys::socket::{
    sendmsg, socket, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr,
};

/// The slot file's name in the store.
const SLOTS: &str = "slots";

/// The notify socket systemd gave this service.
pub(crate) struct FdStore {
    socket: OwnedFd,
    addr: UnixAddr,
}

impl FdStore {
    /// The store, when systemd runs this service (`NOTIFY_SOCKET`).
    pub(crate) fn from_env() -> Option<Self> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        let bytes = path.as_bytes();
        let addr = match bytes.strip_prefix(b"@") {
            Some(name) => UnixAddr::new_abstract(name),
            None => UnixAddr::new(bytes),
        };
        let socket = socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        );
        match (addr, socket) {
            (Ok(addr), Ok(socket)) => Some(Self { socket, addr }),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "cannot use systemd's notify socket; notify fds are not stored");
                None
            }
        }
    }

    fn send(&self, message: &str, fd: Option<BorrowedFd<'_>>) -> nix::Result<()> {
        let iov = [std::io::IoSlice::new(message.as_bytes())];
        let fds = fd.map(|f| [f.as_raw_fd()]);
        let cmsg: Vec<ControlMessage<'_>> = fds
            .as_ref()
            .map(|f| ControlMessage::ScmRights(f))
            .into_iter()
            .collect();
        sendmsg(
            self.socket.as_raw_fd(),
            &iov,
            &cmsg,
            MsgFlags::empty(),
            Some(&self.addr),
        )
        .map(|_| ())
    }

    fn store(&self, name: &str, fd: BorrowedFd<'_>) {
        if let Err(e) = self.send(&format!("FDSTORE=1\nFDNAME={name}"), Some(fd)) {
            tracing::warn!(name, error = %e, "cannot store an fd with systemd");
        }
    }

    /// Stores the slot file (once, when the keeper starts).
    pub(crate) fn store_slots(&self, slots: BorrowedFd<'_>) {
        self.store(SLOTS, slots);
    }

    /// Stores a held notify fd and runc's message for it.
    pub(crate) fn store_held(&self, index: usize, state: &[u8], fd: BorrowedFd<'_>) {
        let memfd = nix::sys::memfd::memfd_create(
            c"execguard-state",
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
        );
        let stored = memfd.map_err(std::io::Error::from).and_then(|m| {
            let mut file = std::fs::File::from(m);
            file.write_all(state)?;
            Ok(file)
        });
        match stored {
            Ok(file) => self.store(&format!("state-{index}"), file.as_fd()),
            Err(e) => {
                tracing::warn!(slot = index, error = %e, "cannot store a container's message");
                return;
            }
        }
        self.store(&format!("notify-{index}"), fd);
    }

    /// Forgets a notify fd whose container is gone.
    pub(crate) fn remove_held(&self, index: usize) {
        for name in [format!("notify-{index}"), format!("state-{index}")] {
            let _ = self.send(&format!("FDSTOREREMOVE=1\nFDNAME={name}"), None);
        }
    }
}

/// What a restarted keeper gets back from the store.
pub(crate) struct Restored {
    pub slots: Option<OwnedFd>,
    /// (slot, runc's message, notify fd).
    pub held: Vec<(usize, Vec<u8>, OwnedFd)>,
}

/// Sorts the descriptors systemd passed (besides the listener) by their names.
pub(crate) fn restore(named: Vec<(String, OwnedFd)>) -> Restored {
    let mut slots = None;
    let mut notify = std::collections::BTreeMap::new();
    let mut states = std::collections::BTreeMap::new();
    for (name, fd) in named {
        let index = |prefix: &str| {
            name.strip_prefix(prefix)
                .and_then(|i| i.parse::<usize>().ok())
        };
        if name == SLOTS {
            slots = Some(fd);
        } else if let Some(i) = index("notify-") {
            notify.insert(i, fd);
        } else if let Some(i) = index("state-") {
            states.insert(i, fd);
        } else {
            tracing::warn!(name, "an unknown descriptor from systemd; closed");
        }
    }
    let mut held = Vec::new();
    for (index, fd) in notify {
        let state = states.remove(&index).and_then(|m| {
            let mut file = std::fs::File::from(m);
            let mut bytes = Vec::new();
            file.rewind().ok()?;
            file.take(1 << 20).read_to_end(&mut bytes).ok()?;
            Some(bytes)
        });
        match state {
            Some(state) => held.push((index, state, fd)),
            None => tracing::error!(
                slot = index,
                "a stored notify fd without its message; its container is not served"
            ),
        }
    }
    Restored { slots, held }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memfd(bytes: &[u8]) -> OwnedFd {
        let fd =
            nix::sys::memfd::memfd_create(c"t", nix::sys::memfd::MFdFlags::MFD_CLOEXEC).unwrap();
        let mut f = std::fs::File::from(fd);
        f.write_all(bytes).unwrap();
        f.into()
    }

    /// A notify fd comes back with its message, by slot; one without its message, and names
    /// that are not the store's, are dropped.
    #[test]
    fn stored_descriptors_are_sorted_by_name() {
        let named = vec![
            ("state-7".to_owned(), memfd(b"{\"seven\":7}")),
            ("notify-7".to_owned(), memfd(b"")),
            ("slots".to_owned(), memfd(b"")),
            ("notify-9".to_owned(), memfd(b"")),
            ("stray".to_owned(), memfd(b"")),
        ];
        let r = restore(named);
        assert!(r.slots.is_some());
        assert_eq!(r.held.len(), 1);
        assert_eq!(r.held[0].0, 7);
        assert_eq!(r.held[0].1, b"{\"seven\":7}");
    }
}
