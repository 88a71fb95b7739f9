//! `cargo bench --bench execguard [-- --quick] [-- --json PATH]`: execguard's cost, measured
//! side by side in one run against unguarded containers (runc, the same root filesystem):
//!
//! 1. exec storm: fork+exec of a dynamic /bin/true inside a container, one container per kind
//!    of guard: unguarded; a null responder (answers CONTINUE at once, on exactly the filter
//!    `inject` writes, with the synchronous wake-up, from the container's CPU cgroup); the
//!    same responder after execguard's two `/proc` looks (`null+looks`, the floor of a
//!    race-free look at the image); execguard in audit and in enforce mode (default config);
//!    enforce with `[detect] exec_checkpoint = true`; and enforce with `[worker] cpu_cgroup =
//!    "supervisor"`; and enforce with `[rules] preload_from_writable = "high"` (ordinary
//!    programs' preloads judged, off by default). The
//!    containers run in lockstep (FIFOs start and end each step; an idle one wakes no CPU), a
//!    step of N execs each in an order that rotates, ratios are taken within each step
//!    (paired), then the median of the steps, with a 95 % interval for it;
//! 2. where the supervisor's time goes: system calls per exec (`strace -c -f` on the worker,
//!    in a separate storm, when strace is installed) and a per-phase breakdown (read, resolve,
//!    classify, answer, log) from the worker's own clock; and the kernel's part of it, the same
//!    `/proc` looks timed at fresh processes and again at the same ones; the serving threads'
//!    moves home from their container's CPU cgroup (none expected with one storm at a time);
//! 3. a real build: zlib's configure and make (Debian's source package), unguarded and guarded,
//!    in pairs whose order alternates;
//! 4. scale: 8 containers storming at once, unguarded, guarded, and guarded with `[worker]
//!    cpu_cgroup = "supervisor"`: the exec latency added as the containers see it (p50, p99,
//!    mean) beside the supervisor's receive-to-answer p99 and how many serving threads left
//!    their container's CPU cgroup for late answers; and the supervisor's RSS
//!    with 50 idle guarded containers (the run's supervisor, then fresh ones with and without
//!    the exec record);
//! 5. what the exec record costs the execs it does not record (the host's, an unguarded
//!    container's): fork+exec storms on the host and in a pid namespace of its own, beside a
//!    guarded pid namespace, with the record's programs attached and without, in rounds of 2+2 storms whose order cancels a
//!    drift; and the programs' own time per run as the kernel counts it. The storms above run
//!    with four supervisors, each with its own record attached, so every exec there runs
//!    four copies of the programs (three of them only to their early return).
//!
//! `--execs N` (per step) and `--rounds N` (steps) change the storm; `--storm-only` stops after part 2,
//! `--no-build` skips part 3, `--build-only` runs only part 3 (`--rounds N` pairs),
//! `--scale-only` runs only part 4's storms (`--rounds N` rounds), `--record-cost-only` only
//! part 5 (`--rounds N` rounds).
//! Prints a table and writes the numbers as JSON (default target/bench/execguard.json) for
//! comparison between commits. Not a timed test: it reports the targets met or missed, and
//! fails only if something does not work. Needs root, like the integration tests.

#[path = "../tests/integration/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::{bundle, fixture, Supervisor};
use serde_json::{json, Value};

struct Opts {
    quick: bool,
    json: PathBuf,
    /// Execs per storm and rounds, when given (`--execs N`, `--rounds N`).
    execs: Option<usize>,
    rounds: Option<usize>,
    /// Only the exec storms and where the time goes (`--storm-only`).
    storm_only: bool,
    /// Only the 8-container scale runs (`--scale-only`; `--rounds N` rounds).
    scale_only: bool,
    /// Only the exec record's cost to the execs it does not record (`--record-cost-only`).
    record_cost_only: bool,
    /// Everything but the real build (`--no-build`).
    no_build: bool,
    /// Only the real build (`--build-only`; `--rounds N` pairs).
    build_only: bool,
}

fn opts() -> Opts {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let number = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
    };
    let json = args
        .iter()
        .position(|a| a == "--json")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench/execguard.json")
        });
    Opts {
        quick,
        json,
        execs: number("--execs"),
        rounds: number("--rounds"),
        storm_only: args.iter().any(|a| a == "--storm-only"),
        scale_only: args.iter().any(|a| a == "--scale-only"),
        record_cost_only: args.iter().any(|a| a == "--record-cost-only"),
        no_build: args.iter().any(|a| a == "--no-build"),
        build_only: args.iter().any(|a| a == "--build-only"),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// About 95 % confidence bounds for the median of `v`, free of any assumption about the
/// distribution: the order statistics k and n + 1 - k with k = n/2 - 0.98 √n (the binomial
/// bounds for a sample's median). With a handful of values it is the whole range.
fn median_interval(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    // ⌈0.98 √n⌉ in integers, then the 1-based order statistic k, at least the smallest value.
    let half_width = (0..=n).find(|h| h * h * 10_000 >= 9_604 * n).unwrap_or(n);
    let k = (n / 2).saturating_sub(half_width).max(1);
    (v[k - 1], v[n - k])
}

/// A seccomp listener that answers every notification with CONTINUE at once, with the
/// synchronous wake-up, from a thread in the container's CPU cgroup: the floor any supervisor
/// on this filter can reach. With `looks`, it first makes the two `/proc` looks execguard's
/// answer path makes for a dynamic exec (`stat` of `/proc/PID/exe`; `/proc/PID/maps` opened,
/// one `PROCMAP_QUERY` at the call's instruction pointer, closed) and ignores what they find:
/// the floor of a supervisor that judges the image race-free through `/proc`.
mod null_responder {
    use std::io::IoSliceMut;
    use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::os::unix::net::UnixListener;
    use std::path::PathBuf;

    use execguard::sys::{NotifyFd, SeccompNotifResp, SECCOMP_USER_NOTIF_FLAG_CONTINUE};
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

    pub struct NullResponder {
        pub socket: PathBuf,
        _dir: tempfile::TempDir,
    }

    impl NullResponder {
        pub fn start(looks: bool) -> Self {
            let dir = tempfile::Builder::new()
                .prefix("eg-null")
                .tempdir()
                .unwrap();
            let socket = dir.path().join("null.sock");
            let listener = UnixListener::bind(&socket).unwrap();
            std::thread::spawn(move || {
                for conn in listener.incoming().flatten() {
                    if let Some((fd, pid)) = receive_fd(conn.as_raw_fd()) {
                        std::thread::spawn(move || answer_all(fd, pid, looks));
                    }
                }
            });
            Self { socket, _dir: dir }
        }
    }

    /// runc's message: the state JSON (only its process's pid is used) and the notify fd.
    fn receive_fd(conn: RawFd) -> Option<(OwnedFd, u32)> {
        let mut buf = vec![0u8; 1 << 17];
        let mut cmsg = nix::cmsg_space!([RawFd; 1]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg =
            recvmsg::<()>(conn, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC).ok()?;
        let len = msg.bytes;
        let mut fd = None;
        for c in msg.cmsgs().ok()? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                // SAFETY: the kernel installed this descriptor for this message; it has no
                // other owner.
                fd = fds.first().map(|fd| unsafe { OwnedFd::from_raw_fd(*fd) });
            }
        }
        let state: serde_json::Value = serde_json::from_slice(&buf[..len]).ok()?;
        let pid = state["pid"].as_u64().and_then(|p| u32::try_from(p).ok())?;
        Some((fd?, pid))
    }

    fn answer_all(fd: OwnedFd, pid: u32, looks: bool) {
        // In the container's CPU cgroup, as execguard's worker thread is by default.
        let _joined = execguard::supervisor::cpugroup::join(pid, "null responder");
        let notify = NotifyFd::new(fd);
        notify
            .set_sync_wakeup()
            .expect("SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP");
        loop {
            match notify.recv() {
                Ok(n) => {
                    if looks {
                        look(n.pid, n.data.instruction_pointer);
                    }
                    let _ = notify.send(&SeccompNotifResp {
                        id: n.id,
                        val: 0,
                        error: 0,
                        flags: SECCOMP_USER_NOTIF_FLAG_CONTINUE,
                    });
                }
                Err(_) => {
                    let mut fds = [PollFd::new(notify.as_fd(), PollFlags::POLLIN)];
                    let _ = poll(&mut fds, PollTimeout::ZERO);
                    let r = fds[0].revents().unwrap_or(PollFlags::empty());
                    if r.contains(PollFlags::POLLHUP) && !r.contains(PollFlags::POLLIN) {
                        return;
                    }
                }
            }
        }
    }

    /// What it finds does not matter (a task gone is no reason to stop answering).
    fn look(pid: u32, ip: u64) {
        let _ = super::stat_proc(pid, "exe");
        let _ = super::query_maps(pid, ip);
    }
}

/// The answer path's first look: a `stat` of `/proc/PID/NAME`.
fn stat_proc(pid: u32, name: &str) -> nix::Result<()> {
    nix::sys::stat::stat(format!("/proc/{pid}/{name}").as_str()).map(drop)
}

/// The answer path's second look: `/proc/PID/maps` opened, one `PROCMAP_QUERY` at `addr`,
/// closed. Only the open can fail: the cost is the lock and the lookup, not what is found.
fn query_maps(pid: u32, addr: u64) -> nix::Result<()> {
    let maps = nix::fcntl::open(
        format!("/proc/{pid}/maps").as_str(),
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    let _ = execguard::sys::procmap_query(&maps, addr);
    Ok(())
}

/// How a storm's container is guarded.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Guard {
    Unguarded,
    Null,
    /// The null responder after the same `/proc` looks as execguard's answer path.
    NullLooks,
    Audit,
    Enforce,
    /// Enforce with `[detect] exec_checkpoint = true`.
    EnforceExec,
    /// Enforce with `[worker] cpu_cgroup = "supervisor"`: the worker's thread stays in the
    /// supervisor's CPU cgroup (as before it joined the container's).
    EnforceOwnCgroup,
    /// Enforce with `[rules] preload_from_writable = "high"`: ordinary programs' preloads
    /// judged (what the look at the environment costs; off by default).
    EnforcePreloads,
}

impl Guard {
    const ALL: [Guard; 8] = [
        Guard::Unguarded,
        Guard::Null,
        Guard::NullLooks,
        Guard::Audit,
        Guard::Enforce,
        Guard::EnforceExec,
        Guard::EnforceOwnCgroup,
        Guard::EnforcePreloads,
    ];

    fn name(self) -> &'static str {
        match self {
            Guard::Unguarded => "unguarded",
            Guard::Null => "null responder",
            Guard::NullLooks => "null+looks",
            Guard::Audit => "audit",
            Guard::Enforce => "enforce",
            Guard::EnforceExec => "enforce+exec",
            Guard::EnforceOwnCgroup => "enforce+own-cg",
            Guard::EnforcePreloads => "enforce+preloads",
        }
    }
}

/// The supervisors and the null responder of the run.
struct Guards {
    default: Supervisor,
    exec_checkpoint: Supervisor,
    own_cgroup: Supervisor,
    preloads: Supervisor,
    null: null_responder::NullResponder,
    null_looks: null_responder::NullResponder,
}

impl Guards {
    fn start() -> Self {
        Self {
            default: Supervisor::start("audit", ""),
            exec_checkpoint: Supervisor::start("audit", "[detect]\nexec_checkpoint = true\n"),
            own_cgroup: Supervisor::start("audit", "[worker]\ncpu_cgroup = \"supervisor\"\n"),
            preloads: Supervisor::start("audit", "[rules]\npreload_from_writable = \"high\"\n"),
            null: null_responder::NullResponder::start(false),
            null_looks: null_responder::NullResponder::start(true),
        }
    }

    /// The supervisor that guards a storm of this kind, if any.
    fn supervisor(&self, g: Guard) -> Option<&Supervisor> {
        match g {
            Guard::Audit | Guard::Enforce => Some(&self.default),
            Guard::EnforceExec => Some(&self.exec_checkpoint),
            Guard::EnforceOwnCgroup => Some(&self.own_cgroup),
            Guard::EnforcePreloads => Some(&self.preloads),
            Guard::Unguarded | Guard::Null | Guard::NullLooks => None,
        }
    }
}

/// A container running the exec storm, ready to start.
fn storm_bundle(guards: &Guards, g: Guard, name: &str, n: usize) -> harness::Bundle {
    storm_bundle_script(
        guards,
        g,
        name,
        &format!("/opt/eg/execstorm {n} /work/storm.json"),
    )
}

/// A container guarded as `g` that runs `script`.
fn storm_bundle_script(guards: &Guards, g: Guard, name: &str, script: &str) -> harness::Bundle {
    let mode = match g {
        Guard::Unguarded => "off",
        Guard::Audit => "audit",
        Guard::Null
        | Guard::NullLooks
        | Guard::Enforce
        | Guard::EnforceExec
        | Guard::EnforceOwnCgroup
        | Guard::EnforcePreloads => "enforce",
    };
    let sup = guards.supervisor(g).unwrap_or(&guards.default);
    let b = bundle(
        &sup.config,
        name,
        script,
        &[("execguard.io/mode", mode)],
        None,
    );
    match g {
        Guard::Null => b.set_listener(&guards.null.socket),
        Guard::NullLooks => b.set_listener(&guards.null_looks.socket),
        _ => {}
    }
    b
}

/// execstorm's numbers from a finished run.
fn storm_result(run: &harness::Run) -> Value {
    let text = std::fs::read_to_string(run.work.join("storm.json"))
        .unwrap_or_else(|_| panic!("execstorm did not finish: {}", run.describe()));
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["failures"], 0, "{}", run.describe());
    v
}

/// One container running the exec storm; returns its id and execstorm's numbers.
fn storm(guards: &Guards, g: Guard, name: &str, n: usize) -> (String, Value) {
    let run = storm_bundle(guards, g, name, n).run();
    let v = storm_result(&run);
    (run.id, v)
}

/// What the worker logs when a container's notify fd closes.
#[derive(Clone, Copy, Debug, Default)]
struct FdSummary {
    execs: u64,
    exec_p99: u64,
    images: u64,
    image_p50: u64,
    image_p99: u64,
    /// Nanoseconds per phase, in `execguard::phases::Phase::ALL` order.
    phases: [u64; 5],
    /// Times the serving thread left the container's CPU cgroup for late answers.
    left_cpu_cgroup: u64,
}

impl FdSummary {
    fn notifications(&self) -> u64 {
        self.execs + self.images
    }
}

/// The worker's summary for a container (logged when its notify fd closes).
fn fd_summary(sup: &Supervisor, id: &str) -> Option<FdSummary> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = sup.log();
        let line = log
            .lines()
            .find(|l| l.contains("notify fd closed") && l.contains(&format!("container={id} ")));
        if let Some(line) = line {
            let field = |k: &str| -> u64 {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(&format!("{k}=")))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            };
            let mut phases = [0; 5];
            for (i, p) in execguard::phases::Phase::ALL.iter().enumerate() {
                phases[i] = field(&format!("{}_ns", p.as_str()));
            }
            return Some(FdSummary {
                execs: field("execs"),
                exec_p99: field("exec_p99_us"),
                images: field("images"),
                image_p50: field("image_p50_us"),
                image_p99: field("image_p99_us"),
                phases,
                left_cpu_cgroup: field("left_cpu_cgroup"),
            });
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Resident memory (KiB) of the keeper and of its worker, each as (anonymous, file-backed).
fn rss_parts(sup: &Supervisor) -> [(u64, u64); 2] {
    [sup.pid(), sup.worker_pid()].map(|pid| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        (field("RssAnon:"), field("RssFile:") + field("RssShmem:"))
    })
}

/// RSS (KiB) and CPU time (s) of the keeper and its worker.
fn supervisor_usage(sup: &Supervisor) -> (u64, f64) {
    let ticks = 100.0; // USER_HZ
    let mut rss = 0;
    let mut cpu = 0.0;
    for pid in [sup.pid(), sup.worker_pid()] {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        rss += status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let after = stat.rsplit(')').next().unwrap_or("");
        let f: Vec<&str> = after.split_whitespace().collect();
        let (utime, stime) = (
            f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0),
            f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0),
        );
        cpu += (utime + stime) / ticks;
    }
    (rss, cpu)
}

/// System calls the worker makes per exec during a storm of `n` execs: `strace -c -f` attached
/// to the worker (its threads included) for the length of the storm.
fn syscalls_per_exec(guards: &Guards, g: Guard, n: usize) -> Option<Vec<(String, f64)>> {
    let sup = guards.supervisor(g)?;
    let out = tempfile::NamedTempFile::new().ok()?;
    let mut strace = Command::new("strace")
        .args(["-c", "-f", "-o"])
        .arg(out.path())
        .arg("-p")
        .arg(sup.worker_pid().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    // strace announces nothing on success: give it time to attach to every thread.
    std::thread::sleep(Duration::from_millis(500));
    storm(
        guards,
        g,
        &format!("strace-{}", g.name().replace('+', "-")),
        n,
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(strace.id()).expect("a pid fits in pid_t")),
        nix::sys::signal::Signal::SIGINT,
    );
    let _ = strace.wait();
    let text = std::fs::read_to_string(out.path()).ok()?;
    let mut calls = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        // % time, seconds, usecs/call, calls, [errors], syscall
        if f.len() < 5
            || f[0].starts_with('%')
            || f[0].starts_with('-')
            || f.last() == Some(&"total")
        {
            continue;
        }
        let Ok(count) = f[3].parse::<f64>() else {
            continue;
        };
        calls.push((f.last()?.to_string(), count / n as f64));
    }
    calls.sort_by(|a, b| b.1.total_cmp(&a.1));
    Some(calls)
}

/// zlib's source, fetched once with apt-get source into target/bench.
fn zlib_source() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench/src");
    if let Some(found) = find_zlib(&dir) {
        return Some(found);
    }
    std::fs::create_dir_all(&dir).ok()?;
    let sources = Path::new("/etc/apt/sources.list.d/execguard-bench-src.sources");
    if !sources.exists() {
        std::fs::write(
            sources,
            "Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main\n\
             Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
        )
        .ok()?;
        Command::new("apt-get")
            .args(["update", "-qq"])
            .status()
            .ok()?;
    }
    let ok = Command::new("apt-get")
        .args(["source", "--download-only", "-qq", "zlib"])
        .current_dir(&dir)
        .status()
        .ok()?
        .success();
    if !ok {
        return None;
    }
    let tarball = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains(".orig.tar"))?;
    Command::new("tar")
        .arg("xf")
        .arg(&tarball)
        .current_dir(&dir)
        .status()
        .ok()?;
    find_zlib(&dir)
}

fn find_zlib(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.is_dir() && p.join("configure").exists())
}

/// One build of the source in a container; returns its wall time in seconds.
fn build(sup: &Supervisor, src: &Path, name: &str, mode: &str) -> f64 {
    let b = bundle(
        &sup.config,
        name,
        "cd /work/src && ./configure > /dev/null && make -j2 > /dev/null && touch /work/built",
        &[("execguard.io/mode", mode)],
        None,
    );
    // Owned by root (the container's root has no CAP_DAC_OVERRIDE for others' files).
    let ok = Command::new("cp")
        .args(["-r", "--no-preserve=ownership"])
        .arg(src)
        .arg(b.work.join("src"))
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let started = Instant::now();
    let run = b.run();
    let secs = started.elapsed().as_secs_f64();
    assert!(run.marker("built"), "the build failed: {}", run.describe());
    secs
}

/// Paired rounds of the real build: odd, so that the median is one of them.
const BUILD_ROUNDS: usize = 9;

fn target(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

/// The two FIFOs of a lockstep container (`execstorm --steps`): a byte on `go` starts a step,
/// a byte on `ready` says it is done. Both sides wait in a read, so the containers that are
/// not storming wake no CPU (polling for a file every millisecond, as before, woke one five
/// thousand times a second and moved the storms' numbers by several percent).
struct Lockstep {
    go: std::fs::File,
    ready: std::fs::File,
}

impl Lockstep {
    fn new(work: &Path) -> Self {
        let fifo = |name: &str| {
            let path = work.join(name);
            nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
            // Read and write: the open waits for no other end.
            std::fs::File::options()
                .read(true)
                .write(true)
                .open(&path)
                .unwrap()
        };
        Self {
            go: fifo("go"),
            ready: fifo("ready"),
        }
    }

    /// Starts a step and waits for its end (at most a minute).
    fn step(&self, g: Guard) {
        use std::io::{Read, Write};
        use std::os::fd::AsFd;
        (&self.go).write_all(b"x").unwrap();
        let mut fds = [nix::poll::PollFd::new(
            self.ready.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let n = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(60_000u16)).unwrap();
        assert_eq!(n, 1, "{}: a step of the exec storm did not end", g.name());
        (&self.ready).read_exact(&mut [0u8]).unwrap();
    }
}

/// Exec storms in lockstep: one container per kind of guard, all alive for the whole run,
/// each running its storm in steps that the benchmark starts one container at a time, in an
/// order that rotates. This machine's speed drifts by ±10 % over seconds; a step's ratios
/// compare runs less than a second apart, and the median of the steps is kept.
fn exec_storms(guards: &Guards, n: usize, rounds: usize, out: &mut Value) {
    let mut per_exec: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut p50: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut p99: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut vs_unguarded: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut vs_null: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut summaries: BTreeMap<&str, Vec<FdSummary>> = BTreeMap::new();
    let started: Vec<(Guard, harness::Bundle, std::process::Child, Lockstep)> = Guard::ALL
        .iter()
        .map(|&g| {
            let name = format!("storm-{}", g.name().replace([' ', '+'], "-"));
            let b = storm_bundle_script(
                guards,
                g,
                &name,
                &format!("/opt/eg/execstorm --steps {rounds} {n} /work"),
            );
            let lockstep = Lockstep::new(&b.work);
            // Every step of every container: about a millisecond per exec, with room to spare.
            let secs = u32::try_from(Guard::ALL.len() * rounds * n / 250 + 120).unwrap_or(u32::MAX);
            let child = b.spawn_for(secs);
            (g, b, child, lockstep)
        })
        .collect();
    for round in 0..rounds {
        let mut order = Guard::ALL.to_vec();
        order.rotate_left(round % Guard::ALL.len());
        let mut mean = BTreeMap::new();
        for g in order {
            let (_, b, _, lockstep) = started.iter().find(|(k, ..)| *k == g).unwrap();
            lockstep.step(g);
            let result = b.work.join(format!("step-{round}.json"));
            let v: Value = serde_json::from_slice(&std::fs::read(&result).unwrap()).unwrap();
            assert_eq!(v["failures"], 0, "{}: failed execs", g.name());
            let ns = |k: &str| v[k].as_f64().unwrap();
            per_exec
                .entry(g.name())
                .or_default()
                .push(ns("mean_ns") / 1000.0);
            p50.entry(g.name()).or_default().push(ns("p50_ns") / 1000.0);
            p99.entry(g.name()).or_default().push(ns("p99_ns") / 1000.0);
            mean.insert(g.name(), ns("mean_ns"));
        }
        for g in Guard::ALL {
            let m = mean[g.name()];
            vs_unguarded
                .entry(g.name())
                .or_default()
                .push(m / mean["unguarded"]);
            vs_null
                .entry(g.name())
                .or_default()
                .push(m / mean["null responder"]);
        }
    }
    for (g, b, child, _) in started {
        let run = b.wait(child);
        assert_eq!(run.status, 0, "{}", run.describe());
        if let Some(s) = guards
            .supervisor(g)
            .and_then(|sup| fd_summary(sup, &run.id))
        {
            summaries.entry(g.name()).or_default().push(s);
        }
    }
    let spread = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        (v[v.len() / 4], v[(v.len() * 3) / 4])
    };
    println!(
        "\nexec storm: {rounds} lockstep steps of {n} fork+exec of /bin/true per container; medians of the steps, ratios paired per step"
    );
    println!(
        "  {:<16} {:>11} {:>10} {:>10} {:>10} {:>10} {:>14}",
        "guard", "per exec", "/unguarded", "/null", "p50", "p99", "/null p25-p75"
    );
    let mut table = serde_json::Map::new();
    for g in Guard::ALL {
        let k = g.name();
        let (q1, q3) = spread(&vs_null[k]);
        let (u_lo, u_hi) = median_interval(vs_unguarded[k].clone());
        let (n_lo, n_hi) = median_interval(vs_null[k].clone());
        let row = json!({
            "null_ratio_p25": q1, "null_ratio_p75": q3,
            "ratio_unguarded_95": [u_lo, u_hi], "ratio_null_95": [n_lo, n_hi],
            "per_exec_us": median(per_exec[k].clone()),
            "ratio_unguarded": median(vs_unguarded[k].clone()),
            "ratio_null": median(vs_null[k].clone()),
            "p50_us": median(p50[k].clone()),
            "p99_us": median(p99[k].clone()),
        });
        println!(
            "  {:<16} {:>8.1} µs {:>10.3} {:>10.3} {:>7.1} µs {:>7.1} µs {:>7.3}-{:.3}",
            k,
            row["per_exec_us"].as_f64().unwrap(),
            row["ratio_unguarded"].as_f64().unwrap(),
            row["ratio_null"].as_f64().unwrap(),
            row["p50_us"].as_f64().unwrap(),
            row["p99_us"].as_f64().unwrap(),
            q1,
            q3
        );
        table.insert(k.to_owned(), row);
    }
    let own = Guard::EnforceOwnCgroup.name();
    let joined_vs_own = median(
        per_exec["enforce"]
            .iter()
            .zip(&per_exec[own])
            .map(|(j, o)| j / o)
            .collect(),
    );
    println!(
        "  {own}: [worker] cpu_cgroup = \"supervisor\" (the answering thread stays in the supervisor's CPU cgroup); enforce / {own}: {joined_vs_own:.3} (paired)"
    );
    out["cpu_cgroup_ratio"] = json!(joined_vs_own);
    let on = Guard::EnforcePreloads.name();
    let paired: Vec<f64> = per_exec[on]
        .iter()
        .zip(&per_exec["enforce"])
        .map(|(on, off)| on / off)
        .collect();
    let (lo, hi) = median_interval(paired.clone());
    let preloads = median(paired);
    println!(
        "  {on}: [rules] preload_from_writable = \"high\" (a look at every dynamic program's environment); {on} / enforce: {preloads:.3} (paired, 95 % {lo:.3}-{hi:.3})"
    );
    out["preload_look_ratio"] = json!({"ratio": preloads, "ratio_95": [lo, hi]});
    // What execguard costs beyond the kernel's part of its looks, paired per step.
    let looks = Guard::NullLooks.name();
    let mut beyond_looks = serde_json::Map::new();
    let shown: Vec<String> = ["audit", "enforce"]
        .iter()
        .map(|k| {
            let paired: Vec<f64> = per_exec[k]
                .iter()
                .zip(&per_exec[looks])
                .map(|(g, l)| g / l)
                .collect();
            let (lo, hi) = median_interval(paired.clone());
            let m = median(paired);
            beyond_looks.insert((*k).to_owned(), json!({"ratio": m, "ratio_95": [lo, hi]}));
            format!("{k} {m:.3} (95 % {lo:.3}-{hi:.3})")
        })
        .collect();
    println!(
        "  {looks}: the null responder after the same /proc looks (stat exe; maps opened, PROCMAP_QUERY, closed); / {looks}: {}",
        shown.join(", ")
    );
    out["ratio_null_looks"] = Value::Object(beyond_looks);
    let r = |k: &str, which: &str| table[k][which].as_f64().unwrap();
    let bounds = |k: &str, which: &str| {
        let b = &table[k][which];
        (b[0].as_f64().unwrap(), b[1].as_f64().unwrap())
    };
    for k in ["audit", "enforce"] {
        let (u_lo, u_hi) = bounds(k, "ratio_unguarded_95");
        let (n_lo, n_hi) = bounds(k, "ratio_null_95");
        println!(
            "  target: {k} / unguarded ≤ 1.05: {} ({:.3}, 95 % {u_lo:.3}-{u_hi:.3});  {k} / null ≤ 1.05: {} ({:.3}, 95 % {n_lo:.3}-{n_hi:.3})",
            target(r(k, "ratio_unguarded") <= 1.05),
            r(k, "ratio_unguarded"),
            target(r(k, "ratio_null") <= 1.05),
            r(k, "ratio_null")
        );
    }
    out["exec_storm"] = json!({"execs_per_step": n, "steps": rounds, "by_guard": table});

    println!(
        "\nwhere the supervisor's time goes, per notification (worker's clock, median of rounds)"
    );
    println!(
        "  {:<16} {:>7} {:>7} {:>7} {:>7} {:>7} {:>8} {:>10} {:>10}",
        "guard", "read", "resolve", "classify", "answer", "log", "total", "notif/exec", "p50/p99"
    );
    let mut phases_json = serde_json::Map::new();
    for (k, list) in &summaries {
        let per = |i: usize| -> f64 {
            median(
                list.iter()
                    .map(|s| s.phases[i] as f64 / s.notifications().max(1) as f64 / 1000.0)
                    .collect(),
            )
        };
        let cols: Vec<f64> = (0..5).map(per).collect();
        let notif_per_exec = median(
            list.iter()
                .map(|s| s.notifications() as f64 / (n * rounds) as f64)
                .collect(),
        );
        let p50 = median(list.iter().map(|s| s.image_p50 as f64).collect());
        let p99 = median(
            list.iter()
                .map(|s| s.image_p99.max(s.exec_p99) as f64)
                .collect(),
        );
        println!(
            "  {:<16} {:>5.1}µs {:>5.1}µs {:>6.1}µs {:>5.1}µs {:>5.1}µs {:>6.1}µs {:>10.2} {:>4}/{:<5}µs",
            k,
            cols[0],
            cols[1],
            cols[2],
            cols[3],
            cols[4],
            cols.iter().sum::<f64>(),
            notif_per_exec,
            p50,
            p99
        );
        let names = execguard::phases::Phase::ALL.map(|p| p.as_str());
        let mut m = serde_json::Map::new();
        for (name, v) in names.iter().zip(&cols) {
            m.insert(format!("{name}_us"), json!(v));
        }
        m.insert("notifications_per_exec".into(), json!(notif_per_exec));
        m.insert("image_p50_us".into(), json!(p50));
        m.insert("p99_us".into(), json!(p99));
        phases_json.insert(k.to_string(), Value::Object(m));
    }
    // With the default placement a serving thread that answers late goes home for a while
    // (`cpugroup::Placement`): one container storming alone should never make it.
    let left: Vec<String> = summaries
        .iter()
        .filter(|(k, _)| !k.contains("own-cg"))
        .map(|(k, list)| {
            let moves: u64 = list.iter().map(|s| s.left_cpu_cgroup).sum();
            phases_json
                .get_mut(*k)
                .and_then(Value::as_object_mut)
                .map(|m| m.insert("left_cpu_cgroup".into(), json!(moves)));
            format!("{k} {moves}")
        })
        .collect();
    println!(
        "  moves home from the container's CPU cgroup for late answers: {}",
        left.join(", ")
    );
    out["phases"] = Value::Object(phases_json);
}

/// The kernel's part of the image checkpoint's answer: the looks the worker makes for an
/// ordinary dynamic exec, timed here at processes that `/proc` has never shown (fresh pids, as
/// in an exec storm) and again at the same processes. A fresh pid's first look makes procfs
/// build its directory and entries (and the process's exit tears them down): that, not the
/// worker's own code, is most of "resolve" above. Timed in a tight loop, so with warm caches:
/// the worker, woken after an exec has run, pays more for the same calls.
fn procfs_floor(n: usize, out: &mut Value) {
    let stat = |pid: u32, name: &str| stat_proc(pid, name).expect("stat /proc/PID");
    // Any address will do: the cost is the lock and the lookup, not what is found.
    let maps = |pid: u32| query_maps(pid, 0x40_0000).expect("open /proc/PID/maps");
    type Look<'a> = (&'a str, Box<dyn Fn(u32) + 'a>);
    let looks: [Look; 4] = [
        ("/proc/PID (stat)", Box::new(|pid| stat(pid, ""))),
        ("/proc/PID/exe (stat)", Box::new(|pid| stat(pid, "exe"))),
        (
            "/proc/PID/maps (open, PROCMAP_QUERY, close)",
            Box::new(maps),
        ),
        (
            "exe and maps: the look at a dynamic exec",
            Box::new(|pid| {
                stat(pid, "exe");
                maps(pid);
            }),
        ),
    ];
    println!(
        "\nthe kernel's part: the worker's looks at {n} fresh processes each, in a tight loop (median µs, first look / again)"
    );
    let mut json_looks = serde_json::Map::new();
    for (name, look) in &looks {
        let mut children: Vec<_> = (0..n)
            .map(|_| {
                Command::new("sleep")
                    .arg("60")
                    .stdin(Stdio::null())
                    .spawn()
                    .expect("spawn sleep")
            })
            .collect();
        // Every child has finished its exec by then: the look sees the image it keeps.
        std::thread::sleep(Duration::from_millis(200));
        let mut first = Vec::new();
        let mut again = Vec::new();
        for c in &children {
            for times in [&mut first, &mut again] {
                let t = Instant::now();
                look(c.id());
                times.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
        for c in &mut children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let (f, a) = (median(first), median(again));
        println!("  {name:<44} {f:>6.1} / {a:.1}");
        json_looks.insert((*name).to_owned(), json!({"first_us": f, "again_us": a}));
    }
    out["procfs_floor"] = json!({"processes": n, "by_look": json_looks});
}

/// 8 containers storming at once, unguarded, guarded (default) and guarded with the worker's
/// threads in the supervisor's CPU cgroup, in rounds whose order rotates: on 2 cores one 8-way
/// run's tail is noise, so each round is paired and the medians of rounds are kept.
fn scale(guards: &Guards, n: usize, rounds: usize, out: &mut Value) {
    let busy = 8;
    let sup = &guards.default;
    let kinds = [Guard::Unguarded, Guard::Enforce, Guard::EnforceOwnCgroup];
    // Per round and kind: the median over containers of p50, p99 and mean (µs).
    let mut sides: Vec<BTreeMap<&str, [f64; 3]>> = Vec::new();
    let mut worst_p99: BTreeMap<&str, u64> = BTreeMap::new();
    // Containers served, and how many of their threads left the container's CPU cgroup.
    let (mut served, mut left) = (0, 0);
    let mut cpu = 0.0;
    let mut wall = 0.0;
    for round in 0..rounds {
        let mut side = BTreeMap::new();
        let mut order = kinds;
        order.rotate_left(round % kinds.len());
        for g in order {
            let bundles: Vec<_> = (0..busy)
                .map(|i| storm_bundle(guards, g, &format!("scale-{}-{round}-{i}", g.name()), n))
                .collect();
            let (_, cpu_before) = supervisor_usage(sup);
            let started = Instant::now();
            let children: Vec<_> = bundles.iter().map(|b| b.spawn()).collect();
            let runs: Vec<_> = bundles
                .into_iter()
                .zip(children)
                .map(|(b, c)| b.wait(c))
                .collect();
            if g == Guard::Enforce {
                wall += started.elapsed().as_secs_f64();
                cpu += supervisor_usage(sup).1 - cpu_before;
            }
            if let Some(guarding) = guards.supervisor(g) {
                let worst = worst_p99.entry(g.name()).or_default();
                for r in &runs {
                    if let Some(s) = fd_summary(guarding, &r.id) {
                        *worst = (*worst).max(s.image_p99.max(s.exec_p99));
                        if g == Guard::Enforce {
                            served += 1;
                            left += u64::from(s.left_cpu_cgroup > 0);
                        }
                    }
                }
            }
            let results: Vec<Value> = runs.iter().map(storm_result).collect();
            let q = |k: &str| {
                median(
                    results
                        .iter()
                        .map(|v| v[k].as_f64().unwrap() / 1000.0)
                        .collect(),
                )
            };
            side.insert(g.name(), [q("p50_ns"), q("p99_ns"), q("mean_ns")]);
        }
        sides.push(side);
    }
    let unguarded = |i: usize| median(sides.iter().map(|s| s["unguarded"][i]).collect());
    let added = |g: Guard, i: usize| {
        median(
            sides
                .iter()
                .map(|s| s[g.name()][i] - s["unguarded"][i])
                .collect(),
        )
    };
    println!(
        "\nscale: {busy} containers storming at once ({n} execs each), {rounds} paired rounds"
    );
    println!(
        "  per exec, unguarded (median of containers, then of rounds): p50 {:.1} µs  p99 {:.1} µs  mean {:.1} µs",
        unguarded(0),
        unguarded(1),
        unguarded(2)
    );
    let mut added_json = serde_json::Map::new();
    for g in [Guard::Enforce, Guard::EnforceOwnCgroup] {
        let a = [added(g, 0), added(g, 1), added(g, 2)];
        println!(
            "  added by {} as the containers see it: p50 {:+.1} µs  p99 {:+.1} µs  mean {:+.1} µs",
            g.name(),
            a[0],
            a[1],
            a[2]
        );
        added_json.insert(
            g.name().to_owned(),
            json!({"p50_us": a[0], "p99_us": a[1], "mean_us": a[2]}),
        );
    }
    let worst = |g: Guard| worst_p99.get(g.name()).copied().unwrap_or_default();
    println!(
        "  supervisor receive-to-answer p99, worst container of any round: {} µs   target ≤ 200 µs: {}   ({}: {} µs)",
        worst(Guard::Enforce),
        target(worst(Guard::Enforce) <= 200),
        Guard::EnforceOwnCgroup.name(),
        worst(Guard::EnforceOwnCgroup)
    );
    println!(
        "  enforce: {left} of {served} serving threads left their container's CPU cgroup for late answers"
    );
    println!("  supervisor CPU {cpu:.2} s over {wall:.2} s of guarded wall time");
    out["scale"] = json!({"containers": busy, "execs_each": n, "rounds": rounds,
        "unguarded_p50_us": unguarded(0), "unguarded_p99_us": unguarded(1),
        "unguarded_mean_us": unguarded(2), "added": added_json,
        "supervisor_p99_us_worst": worst(Guard::Enforce),
        "supervisor_p99_us_worst_own_cgroup": worst(Guard::EnforceOwnCgroup),
        "threads_served": served, "threads_left_cpu_cgroup": left,
        "supervisor_cpu_s": cpu, "guarded_wall_s": wall});
}

/// Fork+exec of /bin/true on the host (no container), `n` times: the mean per exec.
fn host_storm(n: usize) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        let ok = Command::new("/bin/true")
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "/bin/true failed");
    }
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// The exec record's programs attached for as long as this lives: loaded by `execguard
/// load-exec-record` (as the keeper has it done), whose descriptors (the maps and the two
/// links) this holds. The map of guarded pid namespaces stays empty: every exec takes the
/// programs' early return, as the execs of the host and of unguarded containers do beside a
/// supervisor.
struct Attached {
    _fds: Vec<std::os::fd::OwnedFd>,
}

impl Attached {
    fn load() -> Option<Self> {
        use nix::sys::socket::{
            recvmsg, socketpair, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType,
        };
        use std::os::fd::{AsRawFd, FromRawFd};
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::empty(),
        )
        .ok()?;
        let status = Command::new(harness::EXECGUARD)
            .args(["load-exec-record", "--fd"])
            .arg(theirs.as_raw_fd().to_string())
            .status()
            .ok()?;
        drop(theirs);
        if !status.success() {
            return None;
        }
        let mut buf = [0u8; 1024];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 6]);
        let msg = recvmsg::<()>(
            ours.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .ok()?;
        let mut fds = Vec::new();
        for c in msg.cmsgs().ok()? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                // SAFETY: the kernel just installed these descriptors in this process for this
                // message; nothing else owns them.
                fds.extend(
                    raw.into_iter()
                        .map(|fd| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        // map, exec link, exit link, approvals, kills, guarded namespaces.
        if fds.len() != 6 {
            return None;
        }
        Some(Self { _fds: fds })
    }

    /// Puts `beside`'s pid namespace in the map of guarded ones, so that the storms run beside
    /// a guarded container (their own namespaces are not in it).
    fn guard(self, beside: &GuardedNamespace) -> Self {
        let Some(inum) = beside.inum else {
            return self;
        };
        let map = self._fds[5]
            .try_clone()
            .map_err(aya::maps::MapError::from)
            .and_then(aya::maps::MapData::from_fd)
            .and_then(|d| aya::maps::HashMap::<_, u32, u32>::try_from(aya::maps::Map::HashMap(d)));
        if let Ok(mut map) = map {
            let _ = map.insert(inum, 0, 0);
        }
        self
    }
}

/// A process asleep in a pid namespace of its own, killed on drop: the guarded container beside
/// the storms of part 5.
struct GuardedNamespace {
    child: std::process::Child,
    inum: Option<u32>,
}

impl GuardedNamespace {
    fn start() -> Self {
        let child = Command::new("unshare")
            .args(["--pid", "--fork", "--kill-child", "sleep", "3600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare");
        let children = format!("/proc/{0}/task/{0}/children", child.id());
        let mut inum = None;
        for _ in 0..1000 {
            let text = std::fs::read_to_string(&children).unwrap_or_default();
            if let Some(pid) = text.split_whitespace().next() {
                inum = nix::sys::stat::stat(format!("/proc/{pid}/ns/pid").as_str())
                    .ok()
                    .and_then(|st| u32::try_from(st.st_ino).ok());
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Self { child, inum }
    }
}

impl Drop for GuardedNamespace {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fork+exec of /bin/true `n` times by a shell in a pid namespace of its own (as in an
/// unguarded container): the mean per exec, shell included.
fn pidns_storm(n: usize) -> f64 {
    let start = Instant::now();
    let ok = Command::new("unshare")
        .args(["--pid", "--fork", "/bin/sh", "-c"])
        .arg(format!(
            "i=0; while [ $i -lt {n} ]; do /bin/true; i=$((i+1)); done"
        ))
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "the pid namespace storm failed");
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// `rounds` rounds of `blocks` storms without and `blocks` with the programs attached, in the
/// order without-with-with-without (then the reverse in the next round), so that a drift of
/// the machine's speed within a round cancels: each side's per-exec means, and the per-round
/// ratios (with / without).
fn attached_rounds(
    rounds: usize,
    beside: &GuardedNamespace,
    storm: impl Fn() -> f64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (mut off, mut on, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let (mut a, mut b) = (0.0, 0.0);
        let order = if round % 2 == 0 {
            [false, true, true, false]
        } else {
            [true, false, false, true]
        };
        let mut attached: Option<Attached> = None;
        for with in order {
            if with && attached.is_none() {
                let loaded = Attached::load().expect("the record loaded once already");
                attached = Some(loaded.guard(beside));
            } else if !with {
                attached = None;
            }
            let t = storm();
            if with {
                b += t
            } else {
                a += t
            }
        }
        drop(attached);
        off.push(a / 2.0);
        on.push(b / 2.0);
        ratios.push(b / a);
    }
    (off, on, ratios)
}

/// The programs' own run time per invocation, as the kernel counts it
/// (`kernel.bpf_stats_enabled`, read with bpftool) over `n` host execs: (name, ns per run,
/// runs).
fn program_run_times(n: usize) -> Option<Vec<(String, f64, u64)>> {
    let attached = Attached::load()?;
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1").ok()?;
    host_storm(n);
    let shown = Command::new("bpftool")
        .args(["prog", "show", "-j"])
        .output();
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "0");
    drop(attached);
    let progs: Value = serde_json::from_slice(&shown.ok()?.stdout).ok()?;
    let mut times = Vec::new();
    for p in progs.as_array()? {
        let name = p["name"].as_str().unwrap_or_default();
        if name == "record_exec" || name == "forget_exit" {
            let runs = p["run_cnt"].as_u64().unwrap_or(0);
            let ns = p["run_time_ns"].as_u64().unwrap_or(0);
            if runs > 0 {
                times.push((name.to_owned(), ns as f64 / runs as f64, runs));
            }
        }
    }
    (!times.is_empty()).then_some(times)
}

/// Part 5: what the exec record's programs cost the execs they do not record: fork+exec on the
/// host and in a pid namespace of its own (an unguarded container's), with the programs
/// attached and without ([`attached_rounds`]); and the programs' own time as the kernel
/// counts it.
fn record_cost(n: usize, rounds: usize, out: &mut Value) {
    if Attached::load().is_none() {
        println!(
            "
the exec record's cost on the host: skipped (the exec record cannot be loaded here)"
        );
        return;
    }
    println!(
        "
the exec record's cost to execs it does not record: fork+exec of /bin/true, {n} per storm, {rounds} rounds of 2+2 storms without/with the programs attached (and a guarded pid namespace beside)"
    );
    let beside = GuardedNamespace::start();
    let mut json_parts = serde_json::Map::new();
    for (what, storm) in [
        ("host", &(|| host_storm(n)) as &dyn Fn() -> f64),
        ("pid namespace", &(|| pidns_storm(n)) as &dyn Fn() -> f64),
    ] {
        let (off, on, ratios) = attached_rounds(rounds, &beside, storm);
        let (lo, hi) = median_interval(ratios.clone());
        let ratio = median(ratios);
        let (off, on) = (median(off), median(on));
        println!(
            "  {what:<14} without {off:.1} µs   attached {on:.1} µs   ratio {ratio:.4} (95 % {lo:.4}-{hi:.4})   target ≤ 1.005: {}",
            target(ratio <= 1.005)
        );
        json_parts.insert(
            what.to_owned(),
            json!({"without_us": off, "with_us": on, "ratio": ratio, "ratio_95": [lo, hi]}),
        );
    }
    match program_run_times(n) {
        Some(times) => {
            let listed: Vec<String> = times
                .iter()
                .map(|(name, ns, runs)| format!("{name} {ns:.0} ns x {runs}"))
                .collect();
            println!(
                "  the programs' own time per run (kernel.bpf_stats_enabled, host execs): {}",
                listed.join(", ")
            );
            json_parts.insert(
                "program_ns".to_owned(),
                times
                    .iter()
                    .map(|(name, ns, _)| (name.clone(), json!(ns)))
                    .collect::<serde_json::Map<_, _>>()
                    .into(),
            );
        }
        None => println!("  the programs' own time: - (bpftool is not installed)"),
    }
    out["record_cost"] = json!({"execs": n, "rounds": rounds, "parts": json_parts});
}

/// Whether this supervisor loaded the exec record (its keeper says either way).
fn wait_for_record_word(sup: &Supervisor) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = sup.log();
        if log.contains("exec record on") {
            return true;
        }
        if log.contains("no exec record") || log.contains("exec record off") {
            return false;
        }
        assert!(
            Instant::now() < deadline,
            "no word on the exec record:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The RSS (KiB) of `sup` with `idle` guarded containers sleeping, and its parts.
fn idle_rss(sup: &Supervisor, idle: usize, name: &str) -> (u64, [(u64, u64); 2]) {
    let bundles: Vec<_> = (0..idle)
        .map(|i| {
            bundle(
                &sup.config,
                &format!("{name}-{i}"),
                "touch /work/up; exec sleep 300",
                &[("execguard.io/mode", "enforce")],
                None,
            )
        })
        .collect();
    let children: Vec<_> = bundles.iter().map(|b| b.spawn()).collect();
    for b in &bundles {
        harness::wait_for(&b.work.join("up"), "an idle container");
    }
    std::thread::sleep(Duration::from_millis(300));
    let (rss, _) = supervisor_usage(sup);
    let parts = rss_parts(sup);
    for b in &bundles {
        let _ = Command::new("runc")
            .arg("--root")
            .arg(fixture().dir.join("runc-state"))
            .args(["kill", &b.id, "KILL"])
            .output();
    }
    for (b, c) in bundles.into_iter().zip(children) {
        b.wait(c);
    }
    (rss, parts)
}

/// "keeper A+F, worker A+F MiB" (anonymous + file-backed).
fn parts_text(parts: &[(u64, u64); 2]) -> String {
    let mib = |kib: u64| kib as f64 / 1024.0;
    format!(
        "keeper {:.1}+{:.1}, worker {:.1}+{:.1} MiB anonymous+file",
        mib(parts[0].0),
        mib(parts[0].1),
        mib(parts[1].0),
        mib(parts[1].1)
    )
}

/// `rounds` pairs of measurements without and with, which one goes first alternating: each
/// side's values and the paired ratios (with / without).
fn paired_rounds(
    rounds: usize,
    mut without: impl FnMut(usize) -> f64,
    mut with: impl FnMut(usize) -> f64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (mut off, mut on, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let (a, b) = if round % 2 == 0 {
            let a = without(round);
            (a, with(round))
        } else {
            let b = with(round);
            (without(round), b)
        };
        off.push(a);
        on.push(b);
        ratios.push(b / a);
    }
    (off, on, ratios)
}

/// Part 3: zlib's configure and make, unguarded and in enforce mode, `rounds` pairs whose order
/// alternates.
fn real_build(sup: &Supervisor, rounds: usize, out: &mut Value) {
    let Some(src) = zlib_source() else {
        println!("\nreal build: skipped (apt-get source zlib failed)");
        return;
    };
    // The second build of a pair finds the compiler and the sources in the page cache the
    // first warmed.
    let (off, on, ratios) = paired_rounds(
        rounds,
        |r| build(sup, &src, &format!("build-off-{r}"), "off"),
        |r| build(sup, &src, &format!("build-enforce-{r}"), "enforce"),
    );
    let (lo, hi) = median_interval(ratios.clone());
    let each: Vec<String> = ratios.iter().map(|r| format!("{r:.3}")).collect();
    let ratio = median(ratios);
    let (off, on) = (median(off), median(on));
    let name = src.file_name().unwrap().to_string_lossy().into_owned();
    println!(
        "\nreal build: {name}, ./configure && make -j2, {rounds} paired rounds (order alternating)"
    );
    println!("  unguarded {off:.2} s   enforce {on:.2} s   ratio {ratio:.3} (median of paired ratios; 95 % {lo:.3}-{hi:.3})");
    println!("  each round: {}", each.join(" "));
    println!("  target: ratio ≤ 1.02: {}", target(ratio <= 1.02));
    out["real_build"] = json!({"project": name, "rounds": rounds, "unguarded_s": off,
        "enforce_s": on, "ratio": ratio, "ratio_95": [lo, hi]});
}

fn main() {
    // `cargo test --all-targets` runs this binary too, without `--bench`: nothing to do then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("execguard benchmark: run it with `cargo bench --bench execguard [-- --quick]`");
        return;
    }
    let o = opts();
    let n = o.execs.unwrap_or(if o.quick { 100 } else { 400 });
    let rounds = o.rounds.unwrap_or(if o.quick { 3 } else { 60 });
    if o.record_cost_only {
        let mut out = json!({"quick": o.quick});
        record_cost(o.execs.unwrap_or(250), o.rounds.unwrap_or(40), &mut out);
        write_json(&o.json, &out);
        return;
    }
    fixture();
    let guards = Guards::start();
    let mut out = json!({"quick": o.quick});
    if o.scale_only {
        scale(&guards, 2 * n, o.rounds.unwrap_or(5), &mut out);
        write_json(&o.json, &out);
        return;
    }
    if o.build_only {
        real_build(&guards.default, o.rounds.unwrap_or(BUILD_ROUNDS), &mut out);
        write_json(&o.json, &out);
        return;
    }

    // 1 and 2: exec storms, then where the time goes.
    exec_storms(&guards, n, rounds, &mut out);
    let have_strace = Command::new("strace").arg("-V").output().is_ok();
    if have_strace {
        println!(
            "\nsystem calls of the supervisor per exec (strace -c -f on the worker, {n} execs)"
        );
        let mut json_calls = serde_json::Map::new();
        for g in [Guard::Enforce, Guard::EnforceExec] {
            let Some(calls) = syscalls_per_exec(&guards, g, 5 * n) else {
                println!("  {}: strace failed", g.name());
                continue;
            };
            let total: f64 = calls.iter().map(|c| c.1).sum();
            let listed: Vec<String> = calls
                .iter()
                .filter(|c| c.1 >= 0.05)
                .map(|(name, per)| format!("{per:.2} {name}"))
                .collect();
            println!(
                "  {:<14} {total:>5.1} per exec: {}",
                g.name(),
                listed.join(", ")
            );
            json_calls.insert(
                g.name().to_owned(),
                json!({"total": total, "by_call": calls.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>()}),
            );
        }
        out["syscalls_per_exec"] = Value::Object(json_calls);
    } else {
        println!("\nsystem calls per exec: skipped (strace is not installed)");
    }

    procfs_floor(if o.quick { 50 } else { 400 }, &mut out);

    if o.storm_only {
        write_json(&o.json, &out);
        return;
    }

    // 3: a real build.
    let sup = &guards.default;
    if o.quick || o.no_build {
        println!("\nreal build: skipped (--quick or --no-build)");
    } else {
        real_build(sup, BUILD_ROUNDS, &mut out);
    }

    // 4: scale.
    scale(&guards, 2 * n, if o.quick { 1 } else { 5 }, &mut out);
    let idle = if o.quick { 10 } else { 50 };
    let (rss, parts) = idle_rss(sup, idle, "idle");
    drop(guards);
    let fresh = Supervisor::start("audit", "");
    let fresh_on = wait_for_record_word(&fresh).then(|| idle_rss(&fresh, idle, "idle-on"));
    drop(fresh);
    let fresh_off = Supervisor::start("audit", "[worker]\nexec_record = \"off\"\n");
    let (off_rss, off_parts) = idle_rss(&fresh_off, idle, "idle-off");
    drop(fresh_off);
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "\nidle: {idle} guarded containers: supervisor RSS {:.1} MiB   target ≤ 20 MiB: {}",
        mib(rss),
        target(rss <= 20 * 1024)
    );
    println!(
        "  the run's supervisor, after every storm: {}",
        parts_text(&parts)
    );
    match &fresh_on {
        Some((on, on_parts)) => println!(
            "  a fresh supervisor with the exec record: {:.1} MiB ({})",
            mib(*on),
            parts_text(on_parts)
        ),
        None => println!("  a fresh supervisor with the exec record: - (it has none here)"),
    }
    println!(
        "  a fresh supervisor without it: {:.1} MiB ({})",
        mib(off_rss),
        parts_text(&off_parts)
    );
    out["idle_fresh"] =
        json!({"with_record_kib": fresh_on.map(|f| f.0), "without_record_kib": off_rss});

    // 5: what the record costs the host's execs (no supervisor of the run is left).
    let (execs, rounds) = if o.quick { (100, 2) } else { (250, 40) };
    record_cost(execs, rounds, &mut out);
    out["idle"] = json!({"containers": idle, "rss_kib": rss});

    write_json(&o.json, &out);
}

/// The numbers of this run, also of a partial one (`--storm-only`, `--scale-only`).
fn write_json(path: &Path, out: &Value) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(path, serde_json::to_vec_pretty(out).unwrap()).unwrap();
    println!("\nresults: {}", path.display());
}
