"""Hooks against a private real libvirtd: webhook retries with one idempotency key, a hanging hook
killed with its children, and a pool name of shell metacharacters that stays data.

How the tests are built: see policy_helpers.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import itertools
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.harness.libvirtd import Libvirtd
from tests.helpers import (
    REPO,
    base_url,
    eventually,
    running,
    sample,
    scrape,
    serving,
    until_metric,
)
from tests.integration.policy_helpers import (
    HOST,
    SETTLE,
    define_dir_pool,
    gone,
    hook_runs,
    libvirt_state,
    policy_config,
    q,
    record_hook,
    unique,
    value,
    virsh,
)

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


# -- 1. webhook retries ------------------------------------------------------------------------


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


# -- 2. a hook that hangs ----------------------------------------------------------------------


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


# -- 3. a hostile pool name --------------------------------------------------------------------


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
