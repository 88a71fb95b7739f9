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

/// A system call execguard traps with `SCMP_ACT_NOTIFY`, always or under a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Trap {
    pub syscall: Syscall,
    /// Its numbers: x86_64, i386 and x32 (without [`X32_SYSCALL_BIT`]); `None` where the ABI
    /// has no such call.
    pub numbers: [Option<i32>; 3],
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

/// Every trap: the execs; the second checkpoint, where a new image sets up its thread
/// pointer (x86_64 `arch_prctl(ARCH_SET_FS)`, 32-bit `set_thread_area`) after the exec and
/// before any of its code runs; and an attempt to install a second seccomp listener (which
/// the kernel refuses with EBUSY; the supervisor logs it).
pub(crate) const TRAPS: &[Trap] = &[
    Trap {
        syscall: Syscall::Execve,
        numbers: [Some(59), Some(11), Some(520)],
        when: None,
        role: Role::Exec,
    },
    Trap {
        syscall: Syscall::Execveat,
        numbers: [Some(322), Some(358), Some(545)],
        when: None,
        role: Role::Exec,
    },
    Trap {
        syscall: Syscall::ArchPrctl,
        numbers: [Some(158), Some(384), Some(158)],
        when: Some(Cond::IntEquals {
            index: 0,
            value: ARCH_SET_FS,
        }),
        role: Role::Image,
    },
    Trap {
        syscall: Syscall::SetThreadArea,
        numbers: [Some(205), Some(243), None],
        when: None,
        role: Role::Image,
    },
    Trap {
        syscall: Syscall::Seccomp,
        numbers: [Some(317), Some(354), Some(317)],
        when: Some(Cond::BitSet {
            index: 1,
            bit: NEW_LISTENER,
        }),
        role: Role::Listener,
    },
];

impl Trap {
    /// The trap for a system call, by its name in an OCI profile.
    pub(crate) fn named(name: &str) -> Option<&'static Trap> {
        TRAPS.iter().find(|t| t.syscall.as_str() == name)
    }

    fn number(&self, abi: Abi) -> Option<i32> {
        match abi {
            Abi::X86_64 => self.numbers[0],
            Abi::I386 => self.numbers[1],
            Abi::X32 => self.numbers[2],
        }
    }
}

/// The low 32 bits of a system call argument, as the `int` the kernel reads from it.
pub(crate) fn low_i32(arg: u64) -> i32 {
    let [a, b, c, d, ..] = arg.to_le_bytes();
    i32::from_le_bytes([a, b, c, d])
}

/// A trapped call, from the audit architecture, number and arguments a notification (or
/// `/proc/TID/syscall`) gives: the trap and the ABI, when the call is one execguard traps and
/// its condition holds. Arguments of i386 and x32 calls are compared on their low 32 bits, as
/// libseccomp compares them for those architectures.
pub(crate) fn lookup(arch: u32, nr: i32, args: &[u64; 6]) -> Option<(&'static Trap, Abi)> {
    let (abi, nr) = match arch {
        AUDIT_ARCH_X86_64 if nr & X32_SYSCALL_BIT != 0 => (Abi::X32, nr & !X32_SYSCALL_BIT),
        AUDIT_ARCH_X86_64 => (Abi::X86_64, nr),
        AUDIT_ARCH_I386 => (Abi::I386, nr),
        _ => return None,
    };
    let trap = TRAPS.iter().find(|t| t.number(abi) == Some(nr))?;
    let args = if abi != Abi::X86_64 {
        args.map(|a| a & 0xffff_ffff)
    } else {
        *args
    };
    match trap.when {
        Some(cond) if !cond.holds(&args) => None,
        _ => Some((trap, abi)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_trap_is_found_by_each_of_its_numbers() {
        for t in TRAPS {
            let mut args = [0u64; 6];
            if let Some(c) = t.when {
                match c {
                    Cond::BitSet { index, bit } => args[index] = bit,
                    Cond::IntEquals { index, value } => args[index] = u64::from(value),
                }
            }
            for (abi, arch, bit) in [
                (Abi::X86_64, AUDIT_ARCH_X86_64, 0),
                (Abi::I386, AUDIT_ARCH_I386, 0),
                (Abi::X32, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT),
            ] {
                if let Some(nr) = t.number(abi) {
                    let found = lookup(arch, nr | bit, &args).map(|(t, a)| (t.syscall, a));
                    assert_eq!(found, Some((t.syscall, abi)), "{t:?}");
                    if t.when.is_some() {
                        assert_eq!(lookup(arch, nr | bit, &[0; 6]), None, "{t:?}");
                    }
                }
            }
        }
        // The kernel reads arch_prctl's option as an int: high bits do not hide ARCH_SET_FS.
        let high = [0x1_0000_0000 | u64::from(ARCH_SET_FS), 0, 0, 0, 0, 0];
        assert!(lookup(AUDIT_ARCH_X86_64, 158, &high).is_some());
        assert!(lookup(
            AUDIT_ARCH_X86_64,
            158,
            &[0xffff_ffff_0000_1002, 0, 0, 0, 0, 0]
        )
        .is_some());
        assert!(lookup(AUDIT_ARCH_X86_64, 158, &[0x1_0000_1001, 0, 0, 0, 0, 0]).is_none());
        // An x86_64 number under the i386 architecture is another call.
        assert_eq!(lookup(AUDIT_ARCH_I386, 59, &[0; 6]), None);
        assert_eq!(lookup(0x4000_0028, 59, &[0; 6]), None);
    }

    /// No number names two trapped calls of one ABI, and x86_64 and i386 numbers of trapped
    /// calls do not overlap (`/proc/TID/syscall` shows a number without its ABI).
    #[test]
    fn numbers_are_unambiguous() {
        let x86_64: Vec<i32> = TRAPS.iter().filter_map(|t| t.numbers[0]).collect();
        let i386: Vec<i32> = TRAPS.iter().filter_map(|t| t.numbers[1]).collect();
        for (i, n) in x86_64.iter().enumerate() {
            assert!(!x86_64[i + 1..].contains(n));
            assert!(!i386.contains(n), "{n} is trapped in both ABIs");
        }
    }
}
