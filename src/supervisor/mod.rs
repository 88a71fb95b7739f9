//! The supervisor: accepts containers from runc on the listener socket, watches every
//! container's notify fd in one epoll loop, and answers each exec after inspecting it.

pub mod state;
pub mod target;

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

use crate::config::{Config, Mode};
use crate::event::Rule;
use crate::event::{self, Event, EventSink};
use crate::inspect::{self, resolve::FsView, Inspection, SystemLoaders};
use crate::policy::{self, Action, Settings};
use crate::spec::MODE_ANNOTATION;
use crate::sys::{NotifyFd, SeccompNotif, SeccompNotifResp, SECCOMP_USER_NOTIF_FLAG_CONTINUE};
use state::ContainerProcessState;
use target::{Target, Trapped};

const TOKEN_SIGNAL: u64 = u64::MAX;
const TOKEN_WAKE: u64 = u64::MAX - 1;

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("another supervisor is already listening on {0}")]
    SocketInUse(PathBuf),
    #[error("preparing the socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("setting up the event loop: {0}")]
    EventLoop(#[source] Errno),
}

/// A container the supervisor guards.
struct Container {
    id: String,
    settings: Settings,
    loaders: SystemLoaders,
}

/// One notify fd (a container start, or a `runc exec`).
struct Listener {
    notify: NotifyFd,
    container: Rc<Container>,
}

/// A container handed over by the acceptor thread.
struct Arrival {
    state: ContainerProcessState,
    fd: OwnedFd,
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

/// Accepts runtimes' connections and hands each container to the event loop.
fn accept_loop(listener: UnixListener, tx: mpsc::Sender<Arrival>, wake: Arc<EventFd>) {
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        match getsockopt(&stream, PeerCredentials) {
            Ok(cred) if cred.uid() == 0 => {}
            Ok(cred) => {
                tracing::warn!(
                    uid = cred.uid(),
                    pid = cred.pid(),
                    "refused a non-root peer"
                );
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read peer credentials; refused");
                continue;
            }
        }
        match state::receive(&stream) {
            Ok((state, fd)) => {
                if tx.send(Arrival { state, fd }).is_err() {
                    return;
                }
                let _ = wake.write(1);
            }
            Err(e) => tracing::warn!(error = %e, "bad message on the listener socket"),
        }
    }
}

/// Runs the supervisor until SIGTERM or SIGINT.
pub fn run(config: Config, sink: EventSink) -> Result<(), SupervisorError> {
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    // Blocked before the acceptor thread starts, so it inherits the mask and the signals
    // arrive only through the signalfd.
    signals.thread_block().map_err(SupervisorError::EventLoop)?;
    let signal_fd = SignalFd::with_flags(&signals, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(SupervisorError::EventLoop)?;

    let listener = bind(&config.socket)?;
    let wake = Arc::new(
        EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(SupervisorError::EventLoop)?,
    );
    let wake_writer = wake.clone();
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("accept".into())
        .spawn(move || accept_loop(listener, tx, wake_writer))
        .map_err(|source| SupervisorError::Socket {
            path: config.socket.clone(),
            source,
        })?;

    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(SupervisorError::EventLoop)?;
    epoll
        .add(
            &signal_fd,
            EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_SIGNAL),
        )
        .map_err(SupervisorError::EventLoop)?;
    epoll
        .add(
            wake.as_fd(),
            EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_WAKE),
        )
        .map_err(SupervisorError::EventLoop)?;
    tracing::info!(socket = %config.socket.display(), mode = %config.mode, "supervisor listening");

    let mut sup = Supervisor {
        config,
        sink,
        listeners: HashMap::new(),
        containers: HashMap::new(),
    };
    let mut events = vec![EpollEvent::empty(); 64];
    loop {
        let n = match epoll.wait(&mut events, EpollTimeout::NONE) {
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(SupervisorError::EventLoop(e)),
        };
        for ev in &events[..n] {
            match ev.data() {
                TOKEN_SIGNAL => {
                    if let Ok(Some(info)) = signal_fd.read_signal() {
                        tracing::info!(signal = info.ssi_signo, "shutting down");
                    }
                    let _ = std::fs::remove_file(&sup.config.socket);
                    return Ok(());
                }
                TOKEN_WAKE => {
                    let _ = wake.read();
                    while let Ok(arrival) = rx.try_recv() {
                        sup.admit(&epoll, arrival);
                    }
                }
                fd => sup.on_notify_ready(&epoll, fd as i32, ev.events()),
            }
        }
    }
}

struct Supervisor {
    config: Config,
    sink: EventSink,
    /// Notify fds by raw fd number (the epoll token).
    listeners: HashMap<i32, Listener>,
    /// Containers by id, shared by their notify fds.
    containers: HashMap<String, Rc<Container>>,
}

impl Supervisor {
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

    fn admit(&mut self, epoll: &Epoll, arrival: Arrival) {
        let Arrival { state, fd } = arrival;
        let id = state.state.id.clone();
        let notify = NotifyFd::new(fd);
        if let Err(e) = notify.set_sync_wakeup() {
            tracing::debug!(error = %e, "SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP not available");
        }
        let container = match self.containers.get(&id) {
            Some(c) => c.clone(),
            None => {
                let settings = self.container_settings(&state);
                let pid = u32::try_from(state.pid).unwrap_or(0);
                let loaders = match FsView::of_task(pid) {
                    Ok(view) => {
                        SystemLoaders::discover(&view, &self.config.detect.extra_system_loaders)
                    }
                    Err(e) => {
                        tracing::warn!(container = %id, pid, error = %e, "cannot see the container's root; loader copies are still found by content");
                        SystemLoaders::default()
                    }
                };
                tracing::info!(container = %id, pid, mode = %settings.mode, loaders = loaders.len(), "guarding container");
                let c = Rc::new(Container {
                    id: id.clone(),
                    settings,
                    loaders,
                });
                self.containers.insert(id.clone(), c.clone());
                c
            }
        };
        let raw = notify.as_raw_fd();
        if let Err(e) = epoll.add(&notify, EpollEvent::new(EpollFlags::EPOLLIN, raw as u64)) {
            tracing::error!(container = %id, error = %e, "cannot watch the notify fd");
            return;
        }
        self.listeners.insert(raw, Listener { notify, container });
    }

    fn on_notify_ready(&mut self, epoll: &Epoll, fd: i32, flags: EpollFlags) {
        if flags.contains(EpollFlags::EPOLLIN) {
            if let Some(l) = self.listeners.get(&fd) {
                handle(l, &self.sink);
            }
        }
        if flags.intersects(EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR)
            && !flags.contains(EpollFlags::EPOLLIN)
        {
            // Every task of the filter is gone: the container (or the exec'd process) ended.
            if let Some(l) = self.listeners.remove(&fd) {
                let _ = epoll.delete(&l.notify);
                let id = l.container.id.clone();
                drop(l);
                if self
                    .containers
                    .get(&id)
                    .is_some_and(|c| Rc::strong_count(c) == 1)
                {
                    self.containers.remove(&id);
                    tracing::info!(container = %id, "container released");
                }
            }
        }
    }
}

/// Receives one notification, inspects it, writes the event if any, and answers.
fn handle(l: &Listener, sink: &EventSink) {
    let notif = match l.notify.recv() {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return,
        Err(e) => {
            tracing::warn!(container = %l.container.id, error = %e, "NOTIF_RECV failed");
            return;
        }
    };
    let started = Instant::now();
    let c = &l.container;
    match target::decode(&notif) {
        Some(Trapped::Exec {
            req,
            path,
            argv,
            envp,
        }) => handle_exec(l, sink, &notif, req, path, argv, envp),
        Some(Trapped::ListenerAttempt { abi }) => {
            // The kernel refuses a second listener (EBUSY) whatever the answer; log the try.
            let verdict = policy::decide(Some(Rule::SeccompListenerAttempt), &c.settings);
            if let Some((rule, importance)) = verdict.event {
                let mut ev = base_event(c, &notif, rule, importance, verdict.action);
                ev.reason = "seccomp(SECCOMP_FILTER_FLAG_NEW_LISTENER) inside a guarded container"
                    .to_owned();
                ev.syscall = Some(event::SyscallInfo {
                    name: "seccomp",
                    abi: abi.as_str(),
                });
                emit(sink, &ev);
            }
            respond(l, notif.id, verdict.action);
        }
        // Nothing else is trapped; let it run as the profile would.
        None => respond(l, notif.id, Action::Continue),
    }
    tracing::trace!(container = %c.id, micros = started.elapsed().as_micros() as u64, "answered");
}

fn handle_exec(
    l: &Listener,
    sink: &EventSink,
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
        // The task's /proc entry is only its own while the notification is pending.
        target.check_valid()?;
        inspect::inspect(&req, &view, &mut target, &c.loaders)
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
        let mut ev = base_event(c, notif, rule, importance, verdict.action);
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
        ev.loader = finding
            .and_then(|f| f.loader.as_ref())
            .map(|l| event::LoaderInfo {
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
            });
        emit(sink, &ev);
    }
    respond(l, notif.id, verdict.action);
}

fn emit(sink: &EventSink, ev: &Event) {
    if let Err(e) = sink.emit(ev) {
        tracing::error!(error = %e, "cannot write the event");
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
    match l.notify.send(&resp) {
        Ok(()) => {}
        // The task was interrupted or died; if interrupted, the exec arrives again.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => tracing::warn!(container = %l.container.id, error = %e, "NOTIF_SEND failed"),
    }
}

/// The fields every event has; the caller fills in what it is about.
fn base_event(
    c: &Container,
    notif: &SeccompNotif,
    rule: Rule,
    importance: crate::event::Importance,
    action: Action,
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
        errno,
        reason: String::new(),
        container: event::ContainerInfo { id: c.id.clone() },
        process: event::ProcessInfo { pid: notif.pid },
        exec: None,
        syscall: None,
        loader: None,
    }
}
