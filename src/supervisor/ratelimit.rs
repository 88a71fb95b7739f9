//! `[events] rate_limit_seconds` and `[events] max_bytes`: what one notify fd may cost in
//! event bytes and in the worker's memory, whatever its container does.
//!
//! - Identical events (same event, action, stage, exec path and argv) within the window are
//!   written once; the next one written says how many were suppressed (`repeated`), and the
//!   last suppressed one of each kind is written, with the others folded into it, when the fd
//!   closes.
//! - At most `max_bytes` of event lines per window: beyond that, events are held, one per kind (event,
//!   action, importance, and whether an `[[allow]]` rule exempted it), counted, and written as
//!   one summary line per kind at the first event after the window ends, or when the fd
//!   closes.
//!
//! Every line stands for 1 + `repeated` events: nothing is lost or counted twice, only
//! folded. What is kept between lines is cut ([`Event::cut_to_keep`]) and bounded in bytes
//! ([`FOLDED_BYTES`]), so a flood of distinct events with long arguments cannot grow the
//! worker.

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use super::registry::Shared;
use super::serve::{ListenerState, STATE_ENTRIES};
use crate::event::Event;

/// Bytes of suppressed events one notify fd keeps for the fold at most; past it, they are
/// written out (through the line limit).
const FOLDED_BYTES: usize = 1 << 20;

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

/// The line limit's state for one notify fd.
#[derive(Default)]
pub(super) struct Lines {
    /// When the current window began.
    since: Option<Instant>,
    /// Bytes of event lines written in it.
    written: u64,
    /// Events held back in it, by kind (event, action, importance, exempted): how many, and
    /// the last one.
    held: BTreeMap<HeldKind, (u64, Event)>,
    /// Bytes kept in `ListenerState::repeats` (the fold's last events).
    folded_bytes: usize,
}

/// The events to write now for `ev`: summaries of a window that ended, then `ev` itself (with
/// `repeated` set when identical ones were suppressed before it) unless it is suppressed or
/// held.
pub(super) fn admit(shared: &Shared, st: &mut ListenerState, ev: Event) -> Vec<Event> {
    let secs = shared.config.events.rate_limit_seconds;
    if secs == 0 {
        return vec![ev];
    }
    let now = Instant::now();
    let mut out = Vec::new();
    if st
        .lines
        .since
        .is_none_or(|s| now.duration_since(s) >= Duration::from_secs(secs))
    {
        out.extend(summaries(shared, &mut st.lines));
        st.lines.since = Some(now);
        st.lines.written = 0;
    }
    if let Some(ev) = fold(shared, st, ev, secs) {
        out.extend(limit(shared, &mut st.lines, ev));
    }
    out
}

/// The fold of identical events: `None` when `ev` is suppressed (and kept, cut, as its key's
/// last one).
fn fold(shared: &Shared, st: &mut ListenerState, mut ev: Event, secs: u64) -> Option<Event> {
    let mut h = DefaultHasher::new();
    // An exempted run and an unexempted one are never folded together: a report that skips
    // exempted runs must not lose the other.
    (
        ev.event,
        ev.action,
        ev.stage,
        ev.importance,
        ev.allow_rule.is_some(),
    )
        .hash(&mut h);
    if let Some(x) = &ev.exec {
        (&x.path, &x.argv).hash(&mut h);
    }
    let key = h.finish();
    if let Some(r) = st.repeats.get_mut(&key) {
        if r.written.elapsed().as_secs() < secs {
            r.suppressed += 1;
            ev.cut_to_keep();
            let size = ev.kept_bytes();
            let old = r.last.replace(ev).map_or(0, |e| e.kept_bytes());
            st.lines.folded_bytes = (st.lines.folded_bytes + size).saturating_sub(old);
            if st.lines.folded_bytes > FOLDED_BYTES {
                // Written out now rather than kept: bounded in bytes, not only in entries.
                for ev in drain_folds(shared, st) {
                    super::report::write(shared, &ev);
                }
            }
            return None;
        }
        if r.suppressed > 0 {
            ev.repeated = Some(r.suppressed);
        }
        if let Some(last) = &r.last {
            st.lines.folded_bytes = st.lines.folded_bytes.saturating_sub(last.kept_bytes());
        }
        *r = Repeat::written_now();
        return Some(ev);
    }
    if st.repeats.len() >= STATE_ENTRIES {
        for ev in drain_folds(shared, st) {
            super::report::write(shared, &ev);
        }
    }
    st.repeats.insert(key, Repeat::written_now());
    Some(ev)
}

/// The byte limit: `ev` when the window has room for its line (the first line of a window
/// always does), else nothing (it is held, counted).
fn limit(shared: &Shared, lines: &mut Lines, ev: Event) -> Option<Event> {
    let size = serde_json::to_vec(&ev).map_or(0, |l| l.len() as u64 + 1);
    if lines.written == 0 || lines.written.saturating_add(size) <= shared.config.events.max_bytes {
        lines.written = lines.written.saturating_add(size);
        return Some(ev);
    }
    hold(lines, ev);
    None
}

/// What held events are counted by: an exempted run is never summed up with one that was
/// not, nor an event with one of another importance.
type HeldKind = (&'static str, &'static str, crate::vocab::Importance, bool);

fn hold(lines: &mut Lines, mut ev: Event) {
    let stands_for = ev.repeated.take().unwrap_or(0).saturating_add(1);
    ev.cut_to_keep();
    let kind = (
        ev.event,
        ev.action.into(),
        ev.importance,
        ev.allow_rule.is_some(),
    );
    match lines.held.entry(kind) {
        std::collections::btree_map::Entry::Occupied(mut o) => {
            let (n, last) = o.get_mut();
            *n = n.saturating_add(stands_for);
            *last = ev;
        }
        std::collections::btree_map::Entry::Vacant(v) => {
            v.insert((stands_for, ev));
        }
    }
}

/// One line per kind of event held back: the last of them, standing for all.
fn summaries(shared: &Shared, lines: &mut Lines) -> Vec<Event> {
    let max = shared.config.events.max_bytes;
    let secs = shared.config.events.rate_limit_seconds;
    std::mem::take(&mut lines.held)
        .into_values()
        .map(|(n, mut ev)| {
            ev.repeated = (n > 1).then(|| n - 1);
            ev.reason = format!(
                "{} [rate limit: the container wrote over {max} bytes of events in {secs} s; \
                 this line stands for {n} event(s) of this kind, the last shown]",
                ev.reason
            );
            ev
        })
        .collect()
}

/// The last suppressed event of every key, each with the others folded into it, through the
/// line limit (what it holds back is counted in the next summaries).
fn drain_folds(shared: &Shared, st: &mut ListenerState) -> Vec<Event> {
    st.lines.folded_bytes = 0;
    let lasts: Vec<Event> = st
        .repeats
        .drain()
        .filter_map(|(_, r)| {
            let mut ev = r.last?;
            // The event written is the last of the suppressed ones: the others are folded
            // into it (a line stands for 1 + `repeated` events, as the report counts them).
            ev.repeated = (r.suppressed > 1).then(|| r.suppressed - 1);
            Some(ev)
        })
        .collect();
    lasts
        .into_iter()
        .filter_map(|ev| limit(shared, &mut st.lines, ev))
        .collect()
}

/// When the notify fd closes: every folded event and every summary still due.
pub(super) fn flush(shared: &Shared, st: &mut ListenerState) {
    let mut out = drain_folds(shared, st);
    out.extend(summaries(shared, &mut st.lines));
    for ev in out {
        super::report::write(shared, &ev);
    }
}

/// Events held in the window, by event name, for the tests.
#[cfg(test)]
fn held_counts(lines: &Lines) -> std::collections::HashMap<&'static str, u64> {
    lines
        .held
        .iter()
        .map(|((e, ..), (n, _))| (*e, *n))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_events_are_counted_by_kind_and_summed_up_once() {
        let mut lines = Lines::default();
        for i in 0..5u64 {
            let mut ev = crate::event::tests::test_event("");
            ev.repeated = (i == 4).then_some(3);
            ev.reason = format!("run {i}");
            hold(&mut lines, ev);
        }
        assert_eq!(held_counts(&lines)["binary_executed_by_loader"], 8);
        assert_eq!(lines.held.len(), 1);
        let (n, last) = lines.held.values().next().unwrap();
        assert_eq!(
            (*n, last.reason.as_str(), last.repeated),
            (8, "run 4", None)
        );
    }
}
