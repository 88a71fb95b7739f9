//! The image checkpoint: a process image at its first thread-pointer setup
//! (`arch_prctl(ARCH_SET_FS)`, `set_thread_area`), after the exec and before any of the image's
//! own code runs. `/proc/PID/exe` is then what the kernel really exec'd, `/proc/PID/cmdline` the
//! argv it really passed, and the interpreter the kernel loaded is mapped at `AT_BASE`: no race
//! on the exec's path, argv, file or `PT_INTERP` can fool this look.
//!
//! The answer path for an ordinary exec is a `stat` of `/proc/PID/exe` (a file version seen
//! before is not read again) and, for a dynamic executable, one `PROCMAP_QUERY` ioctl that
//! names the file whose code makes the call (at the notification's instruction pointer): one of
//! the container's loaders, or the slow path, which judges the interpreter the kernel mapped at
//! `AT_BASE`. A look that finds nothing needs no `NOTIF_ID_VALID` check: if the task died and
//! its pid was reused meanwhile, the answer goes to a notification that no longer exists. Every
//! finding is checked before it is returned.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, OFlag};
use nix::sys::stat::{fstat, stat, FileStat, Mode as StatMode};

use super::file::{self, FileKind, LoaderKind};
use super::loader_args::LoaderEnv;
use super::resolve::{FsView, Resolved};
use super::{
    custom_interpreter, loader_finding, version_of, Abi, Argv, FileCache, FileVersion, Finding,
    InspectError, SystemLoaders, Via,
};
use crate::phases::{Phase, PhaseClock};
use crate::sys::Mapping;

mod auxv;
mod maps;

use auxv::{random_bytes, read_auxv};
pub(super) use maps::mapping_at;
use maps::{maps_audit_naming_file, open_by_name, open_mapped, open_maps};

/// Bytes of `/proc/PID/cmdline` read (the loader's options come first).
const MAX_CMDLINE_BYTES: u64 = 64 * 1024;
/// Arguments kept of it.
const MAX_ARGS: usize = 128;
/// Bytes of `/proc/PID/environ` scanned for `LD_TRACE_LOADED_OBJECTS` and `LD_AUDIT`.
pub(super) const MAX_ENVIRON_BYTES: u64 = 256 * 1024;

/// What a checkpoint found.
#[derive(Debug, Default)]
pub(crate) struct ImageInspection {
    /// `/proc/PID/exe`, as the supervisor sees it (read only for a finding).
    pub exe: Vec<u8>,
    /// The image's argv (read only for a finding).
    pub argv: Argv,
    /// An identity of this exec that the process cannot forge: when the exec record has it,
    /// the time of the exec as the kernel wrote it; else the 16 bytes at `AT_RANDOM` (not
    /// their address, which `setarch -R` and padded arguments make the same in the next
    /// image). Read only for a finding.
    pub token: Option<u128>,
    pub finding: Option<Finding>,
    /// Answered from the exec record alone, without a look through `/proc`.
    pub by_record: bool,
    /// A dynamic program whose interpreter is one of the container's loaders (its preloads
    /// are judged apart: [`super::preload`]).
    pub dynamic: bool,
}

/// What an exec loaded, as the kernel's exec record has it (`supervisor::record`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Loaded {
    /// The executable, named as `stat` of `/proc/PID/exe` names it (the loader itself, when a
    /// loader was run).
    pub program: Option<FileVersion>,
    /// The file mapped at `AT_BASE`, named as `/proc/PID/maps` names it (on an overlay
    /// filesystem, the layer's file): the interpreter the kernel loaded for the program.
    pub interpreter: Option<FileVersion>,
    /// When the exec happened (`CLOCK_BOOTTIME`, ns), written by the kernel's exec path:
    /// different for every exec of the process.
    pub exec_time: u64,
}

/// `/proc/TID/NAME` in a stack buffer: the answer path allocates nothing for an ordinary exec.
pub(super) struct ProcPath {
    buf: [u8; 96],
    len: usize,
}

impl ProcPath {
    pub(super) fn new(tid: u32, name: std::fmt::Arguments<'_>) -> Self {
        use std::io::Write;
        let mut buf = [0u8; 96];
        let mut rest = &mut buf[..];
        // The longest name (`map_files/START-END` with 64-bit addresses) fits in 96 bytes.
        let _ = write!(rest, "/proc/{tid}/{name}");
        let len = 96 - rest.len();
        Self { buf, len }
    }

    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// What the exe of an image is, as far as the checkpoint cares.
enum ExeKind {
    Loader(LoaderKind),
    /// A dynamic executable: its interpreter must be one of the container's loaders.
    Dynamic,
    /// Anything else runs its own code: nothing more to see.
    Ordinary,
}

impl ExeKind {
    fn of(kind: &FileKind) -> Self {
        match kind {
            FileKind::Loader(k) => ExeKind::Loader(*k),
            FileKind::Dynamic { .. } => ExeKind::Dynamic,
            _ => ExeKind::Ordinary,
        }
    }
}

pub(super) fn gone_or(what: &'static str) -> impl Fn(Errno) -> InspectError {
    move |errno| {
        if errno == Errno::ENOENT || errno == Errno::ESRCH {
            InspectError::Gone
        } else {
            InspectError::ReadTarget { what, errno }
        }
    }
}

fn io_errno(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Inspects the image of task `tid` (pending on a checkpoint notification; `valid` says
/// whether it still is, so that what was read belongs to it).
/// `ip` is the instruction pointer of the trapped call.
///
/// `recorded` is what the kernel's exec record says this process's latest exec loaded, when it
/// has an entry: an ordinary image it tells apart alone is answered from it, without a look
/// through `/proc` ([`ImageInspection::by_record`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn inspect_image(
    tid: u32,
    abi: Abi,
    ip: u64,
    loaders: &SystemLoaders,
    cache: &mut FileCache,
    recorded: Option<&Loaded>,
    valid: &dyn Fn() -> bool,
    clock: &mut PhaseClock,
) -> Result<ImageInspection, InspectError> {
    // No validity check needed: the entry is of this task's image if the notification is
    // still pending when the answer is given (a later exec in the process would have killed
    // the task first), and an answer to a notification no longer pending does nothing.
    if let Some(kind) = recorded.and_then(|r| ordinary_by_record(r, loaders, cache)) {
        clock.lap(Phase::Resolve);
        return Ok(ImageInspection {
            by_record: true,
            dynamic: matches!(kind, ExeKind::Dynamic),
            ..ImageInspection::default()
        });
    }
    // Read while the notification is pending, so the pid is still the task's (checked below).
    let exe_path = ProcPath::new(tid, format_args!("exe"));
    let st = stat(exe_path.as_bytes()).map_err(gone_or("exe"))?;
    clock.lap(Phase::Resolve);
    let version = version_of(&st);
    let known = match loaders.kind_of((st.st_dev, st.st_ino)) {
        Some(k) => Some(ExeKind::Loader(k)),
        None => cache.get(&version).map(ExeKind::of),
    };
    let kind = match known {
        Some(k) => k,
        None => {
            let file = nix::fcntl::open(
                exe_path.as_bytes(),
                OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
                StatMode::empty(),
            )
            .map_err(gone_or("exe"))?;
            let st = fstat(&file).map_err(gone_or("exe"))?;
            let k =
                cache.get_or_classify(version_of(&st), || classify_fd(file, "/proc/PID/exe"))?;
            ExeKind::of(&k)
        }
    };
    clock.lap(Phase::Classify);
    let image = Image {
        tid,
        abi,
        ip,
        exe: &st,
    };
    let mut inspection = match kind {
        ExeKind::Ordinary => return Ok(ImageInspection::default()),
        ExeKind::Dynamic => {
            judge_interpreter(&image, loaders, cache, valid, clock)?.unwrap_or(ImageInspection {
                dynamic: true,
                ..ImageInspection::default()
            })
        }
        ExeKind::Loader(kind) => inspect_loader_image(tid, abi, kind, valid)?,
    };
    if let (Some(r), Some(_)) = (recorded, &inspection.finding) {
        inspection.token = Some(record_token(r));
    }
    Ok(inspection)
}

/// Whether the exec record alone shows an image that runs its own code: a program already
/// classified (by this file version, as a look through `/proc` named it) as not a loader and
/// either static, with no interpreter loaded, or dynamic, with one of the container's loaders
/// as the interpreter the kernel mapped (by device and inode, as a look at the mapping would
/// name it). Anything else is looked at through `/proc`. Where the record names a file
/// otherwise than `stat` does (a btrfs subvolume: the filesystem's device, not the
/// subvolume's), nothing matches, and every image there is looked at through `/proc`.
fn ordinary_by_record(
    recorded: &Loaded,
    loaders: &SystemLoaders,
    cache: &FileCache,
) -> Option<ExeKind> {
    let program = recorded.program.as_ref()?;
    if loaders.kind_of((program.dev, program.ino)).is_some() {
        return None;
    }
    let kind = cache.get(program).map(ExeKind::of)?;
    let ordinary = match kind {
        ExeKind::Ordinary => recorded.interpreter.is_none(),
        ExeKind::Dynamic => recorded.interpreter.is_some_and(|i| {
            let key = (i.dev, i.ino);
            loaders.kind_of(key).is_some() || cache.is_mapped_loader(key)
        }),
        ExeKind::Loader(_) => false,
    };
    ordinary.then_some(kind)
}

/// The image a checkpoint looks at.
struct Image<'a> {
    tid: u32,
    abi: Abi,
    /// The instruction pointer of the trapped call.
    ip: u64,
    exe: &'a FileStat,
}

fn classify_fd(fd: OwnedFd, what: &str) -> Result<FileKind, InspectError> {
    file::classify(&std::fs::File::from(fd)).map_err(|source| InspectError::File {
        path: what.to_owned(),
        source,
    })
}

/// A dynamic executable's interpreter, as mapped: `None` when it is one of the container's
/// loaders, else the finding. The common case is answered from the file whose code makes the
/// call: the system loader setting up the program's thread pointer.
fn judge_interpreter(
    image: &Image<'_>,
    loaders: &SystemLoaders,
    cache: &mut FileCache,
    valid: &dyn Fn() -> bool,
    clock: &mut PhaseClock,
) -> Result<Option<ImageInspection>, InspectError> {
    let tid = image.tid;
    let maps = open_maps(tid)?;
    let known = |m: &Option<Mapping>, cache: &FileCache| {
        m.as_ref()
            .is_some_and(|m| loaders.kind_of(m.key).is_some() || cache.is_mapped_loader(m.key))
    };
    let caller = mapping_at(&maps, image.ip)?;
    clock.lap(Phase::Resolve);
    if known(&caller, cache) {
        return Ok(None);
    }
    // Someone else sets up the thread pointer: judge the interpreter the kernel mapped.
    let aux = read_auxv(tid, image.abi)?;
    clock.lap(Phase::Read);
    if aux.base == 0 {
        // No interpreter was loaded (a version of the file is classified once, and a new
        // version has a new change time).
        return Ok(None);
    }
    let mapping = mapping_at(&maps, aux.base)?;
    clock.lap(Phase::Resolve);
    if known(&mapping, cache) {
        return Ok(None);
    }
    // Not known by its mapping: look at the mapped file itself.
    let interp_name = match cache.get(&version_of(image.exe)) {
        Some(FileKind::Dynamic { interp }) => interp.clone(),
        _ => Vec::new(),
    };
    let file = match mapping {
        Some(m) => open_mapped(tid, &m).or_else(|_| open_by_name(tid, &interp_name)),
        None => open_by_name(tid, &interp_name),
    }?;
    let st = fstat(&file).map_err(gone_or("interpreter"))?;
    if loaders.kind_of((st.st_dev, st.st_ino)).is_some() {
        // The same file as one of the container's loaders, seen through another device
        // number (an overlay filesystem shows its own; the mapping names the layer's).
        if let Some(m) = mapping {
            cache.add_mapped_loader(m.key);
        }
        return Ok(None);
    }
    let kind = cache.get_or_classify(version_of(&st), || classify_fd(file, "the interpreter"))?;
    clock.lap(Phase::Classify);
    let proc_dir = open_proc_dir(tid)?;
    let exe_display = readlinkat(&proc_dir, "exe")
        .map(|p| p.as_bytes().to_vec())
        .unwrap_or_default();
    let argv = read_cmdline(&proc_dir)?;
    let token = random_bytes(image.tid, aux.random);
    if !valid() {
        return Err(InspectError::Gone);
    }
    clock.lap(Phase::Read);
    let loader = match kind {
        FileKind::Loader(k) => Some(k),
        _ => None,
    };
    let shown = crate::event::lossy(&interp_name);
    let program = argv
        .items
        .first()
        .cloned()
        .unwrap_or_else(|| exe_display.clone());
    Ok(Some(ImageInspection {
        exe: exe_display,
        argv,
        token,
        finding: Some(custom_interpreter(&interp_name, &shown, loader, &program)),
        by_record: false,
        dynamic: true,
    }))
}

/// `/proc/TID`, opened once so that what is read through it is that task's.
fn open_proc_dir(tid: u32) -> Result<OwnedFd, InspectError> {
    FsView::of_task(tid)
        .map(|view| view.proc_dir)
        .map_err(gone_or("/proc entry"))
}

/// An image whose exe is a loader: what it runs, from its real argv and environment.
fn inspect_loader_image(
    tid: u32,
    abi: Abi,
    kind: LoaderKind,
    valid: &dyn Fn() -> bool,
) -> Result<ImageInspection, InspectError> {
    let proc_dir = open_proc_dir(tid)?;
    // From here on, /proc/TID is the notifying task's own, not a reused pid's.
    if !valid() {
        return Err(InspectError::Gone);
    }
    let exe = openat(
        &proc_dir,
        "exe",
        OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
        StatMode::empty(),
    )
    .map_err(gone_or("exe"))?;
    let stat = fstat(&exe).map_err(gone_or("exe"))?;
    let display = readlinkat(&proc_dir, "exe")
        .map(|p| p.as_bytes().to_vec())
        .unwrap_or_default();
    let argv = read_cmdline(&proc_dir)?;
    let env = read_loader_env(&proc_dir)?;
    let token = random_bytes(tid, read_auxv(tid, abi)?.random);
    if !valid() {
        return Err(InspectError::Gone);
    }
    let resolved = Resolved {
        fd: exe,
        stat,
        display: display.clone(),
    };
    let mut invocation = super::parse_loader_args_at_image(kind, &argv, env);
    if invocation.may_load_audit_modules()
        && maps_audit_naming_file(tid, (resolved.stat.st_dev, resolved.stat.st_ino))?
    {
        invocation.audit = true;
    }
    if !valid() {
        return Err(InspectError::Gone);
    }
    let finding = loader_finding(&resolved, kind, invocation, Via::Direct);
    Ok(ImageInspection {
        exe: display,
        argv,
        token,
        finding: Some(finding),
        by_record: false,
        dynamic: false,
    })
}

/// What an event names of the image of `tid` (`proc_dir` is its `/proc/TID`): its exe, argv
/// and an identity of the exec (`token`, else its `AT_RANDOM` bytes). No finding yet.
pub(super) fn identify(
    tid: u32,
    abi: Abi,
    proc_dir: &OwnedFd,
    token: Option<u128>,
) -> Result<ImageInspection, InspectError> {
    let exe = readlinkat(proc_dir, "exe")
        .map(|p| p.as_bytes().to_vec())
        .unwrap_or_default();
    let argv = read_cmdline(proc_dir)?;
    let token = match token {
        Some(t) => Some(t),
        None => random_bytes(tid, read_auxv(tid, abi)?.random),
    };
    Ok(ImageInspection {
        exe,
        argv,
        token,
        finding: None,
        by_record: false,
        dynamic: true,
    })
}

/// The identity of an exec that the exec record gives (`Loaded::exec_time`); the top bit tells
/// it from 16 random bytes of another exec of the pid.
pub(crate) fn record_token(recorded: &Loaded) -> u128 {
    u128::from(recorded.exec_time) | 1 << 127
}

pub(super) fn read_proc(
    dir: &OwnedFd,
    name: &'static str,
    max: u64,
) -> Result<(Vec<u8>, bool), InspectError> {
    let fd = openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        StatMode::empty(),
    )
    .map_err(gone_or(name))?;
    read_capped(fd, name, max)
}

/// Up to `max` bytes of the open file `fd` (`what` names it in errors), and whether there was
/// more.
pub(super) fn read_capped(
    fd: OwnedFd,
    what: &'static str,
    max: u64,
) -> Result<(Vec<u8>, bool), InspectError> {
    let mut bytes = Vec::new();
    std::fs::File::from(fd)
        .take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| InspectError::ReadTarget {
            what,
            errno: io_errno(&e),
        })?;
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    let truncated = bytes.len() > max;
    bytes.truncate(max);
    Ok((bytes, truncated))
}

fn read_cmdline(dir: &OwnedFd) -> Result<Argv, InspectError> {
    let (bytes, cut) = read_proc(dir, "cmdline", MAX_CMDLINE_BYTES)?;
    let body = bytes.strip_suffix(&[0]).unwrap_or(&bytes);
    let mut items: Vec<Vec<u8>> = body.split(|b| *b == 0).map(<[u8]>::to_vec).collect();
    let truncated = cut || items.len() > MAX_ARGS;
    items.truncate(MAX_ARGS);
    Ok(Argv { items, truncated })
}

fn read_loader_env(dir: &OwnedFd) -> Result<LoaderEnv, InspectError> {
    let (bytes, cut) = read_proc(dir, "environ", MAX_ENVIRON_BYTES)?;
    let mut env = LoaderEnv::scan(bytes.split(|b| *b == 0));
    if cut {
        env.note_cut();
    }
    Ok(env)
}

#[cfg(test)]
mod tests;
