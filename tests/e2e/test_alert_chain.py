"""The alert reaches a person: a pool filling up on a real libvirtd, through poolwatch, Prometheus
and Alertmanager, to a webhook receiver; and the all-clear when it has space again.

A private libvirtd (tests/harness) runs an ``fs`` pool on an ext4 loop device. poolwatch runs in
libvirtd's mount namespace, where the pool's filesystem is mounted, as it does on a host, so it
exports the filesystem's f_bavail too. A real Prometheus runs the shipped prometheus.yml and
poolwatch.rules.yml, a real Alertmanager the shipped alertmanager.yml, with the intervals,
``for`` and group timers shortened (tests/e2e/shipped_config.py); the receiver listens on
127.0.0.1 in this process. The pool fills and empties through libvirt: fully allocated volumes
created and deleted with virsh.

On the way, the inhibit rules of alertmanager.yml show: the critical alert mutes the pool's
warnings, and while libvirtd is down (killed, then started again) PoolwatchLibvirtDown mutes
every pool alert of the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.e2e.alertmanager_server import AlertmanagerServer, find_alertmanager
from tests.e2e.prometheus_server import PrometheusServer
from tests.e2e.shipped_config import alertmanager_config, fast_rules, prometheus_config
from tests.e2e.webhook_receiver import Notification, WebhookReceiver, firing, resolved
from tests.harness.commands import MiB
from tests.harness.libvirtd import Libvirtd, in_mount_namespace
from tests.helpers import (
    PoolwatchProcess,
    eventually,
    private_libvirtd,
    sample,
    scrape,
    serving,
)

HOST = "kvm-e2e"  # the connection's name: the host label of every series and alert
POOL = "guests"
WARNING = "PoolwatchPoolAlmostFull"  # free space below 10 % of the capacity
CRITICAL = "PoolwatchThresholdCritical"  # poolwatch's own threshold rule at its critical level
LIBVIRT_DOWN = "PoolwatchLibvirtDown"
CRITICAL_FREE = 2 * MiB  # that rule's limit, free space (what a guest can write) below it
# Generous: each stage takes a few poll, scrape, evaluation and group intervals (about 1 s each).
WITHIN = 60.0

POOLWATCH_CONFIG = """\
[[connection]]
name = "{host}"
uri = "{uri}"

[web]
listen = ["127.0.0.1:0"]

[poll]
interval = "500ms"
volumes_interval = "1s"
refresh_interval = "1s"
call_timeout = "5s"

[[threshold]]
pool = "{pool}"
critical = "< {critical_mib}MiB"
clear = "1MiB"
"""


class FsPool:
    """The running ``fs`` pool POOL on an ext4 loop device, filled with fully allocated volumes."""

    def __init__(self, libvirtd: Libvirtd, device: str, target: Path) -> None:
        self.libvirtd = libvirtd
        self.target = target
        self.volumes: list[str] = []
        target.mkdir()
        libvirtd.virsh_xml(
            "pool-define",
            f"""<pool type='fs'><name>{POOL}</name>
                  <source><device path='{device}'/><format type='ext4'/></source>
                  <target><path>{target}</path></target></pool>""",
        )
        libvirtd.virsh("pool-start", POOL)

    async def statfs(self) -> tuple[int, int]:
        """(size, avail) of the pool's filesystem in bytes: f_blocks and f_bavail, what a
        guest (not root) can write."""
        out = await asyncio.to_thread(
            self.libvirtd.nsenter, "stat", "-f", "-c", "%S %b %a", str(self.target)
        )
        block, size, avail = map(int, out.split())
        return size * block, avail * block

    async def fill_until_free_below(self, limit: float) -> None:
        """Fully allocated volumes until f_bavail < limit (libvirtd, as root, may go on
        writing into the blocks ext4 reserves for root: the last volume never fails)."""
        while (avail := (await self.statfs())[1]) >= limit:
            size_mib = int((avail - limit) // MiB) + 1
            name = f"fill-{len(self.volumes)}.img"
            await asyncio.to_thread(
                self.libvirtd.virsh,
                "vol-create-as",
                POOL,
                name,
                f"{size_mib}M",
                "--allocation",
                f"{size_mib}M",
            )
            self.volumes.append(name)

    async def empty(self) -> None:
        for name in self.volumes:
            await asyncio.to_thread(self.libvirtd.virsh, "vol-delete", name, "--pool", POOL)
        self.volumes.clear()


def of_the_pool(labels: dict[str, str]) -> bool:
    return labels.get("host") == HOST and labels.get("storage_pool") == POOL


def fires(alertname: str) -> Callable[[Notification], bool]:
    def check(notification: Notification) -> bool:
        labels = firing(notification).get(alertname)
        return labels is not None and of_the_pool(labels)

    return check


async def test_a_filling_pool_alerts_the_receiver_and_the_all_clear_follows(
    make_loop_fs: Callable[..., str], prometheus_binary: Path, tmp_path: Path
) -> None:
    alertmanager_binary = find_alertmanager()
    with private_libvirtd() as libvirtd:
        pool = FsPool(libvirtd, make_loop_fs(64 * MiB), tmp_path / POOL)
        capacity, avail = await pool.statfs()
        warning_free = 0.10 * capacity  # PoolwatchPoolAlmostFull's limit
        # Room to stop between the two limits: the first fill ends up to 2 MiB below the
        # warning's, and must stay a MiB above the critical limit.
        assert avail > warning_free > CRITICAL_FREE + 3 * MiB, (capacity, avail)

        receiver = WebhookReceiver()
        async with contextlib.AsyncExitStack() as stack:
            receiver_url = await stack.enter_async_context(serving(receiver.app()))
            alertmanager = AlertmanagerServer(
                alertmanager_binary, alertmanager_config(f"{receiver_url}/poolwatch")
            )
            stack.callback(alertmanager.stop)
            await alertmanager.start()
            poolwatch = await start_poolwatch(libvirtd, tmp_path)
            stack.callback(poolwatch.stop)
            prometheus = await start_prometheus(prometheus_binary, poolwatch, alertmanager)
            stack.callback(prometheus.stop)
            await prometheus.wait_for(
                f'libvirt_storage_pool_filesystem_avail_bytes{{storage_pool="{POOL}"}}',
                lambda r: len(r) == 1,
                within=WITHIN,
                what="Prometheus has the pool's filesystem",
            )

            # -- almost full: less than 10 % free, still above poolwatch's critical limit ----
            await pool.fill_until_free_below(warning_free - MiB)
            warning = await receiver.wait_for(
                fires(WARNING), within=WITHIN, what=f"with {WARNING} firing"
            )
            assert warning["groupLabels"] == {"host": HOST, "storage_pool": POOL}, warning
            assert firing(warning)[WARNING]["severity"] == "warning"
            assert CRITICAL not in firing(warning), warning
            level = sample(
                await scrape(poolwatch.url),
                "poolwatch_pool_threshold_level",
                host=HOST,
                storage_pool=POOL,
            )
            assert level == 0, "the pool passed the critical limit already: no warning stage"

            # -- critical: the critical alert arrives, and mutes the warning --------------------
            await pool.fill_until_free_below(CRITICAL_FREE - MiB)
            critical = await receiver.wait_for(
                lambda n: fires(CRITICAL)(n) and not fires(WARNING)(n),
                within=WITHIN,
                what=f"with {CRITICAL} firing and {WARNING} muted",
            )
            assert critical["groupLabels"] == {"host": HOST, "storage_pool": POOL}, critical
            assert firing(critical)[CRITICAL]["severity"] == "critical"
            # Muted by the inhibit rule, not resolved: Alertmanager still holds it, firing.
            await inhibited(alertmanager, WARNING, by=CRITICAL)

            # -- libvirt down: its alert arrives, and mutes every pool alert of the host ------
            await asyncio.to_thread(libvirtd.kill)  # the pool stays mounted, and full
            down = await receiver.wait_for(
                lambda n: firing(n).get(LIBVIRT_DOWN, {}).get("host") == HOST,
                within=WITHIN,
                what=f"with {LIBVIRT_DOWN} firing",
            )
            assert down["groupLabels"] == {"host": HOST}, down
            await inhibited(alertmanager, CRITICAL, by=LIBVIRT_DOWN)
            await inhibited(alertmanager, WARNING, by=CRITICAL)
            libvirtd.start()  # on this (the main) thread: see Libvirtd._pdeathsig
            await receiver.wait_for(
                lambda n: LIBVIRT_DOWN in resolved(n), within=WITHIN, what="libvirt is back"
            )

            # -- space again: the all-clear -------------------------------------------------
            await pool.empty()
            # Alerts resolve one by one (PoolwatchPoolFillingFast, which the fill also set
            # off, last: its 6 h fit takes a few samples to turn round). A warning that resolves
            # while still muted gets no notification of its own (Alertmanager drops it): the
            # all-clear is the pool group's notification whose status is "resolved", sent once
            # nothing of the pool fires.
            clear = await receiver.wait_for(
                lambda n: n["status"] == "resolved" and of_the_pool(n["groupLabels"]),
                within=WITHIN,
                what="clearing the pool",
            )
            assert not firing(clear), str(receiver)
            told_resolved = {name for n in receiver.notifications for name in resolved(n)}
            assert CRITICAL in told_resolved, str(receiver)
            about_the_pool = [n for n in receiver.notifications if of_the_pool(n["groupLabels"])]
            assert about_the_pool[-1] is clear, str(receiver)


async def inhibited(alertmanager: AlertmanagerServer, alertname: str, *, by: str) -> None:
    """Wait until Alertmanager holds the pool's (or host's) alert ``alertname`` as firing but
    muted by the inhibit rule whose source is the alert ``by``."""
    state: list[Any] = []

    async def muted() -> bool:
        alerts = await alertmanager.alerts()
        fingerprints = {a["labels"]["alertname"]: a["fingerprint"] for a in alerts}
        state[:] = [a["status"] for a in alerts if a["labels"]["alertname"] == alertname]
        return bool(state) and by in fingerprints and fingerprints[by] in state[0]["inhibitedBy"]

    try:
        await eventually(muted, within=WITHIN, interval=0.25)
    except AssertionError:
        raise AssertionError(f"{alertname} is not inhibited by {by}: {state}") from None
    assert state[0]["state"] == "suppressed", state


async def start_poolwatch(libvirtd: Libvirtd, tmp_path: Path) -> PoolwatchProcess:
    config = tmp_path / "poolwatch.toml"
    config.write_text(
        POOLWATCH_CONFIG.format(
            host=HOST, uri=libvirtd.uri, pool=POOL, critical_mib=CRITICAL_FREE // MiB
        )
    )
    # In libvirtd's mount namespace, where the pool's filesystem is mounted.
    process = PoolwatchProcess(
        "--config.file", str(config), prefix=in_mount_namespace(libvirtd.namespace_pid)
    )
    return await asyncio.to_thread(process.start)


async def start_prometheus(
    binary: Path, poolwatch: PoolwatchProcess, alertmanager: AlertmanagerServer
) -> PrometheusServer:
    targets = [{"targets": [urlsplit(poolwatch.url).netloc], "labels": {"datacenter": "e2e"}}]
    server = PrometheusServer(
        binary,
        prometheus_config(alertmanager.address),
        files={"poolwatch.rules.yml": fast_rules(), "targets/poolwatch.json": json.dumps(targets)},
    )
    try:
        return await server.start()
    except BaseException:
        server.stop()
        raise
