//! One notify fd as its serving thread holds it ([`Listener`]), what that thread remembers
//! between notifications ([`ListenerState`]), one notification being answered ([`Answering`],
//! the context every step of the answer path takes), and the answer itself ([`respond`]).

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::counters::Counters;
use super::ratelimit::RateLimit;
use super::registry::{Container, Shared};
use super::source::NotifySource;
use crate::config::EventsConfig;
use crate::inspect;
use crate::phases::PhaseClock;
use crate::policy::Action;
use crate::supervisor::stats;
use crate::sys::{SeccompNotif, SeccompNotifResp, SECCOMP_USER_NOTIF_FLAG_CONTINUE};
use crate::vocab::Rule;

/// One notify fd (a container start, or a `runc exec`).
pub(crate) struct Listener {
    pub notify: Box<dyn NotifySource>,
    pub container: Arc<Container>,
    /// Its slot in the keeper's slot file.
    pub slot: usize,
    pub counters: Arc<Counters>,
    /// The last notification whose answer found its task interrupted (SEND: ENOENT): the
    /// kernel restarts the call, and the same notification comes again, not a new exec.
    pub interrupted: Cell<Option<(u32, i32, [u64; 6])>>,
    /// The id of the last answer that found its task gone or interrupted.
    pub answer_enoent: Cell<Option<u64>>,
}

impl Listener {
    pub(crate) fn new(
        notify: Box<dyn NotifySource>,
        container: Arc<Container>,
        slot: usize,
        counters: Arc<Counters>,
    ) -> Self {
        Self {
            notify,
            container,
            slot,
            counters,
            interrupted: Cell::new(None),
            answer_enoent: Cell::new(None),
        }
    }
}

/// What one notify fd's thread remembers between notifications.
pub(crate) struct ListenerState {
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
    /// The events rate limit.
    pub events: RateLimit,
    /// Time from receiving a notification to answering it, at the exec and at the image.
    pub exec_latency: stats::Histogram,
    pub image_latency: stats::Histogram,
    /// Where the time went, summed over every notification.
    pub phases: PhaseClock,
    /// Processes told on their standard error why (pid, start time): once each.
    pub told: HashSet<(u32, u64)>,
}

impl ListenerState {
    pub(crate) fn new(events: &EventsConfig) -> Self {
        Self {
            cache: Default::default(),
            allowed_at_exec: HashMap::new(),
            judged_images: HashSet::new(),
            suppress_events: false,
            events: RateLimit::new(events),
            exec_latency: Default::default(),
            image_latency: Default::default(),
            phases: Default::default(),
            told: HashSet::new(),
        }
    }
}

/// Entries kept in each of `ListenerState`'s maps before it is emptied.
pub(crate) const STATE_ENTRIES: usize = 4096;

/// One notification being answered: what every step of the answer path takes.
pub(crate) struct Answering<'a> {
    pub l: &'a Listener,
    pub st: &'a mut ListenerState,
    pub shared: &'a Shared,
    pub notif: SeccompNotif,
    pub clock: PhaseClock,
}

impl Answering<'_> {
    /// The container the notification came from.
    pub(crate) fn container(&self) -> &Container {
        &self.l.container
    }

    /// Whether the notification is still pending (so that its pid still names its task).
    pub(crate) fn pending(&self) -> bool {
        self.l.notify.id_valid(self.notif.id)
    }

    /// Answers the notification.
    pub(crate) fn respond(&mut self, action: Action) {
        respond(self.l, self.notif.id, action, &mut self.clock);
    }
}

/// Answers the kernel: let the call run, or fail it with an errno.
pub(crate) fn respond(l: &Listener, id: u64, action: Action, clock: &mut PhaseClock) {
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
