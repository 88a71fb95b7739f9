//! The worker's own system calls, confined to an allowlist (a `seccompiler` filter, as
//! firecracker confines its threads) once it is set up, before its first container: the
//! worker reads hostile bytes from every container, and whatever such bytes could make it do
//! is limited to what answering an exec takes.
//!
//! A call outside the list is refused with `EPERM` (`[hardening] syscall_filter = "refuse"`,
//! the default) or allowed and logged by the kernel's audit log (`"log"`): never a kill, which
//! would stall every guarded exec until the keeper had started another worker. The list was
//! made by running the whole integration suite in `"log"` mode and reading the kernel's log.

use crate::supervisor::error::ConfineError;
use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::config::SyscallFilter;

/// What the worker does, by system call: the answer path, the control socket, the event sink
/// and syslog, thread start and end, and what Rust's standard library and the allocator use.
const ALLOWED: &[i64] = &[
    // Files and procfs: the container's files, /proc/PID/*, the events file.
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_preadv2,
    libc::SYS_pwritev2,
    libc::SYS_openat,
    libc::SYS_openat2,
    libc::SYS_close,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_fstatfs,
    libc::SYS_statfs,
    libc::SYS_lseek,
    libc::SYS_readlinkat,
    libc::SYS_getdents64,
    libc::SYS_fcntl,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_ioctl,
    // Other processes: their memory, their pidfds (kill, stderr), their liveness.
    libc::SYS_process_vm_readv,
    libc::SYS_pidfd_open,
    libc::SYS_pidfd_getfd,
    libc::SYS_pidfd_send_signal,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_getppid,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    // Sockets: the keeper's channel, the control socket and metrics port (bound before the
    // filter), syslog (connected again after a send fails).
    libc::SYS_socket,
    libc::SYS_accept4,
    libc::SYS_connect,
    libc::SYS_sendto,
    libc::SYS_sendmsg,
    libc::SYS_recvfrom,
    libc::SYS_recvmsg,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_shutdown,
    // Waiting.
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_eventfd2,
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_nanosleep,
    libc::SYS_clock_nanosleep,
    libc::SYS_clock_gettime,
    libc::SYS_gettimeofday,
    // Memory.
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mprotect,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_brk,
    // Threads (one per notify fd) and signals.
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_sched_getaffinity,
    libc::SYS_prctl,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_restart_syscall,
    libc::SYS_getrandom,
    // A serving thread's involuntary context switches (cpugroup.rs: was a late answer
    // preempted?).
    libc::SYS_getrusage,
    libc::SYS_uname,
];

/// `kill(2)` only with `SIGHUP`: `execguard reload` through the control socket asks the
/// keeper to reload. Denied images are killed through their pidfd.
const RELOAD_SIGNAL: u64 = libc::SIGHUP.unsigned_abs() as u64;
/// `tgkill(2)` only within this process (`raise`, `abort`): with `CAP_KILL`, the worker could
/// otherwise signal any thread on the host.
/// `seccomp(2)` only for `SECCOMP_GET_NOTIF_SIZES` (the size of a notification, read per
/// notify fd).
const SECCOMP_GET_NOTIF_SIZES: u64 = 3;
/// `bpf(2)`'s command that writes one map entry (the exec checkpoint's approval for the exec
/// record's confirmation; the record itself is read from its mapping, without a call).
const BPF_MAP_UPDATE_ELEM: u64 = 2;

/// This machine's architecture, as seccompiler names it (the filter kills a call of another
/// ABI: a worker makes none).
#[cfg(target_arch = "x86_64")]
const TARGET: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const TARGET: TargetArch = TargetArch::aarch64;

/// The filter for `mode` (`None` for `Off`), for this process.
pub(crate) fn program(mode: SyscallFilter) -> Result<Option<BpfProgram>, ConfineError> {
    program_for(mode, std::process::id())
}

/// The filter for `mode`, for the process `pid`.
fn program_for(mode: SyscallFilter, pid: u32) -> Result<Option<BpfProgram>, ConfineError> {
    let mismatch = match mode {
        SyscallFilter::Off => return Ok(None),
        SyscallFilter::Refuse => SeccompAction::Errno(libc::EPERM.unsigned_abs()),
        SyscallFilter::Log => SeccompAction::Log,
    };
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        ALLOWED.iter().map(|nr| (*nr, Vec::new())).collect();
    let only = |arg: u8, value: u64| {
        SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)
            .and_then(|c| SeccompRule::new(vec![c]))
            .map_err(ConfineError::Build)
    };
    rules.insert(libc::SYS_seccomp, vec![only(0, SECCOMP_GET_NOTIF_SIZES)?]);
    rules.insert(libc::SYS_kill, vec![only(1, RELOAD_SIGNAL)?]);
    rules.insert(libc::SYS_tgkill, vec![only(0, u64::from(pid))?]);
    // The approvals map is written (the maps the worker was handed are its only descriptors
    // of BPF maps: no other command is allowed; the record is read from its mapping).
    rules.insert(libc::SYS_bpf, vec![only(0, BPF_MAP_UPDATE_ELEM)?]);
    let filter = SeccompFilter::new(rules, mismatch, SeccompAction::Allow, TARGET)
        .map_err(ConfineError::Build)?;
    BpfProgram::try_from(filter)
        .map(Some)
        .map_err(ConfineError::Build)
}

/// Confines every thread of this process (and every thread it starts later).
pub(crate) fn confine_worker(mode: SyscallFilter) -> Result<(), ConfineError> {
    match program(mode)? {
        Some(p) => seccompiler::apply_filter_all_threads(&p).map_err(ConfineError::Install),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The program the filter compiles to, run in a thread of its own: what the worker does
    /// passes, a call outside the list fails with EPERM instead of killing the process.
    #[test]
    fn outside_calls_are_refused_and_the_rest_works() {
        let program = program(SyscallFilter::Refuse).unwrap().unwrap();
        let result = std::thread::spawn(move || {
            // Per thread: this test's other threads are not confined.
            seccompiler::apply_filter(&program).unwrap();
            let pid = nix::unistd::getpid();
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok();
            // Calls that succeed for any process, unconfined.
            let sysinfo = nix::sys::sysinfo::sysinfo().map(|_| ());
            let session = nix::unistd::getsid(None).map(|_| ());
            // kill(2) only for SIGHUP (to the keeper): a liveness probe (signal 0) is refused.
            let probe = nix::sys::signal::kill(pid, None);
            let spawned = std::thread::spawn(|| 7).join().unwrap();
            (status, sysinfo, session, probe, spawned)
        })
        .join()
        .unwrap();
        assert_eq!(
            result,
            (
                true,
                Err(nix::errno::Errno::EPERM),
                Err(nix::errno::Errno::EPERM),
                Err(nix::errno::Errno::EPERM),
                7
            )
        );
    }

    /// `tgkill` reaches only the process the filter was made for: made for another pid, this
    /// process's own `raise` is refused (SIGWINCH: ignored by default, harmless when it passes).
    #[test]
    fn signals_to_threads_stay_within_the_process() {
        let own = program_for(SyscallFilter::Refuse, std::process::id())
            .unwrap()
            .unwrap();
        let other = program_for(SyscallFilter::Refuse, 1).unwrap().unwrap();
        let probe = |program: BpfProgram| {
            std::thread::spawn(move || {
                seccompiler::apply_filter(&program).unwrap();
                nix::sys::signal::raise(nix::sys::signal::Signal::SIGWINCH)
            })
            .join()
            .unwrap()
        };
        assert_eq!(probe(own), Ok(()));
        assert_eq!(probe(other), Err(nix::errno::Errno::EPERM));
    }

    #[test]
    fn off_installs_nothing() {
        assert!(program(SyscallFilter::Off).unwrap().is_none());
        assert!(program(SyscallFilter::Log).unwrap().is_some());
    }
}
