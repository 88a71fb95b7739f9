//! The worker (`execguard worker`, and `execguard run`'s own supervisor): it answers every
//! exec of every guarded container after inspecting it.
//!
//! Threads: the main thread reads the keeper's channel; each notify fd (a container start or a
//! `runc exec`) gets a thread of its own that serves it until every task behind it is gone
//! ([`serve`]). A container whose inspection is slow (a hung filesystem, a flood of execs)
//! delays only its own execs.
//!
//! Where things are, from the bottom up: [`source`] (where notifications come from),
//! [`counters`], [`registry`] (the guarded containers and what every thread shares),
//! [`ratelimit`] (a value), [`listener`] (one notify fd, its state, one notification being
//! answered, the answer), [`report`] and [`tell`] (events, and the line a denied process
//! gets), [`target`] (the task's memory), [`exec`] and [`image`] (the two checkpoints),
//! [`serve`] (the loop), [`recovery`] (what a dead worker left), [`kills`] (the exec record's
//! kills), [`control`] (status, metrics, reload), [`confine`] and [`cpugroup`] (the worker's
//! own limits).

pub(crate) mod confine;
pub mod control;
mod counters;
pub mod cpugroup;
mod exec;
mod image;
mod kills;
mod listener;
mod ratelimit;
mod recovery;
mod registry;
mod report;
mod serve;
mod source;
pub(crate) mod target;
pub(crate) mod tell;
// Notifications with x86_64's numbers, from this test process.
#[cfg(all(test, target_arch = "x86_64"))]
mod tests;

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

use nix::errno::Errno;
use nix::sys::signal::Signal;

use super::error::SupervisorError;
use super::signals::{keeper_signals, KEEPER_STARTED_ENV};
use super::slots::Slots;
use super::state::ContainerProcessState;
use super::{fault, privilege, record, state};
use crate::config::Config;
use crate::event::EventSink;
use registry::Shared;

/// Runs the worker: reads notify fds from the keeper's channel and serves each on a thread of
/// its own. Ends when the keeper closes the channel.
pub(crate) fn run_worker(
    config: Config,
    config_path: Option<PathBuf>,
    sink: EventSink,
    channel: OwnedFd,
    slots: Slots,
    record: Result<record::ExecRecord, String>,
) -> Result<(), SupervisorError> {
    // The keeper blocks its signals; a worker must die of SIGTERM like any process.
    keeper_signals()
        .thread_unblock()
        .map_err(SupervisorError::SignalMask)?;
    // A worker never outlives its keeper: the notify fds must close with the keeper, not
    // linger in an orphan that no one restarts.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(SupervisorError::DeathSignal)?;
    if nix::unistd::getppid().as_raw() == 1 {
        return Ok(());
    }
    fault::configure();
    let keeper_started = std::env::var(KEEPER_STARTED_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(|s| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s));
    let mut record = record;
    let kills = record
        .as_mut()
        .ok()
        .and_then(record::ExecRecord::take_kills);
    let shared = Arc::new(Shared::new(
        config,
        config_path,
        sink,
        slots,
        keeper_started,
        record,
    ));
    control::start(shared.clone());
    // Mapped before the worker's system calls are confined.
    if let Some(fd) = kills {
        if let Err(e) = kills::start(shared.clone(), fd) {
            tracing::error!(error = %e, "cannot read the exec record's killed execs; kills are not reported");
        }
    }
    // Before the first notification: only what the answer path needs, for good.
    privilege::check_available()?;
    let kept = privilege::reduce_worker()?;
    tracing::info!(capabilities = %privilege::names(&kept), "worker capabilities reduced");
    let filter = shared.config.hardening.syscall_filter;
    confine::confine_worker(filter)?;
    tracing::info!(?filter, "worker system calls confined");
    let mut buf = vec![0u8; state::MAX_STATE_BYTES + 8];
    loop {
        let (n, fds) = match crate::sys::recv_with_fds::<1>(channel.as_fd(), &mut buf) {
            Ok(received) => received,
            Err(Errno::EINTR) => continue,
            Err(source) => {
                return Err(SupervisorError::ChannelRecv {
                    fd: std::os::fd::AsRawFd::as_raw_fd(&channel),
                    source,
                })
            }
        };
        if n == 0 {
            tracing::info!("the keeper closed the channel; worker ends");
            return Ok(());
        }
        let Some(fd) = fds.into_iter().next() else {
            continue;
        };
        if n < 4 {
            continue;
        }
        let slot = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let parsed = match state::parse(&buf[4..n]) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "bad state from the keeper");
                continue;
            }
        };
        if let Err(e) = spawn_serving(shared.clone(), parsed, fd, slot) {
            tracing::error!(error = %e, "cannot start a thread for a container");
        }
    }
}

/// Serves one notify fd in this process (`execguard run`'s own supervisor): the same answer
/// path as a worker's, without keeper, control socket or slot recovery. `message` is runc's
/// message for the fd. The thread ends when every task behind the fd is gone.
pub(crate) fn serve_in_process(
    config: Config,
    sink: EventSink,
    message: &[u8],
    fd: OwnedFd,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let parsed = state::parse(message)?;
    let slots = Slots::create().map_err(SupervisorError::SlotFile)?;
    let no_record = Err(String::from(
        "execguard run serves its command in process, without the keeper that loads it",
    ));
    let shared = Arc::new(Shared::new(config, None, sink, slots, None, no_record));
    Ok(spawn_serving(shared, parsed, fd, 0)?)
}

/// The thread that serves one notify fd.
fn spawn_serving(
    shared: Arc<Shared>,
    parsed: state::ContainerProcessState,
    fd: OwnedFd,
    slot: usize,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("container".into())
        .stack_size(THREAD_STACK)
        .spawn(move || serve_fd(&shared, parsed, fd, slot))
}

/// Stack of a notify fd's thread: inspection recurses at most a few levels (nested `#!`
/// interpreters) and keeps its buffers on the heap.
const THREAD_STACK: usize = 256 << 10;

/// The serving thread of one notify fd, start to end: open, answer what a dead worker left,
/// serve, close.
fn serve_fd(
    shared: &Arc<Shared>,
    state: ContainerProcessState,
    fd: std::os::fd::OwnedFd,
    slot: usize,
) {
    let serve::Opened {
        listener: l,
        mut placement,
        blocking_recv,
    } = serve::open(shared, &state, crate::sys::NotifyFd::new(fd), slot);
    let mut st = listener::ListenerState::new(&shared.config.events);
    recovery::recover(&l, &mut st, shared);
    serve::until_hangup(&l, &mut st, shared, blocking_recv, placement.as_mut());
    let left_cpu_cgroup = placement.as_ref().map_or(0, |p| p.left());
    drop(placement);
    serve::close(&l, &mut st, shared, left_cpu_cgroup);
    let id = l.container.id.clone();
    drop(l);
    shared.release(&id);
}
