//! Unit tests of `setup.rs`.

use super::*;

impl Change {
    fn text(&self) -> &str {
        self.content.as_deref().expect("a file to write")
    }
}

fn layout(root: &Path) -> Layout {
    Layout {
        root: root.to_owned(),
        ..Layout::default()
    }
}

#[test]
fn containerd_keeps_everything_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let l = layout(dir.path());
    let cfg = dir.path().join("etc/containerd/config.toml");
    std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();
    let original = "# site config, keep me\nversion = 2\nroot = \"/var/lib/containerd\"\n\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"pause:3.9\" # pinned\n";
    std::fs::write(&cfg, original).unwrap();
    let change = containerd(&l).unwrap();
    assert!(change
        .text()
        .starts_with("# site config, keep me\nversion = 2\n"));
    assert!(change
        .text()
        .contains("sandbox_image = \"pause:3.9\" # pinned"));
    assert!(change
        .text()
        .contains("BinaryName = \"/usr/bin/execguard-runtime\""));
    assert!(change
        .text()
        .contains("pod_annotations = [\"execguard.io/*\"]"));
    apply(&[change]).unwrap();
    let again = containerd(&l).unwrap();
    assert!(again.is_noop());
    assert!(apply(&[again]).unwrap().is_empty());
}

/// A config that names no runtime relied on containerd's built-in `runc`; a `runtimes`
/// table of ours must not make the CRI plugin lose it (it would refuse to load).
#[test]
fn containerd_keeps_the_default_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let l = layout(dir.path());
    let cfg = dir.path().join("etc/containerd/config.toml");
    std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();
    for (original, runc_added) in [
        ("version = 2\n", true),
        ("version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v1\"\n", false),
        ("version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  default_runtime_name = \"crun\"\n", false),
    ] {
        std::fs::write(&cfg, original).unwrap();
        let doc: DocumentMut = containerd(&l).unwrap().text().parse().unwrap();
        let runc = doc["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"].get("runc");
        let runtime_type = runc
            .and_then(|r| r.get("runtime_type"))
            .and_then(Item::as_str);
        match (runc_added, original.contains("runc.v1")) {
            (true, _) => assert_eq!(runtime_type, Some("io.containerd.runc.v2"), "{original}"),
            (false, true) => assert_eq!(runtime_type, Some("io.containerd.runc.v1"), "{original}"),
            (false, false) => assert!(runc.is_none(), "{original}"),
        }
    }
}

/// `--remove` takes out what setup added and keeps the rest; a second removal changes
/// nothing.
#[test]
fn removal_undoes_setup() {
    let dir = tempfile::tempdir().unwrap();
    let l = layout(dir.path());
    let cfg = dir.path().join("etc/containerd/config.toml");
    let json = dir.path().join("etc/docker/daemon.json");
    std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();
    std::fs::create_dir_all(json.parent().unwrap()).unwrap();
    std::fs::write(&cfg, "# site\nversion = 2\noom_score = -999\n").unwrap();
    std::fs::write(
        &json,
        r#"{"runtimes": {"kata": {"path": "/k"}}, "debug": true}"#,
    )
    .unwrap();
    for engine in [
        Engine::Containerd,
        Engine::Docker,
        Engine::Podman,
        Engine::Crio,
    ] {
        apply(&plan(engine, &l).unwrap()).unwrap();
        apply(&plan_removal(engine, &l).unwrap()).unwrap();
        assert!(
            plan_removal(engine, &l)
                .unwrap()
                .iter()
                .all(Change::is_noop),
            "{engine:?}"
        );
    }
    let toml = std::fs::read_to_string(&cfg).unwrap();
    assert!(
        toml.starts_with("# site\nversion = 2\noom_score = -999\n"),
        "{toml}"
    );
    assert!(!toml.contains("execguard"), "{toml}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"runtimes": {"kata": {"path": "/k"}}, "debug": true})
    );
    assert!(!dir
        .path()
        .join("etc/containers/containers.conf.d/50-execguard.conf")
        .exists());
    assert!(!dir
        .path()
        .join("usr/share/execguard/hooks.d/execguard.json")
        .exists());
    assert!(!dir
        .path()
        .join("etc/crio/crio.conf.d/50-execguard.conf")
        .exists());
}

#[test]
fn podman_keeps_the_configured_hooks_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let l = layout(dir.path());
    let etc = dir.path().join("etc/containers");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(
        etc.join("containers.conf"),
        "[engine]\nhooks_dir = [\"/opt/site-hooks\"]\n",
    )
    .unwrap();
    let changes = podman(&l).unwrap();
    let dropin = &changes[0].text();
    assert!(dropin.contains("\"/opt/site-hooks\""), "{dropin}");
    assert!(
        dropin.contains("\"/usr/share/execguard/hooks.d\""),
        "{dropin}"
    );
    assert!(
        !dropin.contains("/usr/share/containers/oci/hooks.d"),
        "{dropin}"
    );
    let hook: serde_json::Value = serde_json::from_str(changes[1].text()).unwrap();
    assert_eq!(hook["stages"][0], "precreate");
    // Without any configured list, podman's defaults are kept.
    let empty = tempfile::tempdir().unwrap();
    let changes = podman(&layout(empty.path())).unwrap();
    let dropin = changes[0].text();
    assert!(
        dropin.contains("/usr/share/containers/oci/hooks.d"),
        "{dropin}"
    );
}

#[test]
fn containerd_refuses_a_config_version_it_does_not_write() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("etc/containerd/config.toml");
    std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();
    std::fs::write(&cfg, "version = 3\n").unwrap();
    let err = containerd(&layout(dir.path())).unwrap_err().to_string();
    assert!(err.contains("version 3"), "{err}");
}
