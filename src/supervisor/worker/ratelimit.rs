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
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use crate::config::EventsConfig;
use crate::event::Event;

/// Bytes of suppressed events one notify fd keeps for the fold at most; past it, they are
/// written out (through the line limit).
const FOLDED_BYTES: usize = 1 << 20;
/// Keys of the fold kept at most; past it, the fold is written out and begins again.
const FOLD_KEYS: usize = 4096;

/// One notify fd's rate limit: a value, fed events and a clock, that says which lines to
/// write. It writes nothing itself.
pub(super) struct RateLimit {
    /// `rate_limit_seconds`; zero turns both limits off.
    window: Duration,
    /// `max_bytes`.
    max_bytes: u64,
    /// By event identity: when one was last written, and what was suppressed since.
    repeats: HashMap<u64, Repeat>,
    lines: Lines,
}

/// One rate-limit key's state: when an event was last written, how many identical ones were
/// suppressed since, and the last of those (written when the container ends).
struct Repeat {
    written: Instant,
    suppressed: u64,
    last: Option<Event>,
}

impl Repeat {
    fn written_at(now: Instant) -> Self {
        Self {
            written: now,
            suppressed: 0,
            last: None,
        }
    }
}

/// What [`RateLimit::admit`] says to write.
pub(super) struct Admitted {
    /// Folded events written out early, before `due` (the fold grew past its bounds): the
    /// earlier notifications' events, not this one's.
    pub spilled: Vec<Event>,
    /// Summaries of a window that ended, then the event admitted, if it was.
    pub due: Vec<Event>,
}

#[cfg(test)]
impl Admitted {
    /// Every line, in the order they are written.
    fn lines(self) -> impl Iterator<Item = Event> {
        self.spilled.into_iter().chain(self.due)
    }
}

/// The line limit's state.
#[derive(Default)]
struct Lines {
    /// When the current window began.
    since: Option<Instant>,
    /// Bytes of event lines written in it.
    written: u64,
    /// Events held back in it, by kind (event, action, importance, exempted): how many, and
    /// the last one.
    held: BTreeMap<HeldKind, (u64, Event)>,
    /// Bytes kept in `repeats` (the fold's last events).
    folded_bytes: usize,
}

/// What held events are counted by: an exempted run is never summed up with one that was
/// not, nor an event with one of another importance.
type HeldKind = (&'static str, &'static str, crate::vocab::Importance, bool);

impl RateLimit {
    pub(super) fn new(config: &EventsConfig) -> Self {
        Self {
            window: Duration::from_secs(config.rate_limit_seconds),
            max_bytes: config.max_bytes,
            repeats: HashMap::new(),
            lines: Lines::default(),
        }
    }

    /// The events to write now for `ev`, at `now`, in this order: folds written out early
    /// (the fold grew past its bounds), summaries of a window that ended, then `ev` itself
    /// (with `repeated` set when identical ones were suppressed before it) unless it is
    /// suppressed or held.
    pub(super) fn admit(&mut self, ev: Event, now: Instant) -> Admitted {
        if self.window.is_zero() {
            return Admitted {
                spilled: Vec::new(),
                due: vec![ev],
            };
        }
        let mut due = Vec::new();
        if self
            .lines
            .since
            .is_none_or(|s| now.duration_since(s) >= self.window)
        {
            due.extend(self.summaries());
            self.lines.since = Some(now);
            self.lines.written = 0;
        }
        let mut spilled = Vec::new();
        if let Some(ev) = self.fold(ev, now, &mut spilled) {
            due.extend(self.limit(ev));
        }
        Admitted { spilled, due }
    }

    /// When the notify fd closes: every folded event and every summary still due.
    pub(super) fn flush(&mut self) -> Vec<Event> {
        let mut out = self.drain_folds();
        out.extend(self.summaries());
        out
    }

    /// The fold of identical events: `None` when `ev` is suppressed (and kept, cut, as its
    /// key's last one). Folds written out early go to `out`.
    fn fold(&mut self, mut ev: Event, now: Instant, out: &mut Vec<Event>) -> Option<Event> {
        let mut h = DefaultHasher::new();
        // An exempted run and an unexempted one are never folded together: a report that
        // skips exempted runs must not lose the other.
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
        if let Some(r) = self.repeats.get_mut(&key) {
            if now.saturating_duration_since(r.written) < self.window {
                r.suppressed += 1;
                ev.cut_to_keep();
                let size = ev.kept_bytes();
                let old = r.last.replace(ev).map_or(0, |e| e.kept_bytes());
                self.lines.folded_bytes = (self.lines.folded_bytes + size).saturating_sub(old);
                if self.lines.folded_bytes > FOLDED_BYTES {
                    // Written out now rather than kept: bounded in bytes, not only in keys.
                    out.extend(self.drain_folds());
                }
                return None;
            }
            if r.suppressed > 0 {
                ev.repeated = Some(r.suppressed);
            }
            if let Some(last) = &r.last {
                self.lines.folded_bytes = self.lines.folded_bytes.saturating_sub(last.kept_bytes());
            }
            *r = Repeat::written_at(now);
            return Some(ev);
        }
        if self.repeats.len() >= FOLD_KEYS {
            out.extend(self.drain_folds());
        }
        self.repeats.insert(key, Repeat::written_at(now));
        Some(ev)
    }

    /// The byte limit: `ev` when the window has room for its line (the first line of a window
    /// always does), else nothing (it is held, counted).
    fn limit(&mut self, ev: Event) -> Option<Event> {
        let lines = &mut self.lines;
        let size = serde_json::to_vec(&ev).map_or(0, |l| l.len() as u64 + 1);
        if lines.written == 0 || lines.written.saturating_add(size) <= self.max_bytes {
            lines.written = lines.written.saturating_add(size);
            return Some(ev);
        }
        hold(lines, ev);
        None
    }

    /// One line per kind of event held back: the last of them, standing for all.
    fn summaries(&mut self) -> Vec<Event> {
        let max = self.max_bytes;
        let secs = self.window.as_secs();
        std::mem::take(&mut self.lines.held)
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

    /// The last suppressed event of every key, each with the others folded into it, through
    /// the line limit (what it holds back is counted in the next summaries).
    fn drain_folds(&mut self) -> Vec<Event> {
        self.lines.folded_bytes = 0;
        let lasts: Vec<Event> = self
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
        lasts.into_iter().filter_map(|ev| self.limit(ev)).collect()
    }
}

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

    fn limit(secs: u64, max_bytes: u64) -> RateLimit {
        RateLimit::new(&EventsConfig {
            rate_limit_seconds: secs,
            max_bytes,
            ..EventsConfig::default()
        })
    }

    fn event(argv: &str) -> Event {
        let mut ev = crate::event::tests::test_event("");
        ev.exec = Some(crate::event::ExecInfo {
            syscall: crate::vocab::Syscall::Execve,
            abi: crate::vocab::Abi::X86_64,
            path: "/lib64/ld-linux-x86-64.so.2".into(),
            resolved: None,
            argv: vec!["ld.so".into(), argv.into()],
            argv_truncated: false,
        });
        ev
    }

    /// Every line stands for 1 + `repeated` events.
    fn stands_for(lines: &[Event]) -> u64 {
        lines.iter().map(|e| 1 + e.repeated.unwrap_or(0)).sum()
    }

    #[test]
    fn identical_events_in_a_window_are_folded_into_one_line_each_way_out() {
        let mut r = limit(10, 1 << 20);
        let t0 = Instant::now();
        let mut out = Vec::new();
        for i in 0..5 {
            out.extend(
                r.admit(event("/tmp/p"), t0 + Duration::from_secs(i))
                    .lines(),
            );
        }
        assert_eq!(out.len(), 1, "the first is written, four are folded");
        // After the window, the next identical one says how many were suppressed.
        let later: Vec<Event> = r
            .admit(event("/tmp/p"), t0 + Duration::from_secs(11))
            .lines()
            .collect();
        assert_eq!(later.len(), 1);
        assert_eq!(later[0].repeated, Some(4));
        // A distinct event is never folded.
        assert_eq!(
            r.admit(event("/tmp/q"), t0 + Duration::from_secs(12))
                .lines()
                .count(),
            1
        );
        // Folded at close: the last suppressed one stands for the others.
        r.admit(event("/tmp/q"), t0 + Duration::from_secs(13));
        r.admit(event("/tmp/q"), t0 + Duration::from_secs(14));
        let flushed = r.flush();
        assert_eq!(stands_for(&flushed), 2);
        assert_eq!(
            stands_for(&out) + stands_for(&later) + 1 + stands_for(&flushed),
            5 + 1 + 3
        );
    }

    #[test]
    fn past_the_byte_limit_events_are_held_and_summed_up_when_the_window_ends() {
        let one_line = serde_json::to_vec(&event("/tmp/a")).unwrap().len() as u64 + 1;
        let mut r = limit(10, 3 * one_line);
        let t0 = Instant::now();
        let mut written = Vec::new();
        for i in 0..10 {
            written.extend(r.admit(event(&format!("/tmp/{i:x}")), t0).lines());
        }
        assert_eq!(written.len(), 3);
        // The first event of the next window brings the summary of what was held.
        let next: Vec<Event> = r
            .admit(event("/tmp/next"), t0 + Duration::from_secs(10))
            .lines()
            .collect();
        assert_eq!(next.len(), 2);
        assert_eq!(next[0].repeated, Some(6));
        assert!(next[0].reason.contains("this line stands for 7 event(s)"));
        assert_eq!(stands_for(&written) + stands_for(&next), 11);
    }

    #[test]
    fn a_window_of_zero_writes_everything() {
        let mut r = limit(0, 1);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(r.admit(event("/tmp/p"), t0).lines().count(), 1);
        }
        assert!(r.flush().is_empty());
    }
}
