"""Building the .deb under test: the checkout's own (scripts/package.sh, as a developer does) and
a later version of it, rebuilt from a copy of the checkout whose version is bumped, to upgrade to.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

IGNORED = shutil.ignore_patterns(
    ".git", ".venv", "dist", "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"
)


VERSION_FILE = Path("daemon/poolwatch/__init__.py")
VERSION_LINE = re.compile(r'^__version__ = "(.+)"$', re.M)


def project_version(tree: Path) -> str:
    """The version the tree builds: `__version__` in daemon/poolwatch/__init__.py, the one place
    it is written (pyproject.toml and scripts/package.sh read it from there)."""
    found = VERSION_LINE.search((tree / VERSION_FILE).read_text())
    assert found is not None, f"{VERSION_FILE} in {tree} has no __version__ line"
    return found.group(1)


def deb_path(tree: Path, version: str) -> Path:
    arch = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return tree / "dist" / f"poolwatch_{version}_{arch}.deb"


def start_build(tree: Path, log: Path) -> subprocess.Popen[bytes]:
    """`bash scripts/package.sh` in `tree`, running in the background (about a minute and a
    half: pip compiles libvirt-python)."""
    with log.open("w") as out:
        return subprocess.Popen(
            ["bash", "scripts/package.sh"],
            cwd=tree,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def finish_build(build: subprocess.Popen[bytes], tree: Path, log: Path) -> Path:
    """Wait for a build; the .deb it made. Raises AssertionError with the log's tail if none."""
    code = build.wait(timeout=900)
    deb = deb_path(tree, project_version(tree))
    if code != 0 or not deb.exists():
        tail = "\n".join(log.read_text().splitlines()[-40:])
        raise AssertionError(f"scripts/package.sh in {tree} exited {code}:\n{tail}")
    return deb


def bumped_copy(source: Path, destination: Path, suffix: str = "+test1") -> str:
    """Copy the checkout to `destination` with its version raised in daemon/poolwatch/__init__.py
    and a new debian/changelog entry, as a maintainer releasing the next version would; the new
    version."""
    shutil.copytree(source, destination, ignore=IGNORED, symlinks=True)
    new = project_version(destination) + suffix
    version_file = destination / VERSION_FILE
    version_file.write_text(
        VERSION_LINE.sub(f'__version__ = "{new}"', version_file.read_text(), count=1)
    )
    changelog = destination / "debian/changelog"
    maintainer = re.search(r"^ -- (.+?>)", changelog.read_text(), re.M)
    assert maintainer is not None, "debian/changelog has no trailer line"
    date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())
    entry = (
        f"poolwatch ({new}) unstable; urgency=medium\n\n"
        "  * Test upgrade: the same tree with a higher version.\n\n"
        f" -- {maintainer.group(1)}  {date}\n\n"
    )
    changelog.write_text(entry + changelog.read_text())
    assert project_version(destination) == new
    return new
