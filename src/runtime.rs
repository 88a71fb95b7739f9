//! `execguard-runtime`: behaves exactly like runc (or crun) to its caller. It forwards every
//! argument unchanged, patches `<bundle>/config.json` on `create` and `run` only, then execs the
//! real runtime. For containerd (a runtime handler's `BinaryName`, or `ctr run --runc-binary`),
//! CRI-O (a runtime handler) and podman (`--runtime`).
//!
//! Its config comes from `--execguard-config FILE` among the global flags (podman:
//! `--runtime-flag execguard-config=FILE`; the flag is removed before the real runtime runs),
//! else `$EXECGUARD_CONFIG` (containerd's shim passes containerd's environment on), else
//! `/etc/execguard/config.toml`. `--execguard-mode MODE` (also removed) sets the mode of the
//! containers it creates that carry no `execguard.io/mode` annotation: Docker before 24 has no
//! annotations, so `execguard setup docker` registers one runtime per mode
//! (`execguard-audit`, `execguard-enforce`) besides `execguard` (the config's mode).
//!
//! Its own errors go to stderr and, when the caller gave `--log`, to that file as runc-style
//! log lines, which is where containerd's shim looks for the reason a create failed.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use crate::config::Config;
use crate::guard::{self, Decision, Entry};
use crate::vocab::Mode;

/// The wrapper's own global flags; never passed on.
const CONFIG_FLAG: &str = "--execguard-config";
const MODE_FLAG: &str = "--execguard-mode";
const OWN_FLAGS: &[&str] = &[CONFIG_FLAG, MODE_FLAG];
/// Global flags of runc and crun that take a value (as the next argument or after `=`).
const GLOBAL_VALUE_FLAGS: &[&str] = &[
    CONFIG_FLAG,
    MODE_FLAG,
    "--root",
    "--log",
    "--log-format",
    "--log-level",
    "--criu",
    "--rootless",
    "--cgroup-manager",
];
/// Flags of `create`/`run` that take a value.
const COMMAND_VALUE_FLAGS: &[&str] = &[
    "--bundle",
    "-b",
    "--console-socket",
    "--pid-file",
    "--preserve-fds",
];
/// PATH when the caller gives none (podman runs hooks, and sometimes runtimes, without one).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What the wrapper needs to know of a runtime command line.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Invocation {
    /// The subcommand (`create`, `run`, `start`, `state`, ...), if any.
    pub(crate) command: Option<String>,
    /// `--log` and `--log-format` among the global flags.
    pub(crate) log: Option<PathBuf>,
    pub(crate) log_json: bool,
    /// `--version`/`-v` before any subcommand.
    pub(crate) version: bool,
    /// `--execguard-config`.
    pub(crate) config: Option<PathBuf>,
    /// `--execguard-mode`: the mode of unannotated containers of this runtime (Docker's named
    /// runtimes, `execguard setup docker`).
    pub(crate) mode: Option<String>,
    /// The arguments for the real runtime: all but `--execguard-config` and its value.
    pub(crate) forward: Vec<OsString>,
    /// For `create` and `run`: the bundle (`--bundle`/`-b`, else the working directory).
    pub(crate) bundle: Option<PathBuf>,
    /// For `create` and `run`: the container id (the last positional argument).
    pub(crate) container: Option<String>,
}

/// Splits `--flag=value` into its parts.
fn split_flag(arg: &OsStr) -> (&[u8], Option<&[u8]>) {
    let b = arg.as_bytes();
    match b.iter().position(|c| *c == b'=') {
        Some(i) if b.starts_with(b"--") => (&b[..i], Some(&b[i + 1..])),
        _ => (b, None),
    }
}

fn to_path(b: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(b))
}

/// Parses a runtime command line (`args[0]` is this program).
pub(crate) fn parse(args: &[OsString]) -> Invocation {
    let mut inv = Invocation::default();
    let mut log_format: Option<Vec<u8>> = None;
    let mut i = 1;
    while i < args.len() {
        let (flag, inline) = split_flag(&args[i]);
        if !flag.starts_with(b"-") {
            inv.command = Some(String::from_utf8_lossy(flag).into_owned());
            break;
        }
        let start = i;
        let takes_value = GLOBAL_VALUE_FLAGS.iter().any(|f| f.as_bytes() == flag);
        let value = match (takes_value, inline) {
            (true, Some(v)) => Some(v.to_vec()),
            (true, None) => {
                i += 1;
                args.get(i).map(|a| a.as_bytes().to_vec())
            }
            _ => None,
        };
        match flag {
            b"--log" => inv.log = value.map(|v| to_path(&v)),
            b"--log-format" => log_format = value,
            b"--version" | b"-v" => inv.version = true,
            f if f == CONFIG_FLAG.as_bytes() => inv.config = value.map(|v| to_path(&v)),
            f if f == MODE_FLAG.as_bytes() => {
                inv.mode = Some(String::from_utf8_lossy(&value.unwrap_or_default()).into_owned());
            }
            _ => {}
        }
        if !OWN_FLAGS.iter().any(|f| f.as_bytes() == flag) {
            inv.forward
                .extend(args[start..=i.min(args.len() - 1)].iter().cloned());
        }
        i += 1;
    }
    inv.forward.extend(args.iter().skip(i).cloned());
    inv.log_json = log_format.as_deref() == Some(b"json");
    if matches!(inv.command.as_deref(), Some("create" | "run")) {
        let mut positional = Vec::new();
        let mut j = i + 1;
        while j < args.len() {
            let (flag, inline) = split_flag(&args[j]);
            if flag.starts_with(b"-") {
                if COMMAND_VALUE_FLAGS.iter().any(|f| f.as_bytes() == flag) {
                    let value = match inline {
                        Some(v) => Some(v.to_vec()),
                        None => {
                            j += 1;
                            args.get(j).map(|a| a.as_bytes().to_vec())
                        }
                    };
                    if flag == b"--bundle" || flag == b"-b" {
                        inv.bundle = value.map(|v| to_path(&v));
                    }
                }
            } else {
                positional.push(String::from_utf8_lossy(flag).into_owned());
            }
            j += 1;
        }
        inv.container = positional.pop();
        if inv.bundle.is_none() {
            inv.bundle = std::env::current_dir().ok();
        }
    }
    inv
}

/// The value of `--execguard-mode`.
fn parse_mode(value: &str) -> Result<Mode, String> {
    Mode::from_annotation(value)
        .ok_or_else(|| format!("{MODE_FLAG} {value:?} is not one of off, audit, enforce"))
}

/// The configured runtime is a name that no directory of PATH has.
#[derive(Debug, thiserror::Error)]
#[error("the runtime {} is not on PATH ({path})", runtime.display())]
pub(crate) struct NotOnPath {
    runtime: PathBuf,
    path: String,
}

/// Finds the real runtime: an absolute path as it is; a name on PATH, skipping this very
/// program (in case it was installed under the runtime's name).
pub(crate) fn find_runtime(configured: &Path) -> Result<PathBuf, NotOnPath> {
    if configured.components().count() > 1 {
        return Ok(configured.to_owned());
    }
    let me = std::env::current_exe().and_then(|p| p.canonicalize()).ok();
    let path = std::env::var_os("PATH")
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| DEFAULT_PATH.into());
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(configured);
        let Ok(meta) = candidate.metadata() else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        if me.is_some() && candidate.canonicalize().ok() == me {
            continue;
        }
        return Ok(candidate);
    }
    Err(NotOnPath {
        runtime: configured.to_owned(),
        path: path.to_string_lossy().into_owned(),
    })
}

/// Writes one error line to the caller's `--log` file, in its format, as runc does.
fn log_error(inv: &Invocation, msg: &str) {
    eprintln!("execguard-runtime: {msg}");
    let Some(path) = &inv.log else {
        return;
    };
    let time = crate::event::now_rfc3339();
    let line = if inv.log_json {
        let mut l =
            serde_json::to_string(&serde_json::json!({"level": "error", "msg": msg, "time": time}))
                .unwrap_or_default();
        l.push('\n');
        l
    } else {
        format!(
            "time=\"{time}\" level=error msg={}\n",
            serde_json::Value::from(msg)
        )
    };
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(line.as_bytes());
    }
}

/// The whole program: patch when creating, then become the real runtime. Returns only on
/// failure (the exec replaces it otherwise), with the exit code to leave with.
pub fn main(args: Vec<OsString>) -> ExitCode {
    let inv = parse(&args);
    let config = match Config::load_or_default(inv.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return fail(&inv, &Config::default(), &format!("execguard: {e}")),
    };
    let mode = match inv.mode.as_deref().map(parse_mode).transpose() {
        Ok(m) => m,
        Err(e) => return fail(&inv, &config, &format!("execguard: {e}")),
    };
    let real = match find_runtime(&config.runtime.path) {
        Ok(r) => r,
        Err(e) => return fail(&inv, &config, &format!("execguard: {e}")),
    };
    if inv.version && inv.command.is_none() {
        println!("execguard-runtime version {}", env!("CARGO_PKG_VERSION"));
        println!("real runtime: {}", real.display());
        let _ = std::io::stdout().flush();
    }
    if let (Some("create" | "run"), Some(bundle)) = (inv.command.as_deref(), &inv.bundle) {
        let req = guard::Request {
            runtime_mode: mode,
            ..guard::Request::new(Entry::Runtime, true)
        };
        let result = guard::patch_bundle(bundle, &config, req, inv.container.as_deref());
        match result {
            Ok(Decision::Guarded { .. }) => {}
            Ok(Decision::NotGuarded { reason }) => {
                tracing::info!(container = ?inv.container, %reason, "not guarded");
            }
            Err(e) => return fail(&inv, &config, &format!("execguard: {e:#}")),
        }
    }
    let err = Command::new(&real).arg0(&real).args(&inv.forward).exec();
    fail(
        &inv,
        &config,
        &format!(
            "execguard: cannot run the runtime {}: {err}",
            real.display()
        ),
    )
}

fn fail(inv: &Invocation, config: &Config, msg: &str) -> ExitCode {
    log_error(inv, msg);
    guard::report_failure(config, Entry::Runtime, inv.container.as_deref(), msg);
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn containerd_shim_create() {
        let inv = parse(&args(&[
            "execguard-runtime",
            "--root",
            "/run/containerd/runc/default",
            "--log",
            "/run/x/log.json",
            "--log-format",
            "json",
            "--systemd-cgroup",
            "create",
            "--bundle",
            "/run/b",
            "--pid-file",
            "/run/b/init.pid",
            "c1",
        ]));
        assert_eq!(inv.command.as_deref(), Some("create"));
        assert_eq!(inv.log, Some(PathBuf::from("/run/x/log.json")));
        assert!(inv.log_json);
        assert_eq!(inv.bundle, Some(PathBuf::from("/run/b")));
        assert_eq!(inv.container.as_deref(), Some("c1"));
    }

    #[test]
    fn equals_forms_and_short_bundle() {
        let inv = parse(&args(&[
            "r",
            "--root=/r",
            "--log=/l",
            "run",
            "-b",
            "/b",
            "--console-socket=/s",
            "-d",
            "id2",
        ]));
        assert_eq!(inv.command.as_deref(), Some("run"));
        assert_eq!(inv.log, Some(PathBuf::from("/l")));
        assert!(!inv.log_json);
        assert_eq!(inv.bundle, Some(PathBuf::from("/b")));
        assert_eq!(inv.container.as_deref(), Some("id2"));
    }

    #[test]
    fn own_flag_is_taken_out() {
        let inv = parse(&args(&[
            "r",
            "--execguard-config",
            "/e.toml",
            "--root",
            "/r",
            "--execguard-config=/f.toml",
            "create",
            "--bundle",
            "/b",
            "c",
        ]));
        assert_eq!(inv.config, Some(PathBuf::from("/f.toml")));
        assert_eq!(
            inv.forward,
            args(&["--root", "/r", "create", "--bundle", "/b", "c"])
        );
        let plain = args(&["r", "--root", "/r", "--debug", "state", "c"]);
        assert_eq!(parse(&plain).forward, plain[1..].to_vec());
    }

    /// Docker passes a runtime's `runtimeArgs` first, then its own global flags.
    #[test]
    fn mode_flag_is_taken_out() {
        let inv = parse(&args(&[
            "execguard-runtime",
            "--execguard-config",
            "/e.toml",
            "--execguard-mode=enforce",
            "--root",
            "/var/run/docker/runtime-runc/moby",
            "--log",
            "/l/log.json",
            "--log-format",
            "json",
            "create",
            "--bundle",
            "/b",
            "c",
        ]));
        assert_eq!(inv.mode.as_deref(), Some("enforce"));
        assert_eq!(inv.config, Some(PathBuf::from("/e.toml")));
        assert!(!inv
            .forward
            .iter()
            .any(|a| a.to_string_lossy().contains("execguard")));
        assert_eq!(parse_mode("audit"), Ok(Mode::Audit));
        let err = parse_mode("strict").unwrap_err();
        assert!(
            err.contains("--execguard-mode") && err.contains("strict"),
            "{err}"
        );
        let spaced = parse(&args(&["r", "--execguard-mode", "off", "create", "c"]));
        assert_eq!(spaced.mode.as_deref(), Some("off"));
        assert_eq!(spaced.forward, args(&["create", "c"]));
    }

    #[test]
    fn other_commands_are_not_touched() {
        let inv = parse(&args(&["r", "--root", "/r", "start", "c1"]));
        assert_eq!(inv.command.as_deref(), Some("start"));
        assert_eq!(inv.bundle, None);
        let inv = parse(&args(&["r", "--version"]));
        assert!(inv.version && inv.command.is_none());
    }

    #[test]
    fn finds_a_runtime_on_path_but_not_itself() {
        assert!(find_runtime(Path::new("sh")).unwrap().ends_with("sh"));
        assert!(find_runtime(Path::new("no-such-runtime-here")).is_err());
        assert_eq!(
            find_runtime(Path::new("/opt/crun")).unwrap(),
            PathBuf::from("/opt/crun")
        );
    }
}
