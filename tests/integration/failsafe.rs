//! What a container sees when the supervisor is not there: the documented fail-safe choices.

use crate::harness::{bundle, Supervisor};

/// No supervisor on the socket when the container is created: runc refuses to create it, in
/// both modes, so nothing runs unguarded.
#[test]
fn no_supervisor_at_create_refuses_the_container() {
    needs_root!();
    let mut sup = Supervisor::start("audit", "");
    sup.kill();
    for mode in ["audit", "enforce"] {
        let run = bundle(
            &sup.config,
            &format!("nosup-{mode}"),
            "touch /work/m",
            &[("execguard.io/mode", mode)],
            None,
        )
        .run();
        assert_ne!(run.status, 0, "{}", run.describe());
        assert!(!run.marker("m"), "{}", run.describe());
    }
}

/// The supervisor (the keeper) dies while a guarded container runs: every trapped call fails
/// with ENOSYS once the listener is gone, so nothing runs any more. By default that is the new
/// image's thread-pointer setup (the loader gives up before the program runs)...
#[test]
fn supervisor_death_fails_later_execs() {
    needs_root!();
    supervisor_death(
        "death-image",
        "",
        "127",
        "cannot set up thread-local storage: cannot set %fs base address",
    );
}

/// ... and with the exec checkpoint, the exec itself.
#[test]
fn supervisor_death_fails_later_execs_at_the_exec() {
    needs_root!();
    supervisor_death(
        "death-exec",
        "[detect]\nexec_checkpoint = true\n",
        "126",
        "Function not implemented",
    );
}

fn supervisor_death(name: &str, config: &str, status: &str, message: &str) {
    let mut sup = Supervisor::start("audit", config);
    let script = "touch /work/started; while [ ! -e /work/go ]; do :; done; \
                  /bin/true 2> /work/err; echo $? > /work/rc";
    let b = bundle(&sup.config, name, script, &[], None);
    let work = b.work.clone();
    let child = b.spawn();
    crate::harness::wait_for(&work.join("started"), "the container's start");
    sup.kill();
    std::fs::write(work.join("go"), "").unwrap();
    let run = b.wait(child);
    let rc = std::fs::read_to_string(run.work.join("rc")).unwrap_or_default();
    assert_eq!(rc.trim(), status, "{}", run.describe());
    let err = std::fs::read_to_string(run.work.join("err")).unwrap_or_default();
    assert!(err.contains(message), "{err}");
}
