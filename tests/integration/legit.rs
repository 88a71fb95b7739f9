//! Legitimate loader use keeps working in every mode with no event above `low`, and ordinary
//! build activity produces no event at all.

use crate::harness::{run_container, Supervisor, LOADER as LD};

fn importance_rank(s: &str) -> u8 {
    match s {
        "info" => 0,
        "low" => 1,
        "medium" => 2,
        "high" => 3,
        "critical" => 4,
        other => panic!("unknown importance {other}"),
    }
}

/// Runs the script in enforce mode (default config) and in audit mode: it must succeed (it
/// creates /work/m last) and no event may be above `low`.
fn check_legit(name: &str, script: &str) -> Vec<serde_json::Value> {
    check_legit_with(name, "", script)
}

/// The same with more config lines.
fn check_legit_with(name: &str, config: &str, script: &str) -> Vec<serde_json::Value> {
    let mut all = Vec::new();
    let sup = Supervisor::start("enforce", config);
    for mode in ["enforce", "audit"] {
        let run = run_container(
            &sup,
            &format!("{name}-{mode}"),
            script,
            &[("execguard.io/mode", mode)],
        );
        assert!(run.marker("m"), "{mode}: {}\n{}", run.describe(), sup.log());
        for e in sup.events_of(&run.id) {
            assert!(
                importance_rank(e["importance"].as_str().unwrap()) <= 1,
                "{mode}: {e:#}"
            );
            assert_eq!(e["action"], "allowed", "{e:#}");
            all.push(e);
        }
    }
    all
}

/// The loader runs in these uses, so each is seen, as a `loader_query`.
fn assert_queries_seen(events: &[serde_json::Value]) {
    assert!(!events.is_empty());
    for e in events {
        assert_eq!(e["event"], "loader_query", "{e:#}");
        assert_eq!(e["importance"], "low", "{e:#}");
    }
}

#[test]
fn ldd_works() {
    needs_root!();
    let script = "ldd /bin/true > /work/out && grep -q libc.so.6 /work/out && touch /work/m";
    let events = check_legit_with("ldd", "[detect]\nexec_checkpoint = false\n", script);
    assert_queries_seen(&events);
    // One ldd of one binary: one event per container (audit and enforce) at the image, not
    // one per loader ldd probes.
    assert_eq!(events.len(), 2, "{events:#?}");
    // At the exec too (arm64's default), each of ldd's loader runs that shows no program
    // (`--version`, `--verify`, `--list`) is a query.
    let events = check_legit_with("ldd-exec", "[detect]\nexec_checkpoint = true\n", script);
    assert_queries_seen(&events);
}

/// `[events] min_importance` keeps what is below it out of the log; a denial is still denied
/// and written.
#[test]
fn events_below_min_importance_are_not_written() {
    needs_root!();
    let sup = Supervisor::start("enforce", "[events]\nmin_importance = \"medium\"\n");
    let run = run_container(
        &sup,
        "min-importance",
        &format!("ldd /bin/true > /work/out; {LD} /bin/touch /work/m"),
        &[],
    );
    assert!(!run.marker("m"), "{}", run.describe());
    let events = sup.events_of(&run.id);
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["event"], "binary_executed_by_loader");
}

#[test]
fn ldd_on_a_32_bit_binary() {
    needs_root!();
    let events = check_legit(
        "ldd32",
        "ldd /opt/eg/payload32 > /work/out && grep -q libc.so.6 /work/out && touch /work/m",
    );
    assert_queries_seen(&events);
}

fn queries() -> String {
    format!(
        "{LD} --list /bin/true | grep -q libc.so.6 && {LD} --verify /bin/true && \
         {LD} --help > /dev/null && {LD} --version > /dev/null && \
         {LD} --list-tunables > /dev/null && {LD} --list-diagnostics > /dev/null && touch /work/m"
    )
}

/// Only `--list` loads objects and so sets up a thread pointer; `--verify`, `--help`,
/// `--version`, `--list-tunables` and `--list-diagnostics` exit before, run nothing, and never
/// reach the image checkpoint.
#[test]
fn loader_queries() {
    needs_root!();
    let events = check_legit("queries", &queries());
    // One query seen, in each of the two modes.
    assert_eq!(events.len(), 2, "{events:#?}");
    assert_queries_seen(&events);
    assert!(events.iter().all(|e| e["loader"]["mode"] == "list"));
}

/// The exec checkpoint sees every one.
#[test]
fn loader_queries_at_the_exec() {
    needs_root!();
    let events = check_legit_with(
        "queries-exec",
        "[detect]\nexec_checkpoint = true\n",
        &queries(),
    );
    // Six queries, in each of the two modes.
    assert_eq!(events.len(), 12, "{events:#?}");
    assert_queries_seen(&events);
}

/// Programs of every kind run, with each checkpoint setting, in both modes, without an event:
/// a glibc program, a static one, a musl one, and one that needs no libc as Go's do (no
/// loader, no thread-pointer call: on arm64 it makes no call the image checkpoint traps).
#[test]
fn programs_of_every_kind_run() {
    needs_root!();
    let script = "/opt/eg/payload /work/dynamic && /opt/eg/payload-static /work/static && \
                  /opt/eg/payload-musl /work/musl && /opt/eg/payload-go-style";
    for exec in [false, true] {
        let config =
            format!("[detect]\nexec_checkpoint = {exec}\n[enforce]\nmin_importance = \"info\"\n");
        let sup = Supervisor::start("enforce", &config);
        for mode in ["enforce", "audit"] {
            let run = run_container(
                &sup,
                &format!("kinds-{exec}-{mode}"),
                script,
                &[("execguard.io/mode", mode)],
            );
            for m in ["dynamic", "static", "musl", "m"] {
                assert!(
                    run.marker(m),
                    "{mode}, exec checkpoint {exec}: {m} did not run\n{}\n{}",
                    run.describe(),
                    sup.log()
                );
            }
            let events = sup.events_of(&run.id);
            assert!(events.is_empty(), "{mode}: {events:#?}");
        }
    }
}

/// sh, bash, python3 and perl spawning children, find -exec, xargs, make driving gcc: no
/// events at all, in either mode.
#[test]
fn ordinary_build_activity_is_silent() {
    needs_root!();
    let script = r#"set -e
cd /tmp
sh -c 'true'
bash -c 'ls / > /dev/null'
python3 -c 'import subprocess; subprocess.run(["true"], check=True)'
perl -e 'system("true") == 0 or die'
find /etc/os-release -exec cat {} \; > /dev/null
echo a b c | xargs -n1 echo > /dev/null
mkdir -p proj && cd proj
printf '#include <stdio.h>\nint main(void){puts("hi");return 0;}\n' > hello.c
printf 'hello: hello.c\n\tgcc -O1 -o hello hello.c\n\ncheck: hello\n\t./hello > out.txt\n' > Makefile
make check > /dev/null
grep -q hi out.txt
touch /work/m
"#;
    let sup = Supervisor::start("enforce", "[enforce]\nmin_importance = \"info\"\n");
    for mode in ["enforce", "audit"] {
        let run = run_container(
            &sup,
            &format!("build-{mode}"),
            script,
            &[("execguard.io/mode", mode)],
        );
        assert!(run.marker("m"), "{mode}: {}\n{}", run.describe(), sup.log());
        let events = sup.events_of(&run.id);
        assert!(events.is_empty(), "{mode}: {events:#?}");
    }
}
