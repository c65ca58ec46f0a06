"""Space thresholds against a private real libvirtd: levels and the exec hooks they run once per
episode, and --dry-run, which decides (thresholds, autostart) but changes nothing.

How the tests are built: see policy_helpers.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.harness.commands import MiB
from tests.harness.libvirtd import Libvirtd
from tests.helpers import (
    PoolwatchProcess,
    base_url,
    captured_logs,
    running,
    sample,
    scrape,
    until_metric,
)
from tests.integration.policy_helpers import (
    HOST,
    SETTLE,
    define_dir_pool,
    hook_runs,
    libvirt_state,
    policy_config,
    policy_toml,
    pool_info,
    q,
    record_hook,
    unique,
    value,
    virsh,
)

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


# -- 2. --dry-run ------------------------------------------------------------------------------


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
    assert {(e["action"], e["result"]) for e in actions} == {
        ("start_pool", "dry_run"),
        ("hook:record", "dry_run"),
    }
    skipped = [e for e in actions if e["action"] == "hook:record"]
    assert [e["alarm"] for e in skipped] == ["warning"]
