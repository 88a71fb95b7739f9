//! `[[allow]]` exceptions in enforce mode: exactly the listed loader runs get through, each with
//! an `allowed` event that names its rule; anything the container could have written or
//! swapped does not, also against a racer that swaps the program under the loader.

use std::collections::HashSet;

use serde_json::{json, Value};
use sha2::Digest;

use crate::harness::{bundle, fixture, run_guarded, Supervisor, Way, LOADER as LD};

fn vendor_tool_sha256() -> String {
    let bytes = std::fs::read(fixture().bin.join("vendor-tool")).unwrap();
    sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn rules() -> String {
    format!(
        "[[allow]]\nname = \"vendor\"\nprogram = \"/opt/eg/vendor-tool\"\n\
         options = [\"--library-path\", \"/opt/eg\"]\n\n\
         [[allow]]\nname = \"by-content\"\nsha256 = \"{}\"\n",
        vendor_tool_sha256()
    )
}

/// The event of the loader run whose last argument is `/work/NAME`.
fn event_for<'a>(events: &'a [Value], name: &str) -> Option<&'a Value> {
    let last = format!("/work/{name}");
    events.iter().find(|e| {
        e["event"] == "binary_executed_by_loader"
            && e["exec"]["argv"]
                .as_array()
                .and_then(|a| a.last())
                .is_some_and(|a| a == last.as_str())
    })
}

#[test]
fn only_the_listed_loader_runs_are_exempted() {
    needs_root!();
    for (setting, extra) in [
        ("image", ""),
        ("exec", "[detect]\nexec_checkpoint = true\n"),
    ] {
        let sup = Supervisor::start("enforce", &format!("{extra}{}", rules()));
        for way in [Way::Runc, Way::Run] {
            let script = format!(
                "{LD} --library-path /opt/eg /opt/eg/vendor-tool /work/listed
                 {LD} /opt/eg/vendor-tool /work/content
                 {LD} --inhibit-cache /opt/eg/vendor-tool /work/other-options
                 {LD} --library-path /opt/eg --preload /opt/eg/payload /opt/eg/vendor-tool /work/preload
                 {LD} --library-path /opt/eg /opt/eg/payload /work/other-program
                 {LD} /opt/eg/payload /work/other-content
                 cp /opt/eg/vendor-tool /tmp/copy && {LD} /tmp/copy /work/writable-copy
                 echo done > /work/done"
            );
            let run = run_guarded(way, &sup, &format!("allow-{setting}-{way:?}"), &script, &[]);
            let events = sup.events_of(&run.id);
            let ctx = format!(
                "{setting} {way:?}: {}\n{events:#?}\n{}",
                run.describe(),
                sup.log()
            );
            assert!(run.marker("done"), "{ctx}");
            for (name, rule) in [("listed", "vendor"), ("content", "by-content")] {
                let written = std::fs::read_to_string(run.work.join(name)).unwrap_or_default();
                assert_eq!(written, "tool\n", "{name} did not run\n{ctx}");
                let ev =
                    event_for(&events, name).unwrap_or_else(|| panic!("{name}: no event\n{ctx}"));
                assert_eq!(ev["action"], "allowed", "{ctx}");
                assert_eq!(ev["allow_rule"], rule, "{ctx}");
                assert_eq!(ev["stage"], "image", "{ctx}");
                assert!(
                    ev["reason"].as_str().unwrap().contains("read-only mount"),
                    "{ctx}"
                );
            }
            for (name, why) in [
                ("other-options", None),
                ("preload", None),
                ("other-program", None),
                ("other-content", Some("sha256 is")),
                ("writable-copy", Some("can write it")),
            ] {
                assert!(!run.marker(name), "{name} ran\n{ctx}");
                let ev =
                    event_for(&events, name).unwrap_or_else(|| panic!("{name}: no event\n{ctx}"));
                assert_eq!(ev["action"], "denied", "{name}\n{ctx}");
                assert!(ev.get("allow_rule").is_none(), "{name}\n{ctx}");
                if let Some(why) = why {
                    let reason = ev["reason"].as_str().unwrap();
                    assert!(reason.contains(why), "{name}: {reason}\n{ctx}");
                }
            }
        }
    }
}

/// A rule that names no program (`by-content`: a sha256 only) could exempt whatever program a
/// loader runs, so the exec checkpoint leaves such a run to the image checkpoint, on the file
/// the loader maps. A loader that never reaches that checkpoint (glibc before 2.34 on arm64
/// makes no `set_tid_address` call) is judged at the exec instead: another program is denied
/// there, not let through unjudged. (On x86_64 the old loader's `arch_prctl` is the image
/// checkpoint, which denies it.)
#[test]
fn a_rule_does_not_let_an_old_loader_run_another_program() {
    needs_root!();
    if !fixture().bin.join("ld-2.31.so").exists() {
        crate::harness::skip(
            "no glibc 2.31 loader (scripts/old-loaders.sh fetches it)",
            false,
        );
        return;
    }
    let config = format!("[detect]\nexec_checkpoint = true\n{}", rules());
    let sup = Supervisor::start("enforce", &config);
    for way in [Way::Runc, Way::Run] {
        let run = run_guarded(
            way,
            &sup,
            &format!("allow-old-{way:?}"),
            "/opt/eg/ld-2.31.so /opt/eg/payload-nolibc; echo done > /work/done",
            &[],
        );
        let events = sup.events_of(&run.id);
        let ctx = format!("{way:?}: {}\n{events:#?}\n{}", run.describe(), sup.log());
        assert!(run.marker("done"), "{ctx}");
        assert!(!run.marker("m"), "the payload ran\n{ctx}");
        assert!(
            events
                .iter()
                .any(|e| e["event"] == "binary_executed_by_loader" && e["action"] == "denied"),
            "{ctx}"
        );
    }
}

/// A root-owned program on a writable mount is exempted only for a process that cannot write
/// it: not root, no capability that overrides file permissions, `no_new_privs`.
#[test]
fn a_root_owned_program_is_exempted_only_for_a_process_that_cannot_write_it() {
    needs_root!();
    use std::os::unix::fs::PermissionsExt;
    let rule = "[[allow]]\nname = \"root-owned\"\nprogram = \"/work/vendor/tool\"\n";
    let sup = Supervisor::start("enforce", rule);
    for (user, exempt) in [(1000, true), (0, false)] {
        let b = bundle(
            &sup.config,
            &format!("allow-root-owned-{user}"),
            &format!(
                "{LD} /work/vendor/tool /work/out/ran; echo $? > /work/out/rc; echo done > /work/out/done"
            ),
            &[],
            None,
        );
        let vendor = b.work.join("vendor");
        std::fs::create_dir(&vendor).unwrap();
        std::fs::copy(fixture().bin.join("vendor-tool"), vendor.join("tool")).unwrap();
        std::fs::set_permissions(vendor.join("tool"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let out = b.work.join("out");
        std::fs::create_dir(&out).unwrap();
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).unwrap();
        b.edit_spec(|spec| {
            spec["process"]["user"] = json!({"uid": user, "gid": user});
            assert_eq!(spec["process"]["noNewPrivileges"], true);
        });
        let run = b.run();
        let events = sup.events_of(&run.id);
        let ctx = format!("uid {user}: {}\n{events:#?}\n{}", run.describe(), sup.log());
        assert!(run.work.join("out/done").exists(), "{ctx}");
        assert_eq!(run.work.join("out/ran").exists(), exempt, "{ctx}");
        let ev = events
            .iter()
            .find(|e| e["event"] == "binary_executed_by_loader")
            .unwrap_or_else(|| panic!("no event\n{ctx}"));
        if exempt {
            assert_eq!(ev["action"], "allowed", "{ctx}");
            assert_eq!(ev["allow_rule"], "root-owned", "{ctx}");
            assert!(
                ev["reason"].as_str().unwrap().contains("owned by root"),
                "{ctx}"
            );
        } else {
            assert_eq!(ev["action"], "denied", "{ctx}");
            let reason = ev["reason"].as_str().unwrap();
            assert!(
                reason.contains("the process can write it"),
                "{reason}\n{ctx}"
            );
        }
    }
}

/// A racer swaps the program the loader is given between the allowed tool and the payload
/// (both on a read-only mount, so only the content tells them apart). Whatever the path names
/// when the supervisor looks, the file the loader mapped decides: the payload never runs, the
/// tool does.
#[test]
fn a_program_swapped_under_the_loader_is_judged_by_what_was_mapped() {
    needs_root!();
    const ATTEMPTS: usize = 600;
    let rule = format!(
        "[[allow]]\nname = \"by-content\"\nsha256 = \"{}\"\n",
        vendor_tool_sha256()
    );
    for (setting, extra) in [
        ("image", ""),
        ("exec", "[detect]\nexec_checkpoint = true\n"),
    ] {
        let sup = Supervisor::start("enforce", &format!("{extra}{rule}"));
        for way in [Way::Runc, Way::Run] {
            let run = run_guarded(
                way,
                &sup,
                &format!("allow-race-{setting}-{way:?}"),
                &format!(
                    "/opt/eg/racer allow {ATTEMPTS} /work > /work/out 2>&1; echo done > /work/done"
                ),
                &[],
            );
            let ctx = format!("{setting} {way:?}: {}\n{}", run.describe(), sup.log());
            assert!(run.marker("done"), "{ctx}");
            let mut ran = HashSet::new();
            let mut tool = 0;
            for e in std::fs::read_dir(&run.work).unwrap().flatten() {
                let name = e.file_name().into_string().unwrap();
                if name.starts_with("m-") {
                    match std::fs::read_to_string(e.path())
                        .unwrap_or_default()
                        .as_str()
                    {
                        "tool\n" => tool += 1,
                        other => {
                            ran.insert(format!("{name}: {other:?}"));
                        }
                    }
                }
            }
            let events = sup.events_of(&run.id);
            let allowed = events.iter().filter(|e| e["action"] == "allowed").count();
            let denied = events.iter().filter(|e| e["action"] == "denied").count();
            eprintln!(
                "allow race ({setting} checkpoint, {way:?}): {tool} tool runs, {} payload runs, \
                 {allowed} allowed and {denied} denied events",
                ran.len()
            );
            assert!(ran.is_empty(), "the payload ran: {ran:?}\n{ctx}");
            assert!(tool > 0, "the tool never ran\n{ctx}");
            assert!(denied > 0, "the payload was never loaded\n{ctx}");
            assert!(
                events
                    .iter()
                    .filter(|e| e["action"] == "allowed")
                    .all(|e| e["allow_rule"] == "by-content"),
                "{events:#?}"
            );
        }
    }
}
