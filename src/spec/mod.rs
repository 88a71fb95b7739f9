//! Patching an OCI runtime spec so that runc/crun hand the container to the supervisor: one
//! chain of small, idempotent [`Step`]s on the spec, shared by `inject`, the hook and the runtime
//! wrapper. The spec is handled as JSON, not as `oci-spec` types, because those drop fields they
//! do not know and refuse enum values newer than themselves: a hook must give back everything
//! it was given.

use std::path::Path;

use serde_json::{json, Map, Value};

use crate::traps::{Cond, Role, Trap, TRAPS};
use crate::vocab::Mode;

mod args;

use args::{complement_args, cond_args};

/// Where an exec is judged, which decides what is trapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Checkpoints {
    /// Only at the new image's first thread-pointer setup, where the kernel has done the exec
    /// and nothing of the image has run: one notification per exec (the default).
    #[default]
    Image,
    /// Also at the `execve`/`execveat` call: a denial is then a plain errno from the exec, at
    /// the price of a second notification per exec (`[detect] exec_checkpoint = true`).
    ExecAndImage,
}

impl Checkpoints {
    /// `[detect] exec_checkpoint`; warns where the image checkpoint alone misses loaders
    /// (arm64).
    pub(crate) fn with_exec(exec: bool) -> Self {
        if !exec && !crate::traps::IMAGE_CHECKPOINT_ALWAYS_FIRES {
            tracing::warn!("{}", crate::config::NO_EXEC_CHECKPOINT_WARNING);
        }
        if exec {
            Checkpoints::ExecAndImage
        } else {
            Checkpoints::Image
        }
    }

    /// Whether `trap` is installed.
    pub(crate) fn traps(self, trap: &Trap) -> bool {
        trap.role != Role::Exec || self == Checkpoints::ExecAndImage
    }
}

/// The annotation that sets a container's mode.
pub(crate) const MODE_ANNOTATION: &str = "execguard.io/mode";
/// `listenerMetadata` starts with this; the rest records what the injection changed.
pub(crate) const METADATA_PREFIX: &str = "execguard/1";
/// Architectures of a profile that execguard creates: every ABI of the machine's kernel
/// (32-bit and x32 on x86_64, 32-bit ARM on arm64) is covered by the same rules, so an
/// `int 0x80` execve cannot slip past.
fn created_architectures() -> Vec<&'static str> {
    crate::traps::ABIS.iter().map(|k| k.oci_name).collect()
}
/// Actions under which a trapped syscall runs today; only those are handed to the supervisor.
/// A syscall the profile already blocks stays blocked.
const RUNNING_ACTIONS: &[&str] = &["SCMP_ACT_ALLOW", "SCMP_ACT_LOG"];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum SpecError {
    #[error("spec field `{field}` is not a JSON {expected}")]
    WrongType {
        field: String,
        expected: &'static str,
    },
    #[error(
        "spec already has a seccomp listener (`linux.seccomp.listenerPath` = {path:?}) that is not \
         execguard's; a filter chain can have only one, so execguard cannot guard this container"
    )]
    ForeignListener { path: String },
    #[error(
        "`linux.seccomp.syscalls[{index}]` has argument conditions on `{syscall}`, which execguard \
         traps; it cannot merge its rule with them"
    )]
    ConditionalRule { index: usize, syscall: String },
    #[error("annotation `{MODE_ANNOTATION}` = {value:?} is not one of off, audit, enforce")]
    BadAnnotation { value: String },
}

/// What `patch` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The spec now hands execs to the supervisor.
    Guarded { trapped: Vec<String> },
    /// The annotation says `off`: the spec is untouched.
    Off,
    /// The profile already blocks every trapped system call: nothing to guard.
    AlreadyBlocked,
}

/// One idempotent change to a spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Undo an earlier injection, if the spec carries one.
    RemoveInjected,
    /// Add the NOTIFY rules and the listener.
    Inject,
}

/// The mode the spec's annotation asks for, if it has one.
pub(crate) fn annotated_mode(spec: &Value) -> Result<Option<Mode>, SpecError> {
    match spec.pointer(&format!(
        "/annotations/{}",
        MODE_ANNOTATION.replace('/', "~1")
    )) {
        None => Ok(None),
        Some(Value::String(s)) => Mode::from_annotation(s)
            .map(Some)
            .ok_or_else(|| SpecError::BadAnnotation { value: s.clone() }),
        Some(other) => Err(SpecError::BadAnnotation {
            value: other.to_string(),
        }),
    }
}

/// Sets the mode annotation (the supervisor reads a container's mode from it).
pub(crate) fn set_annotated_mode(spec: &mut Value, mode: Mode) -> Result<(), SpecError> {
    let root = spec
        .as_object_mut()
        .ok_or_else(|| wrong_type("(root)", "object"))?;
    let annotations = root
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()));
    let annotations = annotations
        .as_object_mut()
        .ok_or_else(|| wrong_type("annotations", "object"))?;
    annotations.insert(
        MODE_ANNOTATION.to_owned(),
        Value::String(mode.as_str().to_owned()),
    );
    Ok(())
}

/// Patches `spec` for the supervisor listening on `socket`, trapping what `checkpoints` needs.
/// On error the spec is unchanged.
pub(crate) fn patch(
    spec: &mut Value,
    socket: &Path,
    checkpoints: Checkpoints,
) -> Result<Outcome, SpecError> {
    if !spec.is_object() {
        return Err(wrong_type("(root)", "object"));
    }
    if annotated_mode(spec)? == Some(Mode::Off) {
        return Ok(Outcome::Off);
    }
    let mut work = spec.clone();
    let mut outcome = Outcome::AlreadyBlocked;
    for step in [Step::RemoveInjected, Step::Inject] {
        if let Some(o) = step.apply(&mut work, socket, checkpoints)? {
            outcome = o;
        }
    }
    *spec = work;
    Ok(outcome)
}

impl Step {
    fn apply(
        self,
        spec: &mut Value,
        socket: &Path,
        checkpoints: Checkpoints,
    ) -> Result<Option<Outcome>, SpecError> {
        match self {
            Step::RemoveInjected => remove_injected(spec).map(|()| None),
            Step::Inject => inject(spec, socket, checkpoints).map(Some),
        }
    }
}

fn wrong_type(field: &str, expected: &'static str) -> SpecError {
    SpecError::WrongType {
        field: field.to_owned(),
        expected,
    }
}

fn seccomp_mut(spec: &mut Value) -> Result<Option<&mut Map<String, Value>>, SpecError> {
    let Some(linux) = spec.get_mut("linux") else {
        return Ok(None);
    };
    let linux = linux
        .as_object_mut()
        .ok_or_else(|| wrong_type("linux", "object"))?;
    match linux.get_mut("seccomp") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(s)) => Ok(Some(s)),
        Some(_) => Err(wrong_type("linux.seccomp", "object")),
    }
}

/// What an earlier injection recorded in `listenerMetadata`: whether it created the profile,
/// and each trapped syscall with the action the profile had for it.
struct Injected {
    created: bool,
    trapped: Vec<(String, String)>,
}

fn parse_metadata(meta: &str) -> Option<Injected> {
    let rest = meta.strip_prefix(METADATA_PREFIX)?;
    let mut injected = Injected {
        created: false,
        trapped: Vec::new(),
    };
    for field in rest.split_whitespace() {
        if let Some(v) = field.strip_prefix("created=") {
            injected.created = v == "1";
        } else if let Some(v) = field.strip_prefix("trapped=") {
            injected.trapped = v
                .split(',')
                .filter_map(|t| {
                    let (name, action) = t.split_once(':').unwrap_or((t, "SCMP_ACT_ALLOW"));
                    let known = Trap::named(name).is_some();
                    let action_ok = RUNNING_ACTIONS.contains(&action);
                    (known && action_ok).then(|| (name.to_owned(), action.to_owned()))
                })
                .collect();
        }
    }
    Some(injected)
}

/// Whether the profile behind `listenerMetadata` traps the execs themselves (the exec
/// checkpoint): every exec call that runs under it is in its `trapped` list.
pub(crate) fn traps_execs(meta: &str) -> bool {
    parse_metadata(meta).is_some_and(|i| {
        i.trapped
            .iter()
            .any(|(name, _)| Trap::named(name).is_some_and(|t| t.role == Role::Exec))
    })
}

fn metadata(created: bool, trapped: &[(String, String)]) -> String {
    let list: Vec<String> = trapped.iter().map(|(n, a)| format!("{n}:{a}")).collect();
    format!(
        "{METADATA_PREFIX} created={} trapped={}",
        u8::from(created),
        list.join(",")
    )
}

/// The rules that hand `trapped` to the supervisor, plus the complements that keep the
/// profile's action where a conditional trap does not apply.
fn trap_rules(trapped: &[(String, String)], default_action: &str) -> Vec<Value> {
    let mut rules = Vec::new();
    let always: Vec<&str> = trapped
        .iter()
        .filter(|(n, _)| Trap::named(n).is_some_and(|t| t.when.is_none()))
        .map(|(n, _)| n.as_str())
        .collect();
    if !always.is_empty() {
        rules.push(json!({"names": always, "action": "SCMP_ACT_NOTIFY"}));
    }
    for (name, action) in trapped {
        if let Some(cond) = Trap::named(name).and_then(|t| t.when) {
            rules.push(
                json!({"names": [name], "action": "SCMP_ACT_NOTIFY", "args": cond_args(cond)}),
            );
            if action != default_action {
                for args in complement_args(cond) {
                    rules.push(json!({"names": [name], "action": action, "args": args}));
                }
            }
        }
    }
    rules
}

/// True for a complement rule that [`trap_rules`] adds.
fn is_complement_rule(rule: &Value) -> bool {
    let names: Vec<&str> = rule_names(rule).collect();
    let [name] = names.as_slice() else {
        return false;
    };
    let Some(args) = rule.get("args").map(with_value_two) else {
        return false;
    };
    Trap::named(name).and_then(|t| t.when).is_some_and(|cond| {
        complement_args(cond).contains(&args) || legacy_complement(cond) == Some(args)
    })
}

/// `args` with `valueTwo` 0 where it is missing: Go's runtimes (runc, containerd) leave a zero
/// `valueTwo` out when they write a spec back.
fn with_value_two(args: &Value) -> Value {
    let mut args = args.clone();
    for arg in args.as_array_mut().into_iter().flatten() {
        if let Some(arg) = arg.as_object_mut() {
            arg.entry("valueTwo").or_insert(json!(0));
        }
    }
    args
}

/// The complement rule of execguard before the `int` comparison (the 64-bit `!=`), which a spec
/// patched by it may still hold: removed like the current ones.
fn legacy_complement(cond: Cond) -> Option<Value> {
    match cond {
        Cond::IntEquals { index, value } => Some(json!([{"index": index, "value": value,
            "valueTwo": 0, "op": "SCMP_CMP_NE"}])),
        Cond::BitSet { .. } => None,
    }
}

fn remove_injected(spec: &mut Value) -> Result<(), SpecError> {
    let Some(seccomp) = seccomp_mut(spec)? else {
        return Ok(());
    };
    let Some(path) = seccomp.get("listenerPath") else {
        return Ok(());
    };
    let path = path.as_str().unwrap_or_default().to_owned();
    let meta = seccomp
        .get("listenerMetadata")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let Some(injected) = parse_metadata(meta) else {
        return Err(SpecError::ForeignListener { path });
    };
    if injected.created {
        if let Some(linux) = spec.get_mut("linux").and_then(Value::as_object_mut) {
            linux.remove("seccomp");
        }
        return Ok(());
    }
    seccomp.remove("listenerPath");
    seccomp.remove("listenerMetadata");
    if let Some(Value::Array(rules)) = seccomp.get_mut("syscalls") {
        // Every NOTIFY rule is execguard's: the listener was.
        rules.retain(|r| {
            r.get("action").and_then(Value::as_str) != Some("SCMP_ACT_NOTIFY")
                && !is_complement_rule(r)
        });
        for (name, action) in &injected.trapped {
            rules.push(json!({"names": [name], "action": action}));
        }
    }
    Ok(())
}

fn inject(spec: &mut Value, socket: &Path, checkpoints: Checkpoints) -> Result<Outcome, SpecError> {
    let socket = socket.to_string_lossy().into_owned();
    let Some(seccomp) = seccomp_mut(spec)? else {
        let all: Vec<(String, String)> = TRAPS
            .iter()
            .filter(|t| checkpoints.traps(t))
            .map(|t| (t.syscall.as_str().to_owned(), "SCMP_ACT_ALLOW".to_owned()))
            .collect();
        let obj = spec
            .as_object_mut()
            .ok_or_else(|| wrong_type("(root)", "object"))?;
        let linux = obj.entry("linux").or_insert_with(|| json!({}));
        let linux = linux
            .as_object_mut()
            .ok_or_else(|| wrong_type("linux", "object"))?;
        linux.insert(
            "seccomp".to_owned(),
            json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "architectures": created_architectures(),
                "listenerPath": socket,
                "listenerMetadata": metadata(true, &all),
                "syscalls": trap_rules(&all, "SCMP_ACT_ALLOW"),
            }),
        );
        return Ok(Outcome::Guarded {
            trapped: all.into_iter().map(|(n, _)| n).collect(),
        });
    };

    let default_action = seccomp
        .get("defaultAction")
        .and_then(Value::as_str)
        .unwrap_or("SCMP_ACT_ALLOW")
        .to_owned();
    let rules = match seccomp.get_mut("syscalls") {
        None | Some(Value::Null) => None,
        Some(Value::Array(r)) => Some(r),
        Some(_) => return Err(wrong_type("linux.seccomp.syscalls", "array")),
    };
    let mut empty = Vec::new();
    let rules = rules.unwrap_or(&mut empty);

    // How the profile treats each trappable syscall today: the action of its unconditional
    // rules (or the default), and the first rule with argument conditions, if any.
    let profile: Vec<(&Trap, String, Option<usize>)> = TRAPS
        .iter()
        .map(|t| {
            let mut action = default_action.clone();
            let mut conditional = None;
            for (index, rule) in rules.iter().enumerate() {
                if !rule_names(rule).any(|n| n == t.syscall.as_str()) {
                    continue;
                }
                if rule
                    .get("args")
                    .and_then(Value::as_array)
                    .is_some_and(|a| !a.is_empty())
                {
                    conditional.get_or_insert(index);
                } else if let Some(a) = rule.get("action").and_then(Value::as_str) {
                    action = a.to_owned();
                }
            }
            (t, action, conditional)
        })
        .collect();
    let runs = |action: &str| RUNNING_ACTIONS.contains(&action);
    // An exec that is not trapped only has to be able to run; with a conditional rule it may.
    if !profile
        .iter()
        .any(|(t, action, cond)| t.role == Role::Exec && (runs(action) || cond.is_some()))
    {
        // No exec runs under this profile: there is nothing to guard.
        return Ok(Outcome::AlreadyBlocked);
    }
    // A profile that blocks the image checkpoint's calls leaves only the exec to judge.
    let checkpoints = if profile
        .iter()
        .all(|(t, action, _)| t.role != Role::Image || runs(action))
    {
        checkpoints
    } else {
        Checkpoints::ExecAndImage
    };
    // Only the syscalls that run under the profile are handed over, and their action is kept
    // where a conditional trap does not apply.
    let mut trapped: Vec<(String, String)> = Vec::new();
    for (t, action, conditional) in profile {
        if !checkpoints.traps(t) {
            continue;
        }
        if let Some(index) = conditional {
            return Err(SpecError::ConditionalRule {
                index,
                syscall: t.syscall.as_str().to_owned(),
            });
        }
        if runs(&action) {
            trapped.push((t.syscall.as_str().to_owned(), action));
        }
    }

    // Take the trapped syscalls out of every rule, drop rules left with no name, add ours.
    for rule in rules.iter_mut() {
        if let Some(Value::Array(names)) = rule.get_mut("names") {
            names.retain(|n| {
                !n.as_str()
                    .is_some_and(|n| trapped.iter().any(|(t, _)| t == n))
            });
        }
    }
    rules.retain(|r| {
        r.get("names")
            .and_then(Value::as_array)
            .is_none_or(|n| !n.is_empty())
    });
    rules.extend(trap_rules(&trapped, &default_action));
    let rules = std::mem::take(rules);
    seccomp.insert("syscalls".to_owned(), Value::Array(rules));
    seccomp.insert("listenerPath".to_owned(), Value::String(socket));
    seccomp.insert(
        "listenerMetadata".to_owned(),
        Value::String(metadata(false, &trapped)),
    );
    Ok(Outcome::Guarded {
        trapped: trapped.into_iter().map(|(n, _)| n).collect(),
    })
}

fn rule_names(rule: &Value) -> impl Iterator<Item = &str> {
    rule.get("names")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

// x86_64's trap names and conditions (traps.rs checks arm64's table on any host).
#[cfg(all(test, target_arch = "x86_64"))]
mod tests;
