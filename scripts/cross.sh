#!/usr/bin/env bash
# The arm64 build, from this x86_64 machine: `execguard` and `execguard-runtime` (release), the
# integration and unit tests (which tests/integration/vm.rs runs in the arm64 VM), and the
# arm64 Debian package, checked for its architecture and contents.
#
# Debian's own Rust (rustc-web 1.96 with libstd-rust-web-dev:arm64) compiles, clang and lld
# link (gcc-aarch64-linux-gnu cannot be installed beside gcc-multilib), against Debian's arm64
# libraries (libc6-dev, libseccomp-dev: scripts/deps.sh installs them). Everything goes to
# target/cross. Prints the test binary's path last (also in target/cross/arm64-tests).
set -euo pipefail
cd "$(dirname "$0")/.."
triple=aarch64-unknown-linux-gnu
export CARGO_TARGET_DIR=target/cross RUSTC=/usr/bin/rustc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=clang
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C link-arg=--target=aarch64-linux-gnu -C link-arg=-fuse-ld=lld"
export PKG_CONFIG_ALLOW_CROSS=1 PKG_CONFIG_PATH=/usr/lib/aarch64-linux-gnu/pkgconfig
cargo=/usr/bin/cargo
# musl for the fixture's arm64 musl program (tests/support), unpacked from Debian's packages:
# installing musl-dev:arm64 would remove gcc-multilib.
musl=$CARGO_TARGET_DIR/musl-arm64
if [ ! -e "$musl/ready" ]; then
  rm -rf "$musl"; mkdir -p "$musl/debs"
  (cd "$musl/debs" && apt-get download -qq musl-dev:arm64 musl:arm64 2>/dev/null)
  for deb in "$musl"/debs/*.deb; do dpkg-deb -x "$deb" "$musl"; done
  rm -rf "$musl/debs"; touch "$musl/ready"
fi
$cargo build --quiet --release --locked --target $triple --bins
# The tests as the host runs them (fault injection on), for the VM.
tests=$($cargo test --quiet --locked --target $triple --features fault-injection --test integration \
  --no-run --message-format=json \
  | jq -r 'select(.reason == "compiler-artifact" and .target.name == "integration" and .executable != null) | .executable')
[ -x "$tests" ] || { echo "cross.sh: no test binary built" >&2; exit 1; }
# The unit tests too (the VM runs them: the trap table, the worker's allowlist, ...).
units=$($cargo test --quiet --locked --target $triple --lib --no-run --message-format=json \
  | jq -r 'select(.reason == "compiler-artifact" and .target.kind == ["lib"] and .executable != null) | .executable')
[ -x "$units" ] || { echo "cross.sh: no unit test binary built" >&2; exit 1; }

fail() { echo "cross.sh: $*" >&2; exit 1; }
for b in execguard execguard-runtime; do
  file -b "$CARGO_TARGET_DIR/$triple/release/$b" | grep -q 'ARM aarch64' || fail "$b is not an arm64 program"
done
# The package: built from those binaries (cargo-deb maps target/release to the target's).
command -v cargo-deb >/dev/null || cargo install --locked cargo-deb
deb=$(cargo deb --quiet --no-build --target $triple 2>/dev/null | tail -n 1)
[ -f "$deb" ] || deb=$(ls -t "$CARGO_TARGET_DIR/$triple"/debian/execguard_*_arm64.deb | head -n 1)
[ "$(dpkg-deb -f "$deb" Architecture)" = arm64 ] || fail "$deb is not an arm64 package"
contents=$(dpkg-deb --contents "$deb" | awk '{print $6}')
for f in ./usr/bin/execguard ./usr/bin/execguard-runtime ./etc/execguard/config.toml \
         ./usr/share/execguard/hooks.d/execguard.json ./usr/lib/systemd/system/execguard.service; do
  grep -qx "$f" <<<"$contents" || fail "$deb lacks $f"
done
x=$(mktemp -d); trap 'rm -rf "$x"' EXIT
dpkg-deb -x "$deb" "$x"
file -b "$x/usr/bin/execguard" | grep -q 'ARM aarch64' || fail "$deb's execguard is not an arm64 program"
echo "cross.sh: $deb (arm64; binaries, config, hook, units)" >&2
echo "$tests" > "$CARGO_TARGET_DIR/arm64-tests"
echo "$units" > "$CARGO_TARGET_DIR/arm64-unit-tests"
echo "$tests"
