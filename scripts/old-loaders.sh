#!/usr/bin/env bash
# Fetches an older glibc loader for the tests: Debian 11's libc6 (glibc 2.31), whose loader reads
# its options by the rules before glibc 2.33 (tests/integration/old_loaders.rs). Debian's
# packages only, through apt with lists of its own (the machine's sources are left alone).
# Debian 10's (glibc 2.28) is no longer on deb.debian.org. Idempotent; prints the directory.
set -euo pipefail
dest=${EXECGUARD_OLD_LOADERS:-/var/cache/execguard/old-loaders}
if [ -x "$dest/glibc-2.31/ld-2.31.so" ]; then
  echo "$dest"
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bullseye main" \
  > "$work/sources.list"
opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o Debug::NoLocking=1
  -o APT::Sandbox::User=root)
apt-get "${opts[@]}" -q update >&2
version=$(apt-cache "${opts[@]}" show libc6:amd64 \
  | awk '/^Version: 2\.31/ {print $2; exit}')
[ -n "$version" ] || { echo "execguard: no glibc 2.31 libc6 in Debian 11's lists" >&2; exit 1; }
(cd "$work" && apt-get "${opts[@]}" -q download "libc6:amd64=$version" >&2)
dpkg-deb -x "$work"/libc6_*.deb "$work/x"
mkdir -p "$dest/glibc-2.31"
cp "$work/x/lib/x86_64-linux-gnu/ld-2.31.so" "$dest/glibc-2.31/"
chmod 755 "$dest/glibc-2.31/ld-2.31.so"
echo "$dest"
