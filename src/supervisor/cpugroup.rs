//! The thread that serves a container runs in that container's CPU cgroup (cgroup v1's `cpu`
//! hierarchy; `[worker] cpu_cgroup = "container"`, the default), and goes back to the
//! worker's own before the container's cgroup is removed.
//!
//! Why: with the scheduler's group scheduling, a waker and a wakee in different CPU cgroups
//! pay for every microsecond the worker spends answering several times over (measured on this
//! 2-core machine: 13 µs of busy work per exec cost 8.4 % of a fork+exec across cgroups and
//! 2.5 % within one; see the README's performance section). In the container's group the
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

/// The calling thread's stay in a container's CPU cgroup; dropping it moves the thread back.
pub struct Joined {
    /// The `tasks` file of the cgroup the thread came from.
    home: PathBuf,
    container: String,
}

impl Drop for Joined {
    fn drop(&mut self) {
        if let Err(e) = move_current_thread(&self.home) {
            // The thread stays until it ends (a moment later): the container's cgroup cannot
            // be removed before then.
            tracing::warn!(container = %self.container, tasks = %self.home.display(), error = %e, "cannot move the thread back to the worker's CPU cgroup");
        }
    }
}

/// Moves the calling thread into the CPU cgroup of `pid` (the container's first process), if
/// it is a cgroup v1 `cpu` hierarchy's other group. `None` when there is nothing to join or it
/// failed (logged: the exec path works the same, only slower).
pub fn join(pid: u32, container: &str) -> Option<Joined> {
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
    match move_current_thread(&theirs.join("tasks")) {
        Ok(()) => {
            tracing::debug!(container, cgroup = %theirs.display(), "serving in the container's CPU cgroup");
            Some(Joined {
                home: ours.join("tasks"),
                container: container.to_owned(),
            })
        }
        Err(e) => {
            warn_once(&theirs, &e);
            None
        }
    }
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
                tracing::debug!("no cgroup v1 cpu hierarchy: threads stay in the worker's cgroup");
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
