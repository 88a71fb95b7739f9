//! Docker Engine (Debian's dockerd 20.10) with the runtimes `execguard setup docker` writes:
//! a private daemon per test, an image `docker import`ed from the fixture's root filesystem.
//! Docker 20.10 has no `--annotation`, so the runtime's name picks the mode.

use crate::harness::{Docker, Run, Supervisor};

/// A syscall Docker's default profile denies (keyctl: EPERM), a legitimate ldd, a compiler
/// and the program it built, then the loader execution.
const SCRIPT: &str = "/opt/eg/exectool keyctl > /work/keyctl; \
    ldd /bin/true > /work/ldd; \
    printf 'int main(void){return 0;}' > /tmp/h.c && gcc -o /tmp/h /tmp/h.c && /tmp/h && touch /work/built; \
    /lib64/ld-linux-x86-64.so.2 /bin/touch /work/m";

fn read(run: &Run, name: &str) -> String {
    std::fs::read_to_string(run.work.join(name)).unwrap_or_default()
}

/// The loader-execution events of one container.
fn loader_events(sup: &Supervisor, id: &str) -> Vec<serde_json::Value> {
    sup.events_of(id)
        .into_iter()
        .filter(|e| e["event"] == "binary_executed_by_loader")
        .collect()
}

/// `execguard-audit` logs and lets run, `execguard-enforce` denies, `execguard` takes the
/// config's mode; every container keeps Docker's default seccomp profile, and builds.
#[test]
fn docker_runtimes_choose_the_mode() {
    needs_root!();
    let sup = Supervisor::start("audit", "");
    let docker = Docker::start(&sup.config);
    for (runtime, mode) in [
        ("execguard-audit", "audit"),
        ("execguard-enforce", "enforce"),
        ("execguard", "audit"),
    ] {
        let run = docker.run(runtime, &[], SCRIPT);
        let ctx = format!(
            "{runtime}: {}\n{}\n{}",
            run.describe(),
            sup.log(),
            docker.log()
        );
        assert_eq!(run.id.len(), 64, "{ctx}");
        assert_eq!(run.marker("m"), mode == "audit", "{ctx}");
        assert!(run.marker("built"), "the compiler must work\n{ctx}");
        assert!(
            read(&run, "ldd").contains("libc.so.6"),
            "ldd must work\n{ctx}"
        );
        assert_eq!(
            read(&run, "keyctl").trim(),
            "EPERM",
            "Docker's profile must still deny keyctl\n{ctx}"
        );
        let events = loader_events(&sup, &run.id);
        assert_eq!(events.len(), 1, "{events:#?}\n{ctx}");
        assert_eq!(events[0]["mode"], mode);
        let action = if mode == "audit" { "allowed" } else { "denied" };
        assert_eq!(events[0]["action"], action, "{:#}", events[0]);
    }
}

/// Without execguard's runtimes nothing is guarded: the payload runs and nothing is logged;
/// Docker's profile answers keyctl the same way.
#[test]
fn docker_plain_runc_for_comparison() {
    needs_root!();
    let sup = Supervisor::start("enforce", "");
    let docker = Docker::start(&sup.config);
    let run = docker.run("runc", &[], SCRIPT);
    let ctx = format!("{}\n{}", run.describe(), docker.log());
    assert!(run.marker("m"), "{ctx}");
    assert_eq!(read(&run, "keyctl").trim(), "EPERM", "{ctx}");
    assert!(sup.events_of(&run.id).is_empty(), "{:#?}", sup.events());
}

/// `--security-opt seccomp=unconfined` drops Docker's profile, not execguard: the container
/// is still guarded (keyctl now runs). A `docker exec` into a guarded container is guarded too.
#[test]
fn docker_unconfined_and_exec_are_guarded() {
    needs_root!();
    let sup = Supervisor::start("audit", "");
    let docker = Docker::start(&sup.config);
    let run = docker.run(
        "execguard-enforce",
        &["--security-opt", "seccomp=unconfined"],
        SCRIPT,
    );
    let ctx = format!("{}\n{}\n{}", run.describe(), sup.log(), docker.log());
    assert!(!run.marker("m"), "{ctx}");
    assert!(run.marker("built"), "{ctx}");
    assert_ne!(
        read(&run, "keyctl").trim(),
        "EPERM",
        "unconfined: no profile\n{ctx}"
    );
    let events = loader_events(&sup, &run.id);
    assert_eq!(events.len(), 1, "{events:#?}\n{ctx}");
    assert_eq!(events[0]["action"], "denied");

    let (id, work, _dir) = docker.start_sleeping("execguard-enforce");
    let out = docker
        .cli()
        .args(["exec", &id, "/bin/sh", "-c"])
        .arg("ldd /bin/true > /work/ldd; /lib64/ld-linux-x86-64.so.2 /bin/touch /work/e; echo $? > /work/rc")
        .output()
        .unwrap();
    let ctx = format!(
        "docker exec: {}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        sup.log(),
        docker.log()
    );
    assert!(!work.join("e").exists(), "{ctx}");
    let rc = std::fs::read_to_string(work.join("rc")).unwrap_or_default();
    assert_eq!(rc.trim(), "137", "killed at the image checkpoint\n{ctx}");
    let ldd = std::fs::read_to_string(work.join("ldd")).unwrap_or_default();
    assert!(ldd.contains("libc.so.6"), "{ctx}");
    let events = loader_events(&sup, &id);
    assert_eq!(events.len(), 1, "{events:#?}\n{ctx}");
    assert_eq!(events[0]["action"], "denied");
    assert_eq!(events[0]["mode"], "enforce");
}
