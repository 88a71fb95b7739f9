//! The exec record: what each exec loaded, written by the kernel as the exec happens
//! (`bpf/exec_record.bpf.c`, two BTF-typed tracepoint programs and an array of slots keyed by
//! the low bits of the thread-group id, which the worker maps into its memory), for the tasks
//! of guarded containers only ([`Guarded`]), so that the image checkpoint learns the program
//! and the interpreter of an ordinary exec from a read of its own memory (no system call)
//! instead of its two looks through `/proc` (15 µs in an exec storm, docs/performance.md).
//!
//! The keeper has the programs loaded and attached while it still has `CAP_BPF` and
//! `CAP_PERFMON` (they are dropped right after), by a short-lived child of its own image
//! (`execguard load-exec-record`, [`load_in_child`]: the megabytes of the kernel's BTF that
//! loading parses never enter the long-lived keeper), and holds the four descriptors it sends
//! back: the record's map, the two BPF links the programs are attached through, and the map of
//! guarded pid namespaces, which the keeper fills as containers come and empties as they go.
//! Every worker gets the first three, and a keeper that replaces this one (an upgrade) all
//! four: the programs stay
//! attached as long as anyone can read the map, so the map never holds an entry of a process
//! that ended while nothing kept it true. Without them (no capability, a kernel that refuses, a
//! build without clang) the supervisor looks through `/proc` as before; an entry that is
//! missing means the same.
//!
//! aya loads the object and relocates it for the running kernel; the programs are attached
//! through BPF links opened here (`sys::bpf`), not through aya, which keeps the descriptors of
//! its links to itself: these must cross an `execve` and go to the worker. BTF-typed
//! tracepoints need no tracefs (not mounted on a fresh Debian machine, nor in most
//! containers): the kernel's BTF (`/sys/kernel/btf/vmlinux`) names them.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::Path;

use aya::maps::{Map, MapError};
use aya::programs::BtfTracePoint;
use aya::Btf;

use crate::config::ExecRecordSetting;

mod fds;
mod guarded;
mod reader;
#[cfg(test)]
mod tests;

pub(crate) use fds::{RecordError, RecordFds, INITIAL_PID_NS};
use fds::{APPROVED, GUARDED, KILLS, MAP};
pub(crate) use guarded::{confirmation, Guarded};
pub(crate) use reader::ExecRecord;

/// The object `build.rs` compiled; empty when it was built without clang.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/exec_record.bpf.o"));

/// (program, tracepoint): the exit one is attached first, so that every entry the exec one
/// writes is of a process whose end will remove it.
const EXIT: (&str, &str) = ("forget_exit", "sched_process_exit");
const EXEC: (&str, &str) = ("record_exec", "sched_process_exec");
impl RecordFds {
    /// Loads and attaches the programs (needs `CAP_BPF` and `CAP_PERFMON`).
    pub(crate) fn load() -> Result<Self, RecordError> {
        if OBJECT.is_empty() {
            return Err(RecordError::NotBuilt);
        }
        let in_initial_ns =
            nix::sys::stat::stat("/proc/self/ns/pid").is_ok_and(|st| st.st_ino == INITIAL_PID_NS);
        if !in_initial_ns {
            return Err(RecordError::PidNamespace);
        }
        for cap in [caps::Capability::CAP_BPF, caps::Capability::CAP_PERFMON] {
            if !caps::has_cap(None, caps::CapSet::Effective, cap).unwrap_or(false) {
                return Err(RecordError::Capability(cap));
            }
        }
        let btf = Btf::from_sys_fs().map_err(|e| RecordError::Btf(Box::new(e)))?;
        let mut ebpf = aya::Ebpf::load(OBJECT).map_err(|e| RecordError::Load(Box::new(e)))?;
        let map = map_fd(&ebpf, MAP)?;
        let guarded = map_fd(&ebpf, GUARDED)?;
        let approved = map_fd(&ebpf, APPROVED)?;
        let kills = map_fd(&ebpf, KILLS)?;
        let exit = attach(&mut ebpf, &btf, EXIT)?;
        let exec = attach(&mut ebpf, &btf, EXEC)?;
        // aya's own descriptors close here; the links hold the programs, and they the maps.
        Ok(Self {
            map,
            exec,
            exit,
            confirm: Some([approved, kills]),
            guarded: Some(guarded),
        })
    }
}

/// A copy of the descriptor of map `name` of the loaded object.
fn map_fd(ebpf: &aya::Ebpf, name: &'static str) -> Result<OwnedFd, RecordError> {
    match ebpf.map(name) {
        Some(Map::Array(data) | Map::HashMap(data) | Map::RingBuf(data)) => data
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| RecordError::Map(Box::new(MapError::from(e)))),
        _ => Err(RecordError::Missing(name)),
    }
}

/// `execguard load-exec-record --fd N`: loads the record and sends its six descriptors over
/// the socket `fd` (or, on failure, the reason, without descriptors), then ends.
pub(crate) fn serve_loader(socket: OwnedFd) -> std::io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let (text, record) = match RecordFds::load() {
        Ok(r) => (String::from(LOADED), Some(r)),
        Err(e) => (e.to_string(), None),
    };
    let raw: Vec<RawFd> = record
        .as_ref()
        .map(|r| {
            r.worker_fds()
                .into_iter()
                .chain(r.guarded_fd())
                .map(|fd| fd.as_raw_fd())
                .collect()
        })
        .unwrap_or_default();
    let rights = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &rights };
    sendmsg::<()>(
        socket.as_raw_fd(),
        &[std::io::IoSlice::new(text.as_bytes())],
        cmsgs,
        MsgFlags::empty(),
        None,
    )?;
    Ok(())
}

/// What the loader sends with the descriptors.
const LOADED: &str = "loaded";
/// How long the keeper waits for the loader (it takes about 0.1 s).
const LOADER_SECONDS: i64 = 30;

/// Has a child of this image (`exe`) load the record and takes the descriptors it sends.
pub(crate) fn load_in_child(exe: &Path) -> Result<RecordFds, RecordError> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    let child_err = |source| RecordError::Child { source };
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| child_err(e.into()))?;
    // Inherited by the child: a copy without close-on-exec.
    let inherited = crate::sys::inheritable_copy(theirs.as_fd()).map_err(child_err)?;
    let mut child = std::process::Command::new(exe)
        .arg("load-exec-record")
        .arg("--fd")
        .arg(inherited.as_raw_fd().to_string())
        .stdin(std::process::Stdio::null())
        .spawn()
        .map_err(child_err)?;
    drop((inherited, theirs));
    // A loader that hangs must not hold the keeper's start: it goes on without the record.
    let _ = nix::sys::socket::setsockopt(
        &ours,
        nix::sys::socket::sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(LOADER_SECONDS, 0),
    );
    let mut buf = [0u8; 1024];
    let received = crate::sys::recv_with_fds::<6>(ours.as_fd(), &mut buf);
    if received.is_err() {
        let _ = child.kill();
    }
    let _ = child.wait();
    let (n, fds) = received.map_err(|e| child_err(e.into()))?;
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    match <[OwnedFd; 6]>::try_from(fds) {
        Ok([map, exec, exit, approved, kills, guarded]) if text == LOADED => Ok(RecordFds {
            map,
            exec,
            exit,
            confirm: Some([approved, kills]),
            guarded: Some(guarded),
        }),
        _ if n == 0 => Err(child_err(std::io::Error::from_raw_os_error(libc::EPIPE))),
        _ => Err(RecordError::Loader(text)),
    }
}

/// Why the record is off when the config says so.
pub(crate) const OFF_BY_CONFIG: &str = "[worker] exec_record = \"off\" in the config";

/// The keeper's record: loaded by a child of `exe` (the keeper's own image) unless the config
/// turns it off; without it, the reason (logged too, and shown by status and metrics), and
/// every image is looked at through `/proc`.
pub(crate) fn load_if_wanted(setting: ExecRecordSetting, exe: &Path) -> Result<RecordFds, String> {
    if setting == ExecRecordSetting::Off {
        tracing::info!(
            reason = OFF_BY_CONFIG,
            "exec record off; every image is looked at through /proc"
        );
        return Err(OFF_BY_CONFIG.to_owned());
    }
    match load_in_child(exe) {
        Ok(record) => {
            tracing::info!("exec record on: ordinary images of guarded containers are answered from the kernel's record of each exec");
            Ok(record)
        }
        Err(e) => {
            tracing::warn!(
                reason = %e,
                "no exec record; every image is looked at through /proc (docs: \"The exec record\")"
            );
            Err(e.to_string())
        }
    }
}

/// The worker's record from the descriptors the keeper passed (`--record-fds MAP,EXEC,EXIT`),
/// or why there is none: the keeper's reason (`--record-off`), or what failed here (logged).
/// Without it every image is looked at through `/proc`.
pub(crate) fn open_passed(
    fds: Option<&str>,
    keeper_reason: Option<&str>,
) -> Result<ExecRecord, String> {
    let Some(text) = fds else {
        return Err(keeper_reason
            .unwrap_or("the keeper passed no exec record")
            .to_owned());
    };
    let opened = parse_fds(text)
        .ok_or_else(|| format!("--record-fds {text:?} is not three or five descriptor numbers"))
        .and_then(|fds| {
            RecordFds::adopt(&fds, None).map_err(|e| format!("the record's descriptors: {e}"))
        })
        .and_then(|fds| {
            ExecRecord::open(fds).map_err(|e| format!("opening the exec record in the worker: {e}"))
        });
    if let Err(e) = &opened {
        tracing::warn!(reason = %e, "no exec record in this worker; every image is looked at through /proc");
    }
    opened
}

/// The comma-separated descriptor numbers of `--record-fds`: three, or five.
fn parse_fds(text: &str) -> Option<Vec<RawFd>> {
    let fds: Vec<RawFd> = text
        .split(',')
        .map(|n| n.trim().parse::<RawFd>().ok())
        .collect::<Option<_>>()?;
    matches!(fds.len(), 3 | 5).then_some(fds)
}

fn attach(
    ebpf: &mut aya::Ebpf,
    btf: &Btf,
    (name, tracepoint): (&'static str, &'static str),
) -> Result<OwnedFd, RecordError> {
    let program_err = |e| RecordError::Program {
        name,
        source: Box::new(e),
    };
    let program: &mut BtfTracePoint = ebpf
        .program_mut(name)
        .ok_or(RecordError::Missing(name))?
        .try_into()
        .map_err(program_err)?;
    program.load(tracepoint, btf).map_err(program_err)?;
    let program_fd = program.fd().map_err(program_err)?;
    crate::sys::bpf::attach_btf_tracepoint(program_fd.as_fd())
        .map_err(|source| RecordError::Attach { name, source })
}
