//! Running it for real: status and metrics over the control socket, and reload without
//! dropping a container.

use std::process::Command;

use crate::harness::{bundle, execguard, run_container, wait_for, Supervisor, EXECGUARD};

#[test]
fn status_and_metrics() {
    needs_root!();
    let sup = Supervisor::start("audit", "");
    let cfg = sup.config.to_str().unwrap().to_owned();
    let b = bundle(
        &sup.config,
        "status",
        "/lib64/ld-linux-x86-64.so.2 /bin/true; touch /work/started; while [ ! -e /work/done ]; do sleep 0.05; done",
        &[("execguard.io/mode", "audit")],
        None,
    );
    let work = b.work.clone();
    let id = b.id.clone();
    let child = b.spawn();
    wait_for(&work.join("started"), "the container's start");

    let (ok, out, err) = execguard(&["status", "--json", "--config", &cfg]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    let c = crate::harness::container_status(&out, &id);
    assert_eq!(c["mode"], "audit");
    // Every exec passes the image checkpoint; the exec checkpoint is off by default.
    assert!(c["images_inspected"].as_u64().unwrap() >= 2, "{c}");
    assert_eq!(c["execs_inspected"], 0, "{c}");
    assert_eq!(c["events"], 1, "{c}");
    assert_eq!(c["denials"], 0, "{c}");
    let (ok, table, _) = execguard(&["status", "--config", &cfg]);
    assert!(
        ok && table.contains(&id) && table.contains("1 container(s) guarded"),
        "{table}"
    );

    let metrics = execguard::supervisor::control::request(
        &sup.dir.path().join("control.sock"),
        "GET",
        "/metrics",
    )
    .unwrap();
    for needle in [
        "execguard_notifications_total{stage=\"exec\"}",
        "execguard_events_total{event=\"binary_executed_by_loader\",importance=\"critical\"} 1",
        "execguard_denials_total 0",
        "execguard_containers_guarded 1",
        "execguard_answer_latency_microseconds_bucket{le=\"+Inf\"}",
    ] {
        assert!(metrics.contains(needle), "{needle} missing:\n{metrics}");
    }
    std::fs::write(work.join("done"), "").unwrap();
    b.wait(child);
}

/// A good config is taken up by a new worker without dropping the running container; a bad
/// one is refused with the reason, and the running config stays.
#[test]
fn reload_keeps_containers() {
    needs_root!();
    let sup = Supervisor::start("audit", "");
    let cfg = sup.config.to_str().unwrap().to_owned();
    let b = bundle(
        &sup.config,
        "reload",
        "touch /work/started; while [ ! -e /work/go ]; do sleep 0.05; done; \
         /lib64/ld-linux-x86-64.so.2 /bin/touch /work/m; /bin/true && touch /work/alive",
        &[],
        None,
    );
    let work = b.work.clone();
    let child = b.spawn();
    wait_for(&work.join("started"), "the container's start");
    let worker = sup.worker_pid();

    // A bad config: refused, with the file, key and line.
    let good = std::fs::read_to_string(&sup.config).unwrap();
    std::fs::write(
        &sup.config,
        good.replace("mode = \"audit\"", "mode = \"enforcing\""),
    )
    .unwrap();
    let (ok, _, err) = execguard(&["reload", "--config", &cfg]);
    assert!(!ok);
    assert!(err.contains("line 2") && err.contains("enforcing"), "{err}");
    assert_eq!(sup.worker_pid(), worker);

    // A good one: enforce from now on; the running container is kept and re-judged.
    std::fs::write(
        &sup.config,
        good.replace("mode = \"audit\"", "mode = \"enforce\""),
    )
    .unwrap();
    let (ok, out, err) = execguard(&["reload", "--config", &cfg]);
    assert!(ok, "{err}");
    assert!(out.contains("reloading"), "{out}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while sup.worker_pid() == worker {
        assert!(
            std::time::Instant::now() < deadline,
            "the worker was not replaced\n{}",
            sup.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::fs::write(work.join("go"), "").unwrap();
    let run = b.wait(child);
    assert!(
        run.marker("alive"),
        "the container lost its supervisor\n{}\n{}",
        run.describe(),
        sup.log()
    );
    assert!(
        !run.marker("m"),
        "enforce did not apply after the reload\n{}",
        sup.log()
    );
    let events = sup.events_of(&run.id);
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["action"], "denied");
    // A new container after the reload is in enforce mode too.
    let after = run_container(
        &sup,
        "after-reload",
        "/lib64/ld-linux-x86-64.so.2 /bin/touch /work/m",
        &[],
    );
    assert!(!after.marker("m"));
}

/// Socket activation (a systemd socket unit): the keeper takes the listener it is handed on
/// fd 3, leaves it in place when it stops, and a container started while no keeper runs
/// waits for the next one instead of failing.
#[test]
fn socket_activation_bridges_a_restart() {
    needs_root!();
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixListener;
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("eg.sock");
    let config = crate::harness::write_config(dir.path(), None, "");
    let events = dir.path().join("events.jsonl");
    // The "systemd" side: a listening socket, passed without close-on-exec.
    let listener = UnixListener::bind(&socket).unwrap();
    let inherited = nix::unistd::dup(&listener).unwrap();
    let start_keeper = || {
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "LISTEN_PID=$$ LISTEN_FDS=1 exec {EXECGUARD} supervise --config {} --events {} 3<&{}",
                config.display(),
                events.display(),
                inherited.as_raw_fd()
            ))
            .stderr(std::fs::File::create(dir.path().join("keeper.log")).unwrap())
            .spawn()
            .unwrap()
    };
    let stop = crate::harness::terminate;
    let script = "/lib64/ld-linux-x86-64.so.2 /bin/touch /work/m";

    let mut keeper = start_keeper();
    std::thread::sleep(Duration::from_millis(300));
    let run = bundle(&config, "activated-1", script, &[], None).run();
    assert!(run.marker("m"), "{}", run.describe());
    stop(&mut keeper);
    assert!(
        socket.exists(),
        "the keeper removed a socket it did not make"
    );

    // No keeper now: the container starts, and its first exec waits.
    let b = bundle(&config, "activated-2", script, &[], None);
    let child = b.spawn();
    std::thread::sleep(Duration::from_millis(500));
    let mut keeper = start_keeper();
    let run = b.wait(child);
    stop(&mut keeper);
    let log = std::fs::read_to_string(dir.path().join("keeper.log")).unwrap_or_default();
    assert!(run.marker("m"), "{}\n{log}", run.describe());
    assert!(
        log.contains("using the listener socket passed by systemd"),
        "{log}"
    );
    let lines = std::fs::read_to_string(&events).unwrap();
    assert_eq!(lines.lines().count(), 2, "{lines}");
    drop(listener);
}

/// Identical events from one container are folded: the first is written at once, the rest
/// counted and written once, with the count, when the container ends. Each event also goes to
/// syslog when configured.
#[test]
fn rate_limit_and_syslog() {
    needs_root!();
    let dir = tempfile::tempdir().unwrap();
    let syslog_path = dir.path().join("log.sock");
    let syslog = std::os::unix::net::UnixDatagram::bind(&syslog_path).unwrap();
    syslog
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let sup = Supervisor::start(
        "audit",
        &format!(
            "[events]\nsyslog = true\nsyslog_socket = \"{}\"\n",
            syslog_path.display()
        ),
    );
    let run = run_container(
        &sup,
        "repeats",
        "for i in 1 2 3 4 5; do /lib64/ld-linux-x86-64.so.2 /bin/true; done; touch /work/m",
        &[],
    );
    assert!(run.marker("m"), "{}", run.describe());
    let events = sup.events_of(&run.id);
    assert_eq!(events.len(), 2, "{events:#?}");
    assert!(events[0].get("repeated").is_none(), "{:#}", events[0]);
    // The last of the four suppressed, with the other three folded into it: 1 + (1 + 3) = 5.
    assert_eq!(events[1]["repeated"], 3, "{:#}", events[1]);
    let mut buf = vec![0u8; 65536];
    let n = syslog.recv(&mut buf).unwrap();
    let msg = String::from_utf8_lossy(&buf[..n]);
    assert!(msg.starts_with("<82>execguard: {"), "{msg}");
    assert!(msg.contains("binary_executed_by_loader"), "{msg}");

    // With the limit off, every one is written.
    let sup = Supervisor::start("audit", "[events]\nrate_limit_seconds = 0\n");
    let run = run_container(
        &sup,
        "repeats-off",
        "for i in 1 2 3 4 5; do /lib64/ld-linux-x86-64.so.2 /bin/true; done",
        &[],
    );
    assert_eq!(sup.events_of(&run.id).len(), 5);
}

/// logrotate: after the events file is renamed, SIGHUP makes the supervisor write a new one.
#[test]
fn sighup_reopens_the_events_file() {
    needs_root!();
    let sup = Supervisor::start("audit", "");
    let script = "/lib64/ld-linux-x86-64.so.2 /bin/touch /work/m";
    let first = run_container(&sup, "rotate-1", script, &[]);
    let rotated = sup.events.with_extension("jsonl.1");
    std::fs::rename(&sup.events, &rotated).unwrap();
    let worker = sup.worker_pid();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sup.pid()),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while sup.worker_pid() == worker {
        assert!(std::time::Instant::now() < deadline, "{}", sup.log());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let second = run_container(&sup, "rotate-2", script, &[]);
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(
        old.contains(&first.id) && !old.contains(&second.id),
        "{old}"
    );
    let new = sup.events_of(&second.id);
    assert_eq!(new.len(), 1, "{}", sup.log());
}
