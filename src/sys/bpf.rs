//! The exec record's kernel side as Rust sees it: the array's slots, laid out as
//! `bpf/exec_record.bpf.c` writes them, and attaching a loaded BTF-typed tracepoint program
//! through a BPF link whose descriptor the caller owns (aya keeps the descriptors of the links
//! it makes to itself, and these must cross an `execve`).

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// One file, as `struct file_record` lays it out.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RawFile {
    pub(crate) ino: u64,
    pub(crate) size: i64,
    pub(crate) mtime_sec: i64,
    pub(crate) ctime_sec: i64,
    pub(crate) mtime_nsec: u32,
    pub(crate) ctime_nsec: u32,
    /// The kernel's encoding, `major << 20 | minor`; 0 when no file was found.
    pub(crate) dev: u32,
    pub(crate) pad: u32,
}

/// `struct exec_record`: the program and the interpreter of one exec, and when it happened.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RawRecord {
    pub(crate) program: RawFile,
    pub(crate) interpreter: RawFile,
    /// `CLOCK_BOOTTIME` in ns at the exec: different for each exec of a process.
    pub(crate) seq: u64,
}

/// `struct record_slot`: 16 words, the record's [`RawRecord`] in words 2 to 14.
pub(crate) const SLOT_WORDS: usize = 16;
/// Slots in the record's array (`RECORD_SLOTS`): a thread-group id's slot is its low bits.
pub(crate) const RECORD_SLOTS: usize = 4096;
/// Where a slot's words are: its version (`seq`, odd while a program writes it), the
/// thread-group id whose entry it holds (`owner`, 0 for none), the entry.
pub(crate) const SLOT_SEQ: usize = 0;
pub(crate) const SLOT_OWNER: usize = 1;
pub(crate) const SLOT_RECORD: usize = 2;

/// The two 32-bit fields of a word, in memory order.
fn halves(word: u64) -> (u32, u32) {
    let b = word.to_ne_bytes();
    (
        u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
        u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
    )
}

/// A word that holds a signed 64-bit field, as such.
fn signed(word: u64) -> i64 {
    i64::from_ne_bytes(word.to_ne_bytes())
}

impl RawFile {
    /// The file from the six words `struct file_record` is.
    fn from_words(w: [u64; 6]) -> Self {
        let (mtime_nsec, ctime_nsec) = halves(w[4]);
        let (dev, pad) = halves(w[5]);
        Self {
            ino: w[0],
            size: signed(w[1]),
            mtime_sec: signed(w[2]),
            ctime_sec: signed(w[3]),
            mtime_nsec,
            ctime_nsec,
            dev,
            pad,
        }
    }
}

impl RawRecord {
    /// Its size in words.
    pub(crate) const WORDS: usize = 13;

    /// The record from the words `struct exec_record` is.
    pub(crate) fn from_words(w: &[u64; Self::WORDS]) -> Self {
        let file = |at: usize| {
            RawFile::from_words([w[at], w[at + 1], w[at + 2], w[at + 3], w[at + 4], w[at + 5]])
        };
        Self {
            program: file(0),
            interpreter: file(6),
            seq: w[12],
        }
    }
}

/// `struct approval`: the file the exec checkpoint judged and let run, as the exec program
/// compares it with what the exec runs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RawApproval {
    pub(crate) ino: u64,
    pub(crate) size: i64,
    pub(crate) ctime_sec: i64,
    pub(crate) ctime_nsec: u32,
    /// 1: an interpreter is loaded, as the next fields say; 0: none.
    pub(crate) has_interp: u32,
    pub(crate) interp_size: i64,
    pub(crate) interp_ctime_sec: i64,
    pub(crate) interp_ctime_nsec: u32,
    pub(crate) pad: u32,
}

// SAFETY: integers only, without implicit padding (56 bytes, pinned below).
unsafe impl aya::Pod for RawApproval {}

/// `struct kill`: an exec the exec program killed.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawKill {
    pub(crate) tgid: u32,
    /// The guarded pid namespace (inode number) the task was in.
    pub(crate) pidns: u32,
    pub(crate) ran: RawFile,
    pub(crate) ran_interp: RawFile,
    /// 0: nothing was judged for this exec; else `approved` was.
    pub(crate) judged: u32,
    /// 1: killed; 0: only reported (audit mode).
    pub(crate) killed: u32,
    pub(crate) approved: RawApproval,
    /// The path the exec was given (`bprm->filename`), NUL-terminated.
    pub(crate) filename: [u8; 256],
}

impl RawKill {
    /// The record as the ring buffer hands it over, if it is whole.
    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < std::mem::size_of::<Self>() {
            return None;
        }
        // SAFETY: `bytes` holds at least size_of::<Self>() bytes; `RawKill` is integers and
        // bytes only, so any bit pattern is a value, and read_unaligned needs no alignment.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Self>()) })
    }

    /// The path, up to its NUL.
    pub(crate) fn filename(&self) -> &[u8] {
        let end = self
            .filename
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(self.filename.len());
        &self.filename[..end]
    }
}

/// `bpf(2)`'s command that attaches a raw or BTF-typed tracepoint program and returns a link.
const BPF_RAW_TRACEPOINT_OPEN: libc::c_int = 17;

/// `union bpf_attr` as `BPF_RAW_TRACEPOINT_OPEN` reads it (the `raw_tracepoint` member, without
/// the cookie that 6.10 added: an older kernel refuses a larger attribute it does not know).
#[repr(C)]
struct RawTracepointOpen {
    /// The tracepoint's name; 0 for a BTF-typed program, which names it itself (its
    /// `attach_btf_id`, set when it was loaded).
    name: u64,
    prog_fd: u32,
    pad: u32,
}

/// Attaches the loaded BTF-typed tracepoint program (`tp_btf/...`) `program` through a new BPF
/// link: no tracefs, no perf event. The attachment lasts as long as the returned descriptor
/// (and its copies, across `execve` too).
pub(crate) fn attach_btf_tracepoint(program: BorrowedFd<'_>) -> std::io::Result<OwnedFd> {
    let prog_fd = u32::try_from(program.as_raw_fd())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EBADF))?;
    let attr = RawTracepointOpen {
        name: 0,
        prog_fd,
        pad: 0,
    };
    // SAFETY: `attr` is a whole, initialised attribute of the size passed, and outlives the
    // call; the kernel only reads it.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_RAW_TRACEPOINT_OPEN,
            std::ptr::from_ref(&attr),
            std::mem::size_of::<RawTracepointOpen>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = RawFd::try_from(fd).map_err(|_| std::io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just returned this descriptor (close-on-exec, as every bpf(2)
    // descriptor), and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `struct file_record` is eight 8-byte words minus the C side's padding: none.
    #[test]
    fn the_record_has_the_c_layout() {
        assert_eq!(std::mem::size_of::<RawFile>(), 48);
        assert_eq!(std::mem::offset_of!(RawFile, dev), 40);
        assert_eq!(std::mem::size_of::<RawRecord>(), 104);
        assert_eq!(std::mem::offset_of!(RawRecord, interpreter), 48);
        assert_eq!(std::mem::offset_of!(RawRecord, seq), 96);
        assert_eq!(RawRecord::WORDS * 8, std::mem::size_of::<RawRecord>());
        // struct record_slot: seq, owner, the record, pad.
        assert_eq!(SLOT_RECORD + RawRecord::WORDS + 1, SLOT_WORDS);
        assert!(RECORD_SLOTS.is_power_of_two());
    }

    /// Words as the C side writes them: each field in its declared order, two 32-bit fields
    /// to a word in memory order.
    #[test]
    fn a_record_is_read_from_its_words() {
        let pair = |a: u32, b: u32| {
            let mut bytes = [0u8; 8];
            bytes[..4].copy_from_slice(&a.to_ne_bytes());
            bytes[4..].copy_from_slice(&b.to_ne_bytes());
            u64::from_ne_bytes(bytes)
        };
        let mut w = [0u64; RawRecord::WORDS];
        w[..6].copy_from_slice(&[7, 100, 11, 12, pair(13, 14), pair((8 << 20) | 1, 0)]);
        w[6..12].copy_from_slice(&[9, u64::MAX, 21, 22, pair(23, 24), pair(0, 0)]);
        w[12] = 99;
        let r = RawRecord::from_words(&w);
        let p = r.program;
        assert_eq!(
            (
                p.ino,
                p.size,
                p.mtime_sec,
                p.ctime_sec,
                p.mtime_nsec,
                p.ctime_nsec,
                p.dev
            ),
            (7, 100, 11, 12, 13, 14, (8 << 20) | 1)
        );
        let i = r.interpreter;
        assert_eq!((i.ino, i.size, i.ctime_nsec, i.dev), (9, -1, 24, 0));
        assert_eq!(r.seq, 99);
    }

    /// `struct approval` and `struct kill` as the C side lays them out.
    #[test]
    fn the_approval_and_the_kill_have_the_c_layout() {
        assert_eq!(std::mem::size_of::<RawApproval>(), 56);
        assert_eq!(std::mem::offset_of!(RawApproval, interp_size), 32);
        assert_eq!(std::mem::offset_of!(RawKill, ran), 8);
        assert_eq!(std::mem::offset_of!(RawKill, ran_interp), 56);
        assert_eq!(std::mem::offset_of!(RawKill, judged), 104);
        assert_eq!(std::mem::offset_of!(RawKill, approved), 112);
        assert_eq!(std::mem::offset_of!(RawKill, filename), 168);
        assert_eq!(std::mem::size_of::<RawKill>(), 424);
        let mut bytes = vec![0u8; 424];
        bytes[168..171].copy_from_slice(b"/x\0");
        let k = RawKill::from_bytes(&bytes).unwrap();
        assert_eq!(k.filename(), b"/x");
        assert!(RawKill::from_bytes(&bytes[..423]).is_none());
    }

    /// `union bpf_attr`'s `raw_tracepoint` member before the cookie, and the command's number
    /// (`enum bpf_cmd` in <linux/bpf.h>).
    #[test]
    fn the_attach_attribute_has_the_kernels_layout() {
        assert_eq!(std::mem::size_of::<RawTracepointOpen>(), 16);
        assert_eq!(std::mem::offset_of!(RawTracepointOpen, prog_fd), 8);
        assert_eq!(BPF_RAW_TRACEPOINT_OPEN, 17);
    }
}
