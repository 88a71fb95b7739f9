//! The keeper's accept thread: runtimes' connections, each read on a thread of its own so that
//! a slow peer delays nobody. Before an upgrade re-executes the keeper, [`Acceptor::quiesce`]
//! stops accepting and waits for the connections being read: a connection accepted and not
//! yet read would die with the old image, and with it the container's only listener (its
//! trapped calls would then fail with ENOSYS). A runtime that connects meanwhile waits in the
//! socket's backlog, which the next keeper accepts from.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::supervisor::state;

/// A container's notify fd, as it arrives and as the keeper then holds it.
pub(crate) struct Held {
    /// runc's message, as it came: the worker parses it again.
    pub(super) state: Vec<u8>,
    pub(super) fd: OwnedFd,
}

/// How long an upgrade waits for the connections being read: one read's deadline, and a
/// second more. A root peer that takes longer loses its connection (and is told in the log).
pub(super) const QUIESCE_BOUND: Duration = Duration::from_secs(state::READ_DEADLINE.as_secs() + 1);

/// The accept thread, as the keeper's main loop sees it.
pub(super) struct Acceptor {
    stop: Arc<EventFd>,
    progress: Arc<Progress>,
}

#[derive(Default)]
struct Progress {
    /// Connections accepted and not yet read (and handed to the channel, or dropped).
    reading: AtomicUsize,
    /// The accept thread has returned: it accepts nothing more.
    stopped: AtomicBool,
}

/// Counts one connection being read; uncounts it when dropped, whatever happens to the read.
struct Reading(Arc<Progress>);

impl Reading {
    fn start(progress: &Arc<Progress>) -> Self {
        progress.reading.fetch_add(1, Ordering::SeqCst);
        Self(progress.clone())
    }
}

impl Drop for Reading {
    fn drop(&mut self) {
        self.0.reading.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Acceptor {
    /// Starts accepting on `listener`; every message read goes to `tx`, and `wake` is written
    /// after each.
    pub(super) fn start(
        listener: UnixListener,
        tx: mpsc::Sender<Held>,
        wake: Arc<EventFd>,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(EventFd::from_flags(
            EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK,
        )?);
        let progress = Arc::new(Progress::default());
        {
            let stop = stop.clone();
            let progress = progress.clone();
            std::thread::Builder::new()
                .name("accept".into())
                .spawn(move || accept_loop(&listener, &tx, &wake, &stop, &progress))?;
        }
        Ok(Self { stop, progress })
    }

    /// Stops accepting and waits, at most `bound`, until every connection accepted so far has
    /// been read and its message sent to the channel; says in the log what it gave up on.
    pub(super) fn quiesce(&self, bound: Duration) {
        if let Err(e) = self.stop.write(1) {
            tracing::error!(error = %e, "cannot stop the accept thread");
        }
        let started = Instant::now();
        loop {
            let reading = self.progress.reading.load(Ordering::SeqCst);
            let stopped = self.progress.stopped.load(Ordering::SeqCst);
            if stopped && reading == 0 {
                return;
            }
            if started.elapsed() >= bound {
                tracing::warn!(
                    connections = reading,
                    accepting_stopped = stopped,
                    "upgrading with connections still being read: those runtimes' containers lose their listener"
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn accept_loop(
    listener: &UnixListener,
    tx: &mpsc::Sender<Held>,
    wake: &Arc<EventFd>,
    stop: &EventFd,
    progress: &Arc<Progress>,
) {
    loop {
        let mut fds = [
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => {
                tracing::error!(error = %e, "poll on the listener socket failed");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        }
        let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
        if ready(&fds[1]) {
            // Counted before this, every accepted connection is in `reading`.
            progress.stopped.store(true, Ordering::SeqCst);
            return;
        }
        if !ready(&fds[0]) {
            continue;
        }
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let reading = Reading::start(progress);
        let tx = tx.clone();
        let wake = wake.clone();
        let spawned = std::thread::Builder::new()
            .name("connection".into())
            .spawn(move || {
                if let Some((state, fd)) = receive(&stream) {
                    if tx.send(Held { state, fd }).is_ok() {
                        let _ = wake.write(1);
                    }
                }
                drop(reading);
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a thread for a connection");
        }
    }
}

/// Reads runc's message from a root peer.
fn receive(stream: &UnixStream) -> Option<(Vec<u8>, std::os::fd::OwnedFd)> {
    if !crate::supervisor::socket::peer_is_root(stream, "listener") {
        return None;
    }
    match state::receive(stream) {
        Ok((raw, parsed, fd)) => {
            tracing::info!(container = %parsed.state.id, pid = parsed.pid, "container arrived");
            Some((raw, fd))
        }
        Err(state::StateError::Empty) => {
            tracing::debug!("a liveness check connected");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "bad message on the listener socket");
            None
        }
    }
}
