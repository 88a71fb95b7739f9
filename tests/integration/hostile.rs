//! Hostile input: a container that passes bad pointers, huge argv and envp, control characters
//! and invalid UTF-8, symlink loops and overlong paths, then floods execs, while another
//! container builds; and hostile peers on the socket. Nothing crashes the supervisor, stalls
//! the other container, gets through, or forges an event line.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::harness::{bundle, run_container, wait_for, Supervisor};

/// What a denied loader execution looks like to the process that made it: a failed exec with
/// the exec checkpoint, a new image killed before it runs anything without.
#[test]
fn hostile_execs_and_a_flood_beside_a_build() {
    needs_root!();
    // A 100 KiB program name: the loader cannot open it and gives up before it sets up a
    // thread pointer, so nothing runs and there is nothing to judge.
    hostile_execs("image", "", "killed by signal 9", "exited 127");
}

#[test]
fn hostile_execs_and_a_flood_beside_a_build_with_the_exec_checkpoint() {
    needs_root!();
    hostile_execs(
        "exec",
        "[detect]\nexec_checkpoint = true\n",
        "Permission denied",
        "Permission denied",
    );
}

fn hostile_execs(name: &str, config: &str, denied: &str, huge_program: &str) {
    let sup = Supervisor::start("enforce", config);
    let worker = sup.worker_pid();
    let b = bundle(
        &sup.config,
        &format!("bystander-{name}"),
        "touch /work/started; i=0; while [ $i -lt 500 ]; do /bin/true || exit 1; i=$((i+1)); done; touch /work/done",
        &[],
        None,
    );
    let bystander_work = b.work.clone();
    let child = b.spawn();
    wait_for(&bystander_work.join("started"), "the bystander's start");
    let hostile = run_container(
        &sup,
        &format!("hostile-{name}"),
        "/opt/eg/exectool hostile > /work/out 2>&1; \
         end=$(( $(date +%s) + 3 )); while [ $(date +%s) -lt $end ]; do /bin/true; done; touch /work/flooded",
        &[],
    );
    let bystander = b.wait(child);
    let ctx = format!(
        "{}\n{}\n{}",
        hostile.describe(),
        bystander.describe(),
        sup.log()
    );
    assert!(
        bystander.marker("done"),
        "the bystander did not finish\n{ctx}"
    );
    assert!(hostile.marker("flooded"), "{ctx}");
    assert!(
        !hostile.marker("hostile-ran"),
        "a hostile loader execution ran\n{ctx}"
    );
    assert_eq!(
        sup.worker_pid(),
        worker,
        "the worker was replaced: it crashed\n{ctx}"
    );

    let out = std::fs::read_to_string(hostile.work.join("out")).unwrap_or_default();
    // The loader's own complaints quote 100 KiB arguments: shorten lines for the message.
    let out: String = out
        .lines()
        .map(|l| format!("{}\n", l.chars().take(200).collect::<String>()))
        .collect();
    for expected in [
        "bad path pointer: Bad address".to_owned(),
        "bad argv pointer: Bad address".to_owned(),
        "bad argv entry: Bad address".to_owned(),
        "bad envp pointer: Bad address".to_owned(),
        format!("huge argv: {denied}"),
        format!("huge argument: {huge_program}"),
        format!("huge envp: {denied}"),
        format!("control characters: {denied}"),
        "symlink loop: Too many levels of symbolic links".to_owned(),
        "45-link chain: Too many levels of symbolic links".to_owned(),
        "overlong path: File name too long".to_owned(),
    ] {
        assert!(out.contains(&expected), "missing {expected:?} in:\n{out}");
    }

    // One event per line, every line JSON, no raw control characters, nothing forged.
    let raw = std::fs::read(&sup.events).unwrap();
    assert!(
        !raw.contains(&0x1b),
        "a raw escape character reached the log"
    );
    let events = sup.events();
    assert_eq!(events.len(), raw.iter().filter(|b| **b == b'\n').count());
    assert!(events.iter().all(|e| e["event"] != "forged"));
    let nasty = events
        .iter()
        .find(|e| {
            e["exec"]["argv"][0]
                .as_str()
                .is_some_and(|a| a.contains("forged"))
        })
        .unwrap_or_else(|| panic!("no event for the control-character exec\n{ctx}"));
    assert_eq!(nasty["action"], "denied");
    assert!(nasty["exec"]["argv"][2]
        .as_str()
        .unwrap()
        .contains('\u{fffd}'));
    let huge = events
        .iter()
        .find(|e| e["exec"]["argv_truncated"] == true)
        .unwrap_or_else(|| panic!("no truncated argv\n{ctx}"));
    assert!(huge["exec"]["argv"].as_array().unwrap().len() <= 128);
}

#[test]
fn hostile_peers_on_the_socket() {
    needs_root!();
    let sup = Supervisor::start("audit", "");
    let worker = sup.worker_pid();
    let socket = sup.dir.path().join("eg.sock");
    // Garbage, a truncated message, an oversized one, valid JSON without an fd.
    for payload in [
        b"\x00\xff garbage {{{".to_vec(),
        br#"{"ociVersion":"1.0.2","fds":["seccompFd"],"pid":1,"state":{"id":"x""#.to_vec(),
        vec![b'['; 2 << 20],
        br#"{"ociVersion":"1.0.2","fds":["seccompFd"],"pid":1,"state":{"id":"nofd","pid":1}}"#
            .to_vec(),
    ] {
        let mut s = UnixStream::connect(&socket).unwrap();
        let _ = s.write_all(&payload);
    }
    // An unprivileged user cannot even connect (mode 0600).
    let out = Command::new("python3")
        .args([
            "-c",
            "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])",
        ])
        .arg(&socket)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"));
    // Still serving, with the same worker.
    let run = run_container(
        &sup,
        "after-peers",
        "/lib64/ld-linux-x86-64.so.2 /bin/touch /work/m",
        &[],
    );
    assert!(run.marker("m"), "{}", run.describe());
    assert_eq!(sup.events_of(&run.id).len(), 1, "{}", sup.log());
    assert_eq!(sup.worker_pid(), worker);
    assert!(
        sup.log().contains("bad message on the listener socket"),
        "{}",
        sup.log()
    );
}
