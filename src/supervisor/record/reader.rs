//! The worker's side of the exec record: reading what each exec loaded, and writing the exec
//! checkpoint's approvals.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{fence, Ordering};

use aya::maps::{HashMap, Map, MapData, MapError};

use super::fds::{check_layout, version, RecordError, RecordFds};
use crate::inspect::image::Loaded;
use crate::sys::bpf::{
    RawApproval, RawRecord, RECORD_SLOTS, SLOT_OWNER, SLOT_RECORD, SLOT_SEQ, SLOT_WORDS,
};
use crate::sys::ReadOnlyWords;

/// The worker's reader of the record. Holds the links too: while it can read the map,
/// the programs that keep it true stay attached.
pub(crate) struct ExecRecord {
    /// The record's array, mapped: read without a system call.
    slots: ReadOnlyWords,
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
        check_layout(&data)?;
        let slots = ReadOnlyWords::map(&data.fd().as_fd(), RECORD_SLOTS * SLOT_WORDS)
            .map_err(RecordError::Mapping)?;
        let (approvals, kills) = match fds.confirm {
            Some([approved, kills]) => {
                let data = MapData::from_fd(approved).map_err(map_err)?;
                let approvals = HashMap::try_from(Map::HashMap(data)).map_err(map_err)?;
                (Some(std::sync::Mutex::new(approvals)), Some(kills))
            }
            None => (None, None),
        };
        Ok(Self {
            slots,
            approvals,
            kills,
            _attached: [fds.exec, fds.exit],
        })
    }

    /// Tells the exec program that the exec thread `tid` is calling was judged to run `file`:
    /// in a namespace whose execs are confirmed, an exec that runs anything else is killed.
    pub(crate) fn approve(
        &self,
        tid: u32,
        runs: Option<&crate::inspect::Runs>,
    ) -> Result<(), MapError> {
        let Some(approvals) = &self.approvals else {
            return Ok(());
        };
        let nsec = |t: (i64, i64)| u32::try_from(t.1).unwrap_or(u32::MAX);
        let approval = match runs {
            Some(runs) => {
                let interp = runs.interpreter.as_ref();
                RawApproval {
                    ino: runs.program.ino,
                    size: runs.program.size,
                    ctime_sec: runs.program.ctime.0,
                    ctime_nsec: nsec(runs.program.ctime),
                    has_interp: u32::from(interp.is_some()),
                    interp_size: interp.map_or(0, |i| i.size),
                    interp_ctime_sec: interp.map_or(0, |i| i.ctime.0),
                    interp_ctime_nsec: interp.map_or(0, |i| nsec(i.ctime)),
                    pad: 0,
                }
            }
            // Nothing was named: no file has a negative size, so no exec matches.
            None => RawApproval {
                size: -1,
                ..RawApproval::default()
            },
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
    /// process that has not executed since the record began, one whose slot another process
    /// took: none).
    pub(crate) fn lookup(&self, pid: u32) -> Option<Loaded> {
        let raw = read_slot(&self.slots, pid)?;
        Some(Loaded {
            program: version(&raw.program),
            interpreter: version(&raw.interpreter),
            exec_time: raw.seq,
        })
    }
}

/// The entry of process `pid` in its slot, if the slot holds one of its exec and no program
/// wrote the slot while it was read (a seqlock's read side: the slot's version, even, the
/// same before and after the copy). Otherwise none, and the image is looked at through
/// `/proc`: another process whose id shares the slot took it, or was taking it.
pub(super) fn read_slot(slots: &ReadOnlyWords, pid: u32) -> Option<RawRecord> {
    let base = (pid as usize % RECORD_SLOTS) * SLOT_WORDS;
    let seq = slots.load(base + SLOT_SEQ)?;
    if seq % 2 == 1 {
        return None;
    }
    // The copy is read after the version, and before it is read again (the programs take
    // and leave a slot with full barriers).
    fence(Ordering::Acquire);
    let owner = slots.load(base + SLOT_OWNER)?;
    let mut words = [0u64; RawRecord::WORDS];
    for (i, w) in words.iter_mut().enumerate() {
        *w = slots.load(base + SLOT_RECORD + i)?;
    }
    fence(Ordering::Acquire);
    let unchanged = slots.load(base + SLOT_SEQ)? == seq;
    (unchanged && owner == u64::from(pid) && pid != 0).then(|| RawRecord::from_words(&words))
}
