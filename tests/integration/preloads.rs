//! Preloads of ordinary programs (issue 24, item 4): `LD_PRELOAD` or `LD_AUDIT` naming a file
//! the container can change runs that file's code with no exec bit, the loader trick by another
//! door. Rule `preload_from_writable`: off by default (importance "info", below `[events]
//! min_importance`), logged in both modes once raised to "high", denied in enforce mode once
//! raised to "critical". A preload whose whole lookup stays on read-only mounts (the image's
//! libraries, /opt/eg here) is not an event.

use crate::harness::{run_container, Run, Supervisor};

const DENY: &str = "[rules]\npreload_from_writable = \"critical\"\n";
const LOG: &str = "[rules]\npreload_from_writable = \"high\"\n";

fn preload_events(sup: &Supervisor, run: &Run) -> Vec<serde_json::Value> {
    sup.events_of(&run.id)
        .into_iter()
        .filter(|e| e["event"] == "preload_from_writable")
        .collect()
}

/// Runs `script` (which leaves /work/p when the preload's code ran and /work/done at its end)
/// with `extra` config in `mode`; returns whether the preload ran and its events.
fn run(mode: &str, extra: &str, name: &str, script: &str) -> (bool, Vec<serde_json::Value>) {
    let sup = Supervisor::start(mode, extra);
    let run = run_container(&sup, name, script, &[]);
    assert!(run.marker("done"), "{}\n{}", run.describe(), sup.log());
    let events = preload_events(&sup, &run);
    (run.marker("p"), events)
}

const COPY: &str = "cp /opt/eg/preload.so /tmp/p.so && cp /opt/eg/audit-module.so /tmp/a.so";

#[test]
fn a_preload_the_container_wrote_is_logged_once_raised_to_high() {
    needs_root!();
    for mode in ["audit", "enforce"] {
        let (ran, events) = run(
            mode,
            LOG,
            &format!("preload-tmp-{mode}"),
            &format!(
                "{COPY}; LD_PRELOAD=/tmp/p.so PRELOAD_MARKER=/work/p /bin/true; touch /work/done"
            ),
        );
        assert!(ran, "{mode}: the preload did not run");
        assert_eq!(events.len(), 1, "{mode}: {events:#?}");
        let e = &events[0];
        assert_eq!(e["importance"], "high");
        assert_eq!(e["action"], "allowed");
        assert_eq!(e["stage"], "image");
        assert_eq!(e["exec"]["path"], "/usr/bin/true", "{e:#}");
        assert!(
            e["reason"]
                .as_str()
                .unwrap()
                .contains("LD_PRELOAD names /tmp/p.so"),
            "{e:#}"
        );
    }
}

#[test]
fn made_critical_it_is_denied_before_the_preload_runs() {
    needs_root!();
    for (var, marker) in [
        ("LD_PRELOAD=/tmp/p.so", "PRELOAD_MARKER=/work/p"),
        ("LD_AUDIT=/tmp/a.so", "AUDIT_MARKER=/work/p"),
    ] {
        let (ran, events) = run(
            "enforce",
            DENY,
            "preload-deny",
            &format!("{COPY}; {var} {marker} /bin/true && touch /work/ran; touch /work/done"),
        );
        assert!(!ran, "{var}: its code ran");
        assert_eq!(events.len(), 1, "{var}: {events:#?}");
        assert_eq!(events[0]["action"], "denied");
        assert_eq!(events[0]["importance"], "critical");
    }
}

/// Every way to name a file on a read-write mount: a relative name from a writable cwd, a bare
/// name found through LD_LIBRARY_PATH, a symlink on /tmp to a read-only file (it could be
/// repointed after the look), a list where only the second is writable, a name that does not
/// exist yet in a writable directory (it could appear before the loader opens it), and a name
/// whose `$ORIGIN` the loader expands into a way out of a read-only tree.
#[test]
fn every_way_to_name_a_writable_file_counts() {
    needs_root!();
    let cases = [
        ("relative", "cd /tmp && LD_PRELOAD=./p.so PRELOAD_MARKER=/work/p /bin/true"),
        ("bare", "LD_LIBRARY_PATH=/tmp LD_PRELOAD=p.so PRELOAD_MARKER=/work/p /bin/true"),
        ("symlink", "ln -s /opt/eg/preload.so /tmp/l.so && LD_PRELOAD=/tmp/l.so PRELOAD_MARKER=/work/p /bin/true"),
        ("list", "LD_PRELOAD='/opt/eg/preload.so /tmp/p.so' PRELOAD_MARKER=/work/p /bin/true"),
        ("absent", "LD_PRELOAD=/tmp/none.so /bin/true 2>/dev/null"),
        // $ORIGIN is /usr/bin, read-only; the name leaves it for /tmp.
        ("origin", "cd / && LD_PRELOAD='$ORIGIN/../../tmp/p.so' PRELOAD_MARKER=/work/p /bin/true"),
    ];
    for (name, case) in cases {
        let (_, events) = run(
            "enforce",
            DENY,
            &format!("preload-{name}"),
            &format!("{COPY}; {case}; touch /work/done"),
        );
        assert_eq!(events.len(), 1, "{name}: {events:#?}");
        assert_eq!(events[0]["action"], "denied", "{name}");
    }
}

/// The image's own libraries (read-only all the way) are not an event, in enforce mode with
/// the rule made critical: legitimate preloads keep working.
#[test]
fn a_preload_on_read_only_mounts_is_not_an_event() {
    needs_root!();
    let (ran, events) = run(
        "enforce",
        DENY,
        "preload-ro",
        "LD_PRELOAD=/opt/eg/preload.so PRELOAD_MARKER=/work/p /bin/true && \
         LD_PRELOAD=libc.so.6 /bin/true && touch /work/done",
    );
    assert!(ran);
    assert!(events.is_empty(), "{events:#?}");
}

/// By default (importance "info", below `[events] min_importance`) there is no look: the
/// preload runs and nothing is written.
#[test]
fn off_by_default() {
    needs_root!();
    let (ran, events) = run(
        "enforce",
        "",
        "preload-off",
        &format!("{COPY}; LD_PRELOAD=/tmp/p.so PRELOAD_MARKER=/work/p /bin/true; touch /work/done"),
    );
    assert!(ran);
    assert!(events.is_empty(), "{events:#?}");
}
