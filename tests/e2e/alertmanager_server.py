"""A real Alertmanager (Debian's ``prometheus-alertmanager`` package) for the e2e tier.

Started on a free loopback port with its gossip cluster switched off (an empty
``--cluster.listen-address``: no port of its own, no peers), its configuration and its
notification log and silences under a private directory, queried through its v2 API, and
stopped by its pid; the directory goes with it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.e2e.prometheus_server import find_tool, free_port
from tests.helpers import fetch

BINARY = "prometheus-alertmanager"  # Debian's name; upstream calls it alertmanager
START_TIMEOUT = 20.0  # seconds until /-/ready answers 200
STOP_TIMEOUT = 10.0  # seconds for SIGTERM before SIGKILL


def find_alertmanager() -> Path:
    """/usr/bin/prometheus-alertmanager; else skip, or fail in CI."""
    return find_tool(BINARY, package=BINARY)


def find_amtool() -> Path:
    return find_tool("amtool", package=BINARY)


class AlertmanagerServer:
    """``prometheus-alertmanager`` with ``config`` (alertmanager.yml text); see :meth:`stop`."""

    def __init__(self, binary: Path, config: str) -> None:
        self.binary = binary
        self.config = config
        self.dir = Path(tempfile.mkdtemp(prefix="poolwatch-e2e-alertmanager-"))
        self.log = self.dir / "alertmanager.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.address = ""  # 127.0.0.1:PORT, for Prometheus's alerting config
        self.url = ""

    async def start(self) -> AlertmanagerServer:
        config = self.dir / "alertmanager.yml"
        config.write_text(self.config)
        # The port is free when chosen but could be taken before Alertmanager binds it: retry.
        for _ in range(3):
            self.address = f"127.0.0.1:{free_port()}"
            self.url = f"http://{self.address}"
            self._spawn(config)
            if await self._ready():
                return self
            self.stop_process()
            if "address already in use" not in self.log.read_text(errors="replace"):
                break
        raise AssertionError(f"Alertmanager did not become ready:\n{self.log_tail()}")

    def _spawn(self, config: Path) -> None:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    str(self.binary),
                    f"--config.file={config}",
                    f"--storage.path={self.dir / 'data'}",
                    f"--web.listen-address={self.address}",
                    "--cluster.listen-address=",
                    "--log.level=info",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
            )

    async def _ready(self) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                status, _ = await fetch(f"{self.url}/-/ready", within=2.0)
            except (OSError, aiohttp.ClientError):  # not listening yet
                status = 0
            if status == 200:
                return True
            await asyncio.sleep(0.1)
        return False

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    async def alerts(self) -> list[dict[str, Any]]:
        """Every alert Alertmanager holds, with its ``status`` (state, inhibitedBy, ...)."""
        status, text = await fetch(f"{self.url}/api/v2/alerts")
        assert status == 200, text
        alerts: list[dict[str, Any]] = json.loads(text)
        return alerts

    def stop_process(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()  # SIGTERM to this pid only
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT)
        self.proc = None

    def stop(self) -> None:
        """Stop Alertmanager and remove its configuration and data."""
        try:
            self.stop_process()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
