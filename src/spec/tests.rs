//! Unit tests of `spec/mod.rs`.

use super::*;

const SOCK: &str = "/run/execguard/execguard.sock";

fn patched(mut spec: Value) -> Value {
    patch(&mut spec, Path::new(SOCK), Checkpoints::ExecAndImage).unwrap();
    spec
}

fn patched_image_only(mut spec: Value) -> Value {
    patch(&mut spec, Path::new(SOCK), Checkpoints::Image).unwrap();
    spec
}

fn podman_like() -> Value {
    json!({
        "ociVersion": "1.0.2",
        "process": {"args": ["sh"]},
        "linux": {
            "namespaces": [{"type": "pid"}],
            "seccomp": {
                "defaultAction": "SCMP_ACT_ERRNO",
                "defaultErrnoRet": 38,
                "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
                "flags": ["SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
                "syscalls": [
                    {"names": ["read", "execve", "write", "execveat", "seccomp"], "action": "SCMP_ACT_ALLOW"},
                    {"names": ["execve"], "action": "SCMP_ACT_ALLOW", "comment": "dup"},
                    {"names": ["ptrace"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
                    {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                     "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]}
                ]
            }
        },
        "futureField": {"kept": true}
    })
}

#[test]
fn no_profile_gets_an_allow_profile_with_32_bit_covered() {
    let s = patched(json!({"ociVersion": "1.0.2"}));
    let sc = &s["linux"]["seccomp"];
    assert_eq!(sc["defaultAction"], "SCMP_ACT_ALLOW");
    assert_eq!(sc["listenerPath"], SOCK);
    assert!(sc["architectures"]
        .as_array()
        .unwrap()
        .contains(&json!("SCMP_ARCH_X86")));
    let rules = sc["syscalls"].as_array().unwrap();
    assert_eq!(rules[0]["action"], "SCMP_ACT_NOTIFY");
    assert_eq!(
        rules[0]["names"],
        json!(["execve", "execveat", "set_thread_area"])
    );
    // Conditional traps; with a default of ALLOW no complement rule is needed.
    assert_eq!(rules[1]["names"], json!(["arch_prctl"]));
    assert_eq!(rules[1]["args"][0]["value"], 0xffff_ffff_u64);
    assert_eq!(rules[1]["args"][0]["valueTwo"], crate::traps::ARCH_SET_FS);
    assert_eq!(rules[1]["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
    assert_eq!(rules[2]["names"], json!(["seccomp"]));
    assert_eq!(rules[2]["args"][0]["valueTwo"], 8);
    assert_eq!(rules.len(), 3);
}

#[test]
fn merge_keeps_everything_else() {
    let s = patched(podman_like());
    let sc = &s["linux"]["seccomp"];
    assert_eq!(sc["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(sc["defaultErrnoRet"], 38);
    assert_eq!(sc["flags"], json!(["SECCOMP_FILTER_FLAG_SPEC_ALLOW"]));
    assert_eq!(s["futureField"], json!({"kept": true}));
    assert_eq!(s["linux"]["namespaces"], json!([{"type": "pid"}]));
    let rules = sc["syscalls"].as_array().unwrap();
    // The trapped calls only in execguard's rules; the lone "dup" rule is gone.
    assert_eq!(rules[0]["names"], json!(["read", "write"]));
    assert_eq!(rules[1]["names"], json!(["ptrace"]));
    assert_eq!(rules[1]["errnoRet"], 1);
    assert_eq!(rules[2]["names"], json!(["personality"]));
    assert_eq!(rules[3]["action"], "SCMP_ACT_NOTIFY");
    assert_eq!(rules[3]["names"], json!(["execve", "execveat"]));
    // arch_prctl and set_thread_area fall to the profile's default (ERRNO): not trapped.
    // seccomp: NOTIFY when NEW_LISTENER is set, the profile's ALLOW otherwise.
    assert_eq!(rules[4]["names"], json!(["seccomp"]));
    assert_eq!(rules[4]["action"], "SCMP_ACT_NOTIFY");
    assert_eq!(rules[4]["args"][0]["valueTwo"], 8);
    assert_eq!(rules[5]["names"], json!(["seccomp"]));
    assert_eq!(rules[5]["action"], "SCMP_ACT_ALLOW");
    assert_eq!(rules[5]["args"][0]["valueTwo"], 0);
    assert_eq!(rules.len(), 6);
    assert!(sc["listenerMetadata"]
        .as_str()
        .unwrap()
        .ends_with("trapped=execve:SCMP_ACT_ALLOW,execveat:SCMP_ACT_ALLOW,seccomp:SCMP_ACT_ALLOW"));
}

#[test]
fn checkpoint_keeps_the_profiles_action_for_other_arch_prctl_calls() {
    let spec = json!({"linux": {"seccomp": {"defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [{"names": ["execve", "arch_prctl", "set_thread_area"], "action": "SCMP_ACT_ALLOW"}]}}});
    let s = patched(spec);
    let rules = s["linux"]["seccomp"]["syscalls"]
        .as_array()
        .unwrap()
        .clone();
    let arch: Vec<&Value> = rules
        .iter()
        .filter(|r| r["names"] == json!(["arch_prctl"]))
        .collect();
    // The trap compares the option's low 32 bits (the kernel reads an int); the profile's
    // own action covers every other int, one rule per bit in which it can differ.
    assert_eq!(arch.len(), 33, "{rules:#?}");
    assert_eq!(arch[0]["action"], "SCMP_ACT_NOTIFY");
    assert_eq!(arch[0]["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
    assert_eq!(arch[0]["args"][0]["value"], 0xffff_ffff_u64);
    assert_eq!(arch[0]["args"][0]["valueTwo"], crate::traps::ARCH_SET_FS);
    let fs = u64::from(crate::traps::ARCH_SET_FS);
    for (b, rule) in arch[1..].iter().enumerate() {
        let bit = 1u64 << b;
        assert_eq!(rule["action"], "SCMP_ACT_ALLOW");
        assert_eq!(rule["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
        assert_eq!(rule["args"][0]["value"], bit);
        assert_eq!(rule["args"][0]["valueTwo"], !fs & bit);
    }
    // Any int but ARCH_SET_FS matches a complement rule; ARCH_SET_FS none, high bits or not.
    let matches = |rule: &Value, arg: u64| {
        let mask = rule["args"][0]["value"].as_u64().unwrap();
        arg & mask == rule["args"][0]["valueTwo"].as_u64().unwrap()
    };
    for arg in [0x1001, 0x1003, 0x2001, 0, 0xffff_ffff, 0x1_0000_1001] {
        assert!(arch[1..].iter().any(|r| matches(r, arg)), "{arg:#x}");
    }
    for arg in [fs, 0x1_0000_0000 | fs, 0xffff_ffff_0000_0000 | fs] {
        assert!(!arch[1..].iter().any(|r| matches(r, arg)), "{arg:#x}");
        assert!(matches(arch[0], arg), "{arg:#x}");
    }
    assert_eq!(patched(s.clone()), s);
}

/// A spec patched by an execguard that compared arch_prctl's option on 64 bits (its
/// complement was one `SCMP_CMP_NE` rule), or written back by a Go runtime that left out
/// zero `valueTwo`s, is patched again to the same spec as a fresh one.
#[test]
fn older_and_go_written_complement_rules_are_removed() {
    let fresh = json!({"linux": {"seccomp": {"defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [{"names": ["execve", "arch_prctl", "set_thread_area"], "action": "SCMP_ACT_ALLOW"}]}}});
    let expected = patched(fresh);
    let mut old = expected.clone();
    let rules = old["linux"]["seccomp"]["syscalls"].as_array_mut().unwrap();
    rules.retain(|r| !(r["names"] == json!(["arch_prctl"]) && r["action"] == "SCMP_ACT_ALLOW"));
    rules.push(json!({"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW",
        "args": [{"index": 0, "value": 0x1002, "valueTwo": 0, "op": "SCMP_CMP_NE"}]}));
    assert_eq!(patched(old), expected);
    let mut go = expected.clone();
    for rule in go["linux"]["seccomp"]["syscalls"].as_array_mut().unwrap() {
        for arg in rule["args"].as_array_mut().into_iter().flatten() {
            if arg["valueTwo"] == 0 {
                arg.as_object_mut().unwrap().remove("valueTwo");
            }
        }
    }
    assert_eq!(patched(go), expected);
}

#[test]
fn patching_twice_gives_the_same_spec() {
    for spec in [json!({"ociVersion": "1.0.2"}), podman_like()] {
        let once = patched(spec);
        let twice = patched(once.clone());
        assert_eq!(once, twice);
    }
}

#[test]
fn a_foreign_listener_is_refused_and_the_spec_unchanged() {
    let mut spec = podman_like();
    spec["linux"]["seccomp"]["listenerPath"] = json!("/run/other.sock");
    let before = spec.clone();
    let err = patch(&mut spec, Path::new(SOCK), Checkpoints::ExecAndImage).unwrap_err();
    assert!(matches!(err, SpecError::ForeignListener { .. }));
    assert!(err.to_string().contains("/run/other.sock"));
    assert_eq!(spec, before);
}

#[test]
fn an_already_blocked_exec_stays_blocked() {
    let mut spec = json!({"linux": {"seccomp": {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["execve", "execveat"], "action": "SCMP_ACT_ERRNO"}]}}});
    let before = spec.clone();
    for checkpoints in [Checkpoints::Image, Checkpoints::ExecAndImage] {
        assert_eq!(
            patch(&mut spec, Path::new(SOCK), checkpoints).unwrap(),
            Outcome::AlreadyBlocked
        );
        assert_eq!(spec, before);
    }
}

#[test]
fn off_annotation_leaves_the_spec_alone() {
    let mut spec = json!({"annotations": {"execguard.io/mode": "off"}});
    let before = spec.clone();
    assert_eq!(
        patch(&mut spec, Path::new(SOCK), Checkpoints::ExecAndImage).unwrap(),
        Outcome::Off
    );
    assert_eq!(spec, before);
    let mut bad = json!({"annotations": {"execguard.io/mode": "maybe"}});
    assert!(matches!(
        patch(&mut bad, Path::new(SOCK), Checkpoints::Image),
        Err(SpecError::BadAnnotation { .. })
    ));
}

#[test]
fn conditional_rules_on_trapped_syscalls_are_refused() {
    let mut spec = json!({"linux": {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["execve"], "action": "SCMP_ACT_ALLOW",
                      "args": [{"index": 1, "value": 0, "op": "SCMP_CMP_EQ"}]}]}}});
    assert_eq!(
        patch(&mut spec, Path::new(SOCK), Checkpoints::ExecAndImage).unwrap_err(),
        SpecError::ConditionalRule {
            index: 0,
            syscall: "execve".into()
        }
    );
}

#[test]
fn wrong_types_are_named() {
    let mut spec = json!({"linux": {"seccomp": []}});
    let err = patch(&mut spec, Path::new(SOCK), Checkpoints::ExecAndImage).unwrap_err();
    assert!(err.to_string().contains("linux.seccomp"), "{err}");
}

#[test]
fn by_default_only_the_image_checkpoint_and_the_listener_are_trapped() {
    let s = patched_image_only(json!({"ociVersion": "1.0.2"}));
    let rules = s["linux"]["seccomp"]["syscalls"].as_array().unwrap();
    assert_eq!(rules[0]["action"], "SCMP_ACT_NOTIFY");
    assert_eq!(rules[0]["names"], json!(["set_thread_area"]));
    assert_eq!(rules[1]["names"], json!(["arch_prctl"]));
    assert_eq!(rules[2]["names"], json!(["seccomp"]));
    assert_eq!(rules.len(), 3);
    // A profile's exec rules are left as they are, conditions included.
    let spec = json!({"linux": {"seccomp": {"defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {"names": ["execve"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 1, "value": 0, "op": "SCMP_CMP_NE"}]},
            {"names": ["arch_prctl", "set_thread_area", "read"], "action": "SCMP_ACT_ALLOW"}]}}});
    let s = patched_image_only(spec);
    let rules = s["linux"]["seccomp"]["syscalls"].as_array().unwrap();
    assert_eq!(rules[0]["names"], json!(["execve"]));
    assert_eq!(rules[0]["args"][0]["op"], "SCMP_CMP_NE");
    assert_eq!(rules[1]["names"], json!(["read"]));
    assert!(rules
        .iter()
        .all(|r| r["action"] != "SCMP_ACT_NOTIFY" || r["names"] != json!(["execve"])));
    assert_eq!(patched_image_only(s.clone()), s);
    // Switching the setting re-injects cleanly, both ways.
    let mut podman = podman_like();
    podman["linux"]["seccomp"]["syscalls"][0]["names"] =
        json!(["read", "execve", "arch_prctl", "set_thread_area"]);
    let image = patched_image_only(podman);
    let both = patched(image.clone());
    assert_ne!(both, image);
    // Undoing the exec traps restores one plain rule per trapped call (duplicates of the
    // original profile are folded), and from there the cycle is a fixed point.
    let back = patched_image_only(both);
    let notify_on_exec = |s: &Value| {
        s["linux"]["seccomp"]["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["action"] == "SCMP_ACT_NOTIFY" && rule_names(r).any(|n| n == "execve"))
    };
    assert!(notify_on_exec(&patched(back.clone())));
    assert!(!notify_on_exec(&back));
    assert_eq!(patched_image_only(patched(back.clone())), back);
}

/// Without the image checkpoint's calls (the profile blocks them) only the exec can be
/// judged: the exec is trapped whatever the setting.
#[test]
fn a_profile_that_blocks_the_image_checkpoint_gets_the_exec_trapped() {
    let s = patched_image_only(podman_like());
    let rules = s["linux"]["seccomp"]["syscalls"].as_array().unwrap();
    assert!(
        rules.iter().any(
            |r| r["action"] == "SCMP_ACT_NOTIFY" && r["names"] == json!(["execve", "execveat"])
        ),
        "{rules:#?}"
    );
}
