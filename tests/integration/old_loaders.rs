//! Older loaders (issue 24, item 5): glibc before 2.33 takes a query option it did not have
//! yet (`--help`, `--version`, `--list-tunables`, `--list-diagnostics`, `--argv0`) as the name
//! of the program it runs, looked up in the loader cache: a container whose root may write
//! `/etc/ld.so.cache` (`ldconfig` over a directory of objects whose SONAME is `--help`) has
//! `ld.so --help` run its payload there, where a 2.33+ loader prints its help. Build images on
//! Debian 11 or Ubuntu 20.04 carry such a loader. Tested with Debian 11's (glibc 2.31, fetched
//! by `scripts/old-loaders.sh`), and with Ubuntu 18.04's (glibc 2.27, the same option rules as
//! Debian 10's and RHEL 8's 2.28, which no registry reachable here still serves).

use crate::harness::{bundle, fixture, Supervisor};

/// The old glibc loaders the fixture has (Debian 11's 2.31, Ubuntu 18.04's 2.27 standing in
/// for Debian 10's 2.28): (version, the file on the host). One missing is skipped through the
/// harness (a failure in strict mode). The loader corpus uses them too.
pub(crate) fn old_glibcs() -> Vec<(&'static str, std::path::PathBuf)> {
    let mut out = Vec::new();
    for version in ["2.31", "2.27"] {
        let file = fixture().bin.join(format!("ld-{version}.so"));
        if file.exists() {
            out.push((version, file));
        } else {
            crate::harness::skip(
                &format!("no glibc {version} loader: run scripts/old-loaders.sh"),
                false,
            );
        }
    }
    out
}

/// The old loaders by their path in the container (the fixture's `bin` is `/opt/eg`).
fn old_loaders() -> Vec<String> {
    old_glibcs()
        .into_iter()
        .map(|(version, _)| format!("/opt/eg/ld-{version}.so"))
        .collect()
}

/// The container makes its loader cache name `OPTION` as its payload, then runs the old loader
/// with that option.
fn script(old: &str, option: &str) -> String {
    format!(
        "mkdir /tmp/lc && cp /opt/eg/payload-soname{option} /tmp/lc/libp.so.1 \
         && ldconfig -C /tmp/cache -f /dev/null /tmp/lc && cat /tmp/cache > /etc/ld.so.cache \
         && {old} {option}; touch /work/done"
    )
}

#[test]
fn an_old_glibcs_query_option_that_runs_a_program_is_a_loader_run() {
    needs_root!();
    for old in old_loaders() {
        for (setting, extra) in [
            ("image", ""),
            ("exec", "[detect]\nexec_checkpoint = true\n"),
        ] {
            for option in ["--help", "--version", "--list-tunables", "--argv0"] {
                for (mode, runs) in [("enforce", false), ("audit", true)] {
                    let sup = Supervisor::start(mode, extra);
                    let version = old
                        .trim_start_matches("/opt/eg/ld-")
                        .trim_end_matches(".so");
                    let name = format!(
                        "old-{version}-{setting}-{}-{mode}",
                        option.trim_start_matches('-')
                    );
                    // The container's loader cache is its own to write.
                    let cache = tempfile::NamedTempFile::new().unwrap();
                    std::fs::copy("/etc/ld.so.cache", cache.path()).unwrap();
                    let b = bundle(&sup.config, &name, &script(&old, option), &[], None);
                    b.bind(cache.path(), "/etc/ld.so.cache", &["bind", "rw"]);
                    let run = b.run();
                    let log = sup.log();
                    let ctx = format!("{old} {setting} {option} {mode}: {}\n{log}", run.describe());
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
}
