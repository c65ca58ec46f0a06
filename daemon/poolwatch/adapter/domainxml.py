"""What poolwatch takes from a domain's XML description: its disks and where their data lives.

Parsed with defusedxml, as pool descriptions are (:mod:`poolwatch.poolxml`): the document comes
from a daemon we do not control.
"""

from __future__ import annotations

from dataclasses import dataclass

import defusedxml.ElementTree as SafeET

from poolwatch.model import GuestDisk


@dataclass(frozen=True, slots=True)
class DomainDescription:
    name: str
    uuid: str
    disks: tuple[GuestDisk, ...]


class DomainXMLError(ValueError):
    """The domain XML could not be parsed or is not a domain description."""


def parse_domain_xml(text: str) -> DomainDescription:
    try:
        root = SafeET.fromstring(text)
    except Exception as exc:  # defusedxml raises its own and ElementTree's errors
        raise DomainXMLError(f"unparsable domain XML: {exc}") from exc
    if root.tag != "domain":
        raise DomainXMLError(f"expected <domain>, got <{root.tag}>")
    disks = []
    for disk in root.findall("devices/disk"):
        target = disk.find("target")
        source = disk.find("source")
        if target is None or source is None:
            continue  # an empty CD-ROM drive holds no data anywhere
        alias = disk.find("alias")
        disks.append(
            GuestDisk(
                target=target.get("dev", ""),
                alias="" if alias is None else alias.get("name", ""),
                pool=source.get("pool", "") if disk.get("type") == "volume" else "",
                volume=source.get("volume", "") if disk.get("type") == "volume" else "",
                # file and block disks; a running volume disk shows its path here as well.
                path=source.get("file") or source.get("dev") or "",
            )
        )
    return DomainDescription(
        name=(root.findtext("name") or "").strip(),
        uuid=(root.findtext("uuid") or "").strip(),
        disks=tuple(disks),
    )
