#!/usr/bin/env bash
# Guards a podman build container with execguard's precreate hook (podman --hooks-dir), in
# enforce mode: the build (make driving gcc) and ldd work, running a program through the
# dynamic loader is refused, and the supervisor's events show both. Needs root; no image pull
# (the container's root shares the host's /usr).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
if [ "$(id -u)" != 0 ]; then
  echo "run as root: sudo $0" >&2
  exit 1
fi
"$top/scripts/deps.sh"
(cd "$top" && cargo build --release --quiet)
eg=$top/target/release/execguard

work=$(mktemp -d /tmp/execguard-podman.XXXXXX)
sup_pid=
trap '[ -n "$sup_pid" ] && kill "$sup_pid" 2>/dev/null; wait 2>/dev/null || true' EXIT

{
  echo "socket = \"$work/execguard.sock\""
  echo "report_log = \"$work/report.log\""
  cat "$here/execguard.toml"
} > "$work/config.toml"

# The hook, as the package ships it, pointed at this build and this config.
mkdir -p "$work/hooks.d"
jq --arg eg "$eg" --arg cfg "$work/config.toml" \
  '.hook.path = $eg | .hook.args = ["execguard", "hook", "--config", $cfg]' \
  "$top/hooks/execguard.json" > "$work/hooks.d/execguard.json"

# A build root: the host's /usr read-only, a source tree to build.
rootfs=$work/rootfs
mkdir -p "$rootfs"/{usr,etc,tmp,proc,dev,sys,src}
for l in bin lib lib64 lib32 libx32 sbin; do ln -s "usr/$l" "$rootfs/$l"; done
mkdir -p "$work/src"
printf '#include <stdio.h>\nint main(void) { puts("hello from the build"); return 0; }\n' > "$work/src/hello.c"
printf 'hello: hello.c\n\tgcc -O2 -o hello hello.c\n' > "$work/src/Makefile"

"$eg" supervise --config "$work/config.toml" --events "$work/events.jsonl" 2> "$work/supervisor.log" &
sup_pid=$!
for _ in $(seq 100); do [ -S "$work/execguard.sock" ] && break; sleep 0.05; done

build='set -e
cd /src
make
./hello
echo "ldd: $(ldd ./hello | grep -c "=>") libraries resolved"
if /lib64/ld-linux-x86-64.so.2 ./hello; then echo "loader execution ran (not guarded!)"; else echo "loader execution refused (exit $?)"; fi'

echo "== podman build container, guarded by the hook"
podman --runtime runc --cgroup-manager cgroupfs --hooks-dir "$work/hooks.d" \
  run --rm --network none --ulimit nofile=20000:20000 --ulimit nproc=4096:4096 \
  -v /usr:/usr:ro -v "$work/src:/src" --rootfs "$rootfs" /bin/sh -c "$build" | sed 's/^/   /'

echo "== events ($work/events.jsonl)"
jq -c '{event, importance, action, exec: .exec.argv}' "$work/events.jsonl"
