//! The exec checkpoint (with `[detect] exec_checkpoint`): the `execve`/`execveat` call itself.
//! The path and argv are read from the task's memory and the file resolved in its root; a
//! denial fails the exec with the configured errno. Findings allowed here are remembered so
//! that the image checkpoint, which sees the same image, does not log them again.

use super::listener::{Answering, ListenerState, STATE_ENTRIES};
use super::target::{Addresses, Target};
use super::{report, tell};
use crate::event;
use crate::inspect::{self, resolve::FsView, ExecArgs, Inspection};
use crate::phases::Phase;
use crate::policy::{self, Action, Allow};
use crate::traps;
use crate::vocab::{Rule, Stage};

/// The `[[allow]]` rules' judgement of a finding, at the exec, on the program as the task's
/// root names it now; `None` when no rule could exempt it.
fn judge_exemption_now(
    notif: &crate::sys::SeccompNotif,
    f: &inspect::Finding,
    s: &policy::Settings,
) -> Option<inspect::allow::Judgement> {
    if !policy::allow::may_exempt(f, s) {
        return None;
    }
    let inv = &f.loader.as_ref()?.invocation;
    let rules: Vec<_> = policy::allow::candidates(&s.allow, inv).collect();
    let judgement = match FsView::of_task(notif.pid) {
        Ok(view) => inspect::allow::judge_program(
            &view,
            inv.program.as_deref()?,
            &rules,
            &mut inspect::FileCache::default(),
        ),
        Err(e) => inspect::allow::Judgement::NotExempt(format!("the task's root: {e}")),
    };
    Some(judgement)
}

pub(super) fn handle(cx: &mut Answering, mut req: inspect::ExecRequest, addrs: Addresses) {
    let l = cx.l;
    let c = &*l.container;
    let notif = cx.notif;
    let mut target = Target::new(&*l.notify, &notif, req.abi, addrs.argv, addrs.envp);
    // Inspect.
    let result = (|| -> Result<Inspection, inspect::InspectError> {
        req.path = target.read_path(addrs.path)?;
        cx.clock.lap(Phase::Read);
        let view =
            FsView::of_task(notif.pid).map_err(|errno| inspect::InspectError::ReadTarget {
                what: "filesystem view",
                errno,
            })?;
        // One check covers the path just read and /proc/TID just opened: both are the task's
        // own only while the notification is pending.
        target.check_valid()?;
        inspect::inspect(
            &req,
            &view,
            &mut target,
            &c.loaders,
            &mut cx.st.cache,
            &mut cx.clock,
        )
    })();
    // Decide: a finding an `[[allow]]` rule may exempt is judged at the image checkpoint, on
    // the file the loader maps (which writes the event), whatever this path names now. Where
    // that checkpoint may never come (arm64: a glibc loader before 2.34 makes no
    // `set_tid_address` call), the rules are judged here, on the program the path names now.
    let finding = result.as_ref().ok().and_then(|i| i.finding.as_ref());
    let judged_here = finding
        .filter(|_| !traps::IMAGE_CHECKPOINT_ALWAYS_FIRES)
        .and_then(|f| judge_exemption_now(&notif, f, &c.settings));
    let allow = match &judged_here {
        Some(j) => Allow::Judged(j),
        None => Allow::at_exec(finding, &c.settings),
    };
    let decision = policy::decide(
        result.as_ref().map(|i| i.finding.as_ref()),
        allow,
        &c.settings,
    );
    cx.clock.lap(Phase::Answer);
    let verdict = decision.verdict;
    // Record.
    if let Some((rule, importance)) = verdict.event {
        let argv = target.argv().unwrap_or_default();
        if verdict.action == Action::Continue && finding.is_some() {
            // The image checkpoint will see the same image; it need not log it again.
            remember_allowed(cx.st, notif.pid, rule);
        }
        let mut ev = report::base_event(c, &notif, rule, importance, verdict.action, Stage::Exec);
        ev.reason = decision.reason;
        ev.exec = Some(event::ExecInfo {
            syscall: req.syscall,
            abi: req.abi,
            path: event::lossy(&req.path),
            resolved: result
                .as_ref()
                .ok()
                .and_then(|i| i.resolved.as_deref())
                .map(event::lossy),
            argv: argv.items.iter().map(|a| event::lossy(a)).collect(),
            argv_truncated: argv.truncated,
        });
        ev.loader = finding
            .and_then(|f| f.loader.as_ref())
            .map(report::loader_info);
        report::emit(cx, ev);
        if let Some(f) = finding {
            let told = tell::Told {
                rule,
                importance,
                outcome: verdict.action.outcome(),
                exe: &req.path,
                loader: f.loader.as_ref(),
            };
            if let Some(line) = tell::line_if_due(cx.shared, c.settings.mode, &told) {
                tell::write_if_pending(cx, &line);
            }
        }
    }
    // Answer: what is let through is approved in the kernel's record first.
    if verdict.action == Action::Continue {
        approve(cx, result.as_ref().ok());
    }
    cx.respond(verdict.action);
}

/// Tells the kernel's exec record, before the exec is let go on, which files it was judged to
/// load: where the container's execs are confirmed, an exec that then loads others (swapped in
/// between this look and the kernel's open) is killed before its first instruction. Written for
/// every exec let through in a container of its own pid namespace (the record covers no
/// other); one this could not name gets an approval nothing matches, so no earlier one of the
/// thread can stand for it.
fn approve(cx: &Answering, inspection: Option<&Inspection>) {
    let Ok(record) = &cx.shared.record else {
        return;
    };
    if cx
        .container()
        .pid_ns
        .is_some_and(|(_, ino)| ino == crate::supervisor::record::INITIAL_PID_NS)
    {
        return;
    }
    let runs = inspection.and_then(|i| i.runs);
    if let Err(e) = record.approve(cx.notif.pid, runs.as_ref()) {
        tracing::warn!(pid = cx.notif.pid, error = %e, "cannot write the exec's approval; where execs are confirmed, it is killed");
    }
}

/// Notes a finding allowed at the exec of task `tid`, by the pid its new image will have.
fn remember_allowed(st: &mut ListenerState, tid: u32, rule: Rule) {
    let Some(tgid) = inspect::tgid_of(tid) else {
        return;
    };
    let Some(start) = inspect::start_time_of(tgid) else {
        return;
    };
    if st.allowed_at_exec.len() >= STATE_ENTRIES {
        st.allowed_at_exec.clear();
    }
    st.allowed_at_exec.insert(tgid, (rule, start));
}
