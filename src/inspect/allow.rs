//! `[[allow]]` exceptions, the part that looks at files: is the program a glibc loader has
//! mapped as its main program a file that a rule names, and one the process running it cannot
//! have changed? Judged at the image checkpoint, where the loader has mapped its program (and
//! its libraries) and run none of their code.
//!
//! Which file is the main program is not taken from the argv, which could name another file by
//! then (a swapped symlink), nor from "some mapping holds the allowed file" (a payload could
//! load the allowed file as a library): glibc's loader, run as a command, rewrites the
//! auxiliary vector on the stack so that `AT_PHDR` and `AT_ENTRY` point into the program it
//! mapped (`rtld.c`, `dl_main`) before it sets up the thread pointer. The mapping at those
//! addresses is the program; the file the argv names must be that very file.

use std::io::Read;
use std::os::fd::OwnedFd;

use caps::Capability;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstat, FileStat, Mode as StatMode};
use nix::sys::statvfs::{fstatvfs, FsFlags};
use sha2::{Digest, Sha256};

use super::image::{gone_or, read_proc};
use super::resolve::{self, FsView};
use super::{version_of, Abi, FileCache, InspectError};
use crate::config::AllowRule;

/// Bytes of the stack read from its start to find the auxiliary vector (argv and envp pointer
/// arrays come first).
const MAX_STACK_BYTES: usize = 1 << 20;
/// Auxiliary vector entries read before giving up on `AT_NULL`.
const MAX_AUXV_ENTRIES: usize = 64;
/// Programs larger than this are not hashed (a rule with `sha256` does not match them).
const MAX_HASHED_BYTES: i64 = 1 << 30;
/// Bytes of `/proc/PID/status` and `/proc/PID/stat` read (a few KiB today).
const PROC_STATUS_BYTES: u64 = 64 * 1024;
const AT_PHDR: u64 = 3;
const AT_ENTRY: u64 = 9;

/// A rule that exempts an image, and why its file can be trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Exemption {
    pub(crate) rule: String,
    /// How the file is kept from the container ("on a read-only mount", ...).
    pub(crate) basis: String,
}

/// What the rules say of one loader run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Judgement {
    Exempt(Exemption),
    /// Why no rule exempts it.
    NotExempt(String),
}

/// Capabilities that let a process write a file it does not own, make it writable, become
/// root, or reach the disk beneath the filesystem.
const WRITE_CAPABILITIES: &[Capability] = &[
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FOWNER,
    Capability::CAP_SETUID,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETPCAP,
    Capability::CAP_MKNOD,
    Capability::CAP_SYS_ADMIN,
    Capability::CAP_SYS_MODULE,
    Capability::CAP_SYS_PTRACE,
    Capability::CAP_SYS_RAWIO,
    Capability::CAP_BPF,
];

/// The identity of the process that runs the image, from `/proc/TID/status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Creds {
    /// Real, effective, saved and filesystem uid.
    pub(crate) uids: [u32; 4],
    pub(crate) cap_permitted: u64,
    pub(crate) cap_effective: u64,
    /// `no_new_privs`: no set-user-ID program or file capability can give it more.
    pub(crate) no_new_privs: bool,
}

impl Creds {
    pub(crate) fn parse(status: &str) -> Option<Self> {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
        };
        let mut uids = [0u32; 4];
        let mut given = field("Uid:")?.split_whitespace();
        for u in &mut uids {
            *u = given.next()?.parse().ok()?;
        }
        let caps = |name| u64::from_str_radix(field(name)?, 16).ok();
        Some(Self {
            uids,
            cap_permitted: caps("CapPrm:")?,
            cap_effective: caps("CapEff:")?,
            no_new_privs: field("NoNewPrivs:")? == "1",
        })
    }

    /// Why this process could write a root-owned file that is not writable by group or others
    /// (or make it writable), if it could: a root uid, a capability that overrides file
    /// permissions, or a way to gain either (no `no_new_privs`: set-user-ID programs).
    fn could_write_root_files(&self) -> Option<String> {
        if let Some(u) = self.uids.iter().find(|u| **u == 0) {
            return Some(format!("it has uid {u}"));
        }
        let held = self.cap_permitted | self.cap_effective;
        if let Some(c) = WRITE_CAPABILITIES.iter().find(|c| held & c.bitmask() != 0) {
            return Some(format!("it holds {c}"));
        }
        if !self.no_new_privs {
            return Some(
                "it may gain root through a set-user-ID program (no_new_privs is not set)"
                    .to_owned(),
            );
        }
        None
    }
}

/// How `file` is kept from a process with `creds` (`None`: not known, as for `explain`), or
/// why it is not: it is on a read-only mount, or it is owned by root, not writable by group or
/// others, and the process has no root uid and no capability.
pub(crate) fn write_protection(
    file: &std::fs::File,
    st: &FileStat,
    creds: Option<&Creds>,
) -> Result<String, String> {
    let read_only = fstatvfs(file)
        .map(|v| v.flags().contains(FsFlags::ST_RDONLY))
        .unwrap_or(false);
    if read_only {
        return Ok("on a read-only mount".to_owned());
    }
    if st.st_uid != 0 {
        return Err(format!(
            "the container can write it (on a writable mount, owned by uid {})",
            st.st_uid
        ));
    }
    if st.st_mode & 0o022 != 0 {
        return Err(
            "the container can write it (on a writable mount, writable by group or others)"
                .to_owned(),
        );
    }
    match creds.map(|c| (c, c.could_write_root_files())) {
        Some((c, None)) => Ok(format!(
            "owned by root, not writable by group or others, run by uid {} without the \
             capabilities or no_new_privs-free set-user-ID programs that could write it",
            c.uids[1]
        )),
        Some((_, Some(why))) => Err(format!(
            "the process can write it: it is owned by root on a writable mount and {why}"
        )),
        None => Ok(
            "owned by root and not writable by group or others: exempt when the \
                    process has no root uid, no capability to write it and no_new_privs"
                .to_owned(),
        ),
    }
}

/// The first of `rules` whose `sha256` (if any) the file has; the caller checked everything
/// else (the options, the program's path, the file's protection, given as `basis`).
pub(crate) fn first_matching(
    rules: &[&AllowRule],
    file: &std::fs::File,
    st: &FileStat,
    cache: &mut FileCache,
    basis: String,
) -> Judgement {
    let mut misses = Vec::new();
    for rule in rules {
        let Some(want) = &rule.sha256 else {
            return Judgement::Exempt(Exemption {
                rule: rule.name.clone(),
                basis,
            });
        };
        match cache.sha256_of(version_of(st), || sha256(file, st)) {
            Ok(got) if got == *want => {
                return Judgement::Exempt(Exemption {
                    rule: rule.name.clone(),
                    basis: format!("{basis}, sha256 as listed"),
                })
            }
            Ok(got) => misses.push(format!(
                "rule {:?}: the program's sha256 is {}",
                rule.name,
                hex(&got)
            )),
            Err(why) => misses.push(format!("rule {:?}: {why}", rule.name)),
        }
    }
    Judgement::NotExempt(misses.join("; "))
}

fn sha256(file: &std::fs::File, st: &FileStat) -> Result<[u8; 32], String> {
    if st.st_size > MAX_HASHED_BYTES {
        return Err(format!(
            "the program is larger than {MAX_HASHED_BYTES} bytes"
        ));
    }
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut reader = file;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading the program: {e}")),
        }
    }
    Ok(hasher.finalize().into())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Opens `program` as the process whose filesystem is `view` would (relative to its cwd).
pub(crate) fn open_program(
    view: &FsView,
    program: &[u8],
) -> Result<(std::fs::File, FileStat), String> {
    let shown = crate::event::lossy(program);
    let found = match resolve::resolve_absolute_fast(view, program, true) {
        Some(r) => r,
        None => view
            .start_dir(None)
            .and_then(|start| resolve::resolve(view, start, b"", program, true)),
    }
    .map_err(|e| format!("{shown} does not resolve: {e}"))?;
    if !found.is_regular() {
        return Err(format!("{shown} is not a regular file"));
    }
    let file = resolve::open_for_read(&found).map_err(|e| format!("opening {shown}: {e}"))?;
    let st = fstat(&file).map_err(|e| format!("opening {shown}: {e}"))?;
    Ok((file, st))
}

/// What `explain` can say without a running image: `program` opened in this process's view,
/// its protection with the process not known, and the rules' content checks.
pub(crate) fn judge_program(
    view: &FsView,
    program: &[u8],
    rules: &[&AllowRule],
    cache: &mut FileCache,
) -> Judgement {
    let judged = open_program(view, program).and_then(|(file, st)| {
        let basis = write_protection(&file, &st, None)?;
        Ok(first_matching(rules, &file, &st, cache, basis))
    });
    judged.unwrap_or_else(Judgement::NotExempt)
}

/// Judges a glibc loader image of task `tid` (pending on its checkpoint notification; `valid`
/// says whether it still is) that runs `program` with options that `rules` accept.
pub(crate) fn judge_image(
    tid: u32,
    abi: Abi,
    program: &[u8],
    rules: &[&AllowRule],
    cache: &mut FileCache,
    valid: &dyn Fn() -> bool,
) -> Result<Judgement, InspectError> {
    let not = |why: String| Ok(Judgement::NotExempt(why));
    if !program.contains(&b'/') {
        return not("the program is named without a `/`, so the loader searches for it".into());
    }
    let view = FsView::of_task(tid).map_err(gone_or("filesystem view"))?;
    let main = main_program(&view.proc_dir, abi)?;
    let (status, _) = read_proc(&view.proc_dir, "status", PROC_STATUS_BYTES)?;
    let opened = open_program(&view, program);
    if !valid() {
        return Err(InspectError::Gone);
    }
    let Some(main) = main else {
        return not(
            "the loader's main program could not be found (a glibc loader run as a \
                    command shows it in the auxiliary vector; other loaders are not exempted)"
                .into(),
        );
    };
    let (file, st) = match opened {
        Ok(f) => f,
        Err(why) => return not(why),
    };
    if (st.st_dev, st.st_ino) != main {
        return not(format!(
            "{} is not the file the loader mapped as its program",
            crate::event::lossy(program)
        ));
    }
    let Some(creds) = Creds::parse(&String::from_utf8_lossy(&status)) else {
        return not("the process's uids and capabilities could not be read".into());
    };
    match write_protection(&file, &st, Some(&creds)) {
        Ok(basis) => Ok(first_matching(rules, &file, &st, cache, basis)),
        Err(why) => not(why),
    }
}

/// The device and inode of the file mapped where the on-stack `AT_PHDR` and `AT_ENTRY` point,
/// when both are in the same file (`None` when they are not, or cannot be read).
fn main_program(proc_dir: &OwnedFd, abi: Abi) -> Result<Option<(u64, u64)>, InspectError> {
    let read_err = |what| move |errno| InspectError::ReadTarget { what, errno };
    let (stat, _) = read_proc(proc_dir, "stat", PROC_STATUS_BYTES)?;
    let Some(start) = stack_start(&stat) else {
        return Ok(None);
    };
    let mem = openat(
        proc_dir,
        "mem",
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        StatMode::empty(),
    )
    .map_err(read_err("mem"))?;
    let stack = read_stack(&mem, start);
    let Some((phdr, entry)) = stack_auxv(&stack, abi) else {
        return Ok(None);
    };
    let maps = openat(
        proc_dir,
        "maps",
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        StatMode::empty(),
    )
    .map_err(read_err("maps"))?;
    let at = |addr| super::image::mapping_at(&maps, addr).map(|m| m.map(|m| m.key));
    match (at(phdr)?, at(entry)?) {
        (Some(a), Some(b)) if a == b => Ok(Some(a)),
        _ => Ok(None),
    }
}

/// `startstack` (field 28) of `/proc/TID/stat`: where argc is.
fn stack_start(stat: &[u8]) -> Option<u64> {
    super::proc_stat_field(std::str::from_utf8(stat).ok()?, 28)
}

/// Up to [`MAX_STACK_BYTES`] from `start`, as far as the stack is mapped.
fn read_stack(mem: &OwnedFd, start: u64) -> Vec<u8> {
    let mut out = vec![0u8; 4096];
    let mut len = 0;
    while len < MAX_STACK_BYTES {
        if len == out.len() {
            out.resize((2 * len).min(MAX_STACK_BYTES), 0);
        }
        let Ok(offset) = i64::try_from(start + len as u64) else {
            break;
        };
        match nix::sys::uio::pread(mem, &mut out[len..], offset) {
            Ok(0) | Err(_) => break,
            Ok(n) => len += n,
        }
    }
    out.truncate(len);
    out
}

/// `AT_PHDR` and `AT_ENTRY` from a stack that starts with argc, argv, envp and the auxiliary
/// vector.
fn stack_auxv(stack: &[u8], abi: Abi) -> Option<(u64, u64)> {
    let size = abi.pointer_size();
    let word = |i: usize| stack.get(i * size..(i + 1) * size).map(|b| abi.word(b));
    let argc = usize::try_from(word(0)?).ok()?;
    // argv's pointers and their NULL.
    let mut i = argc.checked_add(2)?;
    if word(i - 1)? != 0 {
        return None;
    }
    while word(i)? != 0 {
        i += 1;
    }
    i += 1;
    let (mut phdr, mut entry) = (None, None);
    for _ in 0..MAX_AUXV_ENTRIES {
        match word(i)? {
            0 => break,
            AT_PHDR => phdr = word(i + 1),
            AT_ENTRY => entry = word(i + 1),
            _ => {}
        }
        i += 2;
    }
    Some((phdr?, entry?))
}

#[cfg(test)]
mod tests;
