//! The DaemonSet's node installer (`deploy/kubernetes/node.sh`), run against a node root in a
//! temporary directory with the real binaries and containerd's own config parser; what needs
//! a cluster (nsenter into the node's systemd, the API server) is replaced by commands that
//! record what they were asked. No cluster runs here.

use std::path::Path;
use std::process::Command;

use crate::harness::{EXECGUARD, EXECGUARD_RUNTIME};

const NODE_SH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kubernetes/node.sh");
const SITE: &str = "# the node's own settings\nversion = 2\noom_score = -999\n";

fn node_sh(t: &Path, action: &str, live: &str, deleting: &str) -> (bool, String) {
    let host = t.join("host");
    let log = t.join("log");
    let out = Command::new("sh")
        .arg(NODE_SH)
        .arg(action)
        .env("HOST", &host)
        .env("EXECGUARD_BIN_DIR", t.join("bin"))
        .env("EXECGUARD_CONFIG_SOURCE", t.join("config.toml"))
        .env(
            "EXECGUARD_RESTART_CONTAINERD",
            format!("echo restart >> {}", log.display()),
        )
        .env("EXECGUARD_HANDLER_LIVE", live)
        .env("EXECGUARD_LIVE_SECONDS", "2")
        .env(
            "EXECGUARD_KUBE_PATCH",
            format!("printf 'patch %s\\n' >> {}", log.display()),
        )
        .env("EXECGUARD_DS_DELETING", deleting)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn log(t: &Path) -> Vec<String> {
    std::fs::read_to_string(t.join("log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// install: binaries, config, the handler (containerd's own parser reads it), containerd
/// restarted, the label only after the handler is live. stop on a rolling update: nothing.
/// stop when the DaemonSet is deleted: label off first, handler out (the node's settings
/// kept), containerd restarted, files gone. A handler that never gets live: no label.
#[test]
fn daemonset_node_install_and_removal() {
    needs_root!();
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path();
    let host = t.join("host");
    std::fs::create_dir_all(host.join("etc/containerd")).unwrap();
    std::fs::create_dir_all(host.join("usr/local/bin")).unwrap();
    std::fs::write(host.join("etc/containerd/config.toml"), SITE).unwrap();
    std::fs::create_dir_all(t.join("bin")).unwrap();
    std::fs::copy(EXECGUARD, t.join("bin/execguard")).unwrap();
    std::fs::copy(EXECGUARD_RUNTIME, t.join("bin/execguard-runtime")).unwrap();
    std::fs::write(t.join("config.toml"), "mode = \"enforce\"\n").unwrap();
    let cfg = host.join("etc/containerd/config.toml");
    // Live: containerd itself parses the config and serves the handler in it.
    let live = format!(
        "containerd --config {} config dump | grep -q 'runtimes.execguard' && echo live >> {}",
        cfg.display(),
        t.join("log").display()
    );

    let (ok, out) = node_sh(t, "install", &live, "false");
    assert!(ok, "{out}");
    assert_eq!(
        log(t),
        [
            "restart",
            "live",
            r#"patch {"metadata":{"labels":{"execguard.io/ready":"true"}}}"#
        ],
        "{out}"
    );
    assert!(host.join("usr/local/bin/execguard-runtime").exists());
    assert_eq!(
        std::fs::read_to_string(host.join("etc/execguard/config.toml")).unwrap(),
        "mode = \"enforce\"\n"
    );
    let toml = std::fs::read_to_string(&cfg).unwrap();
    assert!(toml.starts_with(SITE), "{toml}");
    assert!(
        toml.contains("BinaryName = \"/usr/local/bin/execguard-runtime\""),
        "{toml}"
    );

    std::fs::remove_file(t.join("log")).unwrap();
    let (ok, out) = node_sh(t, "stop", &live, "false");
    assert!(ok && out.contains("rolling update"), "{out}");
    assert!(log(t).is_empty(), "{:?}", log(t));
    assert!(host.join("usr/local/bin/execguard").exists());

    let (ok, out) = node_sh(t, "stop", &live, "true");
    assert!(ok, "{out}");
    assert_eq!(
        log(t),
        [
            r#"patch {"metadata":{"labels":{"execguard.io/ready":null}}}"#,
            "restart"
        ],
        "{out}"
    );
    let toml = std::fs::read_to_string(&cfg).unwrap();
    assert!(
        toml.starts_with(SITE) && !toml.contains("execguard"),
        "{toml}"
    );
    assert!(!host.join("usr/local/bin/execguard").exists());
    assert!(!host.join("usr/local/bin/execguard-runtime").exists());
    assert!(!host.join("etc/execguard").exists());

    // A containerd that never serves the handler: the install fails and the node stays
    // unlabelled.
    std::fs::remove_file(t.join("log")).unwrap();
    let (ok, out) = node_sh(t, "install", "false", "false");
    assert!(!ok, "{out}");
    assert!(out.contains("not labelled"), "{out}");
    assert_eq!(log(t), ["restart"]);
}
