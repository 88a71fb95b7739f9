//! Fault injection for the recovery tests: a worker kills itself (SIGKILL) at one of the two
//! moments at which a real crash loses the most. `EXECGUARD_FAULT_DIE_AFTER_RECV=N:MARKER`:
//! right after it receives its Nth notification, before it records it.
//! `EXECGUARD_FAULT_DIE_MID_RECORD=N:MARKER`: while it records its Nth notification, after the
//! id and before the state (a torn record). Each fires once: the marker file is created first,
//! and a worker that finds it does nothing.
//!
//! And for the scheduling tests, `EXECGUARD_FAULT_SLOW_ANSWER=MICROS`: every answer first
//! spins that long on the CPU, as an inspection that needs the CPU for a while would (an
//! answer's CPU time is what a busy host preempts). Unset, each costs one atomic load per
//! notification.
//!
//! Only in a build with the `fault-injection` feature (the test command's): elsewhere every
//! hook is an empty function and the variables are ignored.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Whether this build has fault injection (the `fault-injection` feature).
pub const ENABLED: bool = cfg!(feature = "fault-injection");

/// The environment variables.
pub const DIE_AFTER_RECV_ENV: &str = "EXECGUARD_FAULT_DIE_AFTER_RECV";
pub const DIE_MID_RECORD_ENV: &str = "EXECGUARD_FAULT_DIE_MID_RECORD";
pub const SLOW_ANSWER_ENV: &str = "EXECGUARD_FAULT_SLOW_ANSWER";

/// Microseconds every answer spins first; 0: off.
static SLOW_ANSWER_US: AtomicU64 = AtomicU64::new(0);

/// One place a worker can be made to die.
struct Fault {
    env: &'static str,
    /// Passes left before it fires; 0: off.
    remaining: AtomicU64,
    marker: OnceLock<PathBuf>,
}

static AFTER_RECV: Fault = Fault::new(DIE_AFTER_RECV_ENV);
static MID_RECORD: Fault = Fault::new(DIE_MID_RECORD_ENV);

impl Fault {
    const fn new(env: &'static str) -> Self {
        Self {
            env,
            remaining: AtomicU64::new(0),
            marker: OnceLock::new(),
        }
    }

    fn configure(&self) {
        let Ok(value) = std::env::var(self.env) else {
            return;
        };
        let parsed = value
            .split_once(':')
            .and_then(|(n, marker)| Some((n.parse::<u64>().ok()?, PathBuf::from(marker))));
        let Some((n, marker)) = parsed else {
            tracing::warn!(value, "{} is not N:MARKER; ignored", self.env);
            return;
        };
        if marker.exists() {
            return;
        }
        let _ = self.marker.set(marker);
        self.remaining.store(n, Ordering::Relaxed);
    }

    fn pass(&self, what: &str) {
        if self.remaining.load(Ordering::Relaxed) == 0 {
            return;
        }
        if self.remaining.fetch_sub(1, Ordering::Relaxed) == 1 {
            if let Some(marker) = self.marker.get() {
                let _ = std::fs::write(marker, b"");
            }
            tracing::warn!("fault injection: the worker dies {what}");
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Reads the settings once, when the worker starts.
pub(super) fn configure() {
    if !ENABLED {
        return;
    }
    AFTER_RECV.configure();
    MID_RECORD.configure();
    if let Ok(value) = std::env::var(SLOW_ANSWER_ENV) {
        match value.parse::<u64>() {
            Ok(us) => SLOW_ANSWER_US.store(us, Ordering::Relaxed),
            Err(_) => tracing::warn!(value, "{SLOW_ANSWER_ENV} is not MICROS; ignored"),
        }
    }
}

/// Called as an answer starts.
pub(super) fn slow_answer() {
    if !ENABLED {
        return;
    }
    let us = SLOW_ANSWER_US.load(Ordering::Relaxed);
    if us == 0 {
        return;
    }
    let started = Instant::now();
    while started.elapsed() < Duration::from_micros(us) {
        std::hint::spin_loop();
    }
}

/// Called after every receipt, before the notification is recorded.
pub(super) fn after_recv() {
    if !ENABLED {
        return;
    }
    AFTER_RECV.pass("after a receipt, before recording it");
}

/// Called while a received notification is recorded, between its id and its state.
pub(super) fn mid_record() {
    if !ENABLED {
        return;
    }
    MID_RECORD.pass("while recording a notification, after its id and before its state");
}
