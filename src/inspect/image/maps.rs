//! What the image checkpoint reads of a process's mappings: the file mapped at an address
//! (`PROCMAP_QUERY`, or `/proc/PID/maps` before Linux 6.11), a mapped file opened through
//! `/proc/PID/map_files`, and the files a loader has mapped, for audit modules they name.

use std::io::Read;
use std::os::fd::OwnedFd;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode as StatMode;

use super::{gone_or, io_errno, ProcPath};
use crate::inspect::resolve::FsView;
use crate::inspect::InspectError;
use crate::sys::Mapping;

/// Bytes of `/proc/PID/maps` read where the kernel has no `PROCMAP_QUERY` (before 6.11).
const MAX_MAPS_BYTES: u64 = 1 << 20;

pub(super) fn open_maps(tid: u32) -> Result<OwnedFd, InspectError> {
    nix::fcntl::open(
        ProcPath::new(tid, format_args!("maps")).as_bytes(),
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        StatMode::empty(),
    )
    .map_err(gone_or("maps"))
}

/// The file mapped at `addr` in the process whose `/proc/PID/maps` is open, by device and
/// inode (`None` for anonymous memory).
pub(in crate::inspect) fn mapping_at(
    maps: &OwnedFd,
    addr: u64,
) -> Result<Option<Mapping>, InspectError> {
    let maps_err = |e: std::io::Error| InspectError::ReadTarget {
        what: "maps",
        errno: io_errno(&e),
    };
    match crate::sys::procmap_query(maps, addr) {
        Ok(m) => Ok(m),
        // Before Linux 6.11: the same from the text.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTTY | libc::EINVAL)) => {
            let mut file = std::fs::File::from(maps.try_clone().map_err(maps_err)?);
            std::io::Seek::rewind(&mut file).map_err(maps_err)?;
            let mut text = Vec::new();
            file.take(MAX_MAPS_BYTES)
                .read_to_end(&mut text)
                .map_err(maps_err)?;
            Ok(mapping_in_text(&text, addr))
        }
        Err(e) => Err(maps_err(e)),
    }
}

/// The line of `/proc/PID/maps` whose range holds `addr`, as a mapping (`None` without a file).
fn mapping_in_text(text: &[u8], addr: u64) -> Option<Mapping> {
    let hex = |s: &str| u64::from_str_radix(s, 16).ok();
    text.split(|b| *b == b'\n').find_map(|line| {
        let line = std::str::from_utf8(line).ok()?;
        let mut f = line.split_whitespace();
        let (lo, hi) = f.next()?.split_once('-')?;
        let (start, end) = (hex(lo)?, hex(hi)?);
        if !(start..end).contains(&addr) {
            return None;
        }
        let (_perms, _offset) = (f.next()?, f.next()?);
        let (major, minor) = f.next()?.split_once(':')?;
        let inode: u64 = f.next()?.parse().ok()?;
        let (major, minor) = (
            u32::try_from(hex(major)?).ok()?,
            u32::try_from(hex(minor)?).ok()?,
        );
        (inode != 0).then_some(Mapping {
            start,
            end,
            key: (libc::makedev(major, minor), inode),
        })
    })
}

/// Files of a loader's image looked at for audit modules at most (the program and its libraries
/// mapped so far).
const MAX_MAPPED_FILES: usize = 64;

/// Whether a file the loader `loader` (device, inode) has mapped in process `tid` names audit
/// modules (`DT_AUDIT`, `DT_DEPAUDIT`): the program it was given, read through its mapping (the
/// file the loader really opened, whatever its path names now). glibc sets up its thread
/// pointer before it loads audit modules, so at the image checkpoint none has run yet.
pub(super) fn maps_audit_naming_file(tid: u32, loader: (u64, u64)) -> Result<bool, InspectError> {
    let mut text = Vec::new();
    std::fs::File::from(open_maps(tid)?)
        .take(MAX_MAPS_BYTES)
        .read_to_end(&mut text)
        .map_err(|e| InspectError::ReadTarget {
            what: "maps",
            errno: io_errno(&e),
        })?;
    let mut seen = Vec::new();
    for m in mappings_in_text(&text) {
        if m.key == loader || seen.contains(&m.key) {
            continue;
        }
        seen.push(m.key);
        if seen.len() > MAX_MAPPED_FILES {
            break;
        }
        let Ok(fd) = open_mapped(tid, &m) else {
            continue;
        };
        if super::file::names_audit_modules(&std::fs::File::from(fd)).unwrap_or(true) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The file mappings of a `/proc/PID/maps` text.
fn mappings_in_text(text: &[u8]) -> impl Iterator<Item = Mapping> + '_ {
    text.split(|b| *b == b'\n').filter_map(|line| {
        let line = std::str::from_utf8(line).ok()?;
        let (lo, _) = line.split_once('-')?;
        let start = u64::from_str_radix(lo, 16).ok()?;
        mapping_in_text(line.as_bytes(), start)
    })
}

/// The file behind a mapping, opened through `/proc/PID/map_files` (the file that is mapped,
/// whatever its name says now). Needs `CAP_SYS_ADMIN` or `CAP_CHECKPOINT_RESTORE`.
pub(super) fn open_mapped(tid: u32, m: &Mapping) -> Result<OwnedFd, InspectError> {
    nix::fcntl::open(
        ProcPath::new(tid, format_args!("map_files/{:x}-{:x}", m.start, m.end)).as_bytes(),
        OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
        StatMode::empty(),
    )
    .map_err(gone_or("the interpreter's mapping"))
}

/// The interpreter by its `PT_INTERP` name, resolved in the process's root now: what the kernel
/// found at the exec unless it was renamed since. Only where the mapping cannot be opened.
pub(super) fn open_by_name(tid: u32, name: &[u8]) -> Result<OwnedFd, InspectError> {
    let errno = |errno| InspectError::Resolve { errno };
    let view = FsView::of_task(tid).map_err(gone_or("filesystem view"))?;
    let found = match crate::inspect::resolve::resolve_absolute_fast(&view, name, true) {
        Some(r) => r.map_err(errno)?,
        None => {
            let start = view.start_dir(None).map_err(errno)?;
            crate::inspect::resolve::resolve(&view, start, b"", name, true).map_err(errno)?
        }
    };
    crate::inspect::resolve::open_for_read(&found)
        .map(OwnedFd::from)
        .map_err(errno)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_text_gives_the_mapping_at_an_address() {
        let text = b"55d0c0a00000-55d0c0a02000 r--p 00000000 fe:00 10199068 /usr/bin/true\n\
    7f997f7c2000-7f997f7c3000 r--p 00000000 fe:00 325843 /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2\n\
    7ffd1000-7ffd2000 rw-p 00000000 00:00 0 [stack]\n";
        assert_eq!(
            mapping_in_text(text, 0x7f99_7f7c_2000),
            Some(Mapping {
                start: 0x7f99_7f7c_2000,
                end: 0x7f99_7f7c_3000,
                key: (libc::makedev(0xfe, 0), 325_843)
            })
        );
        assert_eq!(
            mapping_in_text(text, 0x7f99_7f7c_2abc).map(|m| m.key.1),
            Some(325_843)
        );
        assert_eq!(mapping_in_text(text, 0x7ffd_1000), None);
        assert_eq!(mapping_in_text(text, 0x1234), None);
        assert_eq!(mapping_in_text(b"garbage\n-\n", 0), None);
    }
}
