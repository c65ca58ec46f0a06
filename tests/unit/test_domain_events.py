"""Domain events: what each libvirt domain callback hands on, without a libvirt daemon."""

from __future__ import annotations

from typing import Any

import libvirt

from poolwatch.adapter import domain_events
from poolwatch.model import GuestEventKind
from poolwatch.source import GuestChanged, GuestIOError, SourceEvent


class _Domain:
    def name(self) -> str:
        return "db1"

    def UUIDString(self) -> str:
        return "uuid-db1"


class _Conn:
    """Records the callbacks armed, as libvirt would keep them."""

    def __init__(self) -> None:
        self.callbacks: dict[int, tuple[int, Any, Any]] = {}

    def domainEventRegisterAny(self, dom: Any, event_id: int, cb: Any, opaque: Any) -> int:
        self.callbacks[len(self.callbacks) + 1] = (event_id, cb, opaque)
        return len(self.callbacks)

    def domainEventDeregisterAny(self, callback_id: int) -> None:
        del self.callbacks[callback_id]

    def fire(self, event_id: int, *args: Any) -> None:
        for armed, callback, opaque in self.callbacks.values():
            if armed == event_id:
                callback(self, _Domain(), *args, opaque)


def test_callbacks_hand_on_guest_events_with_their_generation() -> None:
    conn = _Conn()
    seen: list[tuple[int, SourceEvent]] = []
    ids = domain_events.register(conn, 7, lambda gen, event: seen.append((gen, event)))
    conn.fire(
        libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
        libvirt.VIR_DOMAIN_EVENT_SUSPENDED,
        libvirt.VIR_DOMAIN_EVENT_SUSPENDED_IOERROR,
    )
    # A shutdown in progress changes nothing poolwatch shows: the STOPPED that follows does.
    conn.fire(libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, libvirt.VIR_DOMAIN_EVENT_SHUTDOWN, 0)
    conn.fire(libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, "virtio-disk1")
    conn.fire(
        libvirt.VIR_DOMAIN_EVENT_ID_IO_ERROR_REASON,
        "/pools/images/db1.img",
        "virtio-disk0",
        libvirt.VIR_DOMAIN_EVENT_IO_ERROR_PAUSE,
        "enospc",
    )
    assert seen == [
        (7, GuestChanged("db1", "uuid-db1", GuestEventKind.PAUSED, "ioerror")),
        (7, GuestChanged("db1", "uuid-db1", GuestEventKind.DEVICE_CHANGED, "virtio-disk1")),
        (
            7,
            GuestIOError(
                "db1", "uuid-db1", "/pools/images/db1.img", "virtio-disk0", "pause", "enospc"
            ),
        ),
    ]
    for callback_id in ids:
        domain_events.deregister(conn, callback_id)
    assert conn.callbacks == {}
