//! The one latency histogram of the supervisor's answers, for the metrics endpoint and each
//! listener's summary: exact to the microsecond below 256 µs, then 64 buckets per power of two
//! (under 1.6 % error), up to about 17 minutes. Fixed size, so a flood of notifications costs
//! no memory; atomic, so every worker thread records into the shared one without a lock.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

const LINEAR: usize = 256;
const PER_OCTAVE: usize = 64;
const OCTAVES: usize = 32;
const BUCKETS: usize = LINEAR + PER_OCTAVE * OCTAVES;

#[derive(Debug)]
pub(crate) struct Histogram {
    counts: Box<[AtomicU32]>,
    total: AtomicU64,
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: (0..BUCKETS).map(|_| AtomicU32::new(0)).collect(),
            total: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }
}

fn bucket(us: u64) -> usize {
    match usize::try_from(us) {
        Ok(us) if us < LINEAR => return us,
        _ => {}
    }
    let exp = 63 - us.leading_zeros(); // >= 8
    let shift = exp - 6; // keep 7 bits: 64..127
    let octave = usize::try_from(exp - 8).map_or(OCTAVES - 1, |o| o.min(OCTAVES - 1));
    // `us >> shift` is 64..=127 (7 significant bits).
    let top = usize::try_from(us >> shift).unwrap_or(2 * PER_OCTAVE - 1);
    let sub = (top - PER_OCTAVE).min(PER_OCTAVE - 1);
    LINEAR + octave * PER_OCTAVE + sub
}

fn lower_bound(b: usize) -> u64 {
    if b < LINEAR {
        return b as u64;
    }
    let octave = (b - LINEAR) / PER_OCTAVE;
    let sub = (b - LINEAR) % PER_OCTAVE;
    ((PER_OCTAVE + sub) as u64) << (octave + 2)
}

impl Histogram {
    pub(crate) fn record(&self, micros: u64) {
        // A bucket saturates rather than wraps (2^32 samples of one microsecond value).
        let _ =
            self.counts[bucket(micros)]
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| c.checked_add(1));
        self.total.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(micros, Ordering::Relaxed);
    }

    pub(crate) fn count(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// The sum of the samples, in microseconds.
    pub(crate) fn sum(&self) -> u64 {
        self.sum_us.load(Ordering::Relaxed)
    }

    /// Samples of at most `bound` µs, for a Prometheus `le` bucket: exact below 256 µs; above,
    /// the bucket holding `bound` counts whole (values up to 1.6 % above it).
    pub(crate) fn count_at_most(&self, bound: u64) -> u64 {
        let last = bucket(bound);
        self.counts[..=last]
            .iter()
            .map(|c| u64::from(c.load(Ordering::Relaxed)))
            .sum()
    }

    /// The value below which `per_mille` thousandths of the samples lie (a bucket's lower
    /// bound): 500 for the median, 990 for p99.
    pub(crate) fn quantile(&self, per_mille: u64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        let rank = total.saturating_mul(per_mille).div_ceil(1000).max(1);
        let mut seen = 0u64;
        for (b, c) in self.counts.iter().enumerate() {
            seen += u64::from(c.load(Ordering::Relaxed));
            if seen >= rank {
                return lower_bound(b);
            }
        }
        lower_bound(BUCKETS - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for us in [
            0u64, 1, 255, 256, 257, 300, 511, 512, 1000, 4096, 100_000, 10_000_000,
        ] {
            let b = bucket(us);
            assert!(b >= last, "{us}");
            last = b;
            let lo = lower_bound(b);
            assert!(lo <= us, "{us}: {lo}");
            assert!(us - lo <= us / 60 + 1, "{us}: {lo}");
        }
    }

    #[test]
    fn quantiles() {
        let h = Histogram::default();
        for us in 1..=100 {
            h.record(us);
        }
        assert_eq!(h.quantile(500), 50);
        assert_eq!(h.quantile(990), 99);
        assert_eq!(h.count(), 100);
        assert_eq!(h.sum(), 5050);
        h.record(1000);
        assert!(h.quantile(1000) >= 990);
        assert_eq!(h.count_at_most(50), 50);
        assert_eq!(h.count_at_most(999), 100);
        assert_eq!(h.count_at_most(1000), 101);
    }
}
