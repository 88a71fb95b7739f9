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
hook=$(sed "s#/usr/bin/execguard#$prefix/bin/execguard#" packaging/hooks/execguard.json)
if [ -n "$dry" ]; then echo "would: write $share/hooks.d/execguard.json"; else printf '%s\n' "$hook" > "$share/hooks.d/execguard.json"; fi
dropin=$(sed "s#/usr/share/execguard/hooks.d#$prefix/share/execguard/hooks.d#" packaging/containers.conf.d/50-execguard.conf)
if [ -n "$dry" ]; then echo "would: write $dest/etc/containers/containers.conf.d/50-execguard.conf"; else printf '%s\n' "$dropin" > "$dest/etc/containers/containers.conf.d/50-execguard.conf"; fi
units=$dest/etc/systemd/system
for u in execguard.socket execguard.service; do
  text=$(sed "s#/usr/bin/execguard#$prefix/bin/execguard#" "packaging/systemd/$u")
  if [ -n "$dry" ]; then echo "would: write $units/$u"; else install -d "$units"; printf '%s\n' "$text" > "$units/$u"; fi
done
if [ -z "$dry" ] && [ -z "$dest" ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload && systemctl enable --now execguard.socket execguard.service
fi
echo "execguard installed under ${dest:-}$prefix${dry:+ (dry run: nothing changed)}"
