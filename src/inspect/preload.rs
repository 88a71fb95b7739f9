//! Preloads and audit modules of an ordinary dynamic program: `LD_PRELOAD` and `LD_AUDIT` make
//! the loader map a file and run its code before the program's, and the file needs no exec
//! bit. That is the loader trick by another door when the file is one the container can change
//! (rule `preload_from_writable`).
//!
//! Judged at the image checkpoint, where the environment is the one the kernel copied for the
//! exec (nothing of the image has run yet) and glibc has mapped its preloads but run none of
//! their code (audit modules it loads right after). "Can change" is judged by mounts: the name
//! counts when the file, or any directory its lookup passes through (symlinks followed), is on
//! a mount the container sees read-write, so a name that could be swapped after this look
//! counts too. That over-approximates the container's write permission (a root-owned library
//! in a writable root filesystem counts); a name whose whole lookup stays on read-only mounts
//! cannot change without a mount over it.
//!
//! A name without a slash is searched like the loader does, in `LD_LIBRARY_PATH` and then the
//! default directories; the program's `RUNPATH`/`RPATH` and `/etc/ld.so.cache` are not read.
//! A name with a dynamic string token (`$ORIGIN`, `$LIB`, `$PLATFORM`, which glibc expands)
//! counts as changeable.

use std::os::fd::OwnedFd;

use nix::sys::statvfs::{fstatvfs, FsFlags};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::image::{gone_or, read_capped, ImageInspection, ProcPath, MAX_ENVIRON_BYTES};
use super::resolve::{resolve_watching, FsView};
use super::{Finding, InspectError};
use crate::vocab::{Abi, Rule};

/// The loader variables of one environment that name code to load, as given.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Named {
    /// `(variable, name)`, in the environment's order.
    pub(crate) names: Vec<(&'static str, Vec<u8>)>,
    /// `LD_LIBRARY_PATH`, where a bare name is searched first.
    pub(crate) library_path: Vec<Vec<u8>>,
}

impl Named {
    /// Reads a whole environment (NUL-separated entries). Every occurrence of a variable
    /// counts, and `LD_PRELOAD` is split both as glibc splits it (spaces, colons) and as musl
    /// does (colons, any white space): a name either loader would load is judged.
    pub(crate) fn scan(environ: &[u8]) -> Self {
        let mut named = Named::default();
        let mut push = |var: &'static str, name: &[u8]| {
            let entry = (var, name.to_vec());
            // One past the bound is kept, so that the judgement sees there were too many.
            if !name.is_empty() && named.names.len() <= MAX_NAMES && !named.names.contains(&entry) {
                named.names.push(entry);
            }
        };
        for entry in environ.split(|b| *b == 0) {
            if let Some(v) = entry.strip_prefix(b"LD_PRELOAD=") {
                for name in v.split(|b| b" :".contains(b)) {
                    push("LD_PRELOAD", name);
                }
                for name in v.split(|b| *b == b':' || b.is_ascii_whitespace() || *b == 0x0b) {
                    push("LD_PRELOAD", name);
                }
            } else if let Some(v) = entry.strip_prefix(b"LD_AUDIT=") {
                for name in v.split(|b| *b == b':') {
                    push("LD_AUDIT", name);
                }
            } else if let Some(v) = entry.strip_prefix(b"LD_LIBRARY_PATH=") {
                // glibc splits on `:` and `;`, musl on `:` and newline; glibc takes the last
                // occurrence, musl the first: every entry of every occurrence is searched.
                let room = (MAX_SEARCH_DIRS + 1).saturating_sub(named.library_path.len());
                named.library_path.extend(
                    v.split(|b| b":;\n".contains(b))
                        .take(room)
                        .map(<[u8]>::to_vec),
                );
            }
        }
        named
    }
}

/// Characters of a name (or a directory) an event's reason shows.
const SHOWN_CHARS: usize = 200;
/// Names judged at most, and `LD_LIBRARY_PATH` entries searched at most: an environment with
/// more (up to 256 KiB of it could ask for thousands of lookups per exec) is judged as naming
/// a changeable file, without the lookups.
const MAX_NAMES: usize = 64;
const MAX_SEARCH_DIRS: usize = 64;

/// The directories a bare name is searched in after `LD_LIBRARY_PATH`, for a program of `abi`
/// (musl's `/usr/local/lib` included).
fn default_dirs(abi: Abi) -> &'static [&'static str] {
    match abi {
        Abi::X86_64 => &[
            "/lib/x86_64-linux-gnu",
            "/usr/lib/x86_64-linux-gnu",
            "/lib64",
            "/usr/lib64",
            "/lib",
            "/usr/lib",
            "/usr/local/lib",
        ],
        Abi::I386 => &[
            "/lib/i386-linux-gnu",
            "/usr/lib/i386-linux-gnu",
            "/lib32",
            "/usr/lib32",
            "/lib",
            "/usr/lib",
        ],
        Abi::X32 => &["/libx32", "/usr/libx32", "/lib", "/usr/lib"],
        Abi::Aarch64 => &[
            "/lib/aarch64-linux-gnu",
            "/usr/lib/aarch64-linux-gnu",
            "/lib64",
            "/usr/lib64",
            "/lib",
            "/usr/lib",
            "/usr/local/lib",
        ],
        Abi::Arm => &[
            "/lib/arm-linux-gnueabihf",
            "/usr/lib/arm-linux-gnueabihf",
            "/lib/arm-linux-gnueabi",
            "/usr/lib/arm-linux-gnueabi",
            "/lib",
            "/usr/lib",
        ],
    }
}

/// What one lookup showed.
#[derive(Debug, PartialEq, Eq)]
enum Lookup {
    /// Something on its way is on a read-write mount: what it finds can be changed.
    Changeable,
    /// It found a file, on read-only mounts all the way.
    Fixed,
    /// It found nothing, on read-only mounts all the way.
    Absent,
}

fn on_writable_mount(fd: &OwnedFd) -> bool {
    // A mount that cannot be asked counts as writable.
    fstatvfs(fd).map_or(true, |s| !s.flags().contains(FsFlags::ST_RDONLY))
}

/// Looks `path` up in the process's view, as its loader would open it.
fn look_up(view: &FsView, path: &[u8]) -> Result<Lookup, InspectError> {
    let errno = |errno| InspectError::ReadTarget {
        what: "filesystem view",
        errno,
    };
    let start = if path.first() == Some(&b'/') {
        view.root().map_err(errno)?
    } else {
        view.cwd().map_err(errno)?
    };
    let start = start.try_clone().map_err(|e| {
        errno(nix::errno::Errno::from_raw(
            e.raw_os_error().unwrap_or(libc::EIO),
        ))
    })?;
    let mut writable = false;
    let found = resolve_watching(view, start, b"", path, true, &mut |dir| {
        writable = writable || on_writable_mount(dir);
    });
    Ok(match found {
        _ if writable => Lookup::Changeable,
        Ok(f) if on_writable_mount(&f.fd) => Lookup::Changeable,
        Ok(_) => Lookup::Fixed,
        Err(_) => Lookup::Absent,
    })
}

/// Why `name` (from `var`) loads code the container can change, if it does.
fn changeable(
    view: &FsView,
    abi: Abi,
    library_path: &[Vec<u8>],
    var: &str,
    name: &[u8],
) -> Result<Option<String>, InspectError> {
    let shown: String = crate::event::lossy(name)
        .chars()
        .take(SHOWN_CHARS)
        .collect();
    if name.contains(&b'$') {
        // glibc expands `$ORIGIN`, `$LIB` and `$PLATFORM` (also in braces) in these names:
        // `$ORIGIN/../../tmp/p.so` leaves a read-only tree for a writable one. Not expanded
        // here; judged as changeable.
        return Ok(Some(format!(
            "{var} names {shown}, whose dynamic string tokens the loader expands ($ORIGIN, $LIB, $PLATFORM): judged as changeable"
        )));
    }
    if name.contains(&b'/') {
        return Ok((look_up(view, name)? == Lookup::Changeable).then(|| {
            format!("{var} names {shown}, which the container can change (the file or a directory on its way is on a read-write mount)")
        }));
    }
    if library_path.len() > MAX_SEARCH_DIRS {
        return Ok(Some(format!(
            "{var} names {shown}, searched for in LD_LIBRARY_PATH, which has more than {MAX_SEARCH_DIRS} entries: judged as changeable"
        )));
    }
    if let Some(dir) = library_path.iter().find(|d| d.contains(&b'$')) {
        let dir: String = crate::event::lossy(dir).chars().take(SHOWN_CHARS).collect();
        return Ok(Some(format!(
            "{var} names {shown}, searched for in LD_LIBRARY_PATH, whose entry {dir:?} has dynamic string tokens the loader expands: judged as changeable"
        )));
    }
    let dirs = library_path
        .iter()
        .map(Vec::as_slice)
        .chain(default_dirs(abi).iter().map(|d| d.as_bytes()));
    // Every directory of the search counts, also past the first file found: glibc and musl go
    // on past a file they cannot read or whose ELF class is not the program's, which this
    // look (with the supervisor's rights) cannot tell.
    for dir in dirs {
        // An empty entry of LD_LIBRARY_PATH is the working directory.
        let mut path = if dir.is_empty() {
            b".".to_vec()
        } else {
            dir.to_vec()
        };
        path.push(b'/');
        path.extend_from_slice(name);
        match look_up(view, &path)? {
            Lookup::Changeable => {
                let dir: String = crate::event::lossy(dir).chars().take(SHOWN_CHARS).collect();
                return Ok(Some(format!("{var} names {shown}, searched for in {dir:?}, where the container can change what is found (a read-write mount)")));
            }
            Lookup::Fixed | Lookup::Absent => {}
        }
    }
    Ok(None)
}

/// Up to `MAX_ENVIRON_BYTES` of `/proc/TID/environ`, and whether there was more.
fn read_environ(tid: u32) -> Result<(Vec<u8>, bool), InspectError> {
    let path = ProcPath::new(tid, format_args!("environ"));
    let fd = nix::fcntl::open(
        path.as_bytes(),
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(gone_or("environ"))?;
    read_capped(fd, "environ", MAX_ENVIRON_BYTES)
}

/// Judges the preloads and audit modules of task `tid`'s image (an ordinary dynamic program,
/// pending on its image checkpoint; `valid` says whether it still is). `token` identifies the
/// exec when the record has it. `None` when nothing is named or every name is fixed.
pub(crate) fn judge(
    tid: u32,
    abi: Abi,
    token: Option<u128>,
    valid: &dyn Fn() -> bool,
) -> Result<Option<ImageInspection>, InspectError> {
    // The common case, no loader variable at all, costs one read of /proc/TID/environ (its
    // path opened directly: /proc/TID is opened only when there is something to look up).
    let (environ, cut) = read_environ(tid)?;
    if !cut && memchr::memmem::find(&environ, b"LD_").is_none() {
        return Ok(None);
    }
    let view = FsView::of_task(tid).map_err(gone_or("/proc entry"))?;
    // The environment read above is this task's only if the notification is still pending
    // once /proc/TID is pinned.
    if !valid() {
        return Err(InspectError::Gone);
    }
    let named = Named::scan(&environ);
    let mut reason = cut.then(|| {
        format!("the environment is over {MAX_ENVIRON_BYTES} bytes and could not be read whole: it may name preloads or audit modules")
    });
    if reason.is_none() && named.names.len() > MAX_NAMES {
        reason = Some(format!(
            "the environment names more than {MAX_NAMES} preloads and audit modules: judged as naming a changeable file"
        ));
    }
    for (var, name) in &named.names {
        if reason.is_some() {
            break;
        }
        reason = changeable(&view, abi, &named.library_path, var, name)?;
    }
    let Some(reason) = reason else {
        return Ok(None);
    };
    let mut found = super::image::identify(tid, abi, &view.proc_dir, token)?;
    if !valid() {
        return Err(InspectError::Gone);
    }
    found.finding = Some(Finding {
        rule: Rule::PreloadFromWritable,
        reason,
        loader: None,
    });
    Ok(Some(found))
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStrExt;

    use super::*;

    fn names(environ: &[u8]) -> Vec<String> {
        Named::scan(environ)
            .names
            .into_iter()
            .map(|(v, n)| format!("{v} {}", String::from_utf8(n).unwrap()))
            .collect::<Vec<_>>()
    }

    #[test]
    fn preloads_are_split_as_either_loader_splits_them() {
        assert_eq!(
            names(b"A=1\0LD_PRELOAD=/a.so /b.so:c.so\tx.so\0"),
            [
                "LD_PRELOAD /a.so",
                "LD_PRELOAD /b.so",
                "LD_PRELOAD c.so\tx.so",
                "LD_PRELOAD c.so",
                "LD_PRELOAD x.so",
            ]
        );
    }

    #[test]
    fn audit_modules_split_on_colons_only_and_every_occurrence_counts() {
        assert_eq!(
            names(b"LD_AUDIT=/a b.so:/c.so\0LD_AUDIT=/d.so\0LD_AUDITX=/e.so\0"),
            ["LD_AUDIT /a b.so", "LD_AUDIT /c.so", "LD_AUDIT /d.so",]
        );
    }

    #[test]
    fn empty_values_and_other_variables_name_nothing() {
        assert!(names(b"LD_PRELOAD=\0LD_AUDIT=::\0XLD_PRELOAD=/x.so\0").is_empty());
        let n = Named::scan(b"LD_LIBRARY_PATH=/opt/l::/tmp;x\0");
        assert_eq!(
            n.library_path,
            [b"/opt/l".to_vec(), vec![], b"/tmp".to_vec(), b"x".to_vec()]
        );
        // musl's newline, and a second occurrence (musl takes the first, glibc the last).
        let n = Named::scan(b"LD_LIBRARY_PATH=/a\n/b\0LD_LIBRARY_PATH=/c\0");
        assert_eq!(
            n.library_path,
            [b"/a".to_vec(), b"/b".to_vec(), b"/c".to_vec()]
        );
    }

    /// An environment cannot make the look do unbounded work: names and search entries stop
    /// one past their bounds, and are then judged without lookups.
    #[test]
    fn names_and_search_entries_are_bounded() {
        let mut env = b"LD_PRELOAD=".to_vec();
        for i in 0..10_000 {
            env.extend_from_slice(format!("/n{i}.so ").as_bytes());
        }
        env.extend_from_slice(b"\0LD_LIBRARY_PATH=");
        env.extend_from_slice(&b":".repeat(100_000));
        env.push(0);
        let n = Named::scan(&env);
        assert_eq!(n.names.len(), MAX_NAMES + 1);
        assert_eq!(n.library_path.len(), MAX_SEARCH_DIRS + 1);
        let view = FsView::of_self().unwrap();
        let why = changeable(&view, Abi::X86_64, &n.library_path, "LD_PRELOAD", b"x.so")
            .unwrap()
            .unwrap();
        assert!(why.contains("more than"), "{why}");
    }

    /// This process's view: /proc is read-write here as in every test machine's root, and
    /// /sys read-only only in some; a tmpfs and a read-only bind of it are made for the test
    /// when it runs as root.
    #[test]
    fn a_name_on_a_read_write_mount_is_changeable_and_a_missing_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("p.so");
        std::fs::write(&lib, b"x").unwrap();
        let view = FsView::of_self().unwrap();
        let rw = on_writable_mount(&std::fs::File::open(dir.path()).unwrap().into());
        let found = changeable(
            &view,
            Abi::X86_64,
            &[],
            "LD_PRELOAD",
            lib.as_os_str().as_bytes(),
        )
        .unwrap();
        assert_eq!(found.is_some(), rw, "{found:?}");
        // A bare name searched in a read-write LD_LIBRARY_PATH entry counts even when absent:
        // the container could put it there.
        let found = changeable(
            &view,
            Abi::X86_64,
            &[dir.path().as_os_str().as_bytes().to_vec()],
            "LD_PRELOAD",
            b"absent.so",
        )
        .unwrap();
        assert_eq!(found.is_some(), rw, "{found:?}");
    }
}
