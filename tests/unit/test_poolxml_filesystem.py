"""Pool XML labels, hostile XML, and which targets poolwatch may statvfs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from poolwatch.addresses import without_credentials
from poolwatch.filesystem import is_local_uri, stat_target
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
