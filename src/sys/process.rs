//! Asking the kernel about another process: a pidfd, the file behind one of its mappings
//! (`PROCMAP_QUERY`), the parent of its pid namespace.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// `_IOWR('f', 17, struct procmap_query)` (`<linux/fs.h>`, Linux 6.11 and later).
pub(crate) const PROCMAP_QUERY: u64 = 0xc068_6611;
/// `_IO(0xb7, 0x2)` (`<linux/nsfs.h>`): the parent of a pid namespace.
pub(crate) const NS_GET_PARENT: u64 = 0xb702;

/// A pidfd: a handle on one process that cannot come to mean another when its pid is reused.
#[derive(Debug)]
pub(crate) struct PidFd(OwnedFd);

impl PidFd {
    /// `pidfd_open(pid, 0)`.
    pub(crate) fn open(pid: u32) -> io::Result<Self> {
        let pid =
            libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
        // SAFETY: pidfd_open takes two integers and returns a new fd or -1; no memory is passed.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = RawFd::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
        // SAFETY: the kernel just returned this new descriptor to us; nothing else owns it.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// A duplicate of the process's descriptor `fd` (`pidfd_getfd`): the same open file
    /// description, so a write through it goes where the process's own would, with the
    /// access the process opened it with (never a reopening by path).
    pub(crate) fn get_fd(&self, fd: RawFd) -> io::Result<OwnedFd> {
        // SAFETY: pidfd_getfd takes three integers and returns a new fd or -1; no memory is
        // passed.
        let new = unsafe { libc::syscall(libc::SYS_pidfd_getfd, self.0.as_raw_fd(), fd, 0) };
        if new < 0 {
            return Err(io::Error::last_os_error());
        }
        let new = RawFd::try_from(new).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
        // SAFETY: the kernel just returned this new descriptor to us (close-on-exec); nothing
        // else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(new) })
    }

    /// Sends SIGKILL to the process.
    pub(crate) fn kill(&self) -> io::Result<()> {
        // SAFETY: pidfd_send_signal with a null siginfo pointer reads no memory; the fd is ours.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// `struct procmap_query` (`<linux/fs.h>`, Linux 6.11 and later).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct ProcmapQuery {
    size: u64,
    query_flags: u64,
    query_addr: u64,
    vma_start: u64,
    vma_end: u64,
    vma_flags: u64,
    vma_page_size: u64,
    vma_offset: u64,
    inode: u64,
    dev_major: u32,
    dev_minor: u32,
    vma_name_size: u32,
    build_id_size: u32,
    vma_name_addr: u64,
    build_id_addr: u64,
}

/// The file behind one mapping of a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// The file's device and inode, as `stat` reports them (`st_dev`, `st_ino`).
    pub key: (u64, u64),
}

/// Which file backs the mapping that contains `addr`, asked of an open `/proc/PID/maps` with
/// one `PROCMAP_QUERY` ioctl instead of reading and parsing the whole text. `Ok(None)` when no
/// mapping contains `addr` or the one that does has no file behind it. Kernels before 6.11
/// answer `ENOTTY`.
pub fn procmap_query(maps: &impl std::os::fd::AsFd, addr: u64) -> io::Result<Option<Mapping>> {
    let mut q = ProcmapQuery {
        size: std::mem::size_of::<ProcmapQuery>() as u64,
        query_addr: addr,
        ..Default::default()
    };
    // SAFETY: PROCMAP_QUERY reads and writes one `struct procmap_query`, whose layout this
    // struct has (pinned by a test); the name and build-id buffers are not asked for (sizes 0).
    let rc = unsafe {
        libc::ioctl(
            maps.as_fd().as_raw_fd(),
            PROCMAP_QUERY as _,
            &mut q as *mut ProcmapQuery,
        )
    };
    if rc < 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENOENT) => Ok(None),
            _ => Err(err),
        };
    }
    if q.inode == 0 && q.dev_major == 0 && q.dev_minor == 0 {
        return Ok(None);
    }
    Ok(Some(Mapping {
        start: q.vma_start,
        end: q.vma_end,
        key: (libc::makedev(q.dev_major, q.dev_minor), q.inode),
    }))
}

/// The parent of the pid namespace `ns` (an open `/proc/PID/ns/pid`). Fails with `EPERM` at
/// the top of what this process may see.
pub(crate) fn pid_ns_parent(ns: &impl std::os::fd::AsFd) -> io::Result<OwnedFd> {
    // SAFETY: NS_GET_PARENT takes no argument and returns a new descriptor or -1.
    let fd = unsafe { libc::ioctl(ns.as_fd().as_raw_fd(), NS_GET_PARENT as _) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this new descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Writes `bytes` at the descriptor's current position without ever blocking
/// (`pwritev2(…, -1, RWF_NOWAIT)`): a full pipe or a socket without room answers `EAGAIN`, a
/// file type that cannot promise not to block answers `EOPNOTSUPP`. The descriptor's file
/// status flags, which it may share with other processes, are left alone.
pub(crate) fn write_nowait(fd: &impl AsRawFd, bytes: &[u8]) -> io::Result<usize> {
    let iov = libc::iovec {
        iov_base: bytes.as_ptr().cast_mut().cast(),
        iov_len: bytes.len(),
    };
    // SAFETY: one iovec that points at `bytes`, alive for the call; the kernel only reads
    // from it.
    let n = unsafe { libc::pwritev2(fd.as_raw_fd(), &iov, 1, -1, libc::RWF_NOWAIT) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Forks this process, which must have one thread, checked here (`/proc/self/status`): then
/// the child has every lock free and may allocate and call C libraries before it execs. A
/// process with more threads gets an error, not an unsound child.
pub(crate) fn fork_single_threaded() -> io::Result<nix::unistd::ForkResult> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse::<u32>().ok());
    if threads != Some(1) {
        return Err(io::Error::other(format!(
            "fork needs a single-threaded process ({threads:?} threads)"
        )));
    }
    // SAFETY: this process has one thread (checked above, and nothing here starts another),
    // so no lock is held by a thread the child would not have.
    unsafe { nix::unistd::fork() }.map_err(io::Error::from)
}

/// Ends this process at once: no exit handlers run and no buffer is flushed (in a forked
/// child, those belong to the parent).
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` has no preconditions; it does not return.
    unsafe { libc::_exit(code) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mapping that holds this function's code is this executable.
    #[test]
    fn procmap_query_names_the_file_behind_an_address() {
        let maps = std::fs::File::open("/proc/self/maps").unwrap();
        let addr = procmap_query_names_the_file_behind_an_address as *const () as usize as u64;
        let found = match procmap_query(&maps, addr) {
            Err(e) if e.raw_os_error() == Some(libc::ENOTTY) => {
                eprintln!("skipped: this kernel has no PROCMAP_QUERY (Linux 6.11+)");
                return;
            }
            r => r.unwrap().expect("a file-backed mapping"),
        };
        let st = nix::sys::stat::stat("/proc/self/exe").unwrap();
        assert_eq!(found.key, (st.st_dev, st.st_ino));
        assert!(found.start <= addr && addr < found.end);
        // A stack address has no file behind it.
        let local = 0u8;
        assert_eq!(
            procmap_query(&maps, &local as *const u8 as u64).unwrap(),
            None
        );
    }

    /// This process's pid namespace has a parent only inside a nested one; at the top the
    /// kernel says EPERM.
    #[test]
    fn pid_ns_parent_stops_at_the_top() {
        let ns = std::fs::File::open("/proc/self/ns/pid").unwrap();
        match pid_ns_parent(&ns) {
            Ok(parent) => assert!(nix::sys::stat::fstat(&parent).is_ok()),
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}"),
        }
    }
}
