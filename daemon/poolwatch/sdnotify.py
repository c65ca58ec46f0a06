"""systemd's service notification protocol (sd_notify), without libsystemd.

A message is one datagram of ``KEY=value`` lines sent to the AF_UNIX socket named in
``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace). This module owns that socket,
the watchdog settings systemd passes in ``$WATCHDOG_USEC``/``$WATCHDOG_PID``, and the loop that
pings the watchdog from the event loop. Without ``$NOTIFY_SOCKET`` (not started by systemd, or
not ``Type=notify``) every call is a no-op.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping

import structlog

log = structlog.get_logger()

STATUS_EVERY = 10.0  # seconds between checks for a changed STATUS line


class Notifier:
    """Sends sd_notify messages; never raises into the daemon and never blocks."""

    def __init__(self, address: str | None, *, watchdog_usec: int | None = None) -> None:
        self._address = _socket_address(address) if address else None
        self._watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None
        self._failed = False
        if self._address is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # A full receive queue in PID 1 must cost us a lost message, not a stalled loop.
            sock.setblocking(False)
            self._sock = sock

    @classmethod
    def from_environment(
        cls, env: Mapping[str, str] = os.environ, *, pid: int | None = None
    ) -> Notifier:
        """The notifier systemd asked for; a no-op one outside systemd."""
        address = env.get("NOTIFY_SOCKET") or None
        if address is not None and not address.startswith(("/", "@")):
            # e.g. "vsock:" addresses of newer systemd: not for a daemon on the host itself.
            log.warning("sd_notify_unsupported_socket", notify_socket=address)
            address = None
        return cls(address, watchdog_usec=_watchdog_usec(env, os.getpid() if pid is None else pid))

    @classmethod
    def disabled(cls) -> Notifier:
        return cls(None)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings: half of WatchdogSec=, as sd_watchdog_enabled(3)
        advises; None when systemd runs no watchdog for this process."""
        if self._watchdog_usec is None or not self.enabled:
            return None
        return self._watchdog_usec / 2 / 1_000_000

    def ready(self, status: str | None = None) -> None:
        self._send("READY=1", status)

    def reloading(self) -> None:
        # MONOTONIC_USEC is what Type=notify-reload (systemd >= 253) requires with RELOADING=1;
        # older managers ignore it.
        self._send("RELOADING=1", None, f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def status(self, text: str) -> None:
        self._send(None, text)

    def stopping(self) -> None:
        self._send("STOPPING=1", None)

    def watchdog(self) -> None:
        self._send("WATCHDOG=1", None)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _send(self, state: str | None, status: str | None, *extra: str) -> None:
        if self._sock is None or self._address is None:
            return
        lines = [line for line in (state, *extra) if line]
        if status is not None:
            lines.append("STATUS=" + " ".join(status.splitlines()))
        try:
            self._sock.sendto("\n".join(lines).encode(), self._address)
        except OSError as exc:
            # Once at warning: a broken socket fails every message, and the watchdog would repeat
            # the same line every few seconds.
            if not self._failed:
                self._failed = True
                log.warning("sd_notify_failed", error=str(exc), message=lines[0])
            else:
                log.debug("sd_notify_failed", error=str(exc), message=lines[0])


def _socket_address(address: str) -> str:
    # "@name" is Linux's abstract namespace: a leading NUL byte, no file.
    return "\0" + address[1:] if address.startswith("@") else address


def _watchdog_usec(env: Mapping[str, str], pid: int) -> int | None:
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    # WATCHDOG_PID names the process the watchdog is meant for; a child that inherited the
    # variables must not ping on its parent's behalf.
    watchdog_pid = env.get("WATCHDOG_PID")
    if watchdog_pid is not None:
        try:
            if int(watchdog_pid) != pid:
                return None
        except ValueError:
            return None
    return usec


async def keep_alive(notifier: Notifier, status: Callable[[], str]) -> None:
    """Ping the watchdog and keep STATUS current, until cancelled.

    It runs on the event loop on purpose: a loop that is blocked stops the pings, and systemd
    restarts the service after WatchdogSec=.
    """
    interval = notifier.watchdog_interval()
    tick = STATUS_EVERY if interval is None else min(interval, STATUS_EVERY)
    sent = None
    while True:
        if interval is not None:
            notifier.watchdog()
        text = status()
        if text != sent:
            notifier.status(text)
            sent = text
        await asyncio.sleep(tick)
