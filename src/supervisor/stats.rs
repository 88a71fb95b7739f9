//! Latency histograms for the supervisor's answers: exact to the microsecond below 256 µs,
//! then 64 buckets per power of two (under 1.6 % error), up to about 17 minutes. Fixed size,
//! so a flood of notifications costs no memory.

const LINEAR: u64 = 256;
const PER_OCTAVE: u64 = 64;
const OCTAVES: u64 = 32;
const BUCKETS: usize = (LINEAR + PER_OCTAVE * OCTAVES) as usize;

#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Vec<u32>,
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
        }
    }
}

fn bucket(us: u64) -> usize {
    if us < LINEAR {
        return us as usize;
    }
    let exp = 63 - u64::from(us.leading_zeros()); // >= 8
    let shift = exp - 6; // keep 7 bits: 64..127
    let octave = (exp - 8).min(OCTAVES - 1);
    let sub = ((us >> shift) - PER_OCTAVE).min(PER_OCTAVE - 1);
    (LINEAR + octave * PER_OCTAVE + sub) as usize
}

fn lower_bound(b: usize) -> u64 {
    let b = b as u64;
    if b < LINEAR {
        return b;
    }
    let octave = (b - LINEAR) / PER_OCTAVE;
    let sub = (b - LINEAR) % PER_OCTAVE;
    (PER_OCTAVE + sub) << (octave + 2)
}

impl Histogram {
    pub fn record(&mut self, micros: u64) {
        let b = bucket(micros);
        self.counts[b] = self.counts[b].saturating_add(1);
        self.total += 1;
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// The value below which a fraction `q` of the samples lie (a bucket's lower bound).
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((self.total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (b, c) in self.counts.iter().enumerate() {
            seen += u64::from(*c);
            if seen >= rank {
                return lower_bound(b);
            }
        }
        lower_bound(BUCKETS - 1)
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a = a.saturating_add(*b);
        }
        self.total += other.total;
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
        let mut h = Histogram::default();
        for us in 1..=100 {
            h.record(us);
        }
        assert_eq!(h.quantile(0.5), 50);
        assert_eq!(h.quantile(0.99), 99);
        assert_eq!(h.count(), 100);
        let mut g = Histogram::default();
        g.record(1000);
        h.merge(&g);
        assert!(h.quantile(1.0) >= 990);
    }
}
