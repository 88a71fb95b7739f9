//! In-flight notifications, kept where a worker's death cannot lose them: a memfd that the
//! keeper holds and hands to every worker. Each notify fd has a slot; a worker writes the
//! notification there right after receiving it and clears it after answering. A new worker
//! answers what a dead one left in its slots (the tasks are still waiting in the kernel).

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;

use crate::sys::{SeccompData, SeccompNotif};

/// Bytes per slot: a state word and one `struct seccomp_notif`.
const SLOT_BYTES: u64 = 128;
/// Notify fds (container starts and `runc exec`s) one keeper can hold at once.
pub const MAX_SLOTS: usize = 4096;

/// Where a notification is in its handling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotState {
    Empty = 0,
    /// Received, not answered.
    Received = 1,
    /// Received, its event written, not answered.
    EventWritten = 2,
}

/// The slot file.
pub struct Slots {
    file: File,
}

impl Slots {
    /// A new, empty slot file.
    pub fn create() -> std::io::Result<Self> {
        let fd = nix::sys::memfd::memfd_create(
            c"execguard-slots",
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
        )?;
        let file = File::from(fd);
        file.set_len(SLOT_BYTES * MAX_SLOTS as u64)?;
        Ok(Self { file })
    }

    /// The slot file a keeper handed over.
    pub fn from_fd(fd: OwnedFd) -> Self {
        Self {
            file: File::from(fd),
        }
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    fn offset(index: usize) -> u64 {
        index as u64 * SLOT_BYTES
    }

    /// Records a notification as received (or its event as written).
    pub fn record(&self, index: usize, state: SlotState, n: &SeccompNotif) {
        if index >= MAX_SLOTS {
            return;
        }
        let mut buf = [0u8; SLOT_BYTES as usize];
        buf[..8].copy_from_slice(&(state as u64).to_le_bytes());
        buf[8..16].copy_from_slice(&n.id.to_le_bytes());
        buf[16..20].copy_from_slice(&n.pid.to_le_bytes());
        buf[20..24].copy_from_slice(&n.flags.to_le_bytes());
        buf[24..28].copy_from_slice(&n.data.nr.to_le_bytes());
        buf[28..32].copy_from_slice(&n.data.arch.to_le_bytes());
        buf[32..40].copy_from_slice(&n.data.instruction_pointer.to_le_bytes());
        for (i, a) in n.data.args.iter().enumerate() {
            buf[40 + 8 * i..48 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        if let Err(e) = self.file.write_all_at(&buf, Self::offset(index)) {
            tracing::warn!(slot = index, error = %e, "cannot record an in-flight notification");
        }
    }

    /// Marks the slot answered.
    pub fn clear(&self, index: usize) {
        if index < MAX_SLOTS {
            let _ = self.file.write_all_at(&[0u8; 8], Self::offset(index));
        }
    }

    /// What the slot holds: the last notification recorded there (its state `Empty` once it
    /// was answered: its id still tells a new worker where to look for unrecorded ones).
    pub fn read(&self, index: usize) -> Option<(SlotState, SeccompNotif)> {
        if index >= MAX_SLOTS {
            return None;
        }
        let mut buf = [0u8; SLOT_BYTES as usize];
        self.file
            .read_exact_at(&mut buf, Self::offset(index))
            .ok()?;
        let u64_at = |o: usize| u64::from_le_bytes(buf[o..o + 8].try_into().unwrap_or_default());
        let u32_at = |o: usize| u32::from_le_bytes(buf[o..o + 4].try_into().unwrap_or_default());
        let state = match u64_at(0) {
            1 => SlotState::Received,
            2 => SlotState::EventWritten,
            _ if u64_at(8) != 0 => SlotState::Empty,
            _ => return None,
        };
        let mut args = [0u64; 6];
        for (i, a) in args.iter_mut().enumerate() {
            *a = u64_at(40 + 8 * i);
        }
        Some((
            state,
            SeccompNotif {
                id: u64_at(8),
                pid: u32_at(16),
                flags: u32_at(20),
                data: SeccompData {
                    nr: u32_at(24) as i32,
                    arch: u32_at(28),
                    instruction_pointer: u64_at(32),
                    args,
                },
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_round_trip_and_clear() {
        let slots = Slots::create().unwrap();
        let n = SeccompNotif {
            id: 0xdead_beef_0000_0001,
            pid: 4242,
            flags: 0,
            data: SeccompData {
                nr: 59,
                arch: 0xc000_003e,
                instruction_pointer: 7,
                args: [1, 2, 3, 4, 5, u64::MAX],
            },
        };
        assert_eq!(slots.read(3), None);
        slots.record(3, SlotState::Received, &n);
        assert_eq!(slots.read(3), Some((SlotState::Received, n)));
        slots.record(3, SlotState::EventWritten, &n);
        assert_eq!(slots.read(3).unwrap().0, SlotState::EventWritten);
        slots.clear(3);
        assert_eq!(slots.read(3), Some((SlotState::Empty, n)));
        assert_eq!(slots.read(MAX_SLOTS), None);
    }
}
