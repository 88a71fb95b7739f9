//! Kubernetes through the same calls the kubelet makes: containerd's CRI plugin over its gRPC
//! socket (k8s-cri's tonic client, CRI v1), with the `execguard` runtime handler that
//! `execguard setup containerd` writes. RunPodSandbox (runtime handler, pod annotation),
//! CreateContainer, StartContainer, ExecSync, then removal. No registry here: the sandbox
//! ("pause") image and the workload image are OCI archives this test builds and imports.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ExecSyncRequest, ImageSpec,
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, ListImagesRequest, Mount, NamespaceMode,
    NamespaceOption, PodSandboxConfig, PodSandboxMetadata, RemovePodSandboxRequest,
    RunPodSandboxRequest, StartContainerRequest, StopPodSandboxRequest,
};
use serde_json::json;
use sha2::{Digest, Sha256};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::harness::{
    fixture, setup_engine, spawn_containerd, terminate, Supervisor, EXECGUARD_RUNTIME,
};

const PAUSE_IMAGE: &str = "execguard.test/pause:1";
const WORK_IMAGE: &str = "execguard.test/rootfs:1";

/// containerd with the CRI plugin on a private socket, root and state; stopped on drop (its
/// pods first, by the test's own cleanup).
struct CriContainerd {
    socket: PathBuf,
    dir: tempfile::TempDir,
    child: Child,
}

impl CriContainerd {
    /// Writes a base config (own root, state, socket, the test's sandbox image), lets
    /// `execguard setup containerd` add the handler in place, starts containerd with
    /// `EXECGUARD_CONFIG` (its shims, and so `execguard-runtime`, inherit it), and imports the
    /// two images.
    fn start(execguard_config: &Path) -> Self {
        let dir = tempfile::Builder::new().prefix("eg-cri").tempdir().unwrap();
        let socket = dir.path().join("containerd.sock");
        let cfg = dir.path().join("etc/containerd/config.toml");
        std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();
        let cni = dir.path().join("cni");
        std::fs::create_dir_all(&cni).unwrap();
        std::fs::write(
            &cfg,
            format!(
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n[grpc]\n  address = \"{socket}\"\n\
                 [plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"{PAUSE_IMAGE}\"\n  \
                 disable_apparmor = true\n  enable_selinux = false\n  \
                 # Root here lacks CAP_SYS_RESOURCE: the sandbox's oom_score_adj -998 would fail.\n  \
                 restrict_oom_score_adj = true\n\
                 [plugins.\"io.containerd.grpc.v1.cri\".cni]\n  conf_dir = \"{cni}\"\n  bin_dir = \"{cni}\"\n",
                root = dir.path().join("root").display(),
                state = dir.path().join("state").display(),
                socket = socket.display(),
                cni = cni.display(),
            ),
        )
        .unwrap();
        setup_engine(
            "containerd",
            dir.path(),
            &["--runtime-path", EXECGUARD_RUNTIME.path()],
        );
        let child = spawn_containerd(dir.path(), &cfg, &socket, execguard_config);
        let c = Self { socket, dir, child };
        c.import(&pause_image(c.dir.path()));
        c.import(&rootfs_image(c.dir.path()));
        c
    }

    fn import(&self, archive: &Path) {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", "k8s.io", "images", "import"])
            .arg(archive)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ctr images import {}: {}{}",
            archive.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }
}

impl Drop for CriContainerd {
    fn drop(&mut self) {
        terminate(&mut self.child);
        // The shims and their containers outlive containerd; the pods of a test that panicked
        // are still running.
        let root = self.dir.path().to_string_lossy().into_owned();
        let _ = Command::new("pkill").args(["-f", &root]).status();
    }
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// An OCI image archive (`ctr images import` reads it) of one uncompressed layer: the contents
/// of `layer`, with `entrypoint`.
fn oci_archive(out: &Path, name: &str, layer: &Path, entrypoint: &[&str]) -> PathBuf {
    let layout = out.join(format!("{}.oci", name.replace(['/', ':'], "_")));
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let tar = Command::new("tar")
        .arg("-C")
        .arg(layer)
        .args(["--numeric-owner", "-cf", "-", "."])
        .output()
        .unwrap();
    assert!(tar.status.success());
    let put = |bytes: &[u8]| -> (String, usize) {
        let digest = sha256(bytes);
        std::fs::write(blobs.join(&digest["sha256:".len()..]), bytes).unwrap();
        (digest, bytes.len())
    };
    let (layer_digest, layer_size) = put(&tar.stdout);
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": entrypoint},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    });
    let (config_digest, config_size) = put(config.to_string().as_bytes());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": layer_size}],
    });
    let (manifest_digest, manifest_size) = put(manifest.to_string().as_bytes());
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": manifest_digest, "size": manifest_size,
                       "annotations": {"io.containerd.image.name": name,
                                       "org.opencontainers.image.ref.name": name}}],
    });
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let archive = layout.with_extension("tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&archive)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    archive
}

/// The sandbox image: a static `pause` that waits for SIGTERM.
fn pause_image(out: &Path) -> PathBuf {
    let layer = out.join("pause-layer");
    std::fs::create_dir_all(&layer).unwrap();
    let src = out.join("pause.c");
    std::fs::write(
        &src,
        "#include <signal.h>\n#include <unistd.h>\nstatic void done(int s) { (void)s; _exit(0); }\n\
         int main(void) { signal(SIGTERM, done); signal(SIGINT, done); for (;;) pause(); }\n",
    )
    .unwrap();
    let cc = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(layer.join("pause"))
        .arg(&src)
        .status()
        .unwrap();
    assert!(cc.success(), "gcc -static pause.c");
    oci_archive(out, PAUSE_IMAGE, &layer, &["/pause"])
}

/// The workload image: the fixture's root filesystem (the host's /usr is mounted in).
fn rootfs_image(out: &Path) -> PathBuf {
    oci_archive(out, WORK_IMAGE, &fixture().rootfs, &["/bin/sh"])
}

/// A CRI client on containerd's socket, as the kubelet connects.
struct Kubelet {
    rt: tokio::runtime::Runtime,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

impl Kubelet {
    fn connect(socket: &Path) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let socket = socket.to_owned();
        let channel = rt
            .block_on(
                Endpoint::try_from("http://[::]:50051")
                    .unwrap()
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let socket = socket.clone();
                        async move {
                            Ok::<_, std::io::Error>(TokioIo::new(
                                tokio::net::UnixStream::connect(socket).await?,
                            ))
                        }
                    })),
            )
            .expect("connecting to containerd's CRI socket");
        Self {
            rt,
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        }
    }
}

/// One pod with one container, as a Deployment would make it; removed on drop.
struct Pod<'a> {
    kubelet: &'a mut Kubelet,
    sandbox: String,
    container: String,
    work: PathBuf,
    _dir: tempfile::TempDir,
}

impl<'a> Pod<'a> {
    fn run(kubelet: &'a mut Kubelet, name: &str, handler: &str, mode: Option<&str>) -> Self {
        let dir = tempfile::Builder::new().prefix("eg-pod").tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        let annotations: HashMap<String, String> = mode
            .map(|m| [("execguard.io/mode".to_owned(), m.to_owned())].into())
            .unwrap_or_default();
        let sandbox_config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.to_owned(),
                uid: format!("{}-{name}", std::process::id()),
                namespace: "execguard-test".to_owned(),
                attempt: 0,
            }),
            annotations,
            linux: Some(LinuxPodSandboxConfig {
                // Host network: no CNI plugins here.
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Node as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let rt = &kubelet.rt;
        let sandbox = rt
            .block_on(kubelet.runtime.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(sandbox_config.clone()),
                runtime_handler: handler.to_owned(),
            }))
            .unwrap_or_else(|e| panic!("RunPodSandbox ({handler:?}): {e}"))
            .into_inner()
            .pod_sandbox_id;
        let fx = fixture();
        let mount = |container: &str, host: &Path, readonly| Mount {
            container_path: container.to_owned(),
            host_path: host.to_string_lossy().into_owned(),
            readonly,
            ..Default::default()
        };
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: "build".to_owned(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: WORK_IMAGE.to_owned(),
                ..Default::default()
            }),
            command: vec!["/bin/sleep".to_owned(), "600".to_owned()],
            mounts: vec![
                mount("/usr", Path::new("/usr"), true),
                mount("/opt/eg", &fx.bin, true),
                mount("/work", &work, false),
            ],
            ..Default::default()
        };
        let container = rt
            .block_on(kubelet.runtime.create_container(CreateContainerRequest {
                pod_sandbox_id: sandbox.clone(),
                config: Some(config),
                sandbox_config: Some(sandbox_config),
            }))
            .unwrap_or_else(|e| panic!("CreateContainer: {e}"))
            .into_inner()
            .container_id;
        rt.block_on(kubelet.runtime.start_container(StartContainerRequest {
            container_id: container.clone(),
        }))
        .unwrap_or_else(|e| panic!("StartContainer: {e}"));
        Pod {
            kubelet,
            sandbox,
            container,
            work,
            _dir: dir,
        }
    }

    /// `ExecSync(sh -c script)`: exit code, stdout, stderr.
    fn exec(&mut self, script: &str) -> (i32, String, String) {
        let r = self
            .kubelet
            .rt
            .block_on(self.kubelet.runtime.exec_sync(ExecSyncRequest {
                container_id: self.container.clone(),
                cmd: vec!["/bin/sh".into(), "-c".into(), script.into()],
                timeout: 60,
            }))
            .unwrap_or_else(|e| panic!("ExecSync {script:?}: {e}"))
            .into_inner();
        (
            r.exit_code,
            String::from_utf8_lossy(&r.stdout).into_owned(),
            String::from_utf8_lossy(&r.stderr).into_owned(),
        )
    }
}

impl Drop for Pod<'_> {
    fn drop(&mut self) {
        let k = &mut *self.kubelet;
        let _ =
            k.rt.block_on(k.runtime.stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: self.sandbox.clone(),
            }));
        let _ =
            k.rt.block_on(k.runtime.remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: self.sandbox.clone(),
            }));
    }
}

const LOADER: &str =
    "ldd /bin/true > /work/ldd; /lib64/ld-linux-x86-64.so.2 /bin/touch /work/m; echo $?";

/// The handler from `execguard setup containerd` guards the pod; the pod annotation reaches
/// the runtime and picks the mode; a pod without the handler is not guarded.
#[test]
fn cri_pods_are_guarded_by_the_runtime_handler() {
    needs_root!();
    let sup = Supervisor::start("audit", "");
    let containerd = CriContainerd::start(&sup.config);
    let mut kubelet = Kubelet::connect(&containerd.socket);
    let images = kubelet
        .rt
        .block_on(
            kubelet
                .images
                .list_images(ListImagesRequest { filter: None }),
        )
        .unwrap_or_else(|e| panic!("ListImages: {e}\n{}", containerd.log()))
        .into_inner();
    assert!(
        images
            .images
            .iter()
            .any(|i| i.repo_tags.iter().any(|t| t == WORK_IMAGE)),
        "{images:?}"
    );

    for (name, handler, mode, guarded) in [
        ("enforce", "execguard", Some("enforce"), Some("denied")),
        ("audit", "execguard", Some("audit"), Some("allowed")),
        ("plain", "", Some("enforce"), None),
    ] {
        let mut pod = Pod::run(&mut kubelet, name, handler, mode);
        let (code, stdout, stderr) = pod.exec(LOADER);
        let ctx = format!(
            "pod {name}: exit {code}, stdout {stdout:?}, stderr {stderr:?}\n{}\n{}",
            sup.log(),
            containerd.log()
        );
        assert_eq!(code, 0, "{ctx}");
        let ldd = std::fs::read_to_string(pod.work.join("ldd")).unwrap_or_default();
        assert!(ldd.contains("libc.so.6"), "ldd must work: {ldd}\n{ctx}");
        let events: Vec<_> = sup
            .events_of(&pod.container)
            .into_iter()
            .filter(|e| e["event"] == "binary_executed_by_loader")
            .collect();
        match guarded {
            Some("denied") => {
                assert_eq!(
                    stdout.trim(),
                    "137",
                    "killed at the image checkpoint\n{ctx}"
                );
                assert!(!pod.work.join("m").exists(), "{ctx}");
            }
            _ => {
                assert_eq!(stdout.trim(), "0", "{ctx}");
                assert!(pod.work.join("m").exists(), "{ctx}");
            }
        }
        match guarded {
            Some(action) => {
                assert_eq!(events.len(), 1, "{events:#?}\n{ctx}");
                assert_eq!(events[0]["action"], action, "{:#}", events[0]);
                assert_eq!(events[0]["mode"], mode.unwrap(), "{:#}", events[0]);
            }
            None => assert!(events.is_empty(), "not guarded: {events:#?}\n{ctx}"),
        }
    }
}
