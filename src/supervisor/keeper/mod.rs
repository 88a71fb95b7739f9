//! The keeper: the small, long-lived half of `execguard supervise`. It owns the listener
//! socket and a copy of every container's notify fd, and runs the worker (`execguard worker`,
//! which does all the inspecting) as a child. When the worker dies, the keeper starts a new
//! one and hands it every notify fd again (on SIGUSR2, an upgrade, the keeper first stops
//! accepting and waits for the connections being read, [`accept`], then re-executes the
//! binary now at its path as the same process, [`handover`]): since the keeper's copies
//! keep the listeners open, the kernel keeps pending execs waiting instead of failing them with
//! ENOSYS, and the slot file tells the new worker which notifications the old one had received
//! but not answered.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::{mpsc, Arc};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::signal::Signal;
use nix::sys::signalfd::{SfdFlags, SignalFd};

pub(crate) mod accept;
mod fdstore;
pub(crate) mod handover;
mod workers;

use accept::{Acceptor, Held};
pub(crate) use workers::WorkerCommand;
use workers::{child_pid, restart_worker, send, start_worker, Worker, OWN_IMAGE};

use super::error::SupervisorError;
use super::record::Guarded;
use super::slots::{Slots, MAX_SLOTS};
use super::socket::{bind_root_only, Existing};
use crate::config::Config;

/// epoll tokens of the keeper's loop (notify fds use their slot index).
const TOKEN_SIGNAL: u64 = u64::MAX;
const TOKEN_ARRIVAL: u64 = u64::MAX - 1;

/// Runs the keeper until SIGTERM or SIGINT.
pub(crate) fn run(config: Config, cmd: WorkerCommand) -> Result<(), SupervisorError> {
    let signals = super::signals::keeper_signals();
    signals
        .thread_block()
        .map_err(SupervisorError::SignalMask)?;
    let signal_fd = SignalFd::with_flags(&signals, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(SupervisorError::SignalFd)?;

    let mut cmd = cmd;
    let adopted = handover::take()?;
    let (listener, activated, slots, carried) = match adopted {
        // This process replaced a keeper (an upgrade): its socket, slot file, notify fds and
        // exec record.
        Some(a) => {
            tracing::info!(containers = a.held.len(), exe = %cmd.exe.display(), "keeper upgraded in place");
            cmd.started = a.started;
            cmd.record = a.record;
            cmd.record_off = a.record_dropped;
            (a.listener, a.activated, a.slots, a.held)
        }
        None => {
            let (passed, stored) = from_systemd()?;
            let (listener, activated) = match passed {
                Some(l) => (l, true),
                None => (bind_root_only(&config.socket, Existing::RefuseLive)?, false),
            };
            // What systemd's fd store kept of a keeper that ended (a crash, a restart).
            let restored = fdstore::restore(stored);
            let slots = match restored.slots {
                Some(fd) => Slots::from_fd(fd).map_err(SupervisorError::SlotFile)?,
                None => Slots::create().map_err(SupervisorError::SlotFile)?,
            };
            if !restored.held.is_empty() {
                tracing::info!(
                    containers = restored.held.len(),
                    "notify fds taken back from systemd's fd store"
                );
            }
            (listener, activated, slots, restored.held)
        }
    };
    let store = fdstore::FdStore::from_env();
    if let Some(store) = &store {
        store.store_slots(slots.file().as_fd());
    }
    // Loaded while CAP_BPF and CAP_PERFMON are there: the reduction below drops them.
    if cmd.record.is_none() && cmd.record_off.is_none() {
        match super::record::load_if_wanted(config.worker.exec_record, Path::new(OWN_IMAGE)) {
            Ok(record) => cmd.record = Some(record),
            Err(why) => cmd.record_off = Some(why),
        }
    }
    // Named now, not at the first container; then the keeper uses none of them itself and
    // its workers (root processes it execs) get at most these.
    super::privilege::check_available()?;
    super::privilege::reduce(false)?;
    // After the reduction: whether the approvals can be written is tried with the worker's
    // privileges.
    let mut guarded = cmd.record.as_ref().and_then(Guarded::open);
    // The accept thread owns the listener; this copy is what an upgrade carries across.
    let listener_copy = listener
        .try_clone()
        .map_err(|source| SupervisorError::Socket {
            path: config.socket.clone(),
            source,
        })?;
    let wake = Arc::new(
        EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(SupervisorError::EventFd)?,
    );
    let (tx, rx) = mpsc::channel();
    let mut acceptor = Acceptor::start(listener, tx.clone(), wake.clone())
        .map_err(SupervisorError::AcceptThread)?;
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(SupervisorError::Epoll)?;
    epoll
        .add(
            &signal_fd,
            EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_SIGNAL),
        )
        .map_err(|source| SupervisorError::EpollAdd {
            what: "signalfd",
            source,
        })?;
    epoll
        .add(
            wake.as_fd(),
            EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_ARRIVAL),
        )
        .map_err(|source| SupervisorError::EpollAdd {
            what: "wake-up eventfd",
            source,
        })?;

    let mut held: Vec<Option<Held>> = (0..MAX_SLOTS).map(|_| None).collect();
    for (index, state, fd) in carried {
        if index < MAX_SLOTS && held[index].is_none() && watch(&epoll, index, &fd) {
            guard(guarded.as_mut(), &config, index, &state);
            held[index] = Some(Held { state, fd });
        }
    }
    if let Some(g) = guarded.as_mut() {
        g.prune();
    }
    let mut worker = Some(start_worker(&cmd, &cmd.exe, &slots, &held)?);
    tracing::info!(socket = %config.socket.display(), mode = %config.mode, "supervisor listening");

    let mut events = vec![EpollEvent::empty(); 64];
    loop {
        let n = match epoll.wait(&mut events, EpollTimeout::NONE) {
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(SupervisorError::Epoll(e)),
        };
        for ev in &events[..n] {
            match ev.data() {
                TOKEN_SIGNAL => {
                    while let Ok(Some(info)) = signal_fd.read_signal() {
                        match i32::try_from(info.ssi_signo)
                            .map_err(|_| Errno::EINVAL)
                            .and_then(Signal::try_from)
                        {
                            Ok(Signal::SIGCHLD) => {
                                if let Some(w) = worker.as_mut() {
                                    if let Ok(Some(status)) = w.child.try_wait() {
                                        tracing::warn!(%status, "worker ended; starting a new one");
                                        worker = None;
                                    }
                                }
                            }
                            Ok(Signal::SIGHUP) => {
                                match Config::load_or_default(cmd.config.as_deref()) {
                                    Ok(new) => {
                                        if new.socket != config.socket {
                                            tracing::warn!(
                                                old = %config.socket.display(),
                                                new = %new.socket.display(),
                                                "the socket path changes only when the supervisor restarts"
                                            );
                                        }
                                        tracing::info!("config reloaded; replacing the worker");
                                        if let Some(w) = worker.as_mut() {
                                            let _ = w.child.kill();
                                            let _ = w.child.wait();
                                        }
                                        worker = None;
                                    }
                                    Err(e) => {
                                        tracing::error!(error = %e, "reload refused; the running config stays")
                                    }
                                }
                            }
                            Ok(Signal::SIGUSR2) => {
                                // Containers that arrived meanwhile go across too, and those
                                // being read are waited for; later ones wait in the backlog.
                                acceptor.quiesce(accept::QUIESCE_BOUND);
                                let _ = wake.read();
                                while let Ok(arrival) = rx.try_recv() {
                                    admit(
                                        &epoll,
                                        &mut held,
                                        None,
                                        store.as_ref(),
                                        (guarded.as_mut(), &config),
                                        arrival,
                                    );
                                }
                                tracing::info!(exe = %cmd.exe.display(), "upgrading: the keeper re-executes itself");
                                // As after a worker crash, the slot file tells the next worker
                                // what this one had received and not answered.
                                if let Some(mut w) = worker.take() {
                                    let _ = w.child.kill();
                                    let _ = w.child.wait();
                                }
                                let carried = handover::Carried {
                                    listener: listener_copy.as_fd(),
                                    activated,
                                    slots: &slots,
                                    started: cmd.started,
                                    record: cmd.record.as_ref(),
                                    held: held
                                        .iter()
                                        .enumerate()
                                        .filter_map(|(i, h)| {
                                            h.as_ref()
                                                .map(|h| (i, h.state.as_slice(), h.fd.as_fd()))
                                        })
                                        .collect(),
                                };
                                let e = handover::reexec(&cmd.exe, &carried);
                                tracing::error!(error = %e, "the upgrade failed; the keeper goes on as it was");
                                match listener_copy
                                    .try_clone()
                                    .and_then(|l| Acceptor::start(l, tx.clone(), wake.clone()))
                                {
                                    Ok(a) => acceptor = a,
                                    Err(e) => {
                                        tracing::error!(error = %e, "cannot accept again after the failed upgrade");
                                    }
                                }
                            }
                            Ok(sig) => {
                                tracing::info!(signal = ?sig, "shutting down");
                                if let Some(mut w) = worker.take() {
                                    let _ = nix::sys::signal::kill(
                                        child_pid(&w.child),
                                        Signal::SIGTERM,
                                    );
                                    let _ = w.child.wait();
                                }
                                // A socket systemd made stays: it queues runc's connections
                                // until the supervisor is back.
                                if !activated {
                                    let _ = std::fs::remove_file(&config.socket);
                                }
                                return Ok(());
                            }
                            Err(_) => {}
                        }
                    }
                    if worker.is_none() {
                        worker = Some(restart_worker(&cmd, &slots, &held));
                    }
                }
                TOKEN_ARRIVAL => {
                    let _ = wake.read();
                    while let Ok(arrival) = rx.try_recv() {
                        admit(
                            &epoll,
                            &mut held,
                            worker.as_ref(),
                            store.as_ref(),
                            (guarded.as_mut(), &config),
                            arrival,
                        );
                    }
                }
                index => {
                    // A notify fd hung up: every task of that filter is gone.
                    let slot = usize::try_from(index).ok().and_then(|i| held.get_mut(i));
                    if let Some(h) = slot.and_then(Option::take) {
                        let _ = epoll.delete(&h.fd);
                        if let (Some(g), Ok(index)) = (guarded.as_mut(), usize::try_from(index)) {
                            g.release(index);
                        }
                        if let (Some(store), Ok(index)) = (&store, usize::try_from(index)) {
                            store.remove_held(index);
                        }
                    }
                }
            }
        }
    }
}

/// The listener socket systemd passed, if any, and the named descriptors of its fd store.
type FromSystemd = (Option<UnixListener>, Vec<(String, OwnedFd)>);

/// What systemd passed (`LISTEN_PID` is this process, `LISTEN_FDS` descriptors from fd 3, named
/// by `LISTEN_FDNAMES`): the listener socket (socket activation), and what its fd store kept
/// (named `slots`, `notify-N`, `state-N`: [`fdstore`]).
fn from_systemd() -> Result<FromSystemd, SupervisorError> {
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|p| p == std::process::id());
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<i32>().ok())
        .unwrap_or(0);
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    if !ours || count < 1 {
        return Ok((None, Vec::new()));
    }
    let mut names = names.split(':');
    let mut listener = None;
    let mut stored = Vec::new();
    for fd in 3..3 + count {
        let name = names.next().unwrap_or_default().to_owned();
        let owned = crate::sys::adopt_inherited_fd(fd).map_err(SupervisorError::ActivatedSocket)?;
        let from_store =
            name == "slots" || name.starts_with("notify-") || name.starts_with("state-");
        if from_store {
            stored.push((name, owned));
        } else if listener.is_none() {
            tracing::info!("using the listener socket passed by systemd");
            listener = Some(UnixListener::from(owned));
        }
    }
    Ok((listener, stored))
}

fn admit(
    epoll: &Epoll,
    held: &mut [Option<Held>],
    worker: Option<&Worker>,
    store: Option<&fdstore::FdStore>,
    (guarded, config): (Option<&mut Guarded>, &Config),
    h: Held,
) {
    let Some(index) = held.iter().position(Option::is_none) else {
        tracing::error!(
            "{MAX_SLOTS} notify fds are held already; this container is not served and its execs fail"
        );
        return;
    };
    if !watch(epoll, index, &h.fd) {
        return;
    }
    // Before the worker has the fd: the container's first exec is answered with its record.
    guard(guarded, config, index, &h.state);
    if let Some(w) = worker {
        send(w, index, &h);
    }
    if let Some(store) = store {
        store.store_held(index, &h.state, h.fd.as_fd());
    }
    held[index] = Some(h);
}

/// Adds the pid namespace of the container whose runc message is `state` to the exec record's
/// guarded ones; a container that cannot be added is still served, through `/proc` only.
fn guard(guarded: Option<&mut Guarded>, config: &Config, index: usize, state: &[u8]) {
    if let Some(g) = guarded {
        let confirmation = |metadata: &str, annotated: Option<&str>| {
            super::record::confirmation(config, metadata, annotated)
        };
        if let Err(e) = g.admit(index, state, confirmation) {
            tracing::warn!(slot = index, error = %e, "this container's execs are not in the exec record; its images are looked at through /proc");
        }
    }
}

/// Watches a held notify fd for its end. No events asked for: epoll still reports EPOLLHUP,
/// when the container is gone.
fn watch(epoll: &Epoll, index: usize, fd: &OwnedFd) -> bool {
    match epoll.add(fd, EpollEvent::new(EpollFlags::empty(), index as u64)) {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch a notify fd");
            false
        }
    }
}
