//! What the running kernel offers execguard, said at start (and by `execguard features`), so
//! that a node without a feature says what it costs instead of failing quietly. The minimum
//! kernel, enforced at start: [`MIN_KERNEL`].

use std::path::Path;

/// The oldest kernel execguard starts on: Linux 5.10 (the oldest tested, Debian 11's; it has
/// every call the answer path needs: `pidfd_getfd` and `openat2` since 5.6, seccomp's
/// `NOTIF_ID_VALID` since 5.0).
pub(crate) const MIN_KERNEL: (u32, u32) = (5, 10);

/// The running kernel's version (major, minor), from its release string.
pub(crate) fn kernel_version() -> Option<(u32, u32)> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    parse_version(&release)
}

fn parse_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Refuses a kernel older than [`MIN_KERNEL`] or without seccomp user notification, with a
/// message that says so.
pub(crate) fn check_minimum() -> Result<(), String> {
    let (major, minor) = MIN_KERNEL;
    match kernel_version() {
        Some(v) if v < MIN_KERNEL => {
            return Err(format!(
                "Linux {}.{} is older than {major}.{minor}, the oldest kernel execguard runs on",
                v.0, v.1
            ))
        }
        None => return Err("cannot read the kernel's version (/proc/sys/kernel/osrelease)".into()),
        Some(_) => {}
    }
    user_notif()
}

fn user_notif() -> Result<(), String> {
    let actions = std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail")
        .map_err(|e| format!("cannot read /proc/sys/kernel/seccomp/actions_avail: {e}"))?;
    if actions.split_whitespace().any(|a| a == "user_notif") {
        Ok(())
    } else {
        Err("the kernel has no seccomp user notification (SECCOMP_RET_USER_NOTIF)".into())
    }
}

fn at_least(want: (u32, u32), what: &str) -> Result<(), String> {
    match kernel_version() {
        Some(v) if v >= want => Ok(()),
        _ => Err(format!("Linux {}.{}+: {what}", want.0, want.1)),
    }
}

fn procmap_query() -> Result<(), String> {
    let maps = std::fs::File::open("/proc/self/maps").map_err(|e| e.to_string())?;
    let addr = procmap_query as *const () as usize as u64;
    match crate::sys::procmap_query(&maps, addr) {
        Ok(_) => Ok(()),
        Err(e) => Err(format!(
            "Linux 6.11+ ({e}): the image checkpoint reads /proc/PID/maps instead"
        )),
    }
}

/// Each feature, and why it is missing. `record`: also load the exec record's programs (and
/// drop them), which needs root.
pub(crate) fn kernel_features(record: bool) -> Vec<(&'static str, Result<(), String>)> {
    let mut out = vec![
        ("seccomp user notification", user_notif()),
        (
            "synchronous wake-up",
            at_least(
                (6, 6),
                "without it each answer wakes the other CPU (about 8 % per exec instead of 1 %)",
            ),
        ),
        ("PROCMAP_QUERY", procmap_query()),
        (
            "BTF",
            if Path::new("/sys/kernel/btf/vmlinux").exists() {
                Ok(())
            } else {
                Err("no /sys/kernel/btf/vmlinux: no exec record".into())
            },
        ),
        (
            "cgroup v2",
            if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
                Ok(())
            } else {
                Err("cgroup v1 or hybrid (crun refuses it; runc works)".into())
            },
        ),
    ];
    if record {
        let loaded = std::env::current_exe()
            .map_err(|e| e.to_string())
            .and_then(|exe| {
                super::record::load_in_child(&exe)
                    .map(drop)
                    .map_err(|e| e.to_string())
            });
        out.push(("exec record (tp_btf programs, bpf_send_signal)", loaded));
    }
    out
}

/// Logs each feature this kernel lacks and what that costs (the exec record says its own).
pub(crate) fn log_missing() {
    for (name, have) in kernel_features(false) {
        if let Err(why) = have {
            tracing::warn!(feature = name, "the kernel lacks it: {why}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_release_strings() {
        assert_eq!(parse_version("6.1.0-57-amd64\n"), Some((6, 1)));
        assert_eq!(parse_version("5.10.0-46-amd64"), Some((5, 10)));
        assert_eq!(parse_version("6.12.90+deb12.1-amd64"), Some((6, 12)));
        assert_eq!(parse_version("x"), None);
        assert!((5, 9) < MIN_KERNEL && (6, 1) > MIN_KERNEL);
    }
}
