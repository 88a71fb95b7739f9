//! Judged once per exec, never skipped (issue 24, item 2): an image the supervisor judged (and
//! let run) that re-executes a loader in the same process, with address randomisation off and
//! its arguments padded so that the new image's `AT_RANDOM` bytes lie at the same address,
//! is judged again: both loader runs are logged in audit mode, and in enforce mode (the first
//! exempted by an `[[allow]]` rule) the second is denied; each with the exec record and
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

/// In enforce mode the first loader run is exempted by an `[[allow]]` rule (so it runs code);
/// the loader run it re-executes at the same address is still judged, and denied.
fn second_run_denied(extra: &str, name: &str) {
    let rule = "[[allow]]\nname = \"reexec\"\nprogram = \"/opt/eg/reexec\"\n";
    let sup = Supervisor::start("enforce", &format!("{extra}{rule}"));
    let run = run_container(&sup, name, &script(), &[]);
    let log = sup.log();
    assert!(
        !run.marker("m"),
        "the re-executed loader run went through\n{}\n{log}",
        run.describe()
    );
    let events = sup.events_of(&run.id);
    let action_for = |program: &str| {
        events
            .iter()
            .find(|e| e["loader"]["program"] == program)
            .map(|e| e["action"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(
        action_for("/opt/eg/reexec").as_deref(),
        Some("allowed"),
        "{events:#?}\n{log}"
    );
    assert_eq!(
        action_for("/bin/touch").as_deref(),
        Some("denied"),
        "{events:#?}\n{log}"
    );
}

#[test]
fn an_exempted_runs_same_address_reexec_is_denied_with_the_record() {
    needs_root!();
    second_run_denied("", "judged-enforce-record");
}

#[test]
fn an_exempted_runs_same_address_reexec_is_denied_without_the_record() {
    needs_root!();
    second_run_denied(
        "[worker]\nexec_record = \"off\"\n",
        "judged-enforce-no-record",
    );
}

/// Conditions as the kernel reads them (issue 24, item 3), in a real container: `arch_prctl`
/// with the option's high 32 bits set sets FS like `ARCH_SET_FS` (the kernel reads an `int`),
/// so the filter `inject` installs must trap it: 200 such calls from one process are 200 image
/// checkpoints in the container's count.
#[test]
fn arch_prctl_with_high_bits_set_reaches_the_image_checkpoint() {
    needs_root!();
    let sup = Supervisor::start("audit", "");
    let cfg = sup.config.to_str().unwrap().to_owned();
    let b = crate::harness::bundle(
        &sup.config,
        "archprctl-hi",
        // A shell builtin loop: no exec while the count is read.
        "/opt/eg/exectool archprctl-hi 200 && touch /work/started; \
         while [ ! -e /work/done ]; do :; done",
        &[],
        None,
    );
    let work = b.work.clone();
    let id = b.id.clone();
    let child = b.spawn();
    crate::harness::wait_for(&work.join("started"), "the container's start");
    let (ok, out, err) = crate::harness::execguard(&["status", "--json", "--config", &cfg]);
    std::fs::write(work.join("done"), "").unwrap();
    b.wait(child);
    assert!(ok, "{err}");
    let c = crate::harness::container_status(&out, &id);
    // sh and exectool set up their thread pointers once each: the rest are the 200 calls.
    let images = c["images_inspected"].as_u64().unwrap();
    assert!(images >= 200, "{images} image checkpoints: {c}");
}
