"""Bad libvirt data: 300 pools, and volumes, with hostile names on libvirt's test driver (a host
XML under tmp_path). libvirt refuses only '/' in a pool name; everything else reaches poolwatch.

Hostile XML documents (billion laughs, external entities) are refused by poolwatch's parser:
tests/unit/test_poolxml_filesystem.py covers that.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from xml.sax.saxutils import escape

from tests.helpers import (
    base_url,
    config_for,
    eventually,
    fetch,
    running,
    scrape,
    series,
    unavailable,
)
from tests.reliability.faults_common import poolwatch

Figure = Callable[[str, str, str], None]
POOLS = 300

HOSTILE = [
    'quote"d',
    "single'quote",
    "back\\slash",
    "trailing\\",
    "new\nline",
    "tab\there",
    "<script>alert(1)<script>",
    "<img src=x onerror=alert(1)>",
    "amp&amp;entity",
    '{curly}="x",le="+Inf"',
    "# HELP fake",
    "ünïcødé-プール-🙂",
    "\u202eright-to-left",
    "zero\u200bwidth",
    " leading and trailing space ",
    "x" * 1000,
]


def _name(i: int) -> str:
    return f"{HOSTILE[i % len(HOSTILE)]}-{i}"


def _host_xml(path: Path) -> list[str]:
    names = [_name(i) for i in range(POOLS)]
    pools = []
    for i, name in enumerate(names):
        volumes = "".join(
            f"<volume type='file'><name>{escape(v)}</name>"
            f"<capacity unit='MiB'>{j + 1}</capacity><allocation unit='MiB'>1</allocation>"
            "</volume>"
            for j, v in enumerate([f"{HOSTILE[(i + 3) % len(HOSTILE)]}.img", f'v{i}\n"<>.qcow2'])
        )
        pools.append(
            f"<pool type='dir'><name>{escape(name)}</name><uuid>{uuid.uuid4()}</uuid>"
            f"<capacity unit='GiB'>10</capacity><allocation unit='GiB'>{i % 10}</allocation>"
            f"<available unit='GiB'>{10 - i % 10}</available>"
            f"<target><path>/pools/p{i}</path></target>{volumes}</pool>"
        )
    path.write_text("<node>" + "".join(pools) + "</node>", encoding="utf-8")
    return names


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        unavailable("promtool is missing (Debian package prometheus)")
    return found


async def test_hostile_pool_and_volume_names(tmp_path: Path, figure: Figure) -> None:
    promtool = _promtool()
    host = tmp_path / "host.xml"
    names = _host_xml(host)
    async with running(config_for(f"test://{host}", volumes_interval=1.0)) as daemon:
        url = base_url(daemon)

        async def all_scanned() -> bool:
            text = await scrape(url)
            exported = series(text, "libvirt_storage_pool_volumes")
            return len(exported) == POOLS

        await eventually(all_scanned, within=60, interval=0.2)
        text = await scrape(url)
        status, page = await fetch(url + "/")
        assert status == 200
        status_api, api = await fetch(url + "/api/v1/pools?volumes=1")
        assert status_api == 200

    exported = {labels["storage_pool"] for labels in series(text, "libvirt_storage_pool_state")}
    assert exported == set(names), "every name round-trips verbatim through the exposition"
    volumes = {labels["volume"] for labels in series(text, "libvirt_storage_volume_capacity_bytes")}
    assert any("\n" in v and '"' in v for v in volumes)
    result = await asyncio.to_thread(
        subprocess.run,
        [promtool, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "LC_ALL": "C"},
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[:2000]
    for evil in ("<script>alert(1)<script>", "<img src=x onerror=alert(1)>"):
        assert evil not in page, f"{evil!r} reached the landing page unescaped"
    assert "&lt;script&gt;" in page
    figure(
        f"{POOLS} pools + {2 * POOLS} volumes on the test driver named with quotes, backslashes, "
        "newlines, tabs, HTML, fake exposition syntax, unicode/RTL/zero-width, 1000 chars",
        "promtool check metrics exit 0; every name round-trips verbatim as a label; the landing "
        "page shows no unescaped HTML; /api/v1/pools answers",
        f"{len(text) // 1024} KiB of /metrics, {len(page) // 1024} KiB landing page, "
        f"{len(api) // 1024} KiB API, promtool exit {result.returncode}",
    )


async def test_hooks_receive_hostile_names_verbatim(tmp_path: Path, figure: Figure) -> None:
    """Each hostile name once, on a pool 90% full: the exec hook gets it byte for byte."""
    names = [f"{name}-h" for name in HOSTILE]
    host = tmp_path / "host.xml"
    host.write_text(
        "<node>"
        + "".join(
            f"<pool type='dir'><name>{escape(name)}</name><uuid>{uuid.uuid4()}</uuid>"
            f"<target><path>/pools/h{i}</path></target>"
            "<volume type='file'><name>big.img</name><capacity unit='GiB'>90</capacity>"
            "<allocation unit='GiB'>90</allocation></volume></pool>"
            for i, name in enumerate(names)
        )
        + "</node>",
        encoding="utf-8",
    )
    out = tmp_path / "names.jsonl"
    hook = tmp_path / "hook.py"
    hook.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        "with open(sys.argv[1], 'a', encoding='utf-8') as f:\n"
        "    f.write(json.dumps(os.environ['POOLWATCH_POOL']) + '\\n')\n"
    )
    hook.chmod(0o755)
    config = tmp_path / "poolwatch.toml"
    config.write_text(
        f'[[connection]]\nname = "test"\nuri = "test://{host}"\n[poll]\ninterval = "1s"\n'
        '[[threshold]]\npool = "*"\nwarning = "85%"\nfor = "0s"\nhooks = ["names"]\n'
        f'[hooks.names]\nexec = ["{hook}", "{out}"]\ntimeout = "10s"\n'
    )
    with poolwatch(config) as process:
        deadline = time.monotonic() + 30
        while len(_lines(out)) < len(names):
            assert time.monotonic() < deadline, f"{len(_lines(out))} of {len(names)} hook runs"
            assert process.proc is not None
            assert process.proc.poll() is None
            await asyncio.sleep(0.1)
    received = [json.loads(line) for line in _lines(out)]
    assert sorted(received) == sorted(names)
    figure(
        f"{len(names)} pools named with every hostile pattern (quotes, backslashes, newline, "
        "tab, HTML, unicode/RTL/zero-width, 1000 chars), each 90% full under a warning rule "
        "with an exec hook, in a real poolwatch",
        "every hook run got its pool's name byte for byte in POOLWATCH_POOL",
        f"{len(received)} of {len(names)} names received verbatim",
    )


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []
