//! The image checkpoint, the one every exec passes: a new image's first thread-pointer setup.
//! A loader found running a program here, or a binary whose interpreter is not one of the
//! container's loaders, is judged like one found at the exec; in enforce mode the process is
//! killed (it has run none of its own code yet) and the call fails.

use std::sync::atomic::Ordering;

use super::registry::Shared;
use super::serve::{respond, Listener, ListenerState, STATE_ENTRIES};
use super::{exec, report, tell};
use crate::inspect::allow::{self, Judgement};
use crate::inspect::file::LoaderKind;
use crate::inspect::{image, preload, Finding};
use crate::phases::{Phase, PhaseClock};
use crate::policy::{self, Action};
use crate::sys::SeccompNotif;
use crate::vocab::{Abi, Mode, Rule, Stage, Syscall};

pub(super) fn handle(
    l: &Listener,
    st: &mut ListenerState,
    shared: &Shared,
    notif: &SeccompNotif,
    abi: Abi,
    syscall: Syscall,
    clock: &mut PhaseClock,
) {
    let c = &l.container;
    let valid = || l.notify.id_valid(notif.id);
    let recorded = shared
        .record
        .as_ref()
        .ok()
        .and_then(|r| r.lookup(notif.pid));
    let result = image::inspect_image(
        notif.pid,
        abi,
        notif.data.instruction_pointer,
        &c.loaders,
        &mut st.cache,
        recorded.as_ref(),
        &valid,
        clock,
    );
    let img = match result {
        Ok(img) => img,
        Err(e) => {
            let verdict = policy::on_error(&e, &c.settings);
            if let Some((rule, importance)) = verdict.event {
                let mut ev =
                    report::base_event(c, notif, rule, importance, verdict.action, Stage::Image);
                ev.reason = e.to_string();
                report::emit(shared, l, st, notif, ev, clock);
            }
            deny_or_continue(l, st, notif, verdict.action, None, clock);
            return;
        }
    };
    let allowed_at_exec = if st.allowed_at_exec.is_empty() {
        None
    } else {
        st.allowed_at_exec.remove(&notif.pid)
    };
    if img.by_record {
        l.counters.images_by_record.fetch_add(1, Ordering::Relaxed);
    }
    let img = match img {
        img if img.finding.is_none() && img.dynamic && preloads_judged(shared, &c.settings) => {
            let token = recorded.as_ref().map(image::record_token);
            match preload::judge(notif.pid, abi, token, &valid) {
                Ok(Some(found)) => found,
                Ok(None) => img,
                // Gone, or an environment that could not be read: the same fail-safe rule as
                // any image that could not be inspected.
                Err(e) => {
                    let verdict = policy::on_error(&e, &c.settings);
                    if let Some((rule, importance)) = verdict.event {
                        let mut ev = report::base_event(
                            c,
                            notif,
                            rule,
                            importance,
                            verdict.action,
                            Stage::Image,
                        );
                        ev.reason = e.to_string();
                        report::emit(shared, l, st, notif, ev, clock);
                    }
                    deny_or_continue(l, st, notif, verdict.action, None, clock);
                    return;
                }
            }
        }
        img => img,
    };
    let Some(finding) = img.finding else {
        respond(l, notif.id, Action::Continue, clock);
        return;
    };
    // Later thread-pointer setups of the same image (a Go runtime's threads) were judged.
    if let Some(token) = img.token {
        if st.judged_images.len() >= STATE_ENTRIES {
            st.judged_images.clear();
        }
        if !st.judged_images.insert((notif.pid, token)) {
            respond(l, notif.id, Action::Continue, clock);
            return;
        }
    }
    let judgement = judge_exemption(l, st, notif, abi, &finding);
    let exemption = match &judgement {
        Some(Judgement::Exempt(e)) => Some(e),
        _ => None,
    };
    let verdict = match exemption {
        Some(_) => policy::exempted(finding.rule, &c.settings),
        None => policy::decide(Some(finding.rule), &c.settings),
    };
    let line = verdict
        .event
        .filter(|_| exemption.is_none())
        .and_then(|(rule, importance)| {
            let told = tell::Told {
                rule,
                importance,
                outcome: verdict.action.outcome(),
                exe: &img.exe,
                loader: finding.loader.as_ref(),
            };
            tell::line_if_due(shared, c.settings.mode, &told)
        });
    let seen_at_exec = allowed_at_exec.is_some_and(|(rule, start)| {
        rule == finding.rule && exec::start_time_of(notif.pid) == Some(start)
    });
    clock.lap(Phase::Answer);
    if let Some((rule, importance)) = verdict.event {
        if !seen_at_exec || verdict.action != Action::Continue {
            let mut ev =
                report::base_event(c, notif, rule, importance, verdict.action, Stage::Image);
            ev.reason = match &judgement {
                None => finding.reason.clone(),
                Some(Judgement::Exempt(e)) => {
                    ev.allow_rule = Some(e.rule.clone());
                    format!(
                        "{}; exempted by [[allow]] {:?}: the program is {}",
                        finding.reason, e.rule, e.basis
                    )
                }
                Some(Judgement::NotExempt(why)) => {
                    format!("{}; no [[allow]] rule exempts it: {why}", finding.reason)
                }
            };
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
            report::emit(shared, l, st, notif, ev, clock);
        }
    }
    deny_or_continue(l, st, notif, verdict.action, line.as_deref(), clock);
}

/// Whether an ordinary program's preloads are judged: only while a finding would be written or
/// denied (`[rules] preload_from_writable = "info"` turns the look, and its cost, off).
fn preloads_judged(shared: &Shared, s: &policy::Settings) -> bool {
    let importance = s.rules.importance(Rule::PreloadFromWritable);
    match s.mode {
        Mode::Off => false,
        Mode::Audit => importance >= shared.config.events.min_importance,
        Mode::Enforce => {
            importance >= shared.config.events.min_importance
                || importance >= s.enforce.min_importance
        }
    }
}

/// What the `[[allow]]` rules say of a loader run, when one could apply: judged on the file
/// the loader mapped as its program.
fn judge_exemption(
    l: &Listener,
    st: &mut ListenerState,
    notif: &SeccompNotif,
    abi: Abi,
    finding: &Finding,
) -> Option<Judgement> {
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
    let valid = || l.notify.id_valid(notif.id);
    Some(
        allow::judge_image(notif.pid, abi, program, &rules, &mut st.cache, &valid)
            .unwrap_or_else(|e| Judgement::NotExempt(e.to_string())),
    )
}

/// At the image checkpoint a denial also kills the process: a loader that ignored the failed
/// call must not go on to run the program. `line` goes to its standard error first.
fn deny_or_continue(
    l: &Listener,
    st: &mut ListenerState,
    notif: &SeccompNotif,
    action: Action,
    line: Option<&str>,
    clock: &mut PhaseClock,
) {
    if let (Action::Continue, Some(line)) = (action, line) {
        tell::write_if_pending(l, st, notif, line);
    }
    if let Action::Deny(_) = action {
        match crate::sys::PidFd::open(notif.pid) {
            // The pidfd names the notifying process only if the notification is still pending.
            Ok(pidfd) if l.notify.id_valid(notif.id) => {
                if let Some(line) = line {
                    tell::write(st, &pidfd, notif.pid, line);
                }
                if let Err(e) = pidfd.kill() {
                    tracing::warn!(pid = notif.pid, error = %e, "cannot kill a denied image");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(pid = notif.pid, error = %e, "no pidfd for a denied image"),
        }
    }
    respond(l, notif.id, action, clock);
}
