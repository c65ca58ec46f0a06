"""What the policy tests share: a config around the private libvirtd, a hook that records its
runs, dir pools, and waiting on metrics and on libvirt's view of a pool.

Every test defines its own uniquely named pools (targets under its tmp_path) and undefines them
on the way out. Hooks write what they saw to files under tmp_path; nothing listens beyond
127.0.0.1. Blocking calls (virsh) run in threads while an in-process daemon shares the loop.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import uuid
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from poolwatch.config import Config, parse_config
from tests.harness.libvirtd import Libvirtd
from tests.helpers import (
    eventually,
    sample,
    scrape,
)

POLL_TOML = """
[poll]
interval = "500ms"
volumes_interval = "1s"
refresh_interval = "1s"
call_timeout = "3s"
"""
# Several info polls (0.5 s) and refreshes (1 s): long enough for a repeat per poll to show.
SETTLE = 2.0
HOST = "test"  # the connection's name, so the host label of every series

# Appends the POOLWATCH_* environment it was given as one JSON line to the file in argv[1].
RECORD_HOOK = """#!{python} -I
import json, os, sys, time
entry = {{k: v for k, v in os.environ.items() if k.startswith("POOLWATCH_")}}
entry["_time"] = time.time()
entry["_cwd"] = os.getcwd()
entry["_others"] = sorted(k for k in os.environ if not k.startswith("POOLWATCH_"))
with open(sys.argv[1], "a", encoding="utf-8") as out:
    out.write(json.dumps(entry) + "\\n")
"""

# -- building blocks ---------------------------------------------------------------------------


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def q(value: object) -> str:
    """A TOML basic string (JSON's escapes are a subset of TOML's)."""
    return json.dumps(str(value))


def policy_toml(uri: str, rules: str) -> str:
    """A whole config file: the private libvirtd as connection "test", fast polls, a free
    loopback port, and the given rule and hook sections."""
    return (
        f'[[connection]]\nname = "{HOST}"\nuri = {q(uri)}\n\n'
        f'[web]\nlisten = ["127.0.0.1:0"]\n{POLL_TOML}\n{rules}'
    )


def policy_config(uri: str, rules: str) -> Config:
    return parse_config(policy_toml(uri, rules), source="test_policies")


def record_hook(tmp_path: Path, name: str = "record") -> tuple[str, Path]:
    """(the [hooks.NAME] table of a hook recording each run, the file it appends to)."""
    script = tmp_path / f"{name}.py"
    script.write_text(RECORD_HOOK.format(python=sys.executable))
    script.chmod(0o755)
    out = tmp_path / f"{name}.jsonl"
    return f'[hooks.{name}]\nexec = [{q(script)}, {q(out)}]\ntimeout = "10s"\n', out


def hook_runs(out: Path) -> list[dict[str, Any]]:
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text().splitlines()]


def dir_pool_xml(name: str, target: Path) -> str:
    quoted = escape(name, {'"': "&quot;", "'": "&apos;"})
    return f"<pool type='dir'><name>{quoted}</name><target><path>{target}</path></target></pool>"


def define_dir_pool(
    libvirtd: Libvirtd,
    pools: list[str],
    name: str,
    target: Path,
    *,
    start: bool = True,
    autostart: bool = False,
) -> None:
    libvirtd.virsh_xml("pool-define", dir_pool_xml(name, target))
    pools.append(name)
    if start:
        libvirtd.virsh("pool-start", name)
    if autostart:
        libvirtd.virsh("pool-autostart", name)


async def virsh(libvirtd: Libvirtd, *args: str) -> str:
    return await asyncio.to_thread(libvirtd.virsh, *args)


async def pool_info(libvirtd: Libvirtd, name: str) -> dict[str, str]:
    """`virsh pool-info --bytes` as a dict: State, Capacity, Allocation, Available, ..."""
    out = await virsh(libvirtd, "pool-info", name, "--bytes")
    return {
        k.strip(): v.strip()
        for k, v in (line.split(":", 1) for line in out.splitlines() if ":" in line)
    }


async def libvirt_state(libvirtd: Libvirtd, name: str) -> str:
    return (await pool_info(libvirtd, name))["State"]


def value(text: str, name: str, **labels: str) -> float:
    """Like `sample`, but the series must exist."""
    found = sample(text, name, **labels)
    assert found is not None, f"{name}{labels} is absent"
    return found


async def until(
    url: str, name: str, ok: Callable[[float | None], bool], *, within: float, **labels: str
) -> float:
    """Scrape until the series' value (None when absent) satisfies `ok`; return it."""
    last: list[float | None] = [None]

    async def check() -> bool:
        last[0] = sample(await scrape(url), name, **labels)
        return ok(last[0])

    try:
        await eventually(check, within=within)
    except AssertionError:
        raise AssertionError(f"{name}{labels} is {last[0]} after {within} s") from None
    return last[0] if last[0] is not None else math.nan


def policy_actions(
    logs: list[MutableMapping[str, Any]], pool: str
) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e.get("event") == "policy_action" and e.get("pool") == pool]


def gone(pid: int) -> bool:
    """No such process, or a zombie (PID 1 in this container does not reap orphans)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")
