//! The command line as a user meets it: explain, inject on files, supervise's lifecycle.

use std::process::Command;

use crate::harness::{execguard, Supervisor};

#[test]
fn explain_says_what_and_why() {
    needs_root!();
    let (ok, out, err) = execguard(&[
        "explain",
        "--mode",
        "enforce",
        "--",
        "/lib64/ld-linux-x86-64.so.2",
        "--library-path",
        "/x",
        "/tmp/payload",
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("rule:       binary_executed_by_loader"),
        "{out}"
    );
    assert!(out.contains("program:    /tmp/payload"), "{out}");
    assert!(out.contains("importance: critical"), "{out}");
    assert!(
        out.contains("verdict:    deny (EACCES) in enforce mode"),
        "{out}"
    );

    let (ok, out, _) = execguard(&["explain", "--", "/bin/true"]);
    assert!(ok);
    assert!(out.contains("finding:    none"), "{out}");
    assert!(out.contains("verdict:    allow"), "{out}");

    let (ok, out, _) = execguard(&[
        "explain",
        "--",
        "/lib64/ld-linux-x86-64.so.2",
        "--list",
        "/bin/true",
    ]);
    assert!(ok);
    assert!(
        out.contains("loader_query") && out.contains("importance: low"),
        "{out}"
    );
}

#[test]
fn inject_is_idempotent_and_refuses_foreign_listeners() {
    needs_root!();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "socket = \"/run/eg-test.sock\"\n").unwrap();
    let spec = dir.path().join("config.json");
    std::fs::write(&spec, r#"{"ociVersion":"1.0.2","process":{"args":["sh"]}}"#).unwrap();
    let bundle = dir.path().to_str().unwrap();
    let cfg = cfg.to_str().unwrap();
    let (ok, out, err) = execguard(&["inject", "--bundle", bundle, "--config", cfg]);
    assert!(ok, "{err}");
    assert!(out.starts_with("guarded (audit):"), "{out}");
    let once = std::fs::read(&spec).unwrap();
    assert!(execguard(&["inject", "--bundle", bundle, "--config", cfg]).0);
    assert_eq!(once, std::fs::read(&spec).unwrap());

    std::fs::write(
        &spec,
        r#"{"linux":{"seccomp":{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/run/other.sock"}}}"#,
    )
    .unwrap();
    let before = std::fs::read(&spec).unwrap();
    let (ok, _, err) = execguard(&["inject", "--bundle", bundle, "--config", cfg]);
    assert!(!ok);
    assert!(
        err.contains("/run/other.sock") && err.contains("config.json"),
        "{err}"
    );
    assert_eq!(before, std::fs::read(&spec).unwrap());

    std::fs::write(&spec, "{not json").unwrap();
    let (ok, _, err) = execguard(&["inject", "--bundle", bundle, "--config", cfg]);
    assert!(!ok && err.contains("not valid JSON"), "{err}");
}

#[test]
fn bad_config_names_file_key_and_line() {
    needs_root!();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "mode = \"audit\"\n[enforce]\nerrno = \"EWHATEVER\"\n").unwrap();
    let (ok, _, err) = execguard(&["supervise", "--config", cfg.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("bad.toml") && err.contains("line 3") && err.contains("EWHATEVER"),
        "{err}"
    );
}

#[test]
fn supervise_stops_cleanly_and_refuses_a_second_instance() {
    needs_root!();
    let sup = Supervisor::start("audit", "");
    let cfg = sup.config.to_str().unwrap().to_owned();
    let (ok, _, err) = execguard(&["supervise", "--config", &cfg]);
    assert!(!ok);
    assert!(err.contains("already listening"), "{err}");
    let sock = std::fs::read_to_string(&sup.config).unwrap();
    let sock = sock
        .lines()
        .next()
        .unwrap()
        .split('"')
        .nth(1)
        .unwrap()
        .to_owned();
    let meta = std::fs::metadata(&sock).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );
    drop(sup);
    assert!(!std::path::Path::new(&sock).exists(), "socket left behind");
}

#[test]
fn runtime_wrapper_version_names_both() {
    needs_root!();
    let out = Command::new(crate::harness::EXECGUARD_RUNTIME)
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(concat!(
            "execguard-runtime version ",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    assert!(text.contains("runc version"), "{text}");
}

/// The containerd runtime handler the README shows is one containerd accepts.
#[test]
fn containerd_accepts_the_example_handler() {
    needs_root!();
    let cfg = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/containerd/config.toml"
    );
    let out = Command::new("containerd")
        .args(["--config", cfg, "config", "dump"])
        .output()
        .expect("containerd");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("BinaryName = \"/usr/local/bin/execguard-runtime\""),
        "{text}"
    );
    assert!(
        text.contains("pod_annotations = [\"execguard.io/*\"]"),
        "{text}"
    );
}

/// `setup containerd` adds the handler to an existing config, keeps the rest, writes nothing
/// with --dry-run, changes nothing the second time, and containerd accepts the result.
#[test]
fn setup_containerd_edits_in_place() {
    needs_root!();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let cfg = dir.path().join("etc/containerd/config.toml");
    std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();
    let site = "# site settings\nversion = 2\noom_score = -999\n";
    std::fs::write(&cfg, site).unwrap();

    let (ok, out, err) = execguard(&["setup", "containerd", "--dry-run", "--root", root]);
    assert!(ok, "{err}");
    assert!(
        out.contains("would be changed") && out.contains("BinaryName"),
        "{out}"
    );
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), site);

    let (ok, out, err) = execguard(&["setup", "containerd", "--root", root]);
    assert!(ok, "{err}");
    assert!(out.contains("written"), "{out}");
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.starts_with(site), "{text}");
    let (ok, out, _) = execguard(&["setup", "containerd", "--root", root]);
    assert!(ok && out.contains("already set up"), "{out}");

    let dump = Command::new("containerd")
        .arg("--config")
        .arg(&cfg)
        .args(["config", "dump"])
        .output()
        .unwrap();
    let dumped = String::from_utf8_lossy(&dump.stdout);
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    assert!(
        dumped.contains("BinaryName = \"/usr/bin/execguard-runtime\""),
        "{dumped}"
    );
    assert!(dumped.contains("oom_score = -999"), "{dumped}");

    for engine in ["podman", "crio"] {
        let (ok, out, err) = execguard(&["setup", engine, "--root", root]);
        assert!(ok, "{engine}: {err}");
        assert!(out.contains("written"), "{out}");
    }
    assert!(dir
        .path()
        .join("usr/share/execguard/hooks.d/execguard.json")
        .exists());
    assert!(dir
        .path()
        .join("etc/crio/crio.conf.d/50-execguard.conf")
        .exists());
}

/// `setup docker` adds the three runtimes to daemon.json, keeps every other key and value,
/// changes nothing the second time, and refuses a malformed file with the file and the JSON
/// error, leaving it untouched.
#[test]
fn setup_docker_edits_daemon_json() {
    needs_root!();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let json = dir.path().join("etc/docker/daemon.json");
    std::fs::create_dir_all(json.parent().unwrap()).unwrap();
    let site = r#"{"log-driver": "journald", "runtimes": {"kata": {"path": "/usr/bin/kata"}}, "default-runtime": "runc"}"#;
    std::fs::write(&json, site).unwrap();

    let (ok, out, err) = execguard(&["setup", "docker", "--dry-run", "--root", root]);
    assert!(ok, "{err}");
    assert!(out.contains("would be changed"), "{out}");
    assert_eq!(std::fs::read_to_string(&json).unwrap(), site);

    let (ok, out, err) = execguard(&["setup", "docker", "--root", root]);
    assert!(ok, "{err}");
    assert!(out.contains("written") && out.contains("SIGHUP"), "{out}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["log-driver"], "journald");
    assert_eq!(v["default-runtime"], "runc");
    assert_eq!(v["runtimes"]["kata"]["path"], "/usr/bin/kata");
    for (name, mode) in [
        ("execguard", None),
        ("execguard-audit", Some("audit")),
        ("execguard-enforce", Some("enforce")),
    ] {
        let rt = &v["runtimes"][name];
        assert_eq!(rt["path"], "/usr/bin/execguard-runtime", "{v:#}");
        let args: Vec<&str> = rt["runtimeArgs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(
            &args[..2],
            ["--execguard-config", "/etc/execguard/config.toml"]
        );
        assert_eq!(
            args.get(2).copied(),
            mode.map(|m| format!("--execguard-mode={m}")).as_deref()
        );
    }
    let (ok, out, _) = execguard(&["setup", "docker", "--root", root]);
    assert!(ok && out.contains("already set up"), "{out}");

    // dockerd itself reads the file in tests/integration/docker.rs.
    let broken = "{\"log-driver\": \"journald\",\n  \"runtimes\": {,}\n}\n";
    std::fs::write(&json, broken).unwrap();
    let (ok, _, err) = execguard(&["setup", "docker", "--root", root]);
    assert!(!ok);
    assert!(
        err.contains("daemon.json") && err.contains("line 2"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&json).unwrap(), broken);

    // No daemon.json at all: created.
    std::fs::remove_file(&json).unwrap();
    let (ok, out, err) = execguard(&["setup", "docker", "--root", root]);
    assert!(ok && out.contains("written"), "{out}{err}");
}
