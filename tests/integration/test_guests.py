"""A real QEMU guest filling its pool: libvirt pauses it on ENOSPC, poolwatch shows it, alerts
on it, runs the hook once, and resumes it once space is back; or, under action = "leave" and
under --dry-run, leaves it paused.

One private libvirtd with a QEMU driver for the module (its first domain define probes QEMU for
tens of seconds, once); one 64 MiB ext4 fs pool on a loop device per test. The guest's disk is a
sparse raw volume beside a fully allocated ballast volume; the guest writes more than is left,
so its write stops with the pool full, and deleting the ballast makes room for the rest. The
guest (tests/harness/guest.py) prints DONE on its serial console, a file, once its write is
through.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.prometheus_server import PrometheusServer, find_tool
from tests.harness import guest
from tests.harness.commands import CommandError, MiB
from tests.harness.libvirtd import Libvirtd, LibvirtdError, prerequisites_problem
from tests.helpers import REPO, base_url, eventually, fetch, running, unavailable
from tests.integration.policy_helpers import hook_runs, policy_config, record_hook, unique

BALLAST_MIB = 24
DISK_MIB = 48
WRITE_MIB = 40  # more than is free beside the ballast, less than is free without it
GENEROUS = 180.0  # seconds: a TCG boot and a 40 MiB write on a shared, busy machine
DEFINE_TIMEOUT = 300.0  # the first define probes QEMU's capabilities (~44 s measured)


@pytest.fixture(scope="module")
def qemu_host() -> Iterator[tuple[Libvirtd, Path, Path]]:
    """A private libvirtd that can run QEMU guests, and the guest's kernel and initramfs."""
    problem = prerequisites_problem() or guest.guest_problem()
    if problem:
        unavailable(problem)
    try:
        kernel, initramfs = guest.build()
    except (OSError, CommandError, RuntimeError) as exc:
        unavailable(f"cannot build the guest's kernel and initramfs: {exc}")
    daemon = Libvirtd(qemu_conf=guest.QEMU_CONF)
    try:
        daemon.start()
    except LibvirtdError as exc:
        daemon.close()
        unavailable(f"cannot start a private libvirtd: {exc}")
    try:
        yield daemon, kernel, initramfs
    finally:
        for name in daemon.virsh("list", "--all", "--name", check=False).split():
            daemon.virsh("destroy", name, check=False)
            daemon.virsh("undefine", name, check=False)
        daemon.cleanup_pools()
        daemon.close()


class Guest:
    """One guest on a fresh fs pool, booted and writing."""

    def __init__(self, libvirtd: Libvirtd, name: str, pool: str, serial: Path) -> None:
        self.libvirtd, self.name, self.pool, self.serial = libvirtd, name, pool, serial

    def console(self) -> str:
        return self.serial.read_text(errors="replace") if self.serial.exists() else ""

    def state(self) -> str:
        return self.libvirtd.virsh("domstate", self.name, "--reason", check=False).strip()

    def free_space(self) -> None:
        self.libvirtd.virsh("vol-delete", "ballast", "--pool", self.pool)


@pytest.fixture
def filling_guest(
    qemu_host: tuple[Libvirtd, Path, Path], make_loop_fs: Callable[..., str], tmp_path: Path
) -> Iterator[Callable[[], Guest]]:
    """Starts the guest when called, so poolwatch can be watching from before its pause."""
    libvirtd, kernel, initramfs = qemu_host
    device = make_loop_fs(64 * MiB)
    pool, name = unique("guests"), unique("vm")
    target = tmp_path / "pool"
    target.mkdir()
    libvirtd.virsh_xml(
        "pool-define",
        f"""<pool type='fs'><name>{pool}</name>
              <source><device path='{device}'/><format type='ext4'/></source>
              <target><path>{target}</path></target></pool>""",
    )
    libvirtd.virsh("pool-start", pool)
    libvirtd.virsh(
        "vol-create-as", pool, "ballast", f"{BALLAST_MIB}M", "--allocation", f"{BALLAST_MIB}M"
    )
    libvirtd.virsh("vol-create-as", pool, "disk", f"{DISK_MIB}M", "--allocation", "0")
    serial = tmp_path / "console.log"
    xml = guest.domain_xml(
        name=name,
        kernel=kernel,
        initramfs=initramfs,
        pool=pool,
        volume="disk",
        serial=serial,
        write_mib=WRITE_MIB,
    )
    libvirtd.virsh_xml("define", xml, timeout=DEFINE_TIMEOUT)
    the_guest = Guest(libvirtd, name, pool, serial)

    def start() -> Guest:
        try:
            libvirtd.virsh("start", name, timeout=DEFINE_TIMEOUT)
        except CommandError as exc:
            unavailable(f"QEMU cannot start a guest here: {exc}\n{libvirtd.log_tail()}")
        return the_guest

    try:
        yield start
    finally:
        libvirtd.virsh("destroy", name, check=False)
        libvirtd.virsh("undefine", name, check=False)
        libvirtd.virsh("pool-destroy", pool, check=False)
        libvirtd.virsh("pool-undefine", pool, check=False)


async def pool_guests(url: str, pool: str) -> dict[str, dict[str, Any]]:
    _, text = await fetch(f"{url}/api/v1/pools")
    for host in json.loads(text)["hosts"]:
        for entry in host["pools"]:
            if entry["name"] == pool:
                return {g["name"]: g for g in entry["guests"]}
    return {}


async def until_guest(url: str, the_guest: Guest, state: str) -> dict[str, Any]:
    found: list[Any] = [None]

    async def check() -> bool:
        found[0] = (await pool_guests(url, the_guest.pool)).get(the_guest.name)
        return found[0] is not None and found[0]["state"] == state

    try:
        await eventually(check, within=GENEROUS, interval=0.2)
    except AssertionError:
        raise AssertionError(
            f"{the_guest.name} is {found[0]}, not {state}; libvirt: {the_guest.state()}\n"
            f"console: {the_guest.console()[-500:]}"
        ) from None
    return found[0]  # type: ignore[no-any-return]


async def events(url: str) -> list[dict[str, Any]]:
    _, text = await fetch(f"{url}/api/v1/events")
    return json.loads(text)["events"]  # type: ignore[no-any-return]


def rules(pool: str, action: str, hook: str) -> str:
    return (
        f'[[resume]]\npool = "{pool}"\naction = "{action}"\nfree_above = "> 8MiB"\n'
        f'delay = "1s"\nwindow = "10m"\nhooks = ["record"]\n\n{hook}'
    )


async def test_a_full_pool_pauses_the_guest_and_poolwatch_resumes_it(
    filling_guest: Callable[[], Guest], qemu_host: tuple[Libvirtd, Path, Path], tmp_path: Path
) -> None:
    libvirtd = qemu_host[0]
    hook, runs = record_hook(tmp_path)
    the_guest = await asyncio.to_thread(filling_guest)
    config = policy_config(libvirtd.uri, rules(the_guest.pool, "resume", hook))
    async with running(config) as daemon:
        url = base_url(daemon)
        paused = await until_guest(url, the_guest, "paused_io_error")
        assert paused["io_error"] == "enospc"
        assert "I/O error" in await asyncio.to_thread(the_guest.state)

        # The alert's expression, as Prometheus evaluates it on poolwatch's /metrics.
        prometheus = await _prometheus(url)
        try:
            alert = _alert_expr("PoolwatchGuestPausedPoolFull")
            result = await prometheus.wait_for(
                alert, lambda r: len(r) == 1, within=GENEROUS, what="the paused-guest alert"
            )
            assert result[0]["metric"]["guest"] == the_guest.name
            assert result[0]["metric"]["storage_pool"] == the_guest.pool
        finally:
            prometheus.stop()

        await asyncio.to_thread(the_guest.free_space)
        await eventually(lambda: _done(the_guest), within=GENEROUS, interval=0.5)
        kinds = [(e["kind"], e["action"], e["result"], e["guest"]) for e in await events(url)]
        assert ("action", "resume_guest", "ok", the_guest.name) in kinds
        assert ("guest_paused", None, None, the_guest.name) in kinds
        assert ("guest_resumed", None, None, the_guest.name) in kinds
        actions = [(r["POOLWATCH_ACTION"], r["POOLWATCH_GUEST"]) for r in hook_runs(runs)]
        assert actions.count(("guest_paused", the_guest.name)) == 1
        assert actions.count(("guest_resumed", the_guest.name)) == 1


async def test_leave_and_dry_run_keep_the_guest_paused(
    filling_guest: Callable[[], Guest], qemu_host: tuple[Libvirtd, Path, Path], tmp_path: Path
) -> None:
    libvirtd = qemu_host[0]
    hook, runs = record_hook(tmp_path)
    the_guest = await asyncio.to_thread(filling_guest)
    leave = policy_config(libvirtd.uri, rules(the_guest.pool, "leave", hook))
    async with running(leave) as daemon:
        url = base_url(daemon)
        await until_guest(url, the_guest, "paused_io_error")
        await asyncio.to_thread(the_guest.free_space)
        await _until_free(url, the_guest.pool)
        await eventually(lambda: _hook_ran(runs, "guest_paused"), within=GENEROUS)
    assert "I/O error" in await asyncio.to_thread(the_guest.state)

    resume = policy_config(libvirtd.uri, rules(the_guest.pool, "resume", hook))
    async with running(resume, dry_run=True) as daemon:
        url = base_url(daemon)

        async def dry_run_logged() -> bool:
            return any(
                e["action"] == "resume_guest" and e["result"] == "dry_run"
                for e in await events(url)
            )

        await eventually(dry_run_logged, within=GENEROUS)
        assert (await pool_guests(url, the_guest.pool))[the_guest.name]["state"] == (
            "paused_io_error"
        )
    assert "I/O error" in await asyncio.to_thread(the_guest.state)
    assert guest.DONE not in the_guest.console()


async def _done(the_guest: Guest) -> bool:
    return guest.DONE in the_guest.console()


async def _hook_ran(runs: Path, action: str) -> bool:
    return any(r["POOLWATCH_ACTION"] == action for r in hook_runs(runs))


async def _until_free(url: str, pool: str) -> None:
    async def roomy() -> bool:
        _, text = await fetch(f"{url}/api/v1/pools")
        for host in json.loads(text)["hosts"]:
            for entry in host["pools"]:
                if entry["name"] == pool:
                    return bool(entry["free_bytes"] and entry["free_bytes"] > 16 * MiB)
        return False

    await eventually(roomy, within=GENEROUS)


async def _prometheus(url: str) -> PrometheusServer:
    target = url.removeprefix("http://")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "poolwatch", "static_configs": [{"targets": [target]}]}],
    }
    return await PrometheusServer(find_tool("prometheus"), config).start()


def _alert_expr(name: str) -> str:
    """The one-line expr of alert ``name`` in the shipped rules file."""
    text = (REPO / "config" / "prometheus" / "poolwatch.rules.yml").read_text()
    found = re.search(rf"- alert: {name}\n\s+expr: (.+)\n", text)
    assert found is not None, name
    return found[1]
