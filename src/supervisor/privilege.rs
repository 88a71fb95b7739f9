//! The capabilities the supervisor runs with: exactly those measured to be needed (docs/operations.md,
//! "Least privilege"), checked when it starts and reduced before the worker handles its first
//! notification. Through the `caps` crate.

use caps::{CapSet, Capability, CapsHashSet};

/// What the worker needs, and what for (named in the error when one is missing).
pub(crate) const WORKER_CAPS: &[(Capability, &str)] = &[
    (
        Capability::CAP_SYS_PTRACE,
        "to read containers' processes: their memory, /proc/PID/{exe,root,maps,auxv,environ}, \
         and their standard error for the denial message",
    ),
    (
        Capability::CAP_DAC_READ_SEARCH,
        "to read files a container made unreadable, such as an execute-only loader copy",
    ),
    (
        Capability::CAP_KILL,
        "to kill a denied image that runs as another uid",
    ),
    (
        Capability::CAP_CHECKPOINT_RESTORE,
        "to open the file behind a mapping (/proc/PID/map_files) when judging an interpreter",
    ),
];

#[derive(Debug, thiserror::Error)]
pub(crate) enum PrivilegeError {
    #[error(
        "the supervisor needs {cap} {why}, and this process does not have it; run it as root \
         with {cap} in its capability bounding set (the systemd unit's CapabilityBoundingSet \
         lists what it needs)"
    )]
    Missing { cap: Capability, why: &'static str },
    #[error("reading this process's capabilities: {0}")]
    Read(#[source] caps::errors::CapsError),
    #[error("reducing this process's capabilities ({what}): {source}")]
    Reduce {
        what: &'static str,
        source: caps::errors::CapsError,
    },
    #[error("setting no_new_privs: {0}")]
    NoNewPrivs(#[source] nix::errno::Errno),
}

fn wanted() -> CapsHashSet {
    WORKER_CAPS.iter().map(|(c, _)| *c).collect()
}

/// Fails, naming the first capability the worker needs that this process could not pass on to
/// it (not in its permitted set).
pub(crate) fn check_available() -> Result<(), PrivilegeError> {
    let permitted = caps::read(None, CapSet::Permitted).map_err(PrivilegeError::Read)?;
    match WORKER_CAPS.iter().find(|(c, _)| !permitted.contains(c)) {
        Some((cap, why)) => Err(PrivilegeError::Missing { cap: *cap, why }),
        None => Ok(()),
    }
}

/// Leaves this process (and every program it starts) with the worker's capabilities at most:
/// the bounding set is cut to them (while `CAP_SETPCAP` allows it), inheritable and ambient are
/// emptied, the permitted set keeps only them. `use_them` says whether they stay effective
/// (the worker) or only permitted (the keeper, which passes them on: a root process's exec
/// gets its bounding set, but under `no_new_privs`, as systemd's `NoNewPrivileges=` sets it,
/// no more than its permitted set).
pub(crate) fn reduce(use_them: bool) -> Result<CapsHashSet, PrivilegeError> {
    let wanted = wanted();
    let err = |what| move |source| PrivilegeError::Reduce { what, source };
    let effective = caps::read(None, CapSet::Effective).map_err(PrivilegeError::Read)?;
    if effective.contains(&Capability::CAP_SETPCAP) {
        let bounding = caps::read(None, CapSet::Bounding).map_err(PrivilegeError::Read)?;
        // CAP_SETPCAP itself goes last: dropping the others needs it.
        let mut extra: Vec<Capability> = bounding.difference(&wanted).copied().collect();
        extra.sort_by_key(|c| *c == Capability::CAP_SETPCAP);
        for cap in extra {
            caps::drop(None, CapSet::Bounding, cap).map_err(err("bounding set"))?;
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(err("ambient set"))?;
    caps::clear(None, CapSet::Inheritable).map_err(err("inheritable set"))?;
    let permitted = caps::read(None, CapSet::Permitted).map_err(PrivilegeError::Read)?;
    let kept: CapsHashSet = permitted.intersection(&wanted).copied().collect();
    let effective = if use_them {
        kept.clone()
    } else {
        CapsHashSet::new()
    };
    // Effective first: it must stay within the permitted set at every step.
    caps::set(None, CapSet::Effective, &effective).map_err(err("effective set"))?;
    caps::set(None, CapSet::Permitted, &kept).map_err(err("permitted set"))?;
    Ok(effective)
}

/// The worker: its capabilities cut to [`WORKER_CAPS`], and `no_new_privs`, so that nothing it
/// could be made to run gains more.
pub(crate) fn reduce_worker() -> Result<CapsHashSet, PrivilegeError> {
    let kept = reduce(true)?;
    nix::sys::prctl::set_no_new_privs().map_err(PrivilegeError::NoNewPrivs)?;
    Ok(kept)
}

/// Names of a set of capabilities, sorted, for logs.
pub(crate) fn names(set: &CapsHashSet) -> String {
    let mut names: Vec<String> = set.iter().map(ToString::to_string).collect();
    names.sort();
    names.join(",")
}

/// Runs `f` with `cap` effective in this thread, if it is permitted (the keeper keeps the
/// worker's capabilities permitted only, and raises one for a single look), then lowers it
/// again. Without it, `f` runs as the thread is.
pub(crate) fn with_effective<T>(cap: Capability, f: impl FnOnce() -> T) -> T {
    let raised = caps::has_cap(None, CapSet::Permitted, cap).unwrap_or(false)
        && !caps::has_cap(None, CapSet::Effective, cap).unwrap_or(true)
        && caps::raise(None, CapSet::Effective, cap).is_ok();
    let out = f();
    if raised {
        if let Err(e) = caps::drop(None, CapSet::Effective, cap) {
            tracing::error!(cap = %cap, error = %e, "cannot lower a capability raised for one look");
        }
    }
    out
}
