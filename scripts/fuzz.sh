#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time (default 20 s each; FUZZ_SECONDS to change).
# cargo-fuzz needs nightly features; RUSTC_BOOTSTRAP lets the stable toolchain provide them.
# Crashes land in fuzz/artifacts/TARGET/; fix them and add the input as a regression test.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${FUZZ_SECONDS:-20}
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
# The test command must leave a checkout as it found it: a stale fuzz/Cargo.lock is an error
# here, not something cargo fuzz quietly rewrites.
if ! cargo metadata --locked --format-version 1 > /dev/null 2>&1; then
  echo "fuzz/Cargo.lock is out of date: run 'cargo update --workspace' in fuzz/ and commit it" >&2
  exit 1
fi
export RUSTC_BOOTSTRAP=1
# Seeds, so that the fuzzers start from real inputs: system ELF files (a loader among them),
# the shipped config, a runc state message, loader argv and #! lines.
mkdir -p corpus/elf corpus/config corpus/state corpus/loader_args corpus/shebang
cp -n /bin/true /lib64/ld-linux-x86-64.so.2 /lib/x86_64-linux-gnu/libm.so.6 corpus/elf/ 2>/dev/null || true
[ -e /lib/ld-musl-x86_64.so.1 ] && cp -nL /lib/ld-musl-x86_64.so.1 corpus/elf/musl 2>/dev/null || true
cp -n ../config/execguard.toml corpus/config/ 2>/dev/null || true
printf '%s' '{"ociVersion":"1.0.2","fds":["seccompFd"],"pid":1,"metadata":"execguard/1","state":{"ociVersion":"1.0.2","id":"c","status":"creating","pid":1,"bundle":"/b","annotations":{"execguard.io/mode":"enforce"}}}' > corpus/state/runc
printf '\0ld.so\0--library-path\0/x\0--audit\0a.so\0/bin/true\0arg' > corpus/loader_args/glibc
printf '\4ld-musl\0--preload=/x.so\0--\0/p' > corpus/loader_args/musl
printf '#! /lib64/ld-linux-x86-64.so.2 /bin/touch\n' > corpus/shebang/loader
mkdir -p corpus/report
printf '%s\n' '{"event":"binary_executed_by_loader","importance":"critical","action":"denied","reason":"<b>|`x`","container":{"id":"c"},"exec":{"path":"/lib64/ld-linux-x86-64.so.2","argv":["ld.so","/tmp/p"]},"loader":{"path":"/lib64/ld-linux-x86-64.so.2","program":"/tmp/p"},"repeated":3}' 'not json' > corpus/report/events
targets=$(cargo fuzz list)
for t in $targets; do
  mkdir -p "corpus/$t"
  echo "== fuzzing $t for ${seconds}s"
  cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$seconds" -rss_limit_mb=4096 2>&1 \
    | grep -E "^(#[0-9]+ +DONE|Done|==|INFO: -max_total_time)|SUMMARY|panicked|ERROR" || true
  if [ -n "$(ls -A "artifacts/$t" 2>/dev/null)" ]; then
    echo "fuzz target $t found crashes: fuzz/artifacts/$t" >&2
    exit 1
  fi
done
echo "fuzzing: ${seconds}s per target, no crashes in: $(echo $targets)"
