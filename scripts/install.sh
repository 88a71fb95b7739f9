#!/usr/bin/env bash
# Installs execguard on a system without Debian packages (the .deb from `cargo deb` is the
# other way): binaries, the config (an existing one is kept), the podman hook in execguard's
# own hooks directory, the containers.conf drop-in, and the systemd units where systemd is.
#   scripts/install.sh [--dry-run] [--prefix /usr/local] [--destdir DIR]
# --dry-run prints what would be done and changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=/usr/local dest= dry=
while [ $# -gt 0 ]; do
  case $1 in
    --dry-run) dry=1 ;;
    --prefix) prefix=$2; shift ;;
    --destdir) dest=$2; shift ;;
    *) echo "usage: $0 [--dry-run] [--prefix DIR] [--destdir DIR]" >&2; exit 2 ;;
  esac
  shift
done
run() { if [ -n "$dry" ]; then echo "would: $*"; else "$@"; fi; }
[ -n "$dry" ] || cargo build --release --quiet
bin=$dest$prefix/bin share=$dest$prefix/share/execguard
run install -d "$bin" "$share/hooks.d" "$dest/etc/execguard" "$dest/etc/containers/containers.conf.d"
run install -m 755 target/release/execguard target/release/execguard-runtime "$bin/"
if [ -e "$dest/etc/execguard/config.toml" ]; then
  echo "keeping the existing $dest/etc/execguard/config.toml"
else
  run install -m 644 config/execguard.toml "$dest/etc/execguard/config.toml"
fi
# The podman hook and the containers.conf drop-in, as `execguard setup podman` writes them
# (podman's own hooks directories are kept).
target/release/execguard setup podman ${dry:+--dry-run} --root "${dest:-/}" \
  --execguard-path "$prefix/bin/execguard" --runtime-path "$prefix/bin/execguard-runtime" \
  --hooks-dir "$prefix/share/execguard/hooks.d"
units=$dest/etc/systemd/system
for u in execguard.socket execguard.service; do
  text=$(sed "s#/usr/bin/execguard#$prefix/bin/execguard#" "packaging/systemd/$u")
  if [ -n "$dry" ]; then echo "would: write $units/$u"; else install -d "$units"; printf '%s\n' "$text" > "$units/$u"; fi
done
if [ -z "$dry" ] && [ -z "$dest" ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload && systemctl enable --now execguard.socket execguard.service
fi
echo "execguard installed under ${dest:-}$prefix${dry:+ (dry run: nothing changed)}"
