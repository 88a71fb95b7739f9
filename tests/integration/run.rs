//! `execguard run -- COMMAND`: the guard without a container runtime (a CI job on a plain VM),
//! with its own in-process supervisor (as root and as an ordinary user) or handing over to a
//! running one (`--supervisor`).

use std::path::Path;
use std::process::Command;

use crate::harness::{write_config, Supervisor, EXECGUARD, LOADER};

/// `execguard run [extra] --mode MODE --name NAME -- sh -c script`: exit status and output.
fn run(
    config: &Path,
    extra: &[&str],
    mode: &str,
    name: &str,
    script: &str,
    uid: Option<u32>,
) -> (Option<i32>, String) {
    let mut cmd = match uid {
        Some(uid) => {
            let mut c = Command::new("setpriv");
            c.args([
                format!("--reuid={uid}"),
                format!("--regid={uid}"),
                "--clear-groups".into(),
            ])
            .arg(EXECGUARD);
            c
        }
        None => Command::new(EXECGUARD),
    };
    let out = cmd
        .arg("run")
        .arg("--config")
        .arg(config)
        .args(extra)
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

/// A directory any user may write (the commands run as uid 65534 too) holding an audit-mode
/// config.
fn open_config() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let config = write_config(dir.path(), Some("audit"), "");
    (dir, config)
}

/// The loader execution inside a nested shell, ldd, and an exit status to pass through.
fn script(dir: &Path, tag: &str) -> String {
    format!(
        "ldd /bin/true > {d}/ldd-{tag}; sh -c '{LOADER} /bin/touch {d}/m-{tag}'; \
         echo rc=$?; exit 7",
        d = dir.display()
    )
}

fn loader_events(events: &[serde_json::Value], name: &str) -> Vec<serde_json::Value> {
    events
        .iter()
        .filter(|e| e["container"]["id"] == name && e["event"] == "binary_executed_by_loader")
        .cloned()
        .collect()
}

/// Its own supervisor: enforce denies (and says why on stderr), audit logs; the command's exit
/// status comes back; as root and as an ordinary user (no_new_privs).
#[test]
fn run_supervises_a_command_itself() {
    needs_root!();
    let (dir, config) = open_config();
    for (tag, mode, uid) in [
        ("root-enforce", "enforce", None),
        ("root-audit", "audit", None),
        ("user-enforce", "enforce", Some(65534)),
    ] {
        let events = dir.path().join(format!("events-{tag}.json"));
        std::fs::write(&events, "").unwrap();
        std::fs::set_permissions(&events, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .unwrap();
        let events_arg = events.to_str().unwrap();
        let (code, out) = run(
            &config,
            &["--events", events_arg],
            mode,
            tag,
            &script(dir.path(), tag),
            uid,
        );
        let ctx = format!("{tag}: {out}");
        assert_eq!(code, Some(7), "the command's status\n{ctx}");
        assert_eq!(
            dir.path().join(format!("m-{tag}")).exists(),
            mode == "audit",
            "{ctx}"
        );
        let ldd = std::fs::read_to_string(dir.path().join(format!("ldd-{tag}"))).unwrap();
        assert!(ldd.contains("libc.so.6"), "{ctx}");
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&events)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let hits = loader_events(&lines, tag);
        assert_eq!(hits.len(), 1, "{lines:#?}\n{ctx}");
        let action = if mode == "audit" { "allowed" } else { "denied" };
        assert_eq!(hits[0]["action"], action);
        if mode == "enforce" {
            // Killed at the image (137), or refused at the exec (126) where the exec
            // checkpoint is on by default (arm64).
            let status = if cfg!(target_arch = "aarch64") {
                "rc=126"
            } else {
                "rc=137"
            };
            assert!(
                out.contains(status) && out.contains("execguard: denied"),
                "{ctx}"
            );
        }
    }
    // Killed by a signal: 128 + the signal.
    let (code, out) = run(&config, &[], "audit", "sig", "kill -TERM $$", None);
    assert_eq!(code, Some(143), "{out}");
}

/// `--supervisor`: the filter goes to the running `execguard supervise`, whose events name the
/// run.
#[test]
fn run_hands_over_to_the_running_supervisor() {
    needs_root!();
    let sup = Supervisor::start("audit", "");
    let dir = tempfile::tempdir().unwrap();
    for (mode, action) in [("enforce", "denied"), ("audit", "allowed")] {
        let name = format!("run-test-{mode}-{}", std::process::id());
        let (code, out) = run(
            &sup.config,
            &["--supervisor"],
            mode,
            &name,
            &script(dir.path(), mode),
            None,
        );
        let ctx = format!("{mode}: {out}\n{}", sup.log());
        assert_eq!(code, Some(7), "{ctx}");
        assert_eq!(
            dir.path().join(format!("m-{mode}")).exists(),
            mode == "audit",
            "{ctx}"
        );
        let hits = loader_events(&sup.events(), &name);
        assert_eq!(hits.len(), 1, "{hits:#?}\n{ctx}");
        assert_eq!(hits[0]["action"], action);
        assert_eq!(hits[0]["mode"], mode);
    }
}

/// `--supervisor` with none listening: enforce runs nothing; audit runs unguarded and says so
/// (`on_supervisor_unavailable = "by-mode"`).
#[test]
fn run_without_the_running_supervisor() {
    needs_root!();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), Some("audit"), "");
    let marker = dir.path().join("ran");
    let script = format!("touch {}", marker.display());
    let (code, out) = run(
        &config,
        &["--supervisor"],
        "enforce",
        "nosup",
        &script,
        None,
    );
    assert_ne!(code, Some(0), "{out}");
    assert!(
        out.contains("no execguard supervisor is listening"),
        "{out}"
    );
    assert!(!marker.exists());
    let (code, out) = run(&config, &["--supervisor"], "audit", "nosup", &script, None);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("unguarded"), "{out}");
    assert!(marker.exists());
}

/// With `[detect] exec_checkpoint`, the command's own exec is trapped too: it waits for this
/// very process's supervisor, which must already be serving (no deadlock), and a denial is a
/// plain EACCES from the exec.
#[test]
fn run_with_the_exec_checkpoint() {
    needs_root!();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        Some("audit"),
        "[detect]\nexec_checkpoint = true\n",
    );
    let (code, out) = run(
        &config,
        &[],
        "enforce",
        "exec-checkpoint",
        &format!("{LOADER} /bin/true; echo rc=$?; exit 5"),
        None,
    );
    assert_eq!(code, Some(5), "{out}");
    assert!(out.contains("rc=126"), "denied at the exec: {out}");
}

/// Issue 25, item 1: the command turned on its supervisor. As an ordinary user (the same uid
/// as its supervisor) it can take none of its descriptors, attach to it or read its memory;
/// as root with `--user`, it cannot signal it either. Then it kills its supervisor: every
/// exec after that fails (closed), the loader run included.
#[test]
fn the_command_cannot_take_its_supervisors_listener() {
    needs_root!();
    let (dir, config) = open_config();
    let steal = crate::harness::fixture().bin.join("steal");
    let steal = steal.to_str().unwrap();
    for (tag, extra, uid, stop) in [
        ("user", vec![], Some(65534), "ok"),
        ("root-as-user", vec!["--user", "nobody"], None, "EPERM"),
    ] {
        let (code, out) = run(
            &config,
            &extra,
            "enforce",
            tag,
            // exec: the supervisor is the parent of the command itself.
            &format!("exec {steal} signal"),
            uid,
        );
        let ctx = format!("{tag}: {out}");
        assert_eq!(code, Some(0), "{ctx}");
        for line in [
            "pidfd_getfd EPERM",
            "seccomp-fd EPERM",
            "ptrace EPERM",
            "mem EACCES",
        ] {
            assert!(out.contains(line), "{line} expected\n{ctx}");
        }
        assert!(out.contains(&format!("sigstop {stop}")), "{ctx}");
        assert!(out.contains("uid 65534"), "the command's uid\n{ctx}");
    }
    // Killing its supervisor leaves the command without a listener: every trapped call fails.
    let m = dir.path().join("m-killed");
    let (_, out) = run(
        &config,
        &[],
        "audit",
        "killed",
        &format!(
            "kill -KILL $PPID; sleep 0.2 2>/dev/null; {LOADER} /bin/touch {m}; \
             echo loader=$?; /bin/true; echo true=$?",
            m = m.display()
        ),
        Some(65534),
    );
    assert!(
        !m.exists(),
        "the loader ran after its supervisor was killed: {out}"
    );
    assert!(
        out.contains("true=126") || out.contains("true=127"),
        "an exec after the supervisor was killed: {out}"
    );
}
