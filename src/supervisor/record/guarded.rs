//! The keeper's side of the exec record: the map of guarded pid namespaces, and how each
//! container's execs are confirmed.

use aya::maps::{HashMap, Map, MapData, MapError};

use super::fds::{RecordFds, INITIAL_PID_NS};

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
    /// The approvals can be written by a process with the worker's privileges.
    confirm: bool,
}

/// Whether this process (the keeper, its capabilities reduced as the worker's are: no
/// `CAP_BPF`) can write the approvals map; a kernel before 6.5 with
/// `kernel.unprivileged_bpf_disabled` refuses it. Tried with a thread id no thread has.
fn approvals_writable(record: &RecordFds) -> bool {
    let Some(fd) = record.approved_fd() else {
        return false;
    };
    let opened = fd
        .try_clone_to_owned()
        .map_err(MapError::from)
        .and_then(MapData::from_fd)
        .and_then(|data| {
            HashMap::<_, u32, crate::sys::bpf::RawApproval>::try_from(Map::HashMap(data))
        });
    let tried = opened.and_then(|mut map| {
        map.insert(u32::MAX, crate::sys::bpf::RawApproval::default(), 0)?;
        map.remove(&u32::MAX)
    });
    match tried {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "the exec checkpoint's approvals cannot be written here; execs are not confirmed by the kernel");
            false
        }
    }
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
                confirm: approvals_writable(record),
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
        // Confirmed only where the worker can write the approvals: else every exec would be
        // one that nothing judged.
        let flags = if self.confirm {
            confirmation(metadata, annotated)
        } else {
            0
        };
        let inum =
            crate::supervisor::privilege::with_effective(caps::Capability::CAP_SYS_PTRACE, || {
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
