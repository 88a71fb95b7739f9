#!/usr/bin/env bash
# The VM harness: boots one of Debian's kernels under qemu (software emulation) with this
# machine's root shared read-only (9p) under an overlay with a tmpfs upper, cgroup v2 only, and
# runs a command there. The command's output goes to standard output; the exit status is the
# command's.
#
#   scripts/vm.sh run KERNEL [--timeout SECONDS] [--share DIR] -- COMMAND [ARG...]
#   scripts/vm.sh fetch KERNEL          fetch and unpack the kernel, build its initramfs
#   scripts/vm.sh root                  build the arm64 root (below)
#
# KERNEL: 6.1 (Debian 12), 6.12 (Debian 12's newer kernel), 5.10 (Debian 11), on x86_64; and
# arm64-6.1, Debian 12's arm64 kernel under qemu-system-aarch64 (virt, -cpu max). An arm64 VM
# cannot use this machine's root: its root is a directory of Debian's arm64 packages (libc,
# busybox, util-linux, runc, musl, with what they need), unpacked, and DIR (--share, default
# the current directory) is shared read-write-over-tmpfs at the same path, for the cross-built
# binaries and fixtures. Kernels and packages come from Debian's archive through a private apt
# configuration (its own sources, lists and cache under $EXECGUARD_VM_CACHE, default
# /var/cache/execguard/vm): the host's apt sources are not changed. Needs root,
# qemu-system-x86, qemu-system-arm, busybox-static (scripts/deps.sh installs them).
set -euo pipefail

cache=${EXECGUARD_VM_CACHE:-/var/cache/execguard/vm}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg

die() { echo "vm.sh: $*" >&2; exit 2; }

# Runs a command holding the cache's lock: VMs booted at once (test.sh runs the arm64 VM
# beside the x86 ones) fetch, unpack and update apt's lists one after the other.
locked() {
  mkdir -p "$cache"
  ( flock 9; "$@" ) 9> "$cache/lock"
}

apt_opts() {
  echo "-o Dir::Etc::SourceList=$cache/apt/sources.list -o Dir::Etc::SourceParts=/nonexistent" \
       "-o Dir::State::Lists=$cache/apt/lists -o Dir::Cache=$cache/apt/cache" \
       "-o Dir::Cache::Archives=$cache/apt/archives -o APT::Get::List-Cleanup=0 -o APT::Sandbox::User=root" \
       "-o APT::Architecture=amd64 -o APT::Architectures::=amd64 -o APT::Architectures::=arm64"
}

# The private apt configuration, updated at most once a day.
apt_update() {
  mkdir -p "$cache/apt/lists/partial" "$cache/apt/archives/partial" "$cache/apt/cache"
  cat > "$cache/apt/sources.list" <<EOF
deb [signed-by=$keyring] http://deb.debian.org/debian bookworm main
deb [signed-by=$keyring] http://deb.debian.org/debian-security bookworm-security main
deb [signed-by=$keyring] http://deb.debian.org/debian bullseye main
deb [signed-by=$keyring] http://deb.debian.org/debian-security bullseye-security main
EOF
  local stamp="$cache/apt/updated-amd64-arm64"
  if [ ! -e "$stamp" ] || [ -n "$(find "$stamp" -mmin +1440)" ]; then
    # shellcheck disable=SC2046
    apt-get $(apt_opts) update -qq >&2
    touch "$stamp"
  fi
}

# The newest kernel image package of a version line (5.10, 6.1, 6.12) for an architecture.
package_of() {
  local v=${1//./\\.} arch=$2
  # shellcheck disable=SC2046
  apt-cache $(apt_opts) search --names-only "^linux-image-${v}\.[0-9]+(-[0-9]+|\+deb[0-9.]+)-${arch}\$" \
    | awk '{print $1}' | sort -V | tail -1
}

# KERNEL's architecture (amd64, arm64) and version line.
arch_of() { case "$1" in arm64-*) echo arm64;; *) echo amd64;; esac; }
line_of() { echo "${1#arm64-}"; }

# Unpacks the kernel package and builds an initramfs with busybox and the modules the init
# needs (9p over virtio, overlay), in dependency order; prints the directory.
fetch() {
  local version=$1
  case "$version" in 5.10|6.1|6.12|arm64-6.1) ;; *) die "unknown kernel $version (5.10, 6.1, 6.12, arm64-6.1)";; esac
  local arch; arch=$(arch_of "$version")
  local link="$cache/linux-$version"
  # Built by this very script (its init is in the initramfs): a changed script rebuilds.
  local self; self=$(sha256sum "$0" | cut -d' ' -f1)
  if [ "$(cat "$link/ready" 2>/dev/null)" = "$self" ]; then echo "$link"; return; fi
  apt_update
  local pkg; pkg=$(package_of "$(line_of "$version")" "$arch")
  [ -n "$pkg" ] || die "no linux-image package for $version in Debian's archive"
  local dir="$cache/$pkg"
  rm -rf "$dir"; mkdir -p "$dir/pkg"
  echo "vm.sh: fetching $pkg" >&2
  # shellcheck disable=SC2046
  (cd "$dir" && apt-get $(apt_opts) download -qq "$pkg:$arch" >&2)
  dpkg-deb -x "$dir"/*.deb "$dir/pkg"
  local release; release=$(ls "$dir/pkg/lib/modules")
  cp "$dir/pkg/boot/vmlinuz-$release" "$dir/vmlinuz"
  local busybox=/bin/busybox
  if [ "$arch" = arm64 ]; then
    # The initramfs's busybox is the VM's own architecture's.
    # shellcheck disable=SC2046
    (cd "$dir" && apt-get $(apt_opts) download -qq busybox-static:arm64 >&2)
    mkdir -p "$dir/bb" && dpkg-deb -x "$dir"/busybox-static_*.deb "$dir/bb"
    busybox="$dir/bb/bin/busybox"
  fi
  build_initramfs "$dir" "$release" "$busybox"
  rm -rf "$dir/pkg" "$dir/bb" "$dir"/*.deb
  echo "$pkg" > "$dir/package"
  echo "$self" > "$dir/ready"
  ln -sfn "$dir" "$link"
  echo "$link"
}

# A module's file (.ko, .ko.xz or .ko.zst) by name, under the unpacked modules tree.
module_file() {
  find "$1" -name "$2.ko" -o -name "$2.ko.xz" -o -name "$2.ko.zst" | head -1
}

build_initramfs() {
  local dir=$1 release=$2 busybox=$3
  local mods="$dir/pkg/lib/modules/$release"
  local root="$dir/initramfs"
  rm -rf "$root"; mkdir -p "$root"/{bin,dev,proc,sys,mods,host,rw,newroot,share,rw2}
  cp "$busybox" "$root/bin/busybox"
  # The modules needed and not built in, each after what it depends on (.modinfo depends=).
  local order=() seen=" "
  add() {
    local name=${1//-/_}
    case "$seen" in *" $name "*) return;; esac
    seen="$seen$name "
    if grep -qE "/${name//_/[_-]}\.ko" "$mods/modules.builtin"; then return; fi
    local f; f=$(module_file "$mods" "$name")
    [ -n "$f" ] || f=$(module_file "$mods" "${name//_/-}")
    [ -n "$f" ] || die "module $name not found in $release"
    local ko="$root/mods/$name.ko"
    case "$f" in
      *.xz) xz -dc "$f" > "$ko";;
      *.zst) zstd -qdc "$f" > "$ko";;
      *) cp "$f" "$ko";;
    esac
    local deps
    # (elf64-little: the module may be of another architecture than this machine.)
    objcopy -I elf64-little -O binary --only-section=.modinfo "$ko" "$ko.info"
    deps=$(tr '\0' '\n' < "$ko.info" | sed -n 's/^depends=//p' | tr ',' ' ')
    rm "$ko.info"
    for d in $deps; do add "$d"; done
    order+=("$name")
  }
  for m in virtio_pci 9pnet_virtio 9p overlay; do add "$m"; done
  printf '%s\n' "${order[@]}" > "$root/mods/order"
  cat > "$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /mods/order); do insmod /mods/$m.ko || echo "init: insmod $m failed"; done
script=$(sed -n 's/.*eg\.script=\([^ ]*\).*/\1/p' /proc/cmdline)
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose host /host
mount -t tmpfs -o mode=755 tmpfs /rw
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work /newroot
# A shared directory (eg.share=PATH), at the same path, writable over a tmpfs of its own.
share=$(sed -n 's/.*eg\.share=\([^ ]*\).*/\1/p' /proc/cmdline)
if [ -n "$share" ]; then
  mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose share /share
  mount -t tmpfs -o mode=755 tmpfs /rw2
  mkdir -p /rw2/upper /rw2/work "/newroot$share"
  mount -t overlay overlay -o lowerdir=/share,upperdir=/rw2/upper,workdir=/rw2/work "/newroot$share"
fi
# The command's own directory (eg.work=PATH), when the root is not this machine's.
work=$(sed -n 's/.*eg\.work=\([^ ]*\).*/\1/p' /proc/cmdline)
if [ -n "$work" ]; then
  mkdir -p "/newroot$work"
  mount -t 9p -o trans=virtio,version=9p2000.L,ro work "/newroot$work"
fi
for d in proc sys dev; do mount --move /$d /newroot/$d; done
mount -t tmpfs tmpfs /newroot/run
# Container storage of its own (overlay cannot stack on the overlay root).
mkdir -p /newroot/var/lib/containers && mount -t tmpfs tmpfs /newroot/var/lib/containers
# The tests' temporary directories (TMPDIR): containerd's overlay snapshots need an upper
# directory that is not on an overlay (the root is one).
mkdir -p /newroot/var/tmp && mount -t tmpfs tmpfs /newroot/var/tmp
mount -t cgroup2 cgroup2 /newroot/sys/fs/cgroup
mount -t bpf bpf /newroot/sys/fs/bpf 2>/dev/null
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
mount -t tmpfs tmpfs /newroot/dev/shm
exec switch_root /newroot /bin/sh -c "cd /; if command -v bash > /dev/null; then bash $script; else sh $script; fi; echo EXECGUARD-VM-STATUS=\$?; echo o > /proc/sysrq-trigger; sleep 10"
EOF
  chmod 755 "$root/init"
  (cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$dir/initrd.img"
  rm -rf "$root"
}

# The packages of the arm64 root: shells and the tools the tests use (bash, coreutils, busybox
# for the rest, util-linux's mount and unshare, ldd), glibc and musl with their loaders, runc, and the
# libraries they need.
ARM64_PACKAGES=(libc6 libc-bin libgcc-s1 gcc-12-base bash coreutils busybox runc libseccomp2 musl mount util-linux
  libmount1 libblkid1 libselinux1 libpcre2-8-0 libsmartcols1 libudev1 libcap-ng0 libaudit1
  libcrypt1 libsystemd0 libtinfo6 libuuid1 libcap2 liblz4-1 libzstd1 liblzma5 libgcrypt20
  libgpg-error0 libpam0g libacl1 libattr1 libgmp10)

# Builds the arm64 root (once per version of this script); prints its directory.
root() {
  local dir="$cache/arm64-root"
  local self; self=$(sha256sum "$0" | cut -d' ' -f1)
  if [ "$(cat "$dir.ready" 2>/dev/null)" = "$self" ]; then echo "$dir"; return; fi
  apt_update
  local debs="$cache/arm64-debs"
  rm -rf "$dir" "$debs"; mkdir -p "$debs" "$dir"/usr/{bin,sbin,lib} "$dir"/{etc,root,tmp,proc,sys,dev,run,var/tmp}
  chmod 1777 "$dir/tmp"
  # Debian 12's merged /usr, which the packages' own paths (/lib, /bin) go through.
  for l in bin sbin lib; do ln -s "usr/$l" "$dir/$l"; done
  echo "vm.sh: fetching the arm64 root's packages" >&2
  # shellcheck disable=SC2046
  (cd "$debs" && apt-get $(apt_opts) download -qq "${ARM64_PACKAGES[@]/%/:arm64}" >&2)
  for deb in "$debs"/*.deb; do
    dpkg-deb --fsys-tarfile "$deb" | tar -x --keep-directory-symlink -C "$dir"
  done
  # busybox's applets where no package put a program.
  local applet
  # (Listed by this machine's busybox, of the same Debian release: the arm64 one cannot run here.)
  for applet in $(/bin/busybox --list-full); do
    [ -e "$dir/$applet" ] || [ -L "$dir/$applet" ] || ln -s /bin/busybox "$dir/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$dir/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$dir/etc/group"
  rm -rf "$debs"
  echo "$self" > "$dir.ready"
  echo "$dir"
}

run() {
  local version=$1; shift
  local timeout=1200 share=$PWD
  while [ $# -gt 0 ]; do
    case "$1" in
      --timeout) timeout=$2; shift 2;;
      --share) share=$2; shift 2;;
      --) shift; break;;
      *) die "unknown option $1";;
    esac
  done
  [ $# -gt 0 ] || die "no command (scripts/vm.sh run KERNEL -- COMMAND...)"
  local dir; dir=$(locked fetch "$version")
  local arch; arch=$(arch_of "$version")
  local rootdir=/
  [ "$arch" = arm64 ] && rootdir=$(locked root)
  # Not under /tmp: the VM mounts its own /tmp.
  mkdir -p "$cache/run"
  work=$(mktemp -d "$cache/run/XXXXXX")
  trap 'rm -rf "$work"' EXIT
  {
    echo "echo EXECGUARD-VM-BEGIN"
    echo "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root"
    printf 'cd %q\n' "$PWD"
    printf '%q ' "$@"; echo
  } > "$work/script.sh"
  echo "vm.sh: booting $(cat "$dir/package") (qemu, cgroup v2 only)" >&2
  local out="$work/console"
  local status=0
  local append="panic=-1 quiet loglevel=3 eg.script=$work/script.sh"
  local machine
  if [ "$arch" = arm64 ]; then
    # The arm64 root is not this machine's: the script's directory is shared too.
    append="console=ttyAMA0 $append eg.share=$share eg.work=$work"
    machine=(qemu-system-aarch64 -machine virt -cpu "${EXECGUARD_VM_CPU:-max,pauth-impdef=on}" -accel tcg,thread=multi -smp 2 -m 3072
      -virtfs "local,path=$share,mount_tag=share,security_model=none,readonly=on,multidevs=remap"
      -virtfs "local,path=$work,mount_tag=work,security_model=none,readonly=on,multidevs=remap")
  else
    # One host thread for both CPUs (thread=single). With one host thread per CPU, a 6.12
    # guest once died of an int3 Oops in kernel text (get_page_from_freelist), which is what
    # code that one CPU patches while another runs it looks like under multi-threaded TCG.
    append="console=ttyS0 $append"
    machine=(qemu-system-x86_64 -machine q35 -accel tcg,thread=single -cpu max -smp 2 -m 3072)
  fi
  timeout --foreground "$timeout" "${machine[@]}" \
    -nographic -no-reboot -serial stdio -monitor none \
    -kernel "$dir/vmlinuz" -initrd "$dir/initrd.img" -append "$append" \
    -virtfs "local,path=$rootdir,mount_tag=host,security_model=none,readonly=on,multidevs=remap" \
    | tee "$out" | awk '/EXECGUARD-VM-BEGIN/ { on = 1; next } /EXECGUARD-VM-STATUS/ { on = 0 } on' || status=$?
  [ "$status" -eq 0 ] || die "qemu ended with $status (timeout ${timeout}s?)"
  local code; code=$(sed -n 's/.*EXECGUARD-VM-STATUS=\([0-9]*\).*/\1/p' "$out" | tail -1)
  [ -n "$code" ] || { tail -n "${EXECGUARD_VM_CONSOLE_LINES:-30}" "$out" >&2; die "the VM ended without the command's status"; }
  return "$code"
}

case "${1:-}" in
  fetch) [ $# -eq 2 ] || die "usage: scripts/vm.sh fetch KERNEL"; locked fetch "$2";;
  run) shift; [ $# -ge 1 ] || die "usage: scripts/vm.sh run KERNEL -- COMMAND..."; run "$@";;
  root) locked root;;
  *) die "usage: scripts/vm.sh run KERNEL [--timeout S] [--share DIR] -- COMMAND... | fetch KERNEL | root";;
esac
