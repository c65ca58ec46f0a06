"""Loop-device filesystems for tests and benchmarks: a sparse file, attached and formatted.

Needs root, `losetup` and `mkfs.<fstype>`; plain stdlib, so benchmarks can use it without pytest.
"""

import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType

from tests.harness.commands import MiB, run, which
from tests.harness.leftovers import LEFTOVERS


def loop_problem() -> str | None:
    """Why loop-device filesystems cannot be had here, or None."""
    if os.geteuid() != 0:
        return "loop devices need root"
    missing = [t for t in ("losetup", "mkfs.ext4") if not which(t)]
    if missing:
        return f"missing tools: {', '.join(missing)} (run scripts/bootstrap.sh --test)"
    if not os.path.exists("/dev/loop-control"):
        return "no /dev/loop-control: this kernel or container has no loop devices"
    return None


class LoopDevice:
    """A sparse file attached to a loop device and (unless fstype is None) formatted.

    `losetup -d` on a device that is still mounted (e.g. by a private libvirtd's fs pool) only
    marks it for auto-clear: the kernel frees it at the last unmount.
    """

    def __init__(self, size: int = 64 * MiB, fstype: str | None = "ext4") -> None:
        self.size = size
        self.fstype = fstype
        self._dir = Path(tempfile.mkdtemp(prefix="poolwatch-loop-"))
        self.backing_file = self._dir / "disk.img"
        self.path: str | None = None  # /dev/loopN while attached

    def attach(self) -> str:
        """Create the file, attach it and make the filesystem; return the device path."""
        with self.backing_file.open("wb") as f:
            f.truncate(self.size)
        LEFTOVERS.add(self)
        self.path = run(["losetup", "-f", "--show", str(self.backing_file)]).strip()
        if self.fstype:
            run([f"mkfs.{self.fstype}", "-q", "-F", self.path], timeout=60)
        return self.path

    def close(self) -> None:
        """Detach the device and delete the file; safe to call more than once."""
        try:
            if self.path:
                run(["losetup", "-d", self.path])
                self.path = None
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)
            LEFTOVERS.discard(self)

    def __enter__(self) -> str:
        return self.attach()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
