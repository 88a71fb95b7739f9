//! The slot file's shared mapping.

use std::io;

/// A shared mapping of a file as 64-bit atomic words: the slot file, which the keeper holds
/// and each worker maps, so that recording an in-flight notification costs no system call.
#[derive(Debug)]
pub(crate) struct SharedWords {
    ptr: std::ptr::NonNull<std::ffi::c_void>,
    words: usize,
}

// SAFETY: the mapping is only ever accessed through `AtomicU64`s, which may be shared and sent
// between threads; the pointer itself is never handed out mutably.
unsafe impl Send for SharedWords {}
// SAFETY: as above: every access is atomic.
unsafe impl Sync for SharedWords {}

impl SharedWords {
    /// Maps the first `words` 64-bit words of `file`, readable and writable, shared with every
    /// other process that maps it. A file shorter than that is refused (`EINVAL`): a word past
    /// its end would fault (SIGBUS) when touched. (Its processes are this program's own; none
    /// truncates it.)
    pub(crate) fn map(file: &impl std::os::fd::AsFd, words: usize) -> io::Result<Self> {
        let einval = || io::Error::from_raw_os_error(libc::EINVAL);
        let bytes = words.checked_mul(8).ok_or_else(einval)?;
        let size = nix::sys::stat::fstat(file)?.st_size;
        if u64::try_from(size).map_or(true, |size| size < bytes as u64) {
            return Err(einval());
        }
        let len = std::num::NonZeroUsize::new(bytes).ok_or_else(einval)?;
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
    pub(crate) fn words(&self) -> &[std::sync::atomic::AtomicU64] {
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

#[cfg(test)]
mod tests {
    use super::*;

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

    /// A file shorter than the words asked for is refused, not mapped to fault later.
    #[test]
    fn a_short_file_is_refused() {
        let fd =
            nix::sys::memfd::memfd_create(c"t", nix::sys::memfd::MFdFlags::MFD_CLOEXEC).unwrap();
        nix::unistd::ftruncate(&fd, 4096).unwrap();
        let err = SharedWords::map(&fd, 513).err().unwrap();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
        assert!(SharedWords::map(&fd, usize::MAX).is_err());
        assert!(SharedWords::map(&fd, 0).is_err());
    }
}
