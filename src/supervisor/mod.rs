//! The supervisor. `execguard supervise` is the keeper ([`keeper`]): it owns the socket and a
//! copy of every notify fd, and runs the worker (`execguard worker`, this module's
//! [`run_worker`]) that answers every exec of every guarded container after inspecting it.
//!
//! Worker threads: the main thread reads the keeper's channel; each notify fd (a container
//! start or a `runc exec`) gets a thread of its own that serves it until every task behind it
//! is gone. A container whose inspection is slow (a hung filesystem, a flood of execs) delays
//! only its own execs.
//!
//! Where things are: [`registry`] (the guarded containers), `serve` (one notify fd's loop and
//! the answer path's dispatch), `image` and `exec` (the two checkpoints), `report` and
//! `ratelimit` (events), `recovery` (what a dead worker left), [`slots`] (the in-flight record),
//! [`keeper`] (the process that holds every fd), [`control`] (status, metrics, reload).

mod accept;
mod confine;
pub mod control;
pub mod cpugroup;
mod exec;
pub mod fault;
mod fdstore;
pub(crate) mod features;
pub(crate) mod handover;
mod image;
pub(crate) mod keeper;
mod kills;
pub(crate) mod privilege;
mod ratelimit;
pub(crate) mod record;
mod recovery;
mod registry;
mod report;
mod serve;
pub(crate) mod slots;
pub mod state;
pub(crate) mod stats;
pub(crate) mod target;

pub(crate) use features::kernel_features;
pub(crate) use tell::wait_written as wait_told_lines_written;
mod tell;
mod workers;

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

use crate::config::Config;
use crate::event::EventSink;
use registry::Shared;
use slots::Slots;

#[derive(Debug, thiserror::Error)]
pub(crate) enum SupervisorError {
    #[error("another supervisor is already listening on {0}")]
    SocketInUse(PathBuf),
    #[error("preparing the socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("changing the signal mask (keeper signals): {0}")]
    SignalMask(#[source] Errno),
    #[error("creating the keeper's signalfd: {0}")]
    SignalFd(#[source] Errno),
    #[error("creating the slot file (memfd \"execguard-slots\"): {0}")]
    SlotFile(#[source] std::io::Error),
    #[error("creating the keeper's wake-up eventfd: {0}")]
    EventFd(#[source] Errno),
    #[error("starting the keeper's accept thread: {0}")]
    AcceptThread(#[source] std::io::Error),
    #[error("adding the {what} to the keeper's epoll: {source}")]
    EpollAdd { what: &'static str, source: Errno },
    #[error("creating or waiting on the keeper's epoll: {0}")]
    Epoll(#[source] Errno),
    #[error("taking the descriptors systemd passed (LISTEN_FDS): {0}")]
    ActivatedSocket(#[source] std::io::Error),
    #[error("creating the keeper-worker channel (socketpair): {0}")]
    Channel(#[source] Errno),
    #[error("duplicating fd {fd} ({what}) for the worker: {source}")]
    Dup {
        fd: std::os::fd::RawFd,
        what: &'static str,
        source: Errno,
    },
    #[error("starting the worker {exe}: {source}")]
    SpawnWorker {
        exe: PathBuf,
        source: std::io::Error,
    },
    #[error("setting the worker's parent-death signal: {0}")]
    DeathSignal(#[source] Errno),
    #[error(transparent)]
    Privilege(#[from] privilege::PrivilegeError),
    #[error(transparent)]
    Confine(#[from] confine::ConfineError),
    #[error(transparent)]
    Handover(#[from] handover::HandoverError),
    #[error("receiving from the keeper's channel (fd {fd}): {source}")]
    ChannelRecv {
        fd: std::os::fd::RawFd,
        source: Errno,
    },
}

/// The signals the keeper takes through its signalfd (blocked in the keeper, so inherited
/// blocked by the worker, which unblocks them).
fn keeper_signals() -> SigSet {
    let mut signals = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGUSR2,
        Signal::SIGCHLD,
        Signal::SIGHUP,
    ] {
        signals.add(s);
    }
    signals
}

/// The environment variable that carries the keeper's start time (seconds since the epoch).
pub(crate) const KEEPER_STARTED_ENV: &str = "EXECGUARD_KEEPER_STARTED";

/// What [`bind_root_only`] does with a socket file that is already there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Existing {
    /// Refuse if something listens on it (another supervisor); replace a stale file.
    RefuseLive,
    /// Replace it: the socket belongs to this keeper's workers, and a new worker takes over.
    Replace,
}

/// Binds a unix socket that only root may use: mode 0600 on the file, and every connection
/// checked by [`peer_is_root`].
fn bind_root_only(path: &Path, existing: Existing) -> Result<UnixListener, SupervisorError> {
    let err = |source| SupervisorError::Socket {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    if path.exists() {
        if existing == Existing::RefuseLive && UnixStream::connect(path).is_ok() {
            return Err(SupervisorError::SocketInUse(path.to_owned()));
        }
        std::fs::remove_file(path).map_err(err)?;
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(listener)
}

/// Whether the peer of a connection to `socket` runs as root; a refusal is logged with the
/// peer's uid and pid.
fn peer_is_root(stream: &UnixStream, socket: &'static str) -> bool {
    match getsockopt(stream, PeerCredentials) {
        Ok(cred) if cred.uid() == 0 => true,
        Ok(cred) => {
            tracing::warn!(
                socket,
                uid = cred.uid(),
                pid = cred.pid(),
                "refused a non-root peer"
            );
            false
        }
        Err(e) => {
            tracing::warn!(socket, error = %e, "cannot read peer credentials; refused");
            false
        }
    }
}

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
        .spawn(move || serve::serve_fd(&shared, parsed, fd, slot))
}

/// Stack of a notify fd's thread: inspection recurses at most a few levels (nested `#!`
/// interpreters) and keeps its buffers on the heap.
const THREAD_STACK: usize = 256 << 10;
