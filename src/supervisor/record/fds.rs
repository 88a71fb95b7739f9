//! The record's descriptors and names, as every part of the record shares them: the maps'
//! names (which say their layout), the descriptors the keeper holds and passes on, and what
//! goes wrong.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};

use aya::maps::{MapData, MapError};

use crate::inspect::FileVersion;
use crate::sys::bpf::RawFile;

/// The map's name says its layout: a worker of another version (after an upgrade, the programs
/// and map are the first keeper's) refuses a map it cannot read. Change the suffix with
/// `struct record_slot` or `struct exec_record`. At most 15 bytes (`BPF_OBJ_NAME_LEN`).
pub(super) const MAP: &str = "exec_record_v3";
/// The map of guarded pid namespaces (`guarded_pidns_v1` in the object; the same rule), the
/// exec checkpoint's approvals and the ring buffer of killed execs.
pub(super) const GUARDED: &str = "guarded_pidns_v1";
pub(super) const APPROVED: &str = "approved_v1";
pub(super) const KILLS: &str = "kills_v1";
/// `PROC_PID_INIT_INO`: the inode of the initial pid namespace.
pub(crate) const INITIAL_PID_NS: u64 = 0xEFFF_FFFC;

/// Where the kernel publishes its BTF, which names the tracepoints.
pub(super) const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// A file of the record as the inspection compares files.
pub(super) fn version(raw: &RawFile) -> Option<FileVersion> {
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
    #[error("the map passed on is {0:?}, not {MAP:?} of {slots} slots: another version's layout", slots = crate::sys::bpf::RECORD_SLOTS)]
    Layout(String),
    #[error("mapping the record's array into memory: {0}")]
    Mapping(#[source] std::io::Error),
    #[error("running its loader (execguard load-exec-record): {source}")]
    Child { source: std::io::Error },
    #[error("{0}")]
    Loader(String),
}

/// The record's descriptors: the map, the two links that keep its programs attached, and the
/// confirmation's map of approvals and ring buffer of kills (a worker's share), and the map of
/// guarded pid namespaces (the keeper's).
pub(crate) struct RecordFds {
    pub(super) map: OwnedFd,
    pub(super) exec: OwnedFd,
    pub(super) exit: OwnedFd,
    /// The approvals and the kills; None for a record of programs older than the confirmation
    /// (carried across an upgrade).
    pub(super) confirm: Option<[OwnedFd; 2]>,
    /// None for a record of programs older than this map, which record every exec.
    pub(super) guarded: Option<OwnedFd>,
}

impl RecordFds {
    /// The descriptors a worker gets: map, exec link, exit link, and the approvals and kills
    /// when the programs have them.
    pub(crate) fn worker_fds(&self) -> Vec<BorrowedFd<'_>> {
        let mut fds = vec![self.map.as_fd(), self.exec.as_fd(), self.exit.as_fd()];
        fds.extend(self.confirm.iter().flatten().map(AsFd::as_fd));
        fds
    }

    /// The map of the exec checkpoint's approvals, if the programs confirm execs.
    pub(crate) fn approved_fd(&self) -> Option<BorrowedFd<'_>> {
        self.confirm.as_ref().map(|[approved, _]| approved.as_fd())
    }

    /// The map of guarded pid namespaces, if the programs have one.
    pub(crate) fn guarded_fd(&self) -> Option<BorrowedFd<'_>> {
        self.guarded.as_ref().map(AsFd::as_fd)
    }

    /// Copies of [`Self::worker_fds`] without close-on-exec, in that order: for a worker's
    /// command line or the upgrade's `execve`.
    pub(crate) fn inheritable(&self) -> std::io::Result<Vec<OwnedFd>> {
        self.worker_fds()
            .into_iter()
            .map(crate::sys::inheritable_copy)
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

    /// Whether the record's map is this version's. One carried across an upgrade can be
    /// another version's: no worker of this one could read it, while its programs would go on
    /// confirming execs against approvals no worker writes (killing every judged exec), so the
    /// keeper drops such a record, which detaches its programs.
    pub(crate) fn check_layout(&self) -> Result<(), RecordError> {
        let map_err = |e| RecordError::Map(Box::new(e));
        let fd = self
            .map
            .try_clone()
            .map_err(|e| map_err(MapError::from(e)))?;
        check_layout(&MapData::from_fd(fd).map_err(map_err)?)
    }
}

/// Whether `map` is this version's record: its name, which says the layout, and its size.
pub(super) fn check_layout(map: &MapData) -> Result<(), RecordError> {
    let info = map.info().map_err(|e| RecordError::Map(Box::new(e)))?;
    let sized = usize::try_from(info.value_size()).ok() == Some(crate::sys::bpf::SLOT_WORDS * 8)
        && usize::try_from(info.max_entries()).ok() == Some(crate::sys::bpf::RECORD_SLOTS);
    if info.name_as_str() == Some(MAP) && sized {
        Ok(())
    } else {
        Err(RecordError::Layout(
            String::from_utf8_lossy(info.name()).into_owned(),
        ))
    }
}
