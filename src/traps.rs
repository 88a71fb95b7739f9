//! The system calls execguard traps, in one table: the spec patcher reads their names and
//! conditions to write the OCI profile, the supervisor reads their numbers to decode a
//! notification. A call added here is both trapped and understood.

use crate::vocab::{Abi, Syscall};

/// `SECCOMP_FILTER_FLAG_NEW_LISTENER`.
pub(crate) const NEW_LISTENER: u64 = 1 << 3;
/// `ARCH_SET_FS`.
pub(crate) const ARCH_SET_FS: u32 = 0x1002;

/// The audit architecture of x86_64 and x32 system calls.
pub(crate) const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// The audit architecture of 32-bit (`int 0x80`) system calls.
pub(crate) const AUDIT_ARCH_I386: u32 = 0x4000_0003;
/// Set in the number of an x32 system call (under `AUDIT_ARCH_X86_64`).
pub(crate) const X32_SYSCALL_BIT: i32 = 0x4000_0000;
/// The audit architecture of arm64 system calls.
pub(crate) const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;
/// The audit architecture of 32-bit ARM (EABI) system calls on an arm64 kernel.
pub(crate) const AUDIT_ARCH_ARM: u32 = 0x4000_0028;

/// One system call ABI of a kernel: its audit architecture and its name in an OCI profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KernelAbi {
    pub abi: Abi,
    pub audit_arch: u32,
    pub oci_name: &'static str,
}

/// The ABIs an x86_64 kernel runs: its own, 32-bit (`int 0x80`) and x32.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) const X86_64_ABIS: &[KernelAbi] = &[
    KernelAbi {
        abi: Abi::X86_64,
        audit_arch: AUDIT_ARCH_X86_64,
        oci_name: "SCMP_ARCH_X86_64",
    },
    KernelAbi {
        abi: Abi::I386,
        audit_arch: AUDIT_ARCH_I386,
        oci_name: "SCMP_ARCH_X86",
    },
    KernelAbi {
        abi: Abi::X32,
        audit_arch: AUDIT_ARCH_X86_64,
        oci_name: "SCMP_ARCH_X32",
    },
];

/// The ABIs an arm64 kernel runs: its own and, on CPUs that have it, 32-bit ARM.
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
pub(crate) const AARCH64_ABIS: &[KernelAbi] = &[
    KernelAbi {
        abi: Abi::Aarch64,
        audit_arch: AUDIT_ARCH_AARCH64,
        oci_name: "SCMP_ARCH_AARCH64",
    },
    KernelAbi {
        abi: Abi::Arm,
        audit_arch: AUDIT_ARCH_ARM,
        oci_name: "SCMP_ARCH_ARM",
    },
];

/// This machine's ABIs: the first is the native one.
#[cfg(target_arch = "x86_64")]
pub(crate) const ABIS: &[KernelAbi] = X86_64_ABIS;
#[cfg(target_arch = "aarch64")]
pub(crate) const ABIS: &[KernelAbi] = AARCH64_ABIS;

/// Whether every image of a glibc or musl loader reaches the image checkpoint: on x86_64 each
/// sets its thread pointer through a trapped call; on arm64 a glibc loader before 2.34 makes
/// no `set_tid_address` call, so the exec checkpoint must judge everything itself.
pub(crate) const IMAGE_CHECKPOINT_ALWAYS_FIRES: bool = cfg!(target_arch = "x86_64");

/// This machine's traps.
#[cfg(target_arch = "x86_64")]
pub(crate) const TRAPS: &[Trap] = X86_64_TRAPS;
#[cfg(target_arch = "aarch64")]
pub(crate) const TRAPS: &[Trap] = AARCH64_TRAPS;

/// A system call execguard traps with `SCMP_ACT_NOTIFY`, always or under a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Trap {
    pub syscall: Syscall,
    /// Its number in each ABI that has it (an x32 number without [`X32_SYSCALL_BIT`]).
    pub numbers: &'static [(Abi, i32)],
    /// Only when this holds; the complement keeps the profile's own action through a second
    /// rule (libseccomp lets an unconditional rule for a syscall silently override a
    /// conditional one, so both rules must be conditional).
    pub when: Option<Cond>,
    pub role: Role,
}

/// What a trap is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The exec checkpoint (`execve`, `execveat`): the profile is guarded only if at least one
    /// of these runs under it.
    Exec,
    /// The image checkpoint: a new image's first thread-pointer setup.
    Image,
    /// A second seccomp listener, which the kernel refuses; logged.
    Listener,
}

/// A condition on one system call argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cond {
    /// `args[index] & bit == bit`.
    BitSet { index: usize, bit: u64 },
    /// `args[index]`, read as the `int` the kernel reads it as (its low 32 bits, whatever the
    /// high ones hold), `== value`: `arch_prctl(0x1_0000_1002, ...)` sets FS too.
    IntEquals { index: usize, value: u32 },
}

impl Cond {
    /// Whether the arguments of a call satisfy the condition (as the filter compares them).
    pub(crate) fn holds(self, args: &[u64; 6]) -> bool {
        match self {
            Cond::BitSet { index, bit } => args[index] & bit == bit,
            Cond::IntEquals { index, value } => args[index] & 0xffff_ffff == u64::from(value),
        }
    }
}

const EXECVE: Trap = Trap {
    syscall: Syscall::Execve,
    numbers: &[],
    when: None,
    role: Role::Exec,
};
const EXECVEAT: Trap = Trap {
    syscall: Syscall::Execveat,
    ..EXECVE
};
const LISTENER: Trap = Trap {
    syscall: Syscall::Seccomp,
    numbers: &[],
    when: Some(Cond::BitSet {
        index: 1,
        bit: NEW_LISTENER,
    }),
    role: Role::Listener,
};

/// x86_64's traps: the execs; the second checkpoint, where a new image sets up its thread
/// pointer (x86_64 `arch_prctl(ARCH_SET_FS)`, 32-bit `set_thread_area`) after the exec and
/// before any of its code runs; and an attempt to install a second seccomp listener (which
/// the kernel refuses with EBUSY; the supervisor logs it).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) const X86_64_TRAPS: &[Trap] = &[
    Trap {
        numbers: &[(Abi::X86_64, 59), (Abi::I386, 11), (Abi::X32, 520)],
        ..EXECVE
    },
    Trap {
        numbers: &[(Abi::X86_64, 322), (Abi::I386, 358), (Abi::X32, 545)],
        ..EXECVEAT
    },
    Trap {
        syscall: Syscall::ArchPrctl,
        numbers: &[(Abi::X86_64, 158), (Abi::I386, 384), (Abi::X32, 158)],
        when: Some(Cond::IntEquals {
            index: 0,
            value: ARCH_SET_FS,
        }),
        role: Role::Image,
    },
    Trap {
        syscall: Syscall::SetThreadArea,
        numbers: &[(Abi::X86_64, 205), (Abi::I386, 243)],
        when: None,
        role: Role::Image,
    },
    Trap {
        numbers: &[(Abi::X86_64, 317), (Abi::I386, 354), (Abi::X32, 317)],
        ..LISTENER
    },
];

/// arm64's traps. Its thread pointer is set by an instruction (`msr tpidr_el0`), so the image
/// checkpoint is the call that follows it: `set_tid_address`, which glibc 2.34 and later
/// (`__tls_init_tp`) and musl (`__init_tp`) make in the loader, before any program code.
/// glibc before 2.34 and Go programs make no such call; on arm64 the exec checkpoint is
/// therefore on by default (`[detect] exec_checkpoint`), and the exec record confirms that
/// what the exec checkpoint judged is what runs.
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
pub(crate) const AARCH64_TRAPS: &[Trap] = &[
    Trap {
        numbers: &[(Abi::Aarch64, 221), (Abi::Arm, 11)],
        ..EXECVE
    },
    Trap {
        numbers: &[(Abi::Aarch64, 281), (Abi::Arm, 387)],
        ..EXECVEAT
    },
    Trap {
        syscall: Syscall::SetTidAddress,
        numbers: &[(Abi::Aarch64, 96), (Abi::Arm, 256)],
        when: None,
        role: Role::Image,
    },
    Trap {
        numbers: &[(Abi::Aarch64, 277), (Abi::Arm, 383)],
        ..LISTENER
    },
];

impl Trap {
    /// The trap for a system call, by its name in an OCI profile.
    pub(crate) fn named(name: &str) -> Option<&'static Trap> {
        TRAPS.iter().find(|t| t.syscall.as_str() == name)
    }

    fn number(&self, abi: Abi) -> Option<i32> {
        self.numbers
            .iter()
            .find(|(a, _)| *a == abi)
            .map(|(_, n)| *n)
    }
}

/// The low 32 bits of a system call argument, as the `int` the kernel reads from it.
pub(crate) fn low_i32(arg: u64) -> i32 {
    let [a, b, c, d, ..] = arg.to_le_bytes();
    i32::from_le_bytes([a, b, c, d])
}

/// The ABI of a call under an audit architecture, and its number within that ABI.
fn abi_of(arch: u32, nr: i32) -> Option<(Abi, i32)> {
    match arch {
        AUDIT_ARCH_X86_64 if nr & X32_SYSCALL_BIT != 0 => Some((Abi::X32, nr & !X32_SYSCALL_BIT)),
        AUDIT_ARCH_X86_64 => Some((Abi::X86_64, nr)),
        AUDIT_ARCH_I386 => Some((Abi::I386, nr)),
        AUDIT_ARCH_AARCH64 => Some((Abi::Aarch64, nr)),
        AUDIT_ARCH_ARM => Some((Abi::Arm, nr)),
        _ => None,
    }
}

/// A trapped call, from the audit architecture, number and arguments a notification (or
/// `/proc/TID/syscall`) gives: the trap and the ABI, when the call is one execguard traps and
/// its condition holds. Arguments of 32-bit and x32 calls are compared on their low 32 bits,
/// as libseccomp compares them for those architectures.
pub(crate) fn lookup(arch: u32, nr: i32, args: &[u64; 6]) -> Option<(&'static Trap, Abi)> {
    lookup_in(TRAPS, arch, nr, args)
}

fn lookup_in(
    traps: &'static [Trap],
    arch: u32,
    nr: i32,
    args: &[u64; 6],
) -> Option<(&'static Trap, Abi)> {
    let (abi, nr) = abi_of(arch, nr)?;
    let trap = traps.iter().find(|t| t.number(abi) == Some(nr))?;
    let args = if abi.pointer_size() == 8 {
        *args
    } else {
        args.map(|a| a & 0xffff_ffff)
    };
    match trap.when {
        Some(cond) if !cond.holds(&args) => None,
        _ => Some((trap, abi)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both tables with their kernels' ABIs, whatever this machine is: the arm64 table is
    /// checked on an x86_64 host too.
    const PLATFORMS: [(&[Trap], &[KernelAbi]); 2] =
        [(X86_64_TRAPS, X86_64_ABIS), (AARCH64_TRAPS, AARCH64_ABIS)];

    fn x32_bit(abi: Abi) -> i32 {
        if abi == Abi::X32 {
            X32_SYSCALL_BIT
        } else {
            0
        }
    }

    #[test]
    fn every_trap_is_found_by_each_of_its_numbers() {
        for (traps, abis) in PLATFORMS {
            for t in traps {
                let mut args = [0u64; 6];
                if let Some(c) = t.when {
                    match c {
                        Cond::BitSet { index, bit } => args[index] = bit,
                        Cond::IntEquals { index, value } => args[index] = u64::from(value),
                    }
                }
                for k in abis {
                    let Some(nr) = t.number(k.abi) else { continue };
                    let nr = nr | x32_bit(k.abi);
                    let found =
                        lookup_in(traps, k.audit_arch, nr, &args).map(|(t, a)| (t.syscall, a));
                    assert_eq!(found, Some((t.syscall, k.abi)), "{t:?}");
                    if t.when.is_some() {
                        assert_eq!(lookup_in(traps, k.audit_arch, nr, &[0; 6]), None, "{t:?}");
                    }
                }
                // Every number belongs to one of the platform's ABIs.
                for (abi, _) in t.numbers {
                    assert!(abis.iter().any(|k| k.abi == *abi), "{t:?}");
                }
            }
        }
        // The kernel reads arch_prctl's option as an int: high bits do not hide ARCH_SET_FS.
        let high = [0x1_0000_0000 | u64::from(ARCH_SET_FS), 0, 0, 0, 0, 0];
        let x86 = |arch, nr, args: &[u64; 6]| lookup_in(X86_64_TRAPS, arch, nr, args);
        assert!(x86(AUDIT_ARCH_X86_64, 158, &high).is_some());
        assert!(x86(
            AUDIT_ARCH_X86_64,
            158,
            &[0xffff_ffff_0000_1002, 0, 0, 0, 0, 0]
        )
        .is_some());
        assert!(x86(AUDIT_ARCH_X86_64, 158, &[0x1_0000_1001, 0, 0, 0, 0, 0]).is_none());
        // An x86_64 number under the i386 architecture is another call, and so is one under
        // an architecture the platform does not run.
        assert_eq!(x86(AUDIT_ARCH_I386, 59, &[0; 6]), None);
        assert_eq!(x86(AUDIT_ARCH_ARM, 11, &[0; 6]), None);
        assert_eq!(x86(AUDIT_ARCH_AARCH64, 221, &[0; 6]), None);
        let arm64 =
            |arch, nr| lookup_in(AARCH64_TRAPS, arch, nr, &[0; 6]).map(|(t, a)| (t.syscall, a));
        assert_eq!(
            arm64(AUDIT_ARCH_AARCH64, 221),
            Some((Syscall::Execve, Abi::Aarch64))
        );
        assert_eq!(arm64(AUDIT_ARCH_ARM, 11), Some((Syscall::Execve, Abi::Arm)));
        assert_eq!(
            arm64(AUDIT_ARCH_AARCH64, 96),
            Some((Syscall::SetTidAddress, Abi::Aarch64))
        );
        // arm64 has no arch_prctl: x86_64's number is another call there (getgroups), not
        // trapped.
        assert_eq!(arm64(AUDIT_ARCH_AARCH64, 158), None);
        assert_eq!(arm64(AUDIT_ARCH_X86_64, 59), None);
    }

    /// No number names two trapped calls of one ABI, and the native and compat numbers of
    /// trapped calls do not overlap (`/proc/TID/syscall` shows a number without its ABI).
    #[test]
    fn numbers_are_unambiguous() {
        for (traps, abis) in PLATFORMS {
            let numbers =
                |abi: Abi| -> Vec<i32> { traps.iter().filter_map(|t| t.number(abi)).collect() };
            let native = numbers(abis[0].abi);
            for (i, n) in native.iter().enumerate() {
                assert!(!native[i + 1..].contains(n));
            }
            for k in &abis[1..] {
                if k.audit_arch != abis[0].audit_arch {
                    for n in numbers(k.abi) {
                        assert!(!native.contains(&n), "{n} is trapped in both ABIs");
                    }
                }
            }
        }
    }
}
