//! `cargo bench --bench execguard [-- --quick] [-- --json PATH]`: execguard's cost, measured
//! side by side in one run against unguarded containers (runc, the same root filesystem):
//!
//! 1. exec storm: fork+exec of a dynamic /bin/true inside a container, one container per kind
//!    of guard: unguarded; execguard's filter with no listener (`filter only`: what any
//!    seccomp filter costs); a null responder (answers CONTINUE at once, on exactly the filter
//!    `inject` writes, with the synchronous wake-up, from the container's CPU cgroup); the
//!    same responder after execguard's two `/proc` looks (`null+looks`, the floor of a
//!    race-free look at the image); execguard in audit and in enforce mode (default config);
//!    enforce with `[detect] exec_checkpoint = true`; and enforce with `[worker] cpu_cgroup =
//!    "supervisor"`; and enforce with `[rules] preload_from_writable = "high"` (ordinary
//!    programs' preloads judged, off by default). The
//!    containers run in lockstep (FIFOs start and end each step; an idle one wakes no CPU), a
//!    step of N execs each in the orders of a balanced (Williams) design, ratios are taken within
//!    each step (paired), then the median of the steps, with a 95 % interval for it;
//! 2. where the supervisor's time goes: system calls per exec (`strace -c -f` on the worker,
//!    in a separate storm, when strace is installed) and a per-phase breakdown (read, resolve,
//!    classify, answer, log) from the worker's own clock; and the kernel's part of it, the same
//!    `/proc` looks timed at fresh processes and again at the same ones; the serving threads'
//!    moves home from their container's CPU cgroup (none expected with one storm at a time);
//! 3. a real build: zlib's configure and make (Debian's source package), unguarded and guarded,
//!    in pairs whose order alternates;
//! 4. scale: 8 containers storming at once, unguarded, guarded, and guarded with `[worker]
//!    cpu_cgroup = "supervisor"`: the exec latency added as the containers see it (p50, p99,
//!    mean) beside the supervisor's receive-to-answer p99 and how many serving threads left
//!    their container's CPU cgroup for late answers; and the supervisor's RSS
//!    with 50 idle guarded containers (the run's supervisor, then fresh ones with and without
//!    the exec record);
//! 5. what the exec record costs the execs it does not record (the host's, an unguarded
//!    container's): fork+exec storms on the host and in a pid namespace of its own, beside a
//!    guarded pid namespace, with the record's programs attached and without, in rounds of 2+2 storms whose order cancels a
//!    drift; and the programs' own time per run as the kernel counts it. The storms above run
//!    with four supervisors, each with its own record attached, so every exec there runs
//!    four copies of the programs (three of them only to their early return).
//!
//! `--execs N` (per step) and `--rounds N` (steps) change the storm; `--storm-only` stops after part 2,
//! `--no-build` skips part 3, `--build-only` runs only part 3 (`--rounds N` pairs),
//! `--scale-only` runs only part 4's storms (`--rounds N` rounds), `--record-cost-only` only
//! part 5 (`--rounds N` rounds).
//! Prints a table and writes the numbers as JSON (default target/bench/execguard.json) for
//! comparison between commits. Not a timed test: it reports the targets met or missed, and
//! fails only if something does not work. Needs root, like the integration tests.

mod guards;
mod measure;
mod null_responder;
mod real_build;
mod record_cost;
mod scale;
mod stats;
mod storm;

use std::path::{Path, PathBuf};
use std::process::Command;

use execguard_testkit as harness;
use guards::{Guard, Guards};
use harness::{fixture, Supervisor};
use measure::{idle_rss, parts_text};
use real_build::{real_build, BUILD_ROUNDS};
use record_cost::{record_cost, wait_for_record_word};
use scale::scale;
use serde_json::{json, Value};
use stats::target;
use storm::{exec_storms, procfs_floor, syscalls_per_exec};

struct Opts {
    quick: bool,
    json: PathBuf,
    /// Execs per storm and rounds, when given (`--execs N`, `--rounds N`).
    execs: Option<usize>,
    rounds: Option<usize>,
    /// Only the exec storms and where the time goes (`--storm-only`).
    storm_only: bool,
    /// Only the 8-container scale runs (`--scale-only`; `--rounds N` rounds).
    scale_only: bool,
    /// Only the exec record's cost to the execs it does not record (`--record-cost-only`).
    record_cost_only: bool,
    /// Everything but the real build (`--no-build`).
    no_build: bool,
    /// Only the real build (`--build-only`; `--rounds N` pairs).
    build_only: bool,
}

fn opts() -> Opts {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let number = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
    };
    let json = args
        .iter()
        .position(|a| a == "--json")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench/execguard.json")
        });
    Opts {
        quick,
        json,
        execs: number("--execs"),
        rounds: number("--rounds"),
        storm_only: args.iter().any(|a| a == "--storm-only"),
        scale_only: args.iter().any(|a| a == "--scale-only"),
        record_cost_only: args.iter().any(|a| a == "--record-cost-only"),
        no_build: args.iter().any(|a| a == "--no-build"),
        build_only: args.iter().any(|a| a == "--build-only"),
    }
}

fn main() {
    // `cargo test --all-targets` runs this binary too, without `--bench`: nothing to do then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("execguard benchmark: run it with `cargo bench --bench execguard [-- --quick]`");
        return;
    }
    let o = opts();
    let n = o.execs.unwrap_or(if o.quick { 100 } else { 400 });
    // 108: six cycles of the storm's balanced order (18 steps for its 9 kinds of guard), for a
    // 95 % interval of about ±0.5 %.
    let rounds = o.rounds.unwrap_or(if o.quick { 3 } else { 108 });
    if o.record_cost_only {
        let mut out = json!({"quick": o.quick});
        record_cost(o.execs.unwrap_or(250), o.rounds.unwrap_or(40), &mut out);
        write_json(&o.json, &out);
        return;
    }
    fixture();
    let guards = Guards::start();
    let mut out = json!({"quick": o.quick});
    if o.scale_only {
        scale(&guards, 2 * n, o.rounds.unwrap_or(5), &mut out);
        write_json(&o.json, &out);
        return;
    }
    if o.build_only {
        real_build(&guards.default, o.rounds.unwrap_or(BUILD_ROUNDS), &mut out);
        write_json(&o.json, &out);
        return;
    }

    // 1 and 2: exec storms, then where the time goes.
    exec_storms(&guards, n, rounds, &mut out);
    let have_strace = Command::new("strace").arg("-V").output().is_ok();
    if have_strace {
        println!(
            "\nsystem calls of the supervisor per exec (strace -c -f on the worker, {n} execs)"
        );
        let mut json_calls = serde_json::Map::new();
        for g in [Guard::Enforce, Guard::EnforceExec] {
            let Some(calls) = syscalls_per_exec(&guards, g, 5 * n) else {
                println!("  {}: strace failed", g.name());
                continue;
            };
            let total: f64 = calls.iter().map(|c| c.1).sum();
            let listed: Vec<String> = calls
                .iter()
                .filter(|c| c.1 >= 0.05)
                .map(|(name, per)| format!("{per:.2} {name}"))
                .collect();
            println!(
                "  {:<14} {total:>5.1} per exec: {}",
                g.name(),
                listed.join(", ")
            );
            json_calls.insert(
                g.name().to_owned(),
                json!({"total": total, "by_call": calls.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>()}),
            );
        }
        out["syscalls_per_exec"] = Value::Object(json_calls);
    } else {
        println!("\nsystem calls per exec: skipped (strace is not installed)");
    }

    procfs_floor(if o.quick { 50 } else { 400 }, &mut out);

    if o.storm_only {
        write_json(&o.json, &out);
        return;
    }

    // 3: a real build.
    let sup = &guards.default;
    if o.quick || o.no_build {
        println!("\nreal build: skipped (--quick or --no-build)");
    } else {
        real_build(sup, BUILD_ROUNDS, &mut out);
    }

    // 4: scale.
    scale(&guards, 2 * n, if o.quick { 1 } else { 5 }, &mut out);
    let idle = if o.quick { 10 } else { 50 };
    let (rss, parts) = idle_rss(sup, idle, "idle");
    drop(guards);
    let fresh = Supervisor::start("audit", "");
    let fresh_on = wait_for_record_word(&fresh).then(|| idle_rss(&fresh, idle, "idle-on"));
    drop(fresh);
    let fresh_off = Supervisor::start("audit", "[worker]\nexec_record = \"off\"\n");
    let (off_rss, off_parts) = idle_rss(&fresh_off, idle, "idle-off");
    drop(fresh_off);
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "\nidle: {idle} guarded containers: supervisor RSS {:.1} MiB   target ≤ 20 MiB: {}",
        mib(rss),
        target(rss <= 20 * 1024)
    );
    println!(
        "  the run's supervisor, after every storm: {}",
        parts_text(&parts)
    );
    match &fresh_on {
        Some((on, on_parts)) => println!(
            "  a fresh supervisor with the exec record: {:.1} MiB ({})",
            mib(*on),
            parts_text(on_parts)
        ),
        None => println!("  a fresh supervisor with the exec record: - (it has none here)"),
    }
    println!(
        "  a fresh supervisor without it: {:.1} MiB ({})",
        mib(off_rss),
        parts_text(&off_parts)
    );
    out["idle_fresh"] =
        json!({"with_record_kib": fresh_on.map(|f| f.0), "without_record_kib": off_rss});

    // 5: what the record costs the host's execs (no supervisor of the run is left).
    let (execs, rounds) = if o.quick { (100, 2) } else { (250, 40) };
    record_cost(execs, rounds, &mut out);
    out["idle"] = json!({"containers": idle, "rss_kib": rss});

    write_json(&o.json, &out);
}

/// The numbers of this run, also of a partial one (`--storm-only`, `--scale-only`).
fn write_json(path: &Path, out: &Value) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(path, serde_json::to_vec_pretty(out).unwrap()).unwrap();
    println!("\nresults: {}", path.display());
}
