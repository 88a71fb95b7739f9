//! Part 5: what the exec record costs the execs it does not record.

use crate::stats::median;
use crate::stats::median_interval;
use crate::stats::target;
use execguard_testkit as harness;
use execguard_testkit::Supervisor;
use serde_json::json;
use serde_json::Value;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

/// Fork+exec of /bin/true on the host (no container), `n` times: the mean per exec.
pub(crate) fn host_storm(n: usize) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        let ok = Command::new("/bin/true")
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "/bin/true failed");
    }
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// The exec record's programs attached for as long as this lives: loaded by `execguard
/// load-exec-record` (as the keeper has it done), whose descriptors (the maps and the two
/// links) this holds. The map of guarded pid namespaces stays empty: every exec takes the
/// programs' early return, as the execs of the host and of unguarded containers do beside a
/// supervisor.
pub(crate) struct Attached {
    pub(crate) _fds: Vec<std::os::fd::OwnedFd>,
}

impl Attached {
    pub(crate) fn load() -> Option<Self> {
        use nix::sys::socket::{
            recvmsg, socketpair, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType,
        };
        use std::os::fd::{AsRawFd, FromRawFd};
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::empty(),
        )
        .ok()?;
        let status = Command::new(harness::EXECGUARD)
            .args(["load-exec-record", "--fd"])
            .arg(theirs.as_raw_fd().to_string())
            .status()
            .ok()?;
        drop(theirs);
        if !status.success() {
            return None;
        }
        let mut buf = [0u8; 1024];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 6]);
        let msg = recvmsg::<()>(
            ours.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .ok()?;
        let mut fds = Vec::new();
        for c in msg.cmsgs().ok()? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                // SAFETY: the kernel just installed these descriptors in this process for this
                // message; nothing else owns them.
                fds.extend(
                    raw.into_iter()
                        .map(|fd| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        // map, exec link, exit link, approvals, kills, guarded namespaces.
        if fds.len() != 6 {
            return None;
        }
        Some(Self { _fds: fds })
    }

    /// Puts `beside`'s pid namespace in the map of guarded ones, so that the storms run beside
    /// a guarded container (their own namespaces are not in it).
    pub(crate) fn guard(self, beside: &GuardedNamespace) -> Self {
        let Some(inum) = beside.inum else {
            return self;
        };
        let map = self._fds[5]
            .try_clone()
            .map_err(aya::maps::MapError::from)
            .and_then(aya::maps::MapData::from_fd)
            .and_then(|d| aya::maps::HashMap::<_, u32, u32>::try_from(aya::maps::Map::HashMap(d)));
        if let Ok(mut map) = map {
            let _ = map.insert(inum, 0, 0);
        }
        self
    }
}

/// A process asleep in a pid namespace of its own, killed on drop: the guarded container beside
/// the storms of part 5.
pub(crate) struct GuardedNamespace {
    pub(crate) child: std::process::Child,
    pub(crate) inum: Option<u32>,
}

impl GuardedNamespace {
    pub(crate) fn start() -> Self {
        let child = Command::new("unshare")
            .args(["--pid", "--fork", "--kill-child", "sleep", "3600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare");
        let children = format!("/proc/{0}/task/{0}/children", child.id());
        let mut inum = None;
        for _ in 0..1000 {
            let text = std::fs::read_to_string(&children).unwrap_or_default();
            if let Some(pid) = text.split_whitespace().next() {
                inum = nix::sys::stat::stat(format!("/proc/{pid}/ns/pid").as_str())
                    .ok()
                    .and_then(|st| u32::try_from(st.st_ino).ok());
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Self { child, inum }
    }
}

impl Drop for GuardedNamespace {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fork+exec of /bin/true `n` times by a shell in a pid namespace of its own (as in an
/// unguarded container): the mean per exec, shell included.
pub(crate) fn pidns_storm(n: usize) -> f64 {
    let start = Instant::now();
    let ok = Command::new("unshare")
        .args(["--pid", "--fork", "/bin/sh", "-c"])
        .arg(format!(
            "i=0; while [ $i -lt {n} ]; do /bin/true; i=$((i+1)); done"
        ))
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "the pid namespace storm failed");
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// `rounds` rounds of `blocks` storms without and `blocks` with the programs attached, in the
/// order without-with-with-without (then the reverse in the next round), so that a drift of
/// the machine's speed within a round cancels: each side's per-exec means, and the per-round
/// ratios (with / without).
pub(crate) fn attached_rounds(
    rounds: usize,
    beside: &GuardedNamespace,
    storm: impl Fn() -> f64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (mut off, mut on, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let (mut a, mut b) = (0.0, 0.0);
        let order = if round % 2 == 0 {
            [false, true, true, false]
        } else {
            [true, false, false, true]
        };
        let mut attached: Option<Attached> = None;
        for with in order {
            if with && attached.is_none() {
                let loaded = Attached::load().expect("the record loaded once already");
                attached = Some(loaded.guard(beside));
            } else if !with {
                attached = None;
            }
            let t = storm();
            if with {
                b += t
            } else {
                a += t
            }
        }
        drop(attached);
        off.push(a / 2.0);
        on.push(b / 2.0);
        ratios.push(b / a);
    }
    (off, on, ratios)
}

/// The programs' own run time per invocation, as the kernel counts it
/// (`kernel.bpf_stats_enabled`, read with bpftool) over `n` host execs: (name, ns per run,
/// runs).
pub(crate) fn program_run_times(n: usize) -> Option<Vec<(String, f64, u64)>> {
    let attached = Attached::load()?;
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1").ok()?;
    host_storm(n);
    let shown = Command::new("bpftool")
        .args(["prog", "show", "-j"])
        .output();
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "0");
    drop(attached);
    let progs: Value = serde_json::from_slice(&shown.ok()?.stdout).ok()?;
    let mut times = Vec::new();
    for p in progs.as_array()? {
        let name = p["name"].as_str().unwrap_or_default();
        if name == "record_exec" || name == "forget_exit" {
            let runs = p["run_cnt"].as_u64().unwrap_or(0);
            let ns = p["run_time_ns"].as_u64().unwrap_or(0);
            if runs > 0 {
                times.push((name.to_owned(), ns as f64 / runs as f64, runs));
            }
        }
    }
    (!times.is_empty()).then_some(times)
}

/// Part 5: what the exec record's programs cost the execs they do not record: fork+exec on the
/// host and in a pid namespace of its own (an unguarded container's), with the programs
/// attached and without ([`attached_rounds`]); and the programs' own time as the kernel
/// counts it.
pub(crate) fn record_cost(n: usize, rounds: usize, out: &mut Value) {
    if Attached::load().is_none() {
        println!(
            "
the exec record's cost on the host: skipped (the exec record cannot be loaded here)"
        );
        return;
    }
    println!(
        "
the exec record's cost to execs it does not record: fork+exec of /bin/true, {n} per storm, {rounds} rounds of 2+2 storms without/with the programs attached (and a guarded pid namespace beside)"
    );
    let beside = GuardedNamespace::start();
    let mut json_parts = serde_json::Map::new();
    for (what, storm) in [
        ("host", &(|| host_storm(n)) as &dyn Fn() -> f64),
        ("pid namespace", &(|| pidns_storm(n)) as &dyn Fn() -> f64),
    ] {
        let (off, on, ratios) = attached_rounds(rounds, &beside, storm);
        let (lo, hi) = median_interval(ratios.clone());
        let ratio = median(ratios);
        let (off, on) = (median(off), median(on));
        println!(
            "  {what:<14} without {off:.1} µs   attached {on:.1} µs   ratio {ratio:.4} (95 % {lo:.4}-{hi:.4})   target ≤ 1.005: {}",
            target(ratio <= 1.005)
        );
        json_parts.insert(
            what.to_owned(),
            json!({"without_us": off, "with_us": on, "ratio": ratio, "ratio_95": [lo, hi]}),
        );
    }
    match program_run_times(n) {
        Some(times) => {
            let listed: Vec<String> = times
                .iter()
                .map(|(name, ns, runs)| format!("{name} {ns:.0} ns x {runs}"))
                .collect();
            println!(
                "  the programs' own time per run (kernel.bpf_stats_enabled, host execs): {}",
                listed.join(", ")
            );
            json_parts.insert(
                "program_ns".to_owned(),
                times
                    .iter()
                    .map(|(name, ns, _)| (name.clone(), json!(ns)))
                    .collect::<serde_json::Map<_, _>>()
                    .into(),
            );
        }
        None => println!("  the programs' own time: - (bpftool is not installed)"),
    }
    out["record_cost"] = json!({"execs": n, "rounds": rounds, "parts": json_parts});
}

/// Whether this supervisor loaded the exec record (its keeper says either way).
pub(crate) fn wait_for_record_word(sup: &Supervisor) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = sup.log();
        if log.contains("exec record on") {
            return true;
        }
        if log.contains("no exec record") || log.contains("exec record off") {
            return false;
        }
        assert!(
            Instant::now() < deadline,
            "no word on the exec record:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
