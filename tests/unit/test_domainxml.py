"""A domain's disks from its XML description, and descriptions that must be refused."""

from __future__ import annotations

import pytest

from poolwatch.adapter.domainxml import DomainXMLError, parse_domain_xml
from poolwatch.model import GuestDisk

RUNNING = """<domain type='kvm' id='3'>
  <name>db</name>
  <uuid>c7a5fdbd-edaf-9455-926a-d65c16db1809</uuid>
  <devices>
    <disk type='file' device='disk'>
      <source file='/var/lib/libvirt/images/db.qcow2'/>
      <target dev='vda' bus='virtio'/>
      <alias name='virtio-disk0'/>
    </disk>
    <disk type='volume' device='disk'>
      <source pool='vg0' volume='data'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='block' device='disk'>
      <source dev='/dev/vg0/logs'/>
      <target dev='vdc' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <target dev='hdc' bus='ide'/>
    </disk>
  </devices>
</domain>"""


def test_disks_by_path_by_volume_and_without_source() -> None:
    described = parse_domain_xml(RUNNING)
    assert (described.name, described.uuid) == ("db", "c7a5fdbd-edaf-9455-926a-d65c16db1809")
    assert described.disks == (
        GuestDisk("vda", alias="virtio-disk0", path="/var/lib/libvirt/images/db.qcow2"),
        GuestDisk("vdb", pool="vg0", volume="data"),
        GuestDisk("vdc", path="/dev/vg0/logs"),
    )


@pytest.mark.parametrize(
    "text",
    [
        "<pool type='dir'><name>x</name></pool>",
        "not xml",
        '<!DOCTYPE d [<!ENTITY e SYSTEM "file:///etc/passwd">]><domain>&e;</domain>',
    ],
)
def test_refused(text: str) -> None:
    with pytest.raises(DomainXMLError):
        parse_domain_xml(text)
