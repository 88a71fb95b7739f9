//! What a supervisor costs as `/proc` shows it: its notify fds, memory and CPU time.

use execguard_testkit as harness;
use execguard_testkit::bundle;
use execguard_testkit::fixture;
use execguard_testkit::Supervisor;
use std::process::Command;
use std::time::Duration;
use std::time::Instant;

/// What the worker logs when a container's notify fd closes.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FdSummary {
    pub(crate) execs: u64,
    pub(crate) exec_p99: u64,
    pub(crate) images: u64,
    pub(crate) image_p50: u64,
    pub(crate) image_p99: u64,
    /// Nanoseconds per phase, in `execguard::phases::Phase::ALL` order.
    pub(crate) phases: [u64; 5],
    /// Times the serving thread left the container's CPU cgroup for late answers.
    pub(crate) left_cpu_cgroup: u64,
}

impl FdSummary {
    pub(crate) fn notifications(&self) -> u64 {
        self.execs + self.images
    }
}

/// The worker's summary for a container (logged when its notify fd closes).
pub(crate) fn fd_summary(sup: &Supervisor, id: &str) -> Option<FdSummary> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = sup.log();
        let line = log
            .lines()
            .find(|l| l.contains("notify fd closed") && l.contains(&format!("container={id} ")));
        if let Some(line) = line {
            let field = |k: &str| -> u64 {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(&format!("{k}=")))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            };
            let mut phases = [0; 5];
            for (i, p) in execguard::phases::Phase::ALL.iter().enumerate() {
                phases[i] = field(&format!("{}_ns", p.as_str()));
            }
            return Some(FdSummary {
                execs: field("execs"),
                exec_p99: field("exec_p99_us"),
                images: field("images"),
                image_p50: field("image_p50_us"),
                image_p99: field("image_p99_us"),
                phases,
                left_cpu_cgroup: field("left_cpu_cgroup"),
            });
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Resident memory (KiB) of the keeper and of its worker, each as (anonymous, file-backed).
pub(crate) fn rss_parts(sup: &Supervisor) -> [(u64, u64); 2] {
    [sup.pid(), sup.worker_pid()].map(|pid| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        (field("RssAnon:"), field("RssFile:") + field("RssShmem:"))
    })
}

/// RSS (KiB) and CPU time (s) of the keeper and its worker.
pub(crate) fn supervisor_usage(sup: &Supervisor) -> (u64, f64) {
    let ticks = 100.0; // USER_HZ
    let mut rss = 0;
    let mut cpu = 0.0;
    for pid in [sup.pid(), sup.worker_pid()] {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        rss += status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let after = stat.rsplit(')').next().unwrap_or("");
        let f: Vec<&str> = after.split_whitespace().collect();
        let (utime, stime) = (
            f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0),
            f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0),
        );
        cpu += (utime + stime) / ticks;
    }
    (rss, cpu)
}

/// The RSS (KiB) of `sup` with `idle` guarded containers sleeping, and its parts.
pub(crate) fn idle_rss(sup: &Supervisor, idle: usize, name: &str) -> (u64, [(u64, u64); 2]) {
    let bundles: Vec<_> = (0..idle)
        .map(|i| {
            bundle(
                &sup.config,
                &format!("{name}-{i}"),
                "touch /work/up; exec sleep 300",
                &[("execguard.io/mode", "enforce")],
                None,
            )
        })
        .collect();
    let children: Vec<_> = bundles.iter().map(|b| b.spawn()).collect();
    for b in &bundles {
        harness::wait_for(&b.work.join("up"), "an idle container");
    }
    std::thread::sleep(Duration::from_millis(300));
    let (rss, _) = supervisor_usage(sup);
    let parts = rss_parts(sup);
    for b in &bundles {
        let _ = Command::new("runc")
            .arg("--root")
            .arg(fixture().dir.join("runc-state"))
            .args(["kill", &b.id, "KILL"])
            .output();
    }
    for (b, c) in bundles.into_iter().zip(children) {
        b.wait(c);
    }
    (rss, parts)
}

/// "keeper A+F, worker A+F MiB" (anonymous + file-backed).
pub(crate) fn parts_text(parts: &[(u64, u64); 2]) -> String {
    let mib = |kib: u64| kib as f64 / 1024.0;
    format!(
        "keeper {:.1}+{:.1}, worker {:.1}+{:.1} MiB anonymous+file",
        mib(parts[0].0),
        mib(parts[0].1),
        mib(parts[1].0),
        mib(parts[1].1)
    )
}
