"""What poolwatch takes from a storage pool's XML description: the facts worth labels.

Parsed with defusedxml: the document comes from a daemon we do not control, and an entity
expansion or external entity must be refused, not followed.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as SafeET


@dataclass(frozen=True, slots=True)
class PoolDescription:
    type: str
    uuid: str
    target_path: str
    source: str  # "host:dir", "host:device", a device path, a source name, or ""


class PoolXMLError(ValueError):
    """The pool XML could not be parsed or is not a pool description."""


def parse_pool_xml(text: str) -> PoolDescription:
    try:
        root = SafeET.fromstring(text)
    except Exception as exc:  # defusedxml raises its own and ElementTree's errors
        raise PoolXMLError(f"unparsable pool XML: {exc}") from exc
    if root.tag != "pool":
        raise PoolXMLError(f"expected <pool>, got <{root.tag}>")
    return PoolDescription(
        type=root.get("type", ""),
        uuid=(root.findtext("uuid") or "").strip(),
        target_path=(root.findtext("target/path") or "").strip(),
        source=_source(root),
    )


def _source(root: Element) -> str:
    source = root.find("source")
    if source is None:
        return ""
    hosts = [h.get("name", "") for h in source.findall("host") if h.get("name")]
    dirs = [d.get("path", "") for d in source.findall("dir") if d.get("path")]
    devices = [d.get("path", "") for d in source.findall("device") if d.get("path")]
    name = (source.findtext("name") or "").strip()
    # The most specific location first: an exported directory, then devices, then a name
    # (a volume group, a Ceph pool, a Gluster volume).
    where = ",".join(dirs) or ",".join(devices) or name
    if hosts:
        return f"{hosts[0]}:{where}" if where else hosts[0]
    return where
