//! Shared mappings read and written as 64-bit atomic words: the slot file, and the exec
//! record's array.

use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::sys::mman::{MapFlags, ProtFlags};

/// A shared mapping of `words` 64-bit words, unmapped on drop.
#[derive(Debug)]
struct Mapping {
    ptr: std::ptr::NonNull<std::ffi::c_void>,
    words: usize,
}

// SAFETY: the mapping is only ever accessed through `AtomicU64`s, which may be shared and sent
// between threads; the pointer itself is never handed out mutably.
unsafe impl Send for Mapping {}
// SAFETY: as above: every access is atomic.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps the first `words` words of `fd`, shared with every other process that maps it.
    fn new(fd: &impl AsFd, words: usize, prot: ProtFlags) -> io::Result<Self> {
        let einval = || io::Error::from_raw_os_error(libc::EINVAL);
        let bytes = words.checked_mul(8).ok_or_else(einval)?;
        let len = std::num::NonZeroUsize::new(bytes).ok_or_else(einval)?;
        // SAFETY: a new shared mapping, at an address the kernel chooses; nothing else in this
        // process refers to that range, and it is unmapped only on drop.
        let ptr = unsafe { nix::sys::mman::mmap(None, len, prot, MapFlags::MAP_SHARED, fd, 0) }?;
        Ok(Self { ptr, words })
    }

    fn words(&self) -> &[AtomicU64] {
        // SAFETY: the mapping is `words * 8` bytes, page-aligned (so 8-byte aligned), lives as
        // long as `self`, and `AtomicU64` has the layout of `u64`; every access through the
        // slice is atomic, so concurrent writers (other threads, other processes, the kernel)
        // are sound.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast::<AtomicU64>(), self.words) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the range was mapped by `new` with this length, and no reference into it
        // outlives `self` (the slices borrow `self`).
        let _ = unsafe { nix::sys::mman::munmap(self.ptr, self.words * 8) };
    }
}

/// A shared mapping of a file as 64-bit atomic words: the slot file, which the keeper holds
/// and each worker maps, so that recording an in-flight notification costs no system call.
#[derive(Debug)]
pub(crate) struct SharedWords(Mapping);

impl SharedWords {
    /// Maps the first `words` 64-bit words of `file`, readable and writable, shared with every
    /// other process that maps it. A file shorter than that is refused (`EINVAL`): a word past
    /// its end would fault (SIGBUS) when touched. (Its processes are this program's own; none
    /// truncates it.)
    pub(crate) fn map(file: &impl AsFd, words: usize) -> io::Result<Self> {
        let size = nix::sys::stat::fstat(file)?.st_size;
        let short = words
            .checked_mul(8)
            .is_none_or(|bytes| u64::try_from(size).map_or(true, |size| size < bytes as u64));
        if short {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        Mapping::new(file, words, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE).map(Self)
    }

    /// The words. Other processes may change them at any time: read and write them only
    /// atomically.
    pub(crate) fn words(&self) -> &[AtomicU64] {
        self.0.words()
    }
}

/// A read-only shared mapping of 64-bit words that someone else writes: the exec record's
/// array, which the kernel's programs write and the worker reads without a system call.
#[derive(Debug)]
pub(crate) struct ReadOnlyWords(Mapping);

impl ReadOnlyWords {
    /// Maps the first `words` 64-bit words of `fd` readable only: a BPF array made with
    /// `BPF_F_MMAPABLE` (the kernel refuses a mapping longer than the map), or a file at least
    /// that long (a word past a file's end would fault when read; the tests' only use).
    pub(crate) fn map(fd: &impl AsFd, words: usize) -> io::Result<Self> {
        Mapping::new(fd, words, ProtFlags::PROT_READ).map(Self)
    }

    /// Word `i` (none past the end), loaded atomically. Relaxed only: on memory that cannot be
    /// written, Rust promises no more than relaxed loads; order them with fences.
    pub(crate) fn load(&self, i: usize) -> Option<u64> {
        self.0.words().get(i).map(|w| w.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A file of `bytes` zero bytes in memory, to map.
    pub(crate) fn file_of(bytes: usize) -> std::os::fd::OwnedFd {
        let fd =
            nix::sys::memfd::memfd_create(c"t", nix::sys::memfd::MFdFlags::MFD_CLOEXEC).unwrap();
        nix::unistd::ftruncate(&fd, i64::try_from(bytes).unwrap()).unwrap();
        fd
    }

    #[test]
    fn shared_words_are_shared_between_mappings() {
        let fd = file_of(4096);
        let a = SharedWords::map(&fd, 512).unwrap();
        let b = SharedWords::map(&fd, 512).unwrap();
        a.words()[7].store(42, std::sync::atomic::Ordering::Release);
        assert_eq!(b.words()[7].load(std::sync::atomic::Ordering::Acquire), 42);
        assert_eq!(b.words().len(), 512);
    }

    /// A read-only mapping sees what a writable one writes, and nothing past its end.
    #[test]
    fn read_only_words_see_the_writers_words() {
        let fd = file_of(4096);
        let w = SharedWords::map(&fd, 512).unwrap();
        let r = ReadOnlyWords::map(&fd, 512).unwrap();
        w.words()[511].store(7, Ordering::Release);
        assert_eq!(r.load(511), Some(7));
        assert_eq!(r.load(512), None);
        assert!(ReadOnlyWords::map(&fd, 0).is_err());
    }

    /// A file shorter than the words asked for is refused, not mapped to fault later.
    #[test]
    fn a_short_file_is_refused() {
        let fd = file_of(4096);
        let err = SharedWords::map(&fd, 513).err().unwrap();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
        assert!(SharedWords::map(&fd, usize::MAX).is_err());
        assert!(SharedWords::map(&fd, 0).is_err());
    }
}
