#!/usr/bin/env bash
# Fetches older glibc loaders for the tests, whose loaders read their options by the rules
# before glibc 2.33 (tests/integration/old_loaders.rs, loader_corpus.rs):
# - Debian 11's libc6 (glibc 2.31), through apt with lists of its own (the machine's sources
#   are left alone), signed by Debian's archive keyring; for amd64 and for arm64 (where, before
#   glibc 2.34, the loader makes no call the image checkpoint traps: the arm64 VM's test);
# - Ubuntu 18.04's libc6 (glibc 2.27, before 2.30's --preload as well), standing in for
#   Debian 10's and RHEL 8's 2.28 (the same options; buster has left deb.debian.org, and
#   archive.debian.org, snapshot.debian.org and the RHEL clones' vaults are not reachable here).
#   Ubuntu's archive key is not packaged for Debian, so the file is checked against the hash
#   pinned below (the bionic release pocket never changes).
# Idempotent; prints the directory.
set -euo pipefail
dest=${EXECGUARD_OLD_LOADERS:-/var/cache/execguard/old-loaders}
if [ -x "$dest/glibc-2.31/ld-2.31.so" ] && [ -x "$dest/glibc-2.31-arm64/ld-2.31.so" ] \
   && [ -x "$dest/glibc-2.27/ld-2.27.so" ]; then
  echo "$dest"
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ ! -x "$dest/glibc-2.31/ld-2.31.so" ] || [ ! -x "$dest/glibc-2.31-arm64/ld-2.31.so" ]; then
  mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bullseye main" \
    > "$work/sources.list"
  opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o Debug::NoLocking=1
    -o APT::Sandbox::User=root -o APT::Architecture=amd64 -o APT::Architectures::=amd64
    -o APT::Architectures::=arm64)
  apt-get "${opts[@]}" -q update >&2
  version=$(apt-cache "${opts[@]}" show libc6:amd64 \
    | awk '/^Version: 2\.31/ {print $2; exit}')
  [ -n "$version" ] || { echo "execguard: no glibc 2.31 libc6 in Debian 11's lists" >&2; exit 1; }
  (cd "$work" && apt-get "${opts[@]}" -q download "libc6:amd64=$version" "libc6:arm64=$version" >&2)
  for arch in amd64 arm64; do
    dpkg-deb -x "$work"/libc6_*_$arch.deb "$work/x231-$arch"
  done
  mkdir -p "$dest/glibc-2.31" "$dest/glibc-2.31-arm64"
  cp "$work/x231-amd64/lib/x86_64-linux-gnu/ld-2.31.so" "$dest/glibc-2.31/"
  cp "$work/x231-arm64/lib/aarch64-linux-gnu/ld-2.31.so" "$dest/glibc-2.31-arm64/"
  chmod 755 "$dest/glibc-2.31/ld-2.31.so" "$dest/glibc-2.31-arm64/ld-2.31.so"
fi

if [ ! -x "$dest/glibc-2.27/ld-2.27.so" ]; then
  deb=libc6_2.27-3ubuntu1_amd64.deb
  sha256=1e1eb86fd646aa68f7144ec692b837b6b352d215880c6a2d0c92c19d36938427
  curl -fsS --retry 3 -o "$work/$deb" "http://archive.ubuntu.com/ubuntu/pool/main/g/glibc/$deb"
  echo "$sha256  $work/$deb" | sha256sum -c --quiet - \
    || { echo "execguard: $deb does not have the pinned hash" >&2; exit 1; }
  dpkg-deb -x "$work/$deb" "$work/x227"
  mkdir -p "$dest/glibc-2.27"
  cp "$work/x227/lib/x86_64-linux-gnu/ld-2.27.so" "$dest/glibc-2.27/"
  chmod 755 "$dest/glibc-2.27/ld-2.27.so"
fi
echo "$dest"
