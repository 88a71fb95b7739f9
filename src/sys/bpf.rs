//! The exec record's kernel side as Rust sees it: the map's value, laid out as
//! `bpf/exec_record.bpf.c` writes it, and attaching a loaded tracepoint program through a perf
//! event whose descriptor the caller owns (`perf_event_open` and its ioctls, from
//! `perf-event-open-sys`, which generates them from the kernel's headers).

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use perf_event_open_sys::bindings as perf;

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

/// `struct exec_record`: the program and the interpreter of one exec.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RawRecord {
    pub(crate) program: RawFile,
    pub(crate) interpreter: RawFile,
}

// SAFETY: integers only, without implicit padding (48 bytes per file, pinned below); every
// bit pattern is a value. aya checks the map's value size against this type's when it opens it.
unsafe impl aya::Pod for RawRecord {}

/// Attaches the loaded tracepoint program `program` to tracepoint `tracepoint_id` (from
/// tracefs) through a new perf event: the attachment lasts as long as the returned descriptor
/// (and its copies). On failure, the step that failed and the error.
pub(crate) fn attach_tracepoint(
    program: BorrowedFd<'_>,
    tracepoint_id: u64,
) -> Result<OwnedFd, (&'static str, std::io::Error)> {
    let failed = |what| (what, std::io::Error::last_os_error());
    let mut attr = perf::perf_event_attr {
        type_: perf::PERF_TYPE_TRACEPOINT,
        size: u32::try_from(std::mem::size_of::<perf::perf_event_attr>()).unwrap_or(u32::MAX),
        config: tracepoint_id,
        ..Default::default()
    };
    // SAFETY: `attr` is a whole, initialised perf_event_attr that outlives the call; any
    // process (-1) on CPU 0 (a tracepoint's programs run wherever it fires), no group.
    let fd = unsafe {
        perf_event_open_sys::perf_event_open(
            &mut attr,
            -1,
            0,
            -1,
            libc::c_ulong::from(perf::PERF_FLAG_FD_CLOEXEC),
        )
    };
    if fd < 0 {
        return Err(failed("perf_event_open"));
    }
    // SAFETY: the kernel just returned this descriptor, and nothing else owns it.
    let event = unsafe { OwnedFd::from_raw_fd(fd) };
    let program = u32::try_from(program.as_raw_fd()).map_err(|_| {
        (
            "program descriptor",
            std::io::Error::from_raw_os_error(libc::EBADF),
        )
    })?;
    // SAFETY: `event` is an open perf event and `program` an open BPF program descriptor; the
    // ioctl takes it by value.
    if unsafe { perf_event_open_sys::ioctls::SET_BPF(event.as_raw_fd(), program) } < 0 {
        return Err(failed("PERF_EVENT_IOC_SET_BPF"));
    }
    // SAFETY: as above; the argument is unused.
    if unsafe { perf_event_open_sys::ioctls::ENABLE(event.as_raw_fd(), 0) } < 0 {
        return Err(failed("PERF_EVENT_IOC_ENABLE"));
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `struct file_record` is eight 8-byte words minus the C side's padding: none.
    #[test]
    fn the_record_has_the_c_layout() {
        assert_eq!(std::mem::size_of::<RawFile>(), 48);
        assert_eq!(std::mem::offset_of!(RawFile, dev), 40);
        assert_eq!(std::mem::size_of::<RawRecord>(), 96);
        assert_eq!(std::mem::offset_of!(RawRecord, interpreter), 48);
    }
}
