//! The keeper's workers: starting one (`execguard worker` with its channel and the slot
//! file), retrying until one starts, and handing it the notify fds the keeper holds.

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use nix::sys::socket::{
    sendmsg, setsockopt, socketpair, sockopt, AddressFamily, ControlMessage, MsgFlags, SockFlag,
    SockType,
};

use super::accept::Held;
use crate::supervisor::error::SupervisorError;
use crate::supervisor::record::RecordFds;
use crate::supervisor::signals::KEEPER_STARTED_ENV;
use crate::supervisor::slots::Slots;

/// How the keeper starts workers.
pub(crate) struct WorkerCommand {
    /// The execguard binary, resolved when the keeper started: after an upgrade has replaced
    /// the file at this path, new workers are the new binary.
    pub exe: PathBuf,
    pub config: Option<PathBuf>,
    pub events: Option<PathBuf>,
    /// When the keeper started, in seconds since the epoch.
    pub started: u64,
    /// The exec record, which every worker gets (loaded by the keeper, or carried across an
    /// upgrade).
    pub record: Option<RecordFds>,
    /// Why there is no exec record, when there is none: every worker says it (status, metrics).
    pub record_off: Option<String>,
}

/// The channel's send buffer: room for many state messages while a worker starts.
const CHANNEL_BUFFER: usize = 4 << 20;

/// A running worker and the keeper's end of its channel.
pub(super) struct Worker {
    pub(super) child: Child,
    pub(super) channel: OwnedFd,
}

/// Starts a worker, retrying until one starts: without one, every guarded exec waits.
pub(super) fn restart_worker(cmd: &WorkerCommand, slots: &Slots, held: &[Option<Held>]) -> Worker {
    let mut delay = std::time::Duration::from_millis(10);
    loop {
        match start_worker(cmd, &cmd.exe, slots, held) {
            Ok(w) => return w,
            Err(e) => {
                // The file at the path may be gone or broken (an upgrade that failed, a package
                // half installed): the keeper's own image still runs, and is the same version.
                tracing::error!(error = %e, "cannot start a worker; starting one from the keeper's own image");
                match start_worker(cmd, Path::new(OWN_IMAGE), slots, held) {
                    Ok(w) => return w,
                    Err(e) => tracing::error!(error = %e, "cannot start a worker; retrying"),
                }
                std::thread::sleep(delay);
                delay = (delay * 2).min(std::time::Duration::from_secs(1));
            }
        }
    }
}

/// The keeper's running image, whatever happened to the file it came from.
pub(super) const OWN_IMAGE: &str = "/proc/self/exe";

/// Starts `execguard worker` with the channel and the slot file, then hands it every held fd.
pub(super) fn start_worker(
    cmd: &WorkerCommand,
    exe: &Path,
    slots: &Slots,
    held: &[Option<Held>],
) -> Result<Worker, SupervisorError> {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(SupervisorError::Channel)?;
    let _ = setsockopt(&ours, sockopt::SndBuf, &CHANNEL_BUFFER);
    // Inherited by the worker: copies without close-on-exec.
    let dup = |fd: std::os::fd::BorrowedFd<'_>, what| {
        crate::sys::inheritable_copy(fd).map_err(|source| SupervisorError::Dup {
            fd: fd.as_raw_fd(),
            what,
            source,
        })
    };
    let channel_fd = dup(theirs.as_fd(), "the channel")?;
    let slots_fd = dup(slots.file().as_fd(), "the slot file")?;
    let record_fds = match &cmd.record {
        Some(r) => Some(r.inheritable().map_err(|source| SupervisorError::Dup {
            fd: r.worker_fds()[0].as_raw_fd(),
            what: "the exec record",
            source,
        })?),
        None => None,
    };
    let mut command = Command::new(exe);
    command.env(KEEPER_STARTED_ENV, cmd.started.to_string());
    // One malloc arena: a thread per container must not mean an arena per thread.
    command.env("MALLOC_ARENA_MAX", "1");
    command
        .arg("worker")
        .arg("--channel-fd")
        .arg(channel_fd.as_raw_fd().to_string())
        .arg("--slots-fd")
        .arg(slots_fd.as_raw_fd().to_string());
    if let Some(c) = &cmd.config {
        command.arg("--config").arg(c);
    }
    if let Some(e) = &cmd.events {
        command.arg("--events").arg(e);
    }
    if let Some(fds) = &record_fds {
        let numbers: Vec<String> = fds.iter().map(|fd| fd.as_raw_fd().to_string()).collect();
        command.arg("--record-fds").arg(numbers.join(","));
    }
    if let Some(why) = &cmd.record_off {
        // One argument, `=` and all: a reason never reads as an option.
        command.arg(format!("--record-off={why}"));
    }
    let child = command
        .spawn()
        .map_err(|source| SupervisorError::SpawnWorker {
            exe: exe.to_owned(),
            source,
        })?;
    drop((channel_fd, slots_fd, record_fds, theirs));
    tracing::info!(pid = child.id(), exe = %exe.display(), "worker started");
    let worker = Worker {
        child,
        channel: ours,
    };
    for (index, h) in held.iter().enumerate() {
        if let Some(h) = h {
            send(&worker, index, h);
        }
    }
    Ok(worker)
}

/// A child's pid for `kill` (pids are below `PID_MAX_LIMIT`, 2^22).
pub(super) fn child_pid(child: &Child) -> nix::unistd::Pid {
    nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX))
}

/// Hands one notify fd to the worker: the slot index, runc's message, and the fd.
pub(super) fn send(worker: &Worker, index: usize, h: &Held) {
    // A slot index is below MAX_SLOTS; the worker checks it against its own slot file.
    let head = u32::try_from(index).unwrap_or(u32::MAX).to_le_bytes();
    let iov = [IoSlice::new(&head), IoSlice::new(&h.state)];
    let fds = [h.fd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    if let Err(e) = sendmsg::<()>(
        worker.channel.as_raw_fd(),
        &iov,
        &cmsg,
        MsgFlags::empty(),
        None,
    ) {
        // The worker is gone; its successor gets every fd anyway.
        tracing::warn!(slot = index, error = %e, "cannot hand a notify fd to the worker");
    }
}
