//! podman, through the precreate hook (`--hooks-dir`) and through the runtime wrapper
//! (`--runtime execguard-runtime`), with podman's own default seccomp profile.

use crate::harness::{podman_run, PodmanWay, Supervisor};

/// The loader execution, a legitimate ldd, and a syscall podman's profile denies (vmsplice:
/// EPERM under the profile, EBADF without it).
const SCRIPT: &str = "/opt/eg/exectool vmsplice > /work/vmsplice; \
    ldd /bin/true > /work/ldd; \
    /lib64/ld-linux-x86-64.so.2 /bin/touch /work/m";

fn check(way: PodmanWay, tag: &str) {
    let sup = Supervisor::start("audit", &crate::harness::runtime_config());
    for (mode, annotation) in [("audit", None), ("enforce", Some("enforce"))] {
        let ann: Vec<(&str, &str)> = annotation
            .map(|m| vec![("execguard.io/mode", m)])
            .unwrap_or_default();
        let run = podman_run(&sup.config, way, &format!("{tag}-{mode}"), SCRIPT, &ann);
        let ctx = format!("{way:?} {mode}: {}\n{}", run.describe(), sup.log());
        assert_eq!(run.marker("m"), mode == "audit", "{ctx}");
        assert_eq!(
            std::fs::read_to_string(run.work.join("vmsplice"))
                .unwrap_or_default()
                .trim(),
            "EPERM",
            "podman's profile must still deny vmsplice\n{ctx}"
        );
        let ldd = std::fs::read_to_string(run.work.join("ldd")).unwrap_or_default();
        assert!(ldd.contains("libc.so.6"), "ldd must work: {ldd}\n{ctx}");
        let events = sup.events();
        let hit = events
            .iter()
            .filter(|e| e["event"] == "binary_executed_by_loader")
            .find(|e| e["mode"] == mode)
            .unwrap_or_else(|| panic!("no event: {events:#?}\n{ctx}"));
        assert_eq!(
            hit["action"],
            if mode == "audit" { "allowed" } else { "denied" }
        );
        // Judged at the image: the path of the file the kernel really exec'd.
        let path = hit["exec"]["path"].as_str().unwrap_or_default();
        assert!(path.ends_with("/ld-linux-x86-64.so.2"), "{hit:#}");
        assert_eq!(hit["stage"], "image", "{hit:#}");
    }
}

#[test]
fn hook_guards_podman_containers() {
    needs_root!();
    check(PodmanWay::Hook, "hook");
}

#[test]
fn runtime_wrapper_guards_podman_containers() {
    needs_root!();
    check(PodmanWay::Runtime, "runtime");
}

/// Without execguard the same script runs the payload, and vmsplice gives the same EPERM:
/// the profile's answer is podman's, not execguard's.
#[test]
fn podman_alone_for_comparison() {
    needs_root!();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("unused.toml");
    std::fs::write(&cfg, "").unwrap();
    let run = podman_run(&cfg, PodmanWay::Plain, "plain", SCRIPT, &[]);
    assert!(run.marker("m"), "{}", run.describe());
    assert_eq!(
        std::fs::read_to_string(run.work.join("vmsplice"))
            .unwrap_or_default()
            .trim(),
        "EPERM"
    );
}

/// `execguard.io/mode=off` leaves the container alone; a config that guards only annotated
/// containers leaves unannotated ones alone.
#[test]
fn annotation_off_and_unannotated() {
    needs_root!();
    let sup = Supervisor::start("enforce", "guard_unannotated = false\n");
    for (way, tag) in [(PodmanWay::Hook, "hook"), (PodmanWay::Runtime, "rt")] {
        let off = podman_run(
            &sup.config,
            way,
            &format!("off-{tag}"),
            SCRIPT,
            &[("execguard.io/mode", "off")],
        );
        assert!(off.marker("m"), "{}", off.describe());
        let plain = podman_run(&sup.config, way, &format!("unann-{tag}"), SCRIPT, &[]);
        assert!(plain.marker("m"), "{}", plain.describe());
        let on = podman_run(
            &sup.config,
            way,
            &format!("on-{tag}"),
            SCRIPT,
            &[("execguard.io/mode", "enforce")],
        );
        assert!(!on.marker("m"), "{}", on.describe());
    }
    let events = sup.events();
    assert_eq!(
        events
            .iter()
            .filter(|e| e["event"] == "binary_executed_by_loader")
            .count(),
        2,
        "{events:#?}"
    );
}

/// No supervisor at create time: audit containers start unguarded and the report log says so;
/// enforce containers are not created, and the message names the socket.
#[test]
fn supervisor_down_at_create() {
    needs_root!();
    let mut sup = Supervisor::start("audit", "");
    let report = sup.dir.path().join("report.log");
    sup.kill();
    for (way, tag) in [(PodmanWay::Hook, "hook"), (PodmanWay::Runtime, "rt")] {
        let audit = podman_run(&sup.config, way, &format!("down-a-{tag}"), SCRIPT, &[]);
        assert!(audit.marker("m"), "{way:?}: {}", audit.describe());
        let enforce = podman_run(
            &sup.config,
            way,
            &format!("down-e-{tag}"),
            SCRIPT,
            &[("execguard.io/mode", "enforce")],
        );
        assert_ne!(enforce.status, 0, "{way:?}: {}", enforce.describe());
        assert!(!enforce.marker("m"), "{way:?}: {}", enforce.describe());
        if let PodmanWay::Runtime = way {
            assert!(enforce.stderr.contains("eg.sock"), "{}", enforce.describe());
        }
    }
    let log = std::fs::read_to_string(&report).unwrap_or_default();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let unguarded = lines
        .iter()
        .filter(|l| l["event"] == "container_unguarded")
        .count();
    let failed: Vec<_> = lines
        .iter()
        .filter(|l| l["event"] == "guard_failed")
        .collect();
    assert_eq!(unguarded, 2, "{log}");
    assert_eq!(failed.len(), 2, "{log}");
    for f in failed {
        assert!(f["reason"].as_str().unwrap().contains("eg.sock"), "{f}");
    }
}

/// The real runtime comes from the config (`[runtime] path`), here an absolute path. (crun,
/// the other choice, refuses to run on this machine's hybrid cgroup hierarchy: "cgroups in
/// hybrid mode not supported", with or without execguard.)
#[test]
fn runtime_wrapper_runs_the_configured_runtime() {
    needs_root!();
    let runc = crate::harness::which("runc");
    let sup = Supervisor::start(
        "enforce",
        &format!("[runtime]\npath = \"{}\"\n", runc.display()),
    );
    let run = podman_run(&sup.config, PodmanWay::Runtime, "abs-runtime", SCRIPT, &[]);
    let ctx = format!("{}\n{}", run.describe(), sup.log());
    assert!(!run.marker("m"), "{ctx}");
    let events = sup.events();
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "binary_executed_by_loader" && e["action"] == "denied"),
        "{events:#?}\n{ctx}"
    );
    // A runtime that does not exist is a clear error, not a hang.
    let sup = Supervisor::start("audit", "[runtime]\npath = \"no-such-runtime\"\n");
    let run = podman_run(&sup.config, PodmanWay::Runtime, "no-runtime", SCRIPT, &[]);
    assert_ne!(run.status, 0);
    assert!(run.stderr.contains("no-such-runtime"), "{}", run.describe());
}
