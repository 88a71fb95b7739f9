//! Parts 1 and 2: exec storms in lockstep, and where the supervisor's time goes.

use crate::guards::storm;
use crate::guards::storm_bundle_script;
use crate::guards::Guard;
use crate::guards::Guards;
use crate::measure::fd_summary;
use crate::measure::FdSummary;
use crate::null_responder::query_maps;
use crate::null_responder::stat_proc;
use crate::stats::median;
use crate::stats::median_interval;
use crate::stats::target;
use execguard_testkit as harness;
use serde_json::json;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

/// System calls the worker makes per exec during a storm of `n` execs: `strace -c -f` attached
/// to the worker (its threads included) for the length of the storm.
pub(crate) fn syscalls_per_exec(guards: &Guards, g: Guard, n: usize) -> Option<Vec<(String, f64)>> {
    let sup = guards.supervisor(g)?;
    let out = tempfile::NamedTempFile::new().ok()?;
    let mut strace = Command::new("strace")
        .args(["-c", "-f", "-o"])
        .arg(out.path())
        .arg("-p")
        .arg(sup.worker_pid().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    // strace announces nothing on success: give it time to attach to every thread.
    std::thread::sleep(Duration::from_millis(500));
    storm(
        guards,
        g,
        &format!("strace-{}", g.name().replace('+', "-")),
        n,
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(strace.id()).expect("a pid fits in pid_t")),
        nix::sys::signal::Signal::SIGINT,
    );
    let _ = strace.wait();
    let text = std::fs::read_to_string(out.path()).ok()?;
    let mut calls = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        // % time, seconds, usecs/call, calls, [errors], syscall
        if f.len() < 5
            || f[0].starts_with('%')
            || f[0].starts_with('-')
            || f.last() == Some(&"total")
        {
            continue;
        }
        let Ok(count) = f[3].parse::<f64>() else {
            continue;
        };
        calls.push((f.last()?.to_string(), count / n as f64));
    }
    calls.sort_by(|a, b| b.1.total_cmp(&a.1));
    Some(calls)
}

/// The two FIFOs of a lockstep container (`execstorm --steps`): a byte on `go` starts a step,
/// a byte on `ready` says it is done. Both sides wait in a read, so the containers that are
/// not storming wake no CPU (polling for a file every millisecond, as before, woke one five
/// thousand times a second and moved the storms' numbers by several percent).
pub(crate) struct Lockstep {
    pub(crate) go: std::fs::File,
    pub(crate) ready: std::fs::File,
}

impl Lockstep {
    pub(crate) fn new(work: &Path) -> Self {
        let fifo = |name: &str| {
            let path = work.join(name);
            nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
            // Read and write: the open waits for no other end.
            std::fs::File::options()
                .read(true)
                .write(true)
                .open(&path)
                .unwrap()
        };
        Self {
            go: fifo("go"),
            ready: fifo("ready"),
        }
    }

    /// Starts a step and waits for its end (at most a minute).
    pub(crate) fn step(&self, g: Guard) {
        use std::io::{Read, Write};
        use std::os::fd::AsFd;
        (&self.go).write_all(b"x").unwrap();
        let mut fds = [nix::poll::PollFd::new(
            self.ready.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let n = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(60_000u16)).unwrap();
        assert_eq!(n, 1, "{}: a step of the exec storm did not end", g.name());
        (&self.ready).read_exact(&mut [0u8]).unwrap();
    }
}

/// The order of step `round` in a Williams design for `n` kinds: over `2n` steps (`n` when `n`
/// is even) each kind runs at each position equally often and right after each other kind
/// equally often, so what a step leaves behind (a supervisor's work, the kernel's, a cache's
/// contents) falls on every kind alike. (A rotation, as before, put each kind after the same
/// one every time: the null responder after the unguarded storm, enforce after audit; the
/// ratios moved by up to 1 % with the order.)
pub(crate) fn balanced_order(n: usize, round: usize) -> Vec<usize> {
    // 0, 1, n-1, 2, n-2, ...: the differences between neighbours cover 1..n once.
    let first = (0..n).map(|k| {
        if k % 2 == 1 {
            k.div_ceil(2)
        } else {
            (n - k / 2) % n
        }
    });
    let row = round % if n % 2 == 0 { n } else { 2 * n };
    let mut order: Vec<usize> = first.map(|k| (k + row) % n).collect();
    if row >= n {
        order.reverse();
    }
    order
}

/// Checks what [`balanced_order`] promises, for `n` kinds over one full cycle of its rows.
fn assert_balanced(n: usize) {
    let rows = if n % 2 == 0 { n } else { 2 * n };
    let mut after = vec![vec![0; n]; n];
    let mut at = vec![vec![0; n]; n];
    for round in 0..rows {
        let order = balanced_order(n, round);
        for (pos, &k) in order.iter().enumerate() {
            at[k][pos] += 1;
        }
        for w in order.windows(2) {
            after[w[1]][w[0]] += 1;
        }
    }
    let per_pair = rows / n;
    for k in 0..n {
        assert!(
            at[k].iter().all(|&c| c == rows / n),
            "positions of {k}: {:?}",
            at[k]
        );
        for j in (0..n).filter(|&j| j != k) {
            assert_eq!(after[k][j], per_pair, "{k} after {j}");
        }
    }
}

/// Exec storms in lockstep: one container per kind of guard, all alive for the whole run,
/// each running its storm in steps that the benchmark starts one container at a time, in a
/// balanced order ([`balanced_order`]). This machine's speed drifts by ±10 % over seconds; a step's ratios
/// compare runs less than a second apart, and the median of the steps is kept.
pub(crate) fn exec_storms(guards: &Guards, n: usize, rounds: usize, out: &mut Value) {
    assert_balanced(Guard::ALL.len());
    let mut per_exec: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut p50: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut p99: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut summaries: BTreeMap<&str, Vec<FdSummary>> = BTreeMap::new();
    let started: Vec<(Guard, harness::Bundle, std::process::Child, Lockstep)> = Guard::ALL
        .iter()
        .map(|&g| {
            let name = format!("storm-{}", g.name().replace([' ', '+'], "-"));
            let b = storm_bundle_script(
                guards,
                g,
                &name,
                &format!("/opt/eg/execstorm --steps {rounds} {n} /work"),
            );
            let lockstep = Lockstep::new(&b.work);
            // Every step of every container: about a millisecond per exec, with room to spare.
            let secs = u32::try_from(Guard::ALL.len() * rounds * n / 250 + 120).unwrap_or(u32::MAX);
            let child = b.spawn_for(secs);
            (g, b, child, lockstep)
        })
        .collect();
    for round in 0..rounds {
        let order: Vec<Guard> = balanced_order(Guard::ALL.len(), round)
            .into_iter()
            .map(|i| Guard::ALL[i])
            .collect();
        for g in order {
            let (_, b, _, lockstep) = started.iter().find(|(k, ..)| *k == g).unwrap();
            lockstep.step(g);
            let result = b.work.join(format!("step-{round}.json"));
            let v: Value = serde_json::from_slice(&std::fs::read(&result).unwrap()).unwrap();
            assert_eq!(v["failures"], 0, "{}: failed execs", g.name());
            let ns = |k: &str| v[k].as_f64().unwrap();
            per_exec
                .entry(g.name())
                .or_default()
                .push(ns("mean_ns") / 1000.0);
            p50.entry(g.name()).or_default().push(ns("p50_ns") / 1000.0);
            p99.entry(g.name()).or_default().push(ns("p99_ns") / 1000.0);
        }
    }
    // Guard `a`'s time per exec over guard `b`'s, step by step (each step ran both).
    let ratios = |a: &str, b: &str| -> Vec<f64> {
        per_exec[a]
            .iter()
            .zip(&per_exec[b])
            .map(|(a, b)| a / b)
            .collect()
    };
    // Their median, with its 95 % interval.
    let paired = |a: &str, b: &str| {
        let v = ratios(a, b);
        (median(v.clone()), median_interval(v))
    };
    for (g, b, child, _) in started {
        let run = b.wait(child);
        assert_eq!(run.status, 0, "{}", run.describe());
        if let Some(s) = guards
            .supervisor(g)
            .and_then(|sup| fd_summary(sup, &run.id))
        {
            summaries.entry(g.name()).or_default().push(s);
        }
    }
    let spread = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        (v[v.len() / 4], v[(v.len() * 3) / 4])
    };
    println!(
        "\nexec storm: {rounds} lockstep steps of {n} fork+exec of /bin/true per container; medians of the steps, ratios paired per step"
    );
    println!(
        "  {:<16} {:>11} {:>10} {:>10} {:>10} {:>10} {:>14}",
        "guard", "per exec", "/unguarded", "/null", "p50", "p99", "/null p25-p75"
    );
    let mut table = serde_json::Map::new();
    for g in Guard::ALL {
        let k = g.name();
        let (q1, q3) = spread(&ratios(k, "null responder"));
        let (u, (u_lo, u_hi)) = paired(k, "unguarded");
        let (nr, (n_lo, n_hi)) = paired(k, "null responder");
        let row = json!({
            "null_ratio_p25": q1, "null_ratio_p75": q3,
            "ratio_unguarded_95": [u_lo, u_hi], "ratio_null_95": [n_lo, n_hi],
            "per_exec_us": median(per_exec[k].clone()),
            "ratio_unguarded": u,
            "ratio_null": nr,
            "p50_us": median(p50[k].clone()),
            "p99_us": median(p99[k].clone()),
        });
        println!(
            "  {:<16} {:>8.1} µs {:>10.3} {:>10.3} {:>7.1} µs {:>7.1} µs {:>7.3}-{:.3}",
            k,
            row["per_exec_us"].as_f64().unwrap(),
            row["ratio_unguarded"].as_f64().unwrap(),
            row["ratio_null"].as_f64().unwrap(),
            row["p50_us"].as_f64().unwrap(),
            row["p99_us"].as_f64().unwrap(),
            q1,
            q3
        );
        table.insert(k.to_owned(), row);
    }
    // The floor of any guard on this filter, in two parts paired per step.
    let filter = Guard::Filter.name();
    let (f, (f_lo, f_hi)) = paired(filter, "unguarded");
    let (notify, (n_lo, n_hi)) = paired("null responder", filter);
    println!(
        "  the floor: a seccomp filter at all ({filter} / unguarded {f:.3}, 95 % {f_lo:.3}-{f_hi:.3}), then one notification per exec answered at once (null responder / {filter} {notify:.3}, 95 % {n_lo:.3}-{n_hi:.3})"
    );
    out["floor"] = json!({
        "filter_ratio": f, "filter_ratio_95": [f_lo, f_hi],
        "notification_ratio": notify, "notification_ratio_95": [n_lo, n_hi],
    });
    let own = Guard::EnforceOwnCgroup.name();
    let (joined_vs_own, _) = paired("enforce", own);
    println!(
        "  {own}: [worker] cpu_cgroup = \"supervisor\" (the answering thread stays in the supervisor's CPU cgroup); enforce / {own}: {joined_vs_own:.3} (paired)"
    );
    out["cpu_cgroup_ratio"] = json!(joined_vs_own);
    let on = Guard::EnforcePreloads.name();
    let (preloads, (lo, hi)) = paired(on, "enforce");
    println!(
        "  {on}: [rules] preload_from_writable = \"high\" (a look at every dynamic program's environment); {on} / enforce: {preloads:.3} (paired, 95 % {lo:.3}-{hi:.3})"
    );
    out["preload_look_ratio"] = json!({"ratio": preloads, "ratio_95": [lo, hi]});
    // What execguard costs beyond the kernel's part of its looks, paired per step.
    let looks = Guard::NullLooks.name();
    let mut beyond_looks = serde_json::Map::new();
    let shown: Vec<String> = ["audit", "enforce"]
        .iter()
        .map(|k| {
            let (m, (lo, hi)) = paired(k, looks);
            beyond_looks.insert((*k).to_owned(), json!({"ratio": m, "ratio_95": [lo, hi]}));
            format!("{k} {m:.3} (95 % {lo:.3}-{hi:.3})")
        })
        .collect();
    println!(
        "  {looks}: the null responder after the same /proc looks (stat exe; maps opened, PROCMAP_QUERY, closed); / {looks}: {}",
        shown.join(", ")
    );
    out["ratio_null_looks"] = Value::Object(beyond_looks);
    let r = |k: &str, which: &str| table[k][which].as_f64().unwrap();
    let bounds = |k: &str, which: &str| {
        let b = &table[k][which];
        (b[0].as_f64().unwrap(), b[1].as_f64().unwrap())
    };
    for k in ["audit", "enforce"] {
        let (u_lo, u_hi) = bounds(k, "ratio_unguarded_95");
        let (n_lo, n_hi) = bounds(k, "ratio_null_95");
        println!(
            "  target: {k} / unguarded ≤ 1.03: {} ({:.3}, 95 % {u_lo:.3}-{u_hi:.3}; the null responder alone {:.3});  {k} / null ≤ 1.03: {} ({:.3}, 95 % {n_lo:.3}-{n_hi:.3})",
            target(r(k, "ratio_unguarded") <= 1.03),
            r(k, "ratio_unguarded"),
            r("null responder", "ratio_unguarded"),
            target(r(k, "ratio_null") <= 1.03),
            r(k, "ratio_null")
        );
    }
    out["exec_storm"] = json!({"execs_per_step": n, "steps": rounds, "by_guard": table});

    println!(
        "\nwhere the supervisor's time goes, per notification (worker's clock, median of rounds)"
    );
    println!(
        "  {:<16} {:>7} {:>7} {:>7} {:>7} {:>7} {:>8} {:>10} {:>10}",
        "guard", "read", "resolve", "classify", "answer", "log", "total", "notif/exec", "p50/p99"
    );
    let mut phases_json = serde_json::Map::new();
    for (k, list) in &summaries {
        let per = |i: usize| -> f64 {
            median(
                list.iter()
                    .map(|s| s.phases[i] as f64 / s.notifications().max(1) as f64 / 1000.0)
                    .collect(),
            )
        };
        let cols: Vec<f64> = (0..5).map(per).collect();
        let notif_per_exec = median(
            list.iter()
                .map(|s| s.notifications() as f64 / (n * rounds) as f64)
                .collect(),
        );
        let p50 = median(list.iter().map(|s| s.image_p50 as f64).collect());
        let p99 = median(
            list.iter()
                .map(|s| s.image_p99.max(s.exec_p99) as f64)
                .collect(),
        );
        println!(
            "  {:<16} {:>5.1}µs {:>5.1}µs {:>6.1}µs {:>5.1}µs {:>5.1}µs {:>6.1}µs {:>10.2} {:>4}/{:<5}µs",
            k,
            cols[0],
            cols[1],
            cols[2],
            cols[3],
            cols[4],
            cols.iter().sum::<f64>(),
            notif_per_exec,
            p50,
            p99
        );
        let names = execguard::phases::Phase::ALL.map(|p| p.as_str());
        let mut m = serde_json::Map::new();
        for (name, v) in names.iter().zip(&cols) {
            m.insert(format!("{name}_us"), json!(v));
        }
        m.insert("notifications_per_exec".into(), json!(notif_per_exec));
        m.insert("image_p50_us".into(), json!(p50));
        m.insert("p99_us".into(), json!(p99));
        phases_json.insert(k.to_string(), Value::Object(m));
    }
    // With the default placement a serving thread that answers late goes home for a while
    // (`cpugroup::Placement`): one container storming alone should never make it.
    let left: Vec<String> = summaries
        .iter()
        .filter(|(k, _)| !k.contains("own-cg"))
        .map(|(k, list)| {
            let moves: u64 = list.iter().map(|s| s.left_cpu_cgroup).sum();
            phases_json
                .get_mut(*k)
                .and_then(Value::as_object_mut)
                .map(|m| m.insert("left_cpu_cgroup".into(), json!(moves)));
            format!("{k} {moves}")
        })
        .collect();
    println!(
        "  moves home from the container's CPU cgroup for late answers: {}",
        left.join(", ")
    );
    out["phases"] = Value::Object(phases_json);
}

/// The kernel's part of the image checkpoint's answer: the looks the worker makes for an
/// ordinary dynamic exec, timed here at processes that `/proc` has never shown (fresh pids, as
/// in an exec storm) and again at the same processes. A fresh pid's first look makes procfs
/// build its directory and entries (and the process's exit tears them down): that, not the
/// worker's own code, is most of "resolve" above. Timed in a tight loop, so with warm caches:
/// the worker, woken after an exec has run, pays more for the same calls.
pub(crate) fn procfs_floor(n: usize, out: &mut Value) {
    let stat = |pid: u32, name: &str| stat_proc(pid, name).expect("stat /proc/PID");
    // Any address will do: the cost is the lock and the lookup, not what is found.
    let maps = |pid: u32| query_maps(pid, 0x40_0000).expect("open /proc/PID/maps");
    type Look<'a> = (&'a str, Box<dyn Fn(u32) + 'a>);
    let looks: [Look; 4] = [
        ("/proc/PID (stat)", Box::new(|pid| stat(pid, ""))),
        ("/proc/PID/exe (stat)", Box::new(|pid| stat(pid, "exe"))),
        (
            "/proc/PID/maps (open, PROCMAP_QUERY, close)",
            Box::new(maps),
        ),
        (
            "exe and maps: the look at a dynamic exec",
            Box::new(|pid| {
                stat(pid, "exe");
                maps(pid);
            }),
        ),
    ];
    println!(
        "\nthe kernel's part: the worker's looks at {n} fresh processes each, in a tight loop (median µs, first look / again)"
    );
    let mut json_looks = serde_json::Map::new();
    for (name, look) in &looks {
        let mut children: Vec<_> = (0..n)
            .map(|_| {
                Command::new("sleep")
                    .arg("60")
                    .stdin(Stdio::null())
                    .spawn()
                    .expect("spawn sleep")
            })
            .collect();
        // Every child has finished its exec by then: the look sees the image it keeps.
        std::thread::sleep(Duration::from_millis(200));
        let mut first = Vec::new();
        let mut again = Vec::new();
        for c in &children {
            for times in [&mut first, &mut again] {
                let t = Instant::now();
                look(c.id());
                times.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
        for c in &mut children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let (f, a) = (median(first), median(again));
        println!("  {name:<44} {f:>6.1} / {a:.1}");
        json_looks.insert((*name).to_owned(), json!({"first_us": f, "again_us": a}));
    }
    out["procfs_floor"] = json!({"processes": n, "by_look": json_looks});
}
