//! One notify fd's thread: receive a notification, record it in the slot file, answer it, and
//! count. The answer path reads top to bottom from [`handle`]: identify the call
//! ([`super::target::decode`]), then one call to its checkpoint, which inspects, decides
//! ([`crate::policy::decide`]), answers and records: [`super::image`] for the image
//! checkpoint (every exec), [`super::exec`] for the exec checkpoint (with `[detect]
//! exec_checkpoint`), [`super::report`] for a listener attempt. Events go through
//! [`super::report`].

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::cpugroup;
use super::listener::{Answering, Listener, ListenerState};
use super::registry::Shared;
use super::target::{self, Trapped};
use super::{exec, image, report};
use crate::config::CpuCgroup;
use crate::phases::{Phase, PhaseClock};
use crate::policy::{self, Action};
use crate::supervisor::slots::SlotState;
use crate::supervisor::state::ContainerProcessState;
use crate::sys::SeccompNotif;
use crate::vocab::Rule;

/// A notify fd made ready to serve: its listener, and where its thread runs.
pub(super) struct Opened {
    pub listener: Listener,
    pub placement: Option<cpugroup::Placement>,
    /// Whether the receive blocks in the kernel (the synchronous wake-up, Linux 6.6+), which
    /// also ends it when the last task is gone; before that, only poll says so.
    pub blocking_recv: bool,
}

/// Takes a notify fd: its container admitted, its thread placed.
pub(super) fn open(
    shared: &Shared,
    state: &ContainerProcessState,
    notify: crate::sys::NotifyFd,
    slot: usize,
) -> Opened {
    let blocking_recv = match notify.set_sync_wakeup() {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!(error = %e, "SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP not available");
            false
        }
    };
    let container = shared.admit(state);
    // Before the first answer, recovery's included; left as soon as every task is gone, so
    // that the runtime can remove the container's cgroup.
    let placement = match shared.config.worker.cpu_cgroup {
        CpuCgroup::Container => {
            cpugroup::join(u32::try_from(state.pid).unwrap_or(0), &container.id)
        }
        CpuCgroup::Supervisor => None,
    };
    let listener = Listener::new(Box::new(notify), container, slot, shared.counters.clone());
    Opened {
        listener,
        placement,
        blocking_recv,
    }
}

/// Serves until every task behind the fd is gone.
pub(super) fn until_hangup(
    l: &Listener,
    st: &mut ListenerState,
    shared: &Shared,
    blocking_recv: bool,
    mut placement: Option<&mut cpugroup::Placement>,
) {
    loop {
        if !blocking_recv && !l.notify.wait_readable() {
            return;
        }
        match receive_and_handle(l, st, shared) {
            Received::HungUp => return,
            Received::Handled(took) => {
                if placement.as_deref_mut().is_some_and(|p| p.answered(took)) {
                    l.counters.cpu_cgroup_leaves.fetch_add(1, Ordering::Relaxed);
                }
            }
            Received::Nothing => {}
        }
    }
}

/// After the last notification: what the rate limit still holds is written, and the
/// thread's summary logged.
pub(super) fn close(l: &Listener, st: &mut ListenerState, shared: &Shared, left_cpu_cgroup: u32) {
    for ev in st.events.flush() {
        report::write(shared, &ev);
    }
    let n = st.phases.nanos;
    tracing::info!(
        container = %l.container.id,
        execs = st.exec_latency.count(),
        exec_p50_us = st.exec_latency.quantile(500),
        exec_p99_us = st.exec_latency.quantile(990),
        images = st.image_latency.count(),
        image_p50_us = st.image_latency.quantile(500),
        image_p99_us = st.image_latency.quantile(990),
        read_ns = n[Phase::Read as usize],
        resolve_ns = n[Phase::Resolve as usize],
        classify_ns = n[Phase::Classify as usize],
        answer_ns = n[Phase::Answer as usize],
        log_ns = n[Phase::Log as usize],
        left_cpu_cgroup,
        "notify fd closed"
    );
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Received {
    /// Answered, this long after it was received.
    Handled(Duration),
    /// Nothing to handle this time (the task was interrupted or is gone).
    Nothing,
    /// Every task of the filter is gone.
    HungUp,
}

/// Receives one notification (blocking until there is one), records it in the slot file,
/// handles it and clears the slot.
pub(super) fn receive_and_handle(
    l: &Listener,
    st: &mut ListenerState,
    shared: &Shared,
) -> Received {
    let notif = match l.notify.recv() {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::EINTR) => return Received::Nothing,
        Err(e) => {
            // ENOENT: the task was interrupted or is gone, or (blocking) every task is gone.
            if e.raw_os_error() != Some(libc::ENOENT) {
                l.counters
                    .notification_errors
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(container = %l.container.id, error = %e, "NOTIF_RECV failed");
            }
            return if l.notify.hung_up() {
                Received::HungUp
            } else {
                Received::Nothing
            };
        }
    };
    crate::supervisor::fault::after_recv();
    shared.slots.record(l.slot, SlotState::Received, &notif);
    let took = handle(l, st, shared, &notif);
    shared.slots.clear(l.slot);
    Received::Handled(took)
}

/// Handles every notification queued on the fd now, without waiting for more.
pub(super) fn drain(l: &Listener, st: &mut ListenerState, shared: &Shared) {
    while l.notify.readable_now() {
        if receive_and_handle(l, st, shared) == Received::HungUp {
            return;
        }
    }
}

/// Answers one notification: identify, then its checkpoint inspects, decides, answers and
/// records. Returns the time from receiving it to answering it.
pub(super) fn handle(
    l: &Listener,
    st: &mut ListenerState,
    shared: &Shared,
    notif: &SeccompNotif,
) -> Duration {
    let started = Instant::now();
    crate::supervisor::fault::slow_answer();
    // A restarted call after an interruption was logged the first time.
    let retry = l.interrupted.take() == Some((notif.pid, notif.data.nr, notif.data.args));
    let suppressed_before = st.suppress_events;
    st.suppress_events |= retry;
    let mut cx = Answering {
        l,
        st,
        shared,
        notif: *notif,
        clock: PhaseClock::start(),
    };
    let trapped = target::decode(notif);
    match &trapped {
        Some(Trapped::Checkpoint { abi, syscall }) => image::handle(&mut cx, *abi, *syscall),
        Some(Trapped::Exec { req, addrs }) => exec::handle(&mut cx, req.clone(), *addrs),
        Some(Trapped::ListenerAttempt { abi }) => listener_attempt(&mut cx, *abi),
        // Nothing else is trapped; let it run as the profile would.
        None => cx.respond(Action::Continue),
    }
    let Answering { st, clock, .. } = cx;
    st.suppress_events = suppressed_before;
    if l.answer_enoent.take() == Some(notif.id) {
        l.interrupted
            .set(Some((notif.pid, notif.data.nr, notif.data.args)));
    }
    // Receive to answer: until the answer was handed to the kernel, not until that call
    // returned (see `PhaseClock::answering`).
    let answered = clock.answered.unwrap_or_else(Instant::now);
    let took = answered.duration_since(started);
    let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
    st.phases.add(&clock);
    count(l, st, shared, trapped.as_ref(), micros);
    took
}

/// `seccomp(…, NEW_LISTENER)` inside a guarded container: the kernel refuses a second listener
/// (EBUSY) whatever the answer; the try is logged.
fn listener_attempt(cx: &mut Answering, abi: crate::vocab::Abi) {
    let verdict = policy::for_rule(Rule::SeccompListenerAttempt, &cx.container().settings);
    report::listener_attempt(cx, abi, &verdict);
    cx.respond(verdict.action);
}

fn count(
    l: &Listener,
    st: &mut ListenerState,
    shared: &Shared,
    trapped: Option<&Trapped>,
    micros: u64,
) {
    let counters = &shared.counters;
    counters.latency.record(micros);
    match trapped {
        Some(Trapped::Checkpoint { .. }) => {
            st.image_latency.record(micros);
            l.container.counters.images.fetch_add(1, Ordering::Relaxed);
            counters.image_notifications.fetch_add(1, Ordering::Relaxed);
        }
        Some(Trapped::Exec { .. }) => {
            st.exec_latency.record(micros);
            l.container.counters.execs.fetch_add(1, Ordering::Relaxed);
            counters.exec_notifications.fetch_add(1, Ordering::Relaxed);
        }
        _ => {
            counters.other_notifications.fetch_add(1, Ordering::Relaxed);
        }
    }
}
