//! Judged once per exec, never skipped (issue 24, item 2): an image the supervisor judged (and
//! let run) that re-executes a loader in the same process, with address randomisation off and
//! its arguments padded so that the new image's `AT_RANDOM` bytes lie at the same address,
//! is judged again: both loader runs are logged in audit mode, with the exec record and
//! without it.

use crate::harness::{run_container, Supervisor};

const LD: &str = "/lib64/ld-linux-x86-64.so.2";

/// `setarch -R ld.so /opt/eg/reexec /work/m PAD`: the first loader run, whose program
/// re-executes `ld.so /bin/touch /work/m PAD2` ([`reexec.c`]).
fn script() -> String {
    format!(
        "cd /tmp && setarch -R {LD} /opt/eg/reexec /work/m {}",
        "p".repeat(64)
    )
}

fn both_runs_logged(extra: &str, name: &str) {
    let sup = Supervisor::start("audit", extra);
    let run = run_container(&sup, name, &script(), &[]);
    let log = sup.log();
    assert!(
        run.marker("m"),
        "the second loader run should have run in audit mode\n{}\n{log}",
        run.describe()
    );
    let programs: Vec<String> = sup
        .events_of(&run.id)
        .iter()
        .filter(|e| e["event"] == "binary_executed_by_loader")
        .map(|e| {
            e["loader"]["program"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    for program in ["/opt/eg/reexec", "/bin/touch"] {
        assert!(
            programs.iter().any(|p| p == program),
            "no event for the loader run of {program}: {programs:?}\n{}\n{log}",
            run.describe()
        );
    }
}

#[test]
fn a_same_address_reexec_is_judged_again_with_the_record() {
    needs_root!();
    both_runs_logged("", "judged-record");
}

#[test]
fn a_same_address_reexec_is_judged_again_without_the_record() {
    needs_root!();
    both_runs_logged("[worker]\nexec_record = \"off\"\n", "judged-no-record");
}
