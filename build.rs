//! Compiles the exec record's BPF programs (`bpf/exec_record.bpf.c`) with clang, when clang and
//! libbpf's headers are there (`scripts/deps.sh` installs them). Without them the build goes
//! on and the object is empty: that execguard looks through `/proc` at every image (docs/exec-record.md). `EXECGUARD_CLANG` names another clang.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let source = "bpf/exec_record.bpf.c";
    println!("cargo:rerun-if-changed={source}");
    println!("cargo:rerun-if-env-changed=EXECGUARD_CLANG");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let object = out.join("exec_record.bpf.o");
    let clang = std::env::var("EXECGUARD_CLANG").unwrap_or_else(|_| "clang".to_owned());
    let target_arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into());
    let arch = match target_arch.as_str() {
        "x86_64" => "x86",
        "aarch64" => "arm64",
        other => other,
    };
    // Debian keeps <asm/types.h> under the multiarch directory.
    let multiarch = format!("/usr/include/{target_arch}-linux-gnu");
    let status = Command::new(&clang)
        // v3: the atomic compare-and-exchange that locks a slot of the record (Linux 5.12+).
        .args([
            "-target", "bpf", "-mcpu=v3", "-O2", "-g", "-Wall", "-Werror",
        ])
        .arg(format!("-D__TARGET_ARCH_{arch}"))
        .arg(format!("-I{multiarch}"))
        .args(["-c", source, "-o"])
        .arg(&object)
        .status();
    match status {
        Ok(s) if s.success() => {}
        outcome => {
            let why = match outcome {
                Ok(s) => format!("{clang} failed ({s})"),
                Err(e) => format!("{clang} could not run ({e})"),
            };
            println!(
                "cargo:warning=the exec record is not built in: {why}; install clang and \
                 libbpf-dev (scripts/deps.sh) to have it"
            );
            std::fs::write(&object, b"").expect("writing an empty object to OUT_DIR");
        }
    }
}
