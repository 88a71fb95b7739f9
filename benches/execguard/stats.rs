//! Statistics of paired rounds: medians, their 95 % intervals, targets.

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// About 95 % confidence bounds for the median of `v`, free of any assumption about the
/// distribution: the order statistics k and n + 1 - k with k = n/2 - 0.98 √n (the binomial
/// bounds for a sample's median). With a handful of values it is the whole range.
pub(crate) fn median_interval(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    // ⌈0.98 √n⌉ in integers, then the 1-based order statistic k, at least the smallest value.
    let half_width = (0..=n).find(|h| h * h * 10_000 >= 9_604 * n).unwrap_or(n);
    let k = (n / 2).saturating_sub(half_width).max(1);
    (v[k - 1], v[n - k])
}

pub(crate) fn target(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

/// `rounds` pairs of measurements without and with, which one goes first alternating: each
/// side's values and the paired ratios (with / without).
pub(crate) fn paired_rounds(
    rounds: usize,
    mut without: impl FnMut(usize) -> f64,
    mut with: impl FnMut(usize) -> f64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (mut off, mut on, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let (a, b) = if round % 2 == 0 {
            let a = without(round);
            (a, with(round))
        } else {
            let b = with(round);
            (without(round), b)
        };
        off.push(a);
        on.push(b);
        ratios.push(b / a);
    }
    (off, on, ratios)
}
