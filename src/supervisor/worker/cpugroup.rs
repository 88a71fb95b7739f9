//! The thread that serves a container runs in that container's CPU cgroup (cgroup v1's `cpu`
//! hierarchy; `[worker] cpu_cgroup = "container"`, the default), goes back to the worker's
//! own for a while when its answers keep waiting for the container's turn on a CPU
//! ([`Placement`]), and for good before the container's cgroup is removed.
//!
//! Why: with the scheduler's group scheduling, a waker and a wakee in different CPU cgroups
//! pay for every microsecond the worker spends answering several times over (measured on this
//! 2-core machine: 13 µs of busy work per exec cost 8.4 % of a fork+exec across cgroups and
//! 2.5 % within one; see docs/performance.md). In the container's group the
//! synchronous hand-off between the trapped task and the worker stays one group's business.
//! The worker's CPU time is then also the container's, which is where it belongs: a container
//! under a CPU limit pays for its own checks.
//!
//! Only the `cpu` (and a co-mounted `cpuacct`) hierarchy is joined: never memory, pids or
//! freezer (a frozen container must not freeze its supervisor), and never the process's main
//! thread, so runtimes that read `cgroup.procs` (thread-group leaders only) to kill a
//! container's processes never see the worker. Cgroup v2 has no per-thread membership outside
//! threaded subtrees, so there the thread stays where it is.
//!
//! `pub` for the benchmark, whose null responder joins the same way (the floor it stands for
//! is a supervisor that does).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The calling thread's place while it serves one container: in the container's CPU cgroup
/// while its answers come promptly, back in the worker's own for a while when they do not.
/// Dropping it moves the thread home.
///
/// Why it leaves: in the container's group the thread also waits for that group's turn on a
/// CPU. When the CPUs are oversubscribed (8 containers storming on 2 cores), the group is now
/// and then preempted while the thread holds a notification, and that answer waits for the
/// group's next turn, milliseconds away; from the worker's group it would have gone out in
/// tens of microseconds. So answers that were both late ([`LATE`]) and preempted,
/// [`LATE_TO_LEAVE`] of them within [`WINDOW`] answers, send the thread home for
/// [`STAY_HOME`], and then it tries again. That keeps its late answers under 1 % however
/// oversubscribed the CPUs are, and a thread that is only rarely preempted (a container
/// storming on an otherwise quiet host) stays where its hand-offs are cheap.
pub struct Placement {
    /// The `tasks` files of the container's cgroup and of the one the thread came from.
    theirs: PathBuf,
    home: PathBuf,
    container: String,
    inside: bool,
    policy: Policy,
    /// Times the thread went home early.
    left: u32,
    /// The thread's involuntary context switches after its last answer.
    switches: i64,
}

impl Drop for Placement {
    fn drop(&mut self) {
        if self.inside {
            self.go_home();
        }
    }
}

/// Moves the calling thread into the CPU cgroup of `pid` (the container's first process), if
/// it is a cgroup v1 `cpu` hierarchy's other group. `None` when there is nothing to join or it
/// failed (logged: the exec path works the same, only slower).
pub fn join(pid: u32, container: &str) -> Option<Placement> {
    let hierarchy = hierarchy()?;
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let theirs = read(&format!("/proc/{pid}/cgroup"))
        .as_deref()
        .and_then(cpu_cgroup_path)
        .and_then(|p| hierarchy.dir(&p))?;
    let ours = read("/proc/thread-self/cgroup")
        .as_deref()
        .and_then(cpu_cgroup_path)
        .and_then(|p| hierarchy.dir(&p))?;
    if theirs == ours {
        return None;
    }
    let tasks = theirs.join("tasks");
    match move_current_thread(&tasks) {
        Ok(()) => {
            tracing::debug!(container, cgroup = %theirs.display(), "serving in the container's CPU cgroup");
            Some(Placement {
                theirs: tasks,
                home: ours.join("tasks"),
                container: container.to_owned(),
                inside: true,
                policy: Policy::default(),
                left: 0,
                switches: involuntary_switches(),
            })
        }
        Err(e) => {
            warn_once(&theirs, &e);
            None
        }
    }
}

impl Placement {
    /// After each answer: `took` from receiving the notification to answering it. True when
    /// the thread went home for late answers.
    pub(super) fn answered(&mut self, took: Duration) -> bool {
        // Late for want of a CPU, not for work: the thread was also preempted while it held
        // the notification (one `getrusage` per answer while inside, about 0.2 µs, after the
        // answer is sent).
        let late = self.inside && {
            let switches = involuntary_switches();
            let preempted = switches > self.switches;
            self.switches = switches;
            preempted && took > LATE
        };
        match self.policy.answered(late, self.inside, Instant::now) {
            Move::Stay => false,
            Move::Home => {
                tracing::debug!(container = %self.container, "answers waited for the container's turn on a CPU: serving from the worker's CPU cgroup for a while");
                let went = self.go_home();
                self.left += u32::from(went);
                went
            }
            Move::Rejoin => {
                match move_current_thread(&self.theirs) {
                    Ok(()) => {
                        self.inside = true;
                        self.switches = involuntary_switches();
                    }
                    // The container's cgroup is gone (its last task is exiting): the policy,
                    // just reset, has no time to try again; the thread stays home.
                    Err(e) => {
                        tracing::debug!(container = %self.container, error = %e, "cannot go back to the container's CPU cgroup")
                    }
                }
                false
            }
        }
    }

    /// Times the thread went home because its answers were late.
    pub(super) fn left(&self) -> u32 {
        self.left
    }

    /// True when the thread moved.
    fn go_home(&mut self) -> bool {
        match move_current_thread(&self.home) {
            Ok(()) => {
                self.inside = false;
                true
            }
            // The thread stays (at the end, until it ends a moment later: the container's
            // cgroup cannot be removed before then).
            Err(e) => {
                tracing::warn!(container = %self.container, tasks = %self.home.display(), error = %e, "cannot move the thread back to the worker's CPU cgroup");
                false
            }
        }
    }
}

/// An answer later than this waited for something other than the worker's own work (about
/// 20 µs; p99 under 50 µs uncontended); docs/performance.md's limit for the supervisor's p99.
const LATE: Duration = Duration::from_micros(200);
/// This many late answers within [`WINDOW`] answers send the thread home: at most 8 in any
/// 1024 answers in a row (4 at the end of one window, 4 at the start of the next), under 1 %,
/// while a stray one (a busy host task, the tick) rarely makes 5.
const LATE_TO_LEAVE: u32 = 5;
const WINDOW: u32 = 1024;
/// How long the thread answers from home before it tries the container's group again.
const STAY_HOME: Duration = Duration::from_secs(10);

#[derive(Debug, PartialEq, Eq)]
enum Move {
    Stay,
    Home,
    Rejoin,
}

/// When to move, from the answers' timing alone.
#[derive(Debug, Default)]
struct Policy {
    /// Answers and late answers in the current window.
    answers: u32,
    late: u32,
    /// While home: when to try the container's group again (`None`: never).
    home_until: Option<Instant>,
}

impl Policy {
    /// After an answer, `late` if it waited for a CPU (inside the container's group only).
    /// `now` is asked only at home or on leaving (not on every answer).
    fn answered(&mut self, late: bool, inside: bool, now: impl FnOnce() -> Instant) -> Move {
        if !inside {
            return match self.home_until {
                Some(t) if now() >= t => {
                    *self = Policy::default();
                    Move::Rejoin
                }
                _ => Move::Stay,
            };
        }
        self.answers += 1;
        self.late += u32::from(late);
        if self.late >= LATE_TO_LEAVE {
            self.answers = 0;
            self.late = 0;
            self.home_until = Some(now() + STAY_HOME);
            return Move::Home;
        }
        if self.answers >= WINDOW {
            self.answers = 0;
            self.late = 0;
        }
        Move::Stay
    }
}

fn involuntary_switches() -> i64 {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_THREAD)
        .map_or(0, |u| u.involuntary_context_switches())
}

/// One warning per worker: every container would fail the same way (a read-only cgroupfs).
fn warn_once(dir: &Path, e: &std::io::Error) {
    static WARNED: OnceLock<()> = OnceLock::new();
    if WARNED.set(()).is_ok() {
        tracing::warn!(cgroup = %dir.display(), error = %e, "cannot serve containers in their CPU cgroup (`[worker] cpu_cgroup`): execs cost more; is /sys/fs/cgroup read-only here?");
    }
}

/// Writes the calling thread's id to a cgroup v1 `tasks` file.
fn move_current_thread(tasks: &Path) -> std::io::Result<()> {
    let tid = nix::unistd::gettid();
    std::fs::OpenOptions::new()
        .write(true)
        .open(tasks)?
        .write_all(tid.to_string().as_bytes())
}

/// The cgroup v1 hierarchy with the `cpu` controller, as this process sees it mounted.
#[derive(Debug, PartialEq, Eq)]
struct Hierarchy {
    /// Where it is mounted.
    mount_point: PathBuf,
    /// Which cgroup of the hierarchy is mounted there (`/` unless in a cgroup namespace's
    /// view or a bind mount of a subtree).
    root: String,
}

impl Hierarchy {
    /// The directory of cgroup `path` (as `/proc/PID/cgroup` names it), if it is under this
    /// mount.
    fn dir(&self, path: &str) -> Option<PathBuf> {
        let rest = if self.root == "/" {
            path
        } else {
            path.strip_prefix(self.root.as_str())
                .filter(|r| r.is_empty() || r.starts_with('/'))?
        };
        let rest = rest.trim_start_matches('/');
        if rest.split('/').any(|c| c == "..") {
            return None;
        }
        Some(self.mount_point.join(rest))
    }
}

/// Found once per worker.
fn hierarchy() -> Option<&'static Hierarchy> {
    static HIERARCHY: OnceLock<Option<Hierarchy>> = OnceLock::new();
    HIERARCHY
        .get_or_init(|| {
            let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
            let h = cpu_hierarchy(&text);
            if h.is_none() {
                tracing::info!("[worker] cpu_cgroup placement off: no cgroup v1 cpu hierarchy (on cgroup v2 a thread cannot join another process's cgroup outside a threaded subtree); answers run in the worker's cgroup");
            }
            h
        })
        .as_ref()
}

/// The cgroup v1 mount carrying the `cpu` controller, from `/proc/self/mountinfo` text.
fn cpu_hierarchy(mountinfo: &str) -> Option<Hierarchy> {
    mountinfo.lines().find_map(|line| {
        // id parent major:minor root mount-point options [optional...] - fstype source super
        let (left, right) = line.split_once(" - ")?;
        let mut r = right.split(' ');
        let (fstype, _source, options) = (r.next()?, r.next()?, r.next()?);
        if fstype != "cgroup" || !options.split(',').any(|o| o == "cpu") {
            return None;
        }
        let mut l = left.split(' ');
        let root = l.nth(3)?;
        let mount_point = l.next()?;
        // mountinfo escapes space, tab, newline and backslash as \ooo: a path with one is
        // not this machine's cgroupfs.
        if root.contains('\\') || mount_point.contains('\\') {
            return None;
        }
        Some(Hierarchy {
            mount_point: PathBuf::from(mount_point),
            root: root.to_owned(),
        })
    })
}

/// The `cpu` hierarchy's line of a `/proc/PID/cgroup` text: `ID:cpu,cpuacct:/path`.
fn cpu_cgroup_path(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == "cpu")
            .then(|| path.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
24 29 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 24 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
35 31 0:30 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,cpuset
36 31 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,cpu,cpuacct
37 31 0:32 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:15 - cgroup2 cgroup2 rw
";

    #[test]
    fn prompt_answers_and_a_few_late_ones_per_window_stay() {
        let mut p = Policy::default();
        let t = Instant::now();
        for i in 0..10 * WINDOW {
            let late = i % WINDOW < LATE_TO_LEAVE - 1;
            assert_eq!(p.answered(late, true, || t), Move::Stay, "answer {i}");
        }
        // The count ends with its window: one short of leaving at the end of one window and
        // again at the start of the next stays.
        let mut p = Policy::default();
        for i in 0..WINDOW {
            let late = i >= WINDOW - (LATE_TO_LEAVE - 1);
            assert_eq!(p.answered(late, true, || t), Move::Stay);
        }
        for _ in 0..LATE_TO_LEAVE - 1 {
            assert_eq!(p.answered(true, true, || t), Move::Stay);
        }
    }

    #[test]
    fn late_answers_send_the_thread_home_until_it_tries_again() {
        let mut p = Policy::default();
        let t = Instant::now();
        for _ in 0..LATE_TO_LEAVE - 1 {
            assert_eq!(p.answered(true, true, || t), Move::Stay);
            for _ in 0..100 {
                assert_eq!(p.answered(false, true, || t), Move::Stay);
            }
        }
        assert_eq!(p.answered(true, true, || t), Move::Home);
        // At home nothing counts, late or not, until the time is up.
        for late in [true, false, true, true, true, true] {
            assert_eq!(p.answered(late, false, || t), Move::Stay);
        }
        let almost = t + STAY_HOME - Duration::from_millis(1);
        assert_eq!(p.answered(false, false, || almost), Move::Stay);
        assert_eq!(p.answered(false, false, || t + STAY_HOME), Move::Rejoin);
        // Back inside with a fresh count.
        let later = t + STAY_HOME;
        for _ in 0..LATE_TO_LEAVE - 1 {
            assert_eq!(p.answered(true, true, || later), Move::Stay);
        }
        assert_eq!(p.answered(true, true, || later), Move::Home);
        assert_eq!(p.home_until, Some(later + STAY_HOME));
    }

    #[test]
    fn finds_the_cpu_hierarchy_not_cpuset_or_v2() {
        assert_eq!(
            cpu_hierarchy(MOUNTINFO),
            Some(Hierarchy {
                mount_point: PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"),
                root: "/".to_owned()
            })
        );
        let v2_only = "37 31 0:32 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(cpu_hierarchy(v2_only), None);
        let cpuset_only = MOUNTINFO.lines().take(3).collect::<Vec<_>>().join("\n");
        assert_eq!(cpu_hierarchy(&cpuset_only), None);
    }

    #[test]
    fn reads_the_cpu_line_of_proc_pid_cgroup() {
        let text = "12:cpuset:/\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/x\n0::/y\n";
        assert_eq!(cpu_cgroup_path(text).as_deref(), Some("/docker/abc"));
        assert_eq!(cpu_cgroup_path("1:cpuacct:/a\n0::/b\n"), None);
        // v1 cgroup paths may contain ':'.
        assert_eq!(cpu_cgroup_path("1:cpu:/a:b\n").as_deref(), Some("/a:b"));
    }

    #[test]
    fn a_cgroup_outside_the_mounted_root_has_no_directory() {
        let h = Hierarchy {
            mount_point: PathBuf::from("/sys/fs/cgroup/cpu"),
            root: "/kubepods".to_owned(),
        };
        assert_eq!(
            h.dir("/kubepods/pod1/c"),
            Some(PathBuf::from("/sys/fs/cgroup/cpu/pod1/c"))
        );
        assert_eq!(
            h.dir("/kubepods"),
            Some(PathBuf::from("/sys/fs/cgroup/cpu"))
        );
        assert_eq!(h.dir("/kubepodsX/c"), None);
        assert_eq!(h.dir("/other"), None);
        let top = Hierarchy {
            mount_point: PathBuf::from("/sys/fs/cgroup/cpu"),
            root: "/".to_owned(),
        };
        assert_eq!(top.dir("/a/../../etc"), None);
        assert_eq!(top.dir("/"), Some(PathBuf::from("/sys/fs/cgroup/cpu/")));
    }
}
