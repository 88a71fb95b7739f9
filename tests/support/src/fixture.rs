//! The fixture: the helpers of `tests/integration/helpers`, built once per test run for the
//! architecture the tests run on (on an x86_64 host also for arm64, which a VM test runs), an
//! empty container root, and runc's spec template.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

use crate::project_root;

/// An architecture the tests run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    /// The architecture this test binary was built for.
    pub const NATIVE: Arch = if cfg!(target_arch = "aarch64") {
        Arch::Aarch64
    } else {
        Arch::X86_64
    };

    /// The system's glibc loader.
    pub const fn loader(self) -> &'static str {
        match self {
            Arch::X86_64 => "/lib64/ld-linux-x86-64.so.2",
            Arch::Aarch64 => "/lib/ld-linux-aarch64.so.1",
        }
    }

    /// The musl loader.
    pub const fn musl_loader(self) -> &'static str {
        match self {
            Arch::X86_64 => "/lib/ld-musl-x86_64.so.1",
            Arch::Aarch64 => "/lib/ld-musl-aarch64.so.1",
        }
    }

    /// The system call ABI of a native program, as events name it.
    pub const fn abi(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// Debian's multiarch directory name (`/usr/lib/NAME`).
    pub const fn multiarch(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-linux-gnu",
            Arch::Aarch64 => "aarch64-linux-gnu",
        }
    }

    /// The C compiler for this architecture's glibc programs: gcc for this machine's own,
    /// clang and lld across (Debian's gcc cross compilers cannot be installed beside
    /// gcc-multilib).
    fn cc(self) -> Command {
        if self == Arch::NATIVE {
            return Command::new("gcc");
        }
        let mut c = Command::new("clang");
        c.arg(format!("--target={}", self.multiarch()))
            .arg("-fuse-ld=lld");
        c
    }

    /// The C compiler for musl programs: musl-gcc for this machine's own; across, clang with
    /// the musl of Debian's `musl-dev:ARCH` (headers, start files, libc) that scripts/cross.sh
    /// unpacks into `target/cross/musl-arm64`, linked against the musl loader.
    fn musl_cc(self, source: &Path, out: &Path) -> Command {
        if self == Arch::NATIVE {
            let mut c = Command::new("musl-gcc");
            c.arg("-o").arg(out).arg(source);
            return c;
        }
        let triple = match self {
            Arch::X86_64 => "x86_64-linux-musl",
            Arch::Aarch64 => "aarch64-linux-musl",
        };
        let sysroot = project_root().join("target/cross/musl-arm64");
        let lib = sysroot.join(format!("usr/lib/{triple}"));
        let resource = Command::new("clang")
            .arg("-print-resource-dir")
            .output()
            .expect("clang");
        let resource = String::from_utf8_lossy(&resource.stdout).trim().to_owned();
        let loader = self.musl_loader();
        let mut c = Command::new("clang");
        c.arg(format!("--target={triple}"))
            .args(["-fuse-ld=lld", "-nostdinc", "-nostdlib", "-fPIE", "-pie"])
            .arg(format!(
                "-isystem{}",
                sysroot.join(format!("usr/include/{triple}")).display()
            ))
            .arg(format!("-isystem{resource}/include"))
            .arg(lib.join("Scrt1.o"))
            .arg(lib.join("crti.o"))
            .arg(source)
            .arg(format!("-L{}", lib.display()))
            .arg("-lc")
            .arg(lib.join("crtn.o"))
            .arg(format!("-Wl,-dynamic-linker,{loader}"))
            .arg("-o")
            .arg(out);
        c
    }
}

/// The system loader of the architecture the tests run on.
pub const LOADER: &str = Arch::NATIVE.loader();
/// Its musl loader.
pub const MUSL_LOADER: &str = Arch::NATIVE.musl_loader();
/// The ABI of its native programs, as events name it.
pub const NATIVE_ABI: &str = Arch::NATIVE.abi();
/// Its multiarch directory name.
pub const MULTIARCH: &str = Arch::NATIVE.multiarch();

/// Everything built once per test run.
pub struct Fixture {
    pub dir: PathBuf,
    pub rootfs: PathBuf,
    /// Helpers, mounted at /opt/eg in containers.
    pub bin: PathBuf,
    pub spec_template: Value,
}

fn run_ok(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Removes the fixtures of test processes that have ended: a fixture lives in a static, which
/// is never dropped, so each run leaves its own behind until the next run takes it away. A
/// running process's fixture (a VM test's host, another test binary) is left alone.
fn remove_stale_fixtures() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("execguard-it-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The fixture of this test run, built at its first use (or the one `EXECGUARD_IT_FIXTURE`
/// names, in a VM).
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the integration tests run real containers and need root"
        );
        // In a VM (tests/integration/vm.rs): the host's fixture, shared read-only.
        if let Some(dir) = std::env::var_os("EXECGUARD_IT_FIXTURE").map(PathBuf::from) {
            let spec = std::fs::read(dir.join("spec-template/config.json"))
                .expect("EXECGUARD_IT_FIXTURE names a built fixture");
            return Fixture {
                rootfs: dir.join("rootfs"),
                bin: dir.join("bin"),
                spec_template: serde_json::from_slice(&spec).unwrap(),
                dir,
            };
        }
        remove_stale_fixtures();
        let dir = std::env::temp_dir().join(format!("execguard-it-{}", std::process::id()));
        build_fixture(&dir, Arch::NATIVE)
    })
}

/// Builds a fixture for `arch` in `dir` (replacing what is there).
pub fn build_fixture(dir: &Path, arch: Arch) -> Fixture {
    let _ = std::fs::remove_dir_all(dir);
    let rootfs = dir.join("rootfs");
    for d in ["usr", "etc", "tmp", "proc", "dev", "sys", "opt/eg", "work"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    for l in ["bin", "lib", "lib64", "lib32", "libx32", "sbin"] {
        std::os::unix::fs::symlink(format!("usr/{l}"), rootfs.join(l)).unwrap();
    }
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helpers = project_root().join("tests/integration/helpers");
    let exectool = helpers.join("exectool.c");
    let payload = helpers.join("payload.c");
    let x86 = arch == Arch::X86_64;
    // The helper NAME from SOURCE, with these flags.
    let cc = |flags: &[&str], name: &str, source: &Path| {
        run_ok(
            arch.cc()
                .args(flags)
                .arg("-o")
                .arg(bin.join(name))
                .arg(source),
        );
    };
    cc(&["-O1"], "exectool", &exectool);
    cc(&[], "payload", &payload);
    // The allow tests' legitimate tool: other bytes, and it writes "tool".
    cc(&["-O2", "-DWHO=\"tool\""], "vendor-tool", &payload);
    cc(&["-O1", "-pthread"], "racer", &helpers.join("racer.c"));
    cc(&["-O2"], "execstorm", &helpers.join("execstorm.c"));
    cc(&["-O1"], "slowruntime", &helpers.join("slowruntime.c"));
    cc(&["-O1"], "reexec", &helpers.join("reexec.c"));
    // A static program (no loader, no PT_INTERP).
    cc(&["-static"], "payload-static", &payload);
    if x86 {
        cc(&["-m32", "-O1"], "exectool32", &exectool);
        cc(&["-m32"], "payload32", &payload);
        silent_loader(&bin.join("ld-silent"));
    }
    // A program that needs no libc: any glibc loader can run it.
    let nolibc = ["-nostdlib", "-fPIE", "-pie", "-fno-stack-protector", "-O1"];
    cc(&nolibc, "payload-nolibc", &helpers.join("payload-nolibc.c"));
    // The same, static, as Go's programs are: no loader, no PT_INTERP, no thread-pointer call.
    cc(
        &[
            "-nostdlib",
            "-static",
            "-fno-pie",
            "-no-pie",
            "-fno-stack-protector",
            "-O1",
        ],
        "payload-go-style",
        &helpers.join("payload-nolibc.c"),
    );
    // An audit module that needs no libc either (loader_corpus.rs).
    cc(
        &[
            "-nostdlib",
            "-shared",
            "-fPIC",
            "-fno-stack-protector",
            "-O1",
        ],
        "audit-nolibc.so",
        &helpers.join("audit-nolibc.c"),
    );
    // The same as shared objects named like the query options of glibc 2.33 (their
    // SONAME), for a loader cache that maps those names to them (old_loaders.rs).
    for option in ["--help", "--version", "--list-tunables", "--argv0"] {
        let soname = format!("-Wl,-soname={option}");
        let mut flags = nolibc.to_vec();
        flags.push(&soname);
        cc(
            &flags,
            &format!("payload-soname{option}"),
            &helpers.join("payload-nolibc.c"),
        );
    }
    // Older glibc loaders that scripts/old-loaders.sh (run by deps.sh) fetched, if any.
    let old = std::env::var_os("EXECGUARD_OLD_LOADERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/execguard/old-loaders"));
    let versions: &[&str] = if x86 { &["2.31", "2.27"] } else { &["2.31"] };
    for version in versions {
        let dir = match arch {
            Arch::X86_64 => format!("glibc-{version}"),
            Arch::Aarch64 => format!("glibc-{version}-arm64"),
        };
        let ld = old.join(dir).join(format!("ld-{version}.so"));
        if ld.exists() {
            std::fs::copy(&ld, bin.join(format!("ld-{version}.so"))).unwrap();
        }
    }
    // An audit module, and a program that names it in its dynamic section (DT_AUDIT).
    cc(
        &["-shared", "-fPIC"],
        "audit-module.so",
        &helpers.join("audit-module.c"),
    );
    cc(&["-O1"], "steal", &helpers.join("steal.c"));
    cc(
        &["-shared", "-fPIC"],
        "preload.so",
        &helpers.join("preload.c"),
    );
    // (lld, the cross linker, has no --audit.)
    if x86 {
        cc(
            &["-Wl,--audit=/opt/eg/audit-module.so"],
            "audited",
            &payload,
        );
    }
    run_ok(&mut arch.musl_cc(&payload, &bin.join("payload-musl")));
    // A binary whose PT_INTERP is a loader copy the container makes at /tmp/myld.
    std::fs::copy(bin.join("payload"), bin.join("payload-interp")).unwrap();
    run_ok(
        Command::new("patchelf")
            .args(["--set-interpreter", "/tmp/myld"])
            .arg(bin.join("payload-interp")),
    );

    // The PT_INTERP race's payload: its interpreter is whatever /tmp/race/i is at the exec.
    cc(
        &["-O1"],
        "interp-payload",
        &helpers.join("interp-payload.c"),
    );
    run_ok(
        Command::new("patchelf")
            .args(["--set-interpreter", "/tmp/race/i"])
            .arg(bin.join("interp-payload")),
    );

    let spec_dir = dir.join("spec-template");
    std::fs::create_dir_all(&spec_dir).unwrap();
    run_ok(
        Command::new("runc")
            .arg("spec")
            .arg("--bundle")
            .arg(&spec_dir),
    );
    let spec_template: Value =
        serde_json::from_slice(&std::fs::read(spec_dir.join("config.json")).unwrap()).unwrap();
    Fixture {
        dir: dir.to_owned(),
        rootfs,
        bin,
        spec_template,
    }
}

/// A copy of the system loader patched to set its thread pointer with `wrfsbase` instead of
/// `arch_prctl(ARCH_SET_FS)` (each `mov $158, %eax` that leads to a `syscall` becomes
/// `wrfsbase %rsi`, with the thread pointer already in `%rsi`, and the `syscall` a zero result):
/// a loader that makes no trapped call, so no image checkpoint ever sees it (issue 24). Runs
/// on a CPU with FSGSBASE (Linux 5.9+).
fn silent_loader(to: &Path) {
    let mut bytes = std::fs::read("/lib64/ld-linux-x86-64.so.2").unwrap();
    let mov = [0xb8, 0x9e, 0, 0, 0];
    let mut patched = 0;
    let mut at = 0;
    while let Some(i) = bytes[at..]
        .windows(5)
        .position(|w| w == mov)
        .map(|i| at + i)
    {
        let near = i + 5..(i + 21).min(bytes.len());
        if let Some(j) = bytes[near.clone()]
            .windows(2)
            .position(|w| w == [0x0f, 0x05])
        {
            let j = near.start + j;
            bytes[i..i + 5].copy_from_slice(&[0xf3, 0x48, 0x0f, 0xae, 0xd6]);
            bytes[j..j + 2].copy_from_slice(&[0x31, 0xc0]);
            patched += 1;
        }
        at = i + 5;
    }
    assert!(patched > 0, "no arch_prctl call found in the system loader");
    std::fs::write(to, &bytes).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).unwrap();
}
