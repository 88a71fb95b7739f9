//! Reading an exec's path, argv and environment out of the notifying task's memory. Every read
//! is bounded and followed by a `NOTIF_ID_VALID` check before its bytes are used: if the task
//! died and its pid was reused, the bytes would be another process's.

use std::io::IoSliceMut;

use nix::errno::Errno;
use nix::sys::uio::{process_vm_readv, RemoteIoVec};
use nix::unistd::Pid;

use super::source::NotifySource;
use crate::inspect::loader_args::LoaderEnv;
use crate::inspect::resolve::PATH_MAX;
use crate::inspect::{Argv, ExecArgs, ExecRequest, InspectError};
use crate::sys::SeccompNotif;
use crate::traps::{self, Role};
use crate::vocab::{Abi, Syscall};

/// Arguments read for inspection and the event; a loader's options come first, so this is far
/// more than any real invocation needs. When argv is longer, it is marked truncated.
pub(crate) const MAX_ARGV_ITEMS: usize = 128;
/// Bytes read of each argument.
pub(crate) const MAX_ARG_BYTES: usize = 4096;
/// Environment entries scanned for `LD_TRACE_LOADED_OBJECTS` and `LD_AUDIT`.
pub(crate) const MAX_ENV_ITEMS: usize = 4096;
const PAGE: usize = 4096;

/// Bytes from `at` to the end of its page (1 to `PAGE`): a read that stays within one page
/// cannot fail half-way on an unmapped neighbour.
fn to_page_end(at: u64) -> usize {
    let into_page = at % PAGE as u64;
    PAGE - usize::try_from(into_page).unwrap_or(0)
}

/// What a notification is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Trapped {
    /// An exec, with the addresses of its path, argv and envp.
    Exec { req: ExecRequest, addrs: Addresses },
    /// `seccomp(…, SECCOMP_FILTER_FLAG_NEW_LISTENER, …)`.
    ListenerAttempt { abi: Abi },
    /// A new image sets up its thread pointer (`arch_prctl(ARCH_SET_FS)`, `set_thread_area`;
    /// on arm64 the `set_tid_address` that follows it): the second checkpoint, after the exec and before any of the image's own code runs.
    Checkpoint { abi: Abi, syscall: Syscall },
}

/// Where an exec's path, argv and envp are in the task's memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Addresses {
    pub path: u64,
    pub argv: u64,
    pub envp: u64,
}

/// Decodes a notification; `None` for a system call the filter does not trap.
pub(crate) fn decode(notif: &SeccompNotif) -> Option<Trapped> {
    let d = &notif.data;
    let (trap, abi) = traps::lookup(d.arch, d.nr, &d.args)?;
    let syscall = trap.syscall;
    match trap.role {
        Role::Listener => return Some(Trapped::ListenerAttempt { abi }),
        Role::Image => return Some(Trapped::Checkpoint { abi, syscall }),
        Role::Exec => {}
    }
    // Arguments of 32-bit system calls are 32 bits wide; the dirfd is a signed int.
    let arg = |i: usize| -> u64 {
        if abi.pointer_size() == 8 {
            d.args[i]
        } else {
            d.args[i] & 0xffff_ffff
        }
    };
    let low_int = |i: usize| traps::low_i32(d.args[i]);
    let (dirfd, path, argv, envp, flags) = match syscall {
        Syscall::Execveat => {
            let fd = low_int(0);
            let dirfd = (fd != libc::AT_FDCWD).then_some(fd);
            (dirfd, arg(1), arg(2), arg(3), low_int(4))
        }
        _ => (None, arg(0), arg(1), arg(2), 0),
    };
    let req = ExecRequest {
        syscall,
        abi,
        path: Vec::new(),
        dirfd,
        flags,
    };
    Some(Trapped::Exec {
        req,
        addrs: Addresses { path, argv, envp },
    })
}

/// The audit architecture under which `nr` (with these arguments) is a call execguard traps.
/// The numbers of the trapped calls of the two ABIs do not overlap (a test in
/// [`crate::traps`] holds this), so a task's current call as `/proc/TID/syscall` shows it (a
/// number, no ABI) names one at most.
pub(crate) fn trapped_arch(nr: i32, args: [u64; 6]) -> Option<u32> {
    traps::ABIS
        .iter()
        .map(|k| k.audit_arch)
        .find(|arch| traps::lookup(*arch, nr, &args).is_some())
}

/// The notifying task's memory, for one notification.
pub(crate) struct Target<'a> {
    pub notify: &'a dyn NotifySource,
    pub id: u64,
    pub pid: Pid,
    pub abi: Abi,
    pub argv_addr: u64,
    pub envp_addr: u64,
    argv: Option<Argv>,
}

impl<'a> Target<'a> {
    pub(crate) fn new(
        notify: &'a dyn NotifySource,
        notif: &SeccompNotif,
        abi: Abi,
        argv: u64,
        envp: u64,
    ) -> Self {
        Self {
            notify,
            id: notif.id,
            // Pids are below PID_MAX_LIMIT (2^22); one that is not names no process.
            pid: Pid::from_raw(i32::try_from(notif.pid).unwrap_or(i32::MAX)),
            abi,
            argv_addr: argv,
            envp_addr: envp,
            argv: None,
        }
    }

    /// Fails with [`InspectError::Gone`] once the notification is no longer pending.
    pub(crate) fn check_valid(&self) -> Result<(), InspectError> {
        if self.notify.id_valid(self.id) {
            Ok(())
        } else {
            Err(InspectError::Gone)
        }
    }

    /// Reads the exec path (at most `PATH_MAX` bytes, as the kernel allows).
    /// The caller checks the notification's validity before using the bytes (one check after
    /// this read and the opening of `/proc/TID` covers both).
    pub(crate) fn read_path(&self, addr: u64) -> Result<Vec<u8>, InspectError> {
        let (bytes, complete) = self.read_cstr(addr, PATH_MAX, "path")?;
        if !complete {
            return Err(InspectError::Resolve {
                errno: Errno::ENAMETOOLONG,
            });
        }
        Ok(bytes)
    }

    /// Reads a NUL-terminated string of at most `max` bytes; the flag says whether the NUL was
    /// found within them.
    fn read_cstr(
        &self,
        addr: u64,
        max: usize,
        what: &'static str,
    ) -> Result<(Vec<u8>, bool), InspectError> {
        let mut out = Vec::new();
        let mut at = addr;
        while out.len() < max {
            let want = to_page_end(at).min(max - out.len());
            let start = out.len();
            out.resize(start + want, 0);
            self.read_exact(at, &mut out[start..], what)?;
            if let Some(nul) = out[start..].iter().position(|b| *b == 0) {
                out.truncate(start + nul);
                return Ok((out, true));
            }
            at = at
                .checked_add(want as u64)
                .ok_or(InspectError::ReadTarget {
                    what,
                    errno: Errno::EFAULT,
                })?;
        }
        Ok((out, false))
    }

    /// Reads a NULL-terminated pointer array of at most `max` entries; the flag says whether
    /// the NULL was found.
    fn read_ptr_array(
        &self,
        addr: u64,
        max: usize,
        what: &'static str,
    ) -> Result<(Vec<u64>, bool), InspectError> {
        let size = self.abi.pointer_size();
        let mut out = Vec::new();
        if addr == 0 {
            return Ok((out, true));
        }
        let mut at = addr;
        let mut buf = vec![0u8; PAGE];
        while out.len() < max {
            let want = (to_page_end(at) / size).clamp(1, max - out.len()) * size;
            self.read_exact(at, &mut buf[..want], what)?;
            for chunk in buf[..want].chunks_exact(size) {
                let p = self.abi.word(chunk);
                if p == 0 {
                    return Ok((out, true));
                }
                out.push(p);
            }
            at = at
                .checked_add(want as u64)
                .ok_or(InspectError::ReadTarget {
                    what,
                    errno: Errno::EFAULT,
                })?;
        }
        Ok((out, false))
    }

    fn read_exact(
        &self,
        addr: u64,
        buf: &mut [u8],
        what: &'static str,
    ) -> Result<(), InspectError> {
        let len = buf.len();
        let base = usize::try_from(addr).map_err(|_| InspectError::ReadTarget {
            what,
            errno: Errno::EFAULT,
        })?;
        let remote = [RemoteIoVec { base, len }];
        match process_vm_readv(self.pid, &mut [IoSliceMut::new(buf)], &remote) {
            Ok(n) if n == len => Ok(()),
            Ok(_) => Err(InspectError::ReadTarget {
                what,
                errno: Errno::EFAULT,
            }),
            Err(Errno::ESRCH) => Err(InspectError::Gone),
            Err(errno) => Err(InspectError::ReadTarget { what, errno }),
        }
    }
}

impl ExecArgs for Target<'_> {
    fn argv(&mut self) -> Result<Argv, InspectError> {
        if let Some(a) = &self.argv {
            return Ok(a.clone());
        }
        let (ptrs, complete) = self.read_ptr_array(self.argv_addr, MAX_ARGV_ITEMS, "argv")?;
        let mut argv = Argv {
            items: Vec::with_capacity(ptrs.len()),
            truncated: !complete,
        };
        for p in ptrs {
            let (s, whole) = self.read_cstr(p, MAX_ARG_BYTES, "argv")?;
            argv.truncated |= !whole;
            argv.items.push(s);
        }
        self.check_valid()?;
        self.argv = Some(argv.clone());
        Ok(argv)
    }

    fn loader_env(&mut self) -> Result<LoaderEnv, InspectError> {
        let (ptrs, complete) = self.read_ptr_array(self.envp_addr, MAX_ENV_ITEMS, "envp")?;
        let mut env = LoaderEnv::default();
        if !complete {
            env.note_cut();
        }
        for p in ptrs {
            let (s, _) = self.read_cstr(p, LoaderEnv::ENTRY_PREFIX_BYTES, "envp")?;
            env.note(&s);
        }
        self.check_valid()?;
        Ok(env)
    }
}

// x86_64's numbers (traps.rs checks arm64's table on any host).
#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::sys::SeccompData;
    use crate::traps::{AUDIT_ARCH_I386, AUDIT_ARCH_X86_64};

    fn notif(arch: u32, nr: i32, args: [u64; 6]) -> SeccompNotif {
        SeccompNotif {
            id: 1,
            pid: 1,
            flags: 0,
            data: SeccompData {
                nr,
                arch,
                instruction_pointer: 0,
                args,
            },
        }
    }

    fn exec(n: SeccompNotif) -> (ExecRequest, u64, u64, u64) {
        match decode(&n) {
            Some(Trapped::Exec {
                req,
                addrs: Addresses { path, argv, envp },
            }) => (req, path, argv, envp),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn decodes_every_exec_abi() {
        let (r, p, a, e) = exec(notif(AUDIT_ARCH_X86_64, 59, [1, 2, 3, 0, 0, 0]));
        assert_eq!(
            (r.syscall, r.abi, r.dirfd, p, a, e),
            (Syscall::Execve, Abi::X86_64, None, 1, 2, 3)
        );
        let at_fdcwd = u64::from(u32::from_ne_bytes(libc::AT_FDCWD.to_ne_bytes()));
        let (r, ..) = exec(notif(
            AUDIT_ARCH_X86_64,
            322,
            [at_fdcwd, 2, 3, 4, 0x1000, 0],
        ));
        assert_eq!((r.dirfd, r.flags), (None, libc::AT_EMPTY_PATH));
        let (r, ..) = exec(notif(AUDIT_ARCH_X86_64, 322, [5, 2, 3, 4, 0, 0]));
        assert_eq!(r.dirfd, Some(5));
        // 32-bit: upper halves are ignored, AT_FDCWD is sign-extended from 32 bits.
        let (r, p, ..) = exec(notif(
            AUDIT_ARCH_I386,
            11,
            [0xdead_0000_1000, 2, 3, 0, 0, 0],
        ));
        assert_eq!((r.abi, p), (Abi::I386, 0x1000));
        let (r, ..) = exec(notif(AUDIT_ARCH_I386, 358, [0xffff_ff9c, 2, 3, 4, 0, 0]));
        assert_eq!(r.dirfd, None);
        let (r, ..) = exec(notif(AUDIT_ARCH_X86_64, 0x4000_0000 | 520, [0; 6]));
        assert_eq!(r.abi, Abi::X32);
        assert!(decode(&notif(AUDIT_ARCH_X86_64, 0, [0; 6])).is_none());
    }

    #[test]
    fn decodes_checkpoints() {
        let set_fs = u64::from(traps::ARCH_SET_FS);
        assert_eq!(
            decode(&notif(AUDIT_ARCH_X86_64, 158, [set_fs, 0, 0, 0, 0, 0])),
            Some(Trapped::Checkpoint {
                abi: Abi::X86_64,
                syscall: Syscall::ArchPrctl
            })
        );
        // ARCH_GET_FS is not the checkpoint.
        assert!(decode(&notif(AUDIT_ARCH_X86_64, 158, [0x1003, 0, 0, 0, 0, 0])).is_none());
        assert_eq!(
            decode(&notif(AUDIT_ARCH_I386, 243, [0; 6])),
            Some(Trapped::Checkpoint {
                abi: Abi::I386,
                syscall: Syscall::SetThreadArea
            })
        );
    }

    #[test]
    fn trapped_calls_name_their_abi() {
        let set_fs = u64::from(traps::ARCH_SET_FS);
        assert_eq!(
            trapped_arch(158, [set_fs, 0, 0, 0, 0, 0]),
            Some(AUDIT_ARCH_X86_64)
        );
        // arch_prctl(ARCH_GET_FS) is not trapped.
        assert_eq!(trapped_arch(158, [0x1003, 0, 0, 0, 0, 0]), None);
        assert_eq!(trapped_arch(243, [0; 6]), Some(AUDIT_ARCH_I386));
        assert_eq!(trapped_arch(59, [0; 6]), Some(AUDIT_ARCH_X86_64));
        assert_eq!(trapped_arch(11, [0; 6]), Some(AUDIT_ARCH_I386));
        assert_eq!(trapped_arch(0, [0; 6]), None);
    }

    #[test]
    fn decodes_listener_attempts() {
        for (arch, nr, abi) in [
            (AUDIT_ARCH_X86_64, 317, Abi::X86_64),
            (AUDIT_ARCH_I386, 354, Abi::I386),
        ] {
            assert_eq!(
                decode(&notif(arch, nr, [1, 8, 0, 0, 0, 0])),
                Some(Trapped::ListenerAttempt { abi })
            );
        }
    }
}
