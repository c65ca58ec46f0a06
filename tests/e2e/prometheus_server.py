"""A real Prometheus server (Debian's ``prometheus`` package) for the e2e tier.

Started on a free loopback port with its own configuration and TSDB under a private directory,
queried through its HTTP API, and stopped by its pid; the directory goes with it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Self

import aiohttp

from tests.helpers import eventually, fetch, unavailable

START_TIMEOUT = 20.0  # seconds until /-/ready answers 200
STOP_TIMEOUT = 10.0  # seconds for SIGTERM before SIGKILL


def find_tool(name: str, *, package: str = "prometheus") -> Path:
    """``/usr/bin/NAME`` (from Debian's ``package``) or NAME on PATH; else skip or fail."""
    found = shutil.which(name) or shutil.which(name, path="/usr/bin")
    if found is None:
        unavailable(
            f"{name} not found: install Debian's {package} package (scripts/bootstrap.sh "
            "does, as root)"
        )
    return Path(found)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LoopbackServer:
    """A server of the Prometheus family (Prometheus, Alertmanager) run for a test: its files
    under a private directory, started on a free loopback port (again on another port if that
    one was taken meanwhile) until ``/-/ready`` answers, stopped by its pid; see :meth:`stop`.

    Subclasses name themselves, write their configuration and give their command line.
    """

    name = "server"

    def __init__(self, binary: Path) -> None:
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix=f"poolwatch-e2e-{self.name.lower()}-"))
        self.log = self.dir / f"{self.name.lower()}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.address = ""  # 127.0.0.1:PORT
        self.url = ""

    def write_config(self) -> Path:
        raise NotImplementedError

    def argv(self, config: Path) -> list[str]:
        """The command line after the binary, listening on ``self.address``."""
        raise NotImplementedError

    async def start(self) -> Self:
        config = self.write_config()
        for _ in range(3):
            self.address = f"127.0.0.1:{free_port()}"
            self.url = f"http://{self.address}"
            self._spawn(config)
            if await self._ready():
                return self
            self.stop_process()
            if "address already in use" not in self.log.read_text(errors="replace"):
                break
        raise AssertionError(f"{self.name} did not become ready:\n{self.log_tail()}")

    def _spawn(self, config: Path) -> None:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [str(self.binary), *self.argv(config)],
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
        """Stop the server and remove its configuration and data."""
        try:
            self.stop_process()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


class PrometheusServer(LoopbackServer):
    """``prometheus`` with ``config`` (a prometheus.yml as a dict), stopped by :meth:`stop`.

    ``files`` are written next to the configuration first (file_sd target files, say), so
    relative paths in ``config`` resolve the way they do in a real installation.
    """

    name = "Prometheus"

    def __init__(
        self, binary: Path, config: dict[str, Any], files: dict[str, str] | None = None
    ) -> None:
        super().__init__(binary)
        self.config = config
        self.files = files or {}

    def write_config(self) -> Path:
        for name, text in self.files.items():
            path = self.dir / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        config = self.dir / "prometheus.yml"
        config.write_text(json.dumps(self.config, indent=2))  # JSON is YAML
        return config

    def argv(self, config: Path) -> list[str]:
        return [
            f"--config.file={config}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            f"--web.listen-address={self.address}",
            "--log.level=info",
        ]

    async def api(self, path: str, **params: str) -> Any:
        """The ``data`` of a Prometheus HTTP API answer; fails on an error answer."""
        status, text = await fetch(f"{self.url}/api/v1/{path}", params=params)
        body = json.loads(text)
        assert status == 200, f"{path} {params}: {text}"
        assert body.get("status") == "success", f"{path} {params}: {text}"
        return body["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's vector result."""
        data = await self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        result: list[dict[str, Any]] = data["result"]
        return result

    async def wait_for(self, expr: str, check: Any, *, within: float, what: str) -> Any:
        """Query ``expr`` until ``check(result)`` holds; return that result."""
        last: list[Any] = [None]

        async def holds() -> bool:
            last[0] = await self.query(expr)
            return bool(check(last[0]))

        try:
            await eventually(holds, within=within, interval=0.25)
        except AssertionError:
            raise AssertionError(
                f"{what}: {expr} is {last[0]} after {within}s\n{self.log_tail()}"
            ) from None
        return last[0]
