//! Inspection of one exec: resolve the target inside the process's root, classify the file by
//! content, and work out which program a loader would run. Knows nothing of seccomp: the
//! arguments come through [`ExecArgs`], read lazily, because an ordinary exec needs none.

pub(crate) mod allow;
mod cache;
pub mod file;
mod finding;
pub(crate) mod image;
pub mod loader_args;
pub(crate) mod preload;
pub(crate) mod resolve;

use nix::errno::Errno;

use crate::phases::{Phase, PhaseClock};
use crate::vocab::{Abi, Rule, Syscall};
use file::{FileError, FileKind, LoaderKind};
use loader_args::{LoaderEnv, LoaderInvocation};
use resolve::{FsView, Resolved};

pub(crate) use cache::{version_of, FileCache, FileVersion, SystemLoaders};
pub(crate) use finding::{custom_interpreter, loader_finding, parse_loader_args_at_image};
use finding::{parse_loader_args, with_cut_argv};

/// `AT_EMPTY_PATH` and `AT_SYMLINK_NOFOLLOW` as execveat takes them.
pub(crate) const AT_EMPTY_PATH: i32 = libc::AT_EMPTY_PATH;
pub(crate) const AT_SYMLINK_NOFOLLOW: i32 = libc::AT_SYMLINK_NOFOLLOW;
/// Scripts whose interpreter is a script, and so on: the kernel stops after a few levels.
const MAX_INTERPRETER_DEPTH: u32 = 4;

/// Where glibc and musl put their loaders on the distributions CI images are built from.
#[cfg(target_arch = "x86_64")]
pub(crate) const SYSTEM_LOADER_PATHS: &[&str] = &[
    "/lib64/ld-linux-x86-64.so.2",
    "/lib/ld-linux-x86-64.so.2",
    "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    "/usr/lib64/ld-linux-x86-64.so.2",
    "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    "/lib/ld-linux.so.2",
    "/lib32/ld-linux.so.2",
    "/usr/lib32/ld-linux.so.2",
    "/lib/i386-linux-gnu/ld-linux.so.2",
    "/usr/lib/i386-linux-gnu/ld-linux.so.2",
    "/libx32/ld-linux-x32.so.2",
    "/usr/libx32/ld-linux-x32.so.2",
    "/lib/ld-musl-x86_64.so.1",
    "/usr/lib/ld-musl-x86_64.so.1",
    "/lib/ld-musl-i386.so.1",
];
#[cfg(target_arch = "aarch64")]
pub(crate) const SYSTEM_LOADER_PATHS: &[&str] = &[
    "/lib/ld-linux-aarch64.so.1",
    "/lib64/ld-linux-aarch64.so.1",
    "/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1",
    "/usr/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1",
    "/usr/lib64/ld-linux-aarch64.so.1",
    "/lib/ld-linux-armhf.so.3",
    "/lib/arm-linux-gnueabihf/ld-linux-armhf.so.3",
    "/usr/lib/arm-linux-gnueabihf/ld-linux-armhf.so.3",
    "/lib/ld-musl-aarch64.so.1",
    "/usr/lib/ld-musl-aarch64.so.1",
    "/lib/ld-musl-armhf.so.1",
];

/// This machine's glibc loader, for the unit tests.
#[cfg(test)]
pub(crate) const TEST_LOADER: &str = SYSTEM_LOADER_PATHS[0];

/// One exec as the kernel was asked for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ExecRequest {
    /// `Execve` or `Execveat`.
    pub(crate) syscall: Syscall,
    pub(crate) abi: Abi,
    pub(crate) path: Vec<u8>,
    /// The execveat dirfd; `None` for execve and `AT_FDCWD`.
    pub(crate) dirfd: Option<i32>,
    pub(crate) flags: i32,
}

/// The exec's argument vector, as far as it was read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Argv {
    pub(crate) items: Vec<Vec<u8>>,
    /// More arguments, or longer ones, than the supervisor reads.
    pub(crate) truncated: bool,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum InspectError {
    /// The path does not resolve; the kernel's own lookup fails with the same errno.
    #[error("resolving the exec path: {errno}")]
    Resolve { errno: Errno },
    #[error("reading the target's {what}: {errno}")]
    ReadTarget { what: &'static str, errno: Errno },
    /// The notification is no longer valid: the task died or was interrupted.
    #[error("the exec is no longer pending")]
    Gone,
    #[error("classifying {path}: {source}")]
    File { path: String, source: FileError },
    #[error("opening {path}: {errno}")]
    Open { path: String, errno: Errno },
}

/// Supplies argv and the loader-relevant environment, only when they are needed.
pub(crate) trait ExecArgs {
    fn argv(&mut self) -> Result<Argv, InspectError>;
    fn loader_env(&mut self) -> Result<LoaderEnv, InspectError>;
}

/// Fixed arguments: what `explain` and the tests use.
pub(crate) struct GivenArgs {
    pub(crate) argv: Argv,
    pub(crate) env: LoaderEnv,
}

impl ExecArgs for GivenArgs {
    fn argv(&mut self) -> Result<Argv, InspectError> {
        Ok(self.argv.clone())
    }
    fn loader_env(&mut self) -> Result<LoaderEnv, InspectError> {
        Ok(self.env)
    }
}

/// Field `number` of a `/proc/PID/stat` line, numbered as `proc(5)` does (22: start time,
/// 28: start of the stack); the command name, which may hold spaces and `)`, is skipped.
pub(crate) fn proc_stat_field(stat: &str, number: usize) -> Option<u64> {
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(number.checked_sub(3)?)?
        .parse()
        .ok()
}

/// A process's start time (clock ticks since boot): with the pid, an identity that a reused
/// pid does not share.
pub(crate) fn start_time_of(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    proc_stat_field(&stat, 22)
}

/// The thread-group id of a task (the pid its process has after an exec).
pub(crate) fn tgid_of(tid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// How a loader came to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Via {
    /// The exec named the loader (by any path, copy, fd or memfd).
    Direct,
    /// A `#!` line named the loader.
    Shebang,
    /// A binary's `PT_INTERP` named a loader outside the system set.
    PtInterp,
}

impl Via {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Via::Direct => "direct",
            Via::Shebang => "shebang",
            Via::PtInterp => "pt_interp",
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct LoaderFinding {
    pub(crate) path: Vec<u8>,
    pub(crate) kind: LoaderKind,
    pub(crate) invocation: LoaderInvocation,
    pub(crate) via: Via,
}

#[derive(Clone, Debug)]
pub(crate) struct Finding {
    pub(crate) rule: Rule,
    pub(crate) reason: String,
    pub(crate) loader: Option<LoaderFinding>,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Inspection {
    /// The target's path inside the root, as resolved.
    pub(crate) resolved: Option<Vec<u8>>,
    pub(crate) finding: Option<Finding>,
    /// What the kernel will load for this exec, as far as it could be resolved.
    pub(crate) runs: Option<Runs>,
}

/// What an exec loads: the new image's executable (`/proc/PID/exe`: the target, or for a
/// script the interpreter its `#!` chain ends at) and the interpreter its `PT_INTERP` names
/// (none for a static program or a loader run directly).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Runs {
    pub(crate) program: FileVersion,
    pub(crate) interpreter: Option<FileVersion>,
}

/// Inspects one exec; `clock` is charged for resolving and classifying.
pub(crate) fn inspect(
    req: &ExecRequest,
    view: &FsView,
    args: &mut dyn ExecArgs,
    loaders: &SystemLoaders,
    cache: &mut FileCache,
    clock: &mut PhaseClock,
) -> Result<Inspection, InspectError> {
    let target = resolve_target(req, view)?;
    clock.lap(Phase::Resolve);
    let mut inspection = Inspection {
        resolved: Some(target.display.clone()),
        finding: None,
        runs: None,
    };
    if !target.is_regular() {
        // The kernel refuses to exec anything but a regular file (EACCES).
        return Ok(inspection);
    }
    let ctx = Ctx {
        view,
        loaders,
        cache: std::cell::RefCell::new(cache),
        runs: std::cell::Cell::new(Some(Runs {
            program: version_of(&target.stat),
            interpreter: None,
        })),
    };
    let kind = ctx.kind_of(&target)?;
    clock.lap(Phase::Classify);
    inspection.finding = match kind {
        FileKind::Loader(kind) => {
            let argv = args.argv()?;
            let env = args.loader_env()?;
            // A glibc loader without 2.33's options reads them by its own rules.
            let system = ctx.loaders.kind_of(target.key()).is_some();
            // (The resolved descriptor may be O_PATH: the bytes are read through a new one.)
            let old_glibc = kind == LoaderKind::Glibc
                && resolve::open_for_read(&target)
                    .ok()
                    .is_some_and(|f| file::glibc_before_2_33(&f).unwrap_or(false));
            let mut invocation = if old_glibc {
                with_cut_argv(
                    &argv,
                    loader_args::parse_glibc_before_2_33(&argv.items, env),
                )
            } else {
                parse_loader_args(kind, &argv, env)
            };
            // A loader that is not one of the container's own: whatever its argv says now, a
            // thread sharing the memory can change it before the kernel reads it, and a copy
            // may never reach the image checkpoint (one patched to set its thread pointer
            // without a system call). Judged as running code, in any mode.
            if !system && !invocation.runs_foreign_code() {
                invocation.mode = loader_args::LoaderMode::Run;
                invocation.unknown_option = true;
                invocation.program.get_or_insert_with(|| {
                    b"(whatever its arguments say when the kernel reads them)".to_vec()
                });
            }
            // The program named now; the image checkpoint reads the file the loader mapped.
            if invocation.may_load_audit_modules() {
                let named = invocation
                    .program
                    .as_deref()
                    .and_then(|p| allow::open_program(view, p).ok())
                    .is_some_and(|(f, _)| file::names_audit_modules(&f).unwrap_or(true));
                invocation.audit |= named;
            }
            let target = ctx.canonical(target, &req.path, req.dirfd);
            inspection.resolved = Some(target.display.clone());
            Some(loader_finding(&target, kind, invocation, Via::Direct))
        }
        FileKind::Script(sb) => {
            let script = script_name(req);
            ctx.script_finding(&sb, script, args, 1)?
        }
        FileKind::Dynamic { interp } => ctx.interp_finding(&interp, &req.path)?,
        FileKind::OtherElf | FileKind::Other => None,
    };
    inspection.runs = ctx.runs.get();
    Ok(inspection)
}

/// Resolves the exec target the way the kernel will for this syscall and these flags.
fn resolve_target(req: &ExecRequest, view: &FsView) -> Result<Resolved, InspectError> {
    let err = |errno| InspectError::Resolve { errno };
    if req.path.is_empty() {
        if req.flags & AT_EMPTY_PATH == 0 {
            return Err(err(Errno::ENOENT));
        }
        // execveat(fd, "", AT_EMPTY_PATH): fexecve, the file behind the fd.
        let fd = match req.dirfd {
            Some(fd) => view.target_fd(fd).map_err(err)?,
            None => view.start_dir(None).map_err(err)?,
        };
        let display = fd_display(view, req.dirfd);
        let stat = nix::sys::stat::fstat(&fd).map_err(err)?;
        return Ok(Resolved { fd, stat, display });
    }
    let follow = req.flags & AT_SYMLINK_NOFOLLOW == 0;
    if let Some(found) = resolve::resolve_absolute_fast(view, &req.path, follow) {
        return found.map_err(err);
    }
    let start = view.start_dir(req.dirfd).map_err(err)?;
    let start_display = fd_display(view, req.dirfd);
    resolve::resolve(view, start, &start_display, &req.path, follow).map_err(err)
}

/// What `/proc/TID/fd/N` (or the cwd) says, for display only.
fn fd_display(view: &FsView, fd: Option<i32>) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let link = match fd {
        Some(fd) => format!("fd/{fd}"),
        None => "cwd".to_owned(),
    };
    nix::fcntl::readlinkat(&view.proc_dir, link.as_str())
        .map(|s| s.as_bytes().to_vec())
        .unwrap_or_else(|_| b"/".to_vec())
}

/// The script's name as the kernel hands it to the interpreter.
fn script_name(req: &ExecRequest) -> Vec<u8> {
    match (req.dirfd, req.path.first()) {
        (Some(fd), None) => format!("/dev/fd/{fd}").into_bytes(),
        (Some(fd), Some(c)) if *c != b'/' => {
            let mut p = format!("/dev/fd/{fd}/").into_bytes();
            p.extend_from_slice(&req.path);
            p
        }
        _ => req.path.clone(),
    }
}

struct Ctx<'a> {
    view: &'a FsView,
    loaders: &'a SystemLoaders,
    cache: std::cell::RefCell<&'a mut FileCache>,
    /// What the kernel will load, as far as it was followed.
    runs: std::cell::Cell<Option<Runs>>,
}

impl Ctx<'_> {
    fn kind_of(&self, target: &Resolved) -> Result<FileKind, InspectError> {
        if let Some(kind) = self.loaders.kind_of(target.key()) {
            return Ok(FileKind::Loader(kind));
        }
        let path = || crate::event::lossy(&target.display);
        self.cache
            .borrow_mut()
            .get_or_classify(version_of(&target.stat), || {
                let file = resolve::open_for_read(target).map_err(|errno| InspectError::Open {
                    path: path(),
                    errno,
                })?;
                file::classify(&file).map_err(|source| InspectError::File {
                    path: path(),
                    source,
                })
            })
    }

    /// A file found by the one-syscall lookup carries the path as given; for an event, the
    /// walk says where it really is.
    fn canonical(&self, found: Resolved, path: &[u8], dirfd: Option<i32>) -> Resolved {
        if found.display != path {
            return found;
        }
        let Ok(start) = self.view.start_dir(dirfd) else {
            return found;
        };
        resolve::resolve(self.view, start, b"", path, true)
            .ok()
            .filter(|r| r.key() == found.key())
            .unwrap_or(found)
    }

    /// Resolves an interpreter path (a `#!` name or a `PT_INTERP`) as the kernel does: from
    /// the root when absolute, from the cwd otherwise. `None` when the kernel's exec would fail.
    fn resolve_interpreter(&self, name: &[u8]) -> Option<Resolved> {
        let found = match resolve::resolve_absolute_fast(self.view, name, true) {
            Some(r) => r.ok()?,
            None => {
                let start = self.view.start_dir(None).ok()?;
                resolve::resolve(self.view, start, b"", name, true).ok()?
            }
        };
        found.is_regular().then_some(found)
    }

    fn script_finding(
        &self,
        sb: &file::Shebang,
        script: Vec<u8>,
        args: &mut dyn ExecArgs,
        depth: u32,
    ) -> Result<Option<Finding>, InspectError> {
        if depth > MAX_INTERPRETER_DEPTH {
            self.runs.set(None);
            return Ok(None);
        }
        let Some(interp) = self.resolve_interpreter(&sb.interpreter) else {
            self.runs.set(None);
            return Ok(None);
        };
        self.runs.set(Some(Runs {
            program: version_of(&interp.stat),
            interpreter: None,
        }));
        // The kernel runs: interpreter [arg] script argv[1..].
        let build_argv = |args: &mut dyn ExecArgs| -> Result<Vec<Vec<u8>>, InspectError> {
            let argv = args.argv()?;
            let mut v = vec![sb.interpreter.clone()];
            v.extend(sb.arg.clone());
            v.push(script.clone());
            v.extend(argv.items.into_iter().skip(1));
            Ok(v)
        };
        match self.kind_of(&interp)? {
            FileKind::Loader(kind) => {
                let interp = self.canonical(interp, &sb.interpreter, None);
                let truncated = args.argv()?.truncated;
                let argv = Argv {
                    items: build_argv(args)?,
                    truncated,
                };
                let env = args.loader_env()?;
                let invocation = parse_loader_args(kind, &argv, env);
                let mut finding = loader_finding(&interp, kind, invocation, Via::Shebang);
                finding.reason = format!("{} (named by the script's #! line)", finding.reason);
                Ok(Some(finding))
            }
            FileKind::Script(inner) => {
                let truncated = args.argv()?.truncated;
                let mut nested = GivenArgs {
                    argv: Argv {
                        items: build_argv(args)?,
                        truncated,
                    },
                    env: args.loader_env()?,
                };
                self.script_finding(&inner, sb.interpreter.clone(), &mut nested, depth + 1)
            }
            FileKind::Dynamic { interp: pt_interp } => {
                self.interp_finding(&pt_interp, &sb.interpreter)
            }
            FileKind::OtherElf | FileKind::Other => Ok(None),
        }
    }

    /// A dynamic binary whose `PT_INTERP` is not one of the container's own loaders.
    fn interp_finding(
        &self,
        interp: &[u8],
        program: &[u8],
    ) -> Result<Option<Finding>, InspectError> {
        let Some(found) = self.resolve_interpreter(interp) else {
            self.runs.set(None);
            return Ok(None);
        };
        let interpreter = Some(version_of(&found.stat));
        self.runs
            .set(self.runs.get().map(|r| Runs { interpreter, ..r }));
        if self.loaders.kind_of(found.key()).is_some() {
            return Ok(None);
        }
        let found = self.canonical(found, interp, None);
        let shown = crate::event::lossy(&found.display);
        let loader = match self.kind_of(&found)? {
            FileKind::Loader(kind) => Some(kind),
            _ => None,
        };
        Ok(Some(custom_interpreter(interp, &shown, loader, program)))
    }
}

#[cfg(test)]
mod tests;
