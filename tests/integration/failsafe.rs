//! What a container sees when the supervisor is not there: the documented fail-safe choices.

use crate::harness::{bundle, Supervisor};

/// No supervisor on the socket when the container is created: runc refuses to create it, in
/// both modes, so nothing runs unguarded.
#[test]
fn no_supervisor_at_create_refuses_the_container() {
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

/// The supervisor dies while a guarded container runs: every later exec in it fails with
/// ENOSYS (the kernel's answer once the listener is gone), in both modes. Issue 4 replaces this
/// with a keeper that survives the supervisor.
#[test]
fn supervisor_death_fails_later_execs() {
    let mut sup = Supervisor::start("audit", "");
    let script = "touch /work/started; while [ ! -e /work/go ]; do :; done; \
                  /bin/true 2> /work/err; echo $? > /work/rc";
    let b = bundle(&sup.config, "death", script, &[], None);
    let work = b.work.clone();
    let child = b.spawn();
    crate::harness::wait_for(&work.join("started"), "the container's start");
    sup.kill();
    std::fs::write(work.join("go"), "").unwrap();
    let run = b.wait(child);
    let rc = std::fs::read_to_string(run.work.join("rc")).unwrap_or_default();
    assert_eq!(rc.trim(), "126", "{}", run.describe());
    let err = std::fs::read_to_string(run.work.join("err")).unwrap_or_default();
    assert!(err.contains("Function not implemented"), "{err}");
}
