//! Part 4: 8 containers storming at once, and the supervisor's memory.

use crate::guards::storm_bundle;
use crate::guards::storm_result;
use crate::guards::Guard;
use crate::guards::Guards;
use crate::measure::fd_summary;
use crate::measure::supervisor_usage;
use crate::stats::median;
use crate::stats::target;
use serde_json::json;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Instant;

/// 8 containers storming at once, unguarded, guarded (default) and guarded with the worker's
/// threads in the supervisor's CPU cgroup, in rounds whose order rotates: on 2 cores one 8-way
/// run's tail is noise, so each round is paired and the medians of rounds are kept.
pub(crate) fn scale(guards: &Guards, n: usize, rounds: usize, out: &mut Value) {
    let busy = 8;
    let sup = &guards.default;
    let kinds = [Guard::Unguarded, Guard::Enforce, Guard::EnforceOwnCgroup];
    // Per round and kind: the median over containers of p50, p99 and mean (µs).
    let mut sides: Vec<BTreeMap<&str, [f64; 3]>> = Vec::new();
    let mut worst_p99: BTreeMap<&str, u64> = BTreeMap::new();
    // Containers served, and how many of their threads left the container's CPU cgroup.
    let (mut served, mut left) = (0, 0);
    let mut cpu = 0.0;
    let mut wall = 0.0;
    for round in 0..rounds {
        let mut side = BTreeMap::new();
        let mut order = kinds;
        order.rotate_left(round % kinds.len());
        for g in order {
            let bundles: Vec<_> = (0..busy)
                .map(|i| storm_bundle(guards, g, &format!("scale-{}-{round}-{i}", g.name()), n))
                .collect();
            let (_, cpu_before) = supervisor_usage(sup);
            let started = Instant::now();
            let children: Vec<_> = bundles.iter().map(|b| b.spawn()).collect();
            let runs: Vec<_> = bundles
                .into_iter()
                .zip(children)
                .map(|(b, c)| b.wait(c))
                .collect();
            if g == Guard::Enforce {
                wall += started.elapsed().as_secs_f64();
                cpu += supervisor_usage(sup).1 - cpu_before;
            }
            if let Some(guarding) = guards.supervisor(g) {
                let worst = worst_p99.entry(g.name()).or_default();
                for r in &runs {
                    if let Some(s) = fd_summary(guarding, &r.id) {
                        *worst = (*worst).max(s.image_p99.max(s.exec_p99));
                        if g == Guard::Enforce {
                            served += 1;
                            left += u64::from(s.left_cpu_cgroup > 0);
                        }
                    }
                }
            }
            let results: Vec<Value> = runs.iter().map(storm_result).collect();
            let q = |k: &str| {
                median(
                    results
                        .iter()
                        .map(|v| v[k].as_f64().unwrap() / 1000.0)
                        .collect(),
                )
            };
            side.insert(g.name(), [q("p50_ns"), q("p99_ns"), q("mean_ns")]);
        }
        sides.push(side);
    }
    let unguarded = |i: usize| median(sides.iter().map(|s| s["unguarded"][i]).collect());
    let added = |g: Guard, i: usize| {
        median(
            sides
                .iter()
                .map(|s| s[g.name()][i] - s["unguarded"][i])
                .collect(),
        )
    };
    println!(
        "\nscale: {busy} containers storming at once ({n} execs each), {rounds} paired rounds"
    );
    println!(
        "  per exec, unguarded (median of containers, then of rounds): p50 {:.1} µs  p99 {:.1} µs  mean {:.1} µs",
        unguarded(0),
        unguarded(1),
        unguarded(2)
    );
    let mut added_json = serde_json::Map::new();
    for g in [Guard::Enforce, Guard::EnforceOwnCgroup] {
        let a = [added(g, 0), added(g, 1), added(g, 2)];
        println!(
            "  added by {} as the containers see it: p50 {:+.1} µs  p99 {:+.1} µs  mean {:+.1} µs",
            g.name(),
            a[0],
            a[1],
            a[2]
        );
        added_json.insert(
            g.name().to_owned(),
            json!({"p50_us": a[0], "p99_us": a[1], "mean_us": a[2]}),
        );
    }
    let worst = |g: Guard| worst_p99.get(g.name()).copied().unwrap_or_default();
    println!(
        "  supervisor receive-to-answer p99, worst container of any round: {} µs   target ≤ 200 µs: {}   ({}: {} µs)",
        worst(Guard::Enforce),
        target(worst(Guard::Enforce) <= 200),
        Guard::EnforceOwnCgroup.name(),
        worst(Guard::EnforceOwnCgroup)
    );
    println!(
        "  enforce: {left} of {served} serving threads left their container's CPU cgroup for late answers"
    );
    println!("  supervisor CPU {cpu:.2} s over {wall:.2} s of guarded wall time");
    out["scale"] = json!({"containers": busy, "execs_each": n, "rounds": rounds,
        "unguarded_p50_us": unguarded(0), "unguarded_p99_us": unguarded(1),
        "unguarded_mean_us": unguarded(2), "added": added_json,
        "supervisor_p99_us_worst": worst(Guard::Enforce),
        "supervisor_p99_us_worst_own_cgroup": worst(Guard::EnforceOwnCgroup),
        "threads_served": served, "threads_left_cpu_cgroup": left,
        "supervisor_cpu_s": cpu, "guarded_wall_s": wall});
}
