"""The whole daemon on libvirt's embedded test driver: events, vanishing pools, volume caps,
and the command line an operator runs.
"""

from __future__ import annotations

import asyncio
import signal
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from poolwatch.adapter.eventloop import ensure_event_loop
from poolwatch.daemon import Daemon, listening_urls
from tests.helpers import (
    PoolwatchProcess,
    config_for,
    eventually,
    fetch,
    running,
    sample,
    scrape,
    series,
    until_metric,
)

GiB = 1024**3
STOP_WITHIN = 5.0
ANY_V4 = "0.0.0.0"  # noqa: S104 - an address as a server reports it, never bound here

POOL_XML = """<pool type='dir'>
  <name>{name}</name>
  <target><path>/{name}</path></target>
</pool>"""


@pytest.fixture
def other_client() -> Iterator[Any]:
    """Another client of test:///default, whose state every connection in this process shares:
    what it does reaches the daemon's connection as events, as from virsh on a real host.
    """
    ensure_event_loop()
    conn = libvirt.open("test:///default")
    try:
        yield conn
    finally:
        for pool in conn.listAllStoragePools(0):
            if pool.name().startswith("t-"):
                if pool.isActive():
                    pool.destroy()
                if pool.isPersistent():
                    pool.undefine()
        conn.close()


async def test_a_busy_daemon_always_stops() -> None:
    """Stopping while libvirt calls complete all the time: before asyncio.timeout replaced
    asyncio.wait_for, a poll timer cancelled just as its call returned lost the cancellation
    and kept the daemon from ever stopping (within 5 cycles out of 5, measured)."""
    busy = config_for("test:///default", interval=0.001, volumes_interval=0.001)
    for cycle in range(30):
        daemon = Daemon(busy, reload_config=None, demo=False, dry_run=False)
        await daemon.start()
        await asyncio.sleep(0.05 + cycle % 7 * 0.013)  # stop at a different point of a poll
        stopping = asyncio.ensure_future(daemon.stop())
        # asyncio.wait, not wait_for: a stop that ignores cancellation must not hang this test.
        done, _ = await asyncio.wait({stopping}, timeout=STOP_WITHIN)
        assert done, f"Daemon.stop() still running after {STOP_WITHIN} s (cycle {cycle})"


async def test_default_pool_capacity_is_exported() -> None:
    async with running(config_for("test:///default")) as daemon:
        await eventually(lambda: _ready(daemon))
        text = await scrape(daemon)
    assert sample(text, "libvirt_storage_pool_capacity_bytes", storage_pool="default-pool") == (
        100 * GiB
    )
    assert 'storage_pool="default-pool"} 1.073741824e+11' in text
    assert sample(text, "poolwatch_libvirt_up", host="test", uri="test:///default") == 1
    assert sample(text, "poolwatch_libvirt_connects_total", host="test") == 1


async def _ready(daemon: Any) -> bool:
    return bool(daemon.inventory.ready)


async def test_lifecycle_events_reach_metrics(other_client: Any) -> None:
    async with running(config_for("test:///default", interval=3600.0)) as daemon:
        await eventually(lambda: _ready(daemon))
        url = f"http://127.0.0.1:{daemon.addresses[0][1]}"
        name = "t-lifecycle"

        pool = await asyncio.to_thread(
            other_client.storagePoolDefineXML, POOL_XML.format(name=name)
        )
        await until_metric(url, "libvirt_storage_pool_state", 0, storage_pool=name)
        text = await scrape(url)
        assert sample(text, "libvirt_storage_pool_capacity_bytes", storage_pool=name) is None
        assert sample(text, "libvirt_storage_pool_persistent", storage_pool=name) == 1
        assert series(text, "libvirt_storage_pool_info", storage_pool=name)[0]["type"] == "dir"
        assert _events(text, name, "defined") == 1

        await asyncio.to_thread(pool.create)
        await until_metric(url, "libvirt_storage_pool_state", 2, storage_pool=name)
        text = await scrape(url)
        assert sample(text, "libvirt_storage_pool_capacity_bytes", storage_pool=name) == 100 * GiB
        assert _events(text, name, "started") == 1

        await asyncio.to_thread(pool.refresh)
        await until_metric(
            url, "libvirt_storage_pool_events_total", 1, storage_pool=name, event="refreshed"
        )
        text = await scrape(url)
        refreshed = sample(text, "libvirt_storage_pool_last_refresh_timestamp_seconds")
        assert refreshed is not None

        await asyncio.to_thread(pool.destroy)
        await until_metric(url, "libvirt_storage_pool_state", 0, storage_pool=name)
        text = await scrape(url)
        # Inactive pools keep stale figures in libvirt: they must not be served as current.
        assert sample(text, "libvirt_storage_pool_capacity_bytes", storage_pool=name) is None
        assert sample(text, "libvirt_storage_pool_volumes", storage_pool=name) is None

        await asyncio.to_thread(pool.undefine)
        await until_metric(url, "libvirt_storage_pool_state", None, storage_pool=name)
        text = await scrape(url)
        left = {
            s.name
            for s in _samples(text)
            if s.labels.get("storage_pool") == name
            and s.name != "libvirt_storage_pool_events_total"
        }
        assert left == set()
        assert _events(text, name, "undefined") == 1


async def test_transient_pool_vanishes_when_stopped(other_client: Any) -> None:
    async with running(config_for("test:///default", interval=3600.0)) as daemon:
        await eventually(lambda: _ready(daemon))
        url = f"http://127.0.0.1:{daemon.addresses[0][1]}"
        name = "t-transient"
        pool = await asyncio.to_thread(
            other_client.storagePoolCreateXML, POOL_XML.format(name=name), 0
        )
        await until_metric(url, "libvirt_storage_pool_state", 2, storage_pool=name)
        assert sample(await scrape(url), "libvirt_storage_pool_persistent", storage_pool=name) == 0
        await asyncio.to_thread(pool.destroy)  # no UNDEFINED follows for a transient pool
        await until_metric(url, "libvirt_storage_pool_state", None, storage_pool=name)


def _samples(text: str) -> list[Any]:
    from prometheus_client.parser import text_string_to_metric_families

    return [s for f in text_string_to_metric_families(text) for s in f.samples]


def _events(text: str, pool: str, event: str) -> float | None:
    return sample(text, "libvirt_storage_pool_events_total", storage_pool=pool, event=event)


def _host_with_volumes(tmp_path: Path, count: int) -> Path:
    volumes = "\n".join(
        f"""<volume><name>disk{i:02d}.qcow2</name>
          <capacity unit='GiB'>{i + 1}</capacity><allocation unit='MiB'>{i + 1}</allocation>
        </volume>"""
        for i in range(count)
    )
    path = tmp_path / "host.xml"
    path.write_text(
        textwrap.dedent(f"""\
        <node>
          <pool type='dir'>
            <name>many</name>
            <uuid>4a9b3d0e-5f1c-4c2b-9d7e-0123456789ab</uuid>
            <target><path>/many</path></target>
            {volumes}
          </pool>
        </node>
        """)
    )
    return path


async def test_volume_series_are_capped_per_pool(tmp_path: Path) -> None:
    host = _host_with_volumes(tmp_path, 5)
    config = config_for(f"test://{host}", max_volumes_per_pool=2)
    async with running(config) as daemon:
        await eventually(lambda: _ready(daemon))
        url = f"http://127.0.0.1:{daemon.addresses[0][1]}"
        await until_metric(url, "libvirt_storage_pool_volumes", 5, storage_pool="many")
        text = await scrape(url)
    exported = series(text, "libvirt_storage_volume_capacity_bytes", storage_pool="many")
    assert sorted(labels["volume"] for labels in exported) == ["disk00.qcow2", "disk01.qcow2"]
    assert sample(text, "poolwatch_volumes_unexported", storage_pool="many") == 3
    # The sums still cover every volume, exported or not.
    assert sample(text, "libvirt_storage_pool_volumes_capacity_bytes", storage_pool="many") == (
        15 * GiB
    )


async def test_cli_on_the_test_driver_serves_metrics_and_stops_cleanly() -> None:
    process = PoolwatchProcess(
        "--libvirt.uri", "test:///default", "--web.listen-address", "127.0.0.1:0"
    ).start()
    try:
        await until_metric(
            process.url,
            "libvirt_storage_pool_capacity_bytes",
            100 * GiB,
            storage_pool="default-pool",
        )
        status, _ = await fetch(f"{process.url}/readyz")
        assert status == 200
    finally:
        code = process.stop()
    assert code == 0
    assert process.events("shutting_down")
    [listening] = process.events("http_listening")
    port = process.url.rpartition(":")[2]
    assert (listening["urls"], listening["addresses"]) == (
        [f"http://127.0.0.1:{port}/"],
        [f"127.0.0.1:{port}"],
    )


async def test_sighup_with_a_bad_file_keeps_running_and_says_so(tmp_path: Path) -> None:
    config = tmp_path / "poolwatch.toml"
    config.write_text('[[connection]]\nuri = "test:///default"\n[poll]\ninterval = "1s"\n')
    process = PoolwatchProcess(
        "--config.file", str(config), "--web.listen-address", "127.0.0.1:0"
    ).start()
    try:
        url = process.url
        await until_metric(url, "poolwatch_config_last_reload_successful", 1)
        config.write_text('[poll]\ninterval = "fast"\n')
        process.signal(signal.SIGHUP)
        await until_metric(url, "poolwatch_config_last_reload_successful", 0)
        assert process.events("config_reload_failed")
        # Still serving with the old config.
        assert sample(await scrape(url), "poolwatch_libvirt_up", uri="test:///default") == 1
        config.write_text('[[connection]]\nuri = "test:///default"\n[poll]\ninterval = "2s"\n')
        process.signal(signal.SIGHUP)
        await until_metric(url, "poolwatch_config_last_reload_successful", 1)
    finally:
        assert process.stop() == 0


@pytest.mark.parametrize(
    ("bound", "urls"),
    [
        # ":9479", the default: both wildcards on one port, each opened through its loopback.
        ([(ANY_V4, 9479), ("::", 9479)], ["http://127.0.0.1:9479/", "http://[::1]:9479/"]),
        ([("::", 9479), (ANY_V4, 9479)], ["http://[::1]:9479/", "http://127.0.0.1:9479/"]),
        ([(ANY_V4, 9479), (ANY_V4, 9479)], ["http://127.0.0.1:9479/"]),
        ([("127.0.0.1", 80), ("::1", 80)], ["http://127.0.0.1:80/", "http://[::1]:80/"]),
        ([("192.0.2.7", 9479)], ["http://192.0.2.7:9479/"]),
        ([("fe80::1%eth0", 9479)], ["http://[fe80::1%25eth0]:9479/"]),
    ],
)
def test_http_listening_names_each_url_once(bound: list[tuple[str, int]], urls: list[str]) -> None:
    # Binding a wildcard is not for tests (loopback only): the bound addresses are given.
    assert listening_urls("http", bound) == urls


async def test_demo_serves_moving_pools_and_a_landing_page() -> None:
    process = PoolwatchProcess("demo", "--web.listen-address", "127.0.0.1:0")
    # stdout is a pipe here, as under systemd or `| tee`; without PYTHONUNBUFFERED (which dev
    # shells often set) Python block-buffers it, and the URL line must still arrive at once.
    process.env.pop("PYTHONUNBUFFERED", None)
    process.start()
    try:
        url = process.url
        assert any(url in line for line in process.stdout) or await _stdout_names(process, url)
        await eventually(lambda: _demo_pools(url), within=15)
        first = sample(
            await scrape(url), "libvirt_storage_pool_allocation_bytes", storage_pool="images"
        )

        async def moved() -> bool:
            now = sample(
                await scrape(url), "libvirt_storage_pool_allocation_bytes", storage_pool="images"
            )
            return now != first

        await eventually(moved, within=20, interval=0.5)
        status, page = await fetch(f"{url}/")
        assert status == 200
        for name in ("images", "backups", "isos", "vg_guests", "san-lun", "ceph-rbd"):
            assert name in page
    finally:
        assert process.stop() == 0


async def _stdout_names(process: PoolwatchProcess, url: str) -> bool:
    async def printed() -> bool:
        return any(url in line for line in process.stdout)

    await eventually(printed, within=5)
    return True


async def _demo_pools(url: str) -> bool:
    text = await scrape(url)
    return len(series(text, "libvirt_storage_pool_state")) >= 6
