//! `execguard run -- COMMAND`: the guard without a container runtime (a CI job on a plain VM),
//! answered by a real supervisor.

use std::process::Command;

use crate::harness::{Supervisor, EXECGUARD};

fn run(config: &std::path::Path, mode: &str, name: &str, script: &str) -> (Option<i32>, String) {
    let out = Command::new(EXECGUARD)
        .arg("run")
        .arg("--config")
        .arg(config)
        .args([
            "--mode", mode, "--name", name, "--", "/bin/sh", "-c", script,
        ])
        .output()
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn run_guards_a_command_and_everything_it_starts() {
    needs_root!();
    let sup = Supervisor::start("audit", "");
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().display();
    for (mode, action) in [("enforce", "denied"), ("audit", "allowed")] {
        let name = format!("run-test-{mode}-{}", std::process::id());
        let m = dir.path().join(format!("m-{mode}"));
        let script = format!(
            "ldd /bin/true > {w}/ldd-{mode}; sh -c '/lib64/ld-linux-x86-64.so.2 /bin/touch {m}'; \
             echo rc=$?",
            m = m.display()
        );
        let (code, out) = run(&sup.config, mode, &name, &script);
        let ctx = format!("{mode}: {out}\n{}", sup.log());
        assert_eq!(code, Some(0), "{ctx}");
        assert_eq!(m.exists(), mode == "audit", "{ctx}");
        let ldd = std::fs::read_to_string(dir.path().join(format!("ldd-{mode}"))).unwrap();
        assert!(ldd.contains("libc.so.6"), "{ctx}");
        let events: Vec<_> = sup
            .events_of(&name)
            .into_iter()
            .filter(|e| e["event"] == "binary_executed_by_loader")
            .collect();
        assert_eq!(events.len(), 1, "{events:#?}\n{ctx}");
        assert_eq!(events[0]["action"], action);
        assert_eq!(events[0]["mode"], mode);
        if mode == "enforce" {
            assert!(
                out.contains("rc=137") && out.contains("execguard: denied"),
                "{ctx}"
            );
        }
    }
}

/// With no supervisor listening, enforce mode runs nothing; audit mode runs unguarded and
/// says so (`on_supervisor_unavailable = "by-mode"`).
#[test]
fn run_without_a_supervisor() {
    needs_root!();
    let dir = tempfile::tempdir().unwrap();
    let config = crate::harness::write_config(dir.path(), Some("audit"), "");
    let marker = dir.path().join("ran");
    let script = format!("touch {}", marker.display());
    let (code, out) = run(&config, "enforce", "nosup", &script);
    assert_ne!(code, Some(0), "{out}");
    assert!(
        out.contains("no execguard supervisor is listening"),
        "{out}"
    );
    assert!(!marker.exists());
    let (code, out) = run(&config, "audit", "nosup", &script);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("unguarded"), "{out}");
    assert!(marker.exists());
}
