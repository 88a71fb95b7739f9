//! Path resolution inside a process's root, the way the kernel's `namei` does it, one component
//! at a time: `.` and `..` (which never climbs above the root), symlinks (absolute ones restart
//! at the process's root, never the host's), `/proc/self` and `/proc/thread-self` (which mean
//! the target, not the supervisor), and procfs magic links such as `/proc/self/fd/N`.
//!
//! Hand-written rather than `openat2(RESOLVE_IN_ROOT)`: that call treats its dirfd as the root,
//! so it cannot resolve a relative path from a cwd below the root, and it refuses magic links.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, readlinkat, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, FileStat, Mode as StatMode, SFlag};
use nix::sys::statfs::{fstatfs, PROC_SUPER_MAGIC};

/// The kernel's limit on symlinks followed in one lookup.
const MAX_SYMLINKS: u32 = 40;
/// The kernel's limit on a path's length, NUL included.
pub(crate) const PATH_MAX: usize = 4096;

/// The filesystem as one process sees it. `/proc/TID` is opened first and pins that task:
/// the root and cwd are opened through it only when needed, and can never be another
/// process's even if the task dies and its pid is reused meanwhile.
pub(crate) struct FsView {
    /// The host's `/proc/TID` of the process, for its fds and for `/proc/self`.
    pub proc_dir: OwnedFd,
    root: std::cell::OnceCell<OwnedFd>,
    cwd: std::cell::OnceCell<OwnedFd>,
}

impl FsView {
    /// The view of task `tid` (a host pid or tid).
    pub(crate) fn of_task(tid: u32) -> Result<Self, Errno> {
        Ok(Self::new(open_path(
            &format!("/proc/{tid}"),
            OFlag::O_DIRECTORY,
        )?))
    }

    /// The view of this process: what `explain` uses.
    pub(crate) fn of_self() -> Result<Self, Errno> {
        Ok(Self::new(open_path("/proc/self", OFlag::O_DIRECTORY)?))
    }

    fn new(proc_dir: OwnedFd) -> Self {
        Self {
            proc_dir,
            root: std::cell::OnceCell::new(),
            cwd: std::cell::OnceCell::new(),
        }
    }

    fn dir_link<'a>(
        &self,
        cell: &'a std::cell::OnceCell<OwnedFd>,
        name: &str,
    ) -> Result<&'a OwnedFd, Errno> {
        if let Some(fd) = cell.get() {
            return Ok(fd);
        }
        let fd = openat(
            &self.proc_dir,
            name,
            o_path(OFlag::O_DIRECTORY),
            StatMode::empty(),
        )?;
        Ok(cell.get_or_init(|| fd))
    }

    /// The process's root (`/proc/PID/root`).
    pub(crate) fn root(&self) -> Result<&OwnedFd, Errno> {
        self.dir_link(&self.root, "root")
    }

    /// The process's working directory (`/proc/PID/cwd`).
    pub(crate) fn cwd(&self) -> Result<&OwnedFd, Errno> {
        self.dir_link(&self.cwd, "cwd")
    }

    /// The directory a relative path starts from: the cwd, or the target's fd `dirfd`.
    pub(crate) fn start_dir(&self, dirfd: Option<i32>) -> Result<OwnedFd, Errno> {
        match dirfd {
            None => self.cwd()?.try_clone().map_err(io_errno),
            Some(fd) => self.target_fd(fd),
        }
    }

    /// The file behind the target's fd `fd` (`/proc/TID/fd/N`, followed like the kernel does).
    pub(crate) fn target_fd(&self, fd: i32) -> Result<OwnedFd, Errno> {
        if fd < 0 {
            return Err(Errno::EBADF);
        }
        openat(
            &self.proc_dir,
            format!("fd/{fd}").as_str(),
            o_path(OFlag::empty()),
            StatMode::empty(),
        )
    }
}

/// Resolves an absolute path inside the root in one system call (`openat2` with
/// `RESOLVE_IN_ROOT`, which confines `..` and absolute symlinks to the root like the kernel's
/// own lookup for a chrooted process). Procfs magic links are refused by it
/// (`RESOLVE_NO_MAGICLINKS`); so are relative paths; and a failed lookup is left to the walk:
/// `None` means "walk it with [`resolve`]".
pub(crate) fn resolve_absolute_fast(
    view: &FsView,
    path: &[u8],
    follow_last: bool,
) -> Option<Result<Resolved, Errno>> {
    if path.first() != Some(&b'/') {
        return None;
    }
    if path.len() >= PATH_MAX {
        return Some(Err(Errno::ENAMETOOLONG));
    }
    let root = match view.root() {
        Ok(r) => r,
        Err(e) => return Some(Err(e)),
    };
    let how = OpenHow::new()
        .flags(o_path(if follow_last {
            OFlag::empty()
        } else {
            OFlag::O_NOFOLLOW
        }))
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    match openat2(root, path, how) {
        Ok(fd) => {
            let stat = match fstat(&fd) {
                Ok(st) => st,
                Err(e) => return Some(Err(e)),
            };
            if !follow_last && is_symlink(&stat) {
                return Some(Err(Errno::ELOOP));
            }
            Some(Ok(Resolved {
                fd,
                stat,
                display: path.to_vec(),
            }))
        }
        // Any failure goes to the walk, which decides: a magic link on the way, a kernel
        // without openat2, or a procfs `self` link, which names the reader (here the
        // supervisor, absent from the container's pid namespace) instead of the target.
        Err(_) => None,
    }
}

/// A file found by [`resolve`].
#[derive(Debug)]
pub(crate) struct Resolved {
    /// An `O_PATH` handle on the file itself.
    pub fd: OwnedFd,
    pub stat: FileStat,
    /// The path inside the root (for a magic link, what the link says, e.g. `/memfd:x (deleted)`).
    pub display: Vec<u8>,
}

impl Resolved {
    /// The file has no name left: a memfd or an unlinked file.
    pub(crate) fn is_fileless(&self) -> bool {
        self.stat.st_nlink == 0 || self.display.starts_with(b"/memfd:")
    }

    pub(crate) fn is_regular(&self) -> bool {
        SFlag::from_bits_truncate(self.stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG
    }

    pub(crate) fn key(&self) -> (u64, u64) {
        (self.stat.st_dev, self.stat.st_ino)
    }
}

/// Resolves `path` for a process whose filesystem is `view`, starting relative paths at
/// `start` (its cwd, or an `execveat` dirfd). `follow_last` is false for `AT_SYMLINK_NOFOLLOW`.
/// Errors are the errno the kernel would give for the same lookup.
pub(crate) fn resolve(
    view: &FsView,
    start: OwnedFd,
    start_display: &[u8],
    path: &[u8],
    follow_last: bool,
) -> Result<Resolved, Errno> {
    resolve_watching(view, start, start_display, path, follow_last, &mut |_| {})
}

/// [`resolve`], calling `looked_in` with every directory a name is looked up in (the start,
/// each directory walked through, each directory a symlink's target is walked from), before
/// the lookup: a lookup that fails has still been shown its directory.
pub(crate) fn resolve_watching(
    view: &FsView,
    start: OwnedFd,
    start_display: &[u8],
    path: &[u8],
    follow_last: bool,
    looked_in: &mut dyn FnMut(&OwnedFd),
) -> Result<Resolved, Errno> {
    if path.is_empty() {
        return Err(Errno::ENOENT);
    }
    if path.len() >= PATH_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    let absolute = path.first() == Some(&b'/');
    let root = view.root()?;
    let mut cur = if absolute {
        root.try_clone().map_err(io_errno)?
    } else {
        start
    };
    let mut display: Vec<Vec<u8>> = if absolute {
        Vec::new()
    } else {
        split(start_display).map(<[u8]>::to_vec).collect()
    };
    // Components still to walk, last first.
    let mut todo: Vec<Vec<u8>> = split(path).rev().map(<[u8]>::to_vec).collect();
    let trailing_slash = path.ends_with(b"/");
    let root_key = key_of(root)?;
    let mut links = 0u32;
    let mut current_stat = fstat(&cur)?;

    while let Some(comp) = todo.pop() {
        if comp == b"." {
            continue;
        }
        if comp == b".." {
            if (current_stat.st_dev, current_stat.st_ino) != root_key {
                cur = openat(&cur, "..", o_path(OFlag::O_DIRECTORY), StatMode::empty())?;
                current_stat = fstat(&cur)?;
                display.pop();
            }
            continue;
        }
        if !is_dir(&current_stat) {
            return Err(Errno::ENOTDIR);
        }
        let last = todo.is_empty();
        looked_in(&cur);
        let next = openat(
            &cur,
            comp.as_slice(),
            o_path(OFlag::O_NOFOLLOW),
            StatMode::empty(),
        )?;
        let st = fstat(&next)?;
        if is_symlink(&st) {
            if last && !follow_last && !trailing_slash {
                return Err(Errno::ELOOP);
            }
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(Errno::ELOOP);
            }
            if fstatfs(&cur)?.filesystem_type() == PROC_SUPER_MAGIC {
                // procfs: `self` and `thread-self` name the reader, so they are mapped to the
                // target; every other procfs link is a magic link that the kernel follows
                // itself (fd/N, exe, cwd, root), which an open without O_NOFOLLOW does.
                if comp == b"self" || comp == b"thread-self" {
                    cur = view.proc_dir.try_clone().map_err(io_errno)?;
                    display.push(comp);
                } else {
                    let shown = readlinkat(&next, "").unwrap_or_default();
                    cur = openat(
                        &cur,
                        comp.as_slice(),
                        o_path(OFlag::empty()),
                        StatMode::empty(),
                    )?;
                    display = vec![shown.as_bytes().to_vec()];
                }
                current_stat = fstat(&cur)?;
                if last {
                    return Ok(Resolved {
                        fd: cur,
                        stat: current_stat,
                        display: join(&display),
                    });
                }
                continue;
            }
            let target = readlinkat(&next, "")?;
            let target = target.as_bytes();
            if target.is_empty() {
                return Err(Errno::ENOENT);
            }
            if target.first() == Some(&b'/') {
                cur = root.try_clone().map_err(io_errno)?;
                current_stat = fstat(&cur)?;
                display.clear();
            }
            todo.extend(split(target).rev().map(<[u8]>::to_vec));
            continue;
        }
        if last {
            if trailing_slash && !is_dir(&st) {
                return Err(Errno::ENOTDIR);
            }
            display.push(comp);
            return Ok(Resolved {
                fd: next,
                stat: st,
                display: join(&display),
            });
        }
        cur = next;
        current_stat = st;
        display.push(comp);
    }
    // The path named a directory (`/`, `.`, `..`): exec fails on it, but it resolves.
    Ok(Resolved {
        fd: cur,
        stat: current_stat,
        display: join(&display),
    })
}

fn split(path: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    path.split(|b| *b == b'/').filter(|c| !c.is_empty())
}

fn join(components: &[Vec<u8>]) -> Vec<u8> {
    if components.len() == 1 && components[0].first() == Some(&b'/') {
        return components[0].clone();
    }
    let mut out = Vec::new();
    for c in components {
        out.push(b'/');
        out.extend_from_slice(c);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

fn o_path(extra: OFlag) -> OFlag {
    OFlag::O_PATH | OFlag::O_CLOEXEC | extra
}

fn open_path(path: &str, extra: OFlag) -> Result<OwnedFd, Errno> {
    nix::fcntl::open(path, o_path(extra), StatMode::empty())
}

fn key_of(fd: impl AsFd) -> Result<(u64, u64), Errno> {
    let st = fstat(fd)?;
    Ok((st.st_dev, st.st_ino))
}

fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

fn is_symlink(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK
}

fn io_errno(e: std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Opens a resolved file for reading, without following anything again and without blocking.
pub(crate) fn open_for_read(resolved: &Resolved) -> Result<std::fs::File, Errno> {
    let path = format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&resolved.fd)
    );
    let fd = nix::fcntl::open(
        OsStr::new(&path),
        OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK | OFlag::O_NOCTTY,
        StatMode::empty(),
    )?;
    Ok(std::fs::File::from(fd))
}

#[cfg(test)]
mod tests;
