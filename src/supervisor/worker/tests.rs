//! The serve loop and the answer path, driven by a fake notify source: no filter and no kernel
//! notification, the notifying "task" being this test process itself (its memory holds the
//! exec's path and argv, its root and `/proc` entry are the ones inspected).

use std::collections::VecDeque;
use std::ffi::CString;
use std::io;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::counters::ContainerCounters;
use super::listener::{Listener, ListenerState};
use super::registry::{Container, Shared};
use super::serve::{self, Received};
use super::source::NotifySource;
use crate::config::Config;
use crate::event::tests::Buffer;
use crate::event::EventSink;
use crate::inspect::resolve::FsView;
use crate::inspect::SystemLoaders;
use crate::supervisor::slots::Slots;
use crate::sys::{SeccompData, SeccompNotif, SeccompNotifResp, SECCOMP_USER_NOTIF_FLAG_CONTINUE};
use crate::traps::{AUDIT_ARCH_X86_64, NEW_LISTENER};

/// What the fake kernel hands out and what it was answered.
#[derive(Default)]
struct Fake {
    queue: Mutex<VecDeque<io::Result<SeccompNotif>>>,
    answers: Arc<Mutex<Vec<SeccompNotifResp>>>,
    /// Answers that find their task interrupted (`ENOENT`), in order.
    interrupt: Mutex<VecDeque<bool>>,
    hung_up: bool,
}

impl NotifySource for Fake {
    fn recv(&self) -> io::Result<SeccompNotif> {
        self.queue
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| Err(io::Error::from_raw_os_error(libc::ENOENT)))
    }
    fn send(&self, resp: &SeccompNotifResp) -> io::Result<()> {
        self.answers.lock().unwrap().push(*resp);
        if self.interrupt.lock().unwrap().pop_front() == Some(true) {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        Ok(())
    }
    fn id_valid(&self, _id: u64) -> bool {
        true
    }
    fn wait_readable(&self) -> bool {
        !self.queue.lock().unwrap().is_empty()
    }
    fn readable_now(&self) -> bool {
        !self.queue.lock().unwrap().is_empty()
    }
    fn hung_up(&self) -> bool {
        self.hung_up && self.queue.lock().unwrap().is_empty()
    }
}

/// A worker's shared state and one listener, with the events written kept.
struct Bench {
    shared: Shared,
    listener: Listener,
    st: ListenerState,
    events: Arc<Mutex<Vec<u8>>>,
    answers: Arc<Mutex<Vec<SeccompNotifResp>>>,
}

fn bench(config: &str, fake: Fake) -> Bench {
    let config = Config::parse(config, Path::new("test.toml")).unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = EventSink::from_writer(Box::new(Buffer(events.clone())));
    let slots = Slots::create().unwrap();
    let shared = Shared::new(config, None, sink, slots, None, Err("a unit test".into()));
    let settings = shared.settings_for("unit", &Default::default());
    let container = Arc::new(Container {
        id: "unit".into(),
        settings,
        loaders: SystemLoaders::discover(&FsView::of_self().unwrap(), &[]),
        pid_ns: None,
        since: SystemTime::now(),
        counters: ContainerCounters::default(),
    });
    let answers = fake.answers.clone();
    let listener = Listener::new(Box::new(fake), container, 0, shared.counters.clone());
    let st = ListenerState::new(&shared.config.events);
    Bench {
        shared,
        listener,
        st,
        events,
        answers,
    }
}

impl Bench {
    fn serve(&mut self) {
        serve::until_hangup(&self.listener, &mut self.st, &self.shared, false, None);
    }
    fn events(&self) -> Vec<serde_json::Value> {
        String::from_utf8(self.events.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
    fn answers(&self) -> Vec<SeccompNotifResp> {
        self.answers.lock().unwrap().clone()
    }
}

fn notif(id: u64, nr: i32, args: [u64; 6]) -> SeccompNotif {
    SeccompNotif {
        id,
        pid: std::process::id(),
        flags: 0,
        data: SeccompData {
            nr,
            arch: AUDIT_ARCH_X86_64,
            instruction_pointer: 0,
            args,
        },
    }
}

fn queue(
    items: impl IntoIterator<Item = SeccompNotif>,
) -> Mutex<VecDeque<io::Result<SeccompNotif>>> {
    Mutex::new(items.into_iter().map(Ok).collect())
}

const QUIET: &str = "[message]\nenabled = false\n";
/// A listener attempt is "high": denied from this threshold on.
const HIGH: &str = "[enforce]\nmin_importance = \"high\"\n";

fn listener_attempt(id: u64) -> SeccompNotif {
    // seccomp(SECCOMP_SET_MODE_FILTER, NEW_LISTENER, prog)
    notif(id, 317, [1, NEW_LISTENER, 0x1000, 0, 0, 0])
}

#[test]
fn a_call_the_filter_does_not_trap_is_let_run() {
    let mut b = bench(
        QUIET,
        Fake {
            queue: queue([notif(7, 39 /* getpid */, [0; 6])]),
            ..Fake::default()
        },
    );
    b.serve();
    let answers = b.answers();
    assert_eq!(answers.len(), 1);
    assert_eq!(
        (answers[0].id, answers[0].error, answers[0].flags),
        (7, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE)
    );
    assert!(b.events().is_empty());
    let c = &b.shared.counters;
    assert_eq!(c.other_notifications.load(Ordering::Relaxed), 1);
}

#[test]
fn a_listener_attempt_is_denied_in_enforce_and_logged_in_both_modes() {
    for (mode, error) in [("enforce", -libc::EACCES), ("audit", 0)] {
        let mut b = bench(
            &format!("mode = \"{mode}\"\n{QUIET}{HIGH}"),
            Fake {
                queue: queue([listener_attempt(1)]),
                ..Fake::default()
            },
        );
        b.serve();
        assert_eq!(b.answers()[0].error, error, "{mode}");
        let events = b.events();
        assert_eq!(events.len(), 1, "{mode}");
        assert_eq!(events[0]["event"], "seccomp_listener_attempt");
        assert_eq!(events[0]["stage"], "syscall");
    }
}

#[test]
fn a_call_restarted_after_an_interrupted_answer_is_answered_again_and_logged_once() {
    let mut b = bench(
        &format!("mode = \"enforce\"\n{QUIET}{HIGH}"),
        Fake {
            // The kernel restarts the interrupted call: the same call, a new id.
            queue: queue([listener_attempt(1), listener_attempt(2)]),
            interrupt: Mutex::new([true, false].into()),
            ..Fake::default()
        },
    );
    b.serve();
    let answers = b.answers();
    assert_eq!(
        answers.iter().map(|a| (a.id, a.error)).collect::<Vec<_>>(),
        [(1, -libc::EACCES), (2, -libc::EACCES)]
    );
    assert_eq!(b.events().len(), 1);
}

#[test]
fn the_loop_ends_when_every_task_is_gone_and_goes_on_after_an_interruption() {
    let mut b = bench(QUIET, Fake::default());
    b.listener = Listener::new(
        Box::new(Fake {
            queue: Mutex::new(
                [
                    Err(io::Error::from_raw_os_error(libc::EINTR)),
                    Err(io::Error::from_raw_os_error(libc::ENOENT)),
                ]
                .into(),
            ),
            hung_up: true,
            ..Fake::default()
        }),
        b.listener.container.clone(),
        0,
        b.shared.counters.clone(),
    );
    let (l, st, shared) = (&b.listener, &mut b.st, &b.shared);
    assert_eq!(serve::receive_and_handle(l, st, shared), Received::Nothing);
    assert_eq!(serve::receive_and_handle(l, st, shared), Received::HungUp);
    assert_eq!(
        shared.counters.notification_errors.load(Ordering::Relaxed),
        0
    );
}

/// An `execve` whose path and argv are in this process's memory, as the kernel would show it.
struct ExecInMemory {
    _strings: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

impl ExecInMemory {
    fn new(argv: &[&str]) -> Self {
        let strings: Vec<CString> = argv.iter().map(|a| CString::new(*a).unwrap()).collect();
        let mut ptrs: Vec<_> = strings.iter().map(|s| s.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        Self {
            _strings: strings,
            argv: ptrs,
            envp: vec![std::ptr::null()],
        }
    }
    fn notif(&self, id: u64) -> SeccompNotif {
        let addr = |p: *const libc::c_char| p as u64;
        notif(
            id,
            59, // execve
            [
                addr(self.argv[0]),
                self.argv.as_ptr() as u64,
                self.envp.as_ptr() as u64,
                0,
                0,
                0,
            ],
        )
    }
}

#[test]
fn an_exec_of_the_loader_running_a_program_is_judged_at_the_exec_checkpoint() {
    let loader = "/lib64/ld-linux-x86-64.so.2";
    if !Path::new(loader).exists() {
        assert!(
            std::env::var_os("EXECGUARD_TEST_STRICT").is_none(),
            "{loader} is missing"
        );
        eprintln!("skipped: no glibc loader at {loader}");
        return;
    }
    let exec = ExecInMemory::new(&[loader, "/bin/true"]);
    for (mode, error, action) in [
        ("enforce", -libc::EACCES, "denied"),
        ("audit", 0, "allowed"),
    ] {
        let mut b = bench(
            &format!("mode = \"{mode}\"\n{QUIET}[detect]\nexec_checkpoint = true\n"),
            Fake {
                queue: queue([exec.notif(1)]),
                ..Fake::default()
            },
        );
        b.serve();
        assert_eq!(b.answers()[0].error, error, "{mode}");
        let events = b.events();
        assert_eq!(events.len(), 1, "{mode}: {events:?}");
        let ev = &events[0];
        assert_eq!(ev["event"], "binary_executed_by_loader");
        assert_eq!(
            (ev["stage"].as_str(), ev["action"].as_str()),
            (Some("exec"), Some(action))
        );
        assert_eq!(ev["exec"]["argv"][1], "/bin/true");
        assert_eq!(ev["loader"]["program"], "/bin/true");
        assert_eq!(
            b.shared.counters.exec_notifications.load(Ordering::Relaxed),
            1
        );
    }
}

#[test]
fn an_ordinary_exec_is_let_run_without_an_event() {
    let exec = ExecInMemory::new(&["/bin/true"]);
    let mut b = bench(
        &format!("mode = \"enforce\"\n{QUIET}"),
        Fake {
            queue: queue([exec.notif(3)]),
            ..Fake::default()
        },
    );
    b.serve();
    let a = b.answers();
    assert_eq!(
        (a[0].error, a[0].flags),
        (0, SECCOMP_USER_NOTIF_FLAG_CONTINUE),
        "{:?}",
        b.events()
    );
    assert!(b.events().is_empty());
}
