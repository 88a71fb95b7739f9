//! `execguard run -- COMMAND`: a guard without a container runtime, for CI runners that run a
//! job directly on a VM (GitHub-hosted runners, a self-hosted runner's shell executor). It
//! does what runc does for a guarded container: a child installs the seccomp user-notification
//! filter that `spec` would ask runc for (the same trap table, built with libseccomp, on
//! each of the machine's ABIs), hands the listener over in runc's message format, and execs
//! COMMAND.
//! Every process COMMAND starts inherits the filter; none can remove it, and none has the
//! listener (it is close-on-exec).
//!
//! By default the listener goes to a supervisor in this very process (the worker's answer
//! path, on a thread), which exits with COMMAND's status; as root or as an ordinary user (the
//! filter then sets `no_new_privs`, as the kernel requires). With `--supervisor`, it goes to
//! the running `execguard supervise` instead (root; its events file, its status and metrics),
//! and this process becomes COMMAND.
//!
//! The command must not be able to turn on its supervisor. The supervising process makes
//! itself non-dumpable before it forks, so a command of the same uid cannot attach to it, read
//! its memory or take its descriptors (`ptrace`, `/proc/PID/mem`, `pidfd_getfd` all need
//! ptrace access, which a non-dumpable process grants only to a holder of `CAP_SYS_PTRACE`).
//! It can still signal it (same uid); a stopped supervisor leaves the command's next exec
//! waiting, a killed one fails it (the filter answers `ENOSYS` without a listener). As root,
//! `--user USER` runs COMMAND as that user and keeps the supervisor root: then the command
//! cannot signal it either, nor write its events file.

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use nix::sys::socket::{
    sendmsg, socketpair, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType,
};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::ForkResult;

use crate::config::Config;
use crate::event::EventSink;
use crate::spec::{Checkpoints, MODE_ANNOTATION};
use crate::traps::{Cond, ABIS, TRAPS};
use crate::vocab::Mode;

/// What `execguard run` was asked.
pub struct RunRequest<'a> {
    pub config: Option<&'a Path>,
    /// The mode; the config's `mode` when not given.
    pub mode: Option<Mode>,
    /// The name its events carry as the container id.
    pub name: Option<&'a str>,
    /// Where the in-process supervisor writes its events (default: stderr).
    pub events: Option<&'a Path>,
    /// Hand the listener to the running `execguard supervise` instead.
    pub external: bool,
    /// Run the command as this user (name or uid): root only.
    pub user: Option<&'a str>,
    pub command: &'a [String],
}

/// Runs the command guarded; gives its exit status (128 + the signal that killed it).
pub fn run(req: &RunRequest<'_>) -> Result<u8> {
    let config = Config::load_or_default(req.config)?;
    let mode = req.mode.unwrap_or(config.mode);
    let [program, args @ ..] = req.command else {
        bail!("execguard run: no command given (execguard run -- COMMAND ARGS...)");
    };
    let mut command = std::process::Command::new(program);
    command.args(args);
    let name = req
        .name
        .map(str::to_owned)
        .unwrap_or_else(|| format!("run-{}", std::process::id()));
    let user = req.user.map(RunAs::lookup).transpose()?;
    if let Some(u) = &user {
        if !nix::unistd::geteuid().is_root() {
            bail!(
                "execguard run --user {}: only root can run a command as another user",
                u.name
            );
        }
    }
    if mode == Mode::Off {
        if let Some(u) = &user {
            u.become_it(&mut command)?;
        }
        return Err(command.exec()).with_context(|| format!("running {program}"));
    }
    if let Err(why) = crate::supervisor::features::check_minimum() {
        bail!("execguard run: cannot guard anything here: {why}");
    }
    if !req.external {
        return run_in_process(config, req.events, command, &name, mode, user);
    }
    let supervisor = match UnixStream::connect(&config.socket) {
        Ok(s) => s,
        Err(e) => {
            if config.on_supervisor_unavailable.refuses(mode) {
                bail!(
                    "no execguard supervisor is listening on {} ({e}); {mode} mode, so {program} \
                     is not run unguarded (start one: execguard supervise)",
                    config.socket.display()
                );
            }
            eprintln!(
                "execguard: no supervisor on {} ({e}); running {program} unguarded ({mode} mode)",
                config.socket.display()
            );
            return Err(command.exec()).with_context(|| format!("running {program}"));
        }
    };
    let filter = filter(Checkpoints::with_exec(config.detect.exec_checkpoint))?;
    filter
        .load()
        .context("installing the seccomp filter (execguard run needs root)")?;
    let listener = filter
        .get_notify_fd()
        .context("the seccomp filter's listener")?;
    hand_over(&supervisor, listener, &name, mode, std::process::id())?;
    drop(supervisor);
    if let Some(u) = &user {
        u.become_it(&mut command)?;
    }
    Err(command.exec()).with_context(|| format!("running {program}"))
}

/// The user `--user` names, as the command becomes it.
struct RunAs {
    name: String,
    uid: nix::unistd::Uid,
    gid: nix::unistd::Gid,
    home: std::path::PathBuf,
}

impl RunAs {
    /// A user by name, or by number (a uid with no passwd entry gets its own number as group).
    fn lookup(name: &str) -> Result<Self> {
        use nix::unistd::{Gid, Uid, User};
        let found = match name.parse::<u32>() {
            Ok(n) => User::from_uid(Uid::from_raw(n))?,
            Err(_) => User::from_name(name)?,
        };
        Ok(match (found, name.parse::<u32>()) {
            (Some(u), _) => Self {
                name: u.name,
                uid: u.uid,
                gid: u.gid,
                home: u.dir,
            },
            (None, Ok(n)) => Self {
                name: n.to_string(),
                uid: Uid::from_raw(n),
                gid: Gid::from_raw(n),
                home: "/".into(),
            },
            (None, Err(_)) => bail!("execguard run --user {name}: no such user"),
        })
    }

    /// Drops this process to the user (its groups, group and uid, in that order) and gives the
    /// command the user's `HOME`, `USER` and `LOGNAME`. Called after the filter is installed,
    /// which needs root's `CAP_SYS_ADMIN` without `no_new_privs`, so setuid programs keep
    /// working for the command.
    fn become_it(&self, command: &mut std::process::Command) -> Result<()> {
        let name = std::ffi::CString::new(self.name.as_str()).context("the user's name")?;
        nix::unistd::initgroups(&name, self.gid)
            .or_else(|_| nix::unistd::setgroups(&[self.gid]))
            .context("setting the user's groups")?;
        nix::unistd::setgid(self.gid).context("setting the user's group")?;
        nix::unistd::setuid(self.uid).context("setting the user's uid")?;
        command
            .env("HOME", &self.home)
            .env("USER", &self.name)
            .env("LOGNAME", &self.name);
        Ok(())
    }
}

/// A child installs the filter, passes the listener back over a socket pair and execs the
/// command; this process serves the listener and waits for the child.
fn run_in_process(
    config: Config,
    events: Option<&Path>,
    mut command: std::process::Command,
    name: &str,
    mode: Mode,
    user: Option<RunAs>,
) -> Result<u8> {
    let sink = match events {
        Some(path) => EventSink::file(path)
            .with_context(|| format!("opening the events file {}", path.display()))?,
        None => EventSink::from_writer(Box::new(std::io::stderr())),
    };
    let checkpoints = Checkpoints::with_exec(config.detect.exec_checkpoint);
    // Sequenced packets: the message arrives whole, with its fd.
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .context("a socket pair for the listener")?;
    // Out of the command's reach before it exists (the module's doc). The child's exec makes
    // the command dumpable again, as any exec of a program that is not set-id does.
    nix::sys::prctl::set_dumpable(false).context("making the supervisor non-dumpable")?;
    // A plain fork, not `Command::spawn`: spawn waits until the exec is done, and with
    // `[detect] exec_checkpoint` that exec waits for this process to answer it.
    // This process has no other thread yet (the supervisor thread starts after the fork), so
    // the child may allocate and call libseccomp before it execs.
    match crate::sys::fork_single_threaded().context("fork")? {
        ForkResult::Child => {
            drop(ours);
            // The fork inherited the parent's non-dumpable state; the supervisor must see
            // this process's /proc (its root, for the loaders) before the exec resets it.
            let _ = nix::sys::prctl::set_dumpable(true);
            let handed = (|| -> Result<()> {
                let mut ctx = filter(checkpoints)?;
                // An ordinary user may install a filter only under no_new_privs.
                ctx.set_ctl_nnp(!nix::unistd::geteuid().is_root())?;
                ctx.load().context("installing the seccomp filter")?;
                let listener = ctx.get_notify_fd().context("the filter's listener")?;
                hand_over(&theirs, listener, name, mode, std::process::id())?;
                // Handed over: this process (soon the command) keeps no copy.
                nix::unistd::close(listener).context("closing the handed-over listener")?;
                match &user {
                    Some(u) => u.become_it(&mut command),
                    None => Ok(()),
                }
            })();
            let err = match handed {
                Ok(()) => anyhow::Error::from(command.exec()).context(format!(
                    "running {}",
                    command.get_program().to_string_lossy()
                )),
                Err(e) => e,
            };
            eprintln!("execguard run: {err:#}");
            crate::sys::exit_now(127)
        }
        ForkResult::Parent { child } => {
            drop(theirs);
            let mut buf = vec![0u8; 64 << 10];
            let received = crate::sys::recv_with_fds::<1>(ours.as_fd(), &mut buf);
            // The serving thread ends when every task behind the listener is gone; this
            // process leaves when the command does (whatever it left running loses its
            // supervisor).
            let _serving = match received {
                Ok((n, fds)) => match fds.into_iter().next() {
                    Some(fd) => Some(crate::supervisor::serve_in_process(
                        config,
                        sink,
                        &buf[..n],
                        fd,
                    )?),
                    None => None,
                },
                Err(e) => {
                    eprintln!("execguard run: receiving the listener from the child: {e}");
                    None
                }
            };
            // The lines told to denied processes are written by a thread of their own: this
            // process must not exit before them (at most a second).
            let told = || crate::supervisor::wait_told_lines_written(Duration::from_secs(1));
            loop {
                match waitpid(child, None) {
                    Ok(WaitStatus::Exited(_, code)) => {
                        told();
                        return Ok(u8::try_from(code).unwrap_or(1));
                    }
                    Ok(WaitStatus::Signaled(_, sig, _)) => {
                        told();
                        return Ok(u8::try_from(128 + sig as i32).unwrap_or(255));
                    }
                    Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(e).context("waiting for the command"),
                }
            }
        }
    }
}

/// The filter runc would install for the spec `spec::patch` writes on a profile that allows
/// everything: every trap of [`TRAPS`] that `checkpoints` installs, with its condition, on each
/// of the machine's ABIs ([`ABIS`]).
fn filter(checkpoints: Checkpoints) -> Result<ScmpFilterContext> {
    let mut ctx = ScmpFilterContext::new(ScmpAction::Allow)?;
    // The native ABI is the context's own; the others (32-bit, x32) are added.
    for abi in &ABIS[1..] {
        ctx.add_arch(ScmpArch::from_str(abi.oci_name)?)?;
    }
    // Run as root: setuid programs in the job keep working (no_new_privs would stop them).
    ctx.set_ctl_nnp(false)?;
    for trap in TRAPS.iter().filter(|t| checkpoints.traps(t)) {
        let cmp: Vec<ScmpArgCompare> = match trap.when {
            None => Vec::new(),
            Some(Cond::IntEquals { index, value }) => vec![ScmpArgCompare::new(
                arg(index)?,
                ScmpCompareOp::MaskedEqual(LOW_32_BITS),
                u64::from(value),
            )],
            Some(Cond::BitSet { index, bit }) => vec![ScmpArgCompare::new(
                arg(index)?,
                ScmpCompareOp::MaskedEqual(bit),
                bit,
            )],
        };
        // libseccomp adds the rule to each of the filter's ABIs that has the call (x32 has no
        // set_thread_area).
        let name = trap.syscall.as_str();
        let syscall =
            ScmpSyscall::from_name(name).with_context(|| format!("the system call {name}"))?;
        ctx.add_rule_conditional(ScmpAction::Notify, syscall, &cmp)
            .with_context(|| format!("trapping {name}"))?;
    }
    Ok(ctx)
}

/// The mask of an `int` argument's bits.
const LOW_32_BITS: u64 = 0xffff_ffff;

fn arg(index: usize) -> Result<u32> {
    u32::try_from(index).context("argument index")
}

/// runc's message to a seccomp listener (`linux.seccomp.listenerPath`), with the listener fd.
fn hand_over(
    supervisor: &impl AsRawFd,
    listener: RawFd,
    name: &str,
    mode: Mode,
    pid: u32,
) -> Result<()> {
    let message = serde_json::json!({
        "ociVersion": "1.0.2",
        "fds": ["seccompFd"],
        "pid": pid,
        "metadata": "execguard-run",
        "state": {
            "ociVersion": "1.0.2",
            "id": name,
            "status": "creating",
            "pid": pid,
            "bundle": "",
            "annotations": {MODE_ANNOTATION: mode.as_str()},
        },
    })
    .to_string();
    let fds = [listener];
    sendmsg::<()>(
        supervisor.as_raw_fd(),
        &[IoSlice::new(message.as_bytes())],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .context("handing the listener to the supervisor")?;
    Ok(())
}
