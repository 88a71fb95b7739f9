//! Every loader-execution variant of the threat list (README, threat model; ARCHITECTURE.md for
//! the code), in audit mode (the program runs and the event says "allowed") and in enforce mode
//! (the program does not run and the event says "denied"). Each program proves it ran by
//! creating /work/m.

use crate::harness::{
    run_container, run_guarded, Run, Supervisor, Way, LOADER as LD, MULTIARCH, MUSL_LOADER,
    NATIVE_ABI,
};
use serde_json::Value;

struct Expect {
    rule: &'static str,
    /// The ABI of the exec call (what the exec checkpoint reports).
    abi: &'static str,
    /// The ABI of the new image (what the image checkpoint reports).
    image_abi: &'static str,
}

const LOADER: Expect = Expect {
    rule: "binary_executed_by_loader",
    abi: NATIVE_ABI,
    image_abi: NATIVE_ABI,
};

/// The two places an exec can be judged: the image checkpoint alone (x86_64's default), and
/// the exec call as well (`[detect] exec_checkpoint = true`, arm64's default).
const CHECKPOINTS: [(&str, &str); 2] = [
    ("image", "[detect]\nexec_checkpoint = false\n"),
    ("exec", "[detect]\nexec_checkpoint = true\n"),
];
// The name of each setting is also the stage its events come from.

/// Runs `script` in audit and in enforce mode, with each checkpoint setting, and checks every
/// outcome.
fn check(name: &str, script: &str, expect: Expect) {
    for (checkpoints, config) in CHECKPOINTS {
        check_with(
            &format!("{name}-{checkpoints}"),
            config,
            checkpoints,
            script,
            &expect,
        );
    }
}

fn check_with(name: &str, config: &str, stage: &str, script: &str, expect: &Expect) {
    // One supervisor in audit mode by default; the enforce run is switched by annotation.
    let sup = Supervisor::start("audit", config);
    // On arm64 the image checkpoint alone misses old glibc loaders: the supervisor says so.
    if cfg!(target_arch = "aarch64") && config.contains("exec_checkpoint = false") {
        sup.wait_for_log("exec_checkpoint = false on arm64", 10);
    }
    // In a runc container, and through `execguard run` (no container runtime).
    for way in [Way::Runc, Way::Run] {
        check_way(&sup, way, name, stage, script, expect);
    }
}

fn check_way(sup: &Supervisor, way: Way, name: &str, stage: &str, script: &str, expect: &Expect) {
    let name = format!("{name}-{way:?}");
    let audit = run_guarded(way, sup, &format!("{name}-audit"), script, &[]);
    let enforce = run_guarded(
        way,
        sup,
        &format!("{name}-enforce"),
        script,
        &[("execguard.io/mode", "enforce")],
    );
    let log = sup.log();
    assert!(
        audit.marker("m"),
        "{way:?} audit: the program should have run\n{}\n{log}",
        audit.describe()
    );
    assert!(
        !enforce.marker("m"),
        "{way:?} enforce: the program ran\n{}\n{log}",
        enforce.describe()
    );
    for (run, mode, action) in [
        (&audit, "audit", "allowed"),
        (&enforce, "enforce", "denied"),
    ] {
        let events = sup.events_of(&run.id);
        let hit = events
            .iter()
            .find(|e| e["event"] == expect.rule)
            .unwrap_or_else(|| {
                panic!(
                    "{mode}: no {} event; events: {events:#?}\n{}\n{log}",
                    expect.rule,
                    run.describe()
                )
            });
        check_event_fields(hit, mode, action, &run.id);
        assert_eq!(hit["stage"], stage, "{hit:#}");
        let abi = if stage == "exec" {
            expect.abi
        } else {
            expect.image_abi
        };
        assert_eq!(hit["exec"]["abi"], abi, "{hit:#}");
        let imp = hit["importance"].as_str().unwrap();
        assert!(imp == "critical" || imp == "high", "{hit:#}");
    }
}

/// The fields every event has (README, events), with the values of this run.
fn check_event_fields(e: &Value, mode: &str, action: &str, id: &str) {
    assert_eq!(e["mode"], mode, "{e:#}");
    assert_eq!(e["action"], action, "{e:#}");
    assert_eq!(e["container"]["id"], id, "{e:#}");
    assert_eq!(e["category"], "execution", "{e:#}");
    assert_eq!(e["method"], "system_services", "{e:#}");
    assert!(
        e["time"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{e:#}"
    );
    assert!(e["process"]["pid"].as_u64().is_some_and(|p| p > 0), "{e:#}");
    assert!(e["exec"]["path"].is_string(), "{e:#}");
    assert!(e["exec"]["argv"].is_array(), "{e:#}");
    assert!(e["description"].is_string(), "{e:#}");
    if e["event"] == "binary_executed_by_loader" {
        assert_eq!(e["description"], "Binary executed through loader");
        assert!(e["loader"]["program"].is_string(), "{e:#}");
    }
}

/// The loader's directory and file name.
fn ld_dir() -> &'static str {
    LD.rsplit_once('/').unwrap().0
}
fn ld_name() -> &'static str {
    LD.rsplit_once('/').unwrap().1
}

#[test]
fn direct() {
    needs_root!();
    check("direct", &format!("{LD} /bin/touch /work/m"), LOADER);
}

#[test]
fn dot_and_slash_tricks() {
    needs_root!();
    check(
        "dots",
        &format!(
            "//usr/lib/../..{}/./{} /bin/touch /work/m",
            ld_dir(),
            ld_name()
        ),
        LOADER,
    );
}

#[test]
fn through_a_symlink() {
    needs_root!();
    check(
        "symlink",
        &format!("ln -s {LD} /tmp/l && /tmp/l /bin/touch /work/m"),
        LOADER,
    );
}

#[test]
fn relative_to_the_cwd() {
    needs_root!();
    check(
        "relative",
        &format!(
            "cd /usr/lib/{MULTIARCH} && ./{} /bin/touch /work/m",
            ld_name()
        ),
        LOADER,
    );
}

#[test]
fn renamed_copy() {
    needs_root!();
    check(
        "copy",
        &format!("cp {LD} /tmp/innocent.txt && /tmp/innocent.txt /bin/touch /work/m"),
        LOADER,
    );
}

#[test]
fn execveat_with_a_dirfd() {
    needs_root!();
    check(
        "execveat",
        &format!(
            "/opt/eg/exectool execveat {} {} ld.so /bin/touch /work/m",
            ld_dir(),
            ld_name()
        ),
        LOADER,
    );
}

#[test]
fn fexecve() {
    needs_root!();
    check(
        "fexecve",
        &format!("/opt/eg/exectool fexecve {LD} ld.so /bin/touch /work/m"),
        LOADER,
    );
}

#[test]
fn proc_self_fd() {
    needs_root!();
    check(
        "procfd",
        &format!("/opt/eg/exectool procfd {LD} ld.so /bin/touch /work/m"),
        LOADER,
    );
}

#[test]
fn memfd_copy() {
    needs_root!();
    check(
        "memfd",
        &format!("/opt/eg/exectool memfd {LD} ld.so /bin/touch /work/m"),
        Expect {
            rule: "fileless_loader_execution",
            abi: NATIVE_ABI,
            image_abi: NATIVE_ABI,
        },
    );
}

#[test]
fn musl_loader() {
    needs_root!();
    check(
        "musl",
        &format!("{MUSL_LOADER} /opt/eg/payload-musl /work/m"),
        LOADER,
    );
}

#[test]
fn i386_loader() {
    needs_root!();
    check(
        "i386",
        "/lib/ld-linux.so.2 /opt/eg/payload32 /work/m",
        Expect {
            image_abi: "i386",
            ..LOADER
        },
    );
}

#[test]
fn int80_from_a_64_bit_process() {
    needs_root!();
    check(
        "int80",
        &format!("/opt/eg/exectool int80 {LD} ld.so /bin/touch /work/m"),
        Expect {
            rule: "binary_executed_by_loader",
            abi: "i386",
            image_abi: "x86_64",
        },
    );
}

#[test]
fn execve_from_a_32_bit_process() {
    needs_root!();
    check(
        "exec32",
        "/opt/eg/exectool32 execve /lib/ld-linux.so.2 ld.so /opt/eg/payload32 /work/m",
        Expect {
            rule: "binary_executed_by_loader",
            abi: "i386",
            image_abi: "i386",
        },
    );
}

#[test]
fn shebang_naming_the_loader() {
    needs_root!();
    check(
        "shebang",
        &format!("printf '#!{LD} /bin/touch\\n' > /tmp/s && chmod +x /tmp/s && /tmp/s /work/m"),
        LOADER,
    );
}

#[test]
fn custom_pt_interp() {
    needs_root!();
    check(
        "ptinterp",
        &format!("cp {LD} /tmp/myld && /opt/eg/payload-interp /work/m"),
        Expect {
            rule: "custom_interpreter",
            abi: NATIVE_ABI,
            image_abi: NATIVE_ABI,
        },
    );
}

macro_rules! glibc_option {
    ($name:ident, $($opt:expr),+) => {
        #[test]
        fn $name() {
            needs_root!();
            let opts: Vec<String> = vec![$(String::from($opt)),+];
            let opts = opts.join(" ");
            check(
                stringify!($name),
                &format!("{LD} {opts} /bin/touch /work/m"),
                LOADER,
            );
        }
    };
}

glibc_option!(
    opt_library_path,
    "--library-path",
    &format!("/lib/{MULTIARCH}")
);
glibc_option!(
    opt_preload,
    "--preload",
    &format!("/lib/{MULTIARCH}/libm.so.6")
);
glibc_option!(opt_audit, "--audit", &format!("/lib/{MULTIARCH}/libm.so.6"));
glibc_option!(opt_argv0, "--argv0", "cc1");
glibc_option!(opt_inhibit_cache, "--inhibit-cache");
glibc_option!(opt_inhibit_rpath, "--inhibit-rpath", "''");
glibc_option!(
    opt_hwcaps,
    "--glibc-hwcaps-prepend",
    "x86-64-v2",
    "--glibc-hwcaps-mask",
    "x86-64-v2"
);

/// A loader of glibc before 2.34 (Debian 11's 2.31) running a program that needs no libc. On
/// arm64 such a loader makes no `set_tid_address` call, so no image checkpoint sees it: the
/// default setting there (the exec checkpoint on) judges it at the exec. On x86_64 its
/// `arch_prctl` is the image checkpoint, which is the default.
#[test]
fn an_older_glibc_loader() {
    needs_root!();
    let old = crate::harness::fixture().bin.join("ld-2.31.so");
    if !old.exists() {
        crate::harness::skip(
            "no glibc 2.31 loader (scripts/old-loaders.sh fetches it)",
            false,
        );
        return;
    }
    let stage = if cfg!(target_arch = "aarch64") {
        "exec"
    } else {
        "image"
    };
    check_with(
        "old-glibc",
        "",
        stage,
        "/opt/eg/ld-2.31.so /opt/eg/payload-nolibc",
        &LOADER,
    );
}

/// A process in a guarded container cannot install a listener of its own to answer its own
/// execs: the kernel refuses a second listener in the chain (EBUSY). Checked in both modes, so
/// a kernel change would show here.
#[test]
fn no_shadow_listener() {
    needs_root!();
    let sup = Supervisor::start("audit", "");
    for mode in ["audit", "enforce"] {
        let run = run_container(
            &sup,
            &format!("shadow-{mode}"),
            "/opt/eg/exectool shadow-listener > /work/out; echo $? > /work/rc",
            &[("execguard.io/mode", mode)],
        );
        let rc = std::fs::read_to_string(run.work.join("rc")).unwrap_or_default();
        assert_eq!(rc.trim(), "0", "{mode}: {}", run.describe());
        assert_eq!(
            std::fs::read_to_string(run.work.join("out"))
                .unwrap()
                .trim(),
            "EBUSY"
        );
    }
}

/// The config's mode applies when there is no annotation, and with the exec checkpoint the
/// configured errno is what the denied exec fails with.
#[test]
fn configured_enforce_mode_and_errno() {
    needs_root!();
    let sup = Supervisor::start(
        "enforce",
        "[enforce]\nerrno = \"EPERM\"\n[detect]\nexec_checkpoint = true\n",
    );
    let run: Run = run_container(
        &sup,
        "cfg-enforce",
        &format!("{LD} /bin/touch /work/m 2> /work/err; echo $? > /work/rc"),
        &[],
    );
    assert!(!run.marker("m"), "{}", run.describe());
    let err = std::fs::read_to_string(run.work.join("err")).unwrap();
    assert!(err.contains("Operation not permitted"), "{err}");
    let events = sup.events_of(&run.id);
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["errno"], "EPERM");
    assert_eq!(events[0]["mode"], "enforce");
    // The annotation can lower it to audit.
    let run = run_container(
        &sup,
        "cfg-annot-audit",
        &format!("{LD} /bin/touch /work/m"),
        &[("execguard.io/mode", "audit")],
    );
    assert!(run.marker("m"), "{}", run.describe());
    assert_eq!(sup.events_of(&run.id)[0]["action"], "allowed");
}

/// What execguard is not needed for: a noexec mount stops the loader trick by itself (the
/// kernel refuses to map code from it), guarded or not. The missing execute bit, exec
/// allowlists and exec monitors are what the trick defeats.
#[test]
fn a_noexec_mount_stops_the_loader_by_itself() {
    needs_root!();
    let sup = Supervisor::start("audit", "");
    let b = crate::harness::bundle(
        &sup.config,
        "noexec",
        &format!(
            "cp /opt/eg/payload /noexec/p && chmod -x /noexec/p && \
             {LD} /noexec/p /work/m 2> /work/err; echo $? > /work/rc"
        ),
        &[],
        None,
    );
    b.edit_spec(|spec| {
        spec["mounts"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
            "destination": "/noexec", "type": "tmpfs", "source": "tmpfs",
            "options": ["noexec", "nosuid", "nodev", "mode=1777"]}));
    });
    let run = b.run();
    assert!(!run.marker("m"), "{}", run.describe());
    let err = std::fs::read_to_string(run.work.join("err")).unwrap_or_default();
    assert!(
        err.contains("failed to map segment from shared object"),
        "{err}\n{}",
        run.describe()
    );
    let rc = std::fs::read_to_string(run.work.join("rc")).unwrap_or_default();
    assert_eq!(rc.trim(), "127", "{}", run.describe());
}

/// By default a loader execution is judged at the new image: the process is killed before
/// the payload runs (the shell sees SIGKILL), and the event says where it was seen.
#[test]
fn denied_at_the_image_by_default() {
    needs_root!();
    let sup = Supervisor::start("enforce", "");
    let run = run_container(
        &sup,
        "image-kill",
        &format!("{LD} /bin/touch /work/m; echo $? > /work/rc"),
        &[],
    );
    assert!(!run.marker("m"), "{}", run.describe());
    let rc = std::fs::read_to_string(run.work.join("rc")).unwrap();
    assert_eq!(rc.trim(), "137", "killed by SIGKILL\n{}", run.describe());
    let events = sup.events_of(&run.id);
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["stage"], "image");
    assert_eq!(events[0]["action"], "denied");
    assert_eq!(events[0]["exec"]["syscall"], "arch_prctl");
    assert_eq!(events[0]["loader"]["program"], "/bin/touch");
    assert!(
        events[0]["exec"]["path"]
            .as_str()
            .unwrap()
            .ends_with("/ld-linux-x86-64.so.2"),
        "{events:#?}"
    );
}

/// More loader options than the supervisor reads: the program may hide beyond them, so it is
/// assumed (and the event says argv was truncated).
#[test]
fn more_options_than_are_read() {
    needs_root!();
    check(
        "manyopts",
        &format!(
            "set --; for i in $(seq 200); do set -- \"$@\" --inhibit-cache; done; {LD} \"$@\" /bin/touch /work/m"
        ),
        LOADER,
    );
}

/// `runc exec` into a guarded container hands the supervisor a second notify fd for the same
/// container; the exec'd process is guarded with the container's mode.
#[test]
fn runc_exec_is_guarded_too() {
    needs_root!();
    use crate::harness::{bundle, fixture};
    let sup = Supervisor::start("audit", "");
    let b = bundle(
        &sup.config,
        "runc-exec",
        "touch /work/started; while [ ! -e /work/done ]; do sleep 0.05; done",
        &[("execguard.io/mode", "enforce")],
        None,
    );
    let work = b.work.clone();
    let id = b.id.clone();
    let child = b.spawn();
    crate::harness::wait_for(&work.join("started"), "the container's start");
    let exec = std::process::Command::new("runc")
        .arg("--root")
        .arg(fixture().dir.join("runc-state"))
        .args(["exec", &id, LD, "/bin/touch", "/work/m"])
        .output()
        .unwrap();
    std::fs::write(work.join("done"), "").unwrap();
    let run = b.wait(child);
    assert!(!exec.status.success(), "runc exec should fail");
    assert!(!run.marker("m"), "{}", run.describe());
    let events = sup.events_of(&id);
    assert_eq!(events.len(), 1, "{events:#?}\n{}", sup.log());
    assert_eq!(events[0]["action"], "denied");
    assert_eq!(events[0]["loader"]["program"], "/bin/touch");
}
