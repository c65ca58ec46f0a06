"""A real Alertmanager (Debian's ``prometheus-alertmanager`` package) for the e2e tier.

Started on a free loopback port with its gossip cluster switched off (an empty
``--cluster.listen-address``: no port of its own, no peers), its configuration and its
notification log and silences under a private directory, queried through its v2 API, and
stopped by its pid; the directory goes with it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.e2e.prometheus_server import LoopbackServer, find_tool
from tests.helpers import fetch

BINARY = "prometheus-alertmanager"  # Debian's name; upstream calls it alertmanager


def find_alertmanager() -> Path:
    """/usr/bin/prometheus-alertmanager; else skip, or fail in CI."""
    return find_tool(BINARY, package=BINARY)


def find_amtool() -> Path:
    return find_tool("amtool", package=BINARY)


class AlertmanagerServer(LoopbackServer):
    """``prometheus-alertmanager`` with ``config`` (alertmanager.yml text); see :meth:`stop`.
    ``address`` is what Prometheus's alerting config names."""

    name = "Alertmanager"

    def __init__(self, binary: Path, config: str) -> None:
        super().__init__(binary)
        self.config = config

    def write_config(self) -> Path:
        config = self.dir / "alertmanager.yml"
        config.write_text(self.config)
        return config

    def argv(self, config: Path) -> list[str]:
        return [
            f"--config.file={config}",
            f"--storage.path={self.dir / 'data'}",
            f"--web.listen-address={self.address}",
            "--cluster.listen-address=",
            "--log.level=info",
        ]

    async def alerts(self) -> list[dict[str, Any]]:
        """Every alert Alertmanager holds, with its ``status`` (state, inhibitedBy, ...)."""
        status, text = await fetch(f"{self.url}/api/v2/alerts")
        assert status == 200, text
        alerts: list[dict[str, Any]] = json.loads(text)
        return alerts
