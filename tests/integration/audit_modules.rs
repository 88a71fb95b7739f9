//! Audit modules (issue 24, item 4): a program that names an audit module in its own dynamic
//! section (`DT_AUDIT`) has the module's code run by the loader even when the loader only
//! lists its libraries (`ldd`, `ld.so --list`): that counts like `LD_AUDIT`, not as a query.
//! And an environment too large to be read whole is judged as if it held `LD_AUDIT` (which
//! could sit past the part read), never as clean.

use crate::harness::{run_container, Run, Supervisor};

const LD: &str = "/lib64/ld-linux-x86-64.so.2";

fn loader_events(sup: &Supervisor, run: &Run) -> Vec<serde_json::Value> {
    sup.events_of(&run.id)
        .into_iter()
        .filter(|e| e["event"] != "loader_query")
        .collect()
}

/// In enforce mode the audit module never runs and the run is denied; in audit mode it runs
/// and is logged above `loader_query`.
fn denied_and_logged(script: &str, name: &str) {
    for (mode, ran) in [("enforce", false), ("audit", true)] {
        let sup = Supervisor::start(mode, "");
        let run = run_container(&sup, &format!("{name}-{mode}"), script, &[]);
        let log = sup.log();
        assert!(run.marker("done"), "{}\n{log}", run.describe());
        assert_eq!(
            run.marker("a"),
            ran,
            "{mode}: the audit module ran: {}\n{}\n{log}",
            run.marker("a"),
            run.describe()
        );
        let events = loader_events(&sup, &run);
        let action = if ran { "allowed" } else { "denied" };
        assert!(
            events
                .iter()
                .any(|e| e["importance"] == "critical" && e["action"] == action),
            "{mode}: {events:#?}\n{log}"
        );
    }
}

#[test]
fn ldd_of_a_program_naming_an_audit_module_is_a_loader_run() {
    needs_root!();
    denied_and_logged(
        "AUDIT_MARKER=/work/a ldd /opt/eg/audited; touch /work/done",
        "dtaudit-ldd",
    );
}

#[test]
fn ld_so_list_of_a_program_naming_an_audit_module_is_a_loader_run() {
    needs_root!();
    denied_and_logged(
        &format!("AUDIT_MARKER=/work/a {LD} --list /opt/eg/audited; touch /work/done"),
        "dtaudit-list",
    );
}

#[test]
fn ld_audit_past_what_is_read_of_the_environment_is_not_missed() {
    needs_root!();
    // Three 100 KB variables, then LD_AUDIT: past the 256 KiB read of /proc/PID/environ.
    denied_and_logged(
        &format!(
            "B=$(head -c 100000 /dev/zero | tr '\\0' x); \
             env A1=$B A2=$B A3=$B LD_AUDIT=/opt/eg/audit-module.so AUDIT_MARKER=/work/a \
             {LD} --list /bin/true; touch /work/done"
        ),
        "audit-env-cut",
    );
}

/// A plain `ldd` is still only a query, never denied.
#[test]
fn ldd_of_an_ordinary_program_stays_a_query() {
    needs_root!();
    let sup = Supervisor::start("enforce", "");
    let run = run_container(
        &sup,
        "ldd-plain",
        "ldd /bin/true > /work/out && touch /work/done",
        &[],
    );
    assert!(run.marker("done"), "{}\n{}", run.describe(), sup.log());
    assert!(
        loader_events(&sup, &run).is_empty(),
        "{:#?}",
        sup.events_of(&run.id)
    );
}
