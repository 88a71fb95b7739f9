//! The words the config, the policy, the supervisor and the event log share: modes,
//! importances, rules, errnos, what was done, where, and through which system call. A leaf:
//! it imports nothing of the crate, so every other module may import it.
//!
//! Each type is written (in events, status output, metrics) by the one name its `Serialize`
//! and `as_str` give; strum derives both from the variant, so they cannot drift apart.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// How a container is guarded.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    Default,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::EnumString,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Mode {
    /// Not guarded at all: the spec is left untouched and nothing is inspected.
    Off,
    /// Everything runs; detections are logged.
    #[default]
    Audit,
    /// Detections at or above `[enforce] min_importance` are denied.
    Enforce,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Parses the value of the `execguard.io/mode` annotation.
    pub fn from_annotation(value: &str) -> Option<Mode> {
        value.trim().parse().ok()
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How much a detection matters. Ordered: `info < low < medium < high < critical`.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::EnumIter,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Importance {
    Info,
    Low,
    Medium,
    High,
    #[default]
    Critical,
}

impl Importance {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Every detection execguard makes. docs/events.md lists them; [`Rule::iter`]
/// (strum) yields all of them, so a list that must cover every rule cannot miss a new one.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    strum::IntoStaticStr,
    strum::EnumIter,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Rule {
    /// A dynamic loader was asked to run a program (any path, copy, fd, shebang or ABI).
    BinaryExecutedByLoader,
    /// A loader with no file behind it (a memfd or an unlinked file) was asked to run a program.
    FilelessLoaderExecution,
    /// A binary's `PT_INTERP` names something other than the container's own loaders.
    CustomInterpreter,
    /// A loader ran only to answer a question (`ldd`, `--list`, `--verify`, `--help`, ...).
    LoaderQuery,
    /// The supervisor could not inspect an exec (the answer follows the mode's fail-safe rule).
    InspectionFailed,
    /// A process tried to install a seccomp listener of its own (the kernel refuses: EBUSY).
    SeccompListenerAttempt,
    /// The kernel ran another file than the one judged at the exec checkpoint (a swap between
    /// the look and the open), or one that was never judged; killed before its first
    /// instruction (the exec record's confirmation, enforce mode with the exec checkpoint).
    ExecNotAsJudged,
    /// An ordinary dynamic program was started with `LD_PRELOAD` or `LD_AUDIT` naming a file
    /// the container can change (or an environment too large to read whole): the loader runs
    /// that file's code, which needs no exec bit.
    PreloadFromWritable,
}

impl Rule {
    /// Every rule, in declaration order.
    pub fn iter() -> impl Iterator<Item = Rule> {
        <Rule as strum::IntoEnumIterator>::iter()
    }

    pub fn name(self) -> &'static str {
        self.into()
    }

    pub fn description(self) -> &'static str {
        match self {
            Rule::BinaryExecutedByLoader => "Binary executed through loader",
            Rule::FilelessLoaderExecution => "Binary executed through a fileless loader",
            Rule::CustomInterpreter => "Binary started with a non-system program interpreter",
            Rule::LoaderQuery => "Dynamic loader queried without running a program",
            Rule::InspectionFailed => "Exec could not be inspected",
            Rule::SeccompListenerAttempt => "Process tried to install its own seccomp listener",
            Rule::ExecNotAsJudged => "Executed file is not the one judged at the exec",
            Rule::PreloadFromWritable => "Program started with a preload the container can change",
        }
    }

    pub fn category(self) -> &'static str {
        match self {
            Rule::InspectionFailed => "integrity",
            Rule::SeccompListenerAttempt | Rule::ExecNotAsJudged => "defense_evasion",
            Rule::BinaryExecutedByLoader
            | Rule::FilelessLoaderExecution
            | Rule::CustomInterpreter
            | Rule::LoaderQuery
            | Rule::PreloadFromWritable => "execution",
        }
    }

    pub fn method(self) -> &'static str {
        "system_services"
    }

    pub fn default_importance(self) -> Importance {
        match self {
            Rule::BinaryExecutedByLoader => Importance::Critical,
            Rule::FilelessLoaderExecution => Importance::Critical,
            Rule::CustomInterpreter => Importance::Critical,
            Rule::LoaderQuery => Importance::Low,
            Rule::InspectionFailed => Importance::Medium,
            Rule::SeccompListenerAttempt => Importance::High,
            Rule::ExecNotAsJudged => Importance::Critical,
            Rule::PreloadFromWritable => Importance::Info,
        }
    }
}

/// An errno by name, as the config and the event write it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

/// The errnos a denial may answer with: the ones an exec can plausibly fail with.
const ERRNO_NAMES: &[(&str, i32)] = &[
    ("EACCES", libc::EACCES),
    ("EPERM", libc::EPERM),
    ("ENOENT", libc::ENOENT),
    ("ENOEXEC", libc::ENOEXEC),
    ("EINVAL", libc::EINVAL),
    ("ETXTBSY", libc::ETXTBSY),
    ("ELIBBAD", libc::ELIBBAD),
];

impl Errno {
    pub fn name(self) -> String {
        ERRNO_NAMES
            .iter()
            .find(|(_, n)| *n == self.0)
            .map(|(name, _)| (*name).to_owned())
            .unwrap_or_else(|| format!("errno {}", self.0))
    }
}

impl<'de> Deserialize<'de> for Errno {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        ERRNO_NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| Errno(*v))
            .ok_or_else(|| {
                let names: Vec<&str> = ERRNO_NAMES.iter().map(|(n, _)| *n).collect();
                serde::de::Error::custom(format!(
                    "unknown errno `{name}`, expected one of {}",
                    names.join(", ")
                ))
            })
    }
}

/// What was done with what an event describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, strum::IntoStaticStr)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Outcome {
    Allowed,
    Denied,
}

/// Where a detection was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, strum::IntoStaticStr)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Stage {
    /// The `execve`/`execveat` call (with `[detect] exec_checkpoint`).
    Exec,
    /// The new image's first thread-pointer setup, after the exec.
    Image,
    /// Another trapped call.
    Syscall,
    /// The kernel's exec path, where the exec record's program confirms what an exec runs.
    Record,
}

/// The system call ABI a call came through; it decides the size of the pointers in argv.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, strum::IntoStaticStr, strum::EnumIter,
)]
pub enum Abi {
    #[serde(rename = "x86_64")]
    #[strum(serialize = "x86_64")]
    X86_64,
    #[serde(rename = "i386")]
    #[strum(serialize = "i386")]
    I386,
    #[serde(rename = "x32")]
    #[strum(serialize = "x32")]
    X32,
    #[serde(rename = "aarch64")]
    #[strum(serialize = "aarch64")]
    Aarch64,
    /// 32-bit ARM (EABI) on an arm64 kernel.
    #[serde(rename = "arm")]
    #[strum(serialize = "arm")]
    Arm,
}

impl Abi {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn pointer_size(self) -> usize {
        match self {
            Abi::X86_64 | Abi::Aarch64 => 8,
            Abi::I386 | Abi::X32 | Abi::Arm => 4,
        }
    }

    /// A pointer-sized little-endian word of this ABI (`bytes` is `pointer_size()` long;
    /// missing bytes read as zero).
    pub fn word(self, bytes: &[u8]) -> u64 {
        let mut w = [0u8; 8];
        let n = bytes.len().min(self.pointer_size());
        w[..n].copy_from_slice(&bytes[..n]);
        u64::from_le_bytes(w)
    }
}

/// The system calls execguard traps, by the names the OCI profile and the events give them.
/// [`crate::traps`] has their numbers and conditions.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, strum::IntoStaticStr, strum::EnumIter,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Syscall {
    Execve,
    Execveat,
    ArchPrctl,
    SetThreadArea,
    /// arm64's image checkpoint ([`crate::traps`]).
    SetTidAddress,
    Seccomp,
}

impl Syscall {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn importance_is_ordered() {
        assert!(Importance::Info < Importance::Low);
        assert!(Importance::Low < Importance::Medium);
        assert!(Importance::Medium < Importance::High);
        assert!(Importance::High < Importance::Critical);
    }

    /// The name `as_str` gives is the one an event carries, for every variant.
    #[test]
    fn names_and_serialised_forms_agree() {
        fn json<T: Serialize>(v: T) -> String {
            serde_json::to_value(v)
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        }
        for r in Rule::iter() {
            assert_eq!(json(r), r.name());
        }
        for s in <Syscall as strum::IntoEnumIterator>::iter() {
            assert_eq!(json(s), s.as_str());
        }
        for a in <Abi as strum::IntoEnumIterator>::iter() {
            assert_eq!(json(a), a.as_str());
        }
        assert_eq!(json(Syscall::SetThreadArea), "set_thread_area");
        assert_eq!(
            json(Rule::BinaryExecutedByLoader),
            "binary_executed_by_loader"
        );
        assert_eq!(json(Outcome::Denied), "denied");
        assert_eq!(json(Mode::Enforce), "enforce");
        assert_eq!(Mode::from_annotation(" audit "), Some(Mode::Audit));
        assert_eq!(Mode::from_annotation("Audit"), None);
    }
}
