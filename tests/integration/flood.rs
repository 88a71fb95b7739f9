//! One container flooding the shared worker (issue 25, item 2): 300 distinct loader runs with
//! a 60 KB argument each, twice, in audit mode. The worker's memory stays bounded in bytes
//! (what it keeps per notify fd for folded events is cut), the flood is rate-limited to a
//! bounded number of event bytes with a summary per interval (nothing uncounted), and a quiet
//! container beside it is answered throughout.

use crate::harness::{bundle, Supervisor};

/// The worker's resident memory, in KiB.
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_flood_is_bounded_in_memory_and_lines() {
    needs_root!();
    // The exec checkpoint reads argv from the exec's memory (up to 128 arguments of 4096
    // bytes): the most an event can hold.
    let sup = Supervisor::start("audit", "[detect]\nexec_checkpoint = true\n");
    let warm = crate::harness::run_container(
        &sup,
        "warm",
        "/lib64/ld-linux-x86-64.so.2 /bin/true && touch /work/w",
        &[],
    );
    assert!(warm.marker("w"), "{}", warm.describe());
    let before = rss_kib(sup.worker_pid());
    let flood = bundle(
        &sup.config,
        "flood",
        "A=$(head -c 4000 /dev/zero | tr '\\0' a); set --; j=0; \
         while [ $j -lt 15 ]; do set -- \"$@\" \"$A\"; j=$((j+1)); done; for round in 1 2; do i=0; \
         while [ $i -lt 300 ]; do /lib64/ld-linux-x86-64.so.2 /bin/true $i \"$@\"; i=$((i+1)); done; \
         done; touch /work/done; while [ ! -e /work/end ]; do sleep 0.05; done",
        &[],
        None,
    );
    const QUIET: &str =
        "s=$(date +%s%N); i=0; while [ $i -lt 300 ]; do /bin/true; i=$((i+1)); done; \
         echo $(( ($(date +%s%N) - s) / 300000 )) > /work/us; touch /work/done";
    // The quiet container alone first: its time per exec, to compare (printed, not judged:
    // the flood also takes CPU).
    let alone = crate::harness::run_container(&sup, "quiet-alone", QUIET, &[]);
    let alone_us = std::fs::read_to_string(alone.work.join("us")).unwrap_or_default();
    let quiet = bundle(&sup.config, "quiet", QUIET, &[], None);
    let (fw, qw) = (flood.work.clone(), quiet.work.clone());
    let (fid, qid) = (flood.id.clone(), quiet.id.clone());
    let f = flood.spawn_for(300);
    let q = quiet.spawn_for(300);
    wait_for_long(&qw.join("done"), "the quiet container's 300 execs");
    wait_for_long(&fw.join("done"), "the flood");
    // Measured while the flooding container still runs: what it holds now is what it costs.
    let during = rss_kib(sup.worker_pid());
    let beside_us = std::fs::read_to_string(qw.join("us")).unwrap_or_default();
    std::fs::write(fw.join("end"), "").unwrap();
    flood.wait(f);
    quiet.wait(q);
    // The folded and held events are written when the notify fd closes, just after runc ends.
    let count = || -> (Vec<serde_json::Value>, u64) {
        let events = sup.events_of(&fid);
        let counted = events
            .iter()
            .filter(|e| e["event"] == "binary_executed_by_loader")
            .map(|e| 1 + e["repeated"].as_u64().unwrap_or(0))
            .sum();
        (events, counted)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (events, counted) = loop {
        let (events, counted) = count();
        if counted >= 600 || std::time::Instant::now() > deadline {
            break (events, counted);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let bytes: usize = std::fs::read_to_string(&sup.events)
        .unwrap()
        .lines()
        .filter(|l| l.contains(&fid))
        .map(str::len)
        .sum();
    eprintln!(
        "worker RSS {before} KiB before, {during} KiB during the flood; {} lines, {bytes} bytes \
         of events for 600 loader runs (counted {counted}); a quiet container's fork+exec: {} µs \
         alone, {} µs beside the flood",
        events.len(),
        alone_us.trim(),
        beside_us.trim()
    );
    assert_eq!(counted, 600, "every run is counted");
    assert!(
        during < before + 32 * 1024,
        "the worker grew from {before} to {during} KiB"
    );
    // 4 MiB of lines, and a summary per kind.
    assert!(bytes < 5 << 20, "{bytes} bytes of events");
    assert!(sup.events_of(&qid).is_empty());
}

fn wait_for_long(path: &std::path::Path, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(240);
    while !path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: {} did not appear",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
