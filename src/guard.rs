//! What every entry point (`inject`, the podman hook, the runtime wrapper) does with a spec:
//! decide whether the container is guarded (annotation, `guard_unannotated`, whether the
//! supervisor is listening), patch it through [`crate::spec`], and report what an admin must
//! know to `report_log`, since podman discards a hook's stderr.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use serde::Serialize;
use serde_json::Value;

use crate::config::Config;
use crate::event::now_rfc3339;
use crate::spec::{self, Outcome, SpecError};
use crate::vocab::{Importance, Mode};

/// Larger specs are refused: a spec is tens of KiB.
pub(crate) const MAX_SPEC_BYTES: u64 = 16 << 20;

/// Which entry point is at work (named in reports).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    Inject,
    Hook,
    Runtime,
}

impl Entry {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Entry::Inject => "inject",
            Entry::Hook => "hook",
            Entry::Runtime => "runtime",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum GuardError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(
        "no execguard supervisor is listening on {socket} ({source}); the container is in {mode} \
         mode, so it is not created unguarded (start the supervisor, or see \
         on_supervisor_unavailable in the config)"
    )]
    SupervisorUnavailable {
        socket: PathBuf,
        mode: Mode,
        source: std::io::Error,
    },
}

/// What happened to the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    Guarded { mode: Mode, trapped: Vec<String> },
    NotGuarded { reason: String },
}

impl Decision {
    pub(crate) fn describe(&self, config: &Config) -> String {
        match self {
            Decision::Guarded { mode, trapped } => format!(
                "guarded ({mode}): {} handed to the supervisor at {}",
                trapped.join(", "),
                config.socket.display()
            ),
            Decision::NotGuarded { reason } => format!("left unguarded: {reason}"),
        }
    }
}

/// What decides a container's mode besides the config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Request {
    /// The entry point at work.
    pub(crate) entry: Entry,
    /// Check that the supervisor is listening (the hook and the runtime wrapper do; `inject`
    /// prepares bundles and may run before the supervisor starts).
    pub(crate) probe: bool,
    /// The mode the runtime was registered with (`execguard-runtime --execguard-mode`, as
    /// `setup docker` names runtimes): for a container without the annotation, it replaces
    /// `mode` and `guard_unannotated`, and is written into the spec as the annotation, which
    /// is where the supervisor reads a container's mode.
    pub(crate) runtime_mode: Option<Mode>,
}

impl Request {
    pub(crate) fn new(entry: Entry, probe: bool) -> Self {
        Self {
            entry,
            probe,
            runtime_mode: None,
        }
    }
}

/// Decides and patches. On error the spec is unchanged.
pub(crate) fn guard_spec(
    spec: &mut Value,
    config: &Config,
    req: Request,
    container: Option<&str>,
) -> Result<Decision, GuardError> {
    let Request {
        entry,
        probe,
        runtime_mode,
    } = req;
    let annotated = spec::annotated_mode(spec)?;
    let mode = match annotated.or(runtime_mode) {
        Some(Mode::Off) => {
            let reason = match annotated {
                Some(_) => format!("annotation {} is off", spec::MODE_ANNOTATION),
                None => "the runtime's --execguard-mode is off".to_owned(),
            };
            return Ok(Decision::NotGuarded { reason });
        }
        Some(m) => m,
        None if !config.guard_unannotated => {
            return Ok(Decision::NotGuarded {
                reason: format!(
                    "no {} annotation and guard_unannotated is false",
                    spec::MODE_ANNOTATION
                ),
            })
        }
        None => config.mode,
    };
    if probe {
        if let Err(source) = UnixStream::connect(&config.socket) {
            if config.on_supervisor_unavailable.refuses(mode) {
                return Err(GuardError::SupervisorUnavailable {
                    socket: config.socket.clone(),
                    mode,
                    source,
                });
            }
            let reason = format!(
                "no supervisor is listening on {} ({source}); the {mode} container starts unguarded",
                config.socket.display()
            );
            report(
                config,
                entry,
                "container_unguarded",
                Importance::High,
                container,
                Some(mode),
                &reason,
            );
            return Ok(Decision::NotGuarded { reason });
        }
    }
    let checkpoints = spec::Checkpoints::with_exec(config.detect.exec_checkpoint);
    let mut work = spec.clone();
    if annotated.is_none() && runtime_mode.is_some() {
        spec::set_annotated_mode(&mut work, mode)?;
    }
    match spec::patch(&mut work, &config.socket, checkpoints)? {
        Outcome::Guarded { trapped } => {
            *spec = work;
            Ok(Decision::Guarded { mode, trapped })
        }
        Outcome::Off => Ok(Decision::NotGuarded {
            reason: format!("annotation {} is off", spec::MODE_ANNOTATION),
        }),
        Outcome::AlreadyBlocked => Ok(Decision::NotGuarded {
            reason: "the seccomp profile already blocks execve and execveat".to_owned(),
        }),
    }
}

/// Reports a failure of an entry point (`guard_failed`, critical).
pub(crate) fn report_failure(config: &Config, entry: Entry, container: Option<&str>, reason: &str) {
    report(
        config,
        entry,
        "guard_failed",
        Importance::Critical,
        container,
        None,
        reason,
    );
}

#[derive(Serialize)]
struct Report<'a> {
    time: String,
    event: &'a str,
    importance: Importance,
    source: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    container: Option<ContainerRef<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<Mode>,
    reason: &'a str,
}

#[derive(Serialize)]
struct ContainerRef<'a> {
    id: &'a str,
}

/// Appends one JSON line to `report_log` (and says it on stderr too). Reporting must never
/// stop a container: a report that cannot be written is only said on stderr.
pub(crate) fn report(
    config: &Config,
    entry: Entry,
    event: &str,
    importance: Importance,
    container: Option<&str>,
    mode: Option<Mode>,
    reason: &str,
) {
    eprintln!("execguard {}: {reason}", entry.as_str());
    let line = Report {
        time: now_rfc3339(),
        event,
        importance,
        source: entry.as_str(),
        container: container.map(|id| ContainerRef { id }),
        mode,
        reason,
    };
    let Ok(mut text) = serde_json::to_vec(&line) else {
        return;
    };
    text.push(b'\n');
    let path = &config.report_log;
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(&text));
    if let Err(e) = written {
        eprintln!(
            "execguard {}: cannot write {}: {e}",
            entry.as_str(),
            path.display()
        );
    }
}

/// Patches `bundle/config.json` in place (temporary file, then rename; mode kept) for the
/// inject command and the runtime wrapper.
pub(crate) fn patch_bundle(
    bundle: &Path,
    config: &Config,
    req: Request,
    container: Option<&str>,
) -> anyhow::Result<Decision> {
    let path = bundle.join("config.json");
    let meta = std::fs::metadata(&path).with_context(|| format!("reading {}", path.display()))?;
    if meta.len() > MAX_SPEC_BYTES {
        bail!("{} is larger than {MAX_SPEC_BYTES} bytes", path.display());
    }
    let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut value: serde_json::Value = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    let decision = guard_spec(&mut value, config, req, container)
        .with_context(|| format!("patching {}", path.display()))?;
    if matches!(decision, Decision::Guarded { .. }) {
        write_atomically(&path, &value, meta.permissions().mode())?;
    }
    Ok(decision)
}

fn write_atomically(path: &Path, value: &serde_json::Value, mode: u32) -> anyhow::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value)?;
    bytes.push(b'\n');
    crate::fsutil::write_atomic(path, &bytes, mode)
        .with_context(|| format!("replacing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Unavailable;
    use serde_json::json;

    fn config(dir: &std::path::Path, unavailable: Unavailable) -> Config {
        Config {
            socket: dir.join("none.sock"),
            report_log: dir.join("report.log"),
            on_supervisor_unavailable: unavailable,
            ..Config::default()
        }
    }

    #[test]
    fn unavailable_supervisor_by_mode() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path(), Unavailable::ByMode);
        let mut audit = json!({"annotations": {"execguard.io/mode": "audit"}});
        let before = audit.clone();
        let d = guard_spec(&mut audit, &c, Request::new(Entry::Hook, true), Some("c1")).unwrap();
        assert!(matches!(d, Decision::NotGuarded { .. }));
        assert_eq!(audit, before, "an unguarded spec is not patched");
        let log = std::fs::read_to_string(dir.path().join("report.log")).unwrap();
        let line: Value = serde_json::from_str(log.trim()).unwrap();
        assert_eq!(line["event"], "container_unguarded");
        assert_eq!(line["container"]["id"], "c1");

        let mut enforce = json!({"annotations": {"execguard.io/mode": "enforce"}});
        let err = guard_spec(&mut enforce, &c, Request::new(Entry::Hook, true), None).unwrap_err();
        assert!(err.to_string().contains("none.sock"), "{err}");
    }

    #[test]
    fn unavailable_supervisor_configurable() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = json!({});
        let fail = config(dir.path(), Unavailable::Fail);
        assert!(guard_spec(&mut spec, &fail, Request::new(Entry::Runtime, true), None).is_err());
        let mut enforce = json!({"annotations": {"execguard.io/mode": "enforce"}});
        let unguarded = config(dir.path(), Unavailable::Unguarded);
        assert!(matches!(
            guard_spec(
                &mut enforce,
                &unguarded,
                Request::new(Entry::Runtime, true),
                None
            )
            .unwrap(),
            Decision::NotGuarded { .. }
        ));
    }

    #[test]
    fn unannotated_containers_can_be_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path(), Unavailable::ByMode);
        c.guard_unannotated = false;
        let mut spec = json!({});
        let d = guard_spec(&mut spec, &c, Request::new(Entry::Inject, false), None).unwrap();
        assert!(matches!(d, Decision::NotGuarded { .. }));
        assert_eq!(spec, json!({}));
        let mut annotated = json!({"annotations": {"execguard.io/mode": "enforce"}});
        let d = guard_spec(&mut annotated, &c, Request::new(Entry::Inject, false), None).unwrap();
        assert!(matches!(
            d,
            Decision::Guarded {
                mode: Mode::Enforce,
                ..
            }
        ));
    }

    /// A runtime registered with a mode guards unannotated containers in that mode (even with
    /// `guard_unannotated = false`) and writes it into the spec; an annotation still wins.
    #[test]
    fn runtime_mode_for_unannotated_containers() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path(), Unavailable::ByMode);
        c.guard_unannotated = false;
        let req = |m| Request {
            runtime_mode: Some(m),
            ..Request::new(Entry::Runtime, false)
        };
        let mut spec = json!({"process": {"args": ["sh"]}});
        let d = guard_spec(&mut spec, &c, req(Mode::Enforce), None).unwrap();
        assert!(
            matches!(
                d,
                Decision::Guarded {
                    mode: Mode::Enforce,
                    ..
                }
            ),
            "{d:?}"
        );
        assert_eq!(spec["annotations"]["execguard.io/mode"], "enforce");
        assert!(spec["linux"]["seccomp"]["listenerPath"].is_string());

        let mut annotated = json!({"annotations": {"execguard.io/mode": "audit"}});
        let d = guard_spec(&mut annotated, &c, req(Mode::Enforce), None).unwrap();
        assert!(
            matches!(
                d,
                Decision::Guarded {
                    mode: Mode::Audit,
                    ..
                }
            ),
            "{d:?}"
        );
        assert_eq!(annotated["annotations"]["execguard.io/mode"], "audit");

        let mut off = json!({});
        let d = guard_spec(&mut off, &c, req(Mode::Off), None).unwrap();
        assert!(matches!(d, Decision::NotGuarded { .. }));
        assert_eq!(off, json!({}), "an unguarded spec is not patched");

        let mut bad = json!({"annotations": 5});
        assert!(guard_spec(&mut bad, &c, req(Mode::Audit), None).is_err());
        assert_eq!(bad, json!({"annotations": 5}));
    }
}
