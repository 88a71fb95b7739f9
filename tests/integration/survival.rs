//! The supervisor survives its own death: the keeper holds every notify fd, so when the worker
//! is killed, or the keeper upgraded in place, in the middle of a build, no exec fails and no
//! event is lost.

use std::collections::HashSet;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::harness::{bundle, wait_for, Supervisor, LOADER};

/// Execs per run: 3000, or 600 under software emulation (the VMs of vm.rs), where 3000 take
/// minutes.
fn iterations() -> usize {
    if std::env::var_os("EXECGUARD_IN_VM").is_some() {
        600
    } else {
        3000
    }
}
const LOADER_EVERY: usize = 10;

/// An exec loop with a loader execution every tenth turn (allowed and logged in audit mode);
/// every failed exec is counted.
fn exec_loop() -> String {
    let iterations = iterations();
    format!(
        "touch /work/started; fails=0; i=0; \
         while [ $i -lt {iterations} ]; do \
           /bin/true || fails=$((fails+1)); \
           if [ $((i % {LOADER_EVERY})) -eq 0 ]; then {LOADER} /bin/echo $i > /dev/null || fails=$((fails+1)); fi; \
           i=$((i+1)); \
         done; echo $fails > /work/fails"
    )
}

fn survive(name: &str, sup: &Supervisor, disrupt: impl Fn(&Supervisor)) {
    let b = bundle(&sup.config, name, &exec_loop(), &[], None);
    let work = b.work.clone();
    // Under software emulation (the VMs of vm.rs) 3000 execs take minutes, not seconds.
    let child = b.spawn_for(if std::env::var_os("EXECGUARD_IN_VM").is_some() {
        900
    } else {
        120
    });
    wait_for(&work.join("started"), "the container's start");
    let mut disruptions = 0;
    while !work.join("fails").exists() && disruptions < 8 {
        std::thread::sleep(Duration::from_millis(150));
        disrupt(sup);
        disruptions += 1;
    }
    let run = b.wait(child);
    let ctx = format!("{}\n{}", run.describe(), sup.log());
    let fails = std::fs::read_to_string(run.work.join("fails")).unwrap_or_default();
    assert_eq!(fails.trim(), "0", "execs failed\n{ctx}");
    assert!(
        disruptions >= 3,
        "the loop ended before the disruptions\n{ctx}"
    );
    // Every loader execution is logged.
    let loader_events: Vec<serde_json::Value> = sup
        .events_of(&run.id)
        .into_iter()
        .filter(|e| e["event"] == "binary_executed_by_loader")
        .collect();
    let logged = crate::harness::last_args(&loader_events);
    let expected: HashSet<String> = (0..iterations())
        .step_by(LOADER_EVERY)
        .map(|i| i.to_string())
        .collect();
    let lost: Vec<&String> = expected.difference(&logged).collect();
    assert!(lost.is_empty(), "lost events for turns {lost:?}\n{ctx}");
    let recovered = sup.log().matches("a dead worker left").count();
    eprintln!(
        "{name}: {disruptions} disruptions, 0 failed execs, {} loader runs logged, \
         {recovered} in-flight notifications answered by the next worker",
        logged.len()
    );
}

#[test]
fn worker_killed_mid_build() {
    needs_root!();
    let sup = Supervisor::start("audit", "");
    survive("kill9", &sup, |sup| {
        let _ = kill(Pid::from_raw(sup.worker_pid()), Signal::SIGKILL);
    });
}

/// An upgrade in the middle of a build: the binary at the keeper's path is replaced on disk (a
/// new file renamed over it, as a package manager does), then SIGUSR2 makes the keeper
/// re-execute it as the same process, carrying its socket, slot file and every notify fd
/// across. No exec fails, no event is lost, the keeper keeps its pid and runs the new file,
/// and enforcement works afterwards.
#[test]
fn keeper_upgraded_mid_build() {
    needs_root!();
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("execguard");
    let install = || {
        let new = dir.path().join("execguard.new");
        std::fs::copy(crate::harness::EXECGUARD, &new).unwrap();
        std::fs::rename(&new, &exe).unwrap();
    };
    install();
    let sup = Supervisor::start_exe(&exe, "audit", "", &[]);
    let keeper = sup.pid();
    // When the keeper started, as /metrics says: kept across upgrades (a change would mean a
    // keeper that ended, and with it every running container's guard).
    let keeper_start = |sup: &Supervisor| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(m) = execguard::supervisor::control::request(
                &sup.dir.path().join("control.sock"),
                "GET",
                "/metrics",
            ) {
                if let Some(v) = m
                    .lines()
                    .find_map(|l| l.strip_prefix("execguard_keeper_start_time_seconds "))
                {
                    return v.to_owned();
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no metrics\n{}",
                sup.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let started = keeper_start(&sup);
    survive("upgrade", &sup, |sup| {
        install();
        let _ = kill(Pid::from_raw(sup.pid()), Signal::SIGUSR2);
    });
    let upgrades = sup.log().matches("keeper upgraded in place").count();
    assert!(upgrades >= 3, "{}", sup.log());
    assert_eq!(sup.pid(), keeper);
    let running = std::fs::metadata(format!("/proc/{keeper}/exe")).unwrap();
    let installed = std::fs::metadata(&exe).unwrap();
    assert_eq!(
        (running.dev(), running.ino()),
        (installed.dev(), installed.ino()),
        "the keeper does not run the file now installed"
    );
    assert!(!sup.log().contains("the upgrade failed"), "{}", sup.log());
    assert_eq!(keeper_start(&sup), started);
    assert_enforced(&sup, "after-upgrade");
    eprintln!("keeper upgraded {upgrades} times in place (pid {keeper}), enforcement intact");
}

/// The worst moments to die: right after the kernel handed the worker a notification, before it
/// was recorded, and halfway through recording it (forced here by fault injection, at the
/// fifth notification). The next worker finds the notification pending, rebuilds it from its
/// waiting task, and judges it like any other: no exec fails, every loader run is logged in
/// audit mode, none runs in enforce mode.
#[test]
fn a_notification_received_but_not_recorded_is_rebuilt() {
    needs_root!();
    use execguard::supervisor::fault::{DIE_AFTER_RECV_ENV, DIE_MID_RECORD_ENV, ENABLED};
    if !ENABLED {
        crate::harness::skip("built without the fault-injection feature", false);
        return;
    }
    for (i, (mode, point)) in [
        ("audit", DIE_AFTER_RECV_ENV),
        ("enforce", DIE_AFTER_RECV_ENV),
        ("audit", DIE_MID_RECORD_ENV),
        ("enforce", DIE_MID_RECORD_ENV),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("fired");
        let fault = format!("5:{}", marker.display());
        let sup = Supervisor::start_with_env(mode, "", &[(point, &fault)]);
        let run = crate::harness::run_container(
            &sup,
            &format!("lost-{mode}-{i}"),
            &format!(
                "fails=0; for i in $(seq 20); do /bin/true || fails=$((fails+1)); \
                 {LOADER} /bin/touch /work/m-$i; done; echo $fails > /work/fails"
            ),
            &[],
        );
        let ctx = format!("{mode}, {point}: {}\n{}", run.describe(), sup.log());
        assert!(marker.exists(), "the fault did not fire\n{ctx}");
        assert!(
            sup.log().contains("rebuilt from its task"),
            "the lost notification was not rebuilt\n{ctx}"
        );
        let fails = std::fs::read_to_string(run.work.join("fails")).unwrap_or_default();
        assert_eq!(fails.trim(), "0", "{ctx}");
        let ran = (1..=20).filter(|i| run.marker(&format!("m-{i}"))).count();
        let events: Vec<serde_json::Value> = sup
            .events_of(&run.id)
            .into_iter()
            .filter(|e| e["event"] == "binary_executed_by_loader")
            .collect();
        assert!(
            sup.events_of(&run.id)
                .iter()
                .all(|e| e["event"] != "inspection_failed"),
            "{ctx}"
        );
        if mode == "audit" {
            assert_eq!(ran, 20, "{ctx}");
            assert_eq!(events.len(), 20, "{events:#?}\n{ctx}");
        } else {
            assert_eq!(ran, 0, "{ctx}");
            assert_eq!(events.len(), 20, "{events:#?}\n{ctx}");
            assert!(events.iter().all(|e| e["action"] == "denied"));
        }
    }
}

/// A runtime whose message the keeper is still reading when an upgrade starts keeps its
/// container's listener: the keeper stops accepting and waits for the connections being read
/// before it re-executes itself (before, such a connection died with the old image, and every
/// trapped call of that container then failed with ENOSYS).
#[test]
fn a_connection_being_read_survives_an_upgrade() {
    needs_root!();
    let sup = Supervisor::start("audit", "");
    let dir = tempfile::tempdir().unwrap();
    let child = std::process::Command::new(crate::harness::fixture().bin.join("slowruntime"))
        .arg(sup.dir.path().join("eg.sock"))
        .arg("slow-upgrade")
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(
        &dir.path().join("half-sent"),
        "the first half of the message",
    );
    // The keeper's reader has the first half (and the listener) and waits for the rest.
    std::thread::sleep(Duration::from_millis(300));
    let _ = kill(Pid::from_raw(sup.pid()), Signal::SIGUSR2);
    // Long enough for a keeper that does not wait to have re-executed itself.
    std::thread::sleep(Duration::from_millis(700));
    std::fs::write(dir.path().join("send-rest"), "").unwrap();
    wait_for(&dir.path().join("sent"), "the rest of the message");
    sup.wait_for_log("keeper upgraded in place", 20);
    std::fs::write(dir.path().join("call"), "").unwrap();
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    let log = sup.log();
    assert!(
        said.contains("getppid answered"),
        "the container lost its listener: {said}\n{log}"
    );
    assert!(log.contains("slow-upgrade"), "{log}");
    assert!(!log.contains("the upgrade failed"), "{log}");
    assert!(!log.contains("connections still being read"), "{log}");
}

/// An upgrade that cannot happen (no binary at the keeper's path) leaves the keeper as it was,
/// accepting again: a container that starts afterwards is guarded.
#[test]
fn a_failed_upgrade_keeps_accepting() {
    needs_root!();
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("execguard");
    std::fs::copy(crate::harness::EXECGUARD, &exe).unwrap();
    let sup = Supervisor::start_exe(&exe, "audit", "", &[]);
    // The keeper starts its worker from the same path after it binds the socket: remove the
    // binary only once that exec succeeded (logged after it), or the worker's start is what
    // fails.
    sup.wait_for_log("worker started", 10);
    std::fs::remove_file(&exe).unwrap();
    let _ = kill(Pid::from_raw(sup.pid()), Signal::SIGUSR2);
    sup.wait_for_log("the upgrade failed", 20);
    assert_enforced(&sup, "after-failed-upgrade");
}

/// A container started now is guarded: its loader run is killed (137) before the payload runs.
fn assert_enforced(sup: &Supervisor, name: &str) {
    let run = crate::harness::run_container(
        sup,
        name,
        &format!("{LOADER} /opt/eg/payload /work/m; echo rc=$?"),
        &[("execguard.io/mode", "enforce")],
    );
    assert!(
        run.stdout.contains("rc=137") && !run.marker("m"),
        "{}\n{}",
        run.describe(),
        sup.log()
    );
}
