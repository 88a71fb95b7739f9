//! The one line a denied process gets on its own standard error, so that the person whose
//! build step failed sees why (`[message]` in the config):
//!
//! `execguard: denied /lib64/ld-linux-x86-64.so.2 running /tmp/payload
//! (binary_executed_by_loader, critical); ask your platform team or see <docs_url>`
//!
//! It goes through the process's own descriptor 2, duplicated with `pidfd_getfd` (never a
//! reopening of `/proc/PID/fd/2`, which would write with the supervisor's rights), only when
//! that is open for writing, and once per process. The answering thread never waits for it:
//! a pipe gets a `RWF_NOWAIT` write (a full one drops the line). What cannot be written that
//! way goes to one writer thread through a bounded queue: a regular file (buffered `RWF_NOWAIT`
//! is unsupported on most filesystems), written as is, so a file whose writes hang (FUSE, a
//! frozen filesystem) holds only that thread and later lines are dropped once the queue is
//! full; a pipe on kernels without non-blocking pipe writes, a FIFO or a terminal, written
//! once `poll` says it takes the line (within 100 ms, else dropped). A socket is never
//! written: the kernel attaches the writer's credentials (the supervisor's uid and pid) to what
//! it sends, which a reader with `SO_PASSCRED` could take for its peer's.

use std::os::fd::AsFd;

use nix::fcntl::{fcntl, FcntlArg, OFlag};

use super::listener::{Answering, ListenerState, STATE_ENTRIES};
use super::registry::Shared;
use crate::inspect::{start_time_of, LoaderFinding};
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
pub(super) fn write_if_pending(cx: &mut Answering, line: &str) {
    let pid = cx.notif.pid;
    if let Ok(pidfd) = PidFd::open(pid) {
        if cx.pending() {
            write(cx.st, &pidfd, pid, line);
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
    match kind_of(&stderr) {
        Some(Kind::Socket) => {
            tracing::debug!(pid, "standard error is a socket; not told (it would carry the supervisor's credentials)");
        }
        Some(Kind::Regular) => queue(pid, stderr, text),
        None => tracing::debug!(pid, "standard error cannot be named; not told"),
        Some(Kind::Other) => match write_nowait(&stderr, text.as_bytes()) {
            // A pipe before Linux 6.x's non-blocking pipe writes, a FIFO, a terminal: the
            // writer thread writes it once it can (poll), or drops it.
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => queue(pid, stderr, text),
            Err(e) => tracing::debug!(pid, error = %e, "could not tell the process (dropped)"),
            Ok(_) => {}
        },
    }
}

fn queue(pid: u32, fd: std::os::fd::OwnedFd, text: String) {
    PENDING.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    if writer().try_send((fd, text)).is_err() {
        PENDING.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        tracing::debug!(pid, "the writer of told lines is busy; line dropped");
    }
}

/// Lines queued for the writer thread and not yet written (or given up).
static PENDING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Waits up to `timeout` for the writer thread to finish the lines queued so far: a process
/// about to exit (`execguard run` when its command ends) would otherwise drop them.
pub(crate) fn wait_written(timeout: std::time::Duration) {
    let deadline = std::time::Instant::now() + timeout;
    while PENDING.load(std::sync::atomic::Ordering::SeqCst) > 0
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// How long the writer thread waits for a pipe, FIFO or terminal to take a line.
const WRITABLE_WITHIN_MS: u16 = 100;

/// The writer thread's write: a regular file at once (it may wait on its filesystem); anything
/// else once `poll` says it takes a line (a pipe with a free buffer takes up to a page at
/// once), else dropped.
fn write_when_ready(fd: &std::os::fd::OwnedFd, text: &str) -> nix::Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    if !is_regular_file(fd) {
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLOUT)];
        if poll(&mut fds, PollTimeout::from(WRITABLE_WITHIN_MS))? == 0 {
            return Err(nix::errno::Errno::EAGAIN);
        }
    }
    nix::unistd::write(fd, text.as_bytes()).map(drop)
}

/// What a standard error is, as far as writing to it goes.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Regular,
    Socket,
    Other,
}

/// What `fd` is, told by its `/proc/self/fd` link, which procfs answers itself: an `fstat`
/// would ask the file's filesystem, and a FUSE daemon that never answers would hold the
/// answering thread. A path (not `pipe:[...]`, `socket:[...]`, `anon_inode:...`) is taken for
/// a regular file: the writer thread, which may wait, looks closer.
fn kind_of(fd: &std::os::fd::OwnedFd) -> Option<Kind> {
    use std::os::fd::AsRawFd;
    // readlinkat: the worker's system call allowlist has no readlink.
    let link = nix::fcntl::readlinkat(
        nix::fcntl::AT_FDCWD,
        format!("/proc/self/fd/{}", fd.as_raw_fd()).as_str(),
    )
    .ok()?;
    let link = link.as_encoded_bytes();
    Some(if link.starts_with(b"socket:") {
        Kind::Socket
    } else if link.starts_with(b"/") {
        Kind::Regular
    } else {
        Kind::Other
    })
}

/// Lines waiting for the writer thread at most.
const QUEUED_LINES: usize = 64;

/// The writer thread's queue, started with the first line it is given.
fn writer() -> &'static std::sync::mpsc::SyncSender<(std::os::fd::OwnedFd, String)> {
    static WRITER: std::sync::OnceLock<
        std::sync::mpsc::SyncSender<(std::os::fd::OwnedFd, String)>,
    > = std::sync::OnceLock::new();
    WRITER.get_or_init(|| {
        let (tx, rx) =
            std::sync::mpsc::sync_channel::<(std::os::fd::OwnedFd, String)>(QUEUED_LINES);
        let spawned = std::thread::Builder::new()
            .name("told-writer".into())
            .spawn(move || {
                for (fd, text) in rx {
                    if let Err(e) = write_when_ready(&fd, &text) {
                        tracing::debug!(error = %e, "could not tell the process (dropped)");
                    }
                    drop(fd);
                    PENDING.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
        if let Err(e) = spawned {
            // Without the thread the receiver is gone: every send fails, and lines are dropped.
            tracing::warn!(error = %e, "cannot start the writer of told lines");
        }
        tx
    })
}

/// The writer thread's closer look: a regular file for real (`fstat`, which may wait).
fn is_regular_file(fd: &std::os::fd::OwnedFd) -> bool {
    use nix::sys::stat::SFlag;
    nix::sys::stat::fstat(fd)
        .is_ok_and(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A regular file is written by the writer thread, not the caller; a socket is not
    /// written at all (its reader would see the supervisor's credentials).
    #[test]
    fn regular_files_go_to_the_writer_and_sockets_are_skipped() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let fd: std::os::fd::OwnedFd = file.reopen().unwrap().into();
        assert_eq!(kind_of(&fd), Some(Kind::Regular));
        writer().send((fd, "told\n".into())).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::fs::read_to_string(file.path()).unwrap() != "told\n" {
            assert!(
                std::time::Instant::now() < deadline,
                "the writer did not write"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(kind_of(&a.into()), Some(Kind::Socket));
    }
}
