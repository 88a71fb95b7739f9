//! The worker's side of the exec record: reading what each exec loaded, and writing the exec
//! checkpoint's approvals.

use std::os::fd::OwnedFd;

use aya::maps::{HashMap, Map, MapData, MapError};

use super::fds::{version, RecordError, RecordFds, MAP};
use crate::inspect::image::Loaded;
use crate::sys::bpf::{RawApproval, RawRecord};

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
