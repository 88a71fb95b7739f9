//! The one line a denied process gets on its own standard error, so that the person whose
//! build step failed sees why (`[message]` in the config):
//!
//! `execguard: denied /lib64/ld-linux-x86-64.so.2 running /tmp/payload
//! (binary_executed_by_loader, critical); ask your platform team or see <docs_url>`
//!
//! It goes through the process's own descriptor 2, duplicated with `pidfd_getfd` (never a
//! reopening of `/proc/PID/fd/2`, which would write with the supervisor's rights), only when
//! that is open for writing, without blocking (`RWF_NOWAIT`: a full pipe drops the line, and
//! the answer never waits for it), and once per process.

use std::os::fd::AsFd;

use nix::fcntl::{fcntl, FcntlArg, OFlag};

use super::exec::start_time_of;
use super::registry::Shared;
use super::serve::{ListenerState, STATE_ENTRIES};
use crate::inspect::LoaderFinding;
use crate::sys::{write_nowait, PidFd};
use crate::vocab::{Importance, Mode, Outcome, Rule};

/// Longest part of the line taken from the container (a path, a program).
const MAX_PART: usize = 200;

/// What the line is about.
pub(super) struct Told<'a> {
    pub rule: Rule,
    pub importance: Importance,
    pub outcome: Outcome,
    /// The program that was exec'd (or the image found running).
    pub exe: &'a [u8],
    pub loader: Option<&'a LoaderFinding>,
}

/// The line for `told`, if one is due.
pub(super) fn line_if_due(shared: &Shared, mode: Mode, told: &Told<'_>) -> Option<String> {
    due(shared, mode, told).then(|| line(shared, told))
}

/// Whether a line is due: every denial, and with `in_audit` an allowed critical finding of an
/// audit container.
fn due(shared: &Shared, mode: Mode, told: &Told<'_>) -> bool {
    let m = &shared.config.message;
    m.enabled
        && match told.outcome {
            Outcome::Denied => true,
            Outcome::Allowed => {
                m.in_audit && mode == Mode::Audit && told.importance == Importance::Critical
            }
        }
}

/// The line (without a newline): control characters from the container shown as `?`, each
/// part cut to [`MAX_PART`] characters.
fn line(shared: &Shared, told: &Told<'_>) -> String {
    let what = match told.loader {
        Some(l) => match &l.invocation.program {
            Some(p) => format!("{} running {}", clean(&l.path), clean(p)),
            None => clean(&l.path),
        },
        None => clean(told.exe),
    };
    let verb = match told.outcome {
        Outcome::Denied => "denied",
        Outcome::Allowed => "logged (audit mode)",
    };
    let url = &shared.config.message.docs_url;
    let help = if url.is_empty() {
        "ask your platform team".to_owned()
    } else {
        format!("ask your platform team or see {}", clean(url.as_bytes()))
    };
    format!(
        "execguard: {verb} {what} ({}, {}); {help}",
        told.rule.name(),
        told.importance.as_str()
    )
}

fn clean(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .take(MAX_PART)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Writes `line` to the notifying process's standard error, if the notification is still
/// pending (so that the pid still names it).
pub(super) fn write_if_pending(
    l: &super::serve::Listener,
    st: &mut ListenerState,
    notif: &crate::sys::SeccompNotif,
    line: &str,
) {
    if let Ok(pidfd) = PidFd::open(notif.pid) {
        if l.notify.id_valid(notif.id) {
            write(st, &pidfd, notif.pid, line);
        }
    }
}

/// Writes `line` to the standard error of the process `pidfd` names (which the caller has
/// checked is the notifying one), unless it was told already.
pub(super) fn write(st: &mut ListenerState, pidfd: &PidFd, pid: u32, line: &str) {
    let Some(start) = start_time_of(pid) else {
        return;
    };
    if st.told.len() >= STATE_ENTRIES {
        st.told.clear();
    }
    if !st.told.insert((pid, start)) {
        return;
    }
    let stderr = match pidfd.get_fd(2) {
        Ok(fd) => fd,
        Err(e) => {
            tracing::debug!(pid, error = %e, "no standard error to tell the process");
            return;
        }
    };
    let writable = fcntl(stderr.as_fd(), FcntlArg::F_GETFL).is_ok_and(|flags| {
        let mode = OFlag::from_bits_truncate(flags) & OFlag::O_ACCMODE;
        mode == OFlag::O_WRONLY || mode == OFlag::O_RDWR
    });
    if !writable {
        tracing::debug!(pid, "standard error is not open for writing; not told");
        return;
    }
    let text = format!("{line}\n");
    let written = match write_nowait(&stderr, text.as_bytes()) {
        // Buffered writes to most filesystems cannot promise RWF_NOWAIT; a regular file on a
        // local filesystem does not wait for a reader, so a plain write is bounded.
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) && local_file(&stderr) => {
            nix::unistd::write(&stderr, text.as_bytes()).map_err(std::io::Error::from)
        }
        other => other,
    };
    if let Err(e) = written {
        tracing::debug!(pid, error = %e, "could not tell the process (dropped)");
    }
}

/// A regular file on a filesystem whose writes never wait on another process (not FUSE, not
/// a network filesystem).
fn local_file(fd: &std::os::fd::OwnedFd) -> bool {
    const LOCAL: &[i64] = &[
        0xEF53,      // ext2/3/4
        0x5846_5342, // xfs
        0x9123_683E, // btrfs
        0x0102_1994, // tmpfs
        0x794C_7630, // overlayfs
    ];
    let regular = nix::sys::stat::fstat(fd).is_ok_and(|st| {
        nix::sys::stat::SFlag::from_bits_truncate(st.st_mode) & nix::sys::stat::SFlag::S_IFMT
            == nix::sys::stat::SFlag::S_IFREG
    });
    regular && nix::sys::statfs::fstatfs(fd).is_ok_and(|fs| LOCAL.contains(&fs.filesystem_type().0))
}
