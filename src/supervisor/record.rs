//! The exec record: what each exec loaded, written by the kernel as the exec happens
//! (`bpf/exec_record.bpf.c`, two BTF-typed tracepoint programs and a hash map keyed by
//! thread-group id), for the tasks of guarded containers only ([`Guarded`]),
//! so that the image checkpoint learns the program and the interpreter of an ordinary exec
//! from one map lookup (under a microsecond) instead of its two looks through `/proc` (15 µs
//! in an exec storm, README "Performance").
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

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;

use aya::maps::{HashMap, Map, MapData, MapError};
use aya::programs::BtfTracePoint;
use aya::Btf;

use crate::config::ExecRecordSetting;
use crate::inspect::image::Loaded;
use crate::inspect::FileVersion;
use crate::sys::bpf::{RawApproval, RawFile, RawRecord};

/// The object `build.rs` compiled; empty when it was built without clang.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/exec_record.bpf.o"));

/// The map's name says its layout: a worker of another version (after an upgrade, the programs
/// and map are the first keeper's) refuses a map it cannot read. Change the suffix with
/// `struct exec_record`. At most 15 bytes (`BPF_OBJ_NAME_LEN`).
const MAP: &str = "exec_record_v2";
/// The map of guarded pid namespaces (`guarded_pidns_v1` in the object; the same rule), the
/// exec checkpoint's approvals and the ring buffer of killed execs.
const GUARDED: &str = "guarded_pidns_v1";
const APPROVED: &str = "approved_v1";
const KILLS: &str = "kills_v1";
/// (program, tracepoint): the exit one is attached first, so that every entry the exec one
/// writes is of a process whose end will remove it.
const EXIT: (&str, &str) = ("forget_exit", "sched_process_exit");
const EXEC: (&str, &str) = ("record_exec", "sched_process_exec");
/// `PROC_PID_INIT_INO`: the inode of the initial pid namespace.
const INITIAL_PID_NS: u64 = 0xEFFF_FFFC;
/// Where the kernel publishes its BTF, which names the tracepoints.
const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// A file of the record as the inspection compares files.
fn version(raw: &RawFile) -> Option<FileVersion> {
    (raw.dev != 0).then(|| FileVersion {
        dev: libc::makedev(raw.dev >> 20, raw.dev & 0xf_ffff),
        ino: raw.ino,
        size: raw.size,
        mtime: (raw.mtime_sec, i64::from(raw.mtime_nsec)),
        ctime: (raw.ctime_sec, i64::from(raw.ctime_nsec)),
    })
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum RecordError {
    #[error("this execguard was built without it (clang and libbpf-dev were not found)")]
    NotBuilt,
    #[error(
        "the supervisor does not run in the initial pid namespace, where the record's process \
         ids are counted"
    )]
    PidNamespace,
    #[error("loading it needs {0}, and this process does not have it")]
    Capability(caps::Capability),
    #[error("loading it: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("loading program {name}: {source}")]
    Program {
        name: &'static str,
        source: Box<aya::programs::ProgramError>,
    },
    #[error("the object has no {0}")]
    Missing(&'static str),
    #[error("the kernel has no BTF at {KERNEL_BTF} (CONFIG_DEBUG_INFO_BTF), which names the tracepoints: {0}")]
    Btf(#[source] Box<aya::BtfError>),
    #[error("attaching {name} (BPF_RAW_TRACEPOINT_OPEN): {source}")]
    Attach {
        name: &'static str,
        source: std::io::Error,
    },
    #[error("the map: {0}")]
    Map(#[source] Box<MapError>),
    #[error("the map passed on is {0:?}, not {MAP:?}: another version's layout")]
    Layout(String),
    #[error("running its loader (execguard load-exec-record): {source}")]
    Child { source: std::io::Error },
    #[error("{0}")]
    Loader(String),
}

/// The record's descriptors: the map, the two links that keep its programs attached, and the
/// confirmation's map of approvals and ring buffer of kills (a worker's share), and the map of
/// guarded pid namespaces (the keeper's).
pub(crate) struct RecordFds {
    map: OwnedFd,
    exec: OwnedFd,
    exit: OwnedFd,
    /// The approvals and the kills; None for a record of programs older than the confirmation
    /// (carried across an upgrade).
    confirm: Option<[OwnedFd; 2]>,
    /// None for a record of programs older than this map, which record every exec.
    guarded: Option<OwnedFd>,
}

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

    /// The descriptors a worker gets: map, exec link, exit link, and the approvals and kills
    /// when the programs have them.
    pub(crate) fn worker_fds(&self) -> Vec<BorrowedFd<'_>> {
        let mut fds = vec![self.map.as_fd(), self.exec.as_fd(), self.exit.as_fd()];
        fds.extend(self.confirm.iter().flatten().map(AsFd::as_fd));
        fds
    }

    /// The map of guarded pid namespaces, if the programs have one.
    pub(crate) fn guarded_fd(&self) -> Option<BorrowedFd<'_>> {
        self.guarded.as_ref().map(AsFd::as_fd)
    }

    /// Copies of [`Self::worker_fds`] without close-on-exec, in that order: for a worker's
    /// command line or the upgrade's `execve`.
    pub(crate) fn inheritable(&self) -> nix::Result<Vec<OwnedFd>> {
        self.worker_fds()
            .into_iter()
            .map(nix::unistd::dup)
            .collect()
    }

    /// Takes the descriptors a keeper passed on, in the order of [`Self::worker_fds`] (three,
    /// or five with the confirmation's), and the map of guarded pid namespaces if it had one.
    pub(crate) fn adopt(fds: &[RawFd], guarded: Option<RawFd>) -> std::io::Result<Self> {
        let adopt = crate::sys::adopt_inherited_fd;
        let invalid = || std::io::Error::from_raw_os_error(libc::EINVAL);
        let (map, exec, exit, confirm) = match *fds {
            [map, exec, exit] => (map, exec, exit, None),
            [map, exec, exit, approved, kills] => {
                (map, exec, exit, Some([adopt(approved)?, adopt(kills)?]))
            }
            _ => return Err(invalid()),
        };
        Ok(Self {
            map: adopt(map)?,
            exec: adopt(exec)?,
            exit: adopt(exit)?,
            confirm,
            guarded: guarded.map(adopt).transpose()?,
        })
    }
}

/// A copy of the descriptor of map `name` of the loaded object.
fn map_fd(ebpf: &aya::Ebpf, name: &'static str) -> Result<OwnedFd, RecordError> {
    match ebpf.map(name) {
        Some(Map::HashMap(data) | Map::RingBuf(data)) => data
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
fn load_in_child(exe: &Path) -> Result<RecordFds, RecordError> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    let child_err = |source| RecordError::Child { source };
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| child_err(e.into()))?;
    // Inherited by the child: `dup` gives a copy without close-on-exec.
    let inherited = nix::unistd::dup(&theirs).map_err(|e| child_err(e.into()))?;
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

/// `GUARD_EXECS_JUDGED` and `GUARD_ENFORCE` in `bpf/exec_record.bpf.c`.
const GUARD_EXECS_JUDGED: u32 = 1;
const GUARD_ENFORCE: u32 = 2;

/// How the kernel confirms a container's execs (the flags of its pid namespace): where the exec
/// checkpoint judges every exec (its profile traps every exec call that runs, as the spec's
/// `listenerMetadata` says: the hook's or runtime's `[detect] exec_checkpoint`), an exec that
/// then runs other files than were judged, or that nothing judged, is reported, and in
/// enforce mode (the container's annotation, or the config's default) killed before its
/// first instruction.
pub(crate) fn confirmation(
    config: &crate::config::Config,
    metadata: &str,
    annotated: Option<&str>,
) -> u32 {
    if !crate::spec::traps_execs(metadata) {
        return 0;
    }
    let mode = annotated
        .and_then(crate::vocab::Mode::from_annotation)
        .unwrap_or(config.mode);
    match mode {
        crate::vocab::Mode::Enforce => GUARD_EXECS_JUDGED | GUARD_ENFORCE,
        _ => GUARD_EXECS_JUDGED,
    }
}

/// The keeper's side of the map of guarded pid namespaces: a container's pid namespace is
/// added when its first notify fd is admitted (before the worker is handed the fd, so before
/// its first exec is answered) and removed when the last notify fd of that namespace hangs up
/// (runc hands one per container start and one per `runc exec`, all in the same namespace).
pub(crate) struct Guarded {
    map: HashMap<MapData, u32, u32>,
    /// Per slot of the keeper's table, the namespace its notify fd was counted under.
    slots: std::collections::HashMap<usize, u32>,
    /// Per namespace, how many held notify fds keep it guarded.
    counts: std::collections::HashMap<u32, usize>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum GuardError {
    #[error("runc's message names no process (its \"pid\" field)")]
    NoPid,
    #[error("reading the pid namespace of process {pid} (/proc/{pid}/ns/pid): {source}")]
    Namespace { pid: i32, source: nix::errno::Errno },
    #[error("process {0} is in the initial pid namespace (a container that shares the host's): the record would then cover every process of the host, so it covers none of this container's")]
    Initial(i32),
    #[error("adding pid namespace {inum} to the map: {source}")]
    Update { inum: u32, source: Box<MapError> },
}

impl Guarded {
    /// The map of `record` for the keeper, or None when the record has none (an older keeper's,
    /// carried across an upgrade: its programs record every exec).
    pub(crate) fn open(record: &RecordFds) -> Option<Self> {
        let opened = record
            .guarded_fd()?
            .try_clone_to_owned()
            .map_err(MapError::from)
            .and_then(MapData::from_fd)
            .and_then(|data| HashMap::try_from(Map::HashMap(data)));
        match opened {
            Ok(map) => Some(Self {
                map,
                slots: std::collections::HashMap::new(),
                counts: std::collections::HashMap::new(),
            }),
            Err(e) => {
                tracing::error!(error = %e, "the map of guarded pid namespaces cannot be opened; no container's execs are recorded");
                None
            }
        }
    }

    /// Counts the notify fd in `slot`, whose runc message is `state`, under its container's
    /// pid namespace, adding the namespace to the map if it is new.
    /// `confirmation` gives the flags of the container's namespace from runc's `metadata` and
    /// the container's mode annotation ([`confirmation`]).
    pub(crate) fn admit(
        &mut self,
        slot: usize,
        state: &[u8],
        confirmation: impl Fn(&str, Option<&str>) -> u32,
    ) -> Result<(), GuardError> {
        #[derive(serde::Deserialize)]
        struct Message {
            pid: Option<i32>,
            #[serde(default)]
            metadata: String,
            #[serde(default)]
            state: State,
        }
        #[derive(serde::Deserialize, Default)]
        struct State {
            #[serde(default)]
            annotations: std::collections::HashMap<String, String>,
        }
        let message = serde_json::from_slice::<Message>(state).ok();
        let pid = message
            .as_ref()
            .and_then(|m| m.pid)
            .filter(|pid| *pid > 0)
            .ok_or(GuardError::NoPid)?;
        let annotated = message.as_ref().and_then(|m| {
            m.state
                .annotations
                .get(crate::spec::MODE_ANNOTATION)
                .map(String::as_str)
        });
        let metadata = message.as_ref().map_or("", |m| m.metadata.as_str());
        let flags = confirmation(metadata, annotated);
        let inum = super::privilege::with_effective(caps::Capability::CAP_SYS_PTRACE, || {
            nix::sys::stat::stat(format!("/proc/{pid}/ns/pid").as_str())
        })
        .map_err(|source| GuardError::Namespace { pid, source })?
        .st_ino;
        if inum == INITIAL_PID_NS {
            return Err(GuardError::Initial(pid));
        }
        // Namespace inodes are 32-bit (`ns_common.inum`).
        let inum = u32::try_from(inum).map_err(|_| GuardError::Namespace {
            pid,
            source: nix::errno::Errno::EOVERFLOW,
        })?;
        // Inserted before the slot's earlier count is released, so that a namespace counted
        // under it again never leaves the map in between.
        self.map
            .insert(inum, flags, 0)
            .map_err(|e| GuardError::Update {
                inum,
                source: Box::new(e),
            })?;
        self.release(slot);
        self.slots.insert(slot, inum);
        *self.counts.entry(inum).or_default() += 1;
        Ok(())
    }

    /// The notify fd in `slot` hung up: its namespace leaves the map with its last fd.
    pub(crate) fn release(&mut self, slot: usize) {
        let Some(inum) = self.slots.remove(&slot) else {
            return;
        };
        let count = self.counts.entry(inum).or_default();
        *count = count.saturating_sub(1);
        if *count == 0 {
            self.counts.remove(&inum);
            if let Err(e) = self.map.remove(&inum) {
                tracing::warn!(inum, error = %e, "cannot remove a pid namespace from the map of guarded ones");
            }
        }
    }

    /// Removes from the map every namespace no held notify fd is counted under: after an
    /// upgrade the map still holds the old keeper's, some of whose containers may have ended
    /// or not been counted again (their runc message names a process that is gone).
    pub(crate) fn prune(&mut self) {
        let stale: Vec<u32> = self
            .map
            .keys()
            .filter_map(Result::ok)
            .filter(|inum| !self.counts.contains_key(inum))
            .collect();
        for inum in stale {
            let _ = self.map.remove(&inum);
        }
    }

    /// The namespaces the map holds now, as the keeper counted them.
    #[cfg(test)]
    pub(crate) fn namespaces(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.counts.keys().copied().collect();
        v.sort_unstable();
        v
    }
}

/// The worker's reader of the record. Holds the links too: while it can read the map,
/// the programs that keep it true stay attached.
pub(crate) struct ExecRecord {
    map: HashMap<MapData, u32, RawRecord>,
    /// The exec checkpoint's approvals, by calling thread: what the exec program confirms.
    approvals: Option<std::sync::Mutex<HashMap<MapData, u32, RawApproval>>>,
    /// The ring buffer of killed execs, until the worker's reader takes it.
    kills: Option<OwnedFd>,
    _attached: [OwnedFd; 2],
}

impl ExecRecord {
    /// Opens the record and checks that this process may read it (before 6.5, a kernel with
    /// `kernel.unprivileged_bpf_disabled` refused every `bpf` call without `CAP_BPF`).
    pub(crate) fn open(fds: RecordFds) -> Result<Self, RecordError> {
        let map_err = |e| RecordError::Map(Box::new(e));
        let data = MapData::from_fd(fds.map).map_err(map_err)?;
        let info = data.info().map_err(map_err)?;
        if info.name_as_str() != Some(MAP) {
            return Err(RecordError::Layout(
                String::from_utf8_lossy(info.name()).into_owned(),
            ));
        }
        let map = HashMap::try_from(Map::HashMap(data)).map_err(map_err)?;
        let (approvals, kills) = match fds.confirm {
            Some([approved, kills]) => {
                let data = MapData::from_fd(approved).map_err(map_err)?;
                let approvals = HashMap::try_from(Map::HashMap(data)).map_err(map_err)?;
                (Some(std::sync::Mutex::new(approvals)), Some(kills))
            }
            None => (None, None),
        };
        let record = Self {
            map,
            approvals,
            kills,
            _attached: [fds.exec, fds.exit],
        };
        // No process has pid 0: a lookup that works finds nothing.
        match record.map.get(&0, 0) {
            Err(MapError::KeyNotFound) => Ok(record),
            Ok(_) => Ok(record),
            Err(e) => Err(map_err(e)),
        }
    }

    /// Tells the exec program that the exec thread `tid` is calling was judged to run `file`:
    /// in a namespace whose execs are confirmed, an exec that runs anything else is killed.
    pub(crate) fn approve(&self, tid: u32, runs: &crate::inspect::Runs) -> Result<(), MapError> {
        let Some(approvals) = &self.approvals else {
            return Ok(());
        };
        let nsec = |t: (i64, i64)| u32::try_from(t.1).unwrap_or(u32::MAX);
        let interp = runs.interpreter.as_ref();
        let approval = RawApproval {
            ino: runs.program.ino,
            size: runs.program.size,
            ctime_sec: runs.program.ctime.0,
            ctime_nsec: nsec(runs.program.ctime),
            has_interp: u32::from(interp.is_some()),
            interp_size: interp.map_or(0, |i| i.size),
            interp_ctime_sec: interp.map_or(0, |i| i.ctime.0),
            interp_ctime_nsec: interp.map_or(0, |i| nsec(i.ctime)),
            pad: 0,
        };
        approvals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tid, approval, 0)
    }

    /// The ring buffer of killed execs, for the worker's reader (once).
    pub(crate) fn take_kills(&mut self) -> Option<OwnedFd> {
        self.kills.take()
    }

    /// What the latest exec of process `pid` loaded, if the record has it (a thread's id, a
    /// process that has not executed since the record began, an entry the map had no room
    /// for: none).
    pub(crate) fn lookup(&self, pid: u32) -> Option<Loaded> {
        let raw = self.map.get(&pid, 0).ok()?;
        Some(Loaded {
            program: version(&raw.program),
            interpreter: version(&raw.interpreter),
            exec_time: raw.seq,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_descriptor_list_has_three_or_five_numbers() {
        assert_eq!(parse_fds("5,6,7"), Some(vec![5, 6, 7]));
        assert_eq!(parse_fds("5,6,7,8,9"), Some(vec![5, 6, 7, 8, 9]));
        assert_eq!(parse_fds("5,6"), None);
        assert_eq!(parse_fds("5,6,7,8"), None);
        assert_eq!(parse_fds("5,x,7"), None);
    }

    #[test]
    fn a_kernel_device_number_becomes_the_one_stat_shows() {
        let file = RawFile {
            ino: 42,
            dev: (259 << 20) | 3,
            ..RawFile::default()
        };
        let v = version(&file).unwrap();
        assert_eq!(v.dev, libc::makedev(259, 3));
        assert_eq!(version(&RawFile::default()), None);
    }

    /// A shell in a pid namespace of its own that waits for a line on its standard input, then
    /// execs `program args`; the shell's pid (which the exec keeps).
    fn in_new_pid_namespace(program: &str, args: &str) -> (std::process::Child, u32) {
        #[allow(clippy::zombie_processes)] // waited for by `end`
        let child = std::process::Command::new("unshare")
            .args(["--pid", "--fork", "/bin/sh", "-c"])
            .arg(format!("read line; exec {program} {args}"))
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let children = format!("/proc/{0}/task/{0}/children", child.id());
        for _ in 0..1000 {
            let text = std::fs::read_to_string(&children).unwrap_or_default();
            // Once the child runs the shell (its exec of it must not be taken for the one the
            // test makes it do).
            if let Some(pid) = text.split_whitespace().next() {
                let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
                if exe == std::fs::canonicalize("/bin/sh").ok() {
                    return (child, pid.parse().unwrap());
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        panic!("unshare started no shell");
    }

    fn go(child: &mut std::process::Child) {
        use std::io::Write;
        child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    }

    fn end(mut child: std::process::Child, pid: u32) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = child.kill();
        child.wait().unwrap();
    }

    /// Needs root with CAP_BPF and CAP_PERFMON, and a build with clang; skips otherwise.
    #[test]
    fn the_record_names_what_a_guarded_exec_loaded_as_stat_does() {
        let fds = match RecordFds::load() {
            Ok(fds) => fds,
            Err(e) => {
                eprintln!("skipped: the exec record cannot be loaded here: {e}");
                return;
            }
        };
        let mut guarded = Guarded::open(&fds).expect("a fresh record has the guarded map");
        let record = ExecRecord::open(fds).unwrap();
        let sleep = nix::sys::stat::stat("/bin/sleep").unwrap();
        let ld = nix::sys::stat::stat("/lib64/ld-linux-x86-64.so.2").unwrap();

        // A process of the host's pid namespace is never guarded.
        let message = format!("{{\"pid\": {}}}", std::process::id());
        assert!(matches!(
            guarded.admit(9, message.as_bytes(), |_, _| 0),
            Err(GuardError::Initial(_))
        ));
        assert!(matches!(
            guarded.admit(9, b"{}", |_, _| 0),
            Err(GuardError::NoPid)
        ));

        // A dynamic program in a guarded pid namespace.
        let (mut child, pid) = in_new_pid_namespace("/bin/sleep", "5");
        guarded
            .admit(0, format!("{{\"pid\": {pid}}}").as_bytes(), |_, _| 0)
            .unwrap();
        assert_eq!(guarded.namespaces().len(), 1);
        go(&mut child);
        let loaded = wait_for(&record, pid, sleep.st_ino);
        assert_eq!(loaded.program.unwrap(), crate::inspect::version_of(&sleep));
        let interp = loaded
            .interpreter
            .expect("a dynamic program has an interpreter");
        assert_eq!((interp.dev, interp.ino), (ld.st_dev, ld.st_ino));
        end(child, pid);
        assert_eq!(record.lookup(pid), None, "the entry ends with the process");
        guarded.release(0);
        assert!(guarded.namespaces().is_empty());

        // The loader run directly: it is the program, and no interpreter was loaded.
        let (mut child, pid) = in_new_pid_namespace("/lib64/ld-linux-x86-64.so.2", "/bin/sleep 5");
        guarded
            .admit(1, format!("{{\"pid\": {pid}}}").as_bytes(), |_, _| 0)
            .unwrap();
        go(&mut child);
        let loaded = wait_for(&record, pid, ld.st_ino);
        let program = loaded.program.unwrap();
        assert_eq!((program.dev, program.ino), (ld.st_dev, ld.st_ino));
        assert_eq!(loaded.interpreter, None);
        end(child, pid);
        guarded.release(1);

        // Not recorded: an exec on the host, and one in a namespace no longer guarded.
        let mut host = std::process::Command::new("/bin/sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let (mut child, pid) = in_new_pid_namespace("/bin/sleep", "5");
        guarded
            .admit(2, format!("{{\"pid\": {pid}}}").as_bytes(), |_, _| 0)
            .unwrap();
        guarded.release(2);
        go(&mut child);
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert_eq!(
            record.lookup(host.id()),
            None,
            "a host exec is not recorded"
        );
        assert_eq!(
            record.lookup(pid),
            None,
            "a released namespace is not recorded"
        );
        end(child, pid);
        host.kill().unwrap();
        host.wait().unwrap();
    }

    /// `spawn` returns once the exec closed its close-on-exec pipe, a little before the
    /// tracepoint runs.
    /// The entry of `pid` once its program is inode `ino` (the shell's own exec, which the test
    /// cannot order before the namespace is guarded, may be recorded first).
    fn wait_for(record: &ExecRecord, pid: u32, ino: u64) -> Loaded {
        let mut last = None;
        for _ in 0..1000 {
            last = record.lookup(pid);
            if let Some(l) = &last {
                if l.program.is_some_and(|p| p.ino == ino) {
                    return *l;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        panic!("no entry for process {pid} with program inode {ino} after a second: {last:?}");
    }
}
