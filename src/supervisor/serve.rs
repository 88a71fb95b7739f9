//! One notify fd's thread: receive a notification, record it in the slot file, hand it to its
//! checkpoint, answer, and count. The answer path reads top to bottom from [`handle`]:
//! [`super::image`] for the image checkpoint (every exec), [`super::exec`] for the exec
//! checkpoint (with `[detect] exec_checkpoint`), [`super::report`] for the events.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::ratelimit::{self, Repeat};
use super::registry::{Container, Shared};
use super::slots::SlotState;
use super::state::ContainerProcessState;
use super::target::{self, Trapped};
use super::{control, cpugroup, exec, image, recovery, report, stats};

use crate::config::CpuCgroup;
use crate::inspect;
use crate::phases::{Phase, PhaseClock};
use crate::policy::{self, Action};
use crate::sys::{NotifyFd, SeccompNotif, SeccompNotifResp, SECCOMP_USER_NOTIF_FLAG_CONTINUE};
use crate::vocab::Rule;

/// One notify fd (a container start, or a `runc exec`).
pub(super) struct Listener {
    pub notify: NotifyFd,
    pub container: Arc<Container>,
    /// Its slot in the keeper's slot file.
    pub slot: usize,
    pub counters: Arc<control::Counters>,
    /// The last notification whose answer found its task interrupted (SEND: ENOENT): the
    /// kernel restarts the call, and the same notification comes again, not a new exec.
    pub interrupted: Cell<Option<(u32, i32, [u64; 6])>>,
    /// The id of the last answer that found its task gone or interrupted.
    pub answer_enoent: Cell<Option<u64>>,
}

/// What one notify fd's thread remembers between notifications.
#[derive(Default)]
pub(super) struct ListenerState {
    /// What each executable is, by file version (at the exec and at the image).
    pub cache: inspect::FileCache,
    /// Findings allowed at the exec, by the pid the new image will have (with the process's
    /// start time, since pids are reused), so that the image checkpoint does not log them
    /// twice. Every image checkpoint consumes its pid's entry.
    pub allowed_at_exec: HashMap<u32, (Rule, u64)>,
    /// Images already judged at their first thread-pointer setup (pid, the exec's identity:
    /// `ImageInspection::token`).
    pub judged_images: HashSet<(u32, u128)>,
    /// Set while answering a notification whose event a dead worker already wrote.
    pub suppress_events: bool,
    /// The events rate limit, by event identity.
    pub repeats: HashMap<u64, Repeat>,
    /// The events line limit.
    pub lines: ratelimit::Lines,
    /// Time from receiving a notification to answering it, at the exec and at the image.
    pub exec_latency: stats::Histogram,
    pub image_latency: stats::Histogram,
    /// Where the time went, summed over every notification.
    pub phases: PhaseClock,
    /// Processes told on their standard error why (pid, start time): once each.
    pub told: HashSet<(u32, u64)>,
}

/// Entries kept in each of `ListenerState`'s maps before it is emptied.
pub(super) const STATE_ENTRIES: usize = 4096;

/// Serves one notify fd until every task behind it is gone.
pub(super) fn serve_fd(shared: &Shared, state: ContainerProcessState, fd: OwnedFd, slot: usize) {
    let notify = NotifyFd::new(fd);
    // With the synchronous wake-up (Linux 6.6+) the receive blocks in the kernel, which also
    // ends it when the last task is gone; before that, only poll says so.
    let blocking_recv = match notify.set_sync_wakeup() {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!(error = %e, "SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP not available");
            false
        }
    };
    let container = shared.admit(&state);
    // Before the first answer, recovery's included; left as soon as every task is gone, so
    // that the runtime can remove the container's cgroup.
    let mut placement = match shared.config.worker.cpu_cgroup {
        CpuCgroup::Container => {
            cpugroup::join(u32::try_from(state.pid).unwrap_or(0), &container.id)
        }
        CpuCgroup::Supervisor => None,
    };
    let l = Listener {
        notify,
        container,
        slot,
        counters: shared.counters.clone(),
        interrupted: Cell::new(None),
        answer_enoent: Cell::new(None),
    };
    let mut st = ListenerState::default();
    recovery::recover(&l, &mut st, shared);
    serve_until_hangup(&l, &mut st, shared, blocking_recv, placement.as_mut());
    let left_cpu_cgroup = placement.as_ref().map_or(0, |p| p.left());
    drop(placement);
    ratelimit::flush(shared, &mut st);
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
    let id = l.container.id.clone();
    drop(l);
    shared.release(&id);
}

fn serve_until_hangup(
    l: &Listener,
    st: &mut ListenerState,
    shared: &Shared,
    blocking_recv: bool,
    mut placement: Option<&mut cpugroup::Placement>,
) {
    loop {
        if !blocking_recv && !wait_readable(l) {
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
            return if hung_up(l) {
                Received::HungUp
            } else {
                Received::Nothing
            };
        }
    };
    super::fault::after_recv();
    shared.slots.record(l.slot, SlotState::Received, &notif);
    let took = handle(l, st, shared, &notif);
    shared.slots.clear(l.slot);
    Received::Handled(took)
}

/// Handles every notification queued on the fd now, without waiting for more.
pub(super) fn drain(l: &Listener, st: &mut ListenerState, shared: &Shared) {
    while readable_now(l) {
        if receive_and_handle(l, st, shared) == Received::HungUp {
            return;
        }
    }
}

fn readable_now(l: &Listener) -> bool {
    let mut fds = [PollFd::new(l.notify.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
        && fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLIN))
}

/// Waits until a notification is there; false once every task of the filter is gone.
fn wait_readable(l: &Listener) -> bool {
    loop {
        let mut fds = [PollFd::new(l.notify.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => {
                tracing::error!(container = %l.container.id, error = %e, "poll on the notify fd failed");
                return false;
            }
        }
        let revents = fds[0].revents().unwrap_or(PollFlags::empty());
        if revents.contains(PollFlags::POLLIN) {
            return true;
        }
        if revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL) {
            // Every task of the filter is gone: the container (or the exec'd process) ended.
            return false;
        }
    }
}

/// True when every task of the filter is gone and no notification is left.
pub(super) fn hung_up(l: &Listener) -> bool {
    let mut fds = [PollFd::new(l.notify.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(_) => {
            let revents = fds[0].revents().unwrap_or(PollFlags::empty());
            !revents.contains(PollFlags::POLLIN)
                && revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL)
        }
        Err(Errno::EINTR) => false,
        Err(_) => true,
    }
}

/// Inspects one notification, writes the event if any, and answers. Returns the time from
/// receiving it to answering it.
pub(super) fn handle(
    l: &Listener,
    st: &mut ListenerState,
    shared: &Shared,
    notif: &SeccompNotif,
) -> Duration {
    let notif = *notif;
    let started = Instant::now();
    super::fault::slow_answer();
    let mut clock = PhaseClock::start();
    // A restarted call after an interruption was logged the first time.
    let retry = l.interrupted.take() == Some((notif.pid, notif.data.nr, notif.data.args));
    let suppressed_before = st.suppress_events;
    st.suppress_events |= retry;
    let trapped = target::decode(&notif);
    match &trapped {
        Some(Trapped::Checkpoint { abi, syscall }) => {
            image::handle(l, st, shared, &notif, *abi, *syscall, &mut clock)
        }
        Some(Trapped::Exec {
            req,
            path,
            argv,
            envp,
        }) => {
            let addrs = exec::Addresses {
                path: *path,
                argv: *argv,
                envp: *envp,
            };
            exec::handle(l, st, shared, &notif, req.clone(), addrs, &mut clock)
        }
        Some(Trapped::ListenerAttempt { abi }) => {
            // The kernel refuses a second listener (EBUSY) whatever the answer; log the try.
            let verdict = policy::decide(Some(Rule::SeccompListenerAttempt), &l.container.settings);
            report::listener_attempt(l, st, shared, &notif, *abi, &verdict, &mut clock);
            respond(l, notif.id, verdict.action, &mut clock);
        }
        // Nothing else is trapped; let it run as the profile would.
        None => respond(l, notif.id, Action::Continue, &mut clock),
    }
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
    took
}

/// Answers the kernel: let the call run, or fail it with an errno.
pub(super) fn respond(l: &Listener, id: u64, action: Action, clock: &mut PhaseClock) {
    let resp = match action {
        Action::Continue => SeccompNotifResp {
            id,
            val: 0,
            error: 0,
            flags: SECCOMP_USER_NOTIF_FLAG_CONTINUE,
        },
        Action::Deny(errno) => SeccompNotifResp {
            id,
            val: 0,
            error: -errno,
            flags: 0,
        },
    };
    if let Action::Deny(_) = action {
        l.container.counters.denials.fetch_add(1, Ordering::Relaxed);
        l.counters.denials.fetch_add(1, Ordering::Relaxed);
    }
    clock.answering();
    let sent = l.notify.send(&resp);
    clock.skip();
    match sent {
        Ok(()) => {}
        // The task was interrupted or died; if interrupted, the call arrives again.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => l.answer_enoent.set(Some(id)),
        Err(e) => {
            l.counters
                .notification_errors
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(container = %l.container.id, error = %e, "NOTIF_SEND failed");
        }
    }
}
