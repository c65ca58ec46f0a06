"""Domain (guest) events of one connection: libvirt's callbacks turned into source events.

Registered on every connection beside the storage pool events (see ``connection``): lifecycle
(defined, undefined, started, stopped, suspended, resumed), device added or removed, and QEMU's
I/O error with its reason. The callbacks run on the asyncio loop (adapter/eventloop.py), or
whichever thread runs libvirt's events, and make no RPC (a domain object's ``name()`` and
``UUIDString()`` are local); each hands a ``GuestChanged`` or ``GuestIOError`` to
``emit(generation, event)``, which passes it to the asyncio loop.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import libvirt

from poolwatch.model import GuestEventKind
from poolwatch.source import GuestChanged, GuestIOError, SourceEvent

# Called from libvirt's callbacks with the connection's generation and the event.
Emit = Callable[[int, SourceEvent], None]

_GUEST_LIFECYCLE = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: GuestEventKind.DEFINED,
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: GuestEventKind.UNDEFINED,
    libvirt.VIR_DOMAIN_EVENT_STARTED: GuestEventKind.STARTED,
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: GuestEventKind.PAUSED,
    libvirt.VIR_DOMAIN_EVENT_RESUMED: GuestEventKind.RESUMED,
    libvirt.VIR_DOMAIN_EVENT_STOPPED: GuestEventKind.STOPPED,
    libvirt.VIR_DOMAIN_EVENT_CRASHED: GuestEventKind.STOPPED,
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: GuestEventKind.PAUSED,
}
# The suspend details an operator needs to tell apart: QEMU's pause on a disk error.
_SUSPENDED_DETAIL = {
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED_PAUSED: "paused",
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED_IOERROR: "ioerror",
}
_IO_ERROR_ACTIONS = {
    libvirt.VIR_DOMAIN_EVENT_IO_ERROR_NONE: "ignore",
    libvirt.VIR_DOMAIN_EVENT_IO_ERROR_PAUSE: "pause",
    libvirt.VIR_DOMAIN_EVENT_IO_ERROR_REPORT: "report",
}


def register(conn: Any, generation: int, emit: Emit) -> list[int]:
    """Blocking: arm the domain callbacks on ``conn``; their ids, for ``deregister``."""
    return [
        conn.domainEventRegisterAny(None, event_id, functools.partial(callback, emit), generation)
        for event_id, callback in (
            (libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, _on_lifecycle),
            (libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_ADDED, _on_device),
            (libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, _on_device),
            (libvirt.VIR_DOMAIN_EVENT_ID_IO_ERROR_REASON, _on_io_error),
        )
    ]


def deregister(conn: Any, callback_id: int) -> None:
    """Blocking: drop one callback ``register`` armed (may raise on a dead connection)."""
    conn.domainEventDeregisterAny(callback_id)


def _on_lifecycle(emit: Emit, _conn: Any, dom: Any, event: int, detail: int, gen: int) -> None:
    kind = _GUEST_LIFECYCLE.get(event)
    if kind is None:
        return  # SHUTDOWN (in progress) changes nothing poolwatch shows: STOPPED follows
    words = _SUSPENDED_DETAIL.get(detail, "") if kind is GuestEventKind.PAUSED else ""
    emit(gen, GuestChanged(dom.name(), dom.UUIDString(), kind, words))


def _on_device(emit: Emit, _conn: Any, dom: Any, alias: str, gen: int) -> None:
    emit(gen, GuestChanged(dom.name(), dom.UUIDString(), GuestEventKind.DEVICE_CHANGED, alias))


def _on_io_error(
    emit: Emit,
    _conn: Any,
    dom: Any,
    path: str,
    alias: str,
    action: int,
    reason: str,
    gen: int,
) -> None:
    error = GuestIOError(
        dom.name(),
        dom.UUIDString(),
        path or "",
        alias or "",
        _IO_ERROR_ACTIONS.get(action, str(action)),
        reason or "unspecified",
    )
    emit(gen, error)
