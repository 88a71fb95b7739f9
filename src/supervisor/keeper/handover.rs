//! The keeper's own upgrade. On SIGUSR2 the keeper re-executes the binary now installed at its
//! path, as the same process (same pid, so runc, systemd and the containers see nothing
//! change), and carries across the exec everything that must not close: the listener socket,
//! the slot file, every container's notify fd with runc's message for it, and the exec record
//! (its maps and the links its programs are attached through). While the exec
//! runs, the kernel keeps each guarded exec waiting on its notify fd (which stays open); the
//! new keeper starts a new worker, which answers them, the slot file telling it which ones the
//! old worker had received and not answered (as after a worker crash).
//!
//! What crosses the exec: the descriptors themselves (duplicates without close-on-exec, made
//! just before the `execve` and adopted, close-on-exec again, by the new keeper), and a memfd
//! that says which is which, named by [`HANDOVER_ENV`].

use crate::supervisor::error::HandoverError;
use std::ffi::{CString, OsString};
use std::io::{Read, Seek, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixListener;

use serde::{Deserialize, Serialize};

use crate::supervisor::record::RecordFds;
use crate::supervisor::slots::Slots;

/// The environment variable that names the handover memfd in the new keeper.
pub(crate) const HANDOVER_ENV: &str = "EXECGUARD_KEEPER_HANDOVER";
/// A handover is a few KiB per container; more is refused.
const MAX_HANDOVER_BYTES: u64 = 64 << 20;

#[derive(Serialize, Deserialize)]
struct Handover {
    listener: RawFd,
    /// The listener is systemd's (left in place when the keeper stops).
    activated: bool,
    slots: RawFd,
    /// When the first keeper started (seconds since the epoch): uptime survives upgrades.
    started: u64,
    held: Vec<HeldFd>,
    /// The exec record's map and links, and the confirmation's approvals and kills where the
    /// programs have them (`record::RecordFds::worker_fds`: three or five); the new keeper
    /// could not load them again (its capabilities were reduced).
    #[serde(default)]
    record: Option<Vec<RawFd>>,
    /// The record's map of guarded pid namespaces (absent from an older keeper's handover).
    #[serde(default)]
    guarded: Option<RawFd>,
}

#[derive(Serialize, Deserialize)]
struct HeldFd {
    slot: usize,
    fd: RawFd,
    /// runc's message for the fd, as it came.
    state: Vec<u8>,
}

/// What the keeper this process replaced handed over.
pub(crate) struct Adopted {
    pub listener: UnixListener,
    pub activated: bool,
    pub slots: Slots,
    pub started: u64,
    /// (slot, runc's message, notify fd).
    pub held: Vec<(usize, Vec<u8>, OwnedFd)>,
    pub record: Option<RecordFds>,
    /// Why a record that was carried is not kept (another version's), if so.
    pub record_dropped: Option<String>,
}

/// What the keeper carries across the exec.
pub(crate) struct Carried<'a> {
    pub listener: BorrowedFd<'a>,
    pub activated: bool,
    pub slots: &'a Slots,
    pub started: u64,
    pub record: Option<&'a RecordFds>,
    /// (slot, runc's message, notify fd).
    pub held: Vec<(usize, &'a [u8], BorrowedFd<'a>)>,
}

/// Re-executes `exe` as this process with the same arguments, carrying `carried` across.
/// Returns only if that failed (the keeper then goes on as it was).
pub(crate) fn reexec(exe: &std::path::Path, carried: &Carried<'_>) -> HandoverError {
    match prepare_and_exec(exe, carried) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

fn prepare_and_exec(
    exe: &std::path::Path,
    carried: &Carried<'_>,
) -> Result<std::convert::Infallible, HandoverError> {
    let prepare = |what| move |source| HandoverError::Prepare { what, source };
    // Duplicates without close-on-exec: they live only until the execve below (or the return
    // of an error, which closes them).
    let inherit = |fd: BorrowedFd<'_>, what| -> Result<OwnedFd, HandoverError> {
        crate::sys::inheritable_copy(fd).map_err(prepare(what))
    };
    let listener = inherit(carried.listener, "listener socket")?;
    let slots = inherit(carried.slots.file().as_fd(), "slot file")?;
    let mut kept = Vec::with_capacity(carried.held.len());
    let mut held = Vec::with_capacity(carried.held.len());
    for (slot, state, fd) in &carried.held {
        let fd = inherit(*fd, "notify fd")?;
        held.push(HeldFd {
            slot: *slot,
            fd: fd.as_raw_fd(),
            state: state.to_vec(),
        });
        kept.push(fd);
    }
    let record = carried
        .record
        .map(|r| r.inheritable())
        .transpose()
        .map_err(prepare("exec record"))?;
    let guarded = carried
        .record
        .and_then(RecordFds::guarded_fd)
        .map(|fd| inherit(fd, "exec record"))
        .transpose()?;
    let handover = Handover {
        listener: listener.as_raw_fd(),
        activated: carried.activated,
        slots: slots.as_raw_fd(),
        started: carried.started,
        held,
        record: record
            .as_ref()
            .map(|fds| fds.iter().map(AsRawFd::as_raw_fd).collect()),
        guarded: guarded.as_ref().map(AsRawFd::as_raw_fd),
    };
    let memfd = nix::sys::memfd::memfd_create(
        c"execguard-handover",
        nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
    )
    .map_err(|e| prepare("memfd")(e.into()))?;
    let mut file = std::fs::File::from(memfd);
    let text = serde_json::to_vec(&handover).map_err(|e| prepare("encoding")(e.into()))?;
    file.write_all(&text).map_err(prepare("memfd"))?;
    file.rewind().map_err(prepare("memfd"))?;
    let memfd = inherit(file.as_fd(), "memfd")?;

    let cstring = |s: &[u8]| CString::new(s).map_err(|e| prepare("arguments")(e.into()));
    let path = cstring(exe.as_os_str().as_bytes())?;
    let args: Vec<CString> = std::env::args_os()
        .map(|a| cstring(a.as_bytes()))
        .collect::<Result<_, _>>()?;
    let mut env: Vec<CString> = Vec::new();
    for (k, v) in std::env::vars_os().filter(|(k, _)| k != HANDOVER_ENV) {
        let mut entry = OsString::from(&k);
        entry.push("=");
        entry.push(&v);
        env.push(cstring(entry.as_bytes())?);
    }
    env.push(cstring(
        format!("{HANDOVER_ENV}={}", memfd.as_raw_fd()).as_bytes(),
    )?);
    let errno = match nix::unistd::execve(&path, &args, &env) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    drop((listener, slots, kept, record, guarded, memfd));
    Err(HandoverError::Exec {
        exe: exe.to_owned(),
        source: errno,
    })
}

/// The handover of the keeper this process replaced, if it is one (its environment names the
/// memfd); the variable is removed, so that no worker inherits it.
pub(crate) fn take() -> Result<Option<Adopted>, HandoverError> {
    let Some(fd) = std::env::var_os(HANDOVER_ENV) else {
        return Ok(None);
    };
    std::env::remove_var(HANDOVER_ENV);
    let adopt_err = |what| move |source| HandoverError::Adopt { what, source };
    let fd: RawFd = fd
        .to_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| adopt_err("memfd")(std::io::Error::from_raw_os_error(libc::EBADF)))?;
    let memfd = crate::sys::adopt_inherited_fd(fd).map_err(adopt_err("memfd"))?;
    let mut text = Vec::new();
    std::fs::File::from(memfd)
        .take(MAX_HANDOVER_BYTES)
        .read_to_end(&mut text)
        .map_err(adopt_err("memfd"))?;
    let h: Handover = serde_json::from_slice(&text).map_err(|e| adopt_err("memfd")(e.into()))?;
    let listener = crate::sys::adopt_inherited_fd(h.listener).map_err(adopt_err("listener"))?;
    let slots = crate::sys::adopt_inherited_fd(h.slots).map_err(adopt_err("slot file"))?;
    let slots = Slots::from_fd(slots).map_err(adopt_err("slot file"))?;
    let mut held = Vec::with_capacity(h.held.len());
    for fd in h.held {
        match crate::sys::adopt_inherited_fd(fd.fd) {
            Ok(owned) => held.push((fd.slot, fd.state, owned)),
            // One lost fd must not cost the others: that container's execs fail (ENOSYS).
            Err(e) => {
                tracing::error!(slot = fd.slot, error = %e, "a notify fd did not cross the upgrade")
            }
        }
    }
    let mut record_dropped = None;
    let record = h
        .record
        .and_then(|fds| match RecordFds::adopt(&fds, h.guarded) {
            Ok(r) => match r.check_layout() {
                Ok(()) => Some(r),
                Err(e) => {
                    let why = format!("the exec record carried across the upgrade is not this version's ({e}); it was dropped, and every image is looked at through /proc until the supervisor is restarted");
                    tracing::error!("{why}");
                    record_dropped = Some(why);
                    None
                }
            },
            Err(e) => {
                tracing::error!(error = %e, "the exec record did not cross the upgrade; every image is looked at through /proc");
                None
            }
        });
    Ok(Some(Adopted {
        record,
        record_dropped,
        listener: UnixListener::from(listener),
        activated: h.activated,
        slots,
        started: h.started,
        held,
    }))
}
