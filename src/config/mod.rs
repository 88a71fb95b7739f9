//! The TOML configuration. Every key is documented, with its default, in `config/execguard.toml`.
//! Unknown keys and bad values are errors that name the file, the key and the line.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::vocab::{Errno, Importance, Mode, Rule};

mod allow;
pub(crate) use allow::AllowRule;

/// Where `execguard` looks for its configuration when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/execguard/config.toml";
/// The supervisor's listener socket when the config does not name one.
pub(crate) const DEFAULT_SOCKET: &str = "/run/execguard/execguard.sock";
/// The control socket when the config does not name one.
pub(crate) const DEFAULT_CONTROL_SOCKET: &str = "/run/execguard/control.sock";
/// Where the hook and the runtime wrapper report when the config does not say.
pub(crate) const DEFAULT_REPORT_LOG: &str = "/var/log/execguard/report.log";
/// The environment variable that names the config for `execguard-runtime` and the hook.
pub const CONFIG_ENV: &str = "EXECGUARD_CONFIG";
/// Configs larger than this are refused: a config is a few hundred bytes.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path} is larger than {MAX_CONFIG_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct EnforceConfig {
    /// Events at or above this importance are denied in enforce mode.
    pub(crate) min_importance: Importance,
    /// The errno a denied exec fails with.
    pub(crate) errno: Errno,
}

impl Default for EnforceConfig {
    fn default() -> Self {
        Self {
            min_importance: Importance::Critical,
            errno: Errno(libc::EACCES),
        }
    }
}

/// Per-rule importance overrides: `[rules] custom_interpreter = "high"`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleOverrides {
    pub(crate) binary_executed_by_loader: Option<Importance>,
    pub(crate) fileless_loader_execution: Option<Importance>,
    pub(crate) custom_interpreter: Option<Importance>,
    pub(crate) loader_query: Option<Importance>,
    pub(crate) inspection_failed: Option<Importance>,
    pub(crate) seccomp_listener_attempt: Option<Importance>,
    pub(crate) exec_not_as_judged: Option<Importance>,
    pub(crate) preload_from_writable: Option<Importance>,
}

impl RuleOverrides {
    pub(crate) fn importance(&self, rule: Rule) -> Importance {
        let over = match rule {
            Rule::BinaryExecutedByLoader => self.binary_executed_by_loader,
            Rule::FilelessLoaderExecution => self.fileless_loader_execution,
            Rule::CustomInterpreter => self.custom_interpreter,
            Rule::LoaderQuery => self.loader_query,
            Rule::InspectionFailed => self.inspection_failed,
            Rule::SeccompListenerAttempt => self.seccomp_listener_attempt,
            Rule::ExecNotAsJudged => self.exec_not_as_judged,
            Rule::PreloadFromWritable => self.preload_from_writable,
        };
        over.unwrap_or_else(|| rule.default_importance())
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct DetectConfig {
    /// Loader paths (inside the container) that count as the system's own, besides the
    /// built-in list: a binary whose `PT_INTERP` resolves to one of them is ordinary.
    pub(crate) extra_system_loaders: Vec<String>,
    /// Also judge every exec at the `execve`/`execveat` call, besides the image checkpoint: a
    /// denial is then a plain errno from the exec (`[enforce] errno`) instead of the process
    /// being killed before its first instruction, and a binary whose `PT_INTERP` names a file
    /// that is not a loader is refused before that file runs. Costs a second notification
    /// per exec. On by default on arm64, where the image checkpoint (`set_tid_address`) does
    /// not see glibc before 2.34 or Go programs (`crate::traps`).
    pub(crate) exec_checkpoint: bool,
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            extra_system_loaders: Vec::new(),
            exec_checkpoint: EXEC_CHECKPOINT_BY_DEFAULT,
        }
    }
}

/// Whether `[detect] exec_checkpoint` is on when the configuration does not say.
pub(crate) const EXEC_CHECKPOINT_BY_DEFAULT: bool = cfg!(target_arch = "aarch64");

/// What is said where `[detect] exec_checkpoint = false` leaves loaders unjudged (arm64): by
/// the supervisor at start, and by whatever installs a filter from that config (the hook,
/// the runtime wrapper, `inject`, `run`).
pub(crate) const NO_EXEC_CHECKPOINT_WARNING: &str =
    "[detect] exec_checkpoint = false on arm64: the image checkpoint (set_tid_address) does not \
     see a loader of glibc before 2.34, which makes no such call; such loader runs are not \
     judged";

/// What the hook and the runtime wrapper do when no supervisor listens at create time.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Unavailable {
    /// Audit containers start unguarded (and this is reported); enforce containers fail.
    #[default]
    ByMode,
    /// Creation fails, whatever the mode.
    Fail,
    /// The container starts unguarded, whatever the mode (and this is reported).
    Unguarded,
}

impl Unavailable {
    /// Whether a container (or `execguard run`'s command) in `mode` is refused rather than
    /// started unguarded.
    pub(crate) fn refuses(self, mode: Mode) -> bool {
        match self {
            Unavailable::Fail => true,
            Unavailable::Unguarded => false,
            Unavailable::ByMode => mode == Mode::Enforce,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RuntimeConfig {
    /// The real OCI runtime that `execguard-runtime` runs: a name looked up on PATH, or an
    /// absolute path.
    pub(crate) path: PathBuf,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("runc"),
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ControlConfig {
    /// `execguard status` and `execguard reload` talk to the supervisor here (mode 0600).
    pub(crate) socket: PathBuf,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from(DEFAULT_CONTROL_SOCKET),
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct EventsConfig {
    /// Also send every event to syslog (`/dev/log`, which journald reads too).
    pub(crate) syslog: bool,
    /// The syslog socket.
    pub(crate) syslog_socket: PathBuf,
    /// Identical events from one container (same event, action, path and argv) within this
    /// many seconds are written once; the next one written says how many were suppressed
    /// (`repeated`), and a container's last suppressed ones are written when it ends. 0: off.
    pub(crate) rate_limit_seconds: u64,
    /// Bytes of event lines one notify fd (a container start, a `runc exec`) may write per
    /// `rate_limit_seconds`; beyond it, its events are counted by kind and written as one
    /// summary line per kind when the window ends. Bounds what a flooding container costs.
    pub(crate) max_bytes: u64,
    /// Events below this importance are not written at all (they are still counted in the
    /// metrics and `status`); denials follow `[enforce]` whatever this says.
    pub(crate) min_importance: Importance,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            syslog: false,
            syslog_socket: PathBuf::from("/dev/log"),
            rate_limit_seconds: 10,
            max_bytes: 4 << 20,
            min_importance: Importance::Low,
        }
    }
}

/// The line a denied process gets on its own standard error.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct MessageConfig {
    /// Write it at all.
    pub(crate) enabled: bool,
    /// Also when audit mode logs a critical event (the exec goes on).
    pub(crate) in_audit: bool,
    /// Where the line sends people, after "ask your platform team"; empty: nowhere else.
    pub(crate) docs_url: String,
}

impl Default for MessageConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            in_audit: false,
            docs_url: String::new(),
        }
    }
}

/// What the worker's system call allowlist does with a call outside it.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum SyscallFilter {
    /// The call fails with EPERM.
    #[default]
    Refuse,
    /// The call runs, and the kernel's audit log records it.
    Log,
    /// No filter.
    Off,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct HardeningConfig {
    /// The worker's own system calls, confined to an allowlist once it is set up.
    pub(crate) syscall_filter: SyscallFilter,
}

/// Which CPU cgroup the thread serving a container runs in.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum CpuCgroup {
    /// The container's (cgroup v1's `cpu` hierarchy; elsewhere the worker's).
    #[default]
    Container,
    /// The worker's own.
    Supervisor,
}

/// Whether the supervisor keeps the kernel's exec record (`supervisor::record`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum ExecRecordSetting {
    /// Loaded when the supervisor starts, if it can be (`CAP_BPF`, `CAP_PERFMON`); else off.
    #[default]
    Auto,
    /// Not loaded: every image is looked at through `/proc`.
    Off,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct WorkerConfig {
    /// Where the thread that answers a container's execs is scheduled.
    pub(crate) cpu_cgroup: CpuCgroup,
    /// Whether ordinary images are answered from the kernel's exec record.
    pub(crate) exec_record: ExecRecordSetting,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct MetricsConfig {
    /// A TCP address for Prometheus to scrape `/metrics` from ("127.0.0.1:9464"); empty: off.
    /// The control socket serves `/metrics` too.
    pub(crate) listen: String,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The supervisor's Unix socket; runc connects to it (`linux.seccomp.listenerPath`).
    #[serde(default = "default_socket")]
    pub(crate) socket: PathBuf,
    /// The mode of containers that carry no `execguard.io/mode` annotation.
    #[serde(default)]
    pub(crate) mode: Mode,
    /// Whether containers without the `execguard.io/mode` annotation are guarded.
    #[serde(default = "yes")]
    pub(crate) guard_unannotated: bool,
    /// What the hook and the runtime wrapper do when the supervisor is not listening.
    #[serde(default)]
    pub(crate) on_supervisor_unavailable: Unavailable,
    /// Where the hook and the runtime wrapper report, as JSON lines (podman discards a hook's
    /// stderr): failures, and containers started unguarded.
    #[serde(default = "default_report_log")]
    pub(crate) report_log: PathBuf,
    #[serde(default)]
    pub(crate) enforce: EnforceConfig,
    #[serde(default)]
    pub(crate) rules: RuleOverrides,
    #[serde(default)]
    pub(crate) detect: DetectConfig,
    #[serde(default)]
    pub(crate) runtime: RuntimeConfig,
    #[serde(default)]
    pub(crate) control: ControlConfig,
    #[serde(default)]
    pub(crate) metrics: MetricsConfig,
    #[serde(default)]
    pub(crate) events: EventsConfig,
    #[serde(default)]
    pub(crate) message: MessageConfig,
    #[serde(default)]
    pub(crate) hardening: HardeningConfig,
    #[serde(default)]
    pub(crate) worker: WorkerConfig,
    /// Exceptions for known, legitimate loader uses (`[[allow]]`).
    #[serde(default)]
    pub(crate) allow: Vec<AllowRule>,
}

fn default_socket() -> PathBuf {
    PathBuf::from(DEFAULT_SOCKET)
}

fn yes() -> bool {
    true
}

fn default_report_log() -> PathBuf {
    PathBuf::from(DEFAULT_REPORT_LOG)
}

impl Default for Config {
    fn default() -> Self {
        Self {
            socket: default_socket(),
            mode: Mode::default(),
            guard_unannotated: true,
            on_supervisor_unavailable: Unavailable::default(),
            report_log: default_report_log(),
            enforce: EnforceConfig::default(),
            rules: RuleOverrides::default(),
            detect: DetectConfig::default(),
            runtime: RuntimeConfig::default(),
            control: ControlConfig::default(),
            metrics: MetricsConfig::default(),
            events: EventsConfig::default(),
            message: MessageConfig::default(),
            hardening: HardeningConfig::default(),
            worker: WorkerConfig::default(),
            allow: Vec::new(),
        }
    }
}

impl Config {
    /// Reads and validates a config file.
    pub(crate) fn load(path: &Path) -> Result<Self, ConfigError> {
        let meta = std::fs::metadata(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                path: path.to_owned(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses config text; `path` only names the source in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: describe_toml_error(text, &e),
        })?;
        if config.mode == Mode::Off {
            return Err(ConfigError::Parse {
                path: path.to_owned(),
                message: "key `mode`: \"off\" is only for the execguard.io/mode annotation; \
                          the default mode is \"audit\" or \"enforce\""
                    .to_owned(),
            });
        }
        if !config.metrics.listen.is_empty()
            && config
                .metrics
                .listen
                .parse::<std::net::SocketAddr>()
                .map_or(true, |a| !a.ip().is_loopback())
        {
            return Err(ConfigError::Parse {
                path: path.to_owned(),
                message: format!(
                    "key `metrics.listen`: {:?} is not a loopback address and port (127.0.0.1:9464)",
                    config.metrics.listen
                ),
            });
        }
        let mut names = std::collections::HashSet::new();
        if let Some(dup) = config.allow.iter().find(|r| !names.insert(r.name.as_str())) {
            return Err(ConfigError::Parse {
                path: path.to_owned(),
                message: format!(
                    "[[allow]] {:?}: the name is used by an earlier rule (events name the rule)",
                    dup.name
                ),
            });
        }
        if !config.socket.is_absolute() {
            return Err(ConfigError::Parse {
                path: path.to_owned(),
                message: format!(
                    "key `socket`: {} is not an absolute path",
                    config.socket.display()
                ),
            });
        }
        Ok(config)
    }

    /// `--config FILE` when given; else `$EXECGUARD_CONFIG`; else the default path when it
    /// exists; else the defaults.
    pub fn load_or_default(path: Option<&Path>) -> Result<Self, ConfigError> {
        let from_env = std::env::var_os(CONFIG_ENV).map(PathBuf::from);
        match path.or(from_env.as_deref()) {
            Some(p) => Self::load(p),
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
                Self::load(Path::new(DEFAULT_CONFIG_PATH))
            }
            None => Ok(Self::default()),
        }
    }
}

/// "line L, column C: message", from toml's span.
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().to_owned();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            // A table's span covers the whole table: its first line names it.
            let key = text[span.clone()].trim().lines().next().unwrap_or_default();
            format!("line {line}, column {column} (at `{key}`): {message}")
        }
        None => message,
    }
}

#[cfg(test)]
mod tests;
