"""The reliability suite: faults, load, bad input and security, each test printing one figure.

Every test ends with `figure(...)`, called only after its assertions held, which prints one line

    RELIABILITY|test|what was done|what held|figure

on stdout (visible with `pytest -s`) and, when POOLWATCH_RELIABILITY_OUT names a file, appends
it there too; `scripts/reliability_report.py` turns those lines into RELIABILITY.md.

The default run is the short CI version (a few kill/restart cycles, seconds of load). With
POOLWATCH_RELIABILITY=full the same tests run at full size (20 cycles, a minute of load, 10 s
slowloris bound as configured, more fuzzing examples).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from tests.harness.libvirtd import Libvirtd
from tests.helpers import private_libvirtd

FULL = os.environ.get("POOLWATCH_RELIABILITY", "").lower() == "full"


def sized(short: int | float, full: int | float) -> int | float:
    """The short (CI) or the full figure of a test's size."""
    return full if FULL else short


def _clean(text: object) -> str:
    return str(text).replace("|", "/").replace("\n", " ").strip()


@pytest.fixture
def figure(request: pytest.FixtureRequest) -> Callable[[str, str, str], None]:
    """Record this test's figure line: what was done, what held, the figure itself."""

    def record(done: str, held: str, value: str) -> None:
        name = request.node.name
        line = f"RELIABILITY|{_clean(name)}|{_clean(done)}|{_clean(held)}|{_clean(value)}"
        print(f"\n{line}", flush=True)
        out = os.environ.get("POOLWATCH_RELIABILITY_OUT")
        if out:
            with open(out, "a", encoding="utf-8") as f:
                f.write(line + "\n")

    return record


@pytest.fixture
def own_libvirtd() -> Iterator[Libvirtd]:
    """A private libvirtd of this test's own, which it may kill, freeze and restart at will."""
    with private_libvirtd() as daemon:
        yield daemon
