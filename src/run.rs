//! `execguard run -- COMMAND`: a guard without a container runtime, for CI runners that run a
//! job directly on a VM (GitHub-hosted runners, a self-hosted runner's shell executor). It
//! does what runc does for a guarded container: installs the seccomp user-notification filter
//! that `spec` would ask runc for (the same trap table, built with libseccomp, all three
//! x86 ABIs), hands the listener to the supervisor over its socket in runc's message format,
//! and then execs COMMAND. Every process COMMAND starts inherits the filter; none can remove
//! it, and none has the listener (it is close-on-exec).

use std::io::IoSlice;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

use crate::config::{Config, Unavailable};
use crate::spec::{Checkpoints, MODE_ANNOTATION};
use crate::traps::{Cond, TRAPS};
use crate::vocab::Mode;

/// What `execguard run` was asked.
pub struct RunRequest<'a> {
    pub config: Option<&'a Path>,
    /// The mode; the config's `mode` when not given.
    pub mode: Option<Mode>,
    /// The name its events carry as the container id.
    pub name: Option<&'a str>,
    pub command: &'a [String],
}

/// Installs the filter, hands it to the supervisor, execs the command. Returns only on
/// failure.
pub fn run(req: &RunRequest<'_>) -> Result<()> {
    let config = Config::load_or_default(req.config)?;
    let mode = req.mode.unwrap_or(config.mode);
    let [program, args @ ..] = req.command else {
        bail!("execguard run: no command given (execguard run -- COMMAND ARGS...)");
    };
    let mut command = std::process::Command::new(program);
    command.args(args);
    if mode == Mode::Off {
        return Err(command.exec()).with_context(|| format!("running {program}"));
    }
    let supervisor = match UnixStream::connect(&config.socket) {
        Ok(s) => s,
        Err(e) => {
            let unguarded = match config.on_supervisor_unavailable {
                Unavailable::Fail => false,
                Unavailable::Unguarded => true,
                Unavailable::ByMode => mode == Mode::Audit,
            };
            if !unguarded {
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
    let name = req
        .name
        .map(str::to_owned)
        .unwrap_or_else(|| format!("run-{}", std::process::id()));
    let filter = filter(Checkpoints::with_exec(config.detect.exec_checkpoint))?;
    filter
        .load()
        .context("installing the seccomp filter (execguard run needs root)")?;
    let listener = filter
        .get_notify_fd()
        .context("the seccomp filter's listener")?;
    hand_over(&supervisor, listener, &name, mode)?;
    drop(supervisor);
    Err(command.exec()).with_context(|| format!("running {program}"))
}

/// The filter runc would install for the spec `spec::patch` writes on a profile that allows
/// everything: every trap of [`TRAPS`] that `checkpoints` installs, with its condition, on the
/// x86_64, i386 and x32 ABIs.
fn filter(checkpoints: Checkpoints) -> Result<ScmpFilterContext> {
    let mut ctx = ScmpFilterContext::new(ScmpAction::Allow)?;
    ctx.add_arch(ScmpArch::X86)?;
    ctx.add_arch(ScmpArch::X32)?;
    // Run as root: setuid programs in the job keep working (no_new_privs would stop them).
    ctx.set_ctl_nnp(false)?;
    for trap in TRAPS.iter().filter(|t| checkpoints.traps(t)) {
        let cmp: Vec<ScmpArgCompare> = match trap.when {
            None => Vec::new(),
            Some(Cond::Equals { index, value }) => {
                vec![ScmpArgCompare::new(
                    arg(index)?,
                    ScmpCompareOp::Equal,
                    value,
                )]
            }
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

fn arg(index: usize) -> Result<u32> {
    u32::try_from(index).context("argument index")
}

/// runc's message to a seccomp listener (`linux.seccomp.listenerPath`), with the listener fd.
fn hand_over(supervisor: &UnixStream, listener: RawFd, name: &str, mode: Mode) -> Result<()> {
    let pid = std::process::id();
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
