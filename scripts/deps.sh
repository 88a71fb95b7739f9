#!/usr/bin/env bash
# Installs the system packages that execguard's demo and tests need (Debian 12). Idempotent.
# clang and libbpf-dev build the exec record (bpf/exec_record.bpf.c; build.rs goes on without them);
# bpftool reads its programs' run times for the benchmark.
set -euo pipefail
# The arm64 build and VM (scripts/cross.sh, scripts/vm.sh): Debian's Rust with arm64's standard
# library, clang and lld to link, arm64's libc and libseccomp, and qemu for arm64. (Not
# musl-dev:arm64: it pulls gcc-aarch64-linux-gnu, which removes gcc-multilib; cross.sh unpacks
# it instead.)
dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
cross=(rustc-web cargo-web libstd-rust-web-dev:arm64 lld libc6-dev:arm64 libgcc-12-dev:arm64
  libseccomp-dev:arm64 linux-libc-dev:arm64 qemu-system-arm file)
packages=(runc podman containerd docker.io protobuf-compiler libseccomp-dev pkg-config gcc gcc-multilib libc6-i386 musl-tools patchelf jq make python3 perl ca-certificates strace systemd systemd-container clang libbpf-dev linux-libc-dev bpftool qemu-system-x86 busybox-static cpio crun xz-utils zstd binutils debian-archive-keyring curl)
missing=()
for p in "${packages[@]}" "${cross[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "execguard: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi
# The Kubernetes manifests are checked against the API schemas (offline, bundled).
if ! command -v kubernetes-validate >/dev/null; then
  echo "execguard: installing kubernetes-validate (PyPI)" >&2
  python3 -m pip install -q kubernetes-validate >&2
fi
# The CI snippets: the GitHub workflow schema (vendored in check-jsonschema), YAML.
if ! command -v check-jsonschema >/dev/null; then
  echo "execguard: installing check-jsonschema (PyPI)" >&2
  python3 -m pip install -q check-jsonschema pyyaml >&2
fi
if ! command -v cargo >/dev/null; then
  echo "execguard: cargo is not on PATH; install a Rust toolchain (1.85 or newer) first" >&2
  exit 1
fi
# Older glibc loaders (Debian 11's 2.31, Ubuntu 18.04's 2.27) for the option-rule tests and the
# loader corpus.
./scripts/old-loaders.sh > /dev/null
