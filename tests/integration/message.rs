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

/// An ext4 image loop-mounted at `at` and frozen (`fsfreeze`): writes to its files hang until
/// it is thawed, as on a FUSE filesystem that never answers. Thawed and unmounted on drop,
/// also when the test panics.
struct FrozenFs {
    at: std::path::PathBuf,
    _image: tempfile::TempDir,
    frozen: bool,
}

impl FrozenFs {
    fn mount(at: &std::path::Path) -> Self {
        let image = tempfile::tempdir().unwrap();
        let file = image.path().join("fs.img");
        let ok = |c: &mut std::process::Command| {
            let out = c.output().unwrap();
            assert!(
                out.status.success(),
                "{c:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ok(std::process::Command::new("truncate")
            .args(["-s", "16M"])
            .arg(&file));
        ok(std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&file));
        std::fs::create_dir_all(at).unwrap();
        ok(std::process::Command::new("mount")
            .args(["-o", "loop"])
            .arg(&file)
            .arg(at));
        std::fs::set_permissions(at, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        Self {
            at: at.to_owned(),
            _image: image,
            frozen: false,
        }
    }

    fn freeze(&mut self) {
        let out = std::process::Command::new("fsfreeze")
            .arg("-f")
            .arg(&self.at)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.frozen = true;
    }
}

impl Drop for FrozenFs {
    fn drop(&mut self) {
        if self.frozen {
            let _ = std::process::Command::new("fsfreeze")
                .arg("-u")
                .arg(&self.at)
                .status();
        }
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.at)
            .status();
    }
}

/// Issue 25, item 4: a standard error whose writes hang (a regular file on a frozen
/// filesystem) holds nothing up: 20 denials told to it are answered at once, and so is the
/// exec after them. (Written inline, the first line blocked the container's thread until the
/// filesystem was thawed.) The denied process's stderr is the frozen file; its shell's is not
/// (the shell's own "Killed" would hang on it).
#[test]
fn a_standard_error_whose_writes_hang_stalls_nothing() {
    needs_root!();
    let sup = Supervisor::start("enforce", "");
    let b = crate::harness::bundle(
        &sup.config,
        "tell-frozen",
        "exec 5>>/work/frozen/log; touch /work/ready; \
         while [ ! -e /work/go ]; do sleep 0.05; done; start=$(date +%s%N); i=0; \
         while [ $i -lt 20 ]; do (exec 2>&5; exec /lib64/ld-linux-x86-64.so.2 /bin/true); \
         i=$((i+1)); done; \
         /bin/true && end=$(date +%s%N) && echo $(( (end - start) / 1000000 )) > /work/ms; \
         touch /work/done",
        &[],
        None,
    );
    let work = b.work.clone();
    let id = b.id.clone();
    let mut fs = FrozenFs::mount(&work.join("frozen"));
    let child = b.spawn();
    crate::harness::wait_for(&work.join("ready"), "the container's start");
    fs.freeze();
    std::fs::write(work.join("go"), "").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !work.join("done").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let done = work.join("done").exists();
    drop(fs);
    let run = b.wait(child);
    assert!(
        done,
        "the container stalled behind a hanging standard error\n{}\n{}",
        run.describe(),
        sup.log()
    );
    let ms: u64 = std::fs::read_to_string(work.join("ms"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(ms < 10_000, "20 denials and an exec took {ms} ms");
    // Identical events are folded: each line stands for 1 + `repeated`.
    let denied: u64 = sup
        .events_of(&id)
        .iter()
        .filter(|e| e["event"] == "binary_executed_by_loader")
        .map(|e| 1 + e["repeated"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(denied, 20);
}

/// Issue 25, item 4: a socket as standard error is never written (the kernel would attach the
/// supervisor's credentials, which a reader with `SO_PASSCRED` could take for its peer's).
/// Before, the line arrived there with the supervisor's pid.
#[test]
fn a_socket_standard_error_is_not_written() {
    needs_root!();
    let sup = Supervisor::start("enforce", "");
    let script = r#"
import os, socket, subprocess
r, w = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
r.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
p = subprocess.run(["/lib64/ld-linux-x86-64.so.2", "/bin/true"], stderr=w.fileno())
r.settimeout(1)
try:
    msg, anc, _, _ = r.recvmsg(4096, socket.CMSG_SPACE(12))
    print("received", msg, anc)
except socket.timeout:
    print("nothing received")
print("rc", p.returncode)
"#;
    let run = run_container(
        &sup,
        "tell-socket",
        &format!("python3 -c '{script}' > /work/out; touch /work/done"),
        &[],
    );
    let out = std::fs::read_to_string(run.work.join("out")).unwrap_or_default();
    let ctx = format!("{out}\n{}\n{}", run.describe(), sup.log());
    assert!(
        out.contains("rc -9"),
        "the loader run was not denied\n{ctx}"
    );
    assert!(out.contains("nothing received"), "{ctx}");
    assert_eq!(loader_events(&sup, &run.id), 1, "{ctx}");
}
