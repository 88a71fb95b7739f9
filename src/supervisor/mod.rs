//! The supervisor. `execguard supervise` is the keeper ([`keeper`]): it owns the socket and a
//! copy of every notify fd, and runs the worker (`execguard worker`, this module's
//! [`run_worker`]) that answers every exec of every guarded container after inspecting it.
//!
//! Worker threads: the main thread reads the keeper's channel; each notify fd (a container
//! start or a `runc exec`) gets a thread of its own that serves it until every task behind it
//! is gone. A container whose inspection is slow (a hung filesystem, a flood of execs) delays
//! only its own execs.

pub mod control;
pub mod keeper;
pub mod slots;
pub mod state;
pub mod stats;
pub mod target;

use std::collections::{HashMap, HashSet};
use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

use crate::config::{Config, Mode};
use crate::event::Rule;
use crate::event::{self, Event, EventSink};
use crate::inspect::{self, image, resolve::FsView, Inspection, SystemLoaders};
use crate::policy::{self, Action, Settings};
use crate::spec::MODE_ANNOTATION;
use crate::sys::{NotifyFd, SeccompNotif, SeccompNotifResp, SECCOMP_USER_NOTIF_FLAG_CONTINUE};
use slots::{SlotState, Slots};
use state::ContainerProcessState;
use target::{Target, Trapped};

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("another supervisor is already listening on {0}")]
    SocketInUse(PathBuf),
    #[error("preparing the socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("signals or event loop: {0}")]
    Signals(#[source] Errno),
    #[error("starting a thread or process: {0}")]
    Thread(#[source] std::io::Error),
}

/// A container the supervisor guards, shared by the threads of its notify fds.
struct Container {
    id: String,
    settings: Settings,
    loaders: SystemLoaders,
    since: std::time::SystemTime,
    counters: control::ContainerCounters,
}

/// What every worker thread shares.
struct Shared {
    config: Config,
    /// The config file, for `reload` to validate.
    config_path: Option<PathBuf>,
    sink: EventSink,
    slots: Slots,
    /// Containers by id, while any of their notify fds is served.
    containers: Mutex<HashMap<String, Weak<Container>>>,
    counters: Arc<control::Counters>,
    events_by: Mutex<std::collections::BTreeMap<(&'static str, crate::event::Importance), u64>>,
    started: Instant,
    /// When the keeper started (the supervisor's uptime survives worker restarts).
    keeper_started: Option<std::time::SystemTime>,
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
pub const KEEPER_STARTED_ENV: &str = "EXECGUARD_KEEPER_STARTED";

/// One notify fd (a container start, or a `runc exec`).
struct Listener {
    notify: NotifyFd,
    container: Arc<Container>,
    /// Its slot in the keeper's slot file.
    slot: usize,
    counters: Arc<control::Counters>,
    /// The last notification whose answer found its task interrupted (SEND: ENOENT): the
    /// kernel restarts the call, and the same notification comes again, not a new exec.
    interrupted: std::cell::Cell<Option<(u32, i32, [u64; 6])>>,
    /// The id of the last answer that found its task gone or interrupted.
    answer_enoent: std::cell::Cell<Option<u64>>,
}

/// Binds the listener socket: only root may connect (mode 0600, peer uid checked).
fn bind(path: &Path) -> Result<UnixListener, SupervisorError> {
    let err = |source| SupervisorError::Socket {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(SupervisorError::SocketInUse(path.to_owned()));
        }
        std::fs::remove_file(path).map_err(err)?;
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(listener)
}

/// Runs the worker: reads notify fds from the keeper's channel and serves each on a thread of
/// its own. Ends when the keeper closes the channel.
pub fn run_worker(
    config: Config,
    config_path: Option<PathBuf>,
    sink: EventSink,
    channel: OwnedFd,
    slots: Slots,
) -> Result<(), SupervisorError> {
    // The keeper blocks its signals; a worker must die of SIGTERM like any process.
    keeper_signals()
        .thread_unblock()
        .map_err(SupervisorError::Signals)?;
    // A worker never outlives its keeper: the notify fds must close with the keeper, not
    // linger in an orphan that no one restarts.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(SupervisorError::Signals)?;
    if nix::unistd::getppid().as_raw() == 1 {
        return Ok(());
    }
    let keeper_started = std::env::var(KEEPER_STARTED_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(|s| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s));
    let shared = Arc::new(Shared {
        config,
        config_path,
        sink,
        slots,
        containers: Mutex::new(HashMap::new()),
        counters: Arc::new(control::Counters::default()),
        events_by: Mutex::new(std::collections::BTreeMap::new()),
        started: Instant::now(),
        keeper_started,
    });
    control::start(shared.clone());
    let mut buf = vec![0u8; state::MAX_STATE_BYTES + 8];
    loop {
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let (n, fds) = {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let msg = match recvmsg::<()>(
                channel.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(m) => m,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(SupervisorError::Signals(e)),
            };
            let mut fds = Vec::new();
            for c in msg.cmsgs().map_err(SupervisorError::Signals)? {
                if let ControlMessageOwned::ScmRights(raw) = c {
                    fds.extend(raw);
                }
            }
            (msg.bytes, crate::sys::own_received_fds(&fds))
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
        let shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("container".into())
            .stack_size(THREAD_STACK)
            .spawn(move || serve_fd(&shared, parsed, fd, slot));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a thread for a container");
        }
    }
}

/// Stack of a notify fd's thread: inspection recurses at most a few levels (nested `#!`
/// interpreters) and keeps its buffers on the heap.
const THREAD_STACK: usize = 256 << 10;

/// Serves one notify fd until every task behind it is gone.
fn serve_fd(shared: &Shared, state: ContainerProcessState, fd: OwnedFd, slot: usize) {
    let notify = NotifyFd::new(fd);
    if let Err(e) = notify.set_sync_wakeup() {
        tracing::debug!(error = %e, "SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP not available");
    }
    let l = Listener {
        notify,
        container: shared.admit(&state),
        slot,
        counters: shared.counters.clone(),
        interrupted: std::cell::Cell::new(None),
        answer_enoent: std::cell::Cell::new(None),
    };
    serve(&l, shared);
    let id = l.container.id.clone();
    drop(l);
    let mut containers = shared.containers.lock().unwrap_or_else(|p| p.into_inner());
    if containers.get(&id).is_some_and(|w| w.upgrade().is_none()) {
        containers.remove(&id);
        tracing::info!(container = %id, "container released");
    }
}

/// What one notify fd's thread remembers between notifications.
#[derive(Default)]
struct ListenerState {
    /// What each executable is, by file version (at the exec and at the image).
    cache: inspect::FileCache,
    /// Loader findings allowed at the exec, by the pid the new image will have (with the
    /// process's start time, since pids are reused), so that the image checkpoint does not
    /// log them twice. Every image checkpoint consumes its pid's entry.
    allowed_at_exec: HashMap<u32, (Rule, u64)>,
    /// Images already judged at their first thread-pointer setup (pid, AT_RANDOM).
    judged_images: HashSet<(u32, u64)>,
    /// Set while answering a notification whose event a dead worker already wrote.
    suppress_events: bool,
    /// The events rate limit, by event identity.
    repeats: HashMap<u64, Repeat>,
    /// Time from receiving a notification to answering it, at the exec and at the image.
    exec_latency: stats::Histogram,
    image_latency: stats::Histogram,
}

/// Entries kept in each of `ListenerState`'s maps before it is emptied.
const STATE_ENTRIES: usize = 4096;

/// Serves one notify fd until it hangs up, after answering what a dead worker left in its slot.
fn serve(l: &Listener, shared: &Shared) {
    let mut st = ListenerState::default();
    recover(l, &mut st, shared);
    serve_until_hangup(l, &mut st, shared);
    flush_repeats(shared, &mut st);
    tracing::info!(
        container = %l.container.id,
        execs = st.exec_latency.count(),
        exec_p50_us = st.exec_latency.quantile(0.5),
        exec_p99_us = st.exec_latency.quantile(0.99),
        images = st.image_latency.count(),
        image_p50_us = st.image_latency.quantile(0.5),
        image_p99_us = st.image_latency.quantile(0.99),
        "notify fd closed"
    );
}

fn serve_until_hangup(l: &Listener, st: &mut ListenerState, shared: &Shared) {
    let st = &mut *st;
    loop {
        let mut fds = [PollFd::new(l.notify.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => {
                tracing::error!(container = %l.container.id, error = %e, "poll on the notify fd failed");
                return;
            }
        }
        let revents = fds[0].revents().unwrap_or(PollFlags::empty());
        if revents.contains(PollFlags::POLLIN) {
            let notif = match l.notify.recv() {
                Ok(n) => n,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => {
                    l.counters
                        .notification_errors
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(container = %l.container.id, error = %e, "NOTIF_RECV failed");
                    continue;
                }
            };
            shared.slots.record(l.slot, SlotState::Received, &notif);
            handle(l, st, shared, &notif);
            shared.slots.clear(l.slot);
        } else if revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL)
        {
            // Every task of the filter is gone: the container (or the exec'd process) ended.
            return;
        }
    }
}

impl Shared {
    fn container_settings(&self, state: &ContainerProcessState) -> Settings {
        let annotated = state
            .state
            .annotations
            .get(MODE_ANNOTATION)
            .and_then(|v| Mode::from_annotation(v));
        Settings {
            mode: annotated.unwrap_or(self.config.mode),
            enforce: self.config.enforce.clone(),
            rules: self.config.rules.clone(),
        }
    }

    /// The container of this message: the one already guarded under its id (a `runc exec`),
    /// or a new one, whose own loaders are found in its root.
    fn admit(&self, state: &ContainerProcessState) -> Arc<Container> {
        let id = state.state.id.clone();
        if let Some(c) = self.lookup(&id) {
            return c;
        }
        let settings = self.container_settings(state);
        let pid = u32::try_from(state.pid).unwrap_or(0);
        let loaders = match FsView::of_task(pid) {
            Ok(view) => SystemLoaders::discover(&view, &self.config.detect.extra_system_loaders),
            Err(e) => {
                tracing::warn!(container = %id, pid, error = %e, "cannot see the container's root; loader copies are still found by content");
                SystemLoaders::default()
            }
        };
        tracing::info!(container = %id, pid, mode = %settings.mode, loaders = loaders.len(), "guarding container");
        let c = Arc::new(Container {
            id: id.clone(),
            settings,
            loaders,
            since: std::time::SystemTime::now(),
            counters: control::ContainerCounters::default(),
        });
        let mut containers = self.containers.lock().unwrap_or_else(|p| p.into_inner());
        // Another thread may have admitted the same container meanwhile; either is right.
        containers.insert(id, Arc::downgrade(&c));
        c
    }

    fn lookup(&self, id: &str) -> Option<Arc<Container>> {
        let containers = self.containers.lock().unwrap_or_else(|p| p.into_inner());
        containers.get(id).and_then(Weak::upgrade)
    }
}

/// Answers what a dead worker left: the notification in this fd's slot, if still pending,
/// and any it received after that and could not record (notification ids count up by one;
/// those are answered by the mode's fail-safe rule, since their content is gone).
fn recover(l: &Listener, st: &mut ListenerState, shared: &Shared) {
    let Some((state, notif)) = shared.slots.read(l.slot) else {
        return;
    };
    if state != SlotState::Empty && l.notify.id_valid(notif.id) {
        tracing::warn!(container = %l.container.id, id = notif.id, "answering a notification a dead worker left");
        st.suppress_events = state == SlotState::EventWritten;
        handle(l, st, shared, &notif);
        st.suppress_events = false;
    }
    shared.slots.clear(l.slot);
    for id in notif.id.wrapping_add(1)..=notif.id.wrapping_add(RECOVERY_PROBES) {
        if l.notify.id_valid(id) {
            tracing::warn!(container = %l.container.id, id, "answering an unrecorded notification a dead worker left");
            let verdict = policy::on_error(
                &inspect::InspectError::ReadTarget {
                    what: "notification lost with a dead worker",
                    errno: Errno::EIO,
                },
                &l.container.settings,
            );
            let unknown = SeccompNotif {
                id,
                ..Default::default()
            };
            if let Some((rule, importance)) = verdict.event {
                let mut ev = base_event(
                    &l.container,
                    &unknown,
                    rule,
                    importance,
                    verdict.action,
                    "exec",
                );
                ev.reason =
                    "a notification received by a worker that died before recording it".to_owned();
                emit(shared, l, st, &unknown, ev);
            }
            respond(l, id, verdict.action);
        }
    }
}

/// Notifications after the last recorded one that a new worker checks for.
const RECOVERY_PROBES: u64 = 4;

/// Inspects one notification, writes the event if any, and answers.
fn handle(l: &Listener, st: &mut ListenerState, shared: &Shared, notif: &SeccompNotif) {
    let notif = *notif;
    let started = Instant::now();
    // A restarted call after an interruption was logged the first time.
    let retry = l.interrupted.take() == Some((notif.pid, notif.data.nr, notif.data.args));
    let suppressed_before = st.suppress_events;
    st.suppress_events |= retry;
    let c = &l.container;
    let trapped = target::decode(&notif);
    match trapped.clone() {
        Some(Trapped::Exec {
            req,
            path,
            argv,
            envp,
        }) => handle_exec(l, st, shared, &notif, req, path, argv, envp),
        Some(Trapped::Checkpoint { abi, syscall }) => {
            handle_checkpoint(l, st, shared, &notif, abi, syscall)
        }
        Some(Trapped::ListenerAttempt { abi }) => {
            // The kernel refuses a second listener (EBUSY) whatever the answer; log the try.
            let verdict = policy::decide(Some(Rule::SeccompListenerAttempt), &c.settings);
            if let Some((rule, importance)) = verdict.event {
                let mut ev = base_event(c, &notif, rule, importance, verdict.action, "syscall");
                ev.reason = "seccomp(SECCOMP_FILTER_FLAG_NEW_LISTENER) inside a guarded container"
                    .to_owned();
                ev.syscall = Some(event::SyscallInfo {
                    name: "seccomp",
                    abi: abi.as_str(),
                });
                emit(shared, l, st, &notif, ev);
            }
            respond(l, notif.id, verdict.action);
        }
        // Nothing else is trapped; let it run as the profile would.
        None => respond(l, notif.id, Action::Continue),
    }
    st.suppress_events = suppressed_before;
    if l.answer_enoent.take() == Some(notif.id) {
        l.interrupted
            .set(Some((notif.pid, notif.data.nr, notif.data.args)));
    }
    let micros = started.elapsed().as_micros() as u64;
    let counters = &shared.counters;
    counters.record_latency(micros);
    match trapped {
        Some(Trapped::Checkpoint { .. }) => {
            st.image_latency.record(micros);
            c.counters.images.fetch_add(1, Ordering::Relaxed);
            counters.image_notifications.fetch_add(1, Ordering::Relaxed);
        }
        Some(Trapped::Exec { .. }) => {
            st.exec_latency.record(micros);
            c.counters.execs.fetch_add(1, Ordering::Relaxed);
            counters.exec_notifications.fetch_add(1, Ordering::Relaxed);
        }
        _ => {
            counters.other_notifications.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn handle_exec(
    l: &Listener,
    st: &mut ListenerState,
    shared: &Shared,
    notif: &SeccompNotif,
    mut req: inspect::ExecRequest,
    path_addr: u64,
    argv_addr: u64,
    envp_addr: u64,
) {
    let c = &l.container;
    let mut target = Target::new(&l.notify, notif, req.abi, argv_addr, envp_addr);
    let result = (|| -> Result<Inspection, inspect::InspectError> {
        req.path = target.read_path(path_addr)?;
        let view =
            FsView::of_task(notif.pid).map_err(|errno| inspect::InspectError::ReadTarget {
                what: "filesystem view",
                errno,
            })?;
        // One check covers the path just read and /proc/TID just opened: both are the task's
        // own only while the notification is pending.
        target.check_valid()?;
        inspect::inspect(&req, &view, &mut target, &c.loaders, &mut st.cache)
    })();
    let (verdict, inspection, error) = match result {
        Ok(i) => (
            policy::decide(i.finding.as_ref().map(|f| f.rule), &c.settings),
            Some(i),
            None,
        ),
        Err(e) => (policy::on_error(&e, &c.settings), None, Some(e)),
    };
    if let Some((rule, importance)) = verdict.event {
        let argv = target_argv(&mut target);
        let finding = inspection.as_ref().and_then(|i| i.finding.as_ref());
        if verdict.action == Action::Continue && finding.is_some_and(|f| f.loader.is_some()) {
            // The image checkpoint will see the same loader; it need not log it again.
            if let Some(tgid) = tgid_of(notif.pid) {
                if let Some(start) = start_time_of(tgid) {
                    if st.allowed_at_exec.len() >= STATE_ENTRIES {
                        st.allowed_at_exec.clear();
                    }
                    st.allowed_at_exec.insert(tgid, (rule, start));
                }
            }
        }
        let mut ev = base_event(c, notif, rule, importance, verdict.action, "exec");
        ev.reason = match (finding, &error) {
            (Some(f), _) => f.reason.clone(),
            (None, Some(e)) => e.to_string(),
            (None, None) => String::new(),
        };
        ev.exec = Some(event::ExecInfo {
            syscall: req.syscall.as_str(),
            abi: req.abi.as_str(),
            path: event::lossy(&req.path),
            resolved: inspection
                .as_ref()
                .and_then(|i| i.resolved.as_deref())
                .map(event::lossy),
            argv: argv.items.iter().map(|a| event::lossy(a)).collect(),
            argv_truncated: argv.truncated,
        });
        ev.loader = finding.and_then(|f| f.loader.as_ref()).map(loader_info);
        emit(shared, l, st, notif, ev);
    }
    respond(l, notif.id, verdict.action);
}

/// The second checkpoint: the new image's first thread-pointer setup. A loader found running
/// a program here is judged like one found at the exec; in enforce mode the process is killed
/// (it has run none of its own code yet) and the call fails.
fn handle_checkpoint(
    l: &Listener,
    st: &mut ListenerState,
    shared: &Shared,
    notif: &SeccompNotif,
    abi: inspect::Abi,
    syscall: &'static str,
) {
    let c = &l.container;
    let valid = || l.notify.id_valid(notif.id);
    let result = image::inspect_image(notif.pid, abi, &c.loaders, &mut st.cache, &valid);
    let img = match result {
        Ok(img) => img,
        Err(e) => {
            let verdict = policy::on_error(&e, &c.settings);
            if let Some((rule, importance)) = verdict.event {
                let mut ev = base_event(c, notif, rule, importance, verdict.action, "image");
                ev.reason = e.to_string();
                emit(shared, l, st, notif, ev);
            }
            deny_or_continue(l, notif, verdict.action);
            return;
        }
    };
    let allowed_at_exec = st.allowed_at_exec.remove(&notif.pid);
    let Some(finding) = img.finding else {
        respond(l, notif.id, Action::Continue);
        return;
    };
    // Later thread-pointer setups of the same image (a Go runtime's threads) were judged.
    if let Some(token) = img.token {
        if st.judged_images.len() >= STATE_ENTRIES {
            st.judged_images.clear();
        }
        if !st.judged_images.insert((notif.pid, token)) {
            respond(l, notif.id, Action::Continue);
            return;
        }
    }
    let verdict = policy::decide(Some(finding.rule), &c.settings);
    let seen_at_exec = allowed_at_exec.is_some_and(|(rule, start)| {
        rule == finding.rule && start_time_of(notif.pid) == Some(start)
    });
    if let Some((rule, importance)) = verdict.event {
        if !seen_at_exec || verdict.action != Action::Continue {
            let mut ev = base_event(c, notif, rule, importance, verdict.action, "image");
            ev.reason = format!("{} (seen after the exec)", finding.reason);
            ev.exec = Some(event::ExecInfo {
                syscall,
                abi: abi.as_str(),
                path: event::lossy(&img.exe),
                resolved: None,
                argv: img.argv.items.iter().map(|a| event::lossy(a)).collect(),
                argv_truncated: img.argv.truncated,
            });
            ev.loader = finding.loader.as_ref().map(loader_info);
            emit(shared, l, st, notif, ev);
        }
    }
    deny_or_continue(l, notif, verdict.action);
}

/// At the image checkpoint a denial also kills the process: a loader that ignored the failed
/// call must not go on to run the program.
fn deny_or_continue(l: &Listener, notif: &SeccompNotif, action: Action) {
    if let Action::Deny(_) = action {
        match crate::sys::PidFd::open(notif.pid) {
            // The pidfd names the notifying process only if the notification is still pending.
            Ok(pidfd) if l.notify.id_valid(notif.id) => {
                if let Err(e) = pidfd.kill() {
                    tracing::warn!(pid = notif.pid, error = %e, "cannot kill a denied image");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(pid = notif.pid, error = %e, "no pidfd for a denied image"),
        }
    }
    respond(l, notif.id, action);
}

/// A process's start time (clock ticks since boot): with the pid, an identity that a reused
/// pid does not share.
fn start_time_of(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// The thread-group id of a task (the pid its process has after an exec).
fn tgid_of(tid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

fn loader_info(l: &inspect::LoaderFinding) -> event::LoaderInfo {
    event::LoaderInfo {
        path: event::lossy(&l.path),
        kind: l.kind.as_str(),
        program: l.invocation.program.as_deref().map(event::lossy),
        mode: l.invocation.mode.as_str(),
        options: l
            .invocation
            .options
            .iter()
            .map(|o| event::lossy(o))
            .collect(),
        via: l.via.as_str(),
    }
}

/// Writes an event and notes in the slot that it was written (a worker that takes over an
/// unanswered notification then does not write it twice).
fn emit(
    shared: &Shared,
    l: &Listener,
    st: &mut ListenerState,
    notif: &SeccompNotif,
    mut ev: Event,
) {
    if st.suppress_events {
        return;
    }
    if rate_limited(shared, st, &mut ev) {
        l.container.counters.events.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if let Err(e) = shared.sink.emit(&ev) {
        tracing::error!(error = %e, "cannot write the event");
    }
    l.container.counters.events.fetch_add(1, Ordering::Relaxed);
    *shared
        .events_by
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry((ev.event, ev.importance))
        .or_default() += 1;
    if notif.id != 0 {
        shared.slots.record(l.slot, SlotState::EventWritten, notif);
    }
}

/// One rate-limit key's state: when an event was last written, how many identical ones were
/// suppressed since, and the last of those (written when the container ends).
struct Repeat {
    written: Instant,
    suppressed: u64,
    last: Option<Event>,
}

/// Applies `[events] rate_limit_seconds`: true when `ev` is suppressed (kept as the pending
/// last one); otherwise `ev.repeated` says how many were suppressed before it.
fn rate_limited(shared: &Shared, st: &mut ListenerState, ev: &mut Event) -> bool {
    let window = shared.config.events.rate_limit_seconds;
    if window == 0 {
        return false;
    }
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (ev.event, ev.action, ev.stage).hash(&mut h);
    if let Some(x) = &ev.exec {
        (&x.path, &x.argv).hash(&mut h);
    }
    let key = h.finish();
    let now = Instant::now();
    if let Some(r) = st.repeats.get_mut(&key) {
        if now.duration_since(r.written).as_secs() < window {
            r.suppressed += 1;
            r.last = Some(std::mem::replace(ev, placeholder_event()));
            return true;
        }
        if r.suppressed > 0 {
            ev.repeated = Some(r.suppressed);
        }
        *r = Repeat {
            written: now,
            suppressed: 0,
            last: None,
        };
        return false;
    }
    if st.repeats.len() >= STATE_ENTRIES {
        flush_repeats(shared, st);
    }
    st.repeats.insert(
        key,
        Repeat {
            written: now,
            suppressed: 0,
            last: None,
        },
    );
    false
}

/// Writes the last suppressed event of every key, with its count: nothing is lost to the
/// rate limit, only folded.
fn flush_repeats(shared: &Shared, st: &mut ListenerState) {
    for (_, r) in st.repeats.drain() {
        if let Some(mut ev) = r.last {
            ev.repeated = Some(r.suppressed);
            if let Err(e) = shared.sink.emit(&ev) {
                tracing::error!(error = %e, "cannot write the event");
            }
        }
    }
}

/// What a suppressed event is replaced by while it waits (never written).
fn placeholder_event() -> Event {
    Event {
        time: String::new(),
        event: "",
        description: "",
        category: "",
        method: "",
        importance: crate::event::Importance::Info,
        mode: Mode::Off,
        action: "",
        repeated: None,
        stage: "",
        errno: None,
        reason: String::new(),
        container: event::ContainerInfo { id: String::new() },
        process: event::ProcessInfo { pid: 0 },
        exec: None,
        syscall: None,
        loader: None,
    }
}

fn target_argv(target: &mut Target<'_>) -> inspect::Argv {
    use inspect::ExecArgs;
    target.argv().unwrap_or_default()
}

fn respond(l: &Listener, id: u64, action: Action) {
    let resp = match action {
        Action::Continue => SeccompNotifResp {
            id,
            val: 0,
            error: 0,
            flags: SECCOMP_USER_NOTIF_FLAG_CONTINUE,
        },
        Action::Deny(errno) => SeccompNotifResp {
            id,
            val: 0,
            error: -errno,
            flags: 0,
        },
    };
    if let Action::Deny(_) = action {
        l.container.counters.denials.fetch_add(1, Ordering::Relaxed);
        l.counters.denials.fetch_add(1, Ordering::Relaxed);
    }
    match l.notify.send(&resp) {
        Ok(()) => {}
        // The task was interrupted or died; if interrupted, the call arrives again.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => l.answer_enoent.set(Some(id)),
        Err(e) => {
            l.counters
                .notification_errors
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(container = %l.container.id, error = %e, "NOTIF_SEND failed");
        }
    }
}

/// The fields every event has; the caller fills in what it is about.
fn base_event(
    c: &Container,
    notif: &SeccompNotif,
    rule: Rule,
    importance: crate::event::Importance,
    action: Action,
    stage: &'static str,
) -> Event {
    let (action_name, errno) = match action {
        Action::Continue => ("allowed", None),
        Action::Deny(e) => ("denied", Some(crate::config::Errno(e).name())),
    };
    Event {
        time: event::now_rfc3339(),
        event: rule.name(),
        description: rule.description(),
        category: rule.category(),
        method: rule.method(),
        importance,
        mode: c.settings.mode,
        action: action_name,
        repeated: None,
        stage,
        errno,
        reason: String::new(),
        container: event::ContainerInfo { id: c.id.clone() },
        process: event::ProcessInfo { pid: notif.pid },
        exec: None,
        syscall: None,
        loader: None,
    }
}
