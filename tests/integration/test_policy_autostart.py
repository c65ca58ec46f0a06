"""Autostart against a private real libvirtd: enforce restarts a flagged pool, retries back off
and give up where told, and require_mount waits for the mount.

How the tests are built: see policy_helpers.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from pathlib import Path

from tests.harness.commands import run
from tests.harness.libvirtd import Libvirtd, in_mount_namespace
from tests.helpers import (
    PoolwatchProcess,
    base_url,
    captured_logs,
    eventually,
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
    policy_actions,
    policy_config,
    policy_toml,
    q,
    record_hook,
    unique,
    until,
    value,
    virsh,
)

# -- 1. autostart enforce ----------------------------------------------------------------------


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


# -- 2. backoff, recovery, give-up -------------------------------------------------------------


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


# -- 3. require_mount --------------------------------------------------------------------------


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
