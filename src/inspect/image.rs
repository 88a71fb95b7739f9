//! The second checkpoint: a process image at its first thread-pointer setup
//! (`arch_prctl(ARCH_SET_FS)`, `set_thread_area`), after the exec and before any of the image's
//! own code runs. `/proc/PID/exe` is then what the kernel really exec'd and `/proc/PID/cmdline`
//! the argv it really passed, so no race on the exec's path, argv or file can fool this look:
//! a loader running a program is seen here whatever the exec-time check saw.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, OFlag};
use nix::sys::stat::{fstat, stat, Mode as StatMode};

use super::file::{self, FileKind};
use super::loader_args::LoaderEnv;
use super::resolve::Resolved;
use super::{
    loader_finding, parse_loader_args, version_of, Abi, Argv, FileCache, Finding, InspectError,
    SystemLoaders, Via,
};

/// Bytes of `/proc/PID/cmdline` read (the loader's options come first).
const MAX_CMDLINE_BYTES: u64 = 64 * 1024;
/// Arguments kept of it.
const MAX_ARGS: usize = 128;
/// Bytes of `/proc/PID/environ` scanned for `LD_TRACE_LOADED_OBJECTS` and `LD_AUDIT`.
const MAX_ENVIRON_BYTES: u64 = 256 * 1024;
/// `AT_RANDOM`: the address of 16 random bytes, different for every image.
const AT_RANDOM: u64 = 25;

/// What a checkpoint found.
#[derive(Debug)]
pub struct ImageInspection {
    /// `/proc/PID/exe`, as the process's root shows it.
    pub exe: Vec<u8>,
    /// The image's argv (only read when the image is a loader).
    pub argv: Argv,
    /// An identity of this image (`AT_RANDOM`), when the image is a loader.
    pub token: Option<u64>,
    pub finding: Option<Finding>,
}

/// Inspects the image of task `tid` (pending on a checkpoint notification; `valid` says
/// whether it still is, so that what was read belongs to it).
pub fn inspect_image(
    tid: u32,
    abi: Abi,
    loaders: &SystemLoaders,
    cache: &mut FileCache,
    valid: &dyn Fn() -> bool,
) -> Result<ImageInspection, InspectError> {
    let read_err = |what| move |errno| InspectError::ReadTarget { what, errno };
    // The common case in one system call: the new image is a file seen before, not a loader.
    // (Read while the notification is pending, so the pid is still the task's.)
    if let Ok(st) = stat(format!("/proc/{tid}/exe").as_str()) {
        let key = (st.st_dev, st.st_ino);
        let known = cache
            .get(&version_of(&st))
            .map(|k| matches!(k, FileKind::Loader(_)));
        if loaders.kind_of(key).is_none() && known == Some(false) {
            if !valid() {
                return Err(InspectError::Gone);
            }
            return Ok(ImageInspection {
                exe: Vec::new(),
                argv: Argv::default(),
                token: None,
                finding: None,
            });
        }
    }
    let proc_dir = nix::fcntl::open(
        format!("/proc/{tid}").as_str(),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        StatMode::empty(),
    )
    .map_err(|e| {
        if e == Errno::ENOENT {
            InspectError::Gone
        } else {
            read_err("/proc entry")(e)
        }
    })?;
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
    .map_err(read_err("exe"))?;
    let stat = fstat(&exe).map_err(read_err("exe"))?;
    let version = version_of(&stat);
    let kind = match loaders.kind_of((stat.st_dev, stat.st_ino)) {
        Some(k) => Some(k),
        None => {
            let known = cache.get(&version).cloned();
            let kind = match known {
                Some(k) => k,
                None => {
                    let file = std::fs::File::from(exe.try_clone().map_err(|e| {
                        read_err("exe")(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
                    })?);
                    let k = file::classify(&file).map_err(|source| InspectError::File {
                        path: "/proc/self/exe".to_owned(),
                        source,
                    })?;
                    cache.put(version, &k);
                    k
                }
            };
            match kind {
                FileKind::Loader(k) => Some(k),
                _ => None,
            }
        }
    };
    let Some(kind) = kind else {
        return Ok(ImageInspection {
            exe: Vec::new(),
            argv: Argv::default(),
            token: None,
            finding: None,
        });
    };
    let display = readlinkat(&proc_dir, "exe")
        .map(|p| p.as_bytes().to_vec())
        .unwrap_or_default();

    let argv = read_cmdline(&proc_dir)?;
    let env = read_loader_env(&proc_dir)?;
    let token = read_at_random(&proc_dir, abi)?;
    if !valid() {
        return Err(InspectError::Gone);
    }
    let resolved = Resolved {
        fd: exe,
        stat,
        display: display.clone(),
    };
    let invocation = parse_loader_args(kind, &argv, env);
    let finding = loader_finding(&resolved, kind, invocation, Via::Direct);
    Ok(ImageInspection {
        exe: display,
        argv,
        token,
        finding: Some(finding),
    })
}

fn read_proc(dir: &OwnedFd, name: &'static str, max: u64) -> Result<(Vec<u8>, bool), InspectError> {
    let fd = openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        StatMode::empty(),
    )
    .map_err(|errno| InspectError::ReadTarget { what: name, errno })?;
    let mut bytes = Vec::new();
    std::fs::File::from(fd)
        .take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| InspectError::ReadTarget {
            what: name,
            errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        })?;
    let truncated = bytes.len() as u64 > max;
    bytes.truncate(max as usize);
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
    let (bytes, _) = read_proc(dir, "environ", MAX_ENVIRON_BYTES)?;
    let mut env = LoaderEnv::default();
    for entry in bytes.split(|b| *b == 0) {
        if entry.starts_with(b"LD_TRACE_LOADED_OBJECTS=") {
            env.trace = true;
        } else if entry.starts_with(b"LD_AUDIT=") && entry.len() > b"LD_AUDIT=".len() {
            env.audit = true;
        }
    }
    Ok(env)
}

/// The image's `AT_RANDOM` address: unique per exec, so it tells images of one pid apart.
fn read_at_random(dir: &OwnedFd, abi: Abi) -> Result<Option<u64>, InspectError> {
    let (bytes, _) = read_proc(dir, "auxv", 4096)?;
    let size = abi.pointer_size();
    let word = |c: &[u8]| -> u64 {
        if size == 8 {
            u64::from_le_bytes(c.try_into().unwrap_or_default())
        } else {
            u64::from(u32::from_le_bytes(c.try_into().unwrap_or_default()))
        }
    };
    Ok(bytes
        .chunks_exact(2 * size)
        .map(|pair| (word(&pair[..size]), word(&pair[size..])))
        .find(|(t, _)| *t == AT_RANDOM)
        .map(|(_, v)| v))
}
