//! Least privilege: the worker runs with exactly the capabilities it was measured to need
//! (permitted, effective and bounding sets, `no_new_privs`), the keeper with none of its own;
//! a supervisor started without one of them says which at once; and each of them is needed by
//! a test here (`CAP_SYS_PTRACE` by every test).

use std::process::{Command, Stdio};

use serde_json::json;

use crate::harness::{bundle, write_config, Supervisor, EXECGUARD};

/// The capabilities the worker keeps, as setpriv names them, and their bits
/// (`linux/capability.h`).
const NEEDED: &[(&str, u32)] = &[
    ("sys_ptrace", 19),
    ("dac_read_search", 2),
    ("kill", 5),
    ("checkpoint_restore", 40),
];

fn status_field(pid: i32, name: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
        .trim()
        .to_owned()
}

fn caps(pid: i32, set: &str) -> u64 {
    u64::from_str_radix(&status_field(pid, set), 16).unwrap()
}

#[test]
fn the_worker_keeps_exactly_the_needed_capabilities_and_the_keeper_uses_none() {
    needs_root!();
    let sup = Supervisor::start("enforce", "");
    let worker = sup.worker_pid();
    // The worker reduces its sets and confines itself before it takes its first container:
    // wait for its log line.
    sup.wait_for_log("worker system calls confined", 10);
    let want: u64 = NEEDED.iter().map(|(_, bit)| 1u64 << bit).sum();
    for set in ["CapPrm:", "CapEff:", "CapBnd:"] {
        assert_eq!(caps(worker, set), want, "worker {set}");
    }
    assert_eq!(caps(worker, "CapInh:"), 0);
    assert_eq!(caps(worker, "CapAmb:"), 0);
    assert_eq!(status_field(worker, "NoNewPrivs:"), "1");
    // And its system calls are confined (`[hardening] syscall_filter`, a seccompiler filter).
    assert_eq!(status_field(worker, "Seccomp:"), "2");
    assert_eq!(status_field(worker, "Seccomp_filters:"), "1");
    let keeper = sup.pid();
    // Permitted, not effective: under no_new_privs (systemd's NoNewPrivileges=) a worker it
    // execs gets no more than the keeper's permitted set.
    assert_eq!(caps(keeper, "CapPrm:"), want);
    assert_eq!(caps(keeper, "CapEff:"), 0);
    assert_eq!(
        caps(keeper, "CapBnd:"),
        want,
        "the keeper passes on only these"
    );
}

/// Without any one of them, `execguard supervise` stops at once and names it.
#[test]
fn a_missing_capability_is_named_when_the_supervisor_starts() {
    needs_root!();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), Some("enforce"), "");
    for (missing, _) in NEEDED {
        let others: Vec<String> = NEEDED
            .iter()
            .filter(|(c, _)| c != missing)
            .map(|(c, _)| format!("+{c}"))
            .collect();
        let out = Command::new("timeout")
            .args(["10", "setpriv"])
            .arg(format!("--bounding-set=-all,{}", others.join(",")))
            .args([
                "--inh-caps=-all",
                "--",
                EXECGUARD.path(),
                "supervise",
                "--config",
            ])
            .arg(&config)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "started without {missing}: {stderr}");
        assert_ne!(out.status.code(), Some(124), "hung without {missing}");
        let name = format!("CAP_{}", missing.to_uppercase());
        assert!(
            stderr.contains(&format!("needs {name} to ")) && stderr.contains("bounding set"),
            "{missing}: {stderr}"
        );
    }
}

/// A container whose build runs as uid 1000, enforce mode.
fn run_as_user(sup: &Supervisor, name: &str, script: &str) -> crate::harness::Run {
    use std::os::unix::fs::PermissionsExt;
    let b = bundle(&sup.config, name, script, &[], None);
    std::fs::set_permissions(&b.work, std::fs::Permissions::from_mode(0o777)).unwrap();
    b.edit_spec(|spec| spec["process"]["user"] = json!({"uid": 1000, "gid": 1000}));
    b.run()
}

/// CAP_KILL: a denied image of another uid is killed before it runs anything (137), rather
/// than left to fail its thread-pointer setup (127).
#[test]
fn a_denied_image_of_another_uid_is_killed() {
    needs_root!();
    let sup = Supervisor::start("enforce", "");
    let run = run_as_user(
        &sup,
        "priv-kill",
        "/lib64/ld-linux-x86-64.so.2 /opt/eg/payload /work/m; echo rc=$?",
    );
    let ctx = format!("{}\n{}", run.describe(), sup.log());
    assert!(run.stdout.contains("rc=137"), "{ctx}");
    assert!(!run.marker("m"), "{ctx}");
    assert!(!sup.log().contains("cannot kill"), "{ctx}");
}

/// CAP_DAC_READ_SEARCH: an execute-only loader copy of the build's own uid is still read and
/// recognised (not only denied as `inspection_failed`).
#[test]
fn an_unreadable_loader_copy_is_still_recognised() {
    needs_root!();
    let sup = Supervisor::start("enforce", "");
    let run = run_as_user(
        &sup,
        "priv-unreadable",
        "cp /lib64/ld-linux-x86-64.so.2 /work/myld && chmod 0111 /work/myld && \
         /work/myld /opt/eg/payload /work/m; echo rc=$?",
    );
    let events = sup.events_of(&run.id);
    let ctx = format!("{}\n{events:#?}\n{}", run.describe(), sup.log());
    assert!(run.stdout.contains("rc=137"), "{ctx}");
    assert!(!run.marker("m"), "{ctx}");
    assert_eq!(events.len(), 1, "{ctx}");
    assert_eq!(events[0]["event"], "binary_executed_by_loader", "{ctx}");
    assert_eq!(events[0]["action"], "denied", "{ctx}");
}
