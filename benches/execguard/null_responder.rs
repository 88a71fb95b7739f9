//! A seccomp listener that answers every notification with CONTINUE at once, with the
//! synchronous wake-up, from a thread in the container's CPU cgroup: the floor any supervisor
//! on this filter can reach. With `looks`, it first makes the two `/proc` looks execguard's
//! answer path makes for a dynamic exec (`stat` of `/proc/PID/exe`; `/proc/PID/maps` opened,
//! one `PROCMAP_QUERY` at the call's instruction pointer, closed) and ignores what they find:
//! the floor of a supervisor that judges the image race-free through `/proc`.

use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use execguard::sys::{NotifyFd, SeccompNotifResp, SECCOMP_USER_NOTIF_FLAG_CONTINUE};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

pub struct NullResponder {
    pub socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl NullResponder {
    pub fn start(looks: bool) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("eg-null")
            .tempdir()
            .unwrap();
        let socket = dir.path().join("null.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                if let Some((fd, pid)) = receive_fd(conn.as_raw_fd()) {
                    std::thread::spawn(move || answer_all(fd, pid, looks));
                }
            }
        });
        Self { socket, _dir: dir }
    }
}

/// runc's message: the state JSON (only its process's pid is used) and the notify fd.
fn receive_fd(conn: RawFd) -> Option<(OwnedFd, u32)> {
    let mut buf = vec![0u8; 1 << 17];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(conn, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC).ok()?;
    let len = msg.bytes;
    let mut fd = None;
    for c in msg.cmsgs().ok()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: the kernel installed this descriptor for this message; it has no
            // other owner.
            fd = fds.first().map(|fd| unsafe { OwnedFd::from_raw_fd(*fd) });
        }
    }
    let state: serde_json::Value = serde_json::from_slice(&buf[..len]).ok()?;
    let pid = state["pid"].as_u64().and_then(|p| u32::try_from(p).ok())?;
    Some((fd?, pid))
}

fn answer_all(fd: OwnedFd, pid: u32, looks: bool) {
    // In the container's CPU cgroup, as execguard's worker thread is by default.
    let _joined = execguard::supervisor::cpugroup::join(pid, "null responder");
    let notify = NotifyFd::new(fd);
    notify
        .set_sync_wakeup()
        .expect("SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP");
    loop {
        match notify.recv() {
            Ok(n) => {
                if looks {
                    look(n.pid, n.data.instruction_pointer);
                }
                let _ = notify.send(&SeccompNotifResp {
                    id: n.id,
                    val: 0,
                    error: 0,
                    flags: SECCOMP_USER_NOTIF_FLAG_CONTINUE,
                });
            }
            Err(_) => {
                let mut fds = [PollFd::new(notify.as_fd(), PollFlags::POLLIN)];
                let _ = poll(&mut fds, PollTimeout::ZERO);
                let r = fds[0].revents().unwrap_or(PollFlags::empty());
                if r.contains(PollFlags::POLLHUP) && !r.contains(PollFlags::POLLIN) {
                    return;
                }
            }
        }
    }
}

/// What it finds does not matter (a task gone is no reason to stop answering).
fn look(pid: u32, ip: u64) {
    let _ = stat_proc(pid, "exe");
    let _ = query_maps(pid, ip);
}

/// The answer path's first look: a `stat` of `/proc/PID/NAME`.
pub(crate) fn stat_proc(pid: u32, name: &str) -> nix::Result<()> {
    nix::sys::stat::stat(format!("/proc/{pid}/{name}").as_str()).map(drop)
}

/// The answer path's second look: `/proc/PID/maps` opened, one `PROCMAP_QUERY` at `addr`,
/// closed. Only the open can fail: the cost is the lock and the lookup, not what is found.
pub(crate) fn query_maps(pid: u32, addr: u64) -> nix::Result<()> {
    let maps = nix::fcntl::open(
        format!("/proc/{pid}/maps").as_str(),
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    let _ = execguard::sys::procmap_query(&maps, addr);
    Ok(())
}
