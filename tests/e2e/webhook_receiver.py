"""A loopback receiver of Alertmanager's webhook notifications: what the person on call would get.

It keeps every notification posted to it (Alertmanager's webhook JSON, version 4: a group's
``status``, ``groupLabels``, ``commonLabels`` and its ``alerts``, each with its own ``status``
and ``labels``) and answers 200. Serve :meth:`WebhookReceiver.app` with tests.helpers.serving.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tests.helpers import eventually

Notification = dict[str, Any]


class WebhookReceiver:
    def __init__(self) -> None:
        self.notifications: list[Notification] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{path:.*}", self._receive)
        return app

    async def _receive(self, request: web.Request) -> web.Response:
        self.notifications.append(await request.json())
        return web.Response(text="ok")

    async def wait_for(
        self, check: Callable[[Notification], bool], *, within: float, what: str
    ) -> Notification:
        """The first notification (received so far or later) for which ``check`` holds."""
        found: list[Notification] = []

        async def arrived() -> bool:
            found[:] = [n for n in self.notifications if check(n)][:1]
            return bool(found)

        try:
            await eventually(arrived, within=within, interval=0.1)
        except AssertionError:
            raise AssertionError(f"no notification {what} within {within}s; got:\n{self}") from None
        return found[0]

    def __str__(self) -> str:
        """The notifications, one line each: status, then each alert's name and status."""
        return "\n".join(json.dumps(summary(n)) for n in self.notifications) or "(none)"


def firing(notification: Notification) -> dict[str, dict[str, str]]:
    """alertname -> labels of each alert that the notification says is firing."""
    return {
        alert["labels"]["alertname"]: alert["labels"]
        for alert in notification["alerts"]
        if alert["status"] == "firing"
    }


def resolved(notification: Notification) -> dict[str, dict[str, str]]:
    """alertname -> labels of each alert that the notification says has resolved."""
    return {
        alert["labels"]["alertname"]: alert["labels"]
        for alert in notification["alerts"]
        if alert["status"] == "resolved"
    }


def summary(notification: Notification) -> dict[str, Any]:
    return {
        "status": notification["status"],
        "groupLabels": notification["groupLabels"],
        "alerts": [(a["labels"]["alertname"], a["status"]) for a in notification["alerts"]],
    }
