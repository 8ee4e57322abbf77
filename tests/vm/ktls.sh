#!/bin/sh
# Runs the kTLS tests in a virtual machine whose kernel has the `tls` module, for a machine
# whose own kernel lists no tls ULP (this project's CI machine and dev boxes): Debian's
# kernel package boots under qemu with this machine's root file system shared read-write
# over 9p, and the test binaries run there, chrooted into it.
#
#   tests/vm/ktls.sh                 # all of tests/tls.rs and the unit tests of src/tls/
#   tests/vm/ktls.sh 'cmd ...'       # any shell command, run in the checkout
#
# Needs root (9p passthrough, apt-get). Installs qemu-system-x86, linux-image-amd64 and
# busybox-static if missing. Uses KVM when it works, else TCG (slower, about a minute for the
# default tests). Not run by .ci/run: CI's kernel is this one.
set -eu
here=$(cd "$(dirname "$0")/../.." && pwd)
cmd=${1:-}
need=""
command -v qemu-system-x86_64 >/dev/null || need="$need qemu-system-x86"
command -v busybox >/dev/null || need="$need busybox-static"
ls /boot/vmlinuz-* >/dev/null 2>&1 || need="$need linux-image-amd64"
if [ -n "$need" ]; then
  apt-get install -y --no-install-recommends $need >/dev/null
fi
kernel=$(ls /boot/vmlinuz-* | sort -V | tail -1)
kver=${kernel#/boot/vmlinuz-}
mods=/lib/modules/$kver/kernel
[ -f "$mods/net/tls/tls.ko" ] || { echo "ktls.sh: $kver has no tls module" >&2; exit 1; }

if [ -z "$cmd" ]; then
  (cd "$here" && cargo test --no-run --test tls --lib >/dev/null 2>&1)
  tls_bin=$(cd "$here" && cargo test --no-run --test tls 2>&1 | sed -n 's/.*(\(target[^)]*\)).*/\1/p' | tail -1)
  lib_bin=$(cd "$here" && cargo test --no-run --lib 2>&1 | sed -n 's/.*(\(target[^)]*\)).*/\1/p' | tail -1)
  cmd="./$tls_bin && ./$lib_bin tls::"
fi

# Not under /tmp: the machine gets a fresh tmpfs there.
mkdir -p "$here/target"
work=$(mktemp -d "$here/target/ktls-vm.XXXXXX")
trap '[ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
root=$work/initrd
mkdir -p "$root/bin" "$root/sbin" "$root/mods" "$root/proc" "$root/sys" "$root/dev" \
  "$root/mnt" "$root/lib/modules"
cp "$(command -v busybox)" "$root/bin/busybox"
# Enough to mount the host over 9p; everything else the kernel loads itself through
# /sbin/modprobe, with the host's /lib/modules bound in.
order="drivers/virtio/virtio drivers/virtio/virtio_ring drivers/virtio/virtio_pci_legacy_dev \
  drivers/virtio/virtio_pci_modern_dev drivers/virtio/virtio_pci fs/netfs/netfs \
  fs/fscache/fscache net/9p/9pnet net/9p/9pnet_virtio fs/9p/9p"
names=""
for m in $order; do
  if [ -f "$mods/$m.ko" ]; then cp "$mods/$m.ko" "$root/mods/"; names="$names $(basename "$m")"; fi
done
printf '%s\n' "cd '$here' && echo '=== kernel' \$(uname -r) ', ULPs:' \$(cat /proc/sys/net/ipv4/tcp_available_ulp) && $cmd" > "$work/cmd.sh"
cat > "$root/init" <<INIT
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $names; do insmod /mods/\$m.ko 2>/dev/null; done
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose host /mnt
mount --bind /mnt/lib/modules /lib/modules; ln -sf /bin/busybox /sbin/modprobe

mount -t proc proc /mnt/proc; mount -t sysfs sys /mnt/sys; mount -t devtmpfs dev /mnt/dev
mount -t tmpfs tmp /mnt/tmp; mkdir -p /mnt/dev/pts /mnt/dev/shm
mount -t devpts pts /mnt/dev/pts; mount -t tmpfs shm /mnt/dev/shm
ip link set lo up
chroot /mnt /bin/sh $work/cmd.sh
echo "=== exit \$?"
poweroff -f
INIT
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc 2>/dev/null | gzip) > "$work/initrd.gz"

run() {
  timeout "${VM_TIMEOUT:-1200}" qemu-system-x86_64 "$@" -m 4G -smp 2 -nographic -no-reboot \
    -kernel "$kernel" -initrd "$work/initrd.gz" -append "console=ttyS0 quiet panic=-1" \
    -virtfs local,path=/,mount_tag=host,security_model=passthrough,multidevs=remap \
    -nic none 2>&1 | tr -d '\r' | tee "$work/console"
}
# KVM first (nested KVM may hang at boot: give it a short while), then TCG.
if [ -e /dev/kvm ] && VM_TIMEOUT=60 run -enable-kvm -cpu host >/dev/null 2>&1 \
   && grep -q '^=== exit' "$work/console"; then
  sed -n '/=== kernel/,$p' "$work/console" | sed 's/^.*=== kernel/=== kernel/'
else
  run -accel tcg -cpu max >/dev/null
  sed -n '/=== kernel/,$p' "$work/console" | sed 's/^.*=== kernel/=== kernel/'
fi
grep -q '^=== exit 0' "$work/console"
