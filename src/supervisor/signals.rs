//! What the keeper and its workers agree on about signals and the keeper's start time.

use nix::sys::signal::{SigSet, Signal};

/// The signals the keeper takes through its signalfd (blocked in the keeper, so inherited
/// blocked by the worker, which unblocks them).
pub(super) fn keeper_signals() -> SigSet {
    let mut signals = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGUSR2,
        Signal::SIGCHLD,
        Signal::SIGHUP,
    ] {
        signals.add(s);
    }
    signals
}

/// The environment variable that carries the keeper's start time (seconds since the epoch).
pub(crate) const KEEPER_STARTED_ENV: &str = "EXECGUARD_KEEPER_STARTED";
