//! The worker's counters: what every serving thread adds to without locks, and what status
//! and metrics read.

use std::sync::atomic::AtomicU64;

/// Upper bounds (µs) of the answer-latency histogram's buckets.
pub(crate) const LATENCY_BUCKETS_US: [u64; 12] = [
    5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 100000,
];
/// Counters every worker thread adds to, without locks.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) exec_notifications: AtomicU64,
    pub(crate) image_notifications: AtomicU64,
    pub(crate) other_notifications: AtomicU64,
    pub(crate) denials: AtomicU64,
    pub(crate) notification_errors: AtomicU64,
    /// Times a serving thread left its container's CPU cgroup for late answers.
    pub(crate) cpu_cgroup_leaves: AtomicU64,
    /// Image notifications answered from the exec record alone.
    pub(crate) images_by_record: AtomicU64,
    /// Receive-to-answer time of every notification.
    pub(crate) latency: crate::supervisor::stats::Histogram,
}

/// Per-container counters, shown by `execguard status`.
#[derive(Default)]
pub(crate) struct ContainerCounters {
    pub(crate) execs: AtomicU64,
    pub(crate) images: AtomicU64,
    pub(crate) events: AtomicU64,
    pub(crate) denials: AtomicU64,
}
