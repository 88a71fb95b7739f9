//! The image checkpoint, the one every exec passes: a new image's first thread-pointer setup.
//! A loader found running a program here, or a binary whose interpreter is not one of the
//! container's loaders, is judged like one found at the exec; in enforce mode the process is
//! killed (it has run none of its own code yet) and the call fails.

use std::sync::atomic::Ordering;

use super::listener::{Answering, STATE_ENTRIES};
use super::{report, tell};
use crate::inspect::allow::{self, Judgement};
use crate::inspect::file::LoaderKind;
use crate::inspect::image::{self, ImageInspection, Loaded};
use crate::inspect::{preload, Finding, InspectError};
use crate::phases::Phase;
use crate::policy::{self, Action, Allow, Decision};
use crate::vocab::{Abi, Mode, Rule, Stage, Syscall};

pub(super) fn handle(cx: &mut Answering, abi: Abi, syscall: Syscall) {
    // Inspect: the image, then (for an ordinary dynamic program) its preloads.
    let img = inspect_image(cx, abi).and_then(|(img, recorded)| {
        // The exec checkpoint's note of this pid is consumed by every image it inspected.
        let allowed_at_exec = take_allowed_at_exec(cx);
        judge_preloads(cx, abi, img, recorded.as_ref()).map(|img| (img, allowed_at_exec))
    });
    let (img, allowed_at_exec) = match img {
        Ok(found) => found,
        Err(e) => {
            let decision = policy::decide(Err(&e), Allow::NoRule, &cx.container().settings);
            if let Some((rule, importance)) = decision.verdict.event {
                let mut ev = base_event(cx, rule, importance, decision.verdict.action);
                ev.reason = decision.reason;
                report::emit(cx, ev);
            }
            deny_or_continue(cx, decision.verdict.action, None);
            return;
        }
    };
    let Some(finding) = img.finding.as_ref() else {
        cx.respond(Action::Continue);
        return;
    };
    // Later thread-pointer setups of the same image (a Go runtime's threads) were judged.
    if let Some(token) = img.token {
        let judged = &mut cx.st.judged_images;
        if judged.len() >= STATE_ENTRIES {
            judged.clear();
        }
        if !judged.insert((cx.notif.pid, token)) {
            cx.respond(Action::Continue);
            return;
        }
    }
    // Decide.
    let judgement = judge_exemption(cx, abi, finding);
    let decision = policy::decide(
        Ok(Some(finding)),
        Allow::judged(judgement.as_ref()),
        &cx.container().settings,
    );
    let line = told_line(cx, &decision, &img, finding);
    let seen_at_exec = allowed_at_exec.is_some_and(|(rule, start)| {
        rule == finding.rule && crate::inspect::start_time_of(cx.notif.pid) == Some(start)
    });
    cx.clock.lap(Phase::Answer);
    // Record (unless the exec checkpoint logged the same run), then answer.
    let verdict = decision.verdict;
    if let Some((rule, importance)) = verdict.event {
        if !seen_at_exec || verdict.action != Action::Continue {
            let mut ev = base_event(cx, rule, importance, verdict.action);
            ev.reason = decision.reason;
            ev.allow_rule = decision.allow_rule;
            ev.exec = Some(crate::event::ExecInfo {
                syscall,
                abi,
                path: crate::event::lossy(&img.exe),
                resolved: None,
                argv: img
                    .argv
                    .items
                    .iter()
                    .map(|a| crate::event::lossy(a))
                    .collect(),
                argv_truncated: img.argv.truncated,
            });
            ev.loader = finding.loader.as_ref().map(report::loader_info);
            report::emit(cx, ev);
        }
    }
    deny_or_continue(cx, verdict.action, line.as_deref());
}

/// What the image is: a loader running a program, a binary with a foreign interpreter, or
/// nothing to judge; with what the exec record has of it.
fn inspect_image(
    cx: &mut Answering,
    abi: Abi,
) -> Result<(ImageInspection, Option<Loaded>), InspectError> {
    let l = cx.l;
    let notif = cx.notif;
    let valid = || l.notify.id_valid(notif.id);
    let recorded = cx
        .shared
        .record
        .as_ref()
        .ok()
        .and_then(|r| r.lookup(notif.pid));
    let img = image::inspect_image(
        notif.pid,
        abi,
        notif.data.instruction_pointer,
        &l.container.loaders,
        &mut cx.st.cache,
        recorded.as_ref(),
        &valid,
        &mut cx.clock,
    )?;
    if img.by_record {
        l.counters.images_by_record.fetch_add(1, Ordering::Relaxed);
    }
    Ok((img, recorded))
}

/// The findings allowed at this pid's exec (see `ListenerState::allowed_at_exec`), taken.
fn take_allowed_at_exec(cx: &mut Answering) -> Option<(Rule, u64)> {
    if cx.st.allowed_at_exec.is_empty() {
        return None;
    }
    cx.st.allowed_at_exec.remove(&cx.notif.pid)
}

/// An ordinary dynamic program's preloads, where they are judged: a finding of their own when
/// the container can change one. Gone, or an environment that could not be read: an error, the
/// same fail-safe rule as any image that could not be inspected.
fn judge_preloads(
    cx: &Answering,
    abi: Abi,
    img: ImageInspection,
    recorded: Option<&Loaded>,
) -> Result<ImageInspection, InspectError> {
    if img.finding.is_some() || !img.dynamic || !preloads_judged(cx) {
        return Ok(img);
    }
    let notif = cx.notif;
    let valid = || cx.l.notify.id_valid(notif.id);
    let token = recorded.map(image::record_token);
    Ok(preload::judge(notif.pid, abi, token, &valid)?.unwrap_or(img))
}

/// Whether an ordinary program's preloads are judged: only while a finding would be written or
/// denied (`[rules] preload_from_writable = "info"` turns the look, and its cost, off).
fn preloads_judged(cx: &Answering) -> bool {
    let s = &cx.container().settings;
    let min_event = cx.shared.config.events.min_importance;
    let importance = s.rules.importance(Rule::PreloadFromWritable);
    match s.mode {
        Mode::Off => false,
        Mode::Audit => importance >= min_event,
        Mode::Enforce => importance >= min_event || importance >= s.enforce.min_importance,
    }
}

/// What the `[[allow]]` rules say of a loader run, when one could apply: judged on the file
/// the loader mapped as its program.
fn judge_exemption(cx: &mut Answering, abi: Abi, finding: &Finding) -> Option<Judgement> {
    let l = cx.l;
    let settings = &l.container.settings;
    if !policy::allow::may_exempt(finding, settings) {
        return None;
    }
    let loader = finding.loader.as_ref()?;
    if loader.kind != LoaderKind::Glibc {
        return Some(Judgement::NotExempt(
            "only a glibc loader's runs can be exempted (its main program can be told apart)"
                .to_owned(),
        ));
    }
    let program = loader.invocation.program.as_deref()?;
    let rules: Vec<_> = policy::allow::candidates(&settings.allow, &loader.invocation).collect();
    let notif = cx.notif;
    let valid = || l.notify.id_valid(notif.id);
    Some(
        allow::judge_image(notif.pid, abi, program, &rules, &mut cx.st.cache, &valid)
            .unwrap_or_else(|e| Judgement::NotExempt(e.to_string())),
    )
}

/// The line the process is told on its standard error, if one is due (never for an exempted
/// run).
fn told_line(
    cx: &Answering,
    decision: &Decision,
    img: &ImageInspection,
    finding: &Finding,
) -> Option<String> {
    let (rule, importance) = decision.verdict.event?;
    if decision.allow_rule.is_some() {
        return None;
    }
    let told = tell::Told {
        rule,
        importance,
        outcome: decision.verdict.action.outcome(),
        exe: &img.exe,
        loader: finding.loader.as_ref(),
    };
    tell::line_if_due(cx.shared, cx.container().settings.mode, &told)
}

fn base_event(
    cx: &Answering,
    rule: Rule,
    importance: crate::vocab::Importance,
    action: Action,
) -> crate::event::Event {
    report::base_event(
        cx.container(),
        &cx.notif,
        rule,
        importance,
        action,
        Stage::Image,
    )
}

/// At the image checkpoint a denial also kills the process: a loader that ignored the failed
/// call must not go on to run the program. `line` goes to its standard error first.
fn deny_or_continue(cx: &mut Answering, action: Action, line: Option<&str>) {
    if let (Action::Continue, Some(line)) = (action, line) {
        tell::write_if_pending(cx, line);
    }
    if let Action::Deny(_) = action {
        let pid = cx.notif.pid;
        match crate::sys::PidFd::open(pid) {
            // The pidfd names the notifying process only if the notification is still pending.
            Ok(pidfd) if cx.pending() => {
                if let Some(line) = line {
                    tell::write(cx.st, &pidfd, pid, line);
                }
                if let Err(e) = pidfd.kill() {
                    tracing::warn!(pid, error = %e, "cannot kill a denied image");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(pid, error = %e, "no pidfd for a denied image"),
        }
    }
    cx.respond(action);
}
