//! Where the worker's threads are scheduled: the thread that answers a container runs in the
//! container's CPU cgroup (cgroup v1; `[worker] cpu_cgroup`), the worker's main thread never
//! does, the thread goes home for a while when the CPUs are oversubscribed and its answers wait
//! for the container's turn, and it leaves when the container ends, so that runc can remove
//! the cgroup.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use execguard::supervisor::fault::SLOW_ANSWER_ENV;

use crate::harness::{bundle, fixture, wait_for, Bundle, Supervisor};

/// Where the cgroup v1 `cpu` hierarchy is mounted, if it is.
fn cpu_mount() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let mut r = right.split(' ');
        let (fstype, _, options) = (r.next()?, r.next()?, r.next()?);
        (fstype == "cgroup" && options.split(',').any(|o| o == "cpu"))
            .then(|| PathBuf::from(left.split(' ').nth(4).unwrap()))
    })
}

/// The `cpu` line's cgroup path in a `/proc/.../cgroup` file (on cgroup v2, the unified one).
fn cpu_cgroup(file: &str) -> String {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{file}: {e}"));
    text.lines()
        .find_map(|l| {
            let mut p = l.splitn(3, ':');
            let (_, controllers, path) = (p.next()?, p.next()?, p.next()?);
            controllers
                .split(',')
                .any(|c| c == "cpu")
                .then(|| path.to_owned())
        })
        // cgroup v2 only: the one unified line.
        .or_else(|| {
            text.lines()
                .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
        })
        .unwrap_or_else(|| panic!("no cpu line in {file}: {text}"))
}

/// Each thread of `pid` with its CPU cgroup.
fn threads(pid: i32) -> Vec<(i32, String)> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter_map(|tid: i32| {
            let file = format!("/proc/{pid}/task/{tid}/cgroup");
            std::path::Path::new(&file)
                .exists()
                .then(|| (tid, cpu_cgroup(&file)))
        })
        .collect()
}

/// The pid of a running container's first process, from runc.
fn container_pid(id: &str) -> i32 {
    let out = Command::new("runc")
        .arg("--root")
        .arg(fixture().dir.join("runc-state"))
        .args(["state", id])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("runc state {id}: {e}: {out:?}"));
    i32::try_from(v["pid"].as_i64().unwrap()).unwrap()
}

/// A running container that execs `/bin/true` in a loop (with `between` after each) until
/// [`Looping::stop`].
struct Looping {
    bundle: Bundle,
    child: Child,
    id: String,
    /// Its CPU cgroup.
    theirs: String,
}

impl Looping {
    fn start(sup: &Supervisor, name: &str, between: &str) -> Looping {
        let bundle = bundle(
            &sup.config,
            name,
            &format!(
                "touch /work/started; while [ ! -e /work/done ]; do /bin/true; {between} done"
            ),
            &[],
            None,
        );
        let id = bundle.id.clone();
        let child = bundle.spawn();
        wait_for(&bundle.work.join("started"), "the container's start");
        let theirs = cpu_cgroup(&format!("/proc/{}/cgroup", container_pid(&id)));
        Looping {
            bundle,
            child,
            id,
            theirs,
        }
    }

    /// Ends the loop and waits for the container, which must succeed.
    fn stop(self) {
        std::fs::write(self.bundle.work.join("done"), "").unwrap();
        let run = self.bundle.wait(self.child);
        assert_eq!(run.status, 0, "{}", run.describe());
    }
}

/// What [`observe`] saw.
struct Seen {
    /// The container's CPU cgroup.
    theirs: String,
    /// The worker's (its main thread's).
    home: String,
    /// The worker's threads and their CPU cgroups while the container ran.
    during: Vec<(i32, String)>,
    worker: i32,
    /// The container's cgroup directory was gone (removed by runc) after it ended.
    removed: bool,
}

/// Runs a container that execs in a loop under a supervisor with `extra` config, and checks
/// that no worker thread is left in its CPU cgroup afterwards.
fn observe(name: &str, extra: &str) -> Option<Seen> {
    let sup = Supervisor::start("enforce", extra);
    let Some(mount) = cpu_mount() else {
        // cgroup v2 only (the VM, tests/integration/vm.rs): the placement turns itself off,
        // with a stated reason, and the container is still answered.
        let c = Looping::start(&sup, name, "sleep 0.05;");
        c.stop();
        if !extra.contains("\"supervisor\"") {
            sup.wait_for_log("cpu_cgroup placement off: no cgroup v1 cpu hierarchy", 10);
        }
        return None;
    };
    let c = Looping::start(&sup, name, "sleep 0.05;");
    let theirs = c.theirs.clone();
    let worker = sup.worker_pid();
    let during = threads(worker);
    c.stop();
    let dir = mount.join(theirs.trim_start_matches('/'));
    let deadline = Instant::now() + Duration::from_secs(5);
    while dir.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let after = threads(worker);
    assert!(
        after.iter().all(|(_, cg)| *cg != theirs),
        "a worker thread is still in the container's cgroup {theirs}: {after:?}\n{}",
        sup.log()
    );
    Some(Seen {
        home: cpu_cgroup(&format!("/proc/{worker}/cgroup")),
        theirs,
        during,
        worker,
        removed: !dir.exists(),
    })
}

#[test]
fn the_answering_thread_runs_in_the_containers_cpu_cgroup() {
    needs_root!();
    let Some(Seen {
        theirs,
        home,
        during,
        worker,
        removed,
    }) = observe("cpucg", "")
    else {
        return;
    };
    assert_ne!(theirs, home, "the container has a CPU cgroup of its own");
    let joined: Vec<_> = during.iter().filter(|(_, cg)| *cg == theirs).collect();
    assert_eq!(
        joined.len(),
        1,
        "one thread serves the container: {during:?}"
    );
    assert_ne!(joined[0].0, worker, "never the worker's main thread");
    assert!(
        removed,
        "runc could not remove the container's cgroup {theirs}"
    );
}

#[test]
fn cpu_cgroup_supervisor_keeps_the_thread_in_the_workers() {
    needs_root!();
    let Some(Seen {
        theirs,
        home,
        during,
        removed,
        ..
    }) = observe("cpucg-own", "[worker]\ncpu_cgroup = \"supervisor\"\n")
    else {
        return;
    };
    assert!(
        during.iter().all(|(_, cg)| *cg == home),
        "every thread in {home}, none in {theirs}: {during:?}"
    );
    assert!(removed);
}

/// Busy loops, two per CPU, in this process's CPU cgroup until dropped: the CPUs
/// oversubscribed, so that a container's group now and then waits for its turn.
struct Hogs(Vec<Child>);

impl Hogs {
    fn start() -> Hogs {
        let n = 2 * std::thread::available_parallelism().map_or(2, |n| n.get());
        Hogs(
            (0..n)
                .map(|_| {
                    Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .spawn()
                        .unwrap()
                })
                .collect(),
        )
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits (at most `secs`) until `done` says so; false if it never did.
fn eventually(secs: u64, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

#[test]
fn a_thread_whose_answers_wait_for_a_cpu_goes_home_and_tries_again() {
    needs_root!();
    if cpu_mount().is_none() {
        // cgroup v2 only (the VM): the placement is off there and says so (`observe`).
        crate::harness::skip(
            "no cgroup v1 cpu hierarchy",
            std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists(),
        );
        return;
    }
    // Every answer needs 1 ms of CPU: longer than a late answer (200 µs), so whether it counts
    // as late depends only on whether the thread was preempted while it held it.
    if !execguard::supervisor::fault::ENABLED {
        crate::harness::skip("built without the fault-injection feature", false);
        return;
    }
    let sup = Supervisor::start_with_env("enforce", "", &[(SLOW_ANSWER_ENV, "1000")]);
    let c = Looping::start(&sup, "cpucg-busy", "");
    let (id, theirs) = (c.id.clone(), c.theirs.clone());
    let worker = sup.worker_pid();
    let inside = || {
        threads(worker)
            .iter()
            .filter(|(_, cg)| *cg == theirs)
            .count()
    };
    let leaves = || {
        let metrics = execguard::supervisor::control::request(
            &sup.dir.path().join("control.sock"),
            "GET",
            "/metrics",
        )
        .unwrap();
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("execguard_cpu_cgroup_leaves_total "))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no execguard_cpu_cgroup_leaves_total:\n{metrics}"))
    };
    // Uncontended it serves from inside (on a host that other work keeps busy it may have left
    // already, which only a thread that was inside can do).
    assert!(
        eventually(20, || inside() == 1 || leaves() >= 1),
        "no thread serves from {theirs}: {:?}\n{}",
        threads(worker),
        sup.log()
    );
    let hogs = Hogs::start();
    assert!(
        eventually(60, || inside() == 0),
        "the thread stayed in {theirs} although the CPUs are oversubscribed\n{}",
        sup.log()
    );
    drop(hogs);
    let left = leaves();
    assert!(left >= 1, "the thread left, but the counter says {left}");
    // After its time away it tries again: it is seen inside, or, on a host that other work
    // keeps busy, it went back and left again (only a thread that went back can leave).
    assert!(
        eventually(30, || inside() == 1 || leaves() > left),
        "the thread did not go back to {theirs}: {:?}\n{}",
        threads(worker),
        sup.log()
    );
    c.stop();
    sup.wait_for_log(&format!("notify fd closed container={id} "), 10);
    let summary = sup
        .log()
        .lines()
        .find(|l| l.contains("notify fd closed") && l.contains(&format!("container={id} ")))
        .map(str::to_owned);
    assert!(
        summary
            .as_deref()
            .is_some_and(|l| !l.contains("left_cpu_cgroup=0") && l.contains("left_cpu_cgroup=")),
        "{summary:?}"
    );
}
