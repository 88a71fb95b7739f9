//! The execs the exec record's program found not as judged (the kernel's confirmation,
//! `record::confirmation`): an exec in a container whose execs are all judged at the exec
//! checkpoint that loaded other files than were judged, or that nothing judged, is killed in
//! the kernel's exec path before its first instruction (enforce mode) or only reported (audit
//! mode), and the program tells the worker through a ring buffer. A thread of the worker reads
//! it and writes one `exec_not_as_judged` event per exec.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use aya::maps::{Map, MapData, MapError, RingBuf};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::registry::Shared;
use crate::event::{self, Event};
use crate::sys::bpf::RawKill;
use crate::vocab::{Mode, Outcome, Rule, Stage};

/// Maps the ring buffer (before the worker confines its system calls) and starts the thread
/// that reads it.
pub(super) fn start(shared: Arc<Shared>, fd: OwnedFd) -> Result<(), MapError> {
    // A second descriptor of the same ring buffer to wait on (aya's RingBuf lends only its
    // raw number).
    let wake = fd.try_clone().map_err(MapError::from)?;
    let data = MapData::from_fd(fd)?;
    let ring = RingBuf::try_from(Map::RingBuf(data))?;
    let spawned = std::thread::Builder::new()
        .name("record-kills".into())
        .spawn(move || serve(&shared, ring, &wake));
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the reader of killed execs; kills are not reported");
    }
    Ok(())
}

fn serve(shared: &Shared, mut ring: RingBuf<MapData>, wake: &OwnedFd) {
    loop {
        let mut fds = [PollFd::new(wake.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                tracing::error!(error = %e, "waiting for killed execs; kills are no longer reported");
                return;
            }
        }
        while let Some(item) = ring.next() {
            match RawKill::from_bytes(&item) {
                Some(kill) => report(shared, &kill),
                None => tracing::warn!(bytes = item.len(), "a killed exec's record is short"),
            }
        }
    }
}

/// One event for one killed exec, under the container whose pid namespace it was in.
fn report(shared: &Shared, kill: &RawKill) {
    let container = shared
        .containers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .filter_map(std::sync::Weak::upgrade)
        .find(|c| {
            c.pid_ns
                .is_some_and(|(_, ino)| ino == u64::from(kill.pidns))
        });
    let path = event::lossy(kill.filename());
    let ran = format!(
        "inode {} of device {}:{}, {} bytes",
        kill.ran.ino,
        kill.ran.dev >> 20,
        kill.ran.dev & 0xf_ffff,
        kill.ran.size
    );
    let outcome = if kill.killed != 0 {
        "killed before its first instruction"
    } else {
        "audit mode: it runs"
    };
    let interp = if kill.ran_interp.dev == 0 {
        "no interpreter".to_owned()
    } else {
        format!(
            "interpreter inode {}, {} bytes",
            kill.ran_interp.ino, kill.ran_interp.size
        )
    };
    let reason = if kill.judged == 0 {
        format!("{path} ran ({ran}; {interp}), but its exec checkpoint judged nothing; {outcome}")
    } else {
        let judged_interp = if kill.approved.has_interp == 0 {
            "no interpreter".to_owned()
        } else {
            format!("an interpreter of {} bytes", kill.approved.interp_size)
        };
        format!(
            "{path} ran ({ran}; {interp}), but its exec checkpoint judged inode {} ({} bytes; {judged_interp}): a file was swapped after it was judged; {outcome}",
            kill.approved.ino, kill.approved.size
        )
    };
    let rule = Rule::ExecNotAsJudged;
    let (id, mode) = match &container {
        Some(c) => {
            c.counters.events.fetch_add(1, Ordering::Relaxed);
            if kill.killed != 0 {
                c.counters.denials.fetch_add(1, Ordering::Relaxed);
            }
            (c.id.clone(), c.settings.mode)
        }
        None => (String::new(), Mode::Enforce),
    };
    let ev = Event {
        time: event::now_rfc3339(),
        event: rule.name(),
        description: rule.description(),
        category: rule.category(),
        method: rule.method(),
        importance: shared.config.rules.importance(rule),
        mode,
        action: if kill.killed != 0 {
            Outcome::Denied
        } else {
            Outcome::Allowed
        },
        repeated: None,
        stage: Stage::Record,
        errno: None,
        allow_rule: None,
        reason,
        container: event::ContainerInfo { id },
        process: event::ProcessInfo { pid: kill.tgid },
        exec: Some(event::ExecInfo {
            syscall: crate::vocab::Syscall::Execve,
            // The record does not keep the exec's ABI: the machine's own.
            abi: crate::traps::ABIS[0].abi,
            path: path.clone(),
            resolved: None,
            argv: Vec::new(),
            argv_truncated: false,
        }),
        syscall: None,
        loader: None,
    };
    if ev.importance >= shared.config.events.min_importance {
        super::report::write(shared, &ev);
    }
    tracing::warn!(pid = kill.tgid, %path, killed = kill.killed != 0, "exec not as judged at its exec checkpoint");
}
