"""Blocking reads and actions on domains (guests); run in executor workers only.

A guest costs two RPCs to read, its state and its XML description, and is read only when
libvirt announces a change to it (or after a reconnect): never per poll and never per scrape.
A guest paused on an I/O error costs a third, ``diskErrors()``, which says which disk ran out
of space.
"""

from __future__ import annotations

from typing import Any

import libvirt

from poolwatch.adapter.domainxml import parse_domain_xml
from poolwatch.model import GuestSnapshot, GuestState

_DISK_ERRORS = {
    libvirt.VIR_DOMAIN_DISK_ERROR_UNSPEC: "unspecified",
    libvirt.VIR_DOMAIN_DISK_ERROR_NO_SPACE: "enospc",
}


def guest_state(state: int, reason: int) -> GuestState:
    """virDomainState and its reason in the words of poolwatch_pool_guests{state}."""
    if state == libvirt.VIR_DOMAIN_PAUSED:
        if reason == libvirt.VIR_DOMAIN_PAUSED_IOERROR:
            return GuestState.PAUSED_IO_ERROR
        return GuestState.PAUSED
    if state == libvirt.VIR_DOMAIN_PMSUSPENDED:
        return GuestState.PAUSED
    if state in (
        libvirt.VIR_DOMAIN_RUNNING,
        libvirt.VIR_DOMAIN_BLOCKED,
        libvirt.VIR_DOMAIN_SHUTDOWN,
    ):
        return GuestState.RUNNING
    return GuestState.SHUT_OFF  # shut off, crashed, no state


def read_domain(dom: Any) -> GuestSnapshot:
    state, reason = dom.state(0)
    description = parse_domain_xml(dom.XMLDesc(0))
    guest_state_now = guest_state(int(state), int(reason))
    io_errors: dict[str, str] = {}
    if guest_state_now is GuestState.PAUSED_IO_ERROR:
        for target, code in dom.diskErrors(0).items():
            if code != libvirt.VIR_DOMAIN_DISK_ERROR_NONE:
                io_errors[str(target)] = _DISK_ERRORS.get(code, "unspecified")
    return GuestSnapshot(
        name=description.name or dom.name(),
        uuid=description.uuid or dom.UUIDString(),
        state=guest_state_now,
        disks=description.disks,
        io_errors=io_errors,
    )


def read_domains(conn: Any) -> list[GuestSnapshot]:
    out = []
    for dom in conn.listAllDomains(0):
        try:
            out.append(read_domain(dom))
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                continue  # undefined while we were reading: its event follows
            raise
    return out


def read_guest(conn: Any, uuid: str) -> GuestSnapshot:
    return read_domain(conn.lookupByUUIDString(uuid))


def resume_guest(conn: Any, uuid: str) -> None:
    conn.lookupByUUIDString(uuid).resume()


def destroy_guest(conn: Any, uuid: str) -> None:
    conn.lookupByUUIDString(uuid).destroy()
