//! The exec checkpoint (with `[detect] exec_checkpoint`): the `execve`/`execveat` call itself.
//! The path and argv are read from the task's memory and the file resolved in its root; a
//! denial fails the exec with the configured errno. Findings allowed here are remembered so
//! that the image checkpoint, which sees the same image, does not log them again.

use super::registry::Shared;
use super::serve::{respond, Listener, ListenerState, STATE_ENTRIES};
use super::target::Target;
use super::{report, tell};
use crate::event;
use crate::inspect::{self, resolve::FsView, ExecArgs, Inspection};
use crate::phases::{Phase, PhaseClock};
use crate::policy::{self, Action};
use crate::sys::SeccompNotif;
use crate::vocab::{Rule, Stage};

/// Where the exec's path, argv and envp are in the task's memory.
pub(super) struct Addresses {
    pub path: u64,
    pub argv: u64,
    pub envp: u64,
}

pub(super) fn handle(
    l: &Listener,
    st: &mut ListenerState,
    shared: &Shared,
    notif: &SeccompNotif,
    mut req: inspect::ExecRequest,
    addrs: Addresses,
    clock: &mut PhaseClock,
) {
    let c = &l.container;
    let mut target = Target::new(&l.notify, notif, req.abi, addrs.argv, addrs.envp);
    let result = (|| -> Result<Inspection, inspect::InspectError> {
        req.path = target.read_path(addrs.path)?;
        clock.lap(Phase::Read);
        let view =
            FsView::of_task(notif.pid).map_err(|errno| inspect::InspectError::ReadTarget {
                what: "filesystem view",
                errno,
            })?;
        // One check covers the path just read and /proc/TID just opened: both are the task's
        // own only while the notification is pending.
        target.check_valid()?;
        inspect::inspect(&req, &view, &mut target, &c.loaders, &mut st.cache, clock)
    })();
    let (verdict, inspection, error) = match result {
        Ok(i) => (
            policy::decide(i.finding.as_ref().map(|f| f.rule), &c.settings),
            Some(i),
            None,
        ),
        Err(e) => (policy::on_error(&e, &c.settings), None, Some(e)),
    };
    clock.lap(Phase::Answer);
    let finding = inspection.as_ref().and_then(|i| i.finding.as_ref());
    if finding.is_some_and(|f| policy::allow::may_exempt(f, &c.settings)) {
        // An `[[allow]]` rule may exempt it: the image checkpoint judges the file the loader
        // maps (and writes the event), whatever this path names now.
        approve(shared, c, notif, inspection.as_ref());
        respond(l, notif.id, Action::Continue, clock);
        return;
    }
    if let Some((rule, importance)) = verdict.event {
        let argv = target.argv().unwrap_or_default();
        if verdict.action == Action::Continue && finding.is_some() {
            // The image checkpoint will see the same image; it need not log it again.
            remember_allowed(st, notif.pid, rule);
        }
        let mut ev = report::base_event(c, notif, rule, importance, verdict.action, Stage::Exec);
        ev.reason = match (finding, &error) {
            (Some(f), _) => f.reason.clone(),
            (None, Some(e)) => e.to_string(),
            (None, None) => String::new(),
        };
        ev.exec = Some(event::ExecInfo {
            syscall: req.syscall,
            abi: req.abi,
            path: event::lossy(&req.path),
            resolved: inspection
                .as_ref()
                .and_then(|i| i.resolved.as_deref())
                .map(event::lossy),
            argv: argv.items.iter().map(|a| event::lossy(a)).collect(),
            argv_truncated: argv.truncated,
        });
        ev.loader = finding
            .and_then(|f| f.loader.as_ref())
            .map(report::loader_info);
        report::emit(shared, l, st, notif, ev, clock);
        if let Some(f) = finding {
            let told = tell::Told {
                rule,
                importance,
                outcome: verdict.action.outcome(),
                exe: &req.path,
                loader: f.loader.as_ref(),
            };
            if let Some(line) = tell::line_if_due(shared, c.settings.mode, &told) {
                tell::write_if_pending(l, st, notif, &line);
            }
        }
    }
    if verdict.action == Action::Continue {
        approve(shared, c, notif, inspection.as_ref());
    }
    respond(l, notif.id, verdict.action, clock);
}

/// Tells the kernel's exec record, before the exec is let go on, which files it was judged to
/// load: where the container's execs are confirmed, an exec that then loads others (swapped in
/// between this look and the kernel's open) is killed before its first instruction. Written for
/// every exec let through in a container of its own pid namespace (the record covers no
/// other); one this could not name gets an approval nothing matches, so no earlier one of the
/// thread can stand for it.
fn approve(
    shared: &Shared,
    c: &super::registry::Container,
    notif: &SeccompNotif,
    inspection: Option<&Inspection>,
) {
    let Ok(record) = &shared.record else {
        return;
    };
    if c.pid_ns
        .is_some_and(|(_, ino)| ino == super::record::INITIAL_PID_NS)
    {
        return;
    }
    let runs = inspection.and_then(|i| i.runs);
    if let Err(e) = record.approve(notif.pid, runs.as_ref()) {
        tracing::warn!(pid = notif.pid, error = %e, "cannot write the exec's approval; where execs are confirmed, it is killed");
    }
}

/// Notes a finding allowed at the exec of task `tid`, by the pid its new image will have.
fn remember_allowed(st: &mut ListenerState, tid: u32, rule: Rule) {
    let Some(tgid) = tgid_of(tid) else {
        return;
    };
    let Some(start) = start_time_of(tgid) else {
        return;
    };
    if st.allowed_at_exec.len() >= STATE_ENTRIES {
        st.allowed_at_exec.clear();
    }
    st.allowed_at_exec.insert(tgid, (rule, start));
}

/// A process's start time (clock ticks since boot): with the pid, an identity that a reused
/// pid does not share.
pub(super) fn start_time_of(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    crate::inspect::proc_stat_field(&stat, 22)
}

/// The thread-group id of a task (the pid its process has after an exec).
fn tgid_of(tid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}
