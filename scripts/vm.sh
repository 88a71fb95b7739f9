#!/usr/bin/env bash
# The VM harness: boots one of Debian's kernels under qemu (software emulation) with this
# machine's root shared read-only (9p) under an overlay with a tmpfs upper, cgroup v2 only, and
# runs a command there. The command's output goes to standard output; the exit status is the
# command's.
#
#   scripts/vm.sh run KERNEL [--timeout SECONDS] -- COMMAND [ARG...]
#   scripts/vm.sh fetch KERNEL          fetch and unpack the kernel, build its initramfs
#
# KERNEL: 6.1 (Debian 12), 6.12 (Debian 12's newer kernel), 5.10 (Debian 11). Kernels come
# from Debian's archive through a private apt configuration (its own sources, lists and
# cache under $EXECGUARD_VM_CACHE, default /var/cache/execguard/vm): the host's apt sources
# are not changed. Needs root, qemu-system-x86, busybox-static (scripts/deps.sh installs them).
set -euo pipefail

cache=${EXECGUARD_VM_CACHE:-/var/cache/execguard/vm}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg

die() { echo "vm.sh: $*" >&2; exit 2; }

apt_opts() {
  echo "-o Dir::Etc::SourceList=$cache/apt/sources.list -o Dir::Etc::SourceParts=/nonexistent" \
       "-o Dir::State::Lists=$cache/apt/lists -o Dir::Cache=$cache/apt/cache" \
       "-o Dir::Cache::Archives=$cache/apt/archives -o APT::Get::List-Cleanup=0 -o APT::Sandbox::User=root"
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
  local stamp="$cache/apt/updated"
  if [ ! -e "$stamp" ] || [ -n "$(find "$stamp" -mmin +1440)" ]; then
    # shellcheck disable=SC2046
    apt-get $(apt_opts) update -qq >&2
    touch "$stamp"
  fi
}

# The newest kernel image package of a version line (5.10, 6.1, 6.12) for amd64.
package_of() {
  local v=${1//./\\.}
  # shellcheck disable=SC2046
  apt-cache $(apt_opts) search --names-only "^linux-image-${v}\.[0-9]+(-[0-9]+|\+deb[0-9.]+)-amd64\$" \
    | awk '{print $1}' | sort -V | tail -1
}

# Unpacks the kernel package and builds an initramfs with busybox and the modules the init
# needs (9p over virtio, overlay), in dependency order; prints the directory.
fetch() {
  local version=$1
  case "$version" in 5.10|6.1|6.12) ;; *) die "unknown kernel $version (5.10, 6.1, 6.12)";; esac
  local link="$cache/linux-$version"
  # Built by this very script (its init is in the initramfs): a changed script rebuilds.
  local self; self=$(sha256sum "$0" | cut -d' ' -f1)
  if [ "$(cat "$link/ready" 2>/dev/null)" = "$self" ]; then echo "$link"; return; fi
  apt_update
  local pkg; pkg=$(package_of "$version")
  [ -n "$pkg" ] || die "no linux-image package for $version in Debian's archive"
  local dir="$cache/$pkg"
  rm -rf "$dir"; mkdir -p "$dir/pkg"
  echo "vm.sh: fetching $pkg" >&2
  # shellcheck disable=SC2046
  (cd "$dir" && apt-get $(apt_opts) download -qq "$pkg" >&2)
  dpkg-deb -x "$dir"/*.deb "$dir/pkg"
  local release; release=$(ls "$dir/pkg/lib/modules")
  cp "$dir/pkg/boot/vmlinuz-$release" "$dir/vmlinuz"
  build_initramfs "$dir" "$release"
  rm -rf "$dir/pkg" "$dir"/*.deb
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
  local dir=$1 release=$2
  local mods="$dir/pkg/lib/modules/$release"
  local root="$dir/initramfs"
  rm -rf "$root"; mkdir -p "$root"/{bin,dev,proc,sys,mods,host,rw,newroot}
  cp /bin/busybox "$root/bin/busybox"
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
    deps=$(objcopy -O binary --only-section=.modinfo "$ko" /dev/stdout | tr '\0' '\n' \
      | sed -n 's/^depends=//p' | tr ',' ' ')
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
exec switch_root /newroot /bin/sh -c "cd /; bash $script; echo EXECGUARD-VM-STATUS=\$?; echo o > /proc/sysrq-trigger; sleep 10"
EOF
  chmod 755 "$root/init"
  (cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$dir/initrd.img"
  rm -rf "$root"
}

run() {
  local version=$1; shift
  local timeout=1200
  while [ $# -gt 0 ]; do
    case "$1" in
      --timeout) timeout=$2; shift 2;;
      --) shift; break;;
      *) die "unknown option $1";;
    esac
  done
  [ $# -gt 0 ] || die "no command (scripts/vm.sh run KERNEL -- COMMAND...)"
  local dir; dir=$(fetch "$version")
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
  # One host thread for both CPUs (thread=single). With one host thread per CPU, a 6.12 guest
  # once died of an int3 Oops in kernel text (get_page_from_freelist), which is what code that
  # one CPU patches while another runs it looks like under multi-threaded TCG.
  timeout --foreground "$timeout" qemu-system-x86_64 -machine q35 -accel tcg,thread=single -cpu max -smp 2 -m 3072 \
    -nographic -no-reboot -serial stdio -monitor none \
    -kernel "$dir/vmlinuz" -initrd "$dir/initrd.img" \
    -append "console=ttyS0 panic=-1 quiet loglevel=3 eg.script=$work/script.sh" \
    -virtfs "local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap" \
    | tee "$out" | awk '/EXECGUARD-VM-BEGIN/ { on = 1; next } /EXECGUARD-VM-STATUS/ { on = 0 } on' || status=$?
  [ "$status" -eq 0 ] || die "qemu ended with $status (timeout ${timeout}s?)"
  local code; code=$(sed -n 's/.*EXECGUARD-VM-STATUS=\([0-9]*\).*/\1/p' "$out" | tail -1)
  [ -n "$code" ] || die "the VM ended without the command's status"
  return "$code"
}

case "${1:-}" in
  fetch) [ $# -eq 2 ] || die "usage: scripts/vm.sh fetch KERNEL"; fetch "$2";;
  run) shift; [ $# -ge 1 ] || die "usage: scripts/vm.sh run KERNEL -- COMMAND..."; run "$@";;
  *) die "usage: scripts/vm.sh run KERNEL [--timeout S] -- COMMAND... | fetch KERNEL";;
esac
