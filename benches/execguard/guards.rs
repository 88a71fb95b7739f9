//! The kinds of guard a storm runs under, their supervisors, and one storm's bundle.

use crate::null_responder;
use execguard_testkit as harness;
use execguard_testkit::bundle;
use execguard_testkit::Supervisor;
use serde_json::Value;

/// How a storm's container is guarded.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Guard {
    Unguarded,
    /// execguard's filter with no listener and rules the storm never meets: every call it makes
    /// is allowed after the same evaluation (what a seccomp filter costs at all, before any
    /// notification).
    Filter,
    Null,
    /// The null responder after the same `/proc` looks as execguard's answer path.
    NullLooks,
    Audit,
    Enforce,
    /// Enforce with `[detect] exec_checkpoint = true`.
    EnforceExec,
    /// Enforce with `[worker] cpu_cgroup = "supervisor"`: the worker's thread stays in the
    /// supervisor's CPU cgroup (as before it joined the container's).
    EnforceOwnCgroup,
    /// Enforce with `[rules] preload_from_writable = "high"`: ordinary programs' preloads
    /// judged (what the look at the environment costs; off by default).
    EnforcePreloads,
}

impl Guard {
    pub(crate) const ALL: [Guard; 9] = [
        Guard::Unguarded,
        Guard::Filter,
        Guard::Null,
        Guard::NullLooks,
        Guard::Audit,
        Guard::Enforce,
        Guard::EnforceExec,
        Guard::EnforceOwnCgroup,
        Guard::EnforcePreloads,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Guard::Unguarded => "unguarded",
            Guard::Filter => "filter only",
            Guard::Null => "null responder",
            Guard::NullLooks => "null+looks",
            Guard::Audit => "audit",
            Guard::Enforce => "enforce",
            Guard::EnforceExec => "enforce+exec",
            Guard::EnforceOwnCgroup => "enforce+own-cg",
            Guard::EnforcePreloads => "enforce+preloads",
        }
    }
}

/// The supervisors and the null responder of the run.
pub(crate) struct Guards {
    pub(crate) default: Supervisor,
    pub(crate) exec_checkpoint: Supervisor,
    pub(crate) own_cgroup: Supervisor,
    pub(crate) preloads: Supervisor,
    pub(crate) null: null_responder::NullResponder,
    pub(crate) null_looks: null_responder::NullResponder,
}

impl Guards {
    pub(crate) fn start() -> Self {
        Self {
            default: Supervisor::start("audit", ""),
            exec_checkpoint: Supervisor::start("audit", "[detect]\nexec_checkpoint = true\n"),
            own_cgroup: Supervisor::start("audit", "[worker]\ncpu_cgroup = \"supervisor\"\n"),
            preloads: Supervisor::start("audit", "[rules]\npreload_from_writable = \"high\"\n"),
            null: null_responder::NullResponder::start(false),
            null_looks: null_responder::NullResponder::start(true),
        }
    }

    /// The supervisor that guards a storm of this kind, if any.
    pub(crate) fn supervisor(&self, g: Guard) -> Option<&Supervisor> {
        match g {
            Guard::Audit | Guard::Enforce => Some(&self.default),
            Guard::EnforceExec => Some(&self.exec_checkpoint),
            Guard::EnforceOwnCgroup => Some(&self.own_cgroup),
            Guard::EnforcePreloads => Some(&self.preloads),
            Guard::Unguarded | Guard::Filter | Guard::Null | Guard::NullLooks => None,
        }
    }
}

/// A container running the exec storm, ready to start.
pub(crate) fn storm_bundle(guards: &Guards, g: Guard, name: &str, n: usize) -> harness::Bundle {
    storm_bundle_script(
        guards,
        g,
        name,
        &format!("/opt/eg/execstorm {n} /work/storm.json"),
    )
}

/// A container guarded as `g` that runs `script`.
pub(crate) fn storm_bundle_script(
    guards: &Guards,
    g: Guard,
    name: &str,
    script: &str,
) -> harness::Bundle {
    let mode = match g {
        Guard::Unguarded => "off",
        Guard::Audit => "audit",
        Guard::Filter
        | Guard::Null
        | Guard::NullLooks
        | Guard::Enforce
        | Guard::EnforceExec
        | Guard::EnforceOwnCgroup
        | Guard::EnforcePreloads => "enforce",
    };
    let sup = guards.supervisor(g).unwrap_or(&guards.default);
    // The filter-only container shows that it has a filter (mode 2) before its storm.
    let script = match g {
        Guard::Filter => format!(
            "grep -q '^Seccomp:[[:space:]]*2$' /proc/self/status || {{ echo 'no seccomp filter' >&2; exit 3; }}; {script}"
        ),
        _ => script.to_owned(),
    };
    let b = bundle(
        &sup.config,
        name,
        &script,
        &[("execguard.io/mode", mode)],
        None,
    );
    match g {
        Guard::Null => b.set_listener(&guards.null.socket),
        Guard::NullLooks => b.set_listener(&guards.null_looks.socket),
        Guard::Filter => b.edit_spec(|spec| without_listener(&mut spec["linux"]["seccomp"])),
        _ => {}
    }
    b
}

/// The injected profile with no listener, and rules that the storm never meets: each notifying
/// rule returns an errno instead, and a rule with arguments compares them with 0 (libseccomp
/// compares `arg & mask` with `datum & mask`, so no datum can lie outside the mask): `arch_prctl`
/// with option 0, which is no option, and `seccomp` without `SECCOMP_FILTER_FLAG_NEW_LISTENER`,
/// which the storm does not call. The kernel runs a filter of the same instructions, only the
/// compared values and the action differ (checked with `PTRACE_SECCOMP_GET_FILTER`: 27 and 27),
/// for every system call (`arch_prctl` included: its rule depends on an argument, so it is never
/// cached), and nothing is notified.
fn without_listener(profile: &mut Value) {
    let profile = profile
        .as_object_mut()
        .expect("inject wrote a seccomp profile");
    profile.remove("listenerPath");
    profile.remove("listenerMetadata");
    for rule in profile["syscalls"].as_array_mut().into_iter().flatten() {
        if rule["action"] != "SCMP_ACT_NOTIFY" {
            continue;
        }
        rule["action"] = "SCMP_ACT_ERRNO".into();
        for arg in rule["args"].as_array_mut().into_iter().flatten() {
            assert_eq!(arg["op"], "SCMP_CMP_MASKED_EQ", "a trap's condition: {arg}");
            arg["valueTwo"] = 0.into();
        }
    }
}

/// execstorm's numbers from a finished run.
pub(crate) fn storm_result(run: &harness::Run) -> Value {
    let text = std::fs::read_to_string(run.work.join("storm.json"))
        .unwrap_or_else(|_| panic!("execstorm did not finish: {}", run.describe()));
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["failures"], 0, "{}", run.describe());
    v
}

/// One container running the exec storm; returns its id and execstorm's numbers.
pub(crate) fn storm(guards: &Guards, g: Guard, name: &str, n: usize) -> (String, Value) {
    let run = storm_bundle(guards, g, name, n).run();
    let v = storm_result(&run);
    (run.id, v)
}
