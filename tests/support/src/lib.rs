//! The support the integration tests and the benchmark share (`execguard-testkit`, a
//! dev-dependency of the package): it drives the real thing: the `execguard` binary as supervisor, `execguard inject` on a bundle,
//! and runc running it. Containers get a read-only root that shares the host's `/usr` and
//! `/etc`, the helpers built here at `/opt/eg` (read-only), and a fresh writable `/work`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A binary of the package, found beside the test or bench binary that runs (cargo builds
/// the package's binaries for its tests and benches, into the same profile directory).
pub struct Bin {
    name: &'static str,
    path: OnceLock<String>,
}

impl Bin {
    const fn named(name: &'static str) -> Self {
        Self {
            name,
            path: OnceLock::new(),
        }
    }

    pub fn path(&self) -> &str {
        self.path.get_or_init(|| {
            let me = std::env::current_exe().expect("the running test's own path");
            // target/PROFILE/deps/NAME-HASH for tests and benches.
            let mut dir = me.parent().expect("a directory").to_path_buf();
            if dir.ends_with("deps") {
                dir.pop();
            }
            let bin = dir.join(self.name);
            assert!(
                bin.exists(),
                "{} is not built beside {}",
                bin.display(),
                me.display()
            );
            bin.into_os_string().into_string().expect("a UTF-8 path")
        })
    }
}

impl AsRef<std::ffi::OsStr> for Bin {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.path().as_ref()
    }
}

impl AsRef<Path> for Bin {
    fn as_ref(&self) -> &Path {
        self.path().as_ref()
    }
}

impl std::fmt::Display for Bin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.path())
    }
}

static EXECGUARD_BIN: Bin = Bin::named("execguard");
static EXECGUARD_RUNTIME_BIN: Bin = Bin::named("execguard-runtime");
/// `execguard`.
pub static EXECGUARD: &Bin = &EXECGUARD_BIN;

/// The variable that names execguard's config file (`CONFIG_ENV`; a test
/// checks they agree).
pub const CONFIG_ENV: &str = "EXECGUARD_CONFIG";

mod fixture;
pub use fixture::{
    build_fixture, fixture, Arch, Fixture, LOADER, MULTIARCH, MUSL_LOADER, NATIVE_ABI,
};

/// The project's root.
fn project_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// Whether a Unix socket is bound at `path` and listening (`/proc/net/unix`: flags
/// `__SO_ACCEPTCON`), without connecting to it.
fn listening(path: &Path) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else {
        return path.exists();
    };
    let path = path.to_string_lossy();
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() >= 8 && fields[7] == path && fields[3] == "00010000"
    })
}

/// A running `execguard supervise`, stopped on drop.
pub struct Supervisor {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub events: PathBuf,
    child: Child,
}

impl Supervisor {
    /// Starts a supervisor whose config is `mode` plus `extra` TOML lines.
    pub fn start(mode: &str, extra: &str) -> Self {
        Self::start_with_env(mode, extra, &[])
    }

    /// The same, with more environment variables for the supervisor.
    pub fn start_with_env(mode: &str, extra: &str, env: &[(&str, &str)]) -> Self {
        Self::start_exe(Path::new(EXECGUARD), mode, extra, env)
    }

    /// The same, running the execguard binary at `exe` (a copy an upgrade test replaces).
    pub fn start_exe(exe: &Path, mode: &str, extra: &str, env: &[(&str, &str)]) -> Self {
        Self::start_wrapped(&[], exe, mode, extra, env)
    }

    /// The same, started by the command `wrap` (a program and its arguments, which must end by
    /// executing the arguments that follow them, as `unshare` or `sh -c '...; exec "$0" "$@"'`
    /// do): the keeper's pid is the wrapper's.
    pub fn start_wrapped(
        wrap: &[&str],
        exe: &Path,
        mode: &str,
        extra: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let dir = tempfile::Builder::new().prefix("eg-sup").tempdir().unwrap();
        let socket = dir.path().join("eg.sock");
        let config = write_config(dir.path(), Some(mode), extra);
        let events = dir.path().join("events.jsonl");
        let log = std::fs::File::create(dir.path().join("supervisor.log")).unwrap();
        // `EXECGUARD_TEST_SUPERVISOR_CAPS=sys_ptrace,kill,...`: the supervisor runs with only
        // these capabilities (its bounding set, so also its permitted set as root) and
        // no_new_privs, as under its systemd unit, to show which ones it needs.
        let mut cmd = match std::env::var("EXECGUARD_TEST_SUPERVISOR_CAPS") {
            Ok(caps) => {
                let keep: Vec<String> = caps
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(|c| format!("+{c}"))
                    .collect();
                // `--no-new-privs` as the systemd unit's NoNewPrivileges=yes.
                let mut c = Command::new("setpriv");
                c.arg(format!("--bounding-set=-all,{}", keep.join(",")))
                    .arg("--inh-caps=-all")
                    .arg("--no-new-privs")
                    .arg("--")
                    .arg(exe);
                c
            }
            Err(_) => match wrap.split_first() {
                Some((program, args)) => {
                    let mut c = Command::new(program);
                    c.args(args).arg(exe);
                    c
                }
                None => Command::new(exe),
            },
        };
        let child = cmd
            .arg("supervise")
            .arg("--config")
            .arg(&config)
            .arg("--events")
            .arg(&events)
            .env("EXECGUARD_LOG", "debug")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting the supervisor");
        // Listening, not only bound: a runtime that connects between the keeper's bind and its
        // listen is refused (seen under load).
        let deadline = Instant::now() + Duration::from_secs(10);
        while !listening(&socket) {
            assert!(
                Instant::now() < deadline,
                "supervisor did not listen on {}",
                socket.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Self {
            dir,
            config,
            events,
            child,
        }
    }

    /// All events written so far.
    pub fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.events)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad event line {l:?}: {e}"))
            })
            .collect()
    }

    /// The events of one container.
    pub fn events_of(&self, id: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["container"]["id"] == id)
            .collect()
    }

    /// The keeper's pid.
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("a pid fits in pid_t")
    }

    /// The current worker's pid (the keeper's child running `execguard worker`; another
    /// child, the exec record's loader, lives a moment as the keeper starts), waiting for one
    /// to be there.
    pub fn worker_pid(&self) -> i32 {
        let children = format!("/proc/{0}/task/{0}/children", self.pid());
        let is_worker = |pid: &i32| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).nth(1) == Some(b"worker".as_slice()))
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&children).unwrap_or_default();
            let worker = text
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .find(is_worker);
            if let Some(pid) = worker {
                return pid;
            }
            assert!(Instant::now() < deadline, "no worker\n{}", self.log());
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kills the supervisor with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let worker = self.worker_pid();
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The worker dies with its keeper (parent-death signal); wait until it has.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::path::Path::new(&format!("/proc/{worker}")).exists() {
            assert!(Instant::now() < deadline, "the worker outlived its keeper");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("supervisor.log")).unwrap_or_default()
    }

    /// Waits (at most `secs`) until the supervisor's log says `text`.
    pub fn wait_for_log(&self, text: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !self.log().contains(text) {
            assert!(
                Instant::now() < deadline,
                "the log never said {text:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Writes DIR/config.toml: the socket (line 1), the mode (line 2, when given) and the report
/// log in DIR, then `extra`, then the control socket in DIR.
pub fn write_config(dir: &Path, mode: Option<&str>, extra: &str) -> PathBuf {
    let config = dir.join("config.toml");
    let mode = mode
        .map(|m| format!("mode = \"{m}\"\n"))
        .unwrap_or_default();
    std::fs::write(
        &config,
        format!(
            "socket = \"{}\"\n{mode}report_log = \"{}\"\n{extra}\n[control]\nsocket = \"{}\"\n",
            dir.join("eg.sock").display(),
            dir.join("report.log").display(),
            dir.join("control.sock").display(),
        ),
    )
    .unwrap();
    config
}

/// Stops a daemon the way a service manager would: SIGTERM, then wait.
pub fn terminate(child: &mut Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("a pid fits in pid_t")),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
}

/// Waits until `path` exists (a container says it got somewhere).
pub fn wait_for(path: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{what}: {} did not appear",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

/// What a container run left behind.
pub struct Run {
    pub id: String,
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
    pub work: PathBuf,
    _dir: tempfile::TempDir,
}

impl Run {
    fn new(id: String, out: std::process::Output, work: PathBuf, dir: tempfile::TempDir) -> Self {
        Run {
            id,
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            work,
            _dir: dir,
        }
    }

    pub fn marker(&self, name: &str) -> bool {
        self.work.join(name).exists()
    }

    pub fn describe(&self) -> String {
        format!(
            "container {} exited {}\nstdout: {}\nstderr: {}",
            self.id, self.status, self.stdout, self.stderr
        )
    }
}

/// A bundle ready for `runc run`, guarded by `execguard inject`.
pub struct Bundle {
    pub id: String,
    pub work: PathBuf,
    /// Taken when the run is collected; until then, dropping the bundle (a test that panics)
    /// kills and deletes its container, so that nothing a test started outlives it.
    dir: Option<tempfile::TempDir>,
}

impl Drop for Bundle {
    fn drop(&mut self) {
        if self.dir.is_some() {
            delete_container(&self.id);
        }
    }
}

/// `runc delete -f`: kills the container if it still runs.
fn delete_container(id: &str) {
    let _ = Command::new("runc")
        .arg("--root")
        .arg(fixture().dir.join("runc-state"))
        .args(["delete", "-f", id])
        .output();
}

/// Builds the bundle for `sh -c script`; `seccomp` replaces the spec's profile when given.
pub fn bundle(
    config: &Path,
    name: &str,
    script: &str,
    annotations: &[(&str, &str)],
    seccomp: Option<Value>,
) -> Bundle {
    let fx = fixture();
    let dir = tempfile::Builder::new().prefix("eg-ctr").tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let mut spec = fx.spec_template.clone();
    spec["process"]["terminal"] = json!(false);
    spec["process"]["args"] = json!(["/bin/sh", "-c", script]);
    spec["process"]["env"] = json!([
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME=/tmp",
        "LANG=C.UTF-8"
    ]);
    spec["root"] = json!({"path": fx.rootfs, "readonly": true});
    let mounts = spec["mounts"].as_array_mut().unwrap();
    for (dest, src, opts) in [
        ("/usr", "/usr", "ro"),
        ("/etc", "/etc", "ro"),
        ("/opt/eg", fx.bin.to_str().unwrap(), "ro"),
        ("/work", work.to_str().unwrap(), "rw"),
    ] {
        mounts.push(
            json!({"destination": dest, "type": "bind", "source": src, "options": ["rbind", opts]}),
        );
    }
    mounts.push(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]}));
    let ann: serde_json::Map<String, Value> = annotations
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    spec["annotations"] = Value::Object(ann);
    if let Some(profile) = seccomp {
        spec["linux"]["seccomp"] = profile;
    }
    std::fs::write(
        dir.path().join("config.json"),
        serde_json::to_vec_pretty(&spec).unwrap(),
    )
    .unwrap();

    let inject = Command::new(EXECGUARD)
        .arg("inject")
        .arg("--bundle")
        .arg(dir.path())
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    assert!(
        inject.status.success(),
        "inject: {}",
        String::from_utf8_lossy(&inject.stderr)
    );
    Bundle {
        id: format!("eg-{}-{name}", std::process::id()),
        work,
        dir: Some(dir),
    }
}

impl Bundle {
    pub fn spec(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.dir().join("config.json")).unwrap()).unwrap()
    }

    /// Changes the spec (after `inject`).
    pub fn edit_spec(&self, edit: impl FnOnce(&mut Value)) {
        let mut spec = self.spec();
        edit(&mut spec);
        std::fs::write(
            self.dir().join("config.json"),
            serde_json::to_vec_pretty(&spec).unwrap(),
        )
        .unwrap();
    }

    /// Adds a bind mount of `source` at `destination` with these options (`["bind", "ro"]`,
    /// ...) to the container's spec.
    pub fn bind(&self, source: &Path, destination: &str, options: &[&str]) {
        self.edit_spec(|spec| {
            spec["mounts"].as_array_mut().unwrap().push(json!({
                "destination": destination, "type": "bind", "source": source, "options": options
            }));
        });
    }

    /// Points the injected filter's listener at another socket (the benchmark's null
    /// responder), leaving the filter as `inject` wrote it.
    #[allow(dead_code)] // the benchmark's
    pub fn set_listener(&self, socket: &Path) {
        self.edit_spec(|spec| spec["linux"]["seccomp"]["listenerPath"] = json!(socket));
    }

    fn runc(&self) -> Command {
        self.runc_for(120)
    }

    /// `runc run`, killed after `secs` seconds.
    fn runc_for(&self, secs: u32) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "5", &secs.to_string(), "runc", "--root"])
            .arg(fixture().dir.join("runc-state"))
            .arg("run")
            .arg("--bundle")
            .arg(self.dir())
            .arg(&self.id)
            .stdin(Stdio::null());
        cmd
    }

    /// Starts `runc run` and returns at once.
    pub fn spawn(&self) -> Child {
        self.spawn_for(120)
    }

    /// The same, for a container allowed to run `secs` seconds.
    pub fn spawn_for(&self, secs: u32) -> Child {
        self.runc_for(secs)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Runs the container to its end.
    pub fn run(self) -> Run {
        let out = self.runc().output().unwrap();
        self.finish(out)
    }

    /// Collects a run started with [`Bundle::spawn`].
    pub fn wait(self, child: Child) -> Run {
        let out = child.wait_with_output().unwrap();
        self.finish(out)
    }

    fn finish(mut self, out: std::process::Output) -> Run {
        delete_container(&self.id);
        let dir = self.dir.take().expect("a bundle is collected once");
        Run::new(self.id.clone(), out, self.work.clone(), dir)
    }

    fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .expect("a bundle not yet collected")
            .path()
    }
}

/// How a test's script is guarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Way {
    /// In a runc container (`execguard inject`).
    Runc,
    /// Under `execguard run --supervisor` on the host, in a private mount namespace that
    /// gives it the container's view: the helpers at /opt/eg (read-only), the work directory
    /// at /work, a private /tmp.
    Run,
}

/// Runs `sh -c script` guarded the given way; the mode comes from the `execguard.io/mode`
/// annotation, else the supervisor's default.
pub fn run_guarded(
    way: Way,
    sup: &Supervisor,
    name: &str,
    script: &str,
    annotations: &[(&str, &str)],
) -> Run {
    match way {
        Way::Runc => run_container(sup, name, script, annotations),
        Way::Run => run_without_runtime(sup, name, script, annotations),
    }
}

fn run_without_runtime(
    sup: &Supervisor,
    name: &str,
    script: &str,
    annotations: &[(&str, &str)],
) -> Run {
    let fx = fixture();
    let dir = tempfile::Builder::new().prefix("eg-run").tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let id = format!("eg-{}-{name}", std::process::id());
    let mode = annotations
        .iter()
        .find(|(k, _)| *k == "execguard.io/mode")
        .map(|(_, v)| format!("--mode {v}"))
        .unwrap_or_default();
    // The binary (which may sit under /work) and the supervisor's directory (config and
    // socket, under /tmp) are opened before they are covered: the binary runs from its
    // descriptor, the directory is bound back into the private /tmp.
    let sup_dir = sup.config.parent().unwrap().display().to_string();
    let inner = format!(
        "exec 9< {exe} 8< {sup_dir} && mkdir -p /opt/eg /work && mount --bind {bin} /opt/eg && mount -o remount,bind,ro /opt/eg && \
         mount --bind {work} /work && mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /tmp && \
         mkdir -p {sup_dir} && mount --no-canonicalize --bind /proc/self/fd/8 {sup_dir} && exec 8<&- && \
         exec /proc/self/fd/9 run --supervisor --config {config} {mode} --name {id} -- /bin/sh -c \"$0\"",
        exe = EXECGUARD,
        bin = fx.bin.display(),
        work = work.display(),
        config = sup.config.display(),
    );
    let out = Command::new("timeout")
        .args([
            "-k",
            "5",
            "120",
            "unshare",
            "--mount",
            "--propagation",
            "private",
        ])
        .args(["/bin/sh", "-c", &inner, script])
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOME", "/tmp")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Run::new(id, out, work, dir)
}

/// Runs `sh -c script` in a guarded runc container with these annotations.
pub fn run_container(
    sup: &Supervisor,
    name: &str,
    script: &str,
    annotations: &[(&str, &str)],
) -> Run {
    bundle(&sup.config, name, script, annotations, None).run()
}

/// `execguard-runtime`.
pub static EXECGUARD_RUNTIME: &Bin = &EXECGUARD_RUNTIME_BIN;

/// How podman is told about execguard.
#[derive(Clone, Copy, Debug)]
pub enum PodmanWay {
    /// `--hooks-dir` with a precreate hook running `execguard hook`.
    Hook,
    /// `--runtime execguard-runtime`.
    Runtime,
    /// Neither: podman alone, for comparison.
    Plain,
}

/// One container's entry in `execguard status --json` output (`out`), by id.
pub fn container_status(out: &str, id: &str) -> Value {
    let v: Value = serde_json::from_str(out).unwrap();
    v["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("{out}"))
}

/// Skips the rest of a test for `why`, saying so, when that is `expected` on this machine (a
/// declared reduced-capability pass, a cgroup-v2-only VM); under `EXECGUARD_TEST_STRICT`
/// anything else fails: the project's test command installs everything a test needs.
pub fn skip(why: &str, expected: bool) {
    assert!(
        expected || std::env::var_os("EXECGUARD_TEST_STRICT").is_none(),
        "strict: {why}"
    );
    eprintln!("skipped: {why}");
}

/// The OCI runtime podman runs (and `execguard-runtime` wraps) in these tests:
/// `EXECGUARD_TEST_OCI_RUNTIME` (`crun` in the cgroup-v2 VM, tests/integration/vm.rs), else
/// runc.
pub fn oci_runtime() -> String {
    std::env::var("EXECGUARD_TEST_OCI_RUNTIME").unwrap_or_else(|_| "runc".to_owned())
}

/// The config lines that make `execguard-runtime` wrap [`oci_runtime`] (none for runc, its
/// default).
pub fn runtime_config() -> String {
    match oci_runtime().as_str() {
        "runc" => String::new(),
        other => format!("[runtime]\npath = \"{}\"\n", which(other).display()),
    }
}

/// Runs `sh -c script` in a podman container on the fixture's root filesystem.
pub fn podman_run(
    config: &Path,
    way: PodmanWay,
    name: &str,
    script: &str,
    annotations: &[(&str, &str)],
) -> Run {
    let fx = fixture();
    let dir = tempfile::Builder::new().prefix("eg-pod").tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "5", "120", "podman", "--cgroup-manager", "cgroupfs"]);
    match way {
        PodmanWay::Hook => {
            // The hook as `execguard setup podman` writes it, pointed at this build.
            setup_engine(
                "podman",
                dir.path(),
                &[
                    "--execguard-path",
                    EXECGUARD.path(),
                    "--config",
                    config.to_str().unwrap(),
                    "--hooks-dir",
                    "/hooks.d",
                ],
            );
            cmd.args(["--runtime", &oci_runtime(), "--hooks-dir"])
                .arg(dir.path().join("hooks.d"));
        }
        PodmanWay::Runtime => {
            cmd.args(["--runtime", EXECGUARD_RUNTIME.path(), "--runtime-flag"])
                .arg(format!("execguard-config={}", config.display()));
        }
        PodmanWay::Plain => {
            cmd.args(["--runtime", &oci_runtime()]);
        }
    }
    let id = format!("eg-{}-{name}", std::process::id());
    cmd.args(["run", "--rm", "--name", &id, "--network", "none"])
        .args([
            "--ulimit",
            "nofile=20000:20000",
            "--ulimit",
            "nproc=4096:4096",
        ])
        .args(["-v", "/usr:/usr:ro", "-v"])
        .arg(format!("{}:/opt/eg:ro", fx.bin.display()))
        .arg("-v")
        .arg(format!("{}:/work", work.display()));
    for (k, v) in annotations {
        cmd.arg("--annotation").arg(format!("{k}={v}"));
    }
    cmd.arg("--rootfs")
        .arg(&fx.rootfs)
        .args(["/bin/sh", "-c", script])
        .env(CONFIG_ENV, config)
        .stdin(Stdio::null());
    let out = cmd.output().unwrap();
    Run::new(id, out, work, dir)
}

/// Starts containerd with `config` (its log in `dir/containerd.log`) and `EXECGUARD_CONFIG`
/// in its environment, which its runc shims, and so `execguard-runtime`, inherit; returns once
/// it listens on `socket`.
pub fn spawn_containerd(
    dir: &Path,
    config: &Path,
    socket: &Path,
    execguard_config: &Path,
) -> Child {
    let log_path = dir.join("containerd.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = Command::new("containerd")
        .arg("--config")
        .arg(config)
        .env(CONFIG_ENV, execguard_config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting containerd");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        // Its log says why; the temporary directory holding it goes with the test.
        assert!(
            Instant::now() < deadline,
            "containerd did not start:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// A private containerd (own root, state and socket), stopped on drop.
pub struct Containerd {
    pub address: PathBuf,
    dir: tempfile::TempDir,
    child: Child,
}

impl Containerd {
    /// Starts containerd with `EXECGUARD_CONFIG` in its environment, which its runc shims,
    /// and so `execguard-runtime`, inherit.
    pub fn start(execguard_config: &Path) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("eg-ctrd")
            .tempdir()
            .unwrap();
        let address = dir.path().join("containerd.sock");
        let cfg = dir.path().join("config.toml");
        std::fs::write(
            &cfg,
            format!(
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{address}\"\n",
                root = dir.path().join("root").display(),
                state = dir.path().join("state").display(),
                address = address.display(),
            ),
        )
        .unwrap();
        let child = spawn_containerd(dir.path(), &cfg, &address, execguard_config);
        Self {
            address,
            dir,
            child,
        }
    }

    /// `ctr run --rm --runc-binary execguard-runtime --rootfs ROOTFS ID sh -c script`.
    pub fn run(&self, name: &str, script: &str, annotations: &[(&str, &str)]) -> Run {
        let fx = fixture();
        let dir = tempfile::Builder::new().prefix("eg-ctr").tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        let id = format!("eg-{}-{name}", std::process::id());
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "5", "120", "ctr", "--address"])
            .arg(&self.address)
            .args([
                "--namespace",
                "execguard-test",
                "run",
                "--rm",
                "--runc-binary",
                EXECGUARD_RUNTIME.path(),
            ])
            .args(["--mount", "type=bind,src=/usr,dst=/usr,options=rbind:ro"])
            .args(["--mount", "type=bind,src=/etc,dst=/etc,options=rbind:ro"])
            .arg("--mount")
            .arg(format!(
                "type=bind,src={},dst=/opt/eg,options=rbind:ro",
                fx.bin.display()
            ))
            .arg("--mount")
            .arg(format!(
                "type=bind,src={},dst=/work,options=rbind:rw",
                work.display()
            ))
            .args([
                "--mount",
                "type=tmpfs,src=tmpfs,dst=/tmp,options=nosuid:nodev",
            ]);
        for (k, v) in annotations {
            cmd.arg("--annotation").arg(format!("{k}={v}"));
        }
        cmd.arg("--rootfs")
            .arg(&fx.rootfs)
            .arg(&id)
            .args(["/bin/sh", "-c", script])
            .stdin(Stdio::null());
        let out = cmd.output().unwrap();
        Run::new(id, out, work, dir)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

/// A private dockerd (own data root, exec root, socket and managed containerd), with the
/// runtimes `execguard setup docker` writes, stopped on drop (its containers first).
pub struct Docker {
    pub socket: PathBuf,
    dir: tempfile::TempDir,
    child: Child,
}

/// The image every Docker test runs: the fixture's root filesystem, `docker import`ed.
pub const DOCKER_IMAGE: &str = "execguard-test-rootfs:1";

impl Docker {
    /// Starts dockerd with the daemon.json that `execguard setup docker` writes for this
    /// build's `execguard-runtime` and `execguard_config`, and imports the test image.
    pub fn start(execguard_config: &Path) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("eg-dockerd")
            .tempdir()
            .unwrap();
        setup_engine(
            "docker",
            dir.path(),
            &[
                "--runtime-path",
                EXECGUARD_RUNTIME.path(),
                "--config",
                execguard_config.to_str().unwrap(),
            ],
        );
        let socket = dir.path().join("docker.sock");
        let log = std::fs::File::create(dir.path().join("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .arg("--config-file")
            .arg(dir.path().join("etc/docker/daemon.json"))
            .arg("--data-root")
            .arg(dir.path().join("data"))
            .arg("--exec-root")
            .arg(dir.path().join("exec"))
            .arg("--pidfile")
            .arg(dir.path().join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .args(["--iptables=false", "--ip-masq=false", "--bridge=none"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting dockerd");
        let docker = Self { socket, dir, child };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !docker
            .cli()
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            assert!(
                Instant::now() < deadline,
                "dockerd did not start:\n{}",
                docker.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let fx = fixture();
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(&fx.rootfs)
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let import = docker
            .cli()
            .args(["import", "-", DOCKER_IMAGE])
            .stdin(tar.stdout.take().unwrap())
            .output()
            .unwrap();
        assert!(
            tar.wait().unwrap().success(),
            "tar of the test rootfs failed"
        );
        assert!(
            import.status.success(),
            "docker import: {}",
            String::from_utf8_lossy(&import.stderr)
        );
        docker
    }

    /// The docker client, talking to this daemon.
    pub fn cli(&self) -> Command {
        let mut cmd = Command::new("docker");
        cmd.arg("-H")
            .arg(format!("unix://{}", self.socket.display()));
        cmd
    }

    /// `docker run --rm --runtime RUNTIME [OPTIONS] IMAGE sh -c script`, with the host's /usr,
    /// the helpers and a work directory mounted. The run's `id` is Docker's full container id
    /// (the one runc and the supervisor see).
    pub fn run(&self, runtime: &str, options: &[&str], script: &str) -> Run {
        let (mut cmd, cidfile, work, dir) = self.run_command(runtime, options);
        cmd.args(["--rm", DOCKER_IMAGE, "/bin/sh", "-c", script]);
        let out = cmd.output().unwrap();
        let id = std::fs::read_to_string(cidfile).unwrap_or_default();
        Run::new(id, out, work, dir)
    }

    /// Starts a container that sleeps, for `docker exec`; removed with the daemon. Gives its
    /// full id and its work directory.
    pub fn start_sleeping(&self, runtime: &str) -> (String, PathBuf, tempfile::TempDir) {
        let (mut cmd, cidfile, work, dir) = self.run_command(runtime, &[]);
        cmd.args(["-d", DOCKER_IMAGE, "/bin/sleep", "120"]);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "docker run -d: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (std::fs::read_to_string(cidfile).unwrap(), work, dir)
    }

    fn run_command(
        &self,
        runtime: &str,
        options: &[&str],
    ) -> (Command, PathBuf, PathBuf, tempfile::TempDir) {
        let fx = fixture();
        let dir = tempfile::Builder::new()
            .prefix("eg-docker")
            .tempdir()
            .unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        let cidfile = dir.path().join("cid");
        let mut cmd = self.cli();
        cmd.args([
            "run",
            "--runtime",
            runtime,
            "--network",
            "none",
            "--cidfile",
        ])
        .arg(&cidfile)
        .args(options)
        .args(["-v", "/usr:/usr:ro", "-v"])
        .arg(format!("{}:/opt/eg:ro", fx.bin.display()))
        .arg("-v")
        .arg(format!("{}:/work", work.display()))
        .stdin(Stdio::null());
        (cmd, cidfile, work, dir)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        if let Ok(out) = self.cli().args(["ps", "-aq"]).output() {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            if !ids.is_empty() {
                let _ = self.cli().args(["rm", "-f"]).args(&ids).output();
            }
        }
        // SIGTERM: dockerd stops its containerd and unmounts its layers before it exits.
        terminate(&mut self.child);
    }
}

/// The full path of a program on PATH.
pub fn which(name: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not on PATH"))
}

/// `execguard setup ENGINE --root ROOT ARGS...`, which must succeed: the engine's files for
/// this build, written under `root`.
pub fn setup_engine(engine: &str, root: &Path, args: &[&str]) {
    let mut all = vec!["setup", engine, "--root", root.to_str().unwrap()];
    all.extend_from_slice(args);
    let (ok, out, err) = execguard(&all);
    assert!(ok, "execguard setup {engine}: {out}{err}");
}

/// Runs `execguard ARGS`: (success, stdout, stderr).
pub fn execguard(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(EXECGUARD).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The last argument of each event's argv (the tests put a marker name there).
pub fn last_args(events: &[Value]) -> std::collections::HashSet<String> {
    events
        .iter()
        .filter_map(|e| {
            e["exec"]["argv"]
                .as_array()?
                .last()?
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}
