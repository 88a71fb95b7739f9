//! The exec record (README, "The exec record"): ordinary images are answered from the kernel's
//! record of each exec without a look through `/proc`, a loader run in the same container is
//! still found and denied, the setting turns it off, and the record crosses an upgrade.

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::harness::{bundle, run_container, Run, Supervisor};

const ON: &str = "exec record on";
const OFF: [&str; 2] = ["no exec record", "exec record off"];

/// Whether this supervisor keeps the record. Under a reduced capability set without `CAP_BPF`
/// (the suite's second pass) it cannot, and says so; with every capability it must.
fn record_on(sup: &Supervisor) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = sup.log();
        if log.contains(ON) {
            return true;
        }
        if OFF.iter().any(|t| log.contains(t)) {
            assert!(
                std::env::var_os("EXECGUARD_TEST_SUPERVISOR_CAPS").is_some(),
                "a supervisor with every capability went without the exec record:\n{log}"
            );
            return false;
        }
        assert!(
            Instant::now() < deadline,
            "no word on the exec record:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// An enforce-mode supervisor with the record, or none (and the test skips) where it has none.
fn with_record() -> Option<Supervisor> {
    let sup = Supervisor::start("enforce", "");
    if record_on(&sup) {
        Some(sup)
    } else {
        // Expected in the reduced-capability pass and on a kernel without it (5.10 in the VM),
        // unless the VM says its kernel has it (EXECGUARD_TEST_RECORD_EXPECTED).
        crate::harness::skip(
            "this supervisor has no exec record",
            std::env::var_os("EXECGUARD_TEST_SUPERVISOR_CAPS").is_some()
                || (std::env::var_os("EXECGUARD_IN_VM").is_some()
                    && std::env::var_os("EXECGUARD_TEST_RECORD_EXPECTED").is_none()),
        );
        None
    }
}

/// `execguard_images_by_record_total`.
fn by_record(sup: &Supervisor) -> u64 {
    let metrics = control(sup, "/metrics");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("execguard_images_by_record_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no execguard_images_by_record_total:\n{metrics}"))
}

/// The control socket's answer to GET `path`, waiting for the socket (a new worker opens it
/// after an upgrade).
fn control(sup: &Supervisor, path: &str) -> String {
    let socket = sup.dir.path().join("control.sock");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match execguard::supervisor::control::request(&socket, "GET", path) {
            Ok(body) => return body,
            Err(e) => assert!(Instant::now() < deadline, "{path}: {e:#}\n{}", sup.log()),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// 100 execs of /bin/true, then a loader run, then a marker that the shell went on.
fn script() -> String {
    format!(
        "for i in $(seq 100); do /bin/true; done; \
         {} /bin/touch /work/m; touch /work/done",
        crate::harness::LOADER
    )
}

/// Runs [`script`] and checks the loader run was denied and logged; returns the images the
/// record answered meanwhile.
fn storm_and_loader(sup: &Supervisor, name: &str) -> u64 {
    let before = by_record(sup);
    let run = run_container(sup, name, &script(), &[]);
    check_denied(sup, &run);
    by_record(sup) - before
}

fn check_denied(sup: &Supervisor, run: &Run) {
    let log = sup.log();
    assert!(run.marker("done"), "{}\n{log}", run.describe());
    assert!(
        !run.marker("m"),
        "the loader run went through\n{}\n{log}",
        run.describe()
    );
    let events = sup.events_of(&run.id);
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "binary_executed_by_loader" && e["action"] == "denied"),
        "{events:#?}"
    );
}

#[test]
fn ordinary_images_are_answered_from_the_record_and_a_loader_run_is_not() {
    needs_root!();
    let Some(sup) = with_record() else {
        return;
    };
    // The first exec of each file is looked at through /proc (and its kind remembered); the
    // other 99 execs of /bin/true are answered from the record.
    let answered = storm_and_loader(&sup, "record-on");
    assert!(
        answered >= 95,
        "only {answered} images answered from the record\n{}",
        sup.log()
    );

    // Turned off, every image is looked at through /proc, and the loader run is still denied.
    let off = Supervisor::start("enforce", "[worker]\nexec_record = \"off\"\n");
    off.wait_for_log("exec record off", 10);
    assert_eq!(storm_and_loader(&off, "record-off"), 0);
}

/// BTF-typed tracepoints need no tracefs: a supervisor whose mount namespace has empty
/// directories over `/sys/kernel/tracing` and `/sys/kernel/debug` (as a fresh machine, or a
/// container, has no tracefs there) still has the record, answers from it, and says so in its
/// status and metrics.
#[test]
fn the_record_needs_no_tracefs() {
    needs_root!();
    if std::env::var_os("EXECGUARD_TEST_SUPERVISOR_CAPS").is_some() {
        eprintln!("skipped: this supervisor has no exec record (no CAP_BPF)");
        return;
    }
    let hide = "for d in /sys/kernel/tracing /sys/kernel/debug; do \
                  mount -t tmpfs -o ro,size=4k none \"$d\" || exit 1; done; \
                ! test -e /sys/kernel/tracing/events || exit 1; exec \"$0\" \"$@\"";
    let wrap = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        hide,
    ];
    let sup = Supervisor::start_wrapped(
        &wrap,
        std::path::Path::new(crate::harness::EXECGUARD),
        "enforce",
        "",
        &[],
    );
    assert!(record_on(&sup), "{}", sup.log());
    let answered = storm_and_loader(&sup, "record-no-tracefs");
    assert!(
        answered >= 95,
        "only {answered} images answered from the record\n{}",
        sup.log()
    );
    let status = control(&sup, "/status");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["exec_record"]["on"], true, "{status}");
    let metrics = control(&sup, "/metrics");
    assert!(
        metrics.lines().any(|l| l == "execguard_exec_record_on 1"),
        "{metrics}"
    );
}

/// Turned off, status and metrics say so and why, in the words of the log.
#[test]
fn status_and_metrics_say_why_the_record_is_off() {
    needs_root!();
    let sup = Supervisor::start("enforce", "[worker]\nexec_record = \"off\"\n");
    sup.wait_for_log("exec record off", 10);
    let status: serde_json::Value = serde_json::from_str(&control(&sup, "/status")).unwrap();
    assert_eq!(status["exec_record"]["on"], false, "{status}");
    let reason = status["exec_record"]["reason"].as_str().unwrap();
    assert!(reason.contains("exec_record = \"off\""), "{reason}");
    assert!(
        sup.log()
            .contains("exec_record = \\\"off\\\" in the config"),
        "{}",
        sup.log()
    );
    let metrics = control(&sup, "/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("execguard_exec_record_on{reason=\"")
                && l.contains("exec_record = \\\"off\\\"")
                && l.ends_with(" 0")),
        "{metrics}"
    );
}

/// The keeper's upgrade carries the record's descriptors to the new keeper (which has no
/// CAP_BPF left to load it again) and on to its worker.
#[test]
fn the_record_crosses_an_upgrade() {
    needs_root!();
    let Some(sup) = with_record() else {
        return;
    };
    let _ = kill(Pid::from_raw(sup.pid()), Signal::SIGUSR2);
    sup.wait_for_log("keeper upgraded in place", 20);
    let answered = storm_and_loader(&sup, "record-upgraded");
    let log = sup.log();
    assert!(
        answered >= 95,
        "only {answered} images answered from the record\n{log}"
    );
    assert!(!log.contains("did not cross the upgrade"), "{log}");
    assert!(!log.contains("no exec record"), "{log}");
}

/// An overlay mounted for a test, with `files` (name, source) copied into its lower layer two
/// seconds before (the file cache keeps only versions changed at least 2 s ago); unmounted on
/// drop, also when the test panics.
struct Overlay {
    lower: std::path::PathBuf,
    merged: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Overlay {
    fn mount(files: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let [lower, upper, work, merged] = ["lower", "upper", "ovwork", "merged"].map(|d| {
            let p = dir.path().join(d);
            std::fs::create_dir(&p).unwrap();
            p
        });
        for (name, source) in files {
            std::fs::copy(source, lower.join(name)).unwrap();
        }
        std::thread::sleep(Duration::from_millis(2100));
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        let mounted = std::process::Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &options])
            .arg(&merged)
            .status()
            .unwrap();
        assert!(mounted.success(), "mount -t overlay -o {options}");
        Self {
            lower,
            merged,
            _dir: dir,
        }
    }

    /// Mounts the overlay at `/opt/ov` in the bundle's container, read-only.
    fn bind_into(&self, b: &crate::harness::Bundle) {
        b.bind(&self.merged, "/opt/ov", &["rbind", "ro"]);
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.merged)
            .status();
    }
}

/// On an overlay filesystem (how image layers reach containers) the record names the program
/// as `stat` of `/proc/PID/exe` does (the overlay's inode) and the interpreter as its mapping
/// does (the layer's file): programs there are answered from the record after their first
/// exec too. A loader copy on the overlay is still denied.
#[test]
fn programs_on_an_overlay_are_answered_from_the_record_after_their_first_exec() {
    needs_root!();
    let Some(sup) = with_record() else {
        return;
    };
    let ov = Overlay::mount(&[("true", "/usr/bin/true"), ("ld.so", crate::harness::LOADER)]);
    let overlay_dev = nix::sys::stat::stat(&ov.merged.join("true"))
        .unwrap()
        .st_dev;
    let layer_dev = nix::sys::stat::stat(&ov.lower.join("true")).unwrap().st_dev;
    assert_ne!(overlay_dev, layer_dev, "the overlay shows its own device");

    let script = "for i in $(seq 100); do /opt/ov/true; done; \
                  /opt/ov/ld.so /bin/touch /work/m; touch /work/done";
    let before = by_record(&sup);
    let b = bundle(&sup.config, "record-overlay", script, &[], None);
    ov.bind_into(&b);
    let run = b.run();
    check_denied(&sup, &run);
    let answered = by_record(&sup) - before;
    assert!(
        answered >= 95,
        "only {answered} images answered from the record\n{}",
        sup.log()
    );
}

/// A file of an overlay rewritten beneath it (in its layer, not through the overlay) while the
/// overlay's inode stays cached: the inode the kernel execs keeps the size and times it copied
/// from the layer, so the record's name of the program does not change, though what runs is
/// now a loader. A container that can mount its own overlay (a user namespace) could do this;
/// here the test does it from outside. The loader run must be judged, not answered from the
/// record as the ordinary program the name was before.
#[test]
fn a_loader_written_beneath_an_overlay_is_not_answered_as_the_old_program() {
    needs_root!();
    let Some(sup) = with_record() else {
        return;
    };
    let ov = Overlay::mount(&[("p", "/usr/bin/true")]);
    // The container keeps the overlay file open (its inode cached), runs it until the record
    // answers it, then waits while the layer's file is rewritten, and runs it again.
    let script = "exec 3</opt/ov/p; for i in $(seq 50); do /opt/ov/p; done; touch /work/ready; \
                  while [ ! -e /work/go ]; do sleep 0.05; done; \
                  /opt/ov/p /bin/touch /work/m; touch /work/done";
    let before = by_record(&sup);
    let b = bundle(&sup.config, "record-beneath", script, &[], None);
    ov.bind_into(&b);
    let child = b.spawn();
    crate::harness::wait_for(&b.work.join("ready"), "the container's first runs");
    assert!(
        by_record(&sup) - before >= 45,
        "the program was not answered from the record before the change\n{}",
        sup.log()
    );
    // Beneath the overlay: the layer's file becomes a loader, in place (same inode).
    let ld = std::fs::read(crate::harness::LOADER).unwrap();
    std::fs::write(ov.lower.join("p"), ld).unwrap();
    std::fs::write(b.work.join("go"), b"").unwrap();
    let run = b.wait(child);
    check_denied(&sup, &run);
}
