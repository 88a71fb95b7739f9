//! The line a denied process gets on its own standard error (`[message]`): it reaches the
//! container's captured output once, and a closed, read-only or full standard error gets
//! nothing and stalls nothing.

use std::time::{Duration, Instant};

use crate::harness::{run_container, Supervisor};

const LOADER: &str = "/lib64/ld-linux-x86-64.so.2 /bin/touch /work/m";
const DOCS: &str = "[message]\ndocs_url = \"https://docs.example/execguard\"\n";

fn loader_events(sup: &Supervisor, id: &str) -> usize {
    sup.events_of(id)
        .iter()
        .filter(|e| e["event"] == "binary_executed_by_loader")
        .count()
}

#[test]
fn denied_process_is_told_why_on_its_stderr() {
    needs_root!();
    let sup = Supervisor::start("enforce", DOCS);
    let run = run_container(&sup, "tell", &format!("{LOADER}; echo rc=$?"), &[]);
    let ctx = format!("{}\n{}", run.describe(), sup.log());
    assert!(run.stdout.contains("rc=137"), "{ctx}");
    let told: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("execguard: "))
        .collect();
    assert_eq!(told.len(), 1, "{ctx}");
    assert!(
        told[0].starts_with("execguard: denied /")
            && told[0].ends_with(
                "ld-linux-x86-64.so.2 running /bin/touch (binary_executed_by_loader, critical); \
                 ask your platform team or see https://docs.example/execguard"
            ),
        "{ctx}"
    );
    assert_eq!(loader_events(&sup, &run.id), 1);

    // Standard error on a file (a job log): the line is in the file.
    let run = run_container(&sup, "tell-file", &format!("{LOADER} 2>/work/err"), &[]);
    let err = std::fs::read_to_string(run.work.join("err")).unwrap_or_default();
    assert_eq!(
        err.matches("execguard: denied").count(),
        1,
        "{err}\n{}",
        run.describe()
    );
}

/// Closed, opened read-only, a full pipe: no line, the denial and its event as always, and
/// no wait (a blocking write into the full pipe would hang the answer until the reader left).
#[test]
fn stderr_closed_read_only_or_full_gets_nothing() {
    needs_root!();
    let sup = Supervisor::start("enforce", DOCS);
    let cases = [
        ("closed", format!("{LOADER} 2>&-; echo rc=$?")),
        (
            "read-only",
            format!("echo keep > /work/ro; {LOADER} 2</work/ro; echo rc=$?; cat /work/ro"),
        ),
        (
            "full-pipe",
            // Standard error on a pipe that is full and never read.
            "/opt/eg/exectool full-stderr /lib64/ld-linux-x86-64.so.2 ld.so /bin/touch /work/m \
             | sed 's/signal 9/rc=137/'"
                .to_owned(),
        ),
    ];
    for (name, script) in cases {
        let started = Instant::now();
        let run = run_container(&sup, name, &script, &[]);
        let took = started.elapsed();
        let ctx = format!("{name}: {}\n{}", run.describe(), sup.log());
        assert!(run.stdout.contains("rc=137"), "{ctx}");
        assert!(!run.stdout.contains("execguard:"), "{ctx}");
        assert!(!run.stderr.contains("execguard:"), "{ctx}");
        assert!(!run.marker("m"), "{ctx}");
        assert_eq!(loader_events(&sup, &run.id), 1, "{ctx}");
        assert!(
            took < Duration::from_secs(30),
            "{name} took {took:?}\n{ctx}"
        );
        if name == "read-only" {
            assert!(run.stdout.ends_with("keep\n"), "{ctx}");
        }
    }
}

/// Audit mode tells only with `in_audit`; `enabled = false` tells no one.
#[test]
fn audit_and_disabled_messages() {
    needs_root!();
    let quiet = Supervisor::start("audit", DOCS);
    let run = run_container(&quiet, "audit-quiet", LOADER, &[]);
    assert!(
        run.marker("m") && !run.stderr.contains("execguard:"),
        "{}",
        run.describe()
    );

    let audit = Supervisor::start("audit", "[message]\nin_audit = true\n");
    let run = run_container(&audit, "audit-told", LOADER, &[]);
    assert!(run.marker("m"), "{}", run.describe());
    assert!(
        run.stderr.contains("execguard: logged (audit mode) /")
            && run
                .stderr
                .contains("(binary_executed_by_loader, critical); ask your platform team\n"),
        "{}",
        run.describe()
    );

    let off = Supervisor::start("enforce", "[message]\nenabled = false\n");
    let run = run_container(&off, "off", LOADER, &[]);
    assert!(
        !run.marker("m") && !run.stderr.contains("execguard:"),
        "{}",
        run.describe()
    );
}
