//! The loader corpus: every way of starting a loader we know of, run by each loader a build
//! image may carry as its own (this machine's glibc 2.36, Debian 11's glibc 2.31, Ubuntu 18.04's
//! glibc 2.27 in place of Debian 10's 2.28, musl), in a
//! container where that loader is the system loader (`/lib64/ld-linux-x86-64.so.2` is Debian
//! 11's file, mounted over this machine's), in audit and in enforce mode, with each checkpoint
//! setting. What really ran is compared with what execguard judged:
//!
//! - audit: every case whose payload ran has a `binary_executed_by_loader` event, allowed;
//! - enforce: no payload runs, and every case that ran in audit has that event, denied.
//!
//! Cases that execguard judged as running a program but that ran nothing (the safe side) are
//! listed in the output, each with its reason (`cautious`): one without a reason fails.
//!
//! The container runs busybox (static: it needs no loader, so the 2.31 loader can be the root's
//! own without a matching libc), and the payload needs no libc.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::harness::{bundle, Supervisor};

const PAYLOAD: &str = "/opt/eg/payload-nolibc";

/// A loader as a container carries it.
struct Loader {
    name: &'static str,
    /// Its path in the container.
    path: &'static str,
    /// Where its file comes from, mounted over `path`'s target (None: this machine's own).
    mount: Option<(String, &'static str)>,
    glibc: bool,
}

fn loaders() -> Vec<Loader> {
    let mut out = vec![
        Loader {
            name: "glibc-2.36",
            path: "/lib64/ld-linux-x86-64.so.2",
            mount: None,
            glibc: true,
        },
        Loader {
            name: "musl",
            path: "/lib/ld-musl-x86_64.so.1",
            mount: None,
            glibc: false,
        },
    ];
    // Older glibcs, each as the root's own loader: /lib64/ld-linux-x86-64.so.2 is a symlink to
    // this file (merged /usr), which the container sees replaced.
    for (version, old) in crate::old_loaders::old_glibcs() {
        out.push(Loader {
            name: if version == "2.31" {
                "glibc-2.31"
            } else {
                "glibc-2.27"
            },
            path: "/lib64/ld-linux-x86-64.so.2",
            mount: Some((
                old.to_str().unwrap().to_owned(),
                "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            )),
            glibc: true,
        });
    }
    out.retain(|l| {
        let there = l.mount.is_some() || std::path::Path::new(l.path).exists();
        if !there {
            crate::harness::skip(
                &format!("{} ({}) is missing: run scripts/deps.sh", l.path, l.name),
                false,
            );
        }
        there
    });
    out
}

/// The SHA-256 of a file, as `sha256sum` prints it.
fn sha256(path: &str) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "sha256sum {path}");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// One way of starting the loader: environment assignments, then the arguments after its name.
#[derive(Debug, PartialEq)]
struct Case {
    env: &'static [&'static str],
    args: Vec<&'static str>,
}

const AUDIT: &str = "/opt/eg/audit-nolibc.so";

/// The corpus; `PAYLOAD` and `AUDIT` create `/work/m` when their code runs. Each case is run from
/// `/opt/eg` with `LD_LIBRARY_PATH` unset.
fn corpus(glibc: bool) -> Vec<Case> {
    let p = PAYLOAD;
    let plain = |args: Vec<&'static str>| Case { env: &[], args };
    let mut cases = vec![
        plain(vec![p]),
        plain(vec![p, "an", "argument"]),
        // A name without a slash: the loader looks it up (glibc in its search paths, musl
        // in the current directory).
        plain(vec!["payload-nolibc"]),
        plain(vec!["./payload-nolibc"]),
        plain(vec!["--library-path", "/opt/eg", "payload-nolibc"]),
        plain(vec!["--library-path", "/nonexistent", p]),
        plain(vec!["--preload", "/nonexistent.so", p]),
        plain(vec!["--list", p]),
        plain(vec!["--help"]),
        plain(vec!["--help", p]),
        plain(vec!["--version"]),
        plain(vec!["--version", p]),
        plain(vec!["--no-such-option", p]),
        plain(vec!["--", p]),
        plain(vec![]),
        plain(vec!["--library-path"]),
    ];
    if glibc {
        cases.extend([
            plain(vec!["--verify", p]),
            plain(vec!["--inhibit-cache", p]),
            plain(vec!["--inhibit-rpath", "x", p]),
            plain(vec!["--audit", AUDIT, p]),
            plain(vec!["--list", "--audit", AUDIT, p]),
            plain(vec!["--verify", "--audit", AUDIT, p]),
            plain(vec!["--audit", "/nonexistent.so", "--list", p]),
            plain(vec!["--argv0", "name", p]),
            plain(vec!["--argv0", p]),
            plain(vec!["--list-tunables"]),
            plain(vec!["--list-tunables", p]),
            plain(vec!["--list-diagnostics"]),
            plain(vec!["--glibc-hwcaps-prepend", "x", p]),
            plain(vec!["--glibc-hwcaps-mask", "x", p]),
            plain(vec![
                "--inhibit-cache",
                "--library-path",
                "/opt/eg",
                "--verify",
                p,
            ]),
            // ldd's way, and an audit module named in the environment (a last argument,
            // the program's own, tells each apart from the case without the variable).
            Case {
                env: &["LD_TRACE_LOADED_OBJECTS=1"],
                args: vec![p, "traced"],
            },
            Case {
                env: &["LD_AUDIT=/opt/eg/audit-nolibc.so"],
                args: vec!["--list", p, "audited"],
            },
            Case {
                env: &[
                    "LD_AUDIT=/opt/eg/audit-nolibc.so",
                    "LD_TRACE_LOADED_OBJECTS=1",
                ],
                args: vec![p, "audited", "traced"],
            },
            Case {
                env: &["LD_AUDIT=/opt/eg/audit-nolibc.so"],
                args: vec!["--help", "audited"],
            },
        ]);
    }
    cases
}

/// Why a case that ran nothing may still be judged as running a program (the safe side), if it
/// may: what the loader would do depends on what execguard does not look at, or it reads the
/// arguments more cautiously than the loader does.
fn cautious(loader: &str, setting: &str, case: &Case) -> Option<&'static str> {
    let a = &case.args;
    let glibc = loader.starts_with("glibc");
    let has = |o: &str| a.contains(&o);
    if glibc && has("--audit") {
        return Some(
            "an audit module is named: judged as loading it, before the loader looks for it",
        );
    }
    if loader == "musl"
        && matches!(
            a.first(),
            Some(&("--help" | "--version" | "--no-such-option"))
        )
    {
        return Some(
            "musl ends at an option it does not know; the program named after it is judged as run",
        );
    }
    if setting != "exec" {
        return None;
    }
    if glibc && a.last() == Some(&"payload-nolibc") {
        return Some("a name without a slash is looked up (search paths, the loader cache a container may write)");
    }
    if (loader == "glibc-2.31" || loader == "glibc-2.27")
        && old_glibc_takes_an_option_as_program(loader, a)
    {
        return Some("glibc before 2.33 takes an option it does not know as the program's name, looked up in the loader cache (old_loaders.rs)");
    }
    if glibc && matches!(a.first(), Some(&("--no-such-option" | "--"))) {
        return Some("an option the parser does not know leans to a program");
    }
    None
}

/// Whether an old glibc reads `args` with an option it does not know (or a value option
/// without its value) where the program's name goes: it takes that option as the name.
fn old_glibc_takes_an_option_as_program(loader: &str, args: &[&str]) -> bool {
    let flags = ["--list", "--verify", "--inhibit-cache"];
    let mut valued = vec!["--library-path", "--inhibit-rpath", "--audit"];
    if loader == "glibc-2.31" {
        valued.push("--preload"); // 2.30
    }
    let mut i = 0;
    while let Some(a) = args.get(i) {
        if flags.contains(a) {
            i += 1;
        } else if valued.contains(a) && i + 1 < args.len() {
            i += 2;
        } else {
            return a.starts_with("--");
        }
    }
    false
}

/// Cases each loader must run (the corpus tests something only if these do).
fn must_run(l: &Loader) -> Vec<Vec<&'static str>> {
    let p = PAYLOAD;
    let mut out = vec![
        vec![p],
        vec![p, "an", "argument"],
        vec!["./payload-nolibc"],
        vec!["--library-path", "/nonexistent", p],
    ];
    if l.glibc {
        out.extend([
            vec!["--inhibit-cache", p],
            vec!["--audit", AUDIT, p],
            vec!["--list", "--audit", AUDIT, p],
        ]);
    } else {
        out.push(vec!["--", p]);
    }
    if l.name == "glibc-2.36" {
        out.push(vec!["--argv0", "name", p]);
    }
    out
}

fn script(l: &Loader, cases: &[Case]) -> String {
    // The loader the container has is the one meant (a bind mount over a file of /usr).
    let mut s = format!("busybox sha256sum {} > /work/loader.sha256; ", l.path);
    s.push_str("cd /opt/eg; unset LD_LIBRARY_PATH; ");
    for (i, case) in cases.iter().enumerate() {
        let args: Vec<String> = case.args.iter().map(|a| format!("'{a}'")).collect();
        s.push_str(&format!(
            "rm -f /work/m; {} {} {} >/dev/null 2>&1 </dev/null; [ -e /work/m ] && echo {i} >> /work/ran; ",
            case.env.join(" "),
            l.path,
            args.join(" ")
        ));
    }
    s.push_str("touch /work/done");
    s
}

/// The cases whose payload ran, and the events of each case (by its argv).
fn run(
    sup: &Supervisor,
    l: &Loader,
    cases: &[Case],
    name: &str,
) -> (BTreeSet<usize>, Vec<Vec<Value>>) {
    // Events are told apart by argv alone.
    for (i, a) in cases.iter().enumerate() {
        assert!(
            cases[..i].iter().all(|b| b.args != a.args),
            "two cases with the arguments {:?}",
            a.args
        );
    }
    let b = bundle(&sup.config, name, &script(l, cases), &[], None);
    b.edit_spec(|spec| {
        spec["process"]["args"] =
            serde_json::json!(["/usr/bin/busybox", "sh", "-c", script(l, cases)]);
    });
    if let Some((src, dest)) = &l.mount {
        b.bind(src.as_ref(), dest, &["bind", "ro"]);
    }
    let run = b.run();
    assert!(
        run.marker("done"),
        "{name}: {}\n{}",
        run.describe(),
        sup.log()
    );
    let meant = sha256(l.mount.as_ref().map_or(l.path, |(src, _)| src.as_str()));
    let seen = std::fs::read_to_string(run.work.join("loader.sha256")).unwrap_or_default();
    assert!(
        seen.starts_with(&meant),
        "{name}: the container's {} is not the loader meant ({meant}): {seen}",
        l.path
    );
    let ran: BTreeSet<usize> = std::fs::read_to_string(run.work.join("ran"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let events = sup.events_of(&run.id);
    let by_case = cases
        .iter()
        .map(|case| {
            let argv: Vec<&str> = std::iter::once(l.path)
                .chain(case.args.iter().copied())
                .collect();
            events
                .iter()
                .filter(|e| {
                    e["exec"]["argv"].as_array().is_some_and(|a| {
                        a.iter()
                            .map(Value::as_str)
                            .eq(argv.iter().map(|s| Some(*s)))
                    })
                })
                .cloned()
                .collect()
        })
        .collect();
    (ran, by_case)
}

fn judged_running(events: &[Value], action: &str) -> bool {
    events
        .iter()
        .any(|e| e["event"] == "binary_executed_by_loader" && e["action"] == action)
}

#[test]
fn what_each_loader_really_runs_is_what_execguard_judges() {
    needs_root!();
    let mut report = Vec::new();
    let mut cautious_cases = Vec::new();
    for l in loaders() {
        let cases = corpus(l.glibc);
        for (setting, extra) in [
            ("image", ""),
            ("exec", "[detect]\nexec_checkpoint = true\n"),
        ] {
            let extra = format!("{extra}[events]\nrate_limit_seconds = 0\n");
            let audit = Supervisor::start("audit", &extra);
            let (ran, events) = run(
                &audit,
                &l,
                &cases,
                &format!("corpus-{}-{setting}-audit", l.name),
            );
            for must in must_run(&l) {
                let i = cases
                    .iter()
                    .position(|c| c.args == must && c.env.is_empty());
                assert!(
                    i.is_some_and(|i| ran.contains(&i)),
                    "{} {setting}: {must:?} ran nothing: the corpus would test nothing",
                    l.name
                );
            }
            for (i, case) in cases.iter().enumerate() {
                let ctx = format!("{} {setting} audit: {} {case:?}", l.name, l.path);
                if ran.contains(&i) {
                    assert!(
                        judged_running(&events[i], "allowed"),
                        "ran without its event: {ctx}\n{:#?}",
                        events[i]
                    );
                } else if judged_running(&events[i], "allowed") {
                    let why = cautious(l.name, setting, case);
                    assert!(
                        why.is_some(),
                        "judged as running a program, but none ran: {ctx}\n{:#?}",
                        events[i]
                    );
                    cautious_cases.push(format!("{ctx}: {}", why.unwrap_or_default()));
                }
            }
            drop(audit);
            let enforce = Supervisor::start("enforce", &extra);
            let (ran_enforced, events) = run(
                &enforce,
                &l,
                &cases,
                &format!("corpus-{}-{setting}-enforce", l.name),
            );
            assert!(
                ran_enforced.is_empty(),
                "{} {setting}: payloads ran in enforce mode: {:?}",
                l.name,
                ran_enforced.iter().map(|i| &cases[*i]).collect::<Vec<_>>()
            );
            for i in &ran {
                assert!(
                    judged_running(&events[*i], "denied"),
                    "{} {setting} enforce: {:?} not denied: {:#?}",
                    l.name,
                    cases[*i],
                    events[*i]
                );
            }
            report.push(format!(
                "{} {setting}: {} cases, {} ran in audit (each logged), none in enforce",
                l.name,
                cases.len(),
                ran.len()
            ));
        }
    }
    eprintln!(
        "{}\njudged as running a program, ran nothing (the safe side):\n{}",
        report.join("\n"),
        cautious_cases.join("\n")
    );
}
