"""The policies against a private real libvirtd: space thresholds and their hooks, autostart
enforcement with backoff and give-up, require_mount, --dry-run, webhooks, hook timeouts, and a
pool name made of shell metacharacters.

Every test defines its own uniquely named pools (targets under its tmp_path) and undefines them
on the way out. Hooks write what they saw to files under tmp_path; nothing listens beyond
127.0.0.1. Blocking calls (virsh) run in threads while an in-process daemon shares the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import itertools
import json
import math
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import pytest
from aiohttp import web

from poolwatch.config import Config, parse_config
from tests.harness.commands import MiB, run
from tests.harness.libvirtd import Libvirtd, in_mount_namespace
from tests.helpers import (
    REPO,
    PoolwatchProcess,
    base_url,
    captured_logs,
    eventually,
    running,
    sample,
    scrape,
    serving,
    until_metric,
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

# Leaves two children in its process group, one of them deaf to SIGTERM, writes the pids
# ("leader child deaf") to argv[1] and hangs.
HANGING_HOOK = """#!/bin/sh
sleep 300 &
child=$!
sh -c 'trap "" TERM; exec sleep 300' &
deaf=$!
echo "$$ $child $deaf" > "$1.tmp"
mv "$1.tmp" "$1"
exec sleep 300
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


@pytest.fixture
def pools(libvirtd: Libvirtd) -> Iterator[list[str]]:
    """Names appended here are destroyed and undefined after the test, whatever happened."""
    names: list[str] = []
    yield names
    for name in names:
        libvirtd.virsh("pool-destroy", name, check=False)
        libvirtd.virsh("pool-undefine", name, check=False)


@pytest.fixture
def half_full(libvirtd: Libvirtd) -> Iterator[Callable[[Path], None]]:
    """Mounts a 4 MiB tmpfs, half filled, on a directory in libvirtd's mount namespace.

    The threshold tests need a pool that is already past "1%": they must not count on whatever
    holds tmp_path being that full (a tmpfs /tmp is all but empty). Only libvirtd, which measures
    the pool, sees the mount; the unmount on the way out is lazy, as the pool may still be running.
    """
    mounted: list[Path] = []

    def mount(target: Path) -> None:
        target.mkdir(exist_ok=True)
        libvirtd.nsenter(
            "mount", "-n", "-t", "tmpfs", "-o", "size=4m", "poolwatch-full", str(target)
        )
        mounted.append(target)
        fill = target / "fill"
        libvirtd.nsenter("dd", "if=/dev/zero", f"of={fill}", "bs=1M", "count=2", "status=none")

    yield mount
    for target in mounted:
        libvirtd.nsenter("umount", "-n", "-l", str(target), check=False)


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


# -- 1. thresholds and exec hooks --------------------------------------------------------------


async def test_threshold_levels_run_exec_hooks_once_per_episode(
    libvirtd: Libvirtd, make_loop_fs: Callable[..., str], tmp_path: Path
) -> None:
    device = make_loop_fs(64 * MiB)
    name = unique("pw-thr")
    target = tmp_path / name
    target.mkdir()
    hook, out = record_hook(tmp_path)
    config = policy_config(
        libvirtd.uri,
        f"""
[[threshold]]
pool = {q(name)}
warning = "60%"
critical = "85%"
clear = "5%"
for = "0s"
hooks = ["record"]

{hook}""",
    )
    libvirtd.virsh_xml(
        "pool-define",
        f"""<pool type='fs'><name>{name}</name>
              <source><device path='{device}'/><format type='ext4'/></source>
              <target><path>{target}</path></target></pool>""",
    )
    labels = {"host": HOST, "storage_pool": name}
    volumes: list[str] = []
    # (when virsh returned, capacity, available) after each volume, as libvirt reports them
    steps: list[tuple[float, int, int]] = []

    async def fill_to(ratio: float) -> None:
        """Volumes with full allocation, 8 MiB at a time, until used/capacity >= ratio."""
        while True:
            info = await pool_info(libvirtd, name)
            capacity, available = int(info["Capacity"]), int(info["Available"])
            missing = ratio * capacity - (capacity - available)
            if missing <= 0:
                return
            size = min(8, math.ceil(missing / MiB))
            volume = f"fill-{len(volumes)}.img"
            await virsh(
                libvirtd, "vol-create-as", name, volume, f"{size}M", "--allocation", f"{size}M"
            )
            returned = time.time()
            volumes.append(volume)
            info = await pool_info(libvirtd, name)
            steps.append((returned, int(info["Capacity"]), int(info["Available"])))

    def matches_a_step(run: dict[str, Any]) -> tuple[float, int, int]:
        """The step whose figures the hook reported (to 3 digits of ratio, 256 KiB of space)."""
        reported = float(run["POOLWATCH_USED_RATIO"]), int(run["POOLWATCH_AVAILABLE_BYTES"])
        for step in steps:
            _, capacity, available = step
            used_ratio = (capacity - available) / capacity
            if (
                abs(used_ratio - reported[0]) <= 0.0015
                and abs(available - reported[1]) <= 256 * 1024
            ):
                return step
        raise AssertionError(f"hook saw {reported}, libvirt said {steps}")

    try:
        libvirtd.virsh("pool-start", name)
        with captured_logs() as logs:
            async with running(config) as daemon:
                url = base_url(daemon)
                await until_metric(url, "poolwatch_pool_threshold_level", 0, within=10, **labels)
                info = await pool_info(libvirtd, name)
                capacity = int(info["Capacity"])
                # ext4 keeps its journal and metadata out of f_blocks: less than the 64 MiB
                assert 32 * MiB < capacity < 64 * MiB

                # -- warning ------------------------------------------------------------------
                await fill_to(0.70)
                await until_metric(url, "poolwatch_pool_threshold_level", 1, within=5, **labels)
                await asyncio.sleep(SETTLE)
                runs = hook_runs(out)
                assert [r["POOLWATCH_LEVEL"] for r in runs] == ["warning"], runs
                warning = runs[0]
                assert warning["POOLWATCH_ACTION"] == "warning"
                assert warning["POOLWATCH_POOL"] == name
                assert warning["POOLWATCH_HOST"] == HOST
                assert warning["POOLWATCH_PREVIOUS_LEVEL"] == "ok"
                assert (
                    warning["POOLWATCH_POOL_UUID"]
                    == (await virsh(libvirtd, "pool-uuid", name)).strip()
                )
                episode = warning["POOLWATCH_EPISODE"]
                assert episode.startswith(f"{HOST}/{name}/")
                assert 0.60 <= float(warning["POOLWATCH_USED_RATIO"]) < 0.85
                warning_step = matches_a_step(warning)
                # libvirt's figures are statvfs of the mounted filesystem (in its namespace)
                blocks, free = map(
                    int,
                    (
                        await asyncio.to_thread(
                            libvirtd.nsenter, "stat", "-f", "-c", "%b %f", str(target)
                        )
                    ).split(),
                )
                assert abs((blocks - free) / blocks - float(warning["POOLWATCH_USED_RATIO"])) < (
                    0.003
                )
                # Only PATH, LANG (and the LC_CTYPE Python itself may add) besides POOLWATCH_*
                assert set(warning["_others"]) <= {"PATH", "LANG", "LC_CTYPE"}, warning["_others"]

                # -- critical -----------------------------------------------------------------
                await fill_to(0.90)
                await until_metric(url, "poolwatch_pool_threshold_level", 2, within=5, **labels)
                await asyncio.sleep(SETTLE)
                runs = hook_runs(out)
                assert [r["POOLWATCH_LEVEL"] for r in runs] == ["warning", "critical"], runs
                critical = runs[1]
                assert critical["POOLWATCH_ACTION"] == "critical"
                assert critical["POOLWATCH_PREVIOUS_LEVEL"] == "warning"
                assert critical["POOLWATCH_EPISODE"] == episode
                assert float(critical["POOLWATCH_USED_RATIO"]) >= 0.85
                critical_step = matches_a_step(critical)

                # -- recovery -----------------------------------------------------------------
                for volume in volumes:
                    await virsh(libvirtd, "vol-delete", volume, "--pool", name)
                emptied = time.time()
                await until_metric(url, "poolwatch_pool_threshold_level", 0, within=5, **labels)
                await asyncio.sleep(SETTLE)
                runs = hook_runs(out)
                assert [r["POOLWATCH_ACTION"] for r in runs] == [
                    "warning",
                    "critical",
                    "recovery",
                ], runs
                recovery = runs[2]
                assert recovery["POOLWATCH_LEVEL"] == "ok"
                assert recovery["POOLWATCH_PREVIOUS_LEVEL"] in ("warning", "critical")
                assert recovery["POOLWATCH_EPISODE"] == episode
                assert float(recovery["POOLWATCH_USED_RATIO"]) < 0.55
                text = await scrape(url)
                assert (
                    value(
                        text, "poolwatch_actions_total", action="hook:record", result="ok", **labels
                    )
                    == 3
                )

        changes = [
            e["timestamp"]
            for e in logs
            if e.get("event") == "threshold_level_changed" and e.get("pool") == name
        ]
        assert len(changes) >= 3, changes
    finally:
        libvirtd.virsh("pool-destroy", name, check=False)
        libvirtd.virsh("pool-undefine", name, check=False)

    by_level = {"warning": warning_step[0], "critical": critical_step[0], "recovery": emptied}
    latency = {r["POOLWATCH_ACTION"]: r["_time"] - by_level[r["POOLWATCH_ACTION"]] for r in runs}
    # From the log line of each level change to the hook's own clock reading.
    logged = [r["_time"] - max(t for t in changes if t <= r["_time"]) for r in runs]
    print(
        f"\ncapacity {capacity / MiB:.1f} MiB; hooks ran "
        + ", ".join(f"{action} {seconds:.3f} s" for action, seconds in latency.items())
        + " after the volume change returned; "
        + ", ".join(f"{seconds * 1000:.0f} ms" for seconds in logged)
        + " after the level change was logged"
    )


# -- 2. autostart enforce ----------------------------------------------------------------------


async def test_enforce_restarts_a_flagged_pool_but_not_an_unflagged_one(
    libvirtd: Libvirtd, pools: list[str], tmp_path: Path
) -> None:
    name = unique("pw-enf")
    target = tmp_path / name
    target.mkdir()
    define_dir_pool(libvirtd, pools, name, target, autostart=True)
    config = policy_config(
        libvirtd.uri,
        f'[[autostart]]\npool = {q(name)}\nmode = "enforce"\nbackoff = "1s"\nbackoff_max = "4s"\n',
    )
    labels = {"host": HOST, "storage_pool": name}
    async with running(config) as daemon:
        url = base_url(daemon)
        await until_metric(url, "libvirt_storage_pool_autostart", 1, within=10, **labels)
        await until_metric(url, "libvirt_storage_pool_state", 2, within=10, **labels)

        await virsh(libvirtd, "pool-destroy", name)
        destroyed = time.monotonic()

        async def running_again() -> bool:
            return await libvirt_state(libvirtd, name) == "running"

        await eventually(running_again, within=5)
        restarted = time.monotonic() - destroyed
        await until_metric(
            url, "poolwatch_autostart_attempts_total", 1, result="ok", within=10, **labels
        )
        await until_metric(url, "libvirt_storage_pool_state", 2, within=10, **labels)
        text = await scrape(url)
        assert (
            value(text, "poolwatch_actions_total", action="start_pool", result="ok", **labels) == 1
        )
        assert sample(text, "poolwatch_autostart_attempts_total", result="failed", **labels) is None
        assert value(text, "libvirt_storage_pool_events_total", event="stopped", **labels) == 1

        # The operator's way to keep a pool down: disable the flag, then destroy it, at once.
        await virsh(libvirtd, "pool-autostart", "--disable", name)
        await virsh(libvirtd, "pool-destroy", name)
        await until_metric(url, "libvirt_storage_pool_state", 0, within=5, **labels)
        await asyncio.sleep(3.0)  # three evaluation ticks and six info polls
        assert await libvirt_state(libvirtd, name) == "inactive"
        text = await scrape(url)
        assert value(text, "libvirt_storage_pool_state", **labels) == 0
        assert value(text, "libvirt_storage_pool_autostart", **labels) == 0
        assert value(text, "poolwatch_autostart_attempts_total", result="ok", **labels) == 1
        assert value(text, "libvirt_storage_pool_events_total", event="started", **labels) == 1
    print(f"\nenforce: running again {restarted:.3f} s after pool-destroy returned")


# -- 3. backoff, recovery, give-up -------------------------------------------------------------


async def test_autostart_retries_with_backoff_then_gives_up_where_told(
    libvirtd: Libvirtd, pools: list[str], tmp_path: Path
) -> None:
    retry, give_up = unique("pw-retry"), unique("pw-giveup")
    retry_dir, give_up_dir = tmp_path / retry, tmp_path / give_up  # not there yet
    define_dir_pool(libvirtd, pools, retry, retry_dir, start=False, autostart=True)
    define_dir_pool(libvirtd, pools, give_up, give_up_dir, start=False, autostart=True)
    hook, out = record_hook(tmp_path)
    config = policy_config(
        libvirtd.uri,
        f"""
[[autostart]]
pool = {q(retry)}
mode = "enforce"
backoff = "1s"
backoff_max = "4s"
max_attempts = 0

[[autostart]]
pool = {q(give_up)}
mode = "enforce"
backoff = "1s"
backoff_max = "4s"
max_attempts = 2
hooks = ["record"]

{hook}""",
    )
    retry_labels = {"host": HOST, "storage_pool": retry}
    give_up_labels = {"host": HOST, "storage_pool": give_up}
    # The delay before retry n is backoff * 2^(n-1), at most backoff_max, times a jitter in
    # [0.5, 1]; then the next evaluation (every poll, at most 1 s) and the call itself.
    slack = 0.8
    with captured_logs() as logs:
        async with running(config) as daemon:
            url = base_url(daemon)
            await until(
                url,
                "poolwatch_autostart_attempts_total",
                lambda v: v is not None and v >= 4,
                within=15,
                result="failed",
                **retry_labels,
            )
            await asyncio.to_thread(retry_dir.mkdir)
            made = time.time()

            async def started() -> bool:
                return await libvirt_state(libvirtd, retry) == "running"

            await eventually(started, within=4 + slack + 1)
            await until_metric(url, "libvirt_storage_pool_state", 2, within=10, **retry_labels)
            text = await scrape(url)
            failed = value(
                text, "poolwatch_autostart_attempts_total", result="failed", **retry_labels
            )
            assert (
                value(text, "poolwatch_autostart_attempts_total", result="ok", **retry_labels) == 1
            )
            assert value(text, "poolwatch_autostart_gave_up", **retry_labels) == 0
            # A failed start is a refused call, not a lost connection.
            assert value(text, "poolwatch_libvirt_disconnects_total", host=HOST) == 0
            assert value(text, "poolwatch_libvirt_connects_total", host=HOST) == 1

            # max_attempts = 2: two failures, then nothing, even once the directory is there.
            assert value(text, "poolwatch_autostart_gave_up", **give_up_labels) == 1
            await asyncio.to_thread(give_up_dir.mkdir)
            await asyncio.sleep(SETTLE + 1)
            text = await scrape(url)
            assert value(text, "poolwatch_autostart_gave_up", **give_up_labels) == 1
            assert (
                value(text, "poolwatch_autostart_attempts_total", result="failed", **give_up_labels)
                == 2
            )
            assert (
                sample(text, "poolwatch_autostart_attempts_total", result="ok", **give_up_labels)
                is None
            )
            assert value(text, "libvirt_storage_pool_state", **give_up_labels) == 0
            assert await libvirt_state(libvirtd, give_up) == "inactive"
            assert [(r["POOLWATCH_ACTION"], r["POOLWATCH_POOL"]) for r in hook_runs(out)] == [
                ("gave_up", give_up)
            ]

    attempts = [e for e in policy_actions(logs, retry) if e["action"] == "start_pool"]
    results = [e["result"] for e in attempts]
    assert results == ["failed"] * int(failed) + ["ok"], results
    assert (
        "No such file or directory" in attempts[0]["error"]
        or retry_dir.name in (attempts[0]["error"])
    ), attempts[0]
    stamps = [e["timestamp"] for e in attempts]
    intervals = [later - earlier for earlier, later in itertools.pairwise(stamps)]
    for n, interval in enumerate(intervals[: int(failed) - 1], start=1):
        ceiling = min(1.0 * 2 ** (n - 1), 4.0)
        assert ceiling / 2 - 0.01 <= interval <= ceiling + slack, (n, intervals)
    assert intervals[2] > intervals[0], intervals  # [2 s, 4 s] against [0.5 s, 1 s] + slack
    # The retry after mkdir waited at most backoff_max (uncapped, the 5th delay would be >= 4 s)
    assert stamps[-1] - made <= 4.0 + slack
    gave_up = [e for e in policy_actions(logs, give_up) if e["action"] == "start_pool"]
    assert [e["result"] for e in gave_up] == ["failed", "failed"]
    print(
        "\nretry intervals (failed start to failed start): "
        + ", ".join(f"{i:.2f}" for i in intervals[:-1])
        + f" s; started {stamps[-1] - made:.2f} s after mkdir "
        f"({intervals[-1]:.2f} s after the last failure)"
    )


# -- 4. require_mount --------------------------------------------------------------------------


async def test_require_mount_waits_for_the_mount(
    libvirtd: Libvirtd, pools: list[str], tmp_path: Path
) -> None:
    name = unique("pw-mnt")
    target = tmp_path / name
    target.mkdir()
    define_dir_pool(libvirtd, pools, name, target, start=False, autostart=True)
    hook, out = record_hook(tmp_path)
    config_file = tmp_path / "poolwatch.toml"
    config_file.write_text(
        policy_toml(
            libvirtd.uri,
            f"""
[[autostart]]
pool = {q(name)}
mode = "enforce"
require_mount = true
backoff = "1s"
backoff_max = "4s"
hooks = ["record"]

{hook}""",
        )
    )
    # A mount namespace of poolwatch's own: the tmpfs mounted into it below never touches the
    # host's, and vanishes with the process.
    process = PoolwatchProcess(
        "--config.file", str(config_file), prefix=["unshare", "-m", "--propagation", "private"]
    )
    await asyncio.to_thread(process.start)
    labels = {"host": HOST, "storage_pool": name}
    try:
        assert process.proc is not None
        pid = process.proc.pid
        assert os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
        url = process.url
        await until_metric(url, "poolwatch_pool_not_mounted", 1, within=10, **labels)
        await asyncio.sleep(SETTLE)
        assert await libvirt_state(libvirtd, name) == "inactive"
        text = await scrape(url)
        assert value(text, "libvirt_storage_pool_state", **labels) == 0
        assert value(text, "poolwatch_pool_not_mounted", **labels) == 1
        assert sample(text, "poolwatch_autostart_attempts_total", result="ok", **labels) is None
        assert sample(text, "poolwatch_autostart_attempts_total", result="failed", **labels) is None
        runs = hook_runs(out)
        assert [r["POOLWATCH_ACTION"] for r in runs] == ["not_mounted"], runs
        assert runs[0]["POOLWATCH_POOL"] == name
        alarms = process.events("autostart_alarm")
        assert [a["alarm"] for a in alarms] == ["not_mounted"]
        assert alarms[0]["target"] == str(target)

        await asyncio.to_thread(
            run,
            [
                *in_mount_namespace(pid),
                "mount",
                "-n",
                "-t",
                "tmpfs",
                "-o",
                "size=1m",
                "poolwatch-test",
                str(target),
            ],
        )
        mounted = time.monotonic()
        await until_metric(url, "poolwatch_pool_not_mounted", 0, within=5, **labels)

        async def started() -> bool:
            return await libvirt_state(libvirtd, name) == "running"

        await eventually(started, within=5)
        started_after = time.monotonic() - mounted
        await until_metric(url, "libvirt_storage_pool_state", 2, within=10, **labels)
        await asyncio.sleep(SETTLE)
        runs = hook_runs(out)
        assert [r["POOLWATCH_ACTION"] for r in runs] == ["not_mounted", "mounted"], runs
        text = await scrape(url)
        assert value(text, "poolwatch_autostart_attempts_total", result="ok", **labels) == 1
        # The mount lives in poolwatch's namespace only.
        assert not await asyncio.to_thread(os.path.ismount, target)
    finally:
        code = await asyncio.to_thread(process.stop)
    assert code == 0, process.logs[-5:]
    print(f"\nrequire_mount: pool running {started_after:.2f} s after the mount")


# -- 5. --dry-run ------------------------------------------------------------------------------


async def test_dry_run_decides_but_changes_nothing(
    libvirtd: Libvirtd, pools: list[str], half_full: Callable[[Path], None], tmp_path: Path
) -> None:
    name = unique("pw-dry")
    target = tmp_path / name
    half_full(target)
    define_dir_pool(libvirtd, pools, name, target, autostart=True)
    hook, out = record_hook(tmp_path)
    config_file = tmp_path / "poolwatch.toml"
    # The pool is half full: the warning level (1 %) is reached at once.
    config_file.write_text(
        policy_toml(
            libvirtd.uri,
            f"""
[[autostart]]
pool = {q(name)}
mode = "enforce"
backoff = "1s"
backoff_max = "2s"

[[threshold]]
pool = {q(name)}
warning = "1%"
clear = "0.5%"
hooks = ["record"]

{hook}""",
        )
    )
    process = PoolwatchProcess("--config.file", str(config_file), "--dry-run")
    await asyncio.to_thread(process.start)
    labels = {"host": HOST, "storage_pool": name}
    try:
        url = process.url
        await until_metric(url, "poolwatch_pool_threshold_level", 1, within=10, **labels)
        await until_metric(
            url,
            "poolwatch_actions_total",
            1,
            action="hook:record",
            result="dry_run",
            within=10,
            **labels,
        )
        await virsh(libvirtd, "pool-destroy", name)
        destroyed = time.monotonic()
        await until_metric(url, "libvirt_storage_pool_state", 0, within=5, **labels)
        await until_metric(
            url,
            "poolwatch_actions_total",
            1,
            action="start_pool",
            result="dry_run",
            within=10,
            **labels,
        )
        await asyncio.sleep(3.0)
        assert await libvirt_state(libvirtd, name) == "inactive"
        text = await scrape(url)
        elapsed = time.monotonic() - destroyed
        assert value(text, "libvirt_storage_pool_state", **labels) == 0
        assert sample(text, "libvirt_storage_pool_events_total", event="started", **labels) is None
        # Said again only once per backoff_max (2 s), not on every evaluation.
        repeats = value(
            text, "poolwatch_actions_total", action="start_pool", result="dry_run", **labels
        )
        assert 1 <= repeats <= elapsed / 2 + 1
        assert sample(text, "poolwatch_autostart_attempts_total", result="ok", **labels) is None
        assert sample(text, "poolwatch_autostart_attempts_total", result="failed", **labels) is None
        assert (
            value(text, "poolwatch_actions_total", action="hook:record", result="dry_run", **labels)
            == 1
        )
        assert value(text, "poolwatch_pool_threshold_level", **labels) == 1
    finally:
        code = await asyncio.to_thread(process.stop)
    assert code == 0, process.logs[-5:]
    assert not out.exists()
    actions = [e for e in process.events("policy_action") if e["pool"] == name]
    assert actions
    assert {(e["action"], e["result"]) for e in actions} == {("start_pool", "dry_run")}
    skipped = [e for e in process.events("hook_skipped_dry_run") if e["pool"] == name]
    assert [(e["hook"], e["action"]) for e in skipped] == [("record", "warning")]
    assert not process.events("hook_finished")


# -- 6. webhook retries ------------------------------------------------------------------------


async def test_webhook_retries_with_one_idempotency_key(
    libvirtd: Libvirtd, pools: list[str], half_full: Callable[[Path], None], tmp_path: Path
) -> None:
    received: list[tuple[float, dict[str, str], dict[str, Any]]] = []

    async def receive(request: web.Request) -> web.Response:
        received.append((time.monotonic(), dict(request.headers), await request.json()))
        return web.Response(status=503 if len(received) <= 2 else 200)

    app = web.Application()
    app.router.add_post("/alert", receive)
    async with serving(app) as receiver_url:
        name = unique("pw-web")
        target = tmp_path / name
        half_full(target)  # past "1%" at once
        define_dir_pool(libvirtd, pools, name, target)
        # No config key sets the webhook backoff: the default delays are 0.5-1 s, then 1-2 s.
        config = policy_config(
            libvirtd.uri,
            f"""
[[threshold]]
pool = {q(name)}
warning = "1%"
clear = "0.5%"
hooks = ["alert"]

[hooks.alert]
webhook = "{receiver_url}/alert"
timeout = "2s"
retries = 3
""",
        )
        labels = {"host": HOST, "storage_pool": name}
        async with running(config) as daemon:
            url = base_url(daemon)
            await until_metric(url, "poolwatch_pool_threshold_level", 1, within=10, **labels)
            await until_metric(
                url,
                "poolwatch_actions_total",
                1,
                action="hook:alert",
                result="ok",
                within=8,
                **labels,
            )
            await asyncio.sleep(SETTLE)
            text = await scrape(url)
            assert (
                sample(
                    text, "poolwatch_actions_total", action="hook:alert", result="failed", **labels
                )
                is None
            )

    assert len(received) == 3, received
    keys = {headers["Idempotency-Key"] for _, headers, _ in received}
    assert len(keys) == 1, keys
    body = received[0][2]
    assert all(b == {**body, "sent_at": b["sent_at"]} for _, _, b in received)
    assert body["pool"] == name
    assert body["host"] == HOST
    assert body["action"] == "warning"
    assert body["level"] == "warning"
    assert body["previous_level"] == "ok"
    assert body["episode"].startswith(f"{HOST}/{name}/")
    assert keys == {f"{body['episode']}:warning"}
    assert received[0][1]["Content-Type"] == "application/json"
    delays = [later[0] - earlier[0] for earlier, later in itertools.pairwise(received)]
    assert 0.5 - 0.05 <= delays[0] <= 1.0 + 0.3, delays
    assert 1.0 - 0.05 <= delays[1] <= 2.0 + 0.3, delays
    print(
        "\nwebhook: 503, 503, 200 with retry delays " + ", ".join(f"{d:.2f}" for d in delays) + " s"
    )


# -- 7. a hook that hangs ----------------------------------------------------------------------


async def test_hanging_hook_is_killed_with_its_children(
    libvirtd: Libvirtd, pools: list[str], half_full: Callable[[Path], None], tmp_path: Path
) -> None:
    script = tmp_path / "hang.sh"
    script.write_text(HANGING_HOOK)
    script.chmod(0o755)
    pids_file = tmp_path / "pids"
    name = unique("pw-hang")
    target = tmp_path / name
    half_full(target)  # past "1%" at once
    define_dir_pool(libvirtd, pools, name, target)
    config = policy_config(
        libvirtd.uri,
        f"""
[[threshold]]
pool = {q(name)}
warning = "1%"
clear = "0.5%"
hooks = ["hang"]

[hooks.hang]
exec = [{q(script)}, {q(pids_file)}]
timeout = "1s"
""",
    )
    labels = {"host": HOST, "storage_pool": name}
    pids: list[int] = []
    try:
        async with running(config) as daemon:
            url = base_url(daemon)

            async def hook_started() -> bool:
                return pids_file.exists()

            await eventually(hook_started, within=10)
            began = time.monotonic()
            pids.extend(int(p) for p in pids_file.read_text().split())
            assert len(pids) == 3
            assert not any(gone(pid) for pid in pids)
            # The timeout (1 s), SIGTERM, the 2 s grace for the deaf child, SIGKILL.
            await until_metric(
                url,
                "poolwatch_actions_total",
                1,
                action="hook:hang",
                result="timeout",
                within=6,
                **labels,
            )
            ended = time.monotonic() - began

            async def all_gone() -> bool:
                return all(gone(pid) for pid in pids)

            await eventually(all_gone, within=2)
            await asyncio.sleep(SETTLE)
            text = await scrape(url)
            assert (
                value(
                    text, "poolwatch_actions_total", action="hook:hang", result="timeout", **labels
                )
                == 1
            )
            assert (
                sample(text, "poolwatch_actions_total", action="hook:hang", result="ok", **labels)
                is None
            )
    finally:
        for pid in pids:  # only if the test failed: they are ours
            with contextlib.suppress(ProcessLookupError):
                if not gone(pid):
                    os.kill(pid, 9)
    print(f"\nhanging hook: timeout reported {ended:.2f} s after it started (1 s + 2 s grace)")


# -- 8. a hostile pool name --------------------------------------------------------------------


async def test_pool_name_with_shell_metacharacters_is_only_data(
    libvirtd: Libvirtd,
    pools: list[str],
    half_full: Callable[[Path], None],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # libvirt refuses "/" and newlines in pool names; everything else here it takes.
    name = f"pw'$(touch x);\"a b`touch y`|&<>*?[{uuid.uuid4().hex[:6]}]\\${{IFS}}!#~%"
    hook_cwd = tmp_path / "cwd"
    hook_cwd.mkdir()
    monkeypatch.chdir(hook_cwd)  # the in-process daemon's hooks start here
    target = tmp_path / "nasty"
    half_full(target)  # past "1%" at once
    define_dir_pool(libvirtd, pools, name, target, autostart=True)
    assert name in (await virsh(libvirtd, "pool-list", "--all", "--name")).splitlines()
    hook, out = record_hook(tmp_path)
    config = policy_config(
        libvirtd.uri,
        f"""
[[autostart]]
pool = {q(glob.escape(name))}
mode = "enforce"
backoff = "1s"
backoff_max = "4s"

[[threshold]]
pool = {q(glob.escape(name))}
warning = "1%"
clear = "0.5%"
hooks = ["record"]

{hook}""",
    )
    labels = {"host": HOST, "storage_pool": name}
    async with running(config) as daemon:
        url = base_url(daemon)
        await until_metric(url, "poolwatch_pool_threshold_level", 1, within=10, **labels)
        await until_metric(
            url,
            "poolwatch_actions_total",
            1,
            action="hook:record",
            result="ok",
            within=10,
            **labels,
        )
        # The name also travels through a libvirt call: the pool is started by name.
        await virsh(libvirtd, "pool-destroy", name)
        await until_metric(
            url, "poolwatch_autostart_attempts_total", 1, result="ok", within=10, **labels
        )
        assert await libvirt_state(libvirtd, name) == "running"
        await asyncio.sleep(1.0)

    runs = hook_runs(out)
    assert [r["POOLWATCH_POOL"] for r in runs] == [name]
    assert runs[0]["POOLWATCH_EPISODE"].startswith(f"{HOST}/{name}/")
    assert runs[0]["_cwd"] == str(hook_cwd)
    for directory in (hook_cwd, tmp_path, target, REPO, Path("/")):
        for planted in ("x", "y"):
            assert not (directory / planted).exists(), directory / planted
