//! In-flight notifications, kept where a worker's death cannot lose them: a memfd that the
//! keeper holds and hands to every worker. Each notify fd has a slot; a worker writes the
//! notification there right after receiving it and clears it after answering. A new worker
//! answers what a dead one left in its slots (the tasks are still waiting in the kernel).

use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::sys::{SeccompData, SeccompNotif, SharedWords};

/// Words per slot: a state word and one `struct seccomp_notif` (10 words), with room to spare.
const SLOT_WORDS: usize = 16;
/// Notify fds (container starts and `runc exec`s) one keeper can hold at once.
pub(crate) const MAX_SLOTS: usize = 4096;

/// Where a notification is in its handling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SlotState {
    Empty = 0,
    /// Received, not answered.
    Received = 1,
    /// Received, its event written, not answered.
    EventWritten = 2,
}

/// The slot file, mapped: recording a notification is a few stores, no system call.
pub(crate) struct Slots {
    file: File,
    map: SharedWords,
}

impl Slots {
    /// A new, empty slot file.
    pub(crate) fn create() -> std::io::Result<Self> {
        let fd = nix::sys::memfd::memfd_create(
            c"execguard-slots",
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
        )?;
        let file = File::from(fd);
        file.set_len((SLOT_WORDS * MAX_SLOTS * 8) as u64)?;
        Self::from_file(file)
    }

    /// The slot file a keeper handed over.
    pub(crate) fn from_fd(fd: OwnedFd) -> std::io::Result<Self> {
        let file = File::from(fd);
        let len = file.metadata()?.len();
        if len < (SLOT_WORDS * MAX_SLOTS * 8) as u64 {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        Self::from_file(file)
    }

    fn from_file(file: File) -> std::io::Result<Self> {
        let map = SharedWords::map(&file, SLOT_WORDS * MAX_SLOTS)?;
        Ok(Self { file, map })
    }

    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    fn slot(&self, index: usize) -> Option<&[AtomicU64]> {
        self.map
            .words()
            .get(index * SLOT_WORDS..(index + 1) * SLOT_WORDS)
    }

    /// Records a notification as received (or its event as written). The state word is
    /// written last, so a slot never says "received" over a half-written notification.
    pub(crate) fn record(&self, index: usize, state: SlotState, n: &SeccompNotif) {
        let Some(slot) = self.slot(index) else {
            return;
        };
        let words = [
            n.id,
            u64::from(n.pid) | u64::from(n.flags) << 32,
            u64::from(u32::from_ne_bytes(n.data.nr.to_ne_bytes())) | u64::from(n.data.arch) << 32,
            n.data.instruction_pointer,
        ];
        for (w, v) in slot[1..].iter().zip(words.iter().chain(&n.data.args)) {
            w.store(*v, Ordering::Relaxed);
        }
        if state == SlotState::Received {
            super::fault::mid_record();
        }
        slot[0].store(state as u64, Ordering::Release);
    }

    /// Marks the slot answered.
    pub(crate) fn clear(&self, index: usize) {
        if let Some(slot) = self.slot(index) {
            slot[0].store(SlotState::Empty as u64, Ordering::Release);
        }
    }

    /// What the slot holds: the last notification recorded there (its state `Empty` once it
    /// was answered: its id still tells a new worker where to look for unrecorded ones).
    pub(crate) fn read(&self, index: usize) -> Option<(SlotState, SeccompNotif)> {
        let slot = self.slot(index)?;
        let state = slot[0].load(Ordering::Acquire);
        let w = |i: usize| slot[i].load(Ordering::Relaxed);
        let state = match state {
            1 => SlotState::Received,
            2 => SlotState::EventWritten,
            _ if w(1) != 0 => SlotState::Empty,
            _ => return None,
        };
        let low = |v: u64| (v & 0xffff_ffff) as u32;
        let mut args = [0u64; 6];
        for (i, a) in args.iter_mut().enumerate() {
            *a = w(5 + i);
        }
        Some((
            state,
            SeccompNotif {
                id: w(1),
                pid: low(w(2)),
                flags: (w(2) >> 32) as u32,
                data: SeccompData {
                    nr: crate::traps::low_i32(w(3)),
                    arch: (w(3) >> 32) as u32,
                    instruction_pointer: w(4),
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
        // What one mapping writes, another mapping of the same file (the next worker's) reads.
        let other = Slots::from_fd(slots.file().try_clone().unwrap().into()).unwrap();
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
        assert_eq!(other.read(3), Some((SlotState::Received, n)));
        slots.record(3, SlotState::EventWritten, &n);
        assert_eq!(slots.read(3).unwrap().0, SlotState::EventWritten);
        slots.clear(3);
        assert_eq!(slots.read(3), Some((SlotState::Empty, n)));
        assert_eq!(slots.read(MAX_SLOTS), None);
    }
}
