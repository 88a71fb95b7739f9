//! The supervisor's errors: what stops the keeper or a worker from starting or going on. Both
//! halves use them, so they are defined here, importing neither half.

use std::path::PathBuf;

use nix::errno::Errno;

use super::privilege;

#[derive(Debug, thiserror::Error)]
pub(crate) enum SupervisorError {
    #[error("another supervisor is already listening on {0}")]
    SocketInUse(PathBuf),
    #[error("preparing the socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("changing the signal mask (keeper signals): {0}")]
    SignalMask(#[source] Errno),
    #[error("creating the keeper's signalfd: {0}")]
    SignalFd(#[source] Errno),
    #[error("creating the slot file (memfd \"execguard-slots\"): {0}")]
    SlotFile(#[source] std::io::Error),
    #[error("creating the keeper's wake-up eventfd: {0}")]
    EventFd(#[source] Errno),
    #[error("starting the keeper's accept thread: {0}")]
    AcceptThread(#[source] std::io::Error),
    #[error("adding the {what} to the keeper's epoll: {source}")]
    EpollAdd { what: &'static str, source: Errno },
    #[error("creating or waiting on the keeper's epoll: {0}")]
    Epoll(#[source] Errno),
    #[error("taking the descriptors systemd passed (LISTEN_FDS): {0}")]
    ActivatedSocket(#[source] std::io::Error),
    #[error("creating the keeper-worker channel (socketpair): {0}")]
    Channel(#[source] Errno),
    #[error("duplicating fd {fd} ({what}) for the worker: {source}")]
    Dup {
        fd: std::os::fd::RawFd,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("starting the worker {exe}: {source}")]
    SpawnWorker {
        exe: PathBuf,
        source: std::io::Error,
    },
    #[error("setting the worker's parent-death signal: {0}")]
    DeathSignal(#[source] Errno),
    #[error(transparent)]
    Privilege(#[from] privilege::PrivilegeError),
    #[error(transparent)]
    Confine(#[from] ConfineError),
    #[error(transparent)]
    Handover(#[from] HandoverError),
    #[error("receiving from the keeper's channel (fd {fd}): {source}")]
    ChannelRecv {
        fd: std::os::fd::RawFd,
        source: Errno,
    },
}

/// The worker's system call filter (`worker::confine`).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfineError {
    #[error("building the worker's system call filter: {0}")]
    Build(#[source] seccompiler::BackendError),
    #[error("installing the worker's system call filter: {0}")]
    Install(#[source] seccompiler::Error),
}

/// The keeper's in-place upgrade (`keeper::handover`).
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandoverError {
    #[error("preparing the handover ({what}): {source}")]
    Prepare {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("executing {exe}: {source}")]
    Exec {
        exe: std::path::PathBuf,
        source: nix::errno::Errno,
    },
    #[error("taking over from the previous keeper ({what}): {source}")]
    Adopt {
        what: &'static str,
        source: std::io::Error,
    },
}
