//! Older loaders (issue 24, item 5): glibc before 2.33 takes a query option it did not have
//! yet (`--help`, `--version`, `--list-tunables`, `--list-diagnostics`, `--argv0`) as the name
//! of the program it runs, looked up in the loader cache: a container whose root may write
//! `/etc/ld.so.cache` (`ldconfig` over a directory of objects whose SONAME is `--help`) has
//! `ld.so --help` run its payload there, where a 2.33+ loader prints its help. Build images on
//! Debian 11 or Ubuntu 20.04 carry such a loader. Tested with Debian 11's (glibc 2.31, fetched
//! by `scripts/old-loaders.sh`); Debian 10's (2.28) is no longer on Debian's mirror.

use crate::harness::{bundle, fixture, Supervisor};

const OLD: &str = "/opt/eg/ld-2.31.so";

/// Whether the fixture has the old loader; else the test skips (and fails in strict mode).
fn have_old_loader() -> bool {
    if fixture().bin.join("ld-2.31.so").exists() {
        return true;
    }
    assert!(
        std::env::var_os("EXECGUARD_TEST_STRICT").is_none(),
        "no glibc 2.31 loader: run scripts/old-loaders.sh"
    );
    eprintln!("skipped: no glibc 2.31 loader (scripts/old-loaders.sh)");
    false
}

/// The container makes its loader cache name `OPTION` as its payload, then runs the old loader
/// with that option.
fn script(option: &str) -> String {
    format!(
        "mkdir /tmp/lc && cp /opt/eg/payload-soname{option} /tmp/lc/libp.so.1 \
         && ldconfig -C /tmp/cache -f /dev/null /tmp/lc && cat /tmp/cache > /etc/ld.so.cache \
         && {OLD} {option}; touch /work/done"
    )
}

#[test]
fn an_old_glibcs_query_option_that_runs_a_program_is_a_loader_run() {
    needs_root!();
    if !have_old_loader() {
        return;
    }
    for (setting, extra) in [
        ("image", ""),
        ("exec", "[detect]\nexec_checkpoint = true\n"),
    ] {
        for option in ["--help", "--version", "--list-tunables", "--argv0"] {
            for (mode, runs) in [("enforce", false), ("audit", true)] {
                let sup = Supervisor::start(mode, extra);
                let name = format!("old-{setting}-{}-{mode}", option.trim_start_matches('-'));
                // The container's loader cache is its own to write.
                let cache = tempfile::NamedTempFile::new().unwrap();
                std::fs::copy("/etc/ld.so.cache", cache.path()).unwrap();
                let b = bundle(&sup.config, &name, &script(option), &[], None);
                b.edit_spec(|spec| {
                    spec["mounts"]
                        .as_array_mut()
                        .unwrap()
                        .push(serde_json::json!({
                            "destination": "/etc/ld.so.cache", "type": "bind",
                            "source": cache.path(), "options": ["bind", "rw"]
                        }));
                });
                let run = b.run();
                let log = sup.log();
                let ctx = format!("{setting} {option} {mode}: {}\n{log}", run.describe());
                assert!(run.marker("done"), "{ctx}");
                assert_eq!(
                    run.marker("m"),
                    runs,
                    "the payload ran: {}\n{ctx}",
                    run.marker("m")
                );
                let events = sup.events_of(&run.id);
                let action = if runs { "allowed" } else { "denied" };
                assert!(
                    events
                        .iter()
                        .any(|e| e["event"] == "binary_executed_by_loader"
                            && e["action"] == action
                            && e["loader"]["program"] == option),
                    "{events:#?}\n{ctx}"
                );
            }
        }
    }
}
