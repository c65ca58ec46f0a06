"""Running the helper commands of the harness (losetup, virsh, nsenter, ...) and finding them.

Plain stdlib, like the rest of tests/harness, so benchmarks can use it without pytest.
"""

import os
import shutil
import subprocess

MiB = 1024 * 1024


class CommandError(subprocess.CalledProcessError):
    """A helper command failed; unlike its base class, the message carries stderr."""

    def __str__(self) -> str:
        err = self.stderr.strip() if isinstance(self.stderr, str) else self.stderr
        return f"{super().__str__()}\nstderr: {err}"


def run(argv: list[str], *, timeout: float = 30.0, check: bool = True) -> str:
    """Run argv with the C locale and return its stdout; raise `CommandError` on failure."""
    proc = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "LC_ALL": "C"},
        check=False,
    )
    if check and proc.returncode != 0:
        raise CommandError(proc.returncode, argv, proc.stdout, proc.stderr)
    return proc.stdout


def which(tool: str) -> str | None:
    # sbin is often not on a non-login PATH, and libvirtd/losetup/mkfs live there.
    return shutil.which(tool, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
