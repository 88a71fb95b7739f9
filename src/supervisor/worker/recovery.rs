//! What a new worker does first on each notify fd: answer what a dead worker left.
//!
//! The notification in the fd's slot, if still pending, is handled again (its event is not
//! written twice). A worker can also die after the kernel handed it a notification and before
//! it recorded it (the exit of the receive call is a point where it may be preempted and
//! killed), or while recording it: such a notification is found by probing the ids from the
//! last recorded one on (they count up; a torn record holds the new id under the old state).
//! Its content is still there: its task waits in the trapped call, and
//! `/proc/TID/syscall` shows the call, its arguments and the instruction pointer. Once what is
//! still queued on the fd has been served, a task of the container that waits in a trapped call
//! can only be the lost notification's; when exactly one does, the notification is rebuilt and
//! handled like any other. Otherwise it is answered by the mode's fail-safe rule.

use std::os::fd::AsFd;

use super::listener::{Answering, Listener, ListenerState};
use super::registry::{Container, Shared};
use super::report;
use super::serve::{drain, handle};
use super::target::trapped_arch;
use crate::phases::PhaseClock;
use crate::policy;
use crate::supervisor::slots::SlotState;
use crate::sys::{SeccompData, SeccompNotif};
use crate::vocab::Stage;

/// Notifications after the last recorded one that a new worker checks for (and that one).
const PROBES: u64 = 4;
/// Levels of nested pid namespaces followed up to the container's.
const MAX_NS_DEPTH: usize = 32;

pub(super) fn recover(l: &Listener, st: &mut ListenerState, shared: &Shared) {
    let Some((state, notif)) = shared.slots.read(l.slot) else {
        return;
    };
    if state != SlotState::Empty && l.notify.id_valid(notif.id) {
        tracing::warn!(container = %l.container.id, id = notif.id, "answering a notification a dead worker left");
        st.suppress_events = state == SlotState::EventWritten;
        handle(l, st, shared, &notif);
        st.suppress_events = false;
    }
    shared.slots.clear(l.slot);
    // From the slot's own id: a worker that died while recording left that id under the
    // previous state (a torn record), and the notification is still pending.
    let lost: Vec<u64> = (0..=PROBES)
        .map(|k| notif.id.wrapping_add(k))
        .filter(|id| l.notify.id_valid(*id))
        .collect();
    if lost.is_empty() {
        return;
    }
    // Serve what was queued but never received: afterwards only the lost notifications'
    // tasks are waiting in a trapped call (unless new ones arrive, which makes it ambiguous).
    drain(l, st, shared);
    let waiting = if lost.len() == 1 {
        waiting_tasks(&l.container)
    } else {
        Vec::new()
    };
    for id in lost {
        if !l.notify.id_valid(id) {
            continue;
        }
        if let [task] = waiting.as_slice() {
            tracing::warn!(container = %l.container.id, id, pid = task.pid, "answering an unrecorded notification a dead worker left, rebuilt from its task");
            handle(l, st, shared, &SeccompNotif { id, ..*task });
            continue;
        }
        tracing::warn!(container = %l.container.id, id, waiting = waiting.len(), "answering an unrecorded notification a dead worker left");
        let verdict = policy::on_unknown(&l.container.settings);
        let unknown = SeccompNotif {
            id,
            ..crate::sys::empty_notif()
        };
        let mut cx = Answering {
            l,
            st: &mut *st,
            shared,
            notif: unknown,
            clock: PhaseClock::start(),
        };
        if let Some((rule, importance)) = verdict.event {
            let mut ev = report::base_event(
                &l.container,
                &unknown,
                rule,
                importance,
                verdict.action,
                Stage::Exec,
            );
            ev.reason =
                "a notification received by a worker that died before recording it".to_owned();
            report::emit(&mut cx, ev);
        }
        cx.respond(verdict.action);
    }
}

/// The container's tasks that wait in a call execguard traps, as notifications (id 0).
fn waiting_tasks(c: &Container) -> Vec<SeccompNotif> {
    let Some(ns) = c.pid_ns else {
        return Vec::new();
    };
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let Some(tid) = t.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(n) = waiting_in_trapped_call(tid) {
                if in_pid_ns_tree(tid, ns) {
                    found.push(n);
                }
            }
        }
    }
    found
}

/// Task `tid`'s current system call, when it is one execguard traps and the task sleeps in it.
fn waiting_in_trapped_call(tid: u32) -> Option<SeccompNotif> {
    let text = std::fs::read_to_string(format!("/proc/{tid}/syscall")).ok()?;
    let data = parse_syscall(&text)?;
    let arch = trapped_arch(data.nr, data.args)?;
    // Waiting for the supervisor's answer is an interruptible sleep.
    let stat = std::fs::read_to_string(format!("/proc/{tid}/stat")).ok()?;
    if stat.rsplit_once(')')?.1.split_whitespace().next()? != "S" {
        return None;
    }
    Some(SeccompNotif {
        id: 0,
        pid: tid,
        flags: 0,
        data: SeccompData { arch, ..data },
    })
}

/// `/proc/TID/syscall`: `NR ARG1..ARG6 SP PC` of a task in a system call (`running` or `-1 ...`
/// otherwise). The architecture is left 0.
fn parse_syscall(text: &str) -> Option<SeccompData> {
    let mut f = text.split_whitespace();
    let nr: i32 = f.next()?.parse().ok()?;
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
    let mut args = [0u64; 6];
    for a in &mut args {
        *a = hex(f.next()?)?;
    }
    let _sp = f.next()?;
    let pc = hex(f.next()?)?;
    Some(SeccompData {
        nr,
        arch: 0,
        instruction_pointer: pc,
        args,
    })
}

/// Whether task `tid` is in the pid namespace `ns` or one nested in it.
fn in_pid_ns_tree(tid: u32, ns: (u64, u64)) -> bool {
    let Ok(mut fd) = nix::fcntl::open(
        format!("/proc/{tid}/ns/pid").as_str(),
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) else {
        return false;
    };
    for _ in 0..MAX_NS_DEPTH {
        match nix::sys::stat::fstat(fd.as_fd()) {
            Ok(st) if (st.st_dev, st.st_ino) == ns => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
        match crate::sys::pid_ns_parent(&fd) {
            Ok(parent) => fd = parent,
            Err(_) => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiting_tasks_call_is_read_back() {
        let d = parse_syscall(
            "158 0x1002 0x7f46035c1740 0x0 0x22 0xffffffff 0x0 0x7ffd01c0da10 0x7f46037d560e\n",
        )
        .unwrap();
        assert_eq!(d.nr, 158);
        assert_eq!(d.args, [0x1002, 0x7f46_035c_1740, 0, 0x22, 0xffff_ffff, 0]);
        assert_eq!(d.instruction_pointer, 0x7f46_037d_560e);
        assert_eq!(parse_syscall("running\n"), None);
        assert_eq!(parse_syscall("-1 0x7ffd01c0da10 0x7f46037d560e\n"), None);
    }

    #[test]
    fn this_process_is_in_its_own_pid_namespace_tree() {
        let st = nix::sys::stat::stat("/proc/self/ns/pid").unwrap();
        assert!(in_pid_ns_tree(std::process::id(), (st.st_dev, st.st_ino)));
        assert!(!in_pid_ns_tree(std::process::id(), (0, 1)));
    }
}
