//! The packaged systemd units under a real systemd: systemd as PID 1 in a `systemd-nspawn`
//! container that shares this machine's `/usr` (`--volatile=yes`), running
//! `packaging/systemd/execguard.{socket,service}` as shipped (hardening included; only the
//! binary and config paths point at this build). A build guarded by that supervisor (through
//! `execguard run --supervisor`) survives its keeper being killed three times: systemd restarts
//! it, and its fd store kept every notify fd open meanwhile, so no exec fails and enforcement
//! goes on. The same with the fd store turned off shows what it saves: failed execs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{which, EXECGUARD};

/// How long a boot may take at most before the test gives up on it.
const BOOT_BOUND_SECONDS: u64 = 300;

/// A booted systemd-nspawn container, powered off (then killed) on drop.
struct Nspawn {
    child: Child,
    pid1: i32,
}

impl Nspawn {
    fn boot(dir: &Path) -> Self {
        let bin = Path::new(EXECGUARD).parent().unwrap();
        let mut cmd = Command::new(which("systemd-nspawn"));
        cmd.args([
            "--volatile=yes",
            "-D",
            "/",
            "--boot",
            "--register=no",
            "--keep-unit",
        ])
        .args(["--private-network", "--capability=CAP_CHECKPOINT_RESTORE"])
        .arg(format!("--bind-ro={}:/opt/eg-bin", bin.display()))
        .arg(format!("--bind={}:/srv/eg", dir.display()));
        for unit in ["execguard.service", "execguard.socket"] {
            cmd.arg(format!(
                "--bind-ro={}:/etc/systemd/system/{unit}",
                dir.join(unit).display()
            ));
        }
        // systemd tells nspawn when it has booted (READY=1 on its notify socket), and nspawn
        // passes that on to the notify socket it was given: this one.
        let notify_path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&notify_path);
        let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut child = cmd
            .arg("--notify-ready=yes")
            .arg("systemd.firstboot=off")
            // With a private network it would hold the boot (and READY=1) for two minutes.
            .arg("systemd.mask=systemd-networkd-wait-online.service")
            .env("NOTIFY_SOCKET", &notify_path)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("boot.log")).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        // A bound only against a boot that never ends, not a guess of how long one takes: a
        // busy 2-core machine boots it in seconds, and READY=1 ends the wait.
        let deadline = Instant::now() + Duration::from_secs(BOOT_BOUND_SECONDS);
        let mut buf = [0u8; 4096];
        loop {
            if let Ok(n) = notify.recv(&mut buf) {
                if String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .any(|l| l == "READY=1")
                {
                    break;
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "systemd-nspawn ended before systemd was ready ({status}):\n{}",
                    std::fs::read_to_string(dir.join("boot.log")).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "systemd did not say READY=1 in {BOOT_BOUND_SECONDS} s:\n{}",
                    std::fs::read_to_string(dir.join("boot.log")).unwrap_or_default()
                );
            }
        }
        let children = format!("/proc/{0}/task/{0}/children", child.id());
        let pid1 = std::fs::read_to_string(&children)
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a ready systemd-nspawn has its init as a child");
        Nspawn { child, pid1 }
    }

    /// Runs a command in the container (all its namespaces): (stdout, success).
    fn inside(&self, args: &[&str]) -> (String, bool) {
        let out = Command::new("nsenter")
            .args(["-t", &self.pid1.to_string(), "-a", "--"])
            .args(args)
            .output()
            .unwrap();
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            out.status.success(),
        )
    }

    fn main_pid(&self) -> String {
        let (pid, _) = self.inside(&[
            "systemctl",
            "show",
            "-p",
            "MainPID",
            "--value",
            "execguard.service",
        ]);
        pid.trim().to_owned()
    }

    fn journal(&self) -> String {
        self.inside(&["journalctl", "-u", "execguard", "--no-pager"])
            .0
    }
}

impl Drop for Nspawn {
    fn drop(&mut self) {
        // SIGTERM: nspawn asks the container's systemd to power off.
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An exec loop, with a loader run every tenth turn; prints failed execs and loader runs.
const LOOP: &str = r#"fails=0; i=0; ran=0
while [ $i -lt 3000 ]; do
  /bin/true || fails=$((fails+1))
  if [ $((i % 10)) -eq 0 ]; then /lib64/ld-linux-x86-64.so.2 /bin/echo $i >/dev/null 2>&1 && ran=$((ran+1)); fi
  [ $i -eq 100 ] && touch /srv/eg/started
  i=$((i+1))
done
echo "$fails $ran" > /srv/eg/result
"#;

/// The shipped units, pointed at this build and at `dir`'s config; `store_max` replaces
/// `FileDescriptorStoreMax=`.
fn units(dir: &Path, store_max: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/systemd");
    let service = std::fs::read_to_string(root.join("execguard.service")).unwrap();
    assert!(service.contains("FileDescriptorStoreMax="));
    let service: String = service
        .replace("/usr/bin/execguard", "/opt/eg-bin/execguard")
        .replace("/etc/execguard/config.toml", "/srv/eg/config.toml")
        .lines()
        .map(|l| match l.strip_prefix("FileDescriptorStoreMax=") {
            Some(_) => format!("FileDescriptorStoreMax={store_max}\n"),
            None => format!("{l}\n"),
        })
        .collect();
    std::fs::write(dir.join("execguard.service"), service).unwrap();
    std::fs::copy(root.join("execguard.socket"), dir.join("execguard.socket")).unwrap();
    std::fs::write(dir.join("config.toml"), "mode = \"enforce\"\n").unwrap();
    std::fs::write(dir.join("loop.sh"), LOOP).unwrap();
}

/// Boots, starts the units, runs the loop guarded, kills the keeper three times during it:
/// (failed execs, loader runs, the unit's journal).
fn keeper_killed_three_times(store_max: &str) -> (u32, u32, String) {
    let dir: PathBuf = tempfile::Builder::new()
        .prefix("eg-systemd")
        .tempdir()
        .unwrap()
        .keep();
    units(&dir, store_max);
    let n = Nspawn::boot(&dir);
    let (_, started) = n.inside(&[
        "systemctl",
        "start",
        "execguard.socket",
        "execguard.service",
    ]);
    assert!(started, "{}", n.journal());
    n.inside(&[
        "sh",
        "-c",
        "/opt/eg-bin/execguard run --supervisor --config /srv/eg/config.toml --name storm \
         -- /bin/sh /srv/eg/loop.sh > /srv/eg/run.out 2>&1 &",
    ]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !dir.join("started").exists() {
        assert!(
            Instant::now() < deadline,
            "the loop did not start\n{}",
            n.journal()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..3 {
        let pid = n.main_pid();
        n.inside(&["kill", "-9", &pid]);
        // Restart=always, RestartSec=1: wait for the next keeper.
        let deadline = Instant::now() + Duration::from_secs(20);
        while n.main_pid() == pid || n.main_pid() == "0" {
            assert!(
                Instant::now() < deadline,
                "systemd did not restart it\n{}",
                n.journal()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while !dir.join("result").exists() {
        assert!(
            Instant::now() < deadline,
            "the loop did not end\n{}",
            n.journal()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let result = std::fs::read_to_string(dir.join("result")).unwrap();
    let journal = n.journal();
    drop(n);
    let _ = std::fs::remove_dir_all(&dir);
    let mut numbers = result.split_whitespace().map(|v| v.parse::<u32>().unwrap());
    (numbers.next().unwrap(), numbers.next().unwrap(), journal)
}

#[test]
fn a_killed_keeper_costs_a_pause_not_the_build() {
    needs_root!();
    let (fails, ran, journal) = keeper_killed_three_times("8193");
    assert_eq!(fails, 0, "execs failed\n{journal}");
    assert_eq!(ran, 0, "loader runs got through\n{journal}");
    let taken_back = journal
        .matches("taken back from systemd's fd store")
        .count();
    assert_eq!(taken_back, 3, "{journal}");
    assert_eq!(journal.matches("status=9/KILL").count(), 3, "{journal}");
    eprintln!("systemd: keeper killed 3 times mid-build: 0 failed execs, 0 loader runs, fds taken back 3 times");

    // Without the store, the same kills fail the build's execs (ENOSYS): what it saves.
    let (fails, _, journal) = keeper_killed_three_times("0");
    assert!(fails > 0, "{journal}");
    eprintln!("systemd, no fd store: {fails} failed execs");
}
