"""A hook whose children try to outlive its timeout: a child in a session of its own (setsid), a
grandchild in yet another, and a double-forked daemon re-parented to init, in a real poolwatch.

The timeout kill used to reach the hook's process group only; setsid() leaves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from tests.helpers import percentile, unavailable
from tests.reliability.faults_common import Scraper, poolwatch

Figure = Callable[[str, str, str], None]

# Three escapes, each writing its pid; then the hook itself hangs past its timeout.
HOOK = """
setsid sleep 300 & echo "$!" >> "$1"
setsid sh -c 'setsid sleep 300 & echo "$!" >> "$0"; wait' "$1" &
(setsid sh -c 'sleep 300 & echo "$!" >> "$0"' "$1" &)
sleep 300
"""


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


async def test_hook_children_that_leave_its_group_are_killed(
    tmp_path: Path, figure: Figure
) -> None:
    if shutil.which("setsid") is None:
        unavailable("setsid is missing (Debian package util-linux)")
    host = tmp_path / "host.xml"
    host.write_text(
        f"<node><pool type='dir'><name>full</name><uuid>{uuid.uuid4()}</uuid>"
        "<target><path>/pools/full</path></target>"
        "<volume type='file'><name>big.img</name><capacity unit='GiB'>90</capacity>"
        "<allocation unit='GiB'>90</allocation></volume></pool></node>",
        encoding="utf-8",
    )
    pids = tmp_path / "pids"
    config = tmp_path / "poolwatch.toml"
    config.write_text(
        f'[[connection]]\nname = "test"\nuri = "test://{host}"\n[poll]\ninterval = "1s"\n'
        '[[threshold]]\npool = "*"\nwarning = "85%"\nfor = "0s"\nhooks = ["escape"]\n'
        f'[hooks.escape]\nexec = ["sh", "-c", {json.dumps(HOOK)}, "hook", "{pids}"]\n'
        'timeout = "1s"\n'
    )
    try:
        with poolwatch(config) as process:
            async with Scraper(process.url, pause=0.02).running() as scraper:
                deadline = time.monotonic() + 30
                while not process.events("policy_action"):
                    assert time.monotonic() < deadline, "the hook never finished"
                    await asyncio.sleep(0.05)
            [action] = process.events("policy_action")
        escaped = [int(pid) for pid in pids.read_text().split()]
        survivors = [pid for pid in escaped if _running(pid)]
    finally:
        for pid in pids.read_text().split() if pids.exists() else ():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
    assert len(escaped) == 3
    assert action["result"] == "timeout"
    assert action["killed"] is True
    assert survivors == []
    assert not scraper.failures, scraper.failures[:5]
    figure(
        "an exec hook (timeout 1 s) in a real poolwatch starting a child in a session of its own "
        "(setsid), a grandchild in another, and a double-forked daemon re-parented to init, then "
        "hanging",
        "the run ended as timeout and none of the three outlived it (the group kill alone "
        "missed all three); scrapes kept working",
        f"0 of {len(escaped)} escaped processes left; killed after {action['duration']:.2f} s; "
        f"/metrics p99 {percentile(scraper.latencies, 99) * 1000:.1f} ms over "
        f"{len(scraper.latencies)} scrapes",
    )
