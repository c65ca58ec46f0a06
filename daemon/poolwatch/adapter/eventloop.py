"""libvirt's own event loop, run in one dedicated thread.

libvirtaio is not safe when calls run in executor threads: libvirt then queues events from
those threads and libvirtaio touches the asyncio loop from them without waking it (measured:
a REFRESH event during a long vol.wipe() arrived after 5.3 s). The default implementation in a
thread of its own dispatches within milliseconds; callbacks hand over to asyncio with
``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import threading

import libvirt
import structlog

_lock = threading.Lock()
_thread: threading.Thread | None = None

log = structlog.get_logger()


def ensure_event_loop() -> None:
    """Register and start libvirt's default event loop once per process, before any open()."""
    global _thread
    with _lock:
        if _thread is not None:
            return
        # Without a handler libvirt prints every error to stderr as well as raising it.
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        libvirt.virEventRegisterDefaultImpl()
        _thread = threading.Thread(target=_run, name="libvirt-events", daemon=True)
        _thread.start()


def _run() -> None:
    while True:
        try:
            libvirt.virEventRunDefaultImpl()
        except libvirt.libvirtError as exc:  # a failed poll(); keep the loop alive
            log.warning("libvirt_event_loop_error", error=str(exc))
