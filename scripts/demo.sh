#!/usr/bin/env bash
# Sets up execguard and runs its main job: the supervisor guarding a runc container whose build
# step runs a program through the dynamic loader, once in audit mode and once in enforce mode.
# Prints what happened inside each container and the events the supervisor wrote.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  # Root is needed; a sudo user gets it here, a root shell (which may have no sudo) already has it.
  if command -v sudo >/dev/null; then
    exec sudo --preserve-env=PATH,CARGO_HOME,RUSTUP_HOME,FUZZ_SECONDS "$0" "$@"
  fi
  echo "execguard: the demo runs a container; run it as root" >&2
  exit 1
fi
./scripts/deps.sh
echo "== building execguard"
cargo build --release --quiet
eg=$PWD/target/release/execguard

work=$(mktemp -d /tmp/execguard-demo.XXXXXX)
sup_pid=
cleanup() {
  [ -n "$sup_pid" ] && kill "$sup_pid" 2>/dev/null && wait "$sup_pid" 2>/dev/null
  for id in demo-audit demo-enforce; do runc --root "$work/runc" delete -f "$id" >/dev/null 2>&1 || true; done
}
trap cleanup EXIT

cat > "$work/config.toml" <<CONF
socket = "$work/execguard.sock"
mode = "audit"
CONF

# A read-only root that shares the host's /usr and /etc, with a writable /work.
rootfs=$work/rootfs
mkdir -p "$rootfs"/{usr,etc,tmp,proc,dev,sys,work} "$work/out"
for l in bin lib lib64 lib32 libx32 sbin; do ln -s "usr/$l" "$rootfs/$l"; done
runc spec --bundle "$work"
script='echo "ldd still works: $(ldd /bin/true | grep -c so) libraries";
/lib64/ld-linux-x86-64.so.2 /bin/touch /work/payload-ran 2>/dev/null && echo "the payload ran" || echo "the loader execution was refused: exit $?"'

echo "== starting the supervisor (events: $work/events.jsonl)"
"$eg" supervise --config "$work/config.toml" --events "$work/events.jsonl" 2> "$work/supervisor.log" &
sup_pid=$!
for _ in $(seq 100); do [ -S "$work/execguard.sock" ] && break; sleep 0.05; done

for mode in audit enforce; do
  rm -f "$work/out/payload-ran"
  jq --arg root "$rootfs" --arg out "$work/out" --arg script "$script" --arg mode "$mode" '
    .process.terminal = false | .process.args = ["/bin/sh", "-c", $script]
    | .root = {path: $root, readonly: true}
    | .annotations = {"execguard.io/mode": $mode}
    | .mounts += [
        {destination: "/usr", type: "bind", source: "/usr", options: ["rbind", "ro"]},
        {destination: "/etc", type: "bind", source: "/etc", options: ["rbind", "ro"]},
        {destination: "/work", type: "bind", source: $out, options: ["rbind", "rw"]},
        {destination: "/tmp", type: "tmpfs", source: "tmpfs", options: ["nosuid", "nodev"]}]
  ' "$work/config.json" > "$work/bundle.json"
  mkdir -p "$work/$mode" && mv "$work/bundle.json" "$work/$mode/config.json"
  echo "== container in $mode mode: $("$eg" inject --bundle "$work/$mode" --config "$work/config.toml")"
  runc --root "$work/runc" run --bundle "$work/$mode" "demo-$mode" < /dev/null | sed 's/^/   inside: /'
done

echo "== events"
jq -c '{time, event, importance, mode, action, container: .container.id, exec: .exec.argv, program: .loader.program}' "$work/events.jsonl"
echo "== full event (the enforce run)"
tail -n 1 "$work/events.jsonl" | jq .
