//! Building and writing the events of the answer path. An event is data, written by the event
//! sink; the slot file notes it was written, so that a worker that takes over an unanswered
//! notification does not write it twice.

use std::sync::atomic::Ordering;

use super::listener::Answering;
use super::registry::{Container, Shared};
use crate::event::{self, Event};
use crate::inspect;
use crate::phases::Phase;
use crate::policy::{Action, Verdict};
use crate::supervisor::slots::SlotState;
use crate::sys::SeccompNotif;
use crate::vocab::{Errno, Importance, Rule, Stage};

/// The fields every event has; the caller fills in what it is about.
pub(super) fn base_event(
    c: &Container,
    notif: &SeccompNotif,
    rule: Rule,
    importance: Importance,
    action: Action,
    stage: Stage,
) -> Event {
    let errno = match action {
        Action::Continue => None,
        Action::Deny(e) => Some(Errno(e).name()),
    };
    Event {
        time: event::now_rfc3339(),
        event: rule.name(),
        description: rule.description(),
        category: rule.category(),
        method: rule.method(),
        importance,
        mode: c.settings.mode,
        action: action.outcome(),
        repeated: None,
        stage,
        errno,
        allow_rule: None,
        reason: String::new(),
        container: event::ContainerInfo { id: c.id.clone() },
        process: event::ProcessInfo { pid: notif.pid },
        exec: None,
        syscall: None,
        loader: None,
    }
}

pub(super) fn loader_info(l: &inspect::LoaderFinding) -> event::LoaderInfo {
    event::LoaderInfo {
        path: event::lossy(&l.path),
        kind: l.kind.as_str(),
        program: l.invocation.program.as_deref().map(event::lossy),
        mode: l.invocation.mode.as_str(),
        options: l
            .invocation
            .options
            .iter()
            .map(|o| event::lossy(o))
            .collect(),
        via: l.via.as_str(),
    }
}

/// The event of a `seccomp(…, NEW_LISTENER)` inside a guarded container, if the verdict has one.
pub(super) fn listener_attempt(cx: &mut Answering, abi: crate::vocab::Abi, verdict: &Verdict) {
    let Some((rule, importance)) = verdict.event else {
        return;
    };
    let mut ev = base_event(
        cx.container(),
        &cx.notif,
        rule,
        importance,
        verdict.action,
        Stage::Syscall,
    );
    ev.reason = "seccomp(SECCOMP_FILTER_FLAG_NEW_LISTENER) inside a guarded container".to_owned();
    ev.syscall = Some(event::SyscallInfo {
        name: crate::vocab::Syscall::Seccomp,
        abi,
    });
    emit(cx, ev);
}

/// Writes `ev` to the sink and counts it (by event and importance).
pub(super) fn write(shared: &Shared, ev: &Event) {
    if let Err(e) = shared.sink.emit(ev) {
        tracing::error!(error = %e, "cannot write the event");
    }
    *shared
        .events_by
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry((ev.event, ev.importance))
        .or_default() += 1;
}

/// Writes an event (through the rate limit) and notes in the slot that it was written.
pub(super) fn emit(cx: &mut Answering, ev: Event) {
    let (l, shared) = (cx.l, cx.shared);
    if cx.st.suppress_events {
        return;
    }
    l.container.counters.events.fetch_add(1, Ordering::Relaxed);
    // An exempted run is always written: the exception is visible.
    if ev.importance < shared.config.events.min_importance && ev.allow_rule.is_none() {
        cx.clock.lap(Phase::Log);
        return;
    }
    let admitted = cx.st.events.admit(ev, std::time::Instant::now());
    for ev in &admitted.spilled {
        write(shared, ev);
    }
    if admitted.due.is_empty() {
        cx.clock.lap(Phase::Log);
        return;
    }
    for ev in &admitted.due {
        write(shared, ev);
    }
    if cx.notif.id != 0 {
        shared
            .slots
            .record(l.slot, SlotState::EventWritten, &cx.notif);
    }
    cx.clock.lap(Phase::Log);
}
