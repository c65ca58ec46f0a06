"""`WebSecurity`, the live web config of one running server, reloaded when its files change.

It re-reads the file, and the certificate, key and CA files it names, when any of them changes
(and on SIGHUP); a reload that fails leaves the running settings in place. New TLS connections
switch to the newest `SSLContext` (see `poolwatch.web.tls.TLSListener`), so renewed certificates
and changed client CAs apply without a restart while the listening sockets keep their original
context.

This module knows nothing of aiohttp: `poolwatch.web.app` turns a `WebSecurity` into middleware
and a TLS listener.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import structlog

from poolwatch.web.auth import BasicAuth, TokenBucket
from poolwatch.web.tls import TLSListener, normal_san
from poolwatch.web.webconfig import (
    FileStamp,
    RateLimit,
    WebConfigError,
    WebSettings,
    current_stamp,
    read_web_config,
)

log = structlog.get_logger()

# How often the file and the files it names are checked for changes (stat only, no reading).
CHECK_INTERVAL = 5.0


class WebSecurity:
    """The web config of one running server: TLS listener, users, headers, rate limit.

    Raises WebConfigError when the file is invalid at start. Later, `reload()` (SIGHUP) and
    `reload_if_changed()` (a timer) swap in a valid new file; an invalid one is logged and the
    running settings stay.
    """

    def __init__(
        self,
        path: Path,
        *,
        auth: Callable[[Mapping[str, bytes]], BasicAuth] = BasicAuth,
        clock: Callable[[], float] = time.monotonic,
        on_reload: Callable[[bool], None] | None = None,
    ) -> None:
        self.path = path
        self._clock = clock
        # Told every outcome (True for the load at start): the telemetry exports it, so a
        # certificate renewal that failed shows on /metrics, not only in the log.
        self._on_reload = on_reload
        self._stamps: dict[Path, FileStamp] = {}
        settings, context = read_web_config(path, self._stamps)
        self.settings = settings
        self._listener = (
            None if settings.tls is None or context is None else TLSListener(settings.tls, context)
        )
        self.auth = auth(settings.users)
        self._limiter = self._new_limiter(settings.rate_limit)
        self._warn_about(settings)
        self._report(ok=True)

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """What the listening sockets take; None serves plain HTTP."""
        return None if self._listener is None else self._listener.context

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        return self.settings.headers

    def allow_request(self) -> bool:
        """False when the rate limit is exhausted."""
        return self._limiter is None or self._limiter.allow()

    def client_allowed(self, peercert: Mapping[str, Any] | None) -> bool:
        """Whether the verified client certificate has a SAN in client_allowed_sans (True
        without that key)."""
        sans = None if self._listener is None else self._listener.tls.allowed_sans
        if sans is None:
            return True
        if not peercert:
            return False
        return any(
            normal_san(str(value)) in sans for _, value in peercert.get("subjectAltName", ())
        )

    def changed(self) -> bool:
        """Whether the file, or a file it names, differs from what was last read."""
        return any(current_stamp(path) != stamp for path, stamp in self._stamps.items())

    def reload_if_changed(self) -> bool | None:
        """Reload when something changed: True or False for the outcome, None for no change."""
        return self.reload() if self.changed() else None

    def reload(self) -> bool:
        """Read the file again and apply it; on failure, log and keep the running settings."""
        stamps: dict[Path, FileStamp] = {}
        try:
            settings, context = read_web_config(self.path, stamps)
        except WebConfigError as exc:
            # The stamps of what failed: the next check retries only once something changes.
            self._stamps = stamps
            log.error("web_config_reload_failed", path=str(self.path), errors=exc.errors)
            self._report(ok=False)
            return False
        self._stamps = stamps
        self._apply(settings, context)
        log.info("web_config_reloaded", **settings.summary())
        self._warn_about(settings)
        self._report(ok=True)
        return True

    async def close(self) -> None:
        await self.auth.close()

    def _report(self, *, ok: bool) -> None:
        if self._on_reload is not None:
            self._on_reload(ok)

    def _apply(self, settings: WebSettings, context: ssl.SSLContext | None) -> None:
        if self._listener is None or settings.tls is None or context is None:
            if (self._listener is None) != (settings.tls is None):
                turned = "on" if settings.tls is not None else "off"
                log.warning(
                    "web_config_reload_needs_restart",
                    path=str(self.path),
                    reason=f"TLS turned {turned}; the listener keeps its scheme until a restart",
                )
        else:
            for reason in self._listener.update(settings.tls, context):
                log.warning("web_config_reload_needs_restart", path=str(self.path), reason=reason)
        self.auth.update(settings.users)
        if settings.rate_limit != self.settings.rate_limit:
            self._limiter = self._new_limiter(settings.rate_limit)
        self.settings = settings

    def _warn_about(self, settings: WebSettings) -> None:
        tls = settings.tls
        if tls is not None and tls.curve is not None and not tls.restrict_to_curve:
            log.warning(
                "web_config_curve_not_restricted",
                path=str(self.path),
                curve=tls.curve,
                reason=f"this Python's ssl cannot select {tls.curve} alone; OpenSSL's default "
                f"groups stay, {tls.curve} first, so clients that offer it first use it",
            )

    def _new_limiter(self, limit: RateLimit | None) -> TokenBucket | None:
        return None if limit is None else TokenBucket(limit, clock=self._clock)
