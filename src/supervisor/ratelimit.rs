//! `[events] rate_limit_seconds`: identical events from one notify fd within the window are
//! written once; the next one written says how many were suppressed, and the last suppressed
//! one of each kind is written when the fd closes. Nothing is lost, only folded.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::time::Instant;

use super::registry::Shared;
use super::serve::{ListenerState, STATE_ENTRIES};
use crate::event::Event;

/// One rate-limit key's state: when an event was last written, how many identical ones were
/// suppressed since, and the last of those (written when the container ends).
pub(super) struct Repeat {
    written: Instant,
    suppressed: u64,
    last: Option<Event>,
}

impl Repeat {
    fn written_now() -> Self {
        Self {
            written: Instant::now(),
            suppressed: 0,
            last: None,
        }
    }
}

/// The event to write now (with `repeated` set when some were suppressed before it), or `None`
/// when it is suppressed (and kept as the key's pending last one).
pub(super) fn admit(shared: &Shared, st: &mut ListenerState, mut ev: Event) -> Option<Event> {
    let window = shared.config.events.rate_limit_seconds;
    if window == 0 {
        return Some(ev);
    }
    let mut h = DefaultHasher::new();
    (ev.event, ev.action, ev.stage).hash(&mut h);
    if let Some(x) = &ev.exec {
        (&x.path, &x.argv).hash(&mut h);
    }
    let key = h.finish();
    if let Some(r) = st.repeats.get_mut(&key) {
        if r.written.elapsed().as_secs() < window {
            r.suppressed += 1;
            r.last = Some(ev);
            return None;
        }
        if r.suppressed > 0 {
            ev.repeated = Some(r.suppressed);
        }
        *r = Repeat::written_now();
        return Some(ev);
    }
    if st.repeats.len() >= STATE_ENTRIES {
        flush(shared, st);
    }
    st.repeats.insert(key, Repeat::written_now());
    Some(ev)
}

/// Writes the last suppressed event of every key, with its count.
pub(super) fn flush(shared: &Shared, st: &mut ListenerState) {
    for (_, r) in st.repeats.drain() {
        if let Some(mut ev) = r.last {
            // The event written is the last of the suppressed ones: the others are folded
            // into it (a line stands for 1 + `repeated` events, as the report counts them).
            ev.repeated = (r.suppressed > 1).then(|| r.suppressed - 1);
            if let Err(e) = shared.sink.emit(&ev) {
                tracing::error!(error = %e, "cannot write the event");
            }
        }
    }
}
