"""poolwatch against a private real libvirtd that is killed, restarted and frozen: /metrics
answers throughout, the outage shows, and events flow again once libvirtd is back.

Each test leaves libvirtd running and thawed whatever happens (`ensure_serving`).
"""

from __future__ import annotations

import asyncio
import signal
import time

from tests.harness.libvirtd import Libvirtd
from tests.helpers import base_url, config_for, fetch, running, sample, scrape, until_metric
from tests.integration.daemon_helpers import (
    CALL_TIMEOUT,
    KEEPALIVE,
    POLL,
    Pool,
    ensure_serving,
    value,
    virsh,
    wait_running,
)


async def test_reconnects_after_libvirtd_is_killed(
    libvirtd: Libvirtd, dir_pool: Pool, fs_pool: Pool
) -> None:
    host = {"host": "test"}
    async with running(config_for(libvirtd.uri, **POLL)) as daemon:
        url = base_url(daemon)
        await wait_running(url, dir_pool, fs_pool, volumes=False)
        text = await scrape(url)
        assert value(text, "poolwatch_libvirt_up", **host) == 1
        assert value(text, "poolwatch_libvirt_connects_total", **host) == 1
        assert value(text, "poolwatch_libvirt_disconnects_total", **host) == 0

        try:
            began = time.monotonic()
            await asyncio.to_thread(libvirtd.kill, signal.SIGKILL)
            killed = time.monotonic()
            down = await until_metric(url, "poolwatch_libvirt_up", 0, within=5, **host)
            libvirtd.restart()  # on the main thread (see ensure_serving); takes ~50 ms
            restarted = time.monotonic()
            up = await until_metric(url, "poolwatch_libvirt_up", 1, within=10, **host)
        finally:
            ensure_serving(libvirtd)

        text = await scrape(url)
        assert value(text, "poolwatch_libvirt_connects_total", **host) == 2
        assert value(text, "poolwatch_libvirt_disconnects_total", **host) == 1

        # Events flow on the new connection: a stop reaches /metrics without a restart of
        # poolwatch. (libvirtd found both pools active again at its start.)
        await wait_running(url, dir_pool, fs_pool, volumes=False)
        await virsh(libvirtd, "pool-destroy", dir_pool.name)
        destroyed = time.monotonic()
        seen = await until_metric(
            url, "libvirt_storage_pool_state", 0, within=5, storage_pool=dir_pool.name
        )
        text = await scrape(url)
        assert value(text, "libvirt_storage_pool_state", storage_pool=fs_pool.name) == 2
        assert value(text, "poolwatch_libvirt_connects_total", **host) == 2
        print(
            f"\nkill -9: {killed - began:.3f} s; up=0 after {down:.3f} s; "
            f"libvirtd restart {restarted - killed - down:.3f} s (its start: "
            f"{libvirtd.start_seconds:.3f} s); up=1 {up:.3f} s after the "
            f"restart; pool-destroy on /metrics {time.monotonic() - destroyed:.3f} s after "
            f"virsh returned (scraped for {seen:.3f} s)"
        )


async def test_frozen_libvirtd_never_hangs_metrics(libvirtd: Libvirtd, dir_pool: Pool) -> None:
    host = {"host": "test"}
    async with running(config_for(libvirtd.uri, **POLL)) as daemon:
        url = base_url(daemon)
        metrics = f"{url}/metrics"
        await wait_running(url, dir_pool)
        latencies: list[float] = []
        went_down: float | None = None
        bound = CALL_TIMEOUT + KEEPALIVE + 1  # the call times out, or keepalive gives up
        # Frozen past the keepalive timeout, so calls stuck in libvirtd are aborted before it
        # returns: with calls from several threads on one connection, libvirt < 10.3 clients
        # crashed right there (CVE-2024-4418; see poolwatch.adapter.turns.serialized).
        hold = CALL_TIMEOUT + KEEPALIVE + 0.5
        try:
            await asyncio.to_thread(libvirtd.freeze)
            frozen = time.monotonic()
            # At least 20 scrapes while frozen: each must answer at once.
            while went_down is None or len(latencies) < 20 or time.monotonic() - frozen < hold:
                assert went_down is not None or time.monotonic() - frozen < bound, (
                    f"poolwatch_libvirt_up still 1 after {time.monotonic() - frozen:.1f} s"
                )
                started = time.monotonic()
                status, text = await fetch(metrics, within=2.0)
                latencies.append(time.monotonic() - started)
                assert status == 200
                if went_down is None and sample(text, "poolwatch_libvirt_up", **host) == 0:
                    went_down = time.monotonic() - frozen
                await asyncio.sleep(0.1)
            assert libvirtd.frozen  # all of that happened while libvirtd was stopped
            assert went_down is not None
        finally:
            ensure_serving(libvirtd)
        thawed = time.monotonic()

        # Spec §10: after libvirtd returns, events flow again within 5 s, no restart needed.
        up = await until_metric(url, "poolwatch_libvirt_up", 1, within=5, **host)
        await wait_running(url, dir_pool, volumes=False)
        await virsh(libvirtd, "pool-destroy", dir_pool.name)
        destroyed = time.monotonic()
        await until_metric(
            url, "libvirt_storage_pool_state", 0, within=5, storage_pool=dir_pool.name
        )
        text = await scrape(url)
        assert value(text, "poolwatch_libvirt_disconnects_total", **host) == 1
        assert value(text, "poolwatch_libvirt_connects_total", **host) == 2
        print(
            f"\nfrozen: {len(latencies)} scrapes, max {max(latencies) * 1000:.1f} ms, "
            f"median {sorted(latencies)[len(latencies) // 2] * 1000:.1f} ms; up=0 after "
            f"{went_down:.2f} s (bound {bound:.0f} s); up=1 {up:.2f} s "
            f"after thaw (thaw at +{thawed - frozen:.2f} s); pool-destroy on /metrics "
            f"{time.monotonic() - destroyed:.3f} s after virsh returned"
        )
        assert max(latencies) < 0.5
