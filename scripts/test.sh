#!/usr/bin/env bash
# The project's test command (README, .ci/run): installs what the tests need, checks formatting
# and lints, then runs every test, the integration tests with real runc containers included.
# Needs root: the tests create containers.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  # Root is needed; a sudo user gets it here, a root shell (which may have no sudo) already has it.
  if command -v sudo >/dev/null; then
    exec sudo --preserve-env=PATH,CARGO_HOME,RUSTUP_HOME,FUZZ_SECONDS "$0" "$@"
  fi
  echo "execguard: the tests run real containers; run it as root" >&2
  exit 1
fi
# Each step's start, in seconds since this script started (the CI budget is 30 minutes).
step() { echo "== [${SECONDS} s] $*" >&2; }
step dependencies
./scripts/deps.sh
step formatting and lints
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
# Every parser of hostile bytes, fuzzed for a bounded time.
step fuzzing
FUZZ_SECONDS=${FUZZ_SECONDS:-10} ./scripts/fuzz.sh
# The benchmark's short version, to keep it working (its numbers are not judged here).
step the benchmark, quick
cargo bench --bench execguard -- --quick
# The Kubernetes manifests against the API schemas.
kubernetes-validate --strict deploy/kubernetes/execguard.yaml examples/kubernetes/runtimeclass.yaml
# Every relative link of the Markdown files resolves (file and heading).
python3 scripts/check-links.py
# The CI runner snippets (examples/ci/) against the schemas and parsers that install here.
python3 scripts/check-ci-examples.py
# The systemd unit's hardening: exposure 9.6 before, 4.3 now; a change that weakens it fails.
systemd-analyze security --offline=true --threshold=50 packaging/systemd/execguard.service > /dev/null \
  || { systemd-analyze security --offline=true packaging/systemd/execguard.service | tail -1; exit 1; }
# The Debian package installs and removes cleanly on this machine.
step the package
./scripts/package.sh
# The arm64 build: both binaries, the integration tests (run in the arm64 VM below) and the
# arm64 package, checked for architecture and contents.
step the arm64 build
./scripts/cross.sh > /dev/null
# The release build (the package's) has no fault-injection hooks: none of their variables or
# messages is in the binary (the test builds below have them, with the feature).
if grep -a -q -e EXECGUARD_FAULT_ -e "fault injection:" target/release/execguard; then
  echo "execguard: the release binary contains fault-injection hooks" >&2
  exit 1
fi
# Tests that skip when a component is missing fail instead: here everything is installed
# (fault injection included: the recovery tests need it; release builds have none).
# (The VM tests run on their own below: software emulation takes both CPUs.)
step the tests
EXECGUARD_TEST_STRICT=1 cargo test --all-targets --features fault-injection -- --skip vm::kernel_
# The same supervisor with only the capabilities its systemd unit keeps, less the exec
# record's two (optional: so these suites also run with every image looked at through /proc):
# every threat is still denied and logged (in runc and through `execguard run`), the message
# still written, a worker death still survived, a container still answered from its own CPU
# cgroup.
caps=$(sed -n 's/^CapabilityBoundingSet=//p' packaging/systemd/execguard.service \
  | tr ' ' '\n' | sed 's/^CAP_//' | tr 'A-Z' 'a-z' | grep -v -x -e bpf -e perfmon | paste -sd, -)
step the tests with reduced capabilities
EXECGUARD_TEST_STRICT=1 EXECGUARD_TEST_SUPERVISOR_CAPS=$caps \
  cargo test --features fault-injection --test integration -- threats:: message:: survival:: privilege:: allow:: scheduling::
# The kernels of real build nodes, each booted under qemu with cgroup v2 only
# (tests/integration/vm.rs, scripts/vm.sh): Debian 12's 6.1 (a larger sample, runc and crun),
# its 6.12 and Debian 11's 5.10 (a sample), one VM at a time; beside them, on the other CPU,
# Debian 12's arm64 kernel with the arm64 build of the tests.
step the VMs
it=$(cargo test --features fault-injection --test integration --no-run --message-format=json \
  | jq -r 'select(.reason == "compiler-artifact" and .target.name == "integration" and .executable != null) | .executable')
mkdir -p target/vm-logs
EXECGUARD_TEST_STRICT=1 "$it" --test-threads 1 vm::kernel_arm64 > target/vm-logs/arm64.log 2>&1 &
arm64=$!
x86=0
EXECGUARD_TEST_STRICT=1 "$it" --test-threads 1 vm::kernel_ --skip vm::kernel_arm64 || x86=$?
arm=0
wait "$arm64" || arm=$?
echo "== the arm64 VM (target/vm-logs/arm64.log)"
cat target/vm-logs/arm64.log
step done
[ "$x86" -eq 0 ] && [ "$arm" -eq 0 ]
