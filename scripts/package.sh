#!/usr/bin/env bash
# Builds the Debian package and checks, on this machine, that it installs (binaries that run,
# config, hook, containers.conf drop-in, systemd units) and removes cleanly (purge leaves
# nothing). Needs root. Leaves the system as it found it.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || cargo install --locked cargo-deb
deb=$(cargo deb --quiet 2>/dev/null | tail -n 1)
[ -f "$deb" ] || deb=$(ls -t target/debian/execguard_*.deb | head -n 1)
echo "== built $deb"
dpkg-deb --contents "$deb" | awk '{print $6}'
fail() { echo "package check failed: $*" >&2; exit 1; }
dpkg -i "$deb" >/dev/null
for f in /usr/bin/execguard /usr/bin/execguard-runtime /etc/execguard/config.toml \
         /usr/share/execguard/hooks.d/execguard.json /etc/containers/containers.conf.d/50-execguard.conf \
         /lib/systemd/system/execguard.service /lib/systemd/system/execguard.socket; do
  [ -e "$f" ] || fail "$f is not installed"
done
/usr/bin/execguard --version | grep execguard > /dev/null || fail "execguard does not run"
/usr/bin/execguard-runtime --version | grep execguard-runtime > /dev/null || fail "execguard-runtime does not run"
/usr/bin/execguard explain -- /bin/true > /dev/null || fail "explain does not work with the shipped config"
jq -e '.stages == ["precreate"] and .hook.path == "/usr/bin/execguard"' /usr/share/execguard/hooks.d/execguard.json >/dev/null \
  || fail "the hook JSON is wrong"
# A changed config survives an upgrade (reinstall) and a remove; purge takes it. The upgrade
# asks a running supervisor to re-execute itself in place (SIGUSR2), never to restart: seen
# through a systemctl that records its calls (systemd is not PID 1 here).
echo '# local change' >> /etc/execguard/config.toml
shim=$(mktemp -d)
trap 'rm -rf "$shim"' EXIT
printf '#!/bin/sh\necho "$*" >> %s/calls\n[ "$1" = is-active ] && exit 0\nexit 0\n' "$shim" > "$shim/systemctl"
chmod +x "$shim/systemctl"
PATH="$shim:$PATH" dpkg -i "$deb" >/dev/null
grep -qx 'kill --signal=SIGUSR2 --kill-whom=main execguard.service' "$shim/calls" \
  || fail "an upgrade did not ask the running supervisor to re-execute itself: $(cat "$shim/calls" 2>/dev/null)"
! grep -q 'restart\|stop' "$shim/calls" || fail "an upgrade restarted or stopped the supervisor: $(cat "$shim/calls")"
grep -q 'local change' /etc/execguard/config.toml || fail "an upgrade replaced the changed config"
dpkg -r execguard >/dev/null
[ ! -e /usr/bin/execguard ] || fail "remove left the binary"
[ -e /etc/execguard/config.toml ] || fail "remove took the config (a conffile)"
dpkg -P execguard >/dev/null
[ ! -e /etc/execguard/config.toml ] || fail "purge left the config"
[ ! -e /usr/share/execguard/hooks.d/execguard.json ] || fail "purge left the hook"
echo "package: installs, keeps a changed config on upgrade and remove, upgrades a running supervisor in place (SIGUSR2), purges cleanly"
