//! The supervisor: accepts containers from runc on the listener socket and answers every exec
//! of every guarded container after inspecting it.
//!
//! Threads: the main thread waits for SIGTERM/SIGINT; one thread accepts connections; each
//! connection (a container start or a `runc exec`) gets a thread of its own that reads runc's
//! message and then serves that notify fd until every task behind it is gone. A container whose
//! inspection is slow (a hung filesystem, a flood of execs) delays only its own execs.

pub mod state;
pub mod target;

use std::collections::{HashMap, HashSet};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

use crate::config::{Config, Mode};
use crate::event::Rule;
use crate::event::{self, Event, EventSink};
use crate::inspect::{self, image, resolve::FsView, Inspection, SystemLoaders};
use crate::policy::{self, Action, Settings};
use crate::spec::MODE_ANNOTATION;
use crate::sys::{NotifyFd, SeccompNotif, SeccompNotifResp, SECCOMP_USER_NOTIF_FLAG_CONTINUE};
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
    #[error("waiting for signals: {0}")]
    Signals(#[source] Errno),
    #[error("starting a thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// A container the supervisor guards, shared by the threads of its notify fds.
struct Container {
    id: String,
    settings: Settings,
    loaders: SystemLoaders,
}

/// What every thread shares.
struct Shared {
    config: Config,
    sink: EventSink,
    /// Containers by id, while any of their notify fds is served.
    containers: Mutex<HashMap<String, Weak<Container>>>,
}

/// One notify fd (a container start, or a `runc exec`).
struct Listener {
    notify: NotifyFd,
    container: Arc<Container>,
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

/// Runs the supervisor until SIGTERM or SIGINT.
pub fn run(config: Config, sink: EventSink) -> Result<(), SupervisorError> {
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    // Blocked before any thread starts, so that every thread inherits the mask and the
    // signals are taken only by `wait` below.
    signals.thread_block().map_err(SupervisorError::Signals)?;

    let listener = bind(&config.socket)?;
    tracing::info!(socket = %config.socket.display(), mode = %config.mode, "supervisor listening");
    let socket = config.socket.clone();
    let shared = Arc::new(Shared {
        config,
        sink,
        containers: Mutex::new(HashMap::new()),
    });
    std::thread::Builder::new()
        .name("accept".into())
        .spawn(move || accept_loop(listener, shared))
        .map_err(SupervisorError::Thread)?;

    let signal = signals.wait().map_err(SupervisorError::Signals)?;
    tracing::info!(signal = ?signal, "shutting down");
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

/// Accepts runtimes' connections; each gets a thread of its own.
fn accept_loop(listener: UnixListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("container".into())
            .spawn(move || serve_connection(stream, &shared));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a thread for a container");
        }
    }
}

/// Reads runc's message, then answers the notify fd until every task behind it is gone.
fn serve_connection(stream: UnixStream, shared: &Shared) {
    match getsockopt(&stream, PeerCredentials) {
        Ok(cred) if cred.uid() == 0 => {}
        Ok(cred) => {
            tracing::warn!(
                uid = cred.uid(),
                pid = cred.pid(),
                "refused a non-root peer"
            );
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read peer credentials; refused");
            return;
        }
    }
    let (state, fd) = match state::receive(&stream) {
        Ok(m) => m,
        Err(state::StateError::Empty) => {
            tracing::debug!("a liveness check connected");
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "bad message on the listener socket");
            return;
        }
    };
    drop(stream);
    let notify = NotifyFd::new(fd);
    if let Err(e) = notify.set_sync_wakeup() {
        tracing::debug!(error = %e, "SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP not available");
    }
    let l = Listener {
        notify,
        container: shared.admit(&state),
    };
    serve(&l, &shared.sink);
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
    /// Whether executables are loaders, by file version (for the image checkpoint).
    cache: image::ClassCache,
    /// Loader findings allowed at the exec, by the pid the new image will have, so that the
    /// image checkpoint does not log them twice.
    allowed_at_exec: HashMap<u32, Rule>,
    /// Images already judged at their first thread-pointer setup (pid, AT_RANDOM).
    judged_images: HashSet<(u32, u64)>,
}

/// Entries kept in each of `ListenerState`'s maps before it is emptied.
const STATE_ENTRIES: usize = 4096;

/// Serves one notify fd until it hangs up.
fn serve(l: &Listener, sink: &EventSink) {
    let mut st = ListenerState::default();
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
            handle(l, &mut st, sink);
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

/// Receives one notification, inspects it, writes the event if any, and answers.
fn handle(l: &Listener, st: &mut ListenerState, sink: &EventSink) {
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
        }) => handle_exec(l, st, sink, &notif, req, path, argv, envp),
        Some(Trapped::Checkpoint { abi, syscall }) => {
            handle_checkpoint(l, st, sink, &notif, abi, syscall)
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
                emit(sink, &ev);
            }
            respond(l, notif.id, verdict.action);
        }
        // Nothing else is trapped; let it run as the profile would.
        None => respond(l, notif.id, Action::Continue),
    }
    tracing::trace!(container = %c.id, micros = started.elapsed().as_micros() as u64, "answered");
}

#[allow(clippy::too_many_arguments)]
fn handle_exec(
    l: &Listener,
    st: &mut ListenerState,
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
        if verdict.action == Action::Continue && finding.is_some_and(|f| f.loader.is_some()) {
            // The image checkpoint will see the same loader; it need not log it again.
            if let Some(tgid) = tgid_of(notif.pid) {
                if st.allowed_at_exec.len() >= STATE_ENTRIES {
                    st.allowed_at_exec.clear();
                }
                st.allowed_at_exec.insert(tgid, rule);
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

/// The second checkpoint: the new image's first thread-pointer setup. A loader found running
/// a program here is judged like one found at the exec; in enforce mode the process is killed
/// (it has run none of its own code yet) and the call fails.
fn handle_checkpoint(
    l: &Listener,
    st: &mut ListenerState,
    sink: &EventSink,
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
                emit(sink, &ev);
            }
            deny_or_continue(l, notif, verdict.action);
            return;
        }
    };
    let Some(finding) = img.finding else {
        respond(l, notif.id, Action::Continue);
        return;
    };
    // Later thread-pointer setups of the same image (a Go runtime's threads) were judged.
    if let Some(token) = img.token {
        if !st.judged_images.insert((notif.pid, token)) {
            respond(l, notif.id, Action::Continue);
            return;
        }
        if st.judged_images.len() >= STATE_ENTRIES {
            st.judged_images.clear();
        }
    }
    let verdict = policy::decide(Some(finding.rule), &c.settings);
    let seen_at_exec = st.allowed_at_exec.remove(&notif.pid) == Some(finding.rule);
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
            emit(sink, &ev);
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
