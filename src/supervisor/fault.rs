//! Fault injection for the recovery tests. `EXECGUARD_FAULT_DIE_AFTER_RECV=N:MARKER` makes a
//! worker kill itself (SIGKILL) right after it receives its Nth notification, before it records
//! it: the moment at which a real crash loses the most. It fires once: the marker file is
//! created first, and a worker that finds it does nothing. Unset, it costs one atomic load per
//! notification.

use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable.
pub const DIE_AFTER_RECV_ENV: &str = "EXECGUARD_FAULT_DIE_AFTER_RECV";

/// Receipts left before the fault fires; 0: off.
static REMAINING: AtomicU64 = AtomicU64::new(0);
static MARKER: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Reads the setting once, when the worker starts.
pub(super) fn configure() {
    let Ok(value) = std::env::var(DIE_AFTER_RECV_ENV) else {
        return;
    };
    let Some((n, marker)) = value.split_once(':') else {
        tracing::warn!(value, "{DIE_AFTER_RECV_ENV} is not N:MARKER; ignored");
        return;
    };
    let (Ok(n), marker) = (n.parse::<u64>(), std::path::PathBuf::from(marker)) else {
        tracing::warn!(value, "{DIE_AFTER_RECV_ENV} is not N:MARKER; ignored");
        return;
    };
    if marker.exists() {
        return;
    }
    let _ = MARKER.set(marker);
    REMAINING.store(n, Ordering::Relaxed);
}

/// Called after every receipt, before the notification is recorded.
pub(super) fn after_recv() {
    if REMAINING.load(Ordering::Relaxed) == 0 {
        return;
    }
    if REMAINING.fetch_sub(1, Ordering::Relaxed) == 1 {
        if let Some(marker) = MARKER.get() {
            let _ = std::fs::write(marker, b"");
        }
        tracing::warn!("fault injection: the worker dies after a receipt, before recording it");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}
