//! The exec record: what each exec loaded, written by the kernel as the exec happens
//! (`bpf/exec_record.bpf.c`, two tracepoint programs and a hash map keyed by thread-group id),
//! so that the image checkpoint learns the program and the interpreter of an ordinary exec
//! from one map lookup (under a microsecond) instead of its two looks through `/proc` (15 µs
//! in an exec storm, README "Performance").
//!
//! The keeper has the programs loaded and attached while it still has `CAP_BPF` and
//! `CAP_PERFMON` (they are dropped right after), by a short-lived child of its own image
//! (`execguard load-exec-record`, [`load_in_child`]: the megabytes of the kernel's BTF that
//! loading parses never enter the long-lived keeper), and holds the three descriptors it sends
//! back: the map and the two perf events the programs are attached through. Every worker gets
//! all three, and so does a keeper that replaces this one (an upgrade): the programs stay
//! attached as long as anyone can read the map, so the map never holds an entry of a process
//! that ended while nothing kept it true. Without them (no capability, a kernel that refuses, a
//! build without clang) the supervisor looks through `/proc` as before; an entry that is
//! missing means the same.
//!
//! aya loads the object and relocates it for the running kernel; the programs are attached
//! through perf events opened here (`sys::bpf`), not through aya, which keeps the descriptors
//! of its attachments to itself: these must cross an `execve` and go to the worker.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;

use aya::maps::{HashMap, Map, MapData, MapError};
use aya::programs::TracePoint;

use crate::config::ExecRecordSetting;
use crate::inspect::image::Loaded;
use crate::inspect::FileVersion;
use crate::sys::bpf::{RawFile, RawRecord};

/// The object `build.rs` compiled; empty when it was built without clang.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/exec_record.bpf.o"));

/// The map's name says its layout: a worker of another version (after an upgrade, the programs
/// and map are the first keeper's) refuses a map it cannot read. Change the suffix with
/// `struct exec_record`. At most 15 bytes (`BPF_OBJ_NAME_LEN`).
const MAP: &str = "exec_record_v1";
/// (program, tracepoint category, tracepoint): the exit one is attached first, so that every
/// entry the exec one writes is of a process whose end will remove it.
const EXIT: (&str, &str, &str) = ("forget_exit", "sched", "sched_process_exit");
const EXEC: (&str, &str, &str) = ("record_exec", "sched", "sched_process_exec");
/// `PROC_PID_INIT_INO`: the inode of the initial pid namespace.
const INITIAL_PID_NS: u64 = 0xEFFF_FFFC;
const TRACEFS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

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
    #[error("reading the id of tracepoint {category}/{name} under {TRACEFS:?}: {source}")]
    TracepointId {
        category: &'static str,
        name: &'static str,
        source: std::io::Error,
    },
    #[error("attaching {name} ({what}): {source}")]
    Attach {
        name: &'static str,
        what: &'static str,
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

/// The record's descriptors: the map and the two perf events that keep its programs attached.
pub(crate) struct RecordFds {
    map: OwnedFd,
    exec: OwnedFd,
    exit: OwnedFd,
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
        let mut ebpf = aya::Ebpf::load(OBJECT).map_err(|e| RecordError::Load(Box::new(e)))?;
        let map = match ebpf.map(MAP) {
            Some(Map::HashMap(data)) => data
                .fd()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| RecordError::Map(Box::new(MapError::from(e))))?,
            _ => return Err(RecordError::Missing(MAP)),
        };
        let exit = attach(&mut ebpf, EXIT)?;
        let exec = attach(&mut ebpf, EXEC)?;
        // aya's own descriptors close here; the perf events hold the programs, and they the map.
        Ok(Self { map, exec, exit })
    }

    /// The descriptors, for the worker's command line and the upgrade's handover: map, exec
    /// event, exit event.
    pub(crate) fn fds(&self) -> [BorrowedFd<'_>; 3] {
        [self.map.as_fd(), self.exec.as_fd(), self.exit.as_fd()]
    }

    /// Copies of the three descriptors without close-on-exec, in the order of [`Self::fds`]:
    /// for a worker's command line or the upgrade's `execve`.
    pub(crate) fn inheritable(&self) -> nix::Result<[OwnedFd; 3]> {
        let [map, exec, exit] = self.fds();
        Ok([
            nix::unistd::dup(map)?,
            nix::unistd::dup(exec)?,
            nix::unistd::dup(exit)?,
        ])
    }

    /// Takes the three descriptors a keeper passed on, in the order of [`Self::fds`].
    pub(crate) fn adopt(fds: [RawFd; 3]) -> std::io::Result<Self> {
        let [map, exec, exit] = fds;
        Ok(Self {
            map: crate::sys::adopt_inherited_fd(map)?,
            exec: crate::sys::adopt_inherited_fd(exec)?,
            exit: crate::sys::adopt_inherited_fd(exit)?,
        })
    }
}

/// `execguard load-exec-record --fd N`: loads the record and sends its three descriptors over
/// the socket `fd` (or, on failure, the reason, without descriptors), then ends.
pub(crate) fn serve_loader(socket: OwnedFd) -> std::io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let (text, record) = match RecordFds::load() {
        Ok(r) => (String::from(LOADED), Some(r)),
        Err(e) => (e.to_string(), None),
    };
    let raw: Vec<RawFd> = record
        .as_ref()
        .map(|r| r.fds().iter().map(AsRawFd::as_raw_fd).collect())
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
    let received = crate::sys::recv_with_fds::<3>(ours.as_fd(), &mut buf);
    if received.is_err() {
        let _ = child.kill();
    }
    let _ = child.wait();
    let (n, fds) = received.map_err(|e| child_err(e.into()))?;
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    match <[OwnedFd; 3]>::try_from(fds) {
        Ok([map, exec, exit]) if text == LOADED => Ok(RecordFds { map, exec, exit }),
        _ if n == 0 => Err(child_err(std::io::Error::from_raw_os_error(libc::EPIPE))),
        _ => Err(RecordError::Loader(text)),
    }
}

/// The keeper's record: loaded by a child of `exe` (the keeper's own image) unless the config
/// turns it off; without it (the reason logged) every image is looked at through `/proc`.
pub(crate) fn load_if_wanted(setting: ExecRecordSetting, exe: &Path) -> Option<RecordFds> {
    if setting == ExecRecordSetting::Off {
        tracing::info!("exec record off ([worker] exec_record = \"off\"); every image is looked at through /proc");
        return None;
    }
    match load_in_child(exe) {
        Ok(record) => {
            tracing::info!("exec record on: ordinary images are answered from the kernel's record of each exec");
            Some(record)
        }
        Err(e) => {
            tracing::warn!(
                error = %e,
                "no exec record; every image is looked at through /proc (README, \"The exec record\")"
            );
            None
        }
    }
}

/// The worker's record from the descriptors the keeper passed (`--record-fds MAP,EXEC,EXIT`);
/// without it (the reason logged) every image is looked at through `/proc`.
pub(crate) fn open_passed(text: &str) -> Option<ExecRecord> {
    let opened = parse_fds(text)
        .ok_or_else(|| format!("--record-fds {text:?} is not three descriptor numbers"))
        .and_then(|fds| RecordFds::adopt(fds).map_err(|e| format!("the record's descriptors: {e}")))
        .and_then(|fds| ExecRecord::open(fds).map_err(|e| format!("opening the exec record: {e}")));
    match opened {
        Ok(record) => Some(record),
        Err(e) => {
            tracing::warn!(error = %e, "no exec record in this worker; every image is looked at through /proc");
            None
        }
    }
}

/// The comma-separated descriptor numbers of `--record-fds`.
fn parse_fds(text: &str) -> Option<[RawFd; 3]> {
    let mut numbers = text.split(',').map(|n| n.trim().parse::<RawFd>().ok());
    let fds = [numbers.next()??, numbers.next()??, numbers.next()??];
    numbers.next().is_none().then_some(fds)
}

fn attach(
    ebpf: &mut aya::Ebpf,
    (name, category, tracepoint): (&'static str, &'static str, &'static str),
) -> Result<OwnedFd, RecordError> {
    let program_err = |e| RecordError::Program {
        name,
        source: Box::new(e),
    };
    let program: &mut TracePoint = ebpf
        .program_mut(name)
        .ok_or(RecordError::Missing(name))?
        .try_into()
        .map_err(program_err)?;
    program.load().map_err(program_err)?;
    let id = tracepoint_id(category, tracepoint)?;
    let program_fd = program.fd().map_err(program_err)?;
    crate::sys::bpf::attach_tracepoint(program_fd.as_fd(), id)
        .map_err(|(what, source)| RecordError::Attach { name, what, source })
}

fn tracepoint_id(category: &'static str, name: &'static str) -> Result<u64, RecordError> {
    let mut last = std::io::Error::from_raw_os_error(libc::ENOENT);
    for root in TRACEFS {
        match std::fs::read_to_string(format!("{root}/events/{category}/{name}/id")) {
            Ok(text) => {
                return text.trim().parse().map_err(|_| RecordError::TracepointId {
                    category,
                    name,
                    source: std::io::Error::from_raw_os_error(libc::EINVAL),
                })
            }
            Err(e) => last = e,
        }
    }
    Err(RecordError::TracepointId {
        category,
        name,
        source: last,
    })
}

/// The worker's reader of the record. Holds the perf events too: while it can read the map,
/// the programs that keep it true stay attached.
pub(crate) struct ExecRecord {
    map: HashMap<MapData, u32, RawRecord>,
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
        let record = Self {
            map,
            _attached: [fds.exec, fds.exit],
        };
        // No process has pid 0: a lookup that works finds nothing.
        match record.map.get(&0, 0) {
            Err(MapError::KeyNotFound) => Ok(record),
            Ok(_) => Ok(record),
            Err(e) => Err(map_err(e)),
        }
    }

    /// What the latest exec of process `pid` loaded, if the record has it (a thread's id, a
    /// process that has not executed since the record began, an entry the map had no room
    /// for: none).
    pub(crate) fn lookup(&self, pid: u32) -> Option<Loaded> {
        let raw = self.map.get(&pid, 0).ok()?;
        Some(Loaded {
            program: version(&raw.program),
            interpreter: version(&raw.interpreter),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_descriptor_list_has_three_numbers() {
        assert_eq!(parse_fds("5,6,7"), Some([5, 6, 7]));
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

    /// Needs root with CAP_BPF and CAP_PERFMON, and a build with clang; skips otherwise.
    #[test]
    fn the_record_names_what_an_exec_loaded_as_stat_does() {
        let fds = match RecordFds::load() {
            Ok(fds) => fds,
            Err(e) => {
                eprintln!("skipped: the exec record cannot be loaded here: {e}");
                return;
            }
        };
        let record = ExecRecord::open(fds).unwrap();
        let mut child = std::process::Command::new("/bin/sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let loaded = wait_for(&record, child.id());
        let st = nix::sys::stat::stat("/bin/sleep").unwrap();
        let program = loaded.program.unwrap();
        assert_eq!(program, crate::inspect::version_of(&st));
        let interp = loaded
            .interpreter
            .expect("a dynamic program has an interpreter");
        let ld = nix::sys::stat::stat("/lib64/ld-linux-x86-64.so.2").unwrap();
        assert_eq!((interp.dev, interp.ino), (ld.st_dev, ld.st_ino));
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(
            record.lookup(child.id()),
            None,
            "the entry ends with the process"
        );
        // The loader run directly: it is the program, and no interpreter was loaded.
        let mut child = std::process::Command::new("/lib64/ld-linux-x86-64.so.2")
            .args(["/bin/sleep", "5"])
            .spawn()
            .unwrap();
        let loaded = wait_for(&record, child.id());
        let program = loaded.program.unwrap();
        assert_eq!((program.dev, program.ino), (ld.st_dev, ld.st_ino));
        assert_eq!(loaded.interpreter, None);
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// `spawn` returns once the exec closed its close-on-exec pipe, a little before the
    /// tracepoint runs.
    fn wait_for(record: &ExecRecord, pid: u32) -> Loaded {
        for _ in 0..1000 {
            if let Some(l) = record.lookup(pid) {
                return l;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        panic!("no entry for process {pid} after a second");
    }
}
