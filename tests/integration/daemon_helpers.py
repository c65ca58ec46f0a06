"""What the daemon tests against the private libvirtd share: fast poll settings, their own pools,
putting libvirtd back as the next test expects it, and waiting until pools run on /metrics.

Every test defines its own pools (unique names, targets under its tmp_path; the `dir_pool` and
`fs_pool` fixtures in conftest.py) and undefines them on the way out, and leaves libvirtd running
and thawed whatever happens. Blocking calls (virsh, kill, freeze) run in threads: the in-process
daemon shares the test's event loop, and a blocked loop would distort every latency measured.
Starting libvirtd is the exception (see `ensure_serving`).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.harness.libvirtd import Libvirtd
from tests.helpers import eventually, sample, scrape

# Fast polls keep the tier quick; call_timeout 2 s arms keepalive at 1 s x 2 probes (3 s).
CALL_TIMEOUT = 2.0
POLL: dict[str, Any] = {
    "interval": 0.5,
    "volumes_interval": 1.0,
    "refresh_interval": 1.0,
    "call_timeout": CALL_TIMEOUT,
}
KEEPALIVE = max(1, int(CALL_TIMEOUT // 3)) * 3  # interval * (count + 1), as LibvirtSource arms it


@dataclass(frozen=True)
class Pool:
    name: str
    type: str
    target: Path
    source: str  # the loop device of an fs pool, "" for a dir pool


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def ensure_serving(libvirtd: Libvirtd) -> None:
    """Leave the session's libvirtd as the next test expects it: running and not frozen.

    Called on the main thread, like every start of libvirtd here: the harness arms
    PR_SET_PDEATHSIG only there, so a test process that dies cannot leak a libvirtd.
    """
    if libvirtd.running and libvirtd.frozen:
        libvirtd.thaw()
    if not libvirtd.running:
        libvirtd.start()


def remove_pool(libvirtd: Libvirtd, name: str) -> None:
    ensure_serving(libvirtd)
    libvirtd.virsh("pool-destroy", name, check=False)
    libvirtd.virsh("pool-undefine", name, check=False)


async def virsh(libvirtd: Libvirtd, *args: str) -> str:
    return await asyncio.to_thread(libvirtd.virsh, *args)


def value(text: str, name: str, **labels: str) -> float:
    """Like `sample`, but the series must exist."""
    found = sample(text, name, **labels)
    assert found is not None, f"{name}{labels} is absent"
    return found


async def wait_running(url: str, *pools: Pool, volumes: bool = True) -> str:
    """Scrape until every pool is running (and has been volume-scanned); return that page."""
    page = [""]

    async def check() -> bool:
        page[0] = text = await scrape(url)
        for pool in pools:
            if sample(text, "libvirt_storage_pool_state", storage_pool=pool.name) != 2:
                return False
            scanned = sample(text, "libvirt_storage_pool_volumes", storage_pool=pool.name)
            if volumes and scanned is None:
                return False
        return True

    await eventually(check, within=10)
    return page[0]
