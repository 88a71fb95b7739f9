//! Race-proof enforcement: racers that change the exec's path, or what a binary's `PT_INTERP`
//! names, between the supervisor's look and the kernel's, thousands of times; with the image
//! checkpoint alone (the default) and with the exec checkpoint too (which the racers fool; the
//! image checkpoint then stops what it missed). In enforce mode no loader execution gets
//! through; in audit mode every one that runs is logged.

use std::collections::HashSet;

use crate::harness::{run_guarded, Supervisor, Way};

/// Tries per racer: 2000, or `EXECGUARD_TEST_RACE_ATTEMPTS` (fewer in the arm64 VM, whose
/// software emulation runs an exec about 20 times slower).
fn attempts() -> usize {
    std::env::var("EXECGUARD_TEST_RACE_ATTEMPTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

/// The event every loader run of this racer must have.
fn expected_event(kind: &str) -> &'static str {
    if kind == "interp" {
        "custom_interpreter"
    } else {
        "binary_executed_by_loader"
    }
}

/// The markers (`m-N`) the racer's loader runs left in the work directory.
fn markers(work: &std::path::Path) -> HashSet<String> {
    std::fs::read_dir(work)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("m-"))
        .collect()
}

/// The markers named by the events' last arguments (the loader runs logged with their argv).
fn logged_markers(events: &[serde_json::Value]) -> HashSet<String> {
    crate::harness::last_args(events)
        .iter()
        .filter_map(|a| a.strip_prefix("/work/").map(str::to_owned))
        .collect()
}

fn race(kind: &str) {
    for (setting, config) in [
        ("image", "[detect]\nexec_checkpoint = false\n"),
        ("exec", "[detect]\nexec_checkpoint = true\n"),
    ] {
        race_with(kind, setting, config);
    }
}

fn race_with(kind: &str, setting: &str, config: &str) {
    let sup = Supervisor::start("audit", config);
    // In a runc container, and through `execguard run` (no container runtime).
    for (way, mode) in [Way::Runc, Way::Run]
        .into_iter()
        .flat_map(|w| [(w, "enforce"), (w, "audit")])
    {
        let run = run_guarded(
            way,
            &sup,
            &format!("race-{kind}-{setting}-{way:?}-{mode}"),
            &format!(
                "/opt/eg/racer {kind} {} /work > /work/out 2>&1; echo done > /work/done",
                attempts()
            ),
            &[("execguard.io/mode", mode)],
        );
        let out = std::fs::read_to_string(run.work.join("out")).unwrap_or_default();
        let ctx = format!(
            "{way:?} {mode}: {}\nracer: {out}\n{}",
            run.describe(),
            sup.log()
        );
        assert!(run.marker("done"), "{ctx}");
        let ran: HashSet<String> = markers(&run.work);
        let events = sup.events_of(&run.id);
        let by_stage = |stage: &str| events.iter().filter(|e| e["stage"] == stage).count();
        eprintln!(
            "{kind} ({setting} checkpoint, {way:?}) {mode}: {} loader runs, {} events at the exec, {} at the image",
            ran.len(),
            by_stage("exec"),
            by_stage("image")
        );
        if mode == "enforce" {
            assert!(
                ran.is_empty(),
                "loader executions got through: {ran:?}\n{ctx}"
            );
            assert!(!events.is_empty(), "{ctx}");
            assert!(
                events.iter().all(|e| e["action"] == "denied"),
                "{events:#?}"
            );
        } else {
            assert!(!ran.is_empty(), "the racer never won in audit mode\n{ctx}");
            let logged: HashSet<String> = logged_markers(&events);
            let missing: Vec<&String> = ran.difference(&logged).collect();
            let others: Vec<&serde_json::Value> = events
                .iter()
                .filter(|e| e["event"] != expected_event(kind))
                .collect();
            let log = sup.log();
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| missing.iter().any(|m| l.contains(m.as_str())))
                .collect();
            assert!(
                missing.is_empty(),
                "runs without an event: {missing:?}\nother events: {others:#?}\nlog: {lines:#?}"
            );
        }
    }
}

#[test]
fn path_flipped_by_a_thread_sharing_a_vfork_childs_memory() {
    needs_root!();
    race("flip");
}

#[test]
fn loader_renamed_over_an_allowed_path() {
    needs_root!();
    race("rename");
}

#[test]
fn pt_interp_swapped_between_the_loader_and_a_copy() {
    needs_root!();
    race("interp");
}

/// The same racers with a loader copy that makes no trapped call (`ld-silent`: it sets its
/// thread pointer with `wrfsbase`), so no image checkpoint ever sees it: with the exec
/// checkpoint judging the benign file and the kernel then opening the copy, only the exec
/// record's confirmation stands between the swap and the payload. In enforce mode every such
/// exec is killed before its first instruction (no loader run in 2000 tries, and the kills are
/// reported as `exec_not_as_judged`); in audit mode each is reported. Needs the exec record
/// (skips without `CAP_BPF`, the suite's reduced-capability pass).
fn silent_race(kind: &str) {
    if std::env::var_os("EXECGUARD_TEST_SUPERVISOR_CAPS").is_some() {
        eprintln!("skipped: this supervisor has no exec record (no CAP_BPF)");
        return;
    }
    let sup = Supervisor::start("audit", "[detect]\nexec_checkpoint = true\n");
    sup.wait_for_log("exec record on", 10);
    for mode in ["enforce", "audit"] {
        let run = run_guarded(
            Way::Runc,
            &sup,
            &format!("race-silent-{kind}-{mode}"),
            &format!(
                "RACER_LOADER=/opt/eg/ld-silent /opt/eg/racer {kind} {} /work > /work/out 2>&1; echo done > /work/done",
                attempts()
            ),
            &[("execguard.io/mode", mode)],
        );
        let out = std::fs::read_to_string(run.work.join("out")).unwrap_or_default();
        let ctx = format!("{mode}: {}\nracer: {out}\n{}", run.describe(), sup.log());
        assert!(run.marker("done"), "{ctx}");
        let ran: HashSet<String> = markers(&run.work);
        let events = sup.events_of(&run.id);
        let not_as_judged: Vec<&serde_json::Value> = events
            .iter()
            .filter(|e| e["event"] == "exec_not_as_judged")
            .collect();
        eprintln!(
            "silent {kind} ({mode}): {} loader runs, {} execs not as judged",
            ran.len(),
            not_as_judged.len()
        );
        assert!(
            !not_as_judged.is_empty(),
            "the racer never swapped a file in between the look and the exec\n{ctx}"
        );
        assert!(
            not_as_judged.iter().all(|e| e["stage"] == "record"),
            "{not_as_judged:#?}"
        );
        if mode == "enforce" {
            assert!(
                ran.is_empty(),
                "loader executions got through: {ran:?}\n{ctx}"
            );
            assert!(
                events.iter().all(|e| e["action"] == "denied"),
                "{events:#?}"
            );
        } else {
            assert!(!ran.is_empty(), "the racer never won in audit mode\n{ctx}");
            // A run judged as the loader it was is logged at the exec with its argv (so its
            // marker); one swapped in after the look is reported by the kernel's record,
            // without argv: those are counted.
            let logged: HashSet<String> = logged_markers(&events);
            let unlogged = ran.difference(&logged).count();
            assert!(
                unlogged <= not_as_judged.len(),
                "{unlogged} loader runs without an event at the exec, {} reported by the record\n{ctx}",
                not_as_judged.len()
            );
        }
    }
}

#[test]
fn a_silent_loader_renamed_over_a_judged_path_is_killed_by_the_kernel() {
    needs_root!();
    silent_race("rename");
}

#[test]
fn a_silent_loader_swapped_in_as_pt_interp_is_killed_by_the_kernel() {
    needs_root!();
    silent_race("interp");
}
