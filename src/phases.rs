//! Where a notification's handling spends its time: a clock that charges the time since its
//! last lap to one phase. The worker sums these per notify fd and logs them when the fd
//! closes; the benchmark prints them per exec.

use std::time::Instant;

/// A phase of handling one notification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Reading the target: its memory, or `/proc/PID/{auxv,cmdline,environ}`.
    Read,
    /// Finding the file: path resolution in the container's root, `/proc/PID/exe`, the
    /// interpreter's mapping.
    Resolve,
    /// Deciding what the file is: the cache, or its ELF headers.
    Classify,
    /// The policy's verdict and the answer to the kernel.
    Answer,
    /// Writing the event.
    Log,
}

impl Phase {
    pub const ALL: [Phase; 5] = [
        Phase::Read,
        Phase::Resolve,
        Phase::Classify,
        Phase::Answer,
        Phase::Log,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Read => "read",
            Phase::Resolve => "resolve",
            Phase::Classify => "classify",
            Phase::Answer => "answer",
            Phase::Log => "log",
        }
    }
}

/// Charges elapsed time to phases.
#[derive(Clone, Debug)]
pub(crate) struct PhaseClock {
    last: Instant,
    /// Nanoseconds per phase, in [`Phase::ALL`] order.
    pub(crate) nanos: [u64; 5],
    /// When the answer was handed to the kernel.
    pub(crate) answered: Option<Instant>,
}

impl Default for PhaseClock {
    fn default() -> Self {
        Self::start()
    }
}

impl PhaseClock {
    pub(crate) fn start() -> Self {
        Self {
            last: Instant::now(),
            nanos: [0; 5],
            answered: None,
        }
    }

    /// Charges the time so far to [`Phase::Answer`] and notes that the answer goes to the kernel
    /// now. The answer call itself is charged to no phase: with the synchronous wake-up it hands
    /// this CPU to the woken task, so its length is the task's time, not the supervisor's.
    pub(crate) fn answering(&mut self) {
        self.lap(Phase::Answer);
        self.answered = Some(self.last);
    }

    /// Starts the next lap now, charging the time since the last one to no phase.
    pub(crate) fn skip(&mut self) {
        self.last = Instant::now();
    }

    /// Charges the time since the last lap (or the start) to `phase`.
    pub(crate) fn lap(&mut self, phase: Phase) {
        let now = Instant::now();
        let spent = u64::try_from(now.duration_since(self.last).as_nanos()).unwrap_or(u64::MAX);
        self.nanos[phase as usize] = self.nanos[phase as usize].saturating_add(spent);
        self.last = now;
    }

    /// Adds another clock's totals to this one's.
    pub(crate) fn add(&mut self, other: &PhaseClock) {
        for (a, b) in self.nanos.iter_mut().zip(other.nanos) {
            *a = a.saturating_add(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn laps_charge_the_phase_named() {
        let mut c = PhaseClock::start();
        std::thread::sleep(std::time::Duration::from_millis(2));
        c.lap(Phase::Resolve);
        c.lap(Phase::Answer);
        assert!(c.nanos[Phase::Resolve as usize] >= 2_000_000);
        assert!(c.nanos[Phase::Answer as usize] < 2_000_000);
        assert_eq!(c.nanos[Phase::Read as usize], 0);
        let mut total = PhaseClock::start();
        total.add(&c);
        total.add(&c);
        assert_eq!(
            total.nanos[Phase::Resolve as usize],
            2 * c.nanos[Phase::Resolve as usize]
        );
    }
}
