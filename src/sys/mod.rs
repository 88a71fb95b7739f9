//! The only module with `unsafe`: the seccomp user-notification ioctls, `PROCMAP_QUERY`, the
//! shared slot mapping, and taking ownership of file descriptors received over a socket or
//! inherited. Everything else goes through `nix`'s safe wrappers.
//!
//! Each ioctl number is a `const` pinned to the kernel's `<linux/seccomp.h>` by a test.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;

/// `SECCOMP_IOWR(0, struct seccomp_notif)`.
pub const SECCOMP_IOCTL_NOTIF_RECV: u64 = 0xc050_2100;
/// `SECCOMP_IOWR(1, struct seccomp_notif_resp)`.
pub const SECCOMP_IOCTL_NOTIF_SEND: u64 = 0xc018_2101;
/// `SECCOMP_IOW(2, __u64)`.
pub const SECCOMP_IOCTL_NOTIF_ID_VALID: u64 = 0x4008_2102;
/// `SECCOMP_IOW(4, __u64)`, Linux 6.6 and later.
pub const SECCOMP_IOCTL_NOTIF_SET_FLAGS: u64 = 0x4008_2104;
/// Wake the supervisor on the CPU of the notifying task (Linux 6.6 and later).
pub const SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP: u64 = 1;
/// Answer "let the system call run".
pub const SECCOMP_USER_NOTIF_FLAG_CONTINUE: u32 = 1;
/// Words of the stack buffer that RECV and SEND go through: room for notification structures
/// six times the size of today's.
const IOCTL_BUF_WORDS: usize = 64;
/// `_IOWR('f', 17, struct procmap_query)` (`<linux/fs.h>`, Linux 6.11 and later).
pub const PROCMAP_QUERY: u64 = 0xc068_6611;
/// `_IO(0xb7, 0x2)` (`<linux/nsfs.h>`): the parent of a pid namespace.
pub const NS_GET_PARENT: u64 = 0xb702;
/// `seccomp(2)` operation that reports the kernel's notification structure sizes.
const SECCOMP_GET_NOTIF_SIZES: libc::c_uint = 3;

/// `struct seccomp_data`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeccompData {
    pub nr: i32,
    pub arch: u32,
    pub instruction_pointer: u64,
    pub args: [u64; 6],
}

/// `struct seccomp_notif`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeccompNotif {
    pub id: u64,
    pub pid: u32,
    pub flags: u32,
    pub data: SeccompData,
}

/// `struct seccomp_notif_resp`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeccompNotifResp {
    pub id: u64,
    pub val: i64,
    pub error: i32,
    pub flags: u32,
}

/// `struct seccomp_notif_sizes`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct SeccompNotifSizes {
    seccomp_notif: u16,
    seccomp_notif_resp: u16,
    seccomp_data: u16,
}

/// The kernel's sizes of the notification structures, asked once. The kernel writes its own
/// `sizeof(struct seccomp_notif)` on RECV, which may one day exceed ours: receive buffers are
/// sized by this answer, never by ours alone.
fn notif_sizes() -> io::Result<(usize, usize)> {
    static SIZES: OnceLock<Result<(usize, usize), i32>> = OnceLock::new();
    let sizes = SIZES.get_or_init(|| {
        let mut sizes = SeccompNotifSizes::default();
        // SAFETY: SECCOMP_GET_NOTIF_SIZES writes exactly one `struct seccomp_notif_sizes` to the
        // pointer, which points at a live, properly aligned value of that layout.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                SECCOMP_GET_NOTIF_SIZES,
                0,
                &mut sizes as *mut SeccompNotifSizes,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EINVAL));
        }
        Ok((
            usize::from(sizes.seccomp_notif),
            usize::from(sizes.seccomp_notif_resp),
        ))
    });
    sizes.map_err(io::Error::from_raw_os_error)
}

/// A seccomp user-notification listener fd.
#[derive(Debug)]
pub struct NotifyFd(OwnedFd);

impl NotifyFd {
    pub fn new(fd: OwnedFd) -> Self {
        Self(fd)
    }

    /// Receives one notification. `ENOENT` means the notifying task was interrupted or is gone:
    /// normal, and the caller simply moves on.
    pub fn recv(&self) -> io::Result<SeccompNotif> {
        let (notif_size, _) = notif_sizes()?;
        // The kernel requires a zeroed buffer and writes `notif_size` bytes into it; a stack
        // buffer keeps the answer path free of allocations.
        let mut buf = [0u64; IOCTL_BUF_WORDS];
        let len = notif_size.max(std::mem::size_of::<SeccompNotif>());
        if len > std::mem::size_of_val(&buf) {
            return Err(io::Error::from_raw_os_error(libc::E2BIG));
        }
        // SAFETY: `buf` is a zeroed, 8-byte aligned buffer of at least the kernel's
        // `sizeof(struct seccomp_notif)` bytes (checked above), alive for the call.
        let rc = unsafe {
            libc::ioctl(
                self.0.as_raw_fd(),
                SECCOMP_IOCTL_NOTIF_RECV as _,
                buf.as_mut_ptr(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the buffer is at least `size_of::<SeccompNotif>()` bytes, 8-byte aligned, and
        // every bit pattern is a valid `SeccompNotif` (plain integers).
        Ok(unsafe { std::ptr::read(buf.as_ptr().cast::<SeccompNotif>()) })
    }

    /// Sends one answer. `ENOENT` means the task is gone or was interrupted: normal.
    pub fn send(&self, resp: &SeccompNotifResp) -> io::Result<()> {
        let (_, resp_size) = notif_sizes()?;
        let mut buf = [0u64; IOCTL_BUF_WORDS];
        let len = resp_size.max(std::mem::size_of::<SeccompNotifResp>());
        if len > std::mem::size_of_val(&buf) {
            return Err(io::Error::from_raw_os_error(libc::E2BIG));
        }
        // SAFETY: `buf` holds at least `size_of::<SeccompNotifResp>()` aligned bytes; we write
        // one plain-data value at its start.
        unsafe { std::ptr::write(buf.as_mut_ptr().cast::<SeccompNotifResp>(), *resp) };
        // SAFETY: `buf` is at least the kernel's `sizeof(struct seccomp_notif_resp)` (checked
        // above), zero beyond our structure, and alive for the call; the kernel only reads it.
        let rc = unsafe {
            libc::ioctl(
                self.0.as_raw_fd(),
                SECCOMP_IOCTL_NOTIF_SEND as _,
                buf.as_mut_ptr(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// True while notification `id` is still pending: the task has not died or been
    /// interrupted, so memory read from it since the notification arrived belongs to it.
    pub fn id_valid(&self, id: u64) -> bool {
        let mut id = id;
        // SAFETY: NOTIF_ID_VALID reads one `u64` from the pointer, which points at a live local.
        let rc = unsafe {
            libc::ioctl(
                self.0.as_raw_fd(),
                SECCOMP_IOCTL_NOTIF_ID_VALID as _,
                &mut id as *mut u64,
            )
        };
        rc == 0
    }

    /// Asks the kernel to wake this listener on the notifying task's CPU (Linux 6.6+): measured
    /// here it takes the round trip from ~50 µs to ~6 µs. Older kernels answer `EINVAL`/`ENOTTY`.
    pub fn set_sync_wakeup(&self) -> io::Result<()> {
        // SAFETY: SET_FLAGS takes the flags as the ioctl's value, not through a pointer; no
        // memory is passed.
        let rc = unsafe {
            libc::ioctl(
                self.0.as_raw_fd(),
                SECCOMP_IOCTL_NOTIF_SET_FLAGS as _,
                SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP as libc::c_ulong,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl AsRawFd for NotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl std::os::fd::AsFd for NotifyFd {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.0)
    }
}

/// A pidfd: a handle on one process that cannot come to mean another when its pid is reused.
#[derive(Debug)]
pub struct PidFd(OwnedFd);

impl PidFd {
    /// `pidfd_open(pid, 0)`.
    pub fn open(pid: u32) -> io::Result<Self> {
        // SAFETY: pidfd_open takes two integers and returns a new fd or -1; no memory is passed.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this new descriptor to us; nothing else owns it.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }))
    }

    /// Sends SIGKILL to the process.
    pub fn kill(&self) -> io::Result<()> {
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
struct ProcmapQuery {
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
pub fn pid_ns_parent(ns: &impl std::os::fd::AsFd) -> io::Result<OwnedFd> {
    // SAFETY: NS_GET_PARENT takes no argument and returns a new descriptor or -1.
    let fd = unsafe { libc::ioctl(ns.as_fd().as_raw_fd(), NS_GET_PARENT as _) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this new descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A shared mapping of a file as 64-bit atomic words: the slot file, which the keeper holds
/// and each worker maps, so that recording an in-flight notification costs no system call.
#[derive(Debug)]
pub struct SharedWords {
    ptr: std::ptr::NonNull<std::ffi::c_void>,
    words: usize,
}

// SAFETY: the mapping is only ever accessed through `AtomicU64`s, which may be shared and sent
// between threads; the pointer itself is never handed out mutably.
unsafe impl Send for SharedWords {}
// SAFETY: as above: every access is atomic.
unsafe impl Sync for SharedWords {}

impl SharedWords {
    /// Maps the first `words` 64-bit words of `file` (which must be at least that long),
    /// readable and writable, shared with every other process that maps it.
    pub fn map(file: &impl std::os::fd::AsFd, words: usize) -> io::Result<Self> {
        let len = std::num::NonZeroUsize::new(words * 8)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: a new shared mapping of the file, at an address the kernel chooses; nothing
        // else in this process refers to that range, and it is unmapped only on drop.
        let ptr = unsafe {
            nix::sys::mman::mmap(
                None,
                len,
                nix::sys::mman::ProtFlags::PROT_READ | nix::sys::mman::ProtFlags::PROT_WRITE,
                nix::sys::mman::MapFlags::MAP_SHARED,
                file,
                0,
            )
        }?;
        Ok(Self { ptr, words })
    }

    /// The words. Other processes may change them at any time: read and write them only
    /// atomically.
    pub fn words(&self) -> &[std::sync::atomic::AtomicU64] {
        // SAFETY: the mapping is `words * 8` bytes, page-aligned (so 8-byte aligned), lives as
        // long as `self`, and `AtomicU64` has the layout of `u64`; every access through the
        // slice is atomic, so concurrent writers (other threads, other processes) are sound.
        unsafe {
            std::slice::from_raw_parts(
                self.ptr.as_ptr().cast::<std::sync::atomic::AtomicU64>(),
                self.words,
            )
        }
    }
}

impl Drop for SharedWords {
    fn drop(&mut self) {
        // SAFETY: the range was mapped by `map` with this length, and no reference into it
        // outlives `self` (the slice borrows `self`).
        let _ = unsafe { nix::sys::mman::munmap(self.ptr, self.words * 8) };
    }
}

/// Takes ownership of a descriptor this process inherited, by number, from the process that
/// started it (the keeper passes the worker its channel and slot file this way; systemd passes
/// a listening socket as fd 3), and marks it close-on-exec.
///
/// Sound to call with any number: ownership is tracked by the close-on-exec flag. Every
/// descriptor this program opens has it (std and nix open with `O_CLOEXEC`, and
/// [`recv_with_fds`] asks for `MSG_CMSG_CLOEXEC`); the only exception, the keeper's `dup`s for a
/// worker to inherit, lives between the `dup` and the worker's start inside one function. So a
/// descriptor without the flag was inherited and not adopted yet; adopting sets the flag (under
/// a lock), and a second adoption of the same number fails with `EBUSY`.
pub fn adopt_inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    static ADOPTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = ADOPTING.lock().unwrap_or_else(|p| p.into_inner());
    if fd < 3 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: F_GETFD only queries the descriptor's flags; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::FD_CLOEXEC != 0 {
        // Opened by this program, or adopted already: it has an owner.
        return Err(io::Error::from_raw_os_error(libc::EBUSY));
    }
    // SAFETY: F_SETFD sets the descriptor's flags; no memory is passed.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor is open and had no close-on-exec flag, so (see above) it was
    // inherited and has no owner; the flag now set under the lock makes this its only owner.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Receives one message on a Unix socket and the descriptors sent with it (`SCM_RIGHTS`, at
/// most `N`; the kernel closes any beyond), each with exactly one owner and close-on-exec.
pub fn recv_with_fds<const N: usize>(
    sock: std::os::fd::BorrowedFd<'_>,
    buf: &mut [u8],
) -> Result<(usize, Vec<OwnedFd>), nix::errno::Errno> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut cmsg = nix::cmsg_space!([RawFd; N]);
    let mut iov = [io::IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            fds.extend(
                raw.into_iter()
                    .filter(|fd| *fd >= 0)
                    // SAFETY: the kernel installed these descriptors in this process for this
                    // message and nothing else has seen their numbers: each gets one owner.
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    Ok((msg.bytes, fds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::Command;

    #[test]
    fn structures_have_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<SeccompData>(), 64);
        assert_eq!(std::mem::size_of::<SeccompNotif>(), 80);
        assert_eq!(std::mem::size_of::<SeccompNotifResp>(), 24);
        let (notif, resp) = notif_sizes().expect("seccomp(SECCOMP_GET_NOTIF_SIZES)");
        assert!(notif >= 80 && resp >= 24, "kernel sizes {notif} {resp}");
    }

    /// Pins the ioctl numbers to the ones the C headers give, compiled here with the system's
    /// compiler; SET_FLAGS is newer than Debian 12's headers, so it is built from the same macro.
    #[test]
    fn ioctl_numbers_match_the_kernel_headers() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("n.c");
        let bin = dir.path().join("n");
        let mut f = std::fs::File::create(&src).unwrap();
        writeln!(
            f,
            r#"#include <stdio.h>
#include <sys/ioctl.h>
#include <linux/seccomp.h>
#include <linux/nsfs.h>
#include <linux/types.h>
struct procmap_query {{ __u64 size, query_flags, query_addr, vma_start, vma_end, vma_flags,
  vma_page_size, vma_offset, inode; __u32 dev_major, dev_minor, vma_name_size, build_id_size;
  __u64 vma_name_addr, build_id_addr; }};
int main(void) {{
  printf("%lx %lx %lx %lx %lx %zu %lx\n", (unsigned long)SECCOMP_IOCTL_NOTIF_RECV,
         (unsigned long)SECCOMP_IOCTL_NOTIF_SEND, (unsigned long)SECCOMP_IOCTL_NOTIF_ID_VALID,
         (unsigned long)SECCOMP_IOW(4, __u64),
         (unsigned long)_IOWR('f', 17, struct procmap_query), sizeof(struct procmap_query),
         (unsigned long)NS_GET_PARENT);
  return 0;
}}"#
        )
        .unwrap();
        let cc = Command::new("cc")
            .arg(&src)
            .arg("-o")
            .arg(&bin)
            .status()
            .expect("a C compiler (cc) is needed to pin the ioctl numbers");
        assert!(cc.success());
        let out = Command::new(&bin).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let expected = format!(
            "{:x} {:x} {:x} {:x} {:x} {} {:x}\n",
            SECCOMP_IOCTL_NOTIF_RECV,
            SECCOMP_IOCTL_NOTIF_SEND,
            SECCOMP_IOCTL_NOTIF_ID_VALID,
            SECCOMP_IOCTL_NOTIF_SET_FLAGS,
            PROCMAP_QUERY,
            std::mem::size_of::<ProcmapQuery>(),
            NS_GET_PARENT
        );
        assert_eq!(text, expected);
    }

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

    #[test]
    fn shared_words_are_shared_between_mappings() {
        let fd =
            nix::sys::memfd::memfd_create(c"t", nix::sys::memfd::MFdFlags::MFD_CLOEXEC).unwrap();
        nix::unistd::ftruncate(&fd, 4096).unwrap();
        let a = SharedWords::map(&fd, 512).unwrap();
        let b = SharedWords::map(&fd, 512).unwrap();
        a.words()[7].store(42, std::sync::atomic::Ordering::Release);
        assert_eq!(b.words()[7].load(std::sync::atomic::Ordering::Acquire), 42);
        assert_eq!(b.words().len(), 512);
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

    #[test]
    fn an_inherited_fd_is_adopted_once() {
        let file = std::fs::File::open("/dev/null").unwrap();
        // An inherited descriptor: a copy without close-on-exec, as a parent would pass it.
        // SAFETY: dup of a descriptor this test owns; the copy is adopted below.
        let raw = unsafe { libc::dup(file.as_raw_fd()) };
        assert!(raw >= 3);
        let owned = adopt_inherited_fd(raw).unwrap();
        let again = adopt_inherited_fd(raw).unwrap_err();
        assert_eq!(again.raw_os_error(), Some(libc::EBUSY));
        // A descriptor this program opened has an owner already.
        let err = adopt_inherited_fd(file.as_raw_fd()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBUSY));
        drop(owned);
    }

    #[test]
    fn descriptors_arrive_owned() {
        use nix::sys::socket::{
            sendmsg, socketpair, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType,
        };
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let null = std::fs::File::open("/dev/null").unwrap();
        let fds = [null.as_raw_fd()];
        sendmsg::<()>(
            a.as_raw_fd(),
            &[std::io::IoSlice::new(b"hi")],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        let mut buf = [0u8; 8];
        let (n, got) = recv_with_fds::<2>(std::os::fd::AsFd::as_fd(&b), &mut buf).unwrap();
        assert_eq!((n, &buf[..2]), (2, &b"hi"[..]));
        assert_eq!(got.len(), 1);
        assert!(nix::sys::stat::fstat(&got[0]).is_ok());
    }
}
