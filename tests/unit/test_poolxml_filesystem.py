"""Pool XML labels, hostile XML, which targets poolwatch may statvfs, and their inspection off
the event loop (many in one worker job; a hung target holds up only itself)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from poolwatch import filesystem
from poolwatch.addresses import without_credentials
from poolwatch.filesystem import Target, TargetInspector, is_local_uri, stat_target
from poolwatch.poolxml import PoolXMLError, parse_pool_xml


@pytest.mark.parametrize(
    ("xml", "source"),
    [
        ("<pool type='dir'><name>a</name><target><path>/p</path></target></pool>", ""),
        (
            "<pool type='netfs'><source><host name='nfs01'/><dir path='/export/isos'/>"
            "<format type='nfs'/></source></pool>",
            "nfs01:/export/isos",
        ),
        ("<pool type='fs'><source><device path='/dev/sdb1'/></source></pool>", "/dev/sdb1"),
        (
            "<pool type='logical'><source><device path='/dev/sdc'/><device path='/dev/sdd'/>"
            "<name>vg0</name></source></pool>",
            "/dev/sdc,/dev/sdd",
        ),
        ("<pool type='logical'><source><name>vg0</name></source></pool>", "vg0"),
        (
            "<pool type='rbd'><source><host name='mon1' port='6789'/><host name='mon2'/>"
            "<name>libvirt-pool</name></source></pool>",
            "mon1:libvirt-pool",
        ),
        (
            "<pool type='iscsi'><source><host name='san01'/>"
            "<device path='iqn.2024-03.com.example:lun'/></source></pool>",
            "san01:iqn.2024-03.com.example:lun",
        ),
    ],
)
def test_source_label(xml: str, source: str) -> None:
    assert parse_pool_xml(xml).source == source


def test_description_fields() -> None:
    description = parse_pool_xml(
        "<pool type='dir'><name>images</name><uuid> 0a1b </uuid>"
        "<target><path>/var/lib/libvirt/images</path></target></pool>"
    )
    assert (description.type, description.uuid, description.target_path) == (
        "dir",
        "0a1b",
        "/var/lib/libvirt/images",
    )


@pytest.mark.parametrize(
    "xml",
    [
        # billion laughs
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
        "<pool type='dir'><name>&lol2;</name></pool>",
        # external entity
        '<?xml version="1.0"?><!DOCTYPE p [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        "<pool type='dir'><name>&x;</name></pool>",
        "<pool type='dir'><name>unclosed</pool>",
        "<domain type='kvm'/>",
    ],
)
def test_hostile_or_wrong_xml_is_refused(xml: str) -> None:
    with pytest.raises(PoolXMLError):
        parse_pool_xml(xml)


@pytest.mark.parametrize(
    ("uri", "local"),
    [
        ("qemu:///system", True),
        ("qemu:///system?socket=/tmp/x/libvirt-sock", True),
        ("qemu+unix:///system", True),
        ("qemu://localhost/system", True),
        ("qemu+ssh://root@kvm02/system", False),
        ("qemu+tcp://kvm02/system", False),
        ("test:///default", False),
    ],
)
def test_only_local_connections_are_statted(uri: str, local: bool) -> None:
    assert is_local_uri(uri) is local


def test_uri_label_has_no_credentials() -> None:
    assert without_credentials("qemu+ssh://root:s3cret@kvm02/system") == "qemu+ssh://kvm02/system"
    assert without_credentials("qemu:///system") == "qemu:///system"


def test_dir_target_is_statted(tmp_path: Path) -> None:
    stat = stat_target("dir", str(tmp_path))
    assert stat is not None
    st = os.statvfs(tmp_path)
    assert stat.size_bytes == st.f_blocks * st.f_frsize
    device = os.stat(tmp_path).st_dev
    assert stat.device == f"{os.major(device)}:{os.minor(device)}"


def test_fs_target_that_is_not_a_mount_point_is_not_reported(tmp_path: Path) -> None:
    # Otherwise an fs pool mounted in another namespace would report the root filesystem.
    assert stat_target("fs", str(tmp_path)) is None
    assert stat_target("netfs", str(tmp_path)) is None


def test_missing_or_foreign_targets_report_nothing(tmp_path: Path) -> None:
    assert stat_target("dir", str(tmp_path / "missing")) is None
    assert stat_target("logical", "/dev/vg0") is None
    assert stat_target("dir", "") is None


class CountingExecutor(concurrent.futures.ThreadPoolExecutor):
    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self.jobs = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        self.jobs += 1
        return super().submit(fn, *args, **kwargs)


class RecordingLog:
    def __init__(self) -> None:
        self.warnings: list[dict[str, Any]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.warnings.append({"event": event, **fields})


async def test_many_targets_are_inspected_in_one_worker_job(tmp_path: Path) -> None:
    executor = CountingExecutor(2)
    log = RecordingLog()
    inspector = TargetInspector(executor, enabled=True, timeout=lambda: 5, log=lambda: log)
    targets = [Target(f"p{i}", "dir", str(tmp_path), True) for i in range(50)]
    targets.append(Target("vg", "logical", "/dev/vg", True))
    found = await inspector.inspect_all(targets)
    assert executor.jobs == 1
    assert all(stat is not None and mounted is False for stat, mounted in found[:50])
    assert found[50] == (None, None)
    executor.shutdown()


def hang_at(path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, threading.Event]:
    """``path`` as the target of a dead NFS server: its inspection blocks until the event is
    set (10 s at most)."""
    hung, released = str(path), threading.Event()
    real = filesystem.inspect_target

    def inspect(pool_type: str, path: str, *, active: bool) -> Any:
        if path == hung:
            released.wait(10)
        return real(pool_type, path, active=active)

    monkeypatch.setattr(filesystem, "inspect_target", inspect)
    return hung, released


async def test_a_hung_target_holds_up_only_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dead NFS server blocks its statvfs: the pools after it in the job are still measured,
    and it is not asked again until its call returns."""
    hung, released = hang_at(tmp_path / "nfs", monkeypatch)
    executor = concurrent.futures.ThreadPoolExecutor(2)
    log = RecordingLog()
    inspector = TargetInspector(executor, enabled=True, timeout=lambda: 0.2, log=lambda: log)
    targets = [
        Target("a", "dir", str(tmp_path), True),
        Target("nfs", "dir", hung, True),
        Target("b", "dir", str(tmp_path), True),
    ]
    try:
        first = await inspector.inspect_all(targets)
        assert first[0][0] is not None
        assert first[1] == (None, None)
        assert first[2][0] is not None
        assert [w["pool"] for w in log.warnings] == ["nfs"]
        again = await inspector.inspect_all(targets)  # still hung: not asked, not waited for
        assert again[1] == (None, None)
        assert again[2][0] is not None
        assert len(log.warnings) == 1
    finally:
        released.set()
        executor.shutdown(wait=True)


async def test_inspect_soon_hands_a_statvfs_to_the_loop_and_skips_what_it_cannot_measure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A started pool's statvfs, asked for at its event, comes back on the loop thread; a
    target in flight in another call for a moment is asked again, but a pool type without a
    local filesystem, or a target in flight for longer (hung, or about to be given up as hung),
    costs no worker job."""
    hung, released = hang_at(tmp_path / "nfs", monkeypatch)
    executor = CountingExecutor(2)
    inspector = TargetInspector(executor, enabled=True, timeout=lambda: 0.2, log=RecordingLog)
    loop = asyncio.get_running_loop()
    handed: asyncio.Future[tuple[Any, int]] = loop.create_future()
    try:
        inspector.inspect_soon(
            Target("a", "dir", str(tmp_path), True),
            lambda found: handed.set_result((found, threading.get_ident())),
        )
        (stat, mounted), thread = await asyncio.wait_for(handed, 5)
        assert stat is not None
        assert stat.size_bytes > 0
        assert mounted is False
        assert thread == threading.get_ident()  # called on the loop, not in the worker
        nfs = Target("nfs", "dir", hung, True)
        polled = asyncio.create_task(inspector.inspect_all([nfs]))
        await asyncio.sleep(0.01)  # in flight in that call for a moment: asked again
        jobs = executor.jobs
        inspector.inspect_soon(nfs, lambda _found: None)
        assert executor.jobs == jobs + 1
        await asyncio.sleep(filesystem.IN_FLIGHT_GRACE)  # in flight longer: it may hang
        inspector.inspect_soon(nfs, lambda _found: None)
        assert executor.jobs == jobs + 1
        await polled  # given up as hung after 0.2 s: still not asked
        inspector.inspect_soon(nfs, lambda _found: None)
        inspector.inspect_soon(Target("vg", "logical", "/dev/vg", True), lambda _found: None)
        assert executor.jobs == jobs + 1
    finally:
        released.set()
        executor.shutdown(wait=True)
