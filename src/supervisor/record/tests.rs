use super::fds::version;
use super::guarded::GuardError;
use super::*;
use crate::inspect::image::Loaded;
use crate::sys::bpf::RawFile;

#[test]
fn the_descriptor_list_has_three_or_five_numbers() {
    assert_eq!(parse_fds("5,6,7"), Some(vec![5, 6, 7]));
    assert_eq!(parse_fds("5,6,7,8,9"), Some(vec![5, 6, 7, 8, 9]));
    assert_eq!(parse_fds("5,6"), None);
    assert_eq!(parse_fds("5,6,7,8"), None);
    assert_eq!(parse_fds("5,x,7"), None);
}

#[test]
fn a_kernel_device_number_becomes_the_one_stat_shows() {
    let file = RawFile {
        ino: 42,
        dev: (259 << 20) | 3,
        ..RawFile::default()
    };
    let v = version(&file).unwrap();
    assert_eq!(v.dev, libc::makedev(259, 3));
    assert_eq!(version(&RawFile::default()), None);
}

/// A shell in a pid namespace of its own that waits for a line on its standard input, then
/// execs `program args`; the shell's pid (which the exec keeps).
fn in_new_pid_namespace(program: &str, args: &str) -> (std::process::Child, u32) {
    #[allow(clippy::zombie_processes)] // waited for by `end`
    let child = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "/bin/sh", "-c"])
        .arg(format!("read line; exec {program} {args}"))
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let children = format!("/proc/{0}/task/{0}/children", child.id());
    for _ in 0..1000 {
        let text = std::fs::read_to_string(&children).unwrap_or_default();
        // Once the child runs the shell (its exec of it must not be taken for the one the
        // test makes it do).
        if let Some(pid) = text.split_whitespace().next() {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
            if exe == std::fs::canonicalize("/bin/sh").ok() {
                return (child, pid.parse().unwrap());
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    panic!("unshare started no shell");
}

fn go(child: &mut std::process::Child) {
    use std::io::Write;
    child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
}

fn end(mut child: std::process::Child, pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = child.kill();
    child.wait().unwrap();
}

/// The record, loaded here (root with CAP_BPF and CAP_PERFMON, a build with clang); else
/// none, and the test says it is skipped.
fn load_or_skip() -> Option<RecordFds> {
    RecordFds::load()
        .map_err(|e| eprintln!("skipped: the exec record cannot be loaded here: {e}"))
        .ok()
}

/// Guards the pid namespace of process `pid`, counted under the keeper's `slot`.
fn guard(guarded: &mut Guarded, slot: usize, pid: u32) {
    guarded
        .admit(slot, format!("{{\"pid\": {pid}}}").as_bytes(), |_, _| 0)
        .unwrap();
}

/// Whether `done` holds within about a second (asked every millisecond).
fn within_a_second(mut done: impl FnMut() -> bool) -> bool {
    (0..1000).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(1));
        done()
    })
}

/// Needs root with CAP_BPF and CAP_PERFMON, and a build with clang; skips otherwise.
#[test]
fn the_record_names_what_a_guarded_exec_loaded_as_stat_does() {
    let Some(fds) = load_or_skip() else {
        return;
    };
    let mut guarded = Guarded::open(&fds).expect("a fresh record has the guarded map");
    let record = ExecRecord::open(fds).unwrap();
    let sleep = nix::sys::stat::stat("/bin/sleep").unwrap();
    let ld = nix::sys::stat::stat(crate::inspect::TEST_LOADER).unwrap();

    // A process of the host's pid namespace is never guarded.
    let message = format!("{{\"pid\": {}}}", std::process::id());
    assert!(matches!(
        guarded.admit(9, message.as_bytes(), |_, _| 0),
        Err(GuardError::Initial(_))
    ));
    assert!(matches!(
        guarded.admit(9, b"{}", |_, _| 0),
        Err(GuardError::NoPid)
    ));

    // A dynamic program in a guarded pid namespace.
    let (mut child, pid) = in_new_pid_namespace("/bin/sleep", "5");
    guard(&mut guarded, 0, pid);
    assert_eq!(guarded.namespaces().len(), 1);
    go(&mut child);
    let loaded = wait_for(&record, pid, sleep.st_ino);
    assert_eq!(loaded.program.unwrap(), crate::inspect::version_of(&sleep));
    let interp = loaded
        .interpreter
        .expect("a dynamic program has an interpreter");
    assert_eq!((interp.dev, interp.ino), (ld.st_dev, ld.st_ino));
    end(child, pid);
    // The process dies of the SIGKILL a moment after unshare, which `end` waits for.
    let gone = within_a_second(|| record.lookup(pid).is_none());
    assert!(gone, "the entry ends with the process");
    guarded.release(0);
    assert!(guarded.namespaces().is_empty());

    // The loader run directly: it is the program, and no interpreter was loaded.
    let (mut child, pid) = in_new_pid_namespace(crate::inspect::TEST_LOADER, "/bin/sleep 5");
    guard(&mut guarded, 1, pid);
    go(&mut child);
    let loaded = wait_for(&record, pid, ld.st_ino);
    let program = loaded.program.unwrap();
    assert_eq!((program.dev, program.ino), (ld.st_dev, ld.st_ino));
    assert_eq!(loaded.interpreter, None);
    end(child, pid);
    guarded.release(1);

    // Not recorded: an exec on the host, and one in a namespace no longer guarded.
    let mut host = std::process::Command::new("/bin/sleep")
        .arg("5")
        .spawn()
        .unwrap();
    let (mut child, pid) = in_new_pid_namespace("/bin/sleep", "5");
    guard(&mut guarded, 2, pid);
    guarded.release(2);
    go(&mut child);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(
        record.lookup(host.id()),
        None,
        "a host exec is not recorded"
    );
    assert_eq!(
        record.lookup(pid),
        None,
        "a released namespace is not recorded"
    );
    end(child, pid);
    host.kill().unwrap();
    host.wait().unwrap();
}

/// `spawn` returns once the exec closed its close-on-exec pipe, a little before the
/// tracepoint runs.
/// The entry of `pid` once its program is inode `ino` (the shell's own exec, which the test
/// cannot order before the namespace is guarded, may be recorded first).
fn wait_for(record: &ExecRecord, pid: u32, ino: u64) -> Loaded {
    let mut last = None;
    for _ in 0..1000 {
        last = record.lookup(pid);
        if let Some(l) = &last {
            if l.program.is_some_and(|p| p.ino == ino) {
                return *l;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    panic!("no entry for process {pid} with program inode {ino} after a second: {last:?}");
}

/// `in_new_pid_namespace`, its shell given process id `want` (the id after the one
/// `/proc/sys/kernel/ns_last_pid` names goes to `unshare`, the next to the shell), if another
/// process took none of the two meanwhile; `None` when the id cannot be asked for here.
fn in_new_pid_namespace_as(
    want: u32,
    program: &str,
    args: &str,
) -> Option<(std::process::Child, u32)> {
    for _ in 0..20 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (want - 2).to_string()).ok()?;
        let (child, pid) = in_new_pid_namespace(program, args);
        if pid == want {
            return Some((child, pid));
        }
        end(child, pid);
    }
    None
}

/// Two guarded processes whose ids share a slot of the record: the later exec takes the slot,
/// and a lookup of the earlier finds nothing (it is then looked at through `/proc`), never the
/// other's entry. Needs root (to choose the second id) with CAP_BPF and CAP_PERFMON, and a
/// build with clang; skips otherwise.
#[test]
fn a_process_whose_slot_was_taken_has_no_entry() {
    let Some(fds) = load_or_skip() else {
        return;
    };
    let mut guarded = Guarded::open(&fds).expect("a fresh record has the guarded map");
    let record = ExecRecord::open(fds).unwrap();
    let sleep = nix::sys::stat::stat("/bin/sleep").unwrap();
    let cat = nix::sys::stat::stat("/bin/cat").unwrap();

    // Alive until the end (`end` kills it), however long the second id takes to have.
    let (mut first, first_pid) = in_new_pid_namespace("/bin/sleep", "600");
    guard(&mut guarded, 0, first_pid);
    go(&mut first);
    wait_for(&record, first_pid, sleep.st_ino);

    let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let slots = u32::try_from(crate::sys::bpf::RECORD_SLOTS).unwrap();
    let free = |pid: u32| {
        pid > 300
            && pid < pid_max
            && !Path::new(&format!("/proc/{pid}")).exists()
            && !Path::new(&format!("/proc/{}", pid - 1)).exists()
    };
    let want = (1..pid_max / slots)
        .flat_map(|k| {
            [
                first_pid.checked_add(k * slots),
                first_pid.checked_sub(k * slots),
            ]
        })
        .flatten()
        .find(|&pid| free(pid))
        .expect("a free process id that shares the first one's slot");
    let Some((mut second, second_pid)) = in_new_pid_namespace_as(want, "/bin/cat", "") else {
        end(first, first_pid);
        eprintln!("skipped: process id {want} could not be had (ns_last_pid)");
        return;
    };
    guard(&mut guarded, 1, second_pid);
    go(&mut second);
    wait_for(&record, second_pid, cat.st_ino);
    assert_eq!(
        record.lookup(first_pid),
        None,
        "process {first_pid} lost its slot to {second_pid}, and must not be given its entry"
    );
    end(second, second_pid);
    end(first, first_pid);
    guarded.release(0);
    guarded.release(1);
}

/// The read side of a slot, on a file mapped as the worker maps the record: an entry is read
/// only when the slot names its process and its version is even (no program is writing it).
/// (A version that changes during the copy cannot be staged from one thread.)
#[test]
fn a_slot_is_read_only_at_rest_and_only_for_its_process() {
    use crate::sys::bpf::{RECORD_SLOTS, SLOT_OWNER, SLOT_RECORD, SLOT_SEQ, SLOT_WORDS};
    use std::sync::atomic::Ordering::SeqCst;
    let words = RECORD_SLOTS * SLOT_WORDS;
    let fd = crate::sys::shm::tests::file_of(words * 8);
    let writer = crate::sys::SharedWords::map(&fd, words).unwrap();
    let slots = crate::sys::ReadOnlyWords::map(&fd, words).unwrap();
    let w = writer.words();
    let pid = 4242u32;
    let base = (pid as usize % RECORD_SLOTS) * SLOT_WORDS;
    w[base + SLOT_OWNER].store(u64::from(pid), SeqCst);
    w[base + SLOT_RECORD].store(77, SeqCst); // the program's inode
    w[base + SLOT_RECORD + 12].store(5, SeqCst); // the exec's time

    w[base + SLOT_SEQ].store(2, SeqCst);
    let read = reader::read_slot(&slots, pid).expect("a whole entry of the process");
    assert_eq!((read.program.ino, read.seq), (77, 5));
    // The same slot, asked for by another process that shares it.
    let other = pid + u32::try_from(RECORD_SLOTS).unwrap();
    assert!(reader::read_slot(&slots, other).is_none());
    // A program is writing it.
    w[base + SLOT_SEQ].store(3, SeqCst);
    assert!(reader::read_slot(&slots, pid).is_none());
    // Emptied: nobody's, not even process 0's.
    w[base + SLOT_SEQ].store(4, SeqCst);
    w[base + SLOT_OWNER].store(0, SeqCst);
    assert!(reader::read_slot(&slots, pid).is_none());
    assert!(reader::read_slot(&slots, 0).is_none());
}

/// A process's next exec clears its entry before anything else: here that exec is in a
/// namespace no longer guarded, which records nothing, and the lookup must not give the
/// earlier image's entry. Needs what the record needs; skips otherwise.
#[test]
fn a_later_exec_clears_the_earlier_images_entry() {
    let Some(fds) = load_or_skip() else {
        return;
    };
    let mut guarded = Guarded::open(&fds).expect("a fresh record has the guarded map");
    let record = ExecRecord::open(fds).unwrap();
    let bash = nix::sys::stat::stat("/bin/bash").unwrap();
    let (mut child, pid) = in_new_pid_namespace("/bin/bash", "-c 'read line; exec /bin/cat'");
    guard(&mut guarded, 0, pid);
    go(&mut child);
    wait_for(&record, pid, bash.st_ino);
    guarded.release(0);
    go(&mut child);
    let cat = std::fs::canonicalize("/bin/cat").unwrap();
    let ran = within_a_second(|| {
        std::fs::read_link(format!("/proc/{pid}/exe")).ok() == Some(cat.clone())
    });
    assert!(ran, "the process did not exec cat");
    // /proc shows the new file a little before the tracepoint runs.
    let gone = within_a_second(|| record.lookup(pid).is_none());
    assert!(
        gone,
        "the earlier image's entry is still there: {:?}",
        record.lookup(pid)
    );
    end(child, pid);
}

/// The check the keeper makes of a record carried across an upgrade (and a worker of the map
/// it is passed): a map of another name or size is another version's, and refused. Needs what
/// the record needs; skips otherwise.
#[test]
fn a_map_of_another_layout_is_refused() {
    let Some(fds) = load_or_skip() else {
        return;
    };
    fds.check_layout().expect("this version's record");
    // The map of guarded namespaces in the record's place: another name and size.
    let clone = |fd: &std::os::fd::OwnedFd| fd.try_clone().unwrap();
    let other = || RecordFds {
        map: clone(fds.guarded.as_ref().unwrap()),
        exec: clone(&fds.exec),
        exit: clone(&fds.exit),
        confirm: None,
        guarded: None,
    };
    // (The kernel keeps 15 bytes of a name.)
    assert!(
        matches!(other().check_layout(), Err(RecordError::Layout(name)) if GUARDED.starts_with(&name)),
        "the keeper keeps a map of another layout"
    );
    assert!(matches!(
        ExecRecord::open(other()),
        Err(RecordError::Layout(_))
    ));
}
