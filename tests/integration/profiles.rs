//! Containers that come with a seccomp profile of their own: execguard merges into it and every
//! other rule keeps working.

use crate::harness::{bundle, Supervisor};
use serde_json::{json, Value};

/// Every x86_64 system call name the C library headers know.
fn all_syscall_names() -> Vec<String> {
    let header = std::fs::read_to_string("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")
        .expect("linux-libc-dev headers");
    header
        .lines()
        .filter_map(|l| l.strip_prefix("#define __NR_"))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// A profile in the style of podman's: deny by default, allow a list by name. `mkdir` and
/// `mkdirat` are left out, so they fail with EPERM.
fn allow_list_profile(architectures: &[&str]) -> Value {
    let names: Vec<String> = all_syscall_names()
        .into_iter()
        .filter(|n| n != "mkdir" && n != "mkdirat")
        .collect();
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": architectures,
        "syscalls": [{"names": names, "action": "SCMP_ACT_ALLOW"}]
    })
}

#[test]
fn allow_list_profile_keeps_its_denials() {
    needs_root!();
    let sup = Supervisor::start("audit", "");
    let script = "mkdir /tmp/d 2> /work/mkdir.err; echo $? > /work/mkdir.rc; \
                  /opt/eg/exectool shadow-listener > /work/shadow; \
                  /lib64/ld-linux-x86-64.so.2 /bin/touch /work/m";
    let profile = allow_list_profile(&["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]);
    for mode in ["audit", "enforce"] {
        let b = bundle(
            &sup.config,
            &format!("allowlist-{mode}"),
            script,
            &[("execguard.io/mode", mode)],
            Some(profile.clone()),
        );
        let sc = b.spec()["linux"]["seccomp"].clone();
        assert_eq!(sc["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(sc["defaultErrnoRet"], 1);
        let run = b.run();
        let rc = std::fs::read_to_string(run.work.join("mkdir.rc")).unwrap_or_default();
        assert_ne!(
            rc.trim(),
            "0",
            "{mode}: mkdir must still be denied\n{}",
            run.describe()
        );
        let err = std::fs::read_to_string(run.work.join("mkdir.err")).unwrap_or_default();
        assert!(err.contains("Operation not permitted"), "{err}");
        assert_eq!(
            std::fs::read_to_string(run.work.join("shadow"))
                .unwrap_or_default()
                .trim(),
            "EBUSY",
            "{mode}: {}",
            run.describe()
        );
        assert_eq!(
            run.marker("m"),
            mode == "audit",
            "{mode}: {}\n{}",
            run.describe(),
            sup.log()
        );
        let events = sup.events_of(&run.id);
        let names: Vec<&str> = events
            .iter()
            .map(|e| e["event"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["seccomp_listener_attempt", "binary_executed_by_loader"],
            "{mode}: {events:#?}"
        );
    }
}

/// A profile that lists only x86_64 keeps 32-bit system calls out entirely: an `int 0x80`
/// execve is killed by the kernel (SIGSYS) before any supervisor sees it. execguard keeps the
/// profile's architectures as they are.
#[test]
fn native_only_profile_kills_32_bit_execs() {
    needs_root!();
    let sup = Supervisor::start("audit", "");
    let profile = json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"]});
    let b = bundle(
        &sup.config,
        "native-only",
        "/opt/eg/exectool int80 /lib64/ld-linux-x86-64.so.2 ld.so /bin/touch /work/m; echo $? > /work/rc",
        &[],
        Some(profile),
    );
    assert_eq!(
        b.spec()["linux"]["seccomp"]["architectures"],
        json!(["SCMP_ARCH_X86_64"])
    );
    let run = b.run();
    assert!(!run.marker("m"), "{}", run.describe());
    // 128 + SIGSYS (31)
    assert_eq!(
        std::fs::read_to_string(run.work.join("rc"))
            .unwrap_or_default()
            .trim(),
        "159",
        "{}",
        run.describe()
    );
}
