"""A tiny real QEMU guest for integration tests: a Debian kernel and a busybox initramfs.

Built once into a cache directory and reused by every later session: the kernel package
(``linux-image-amd64``'s dependency) is fetched with ``apt-get download`` and unpacked with
``dpkg-deb -x``, never installed; the initramfs is ``busybox-static`` and the virtio modules
(loaded by busybox ``insmod``, in dependency order), packed with ``busybox cpio -o -H newc``.

The guest's ``/init`` writes ``pw_write_mib`` MiB (not zeros) to ``/dev/vda`` (kernel command line),
then prints :data:`DONE` on its serial console and powers off. QEMU's default disk error policy
(``werror=enospc``) pauses it when a write finds the disk's pool full.

Plain stdlib, as the other harness modules; needs apt-get, dpkg-deb, busybox and
qemu-system-x86_64 (scripts/bootstrap.sh --test installs them).
"""

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.harness.commands import run, which

CACHE = Path(os.environ.get("POOLWATCH_TEST_CACHE", "/var/cache/poolwatch-tests")) / "guest"
DONE = "POOLWATCH-GUEST-WRITE-DONE"
QEMU = "qemu-system-x86_64"

# In dependency order: busybox insmod resolves nothing itself.
MODULES = (
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_pci_legacy_dev.ko",
    "drivers/virtio/virtio_pci_modern_dev.ko",
    "drivers/virtio/virtio_pci.ko",
    "drivers/block/virtio_blk.ko",
)

# The guest's /init: modules, the disk, the write, the report, power off.
INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk; do
    insmod /modules/$m.ko 2>/dev/null
done
MIB=$(sed -n 's/.*pw_write_mib=\([0-9]*\).*/\1/p' /proc/cmdline)
n=0
while [ ! -b /dev/vda ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
[ -b /dev/vda ] || { echo "POOLWATCH-GUEST-NO-DISK"; poweroff -f; }
# Not zeros: a sparse file may take zeros without allocating (measured here: 40 MiB of zeros
# "fit" in 31 MiB), and the point is to fill the pool.
mkdir -p /tmp
yes poolwatch | head -c $((MIB * 1048576)) > /tmp/data
echo "POOLWATCH-GUEST-WRITING $MIB"
dd if=/tmp/data of=/dev/vda bs=1M conv=fsync 2>&1 || exit 1
sync
echo "POOLWATCH-GUEST-WRITE-DONE"
poweroff -f
"""


def guest_problem() -> str | None:
    """Why a guest cannot be built or run here, or None."""
    missing = [t for t in (QEMU, "busybox", "apt-get", "dpkg-deb") if not which(t)]
    if missing:
        return f"missing tools: {', '.join(missing)} (run scripts/bootstrap.sh --test)"
    return None


def build(cache: Path = CACHE) -> tuple[Path, Path]:
    """(kernel, initramfs) in ``cache``, built on the first call of any session."""
    kernel, initramfs = cache / "vmlinuz", cache / "initramfs.cpio"
    if kernel.exists() and initramfs.exists():
        return kernel, initramfs
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="build-", dir=cache))
    try:
        tree = _kernel_tree(work)
        root = work / "initramfs"
        for sub in ("bin", "proc", "sys", "dev", "modules", "tmp"):
            (root / sub).mkdir(parents=True)
        shutil.copy(which("busybox") or "busybox", root / "bin" / "busybox")
        (root / "init").write_text(INIT)
        (root / "init").chmod(0o755)
        modules = next((tree / "lib" / "modules").iterdir()) / "kernel"
        for module in MODULES:
            shutil.copy(modules / module, root / "modules" / Path(module).name)
        files = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
        packed = work / "initramfs.cpio"
        with packed.open("wb") as out:
            subprocess.run(
                [which("busybox") or "busybox", "cpio", "-o", "-H", "newc"],
                input="\n".join(files).encode(),
                stdout=out,
                stderr=subprocess.DEVNULL,
                cwd=root,
                check=True,
                timeout=60,
            )
        shutil.copy(next((tree / "boot").glob("vmlinuz-*")), work / "vmlinuz")
        # Renamed into place last, so a half-built cache is never taken for a built one.
        os.replace(packed, initramfs)
        os.replace(work / "vmlinuz", kernel)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return kernel, initramfs


def _kernel_tree(work: Path) -> Path:
    depends = run(["apt-cache", "depends", "linux-image-amd64"], timeout=60)
    found = re.search(r"Depends: (linux-image-\S+)", depends)
    if found is None:
        raise RuntimeError(f"no kernel package behind linux-image-amd64:\n{depends}")
    subprocess.run(
        ["apt-get", "download", found[1]], cwd=work, capture_output=True, timeout=600, check=True
    )
    deb = next(work.glob("linux-image-*.deb"))
    tree = work / "kernel"
    run(["dpkg-deb", "-x", str(deb), str(tree)], timeout=300)
    return tree


def domain_xml(
    *,
    name: str,
    kernel: Path,
    initramfs: Path,
    pool: str,
    volume: str,
    serial: Path,
    write_mib: int,
) -> str:
    """A TCG guest whose one disk is ``volume`` of ``pool``; its console goes to ``serial``."""
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initramfs}</initrd>
    <cmdline>console=ttyS0 quiet panic=-1 pw_write_mib={write_mib}</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>{which(QEMU)}</emulator>
    <disk type='volume' device='disk'>
      <driver name='qemu' type='raw' cache='none'/>
      <source pool='{pool}' volume='{volume}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='file'><source path='{serial}'/><target port='0'/></serial>
    <console type='file'><source path='{serial}'/><target type='serial' port='0'/></console>
    <memballoon model='none'/>
  </devices>
</domain>
"""


# The private libvirtd's QEMU driver: logs to files (no virtlogd), runs QEMU as root without a
# security driver, so it reads the cached kernel and writes the serial file where tests put them.
QEMU_CONF = """\
stdio_handler = "file"
user = "root"
group = "root"
dynamic_ownership = 0
security_driver = "none"
remember_owner = 0
"""
