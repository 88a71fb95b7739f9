//! containerd, with execguard-runtime as the runc binary of its runc shim.

use crate::harness::{Containerd, Supervisor};

const SCRIPT: &str = "ldd /bin/true > /work/ldd; /lib64/ld-linux-x86-64.so.2 /bin/touch /work/m";

#[test]
fn containerd_guarded_by_the_runtime_wrapper() {
    needs_root!();
    let sup = Supervisor::start("audit", "");
    let ctrd = Containerd::start(&sup.config);
    for mode in ["audit", "enforce"] {
        let run = ctrd.run(
            &format!("ctrd-{mode}"),
            SCRIPT,
            &[("execguard.io/mode", mode)],
        );
        let ctx = format!("{mode}: {}\n{}\n{}", run.describe(), sup.log(), ctrd.log());
        assert_eq!(run.marker("m"), mode == "audit", "{ctx}");
        let ldd = std::fs::read_to_string(run.work.join("ldd")).unwrap_or_default();
        assert!(ldd.contains("libc.so.6"), "{ctx}");
        let events = sup.events_of(&run.id);
        let hit = events
            .iter()
            .find(|e| e["event"] == "binary_executed_by_loader")
            .unwrap_or_else(|| panic!("no event\n{ctx}"));
        assert_eq!(
            hit["action"],
            if mode == "audit" { "allowed" } else { "denied" }
        );
    }
}

/// With the supervisor down, an enforce container is refused, and the wrapper's message
/// (written to the shim's runc log) is what containerd reports.
#[test]
fn wrapper_errors_reach_containerd() {
    needs_root!();
    let mut sup = Supervisor::start("audit", "");
    let ctrd = Containerd::start(&sup.config);
    sup.kill();
    let run = ctrd.run("ctrd-down", SCRIPT, &[("execguard.io/mode", "enforce")]);
    assert_ne!(run.status, 0, "{}", run.describe());
    assert!(!run.marker("m"), "{}", run.describe());
    assert!(
        run.stderr.contains("no execguard supervisor is listening")
            && run.stderr.contains("eg.sock"),
        "{}",
        run.describe()
    );
    eprintln!("containerd said: {}", run.stderr);
    // Audit: starts unguarded.
    let run = ctrd.run("ctrd-down-audit", SCRIPT, &[]);
    assert!(run.marker("m"), "{}", run.describe());
}
