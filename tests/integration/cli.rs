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

/// The official SARIF 2.1.0 schema, as the `serde-sarif` crate (a dependency) ships it.
fn sarif_schema() -> std::path::PathBuf {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let package = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "serde-sarif")
        .expect("serde-sarif in cargo metadata");
    let manifest = std::path::PathBuf::from(package["manifest_path"].as_str().unwrap());
    manifest.parent().unwrap().join("src/schema.json")
}

/// `execguard report` on what a real supervisor wrote (a rotated, gzip-compressed copy and a
/// malformed line included): Markdown, GitHub commands, SARIF valid against the official
/// schema, JSON; `--fail-on` decides the exit status.
#[test]
fn report_sums_up_events_for_ci() {
    needs_root!();
    use std::io::Write as _;
    let sup = Supervisor::start("audit", "");
    for (name, mode) in [("rep-audit", "audit"), ("rep-enforce", "enforce")] {
        let run = crate::harness::run_container(
            &sup,
            name,
            "/lib64/ld-linux-x86-64.so.2 /bin/touch /work/m",
            &[("execguard.io/mode", mode)],
        );
        assert_eq!(run.marker("m"), mode == "audit", "{}", run.describe());
    }
    let dir = tempfile::tempdir().unwrap();
    let events = std::fs::read(&sup.events).unwrap();
    // The first half rotated and compressed, then a malformed line in the current file.
    let lines: Vec<&[u8]> = events.split_inclusive(|b| *b == b'\n').collect();
    let (old, new) = lines.split_at(lines.len() / 2);
    let rotated = dir.path().join("events.json.1.gz");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&rotated).unwrap(),
        flate2::Compression::default(),
    );
    gz.write_all(&old.concat()).unwrap();
    gz.finish().unwrap();
    let current = dir.path().join("events.json");
    std::fs::write(&current, [new.concat(), b"{truncated\n".to_vec()].concat()).unwrap();
    let files = [rotated.to_str().unwrap(), current.to_str().unwrap()];
    let report = |extra: &[&str]| {
        let out = Command::new(crate::harness::EXECGUARD)
            .arg("report")
            .args(extra)
            .args(files)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (code, md, err) = report(&[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        md.contains("| `binary_executed_by_loader` | 1 | 1 |"),
        "{md}"
    );
    assert!(
        md.contains("1 line(s) that could not be read as events skipped"),
        "{md}"
    );
    assert!(md.contains("| /bin/touch |"), "{md}");

    let (code, gh, _) = report(&["--format", "github"]);
    assert_eq!(code, Some(0));
    assert!(
        gh.lines()
            .any(|l| l
                .starts_with("::error title=execguard%3A binary_executed_by_loader (denied)::")),
        "{gh}"
    );

    let (code, sarif, _) = report(&["--format", "sarif"]);
    assert_eq!(code, Some(0));
    let sarif_file = dir.path().join("report.sarif");
    std::fs::write(&sarif_file, &sarif).unwrap();
    // ECMAScript regexes, as the schema is written for; non-unicode mode, because one of its
    // patterns (`language`) has a stray `]` that unicode mode refuses.
    let check = Command::new("check-jsonschema")
        .args(["--regex-variant", "nonunicode", "--schemafile"])
        .arg(sarif_schema())
        .arg(&sarif_file)
        .output()
        .expect("check-jsonschema (scripts/deps.sh installs it)");
    assert!(
        check.status.success(),
        "SARIF not valid: {}{}\n{sarif}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    let (_, json, _) = report(&["--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["malformed_lines"], 1);
    assert_eq!(v["by_event"]["binary_executed_by_loader"]["denied"], 1);

    // Audit mode fails the job too, when asked to; and the malformed line alone fails it.
    assert_eq!(report(&["--fail-on", "denied"]).0, Some(1));
    assert_eq!(report(&["--fail-on", "critical"]).0, Some(1));
    let only_malformed = dir.path().join("malformed.json");
    std::fs::write(&only_malformed, b"{truncated\n").unwrap();
    let out = Command::new(crate::harness::EXECGUARD)
        .args(["report", "--fail-on", "critical"])
        .arg(&only_malformed)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("malformed.json:1"));
    let audit_only = dir.path().join("audit.json");
    let audit_lines: Vec<&str> = std::str::from_utf8(&events)
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"action\":\"allowed\""))
        .collect();
    std::fs::write(&audit_only, audit_lines.join("\n")).unwrap();
    let out = Command::new(crate::harness::EXECGUARD)
        .args(["report", "--fail-on", "denied"])
        .arg(&audit_only)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let out = Command::new(crate::harness::EXECGUARD)
        .args(["report", "--fail-on", "critical"])
        .arg(&audit_only)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let missing = Command::new(crate::harness::EXECGUARD)
        .args(["report", "/nonexistent/events.json"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/events.json"));
}

/// Issue 25: an audit-mode loader run with 125 arguments of 4095 control characters (exec
/// checkpoint on) once wrote a 3 MB event line that `report --fail-on critical` skipped as
/// malformed and passed. The supervisor now cuts the line under its cap, and the report reads
/// it and fails.
#[test]
fn an_oversized_event_is_cut_and_still_fails_the_report() {
    needs_root!();
    let sup = Supervisor::start("audit", "[detect]\nexec_checkpoint = true\n");
    let run = crate::harness::run_container(
        &sup,
        "rep-huge",
        "A=$(head -c 4095 /dev/zero | tr '\\0' '\\001'); set --; i=0; \
         while [ $i -lt 125 ]; do set -- \"$@\" \"$A\"; i=$((i+1)); done; \
         /lib64/ld-linux-x86-64.so.2 /bin/touch /work/m \"$@\"; touch /work/done",
        &[],
    );
    assert!(run.marker("done"), "{}", run.describe());
    let events = std::fs::read(&sup.events).unwrap();
    let longest = events
        .split(|b| *b == b'\n')
        .map(<[u8]>::len)
        .max()
        .unwrap();
    assert!(longest <= 64 * 1024, "an event line of {longest} bytes");
    let evs = sup.events_of(&run.id);
    assert!(
        evs.iter()
            .any(|e| e["exec"]["argv_truncated"] == true && e["importance"] == "critical"),
        "{evs:#?}"
    );
    let out = Command::new(crate::harness::EXECGUARD)
        .args(["report", "--fail-on", "critical"])
        .arg(&sup.events)
        .output()
        .unwrap();
    let md = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{md}");
    assert!(
        md.contains("binary_executed_by_loader") && !md.contains("could not be read"),
        "{md}"
    );
}

/// A large event stream takes constant memory: the report's peak RSS on 64 MiB of events is
/// about its peak on 4 MiB (both streamed through stdin).
#[test]
fn report_streams_in_constant_memory() {
    needs_root!();
    use std::io::Write as _;
    let line = format!(
        "{}\n",
        serde_json::json!({"event": "loader_query", "action": "allowed", "importance": "low",
            "reason": "ldd", "container": {"id": "c"}, "exec": {"path": "/usr/bin/ldd"},
            "padding": "x".repeat(400)})
    );
    let peak_kib = |mib: usize| -> i64 {
        #[expect(
            clippy::zombie_processes,
            reason = "reaped by wait4 below, which also gives its peak RSS"
        )]
        let mut child = Command::new(crate::harness::EXECGUARD)
            .args(["report", "--format", "json", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let n = mib * (1 << 20) / line.len();
        for _ in 0..n {
            stdin.write_all(line.as_bytes()).unwrap();
        }
        drop(stdin);
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
        // wait4 gives the child's own peak RSS (not the maximum over all children).
        let mut status = 0;
        // SAFETY: `rusage` is plain integers, for which all zeros is a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 writes one status int and one rusage into live locals.
        let rc = unsafe { libc::wait4(pid.as_raw(), &mut status, 0, &mut usage) };
        assert_eq!(rc, pid.as_raw());
        assert_eq!(libc::WEXITSTATUS(status), 0);
        usage.ru_maxrss
    };
    let small = peak_kib(4);
    let large = peak_kib(64);
    assert!(
        large < small + 4096 && large < 32 * 1024,
        "peak RSS {small} KiB on 4 MiB, {large} KiB on 64 MiB"
    );
}
