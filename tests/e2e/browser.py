"""Headless Chromium (Debian's ``chromium`` package) driven over the DevTools protocol.

Just enough of the protocol to load a page, evaluate JavaScript in it, record every request it
makes and take a screenshot: a small client on aiohttp's websocket, no Selenium or WebDriver.

Chromium runs in a session (and process group) of its own under coreutils' ``timeout``, so it
cannot outlive :data:`MAX_RUN_SECONDS` even if the test run is killed; :meth:`Chromium.stop`
ends the group by its id, then any straggler that names the private directory (its crash
handler starts a session of its own), and removes the directory: profile, HOME and logs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from tests.helpers import unavailable

CHROMIUM = "/usr/bin/chromium"
# The flags matter on a closed network: no sandbox (root in a container), no GPU, and none of
# the background traffic (component updates, sync, QUIC probes) that would hang or phone out.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--mute-audio",
    "--hide-scrollbars",
    "--window-size=1280,900",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)
START_TIMEOUT = 15.0  # seconds until the DevTools endpoint is up
CALL_TIMEOUT = 10.0  # seconds for any one protocol call or page load
STOP_TIMEOUT = 5.0  # seconds for SIGTERM before SIGKILL
MAX_RUN_SECONDS = 120  # hard bound on Chromium's life, enforced by timeout(1)


def find_chromium() -> Path:
    """/usr/bin/chromium, or ``chromium`` on PATH; else fail in CI and skip elsewhere."""
    found = shutil.which("chromium") or (CHROMIUM if os.access(CHROMIUM, os.X_OK) else None)
    if found is None:
        unavailable(
            "chromium not found: install Debian's chromium package "
            "(apt-get install --no-install-recommends chromium; scripts/bootstrap.sh does)"
        )
    return Path(found)


class BrowserError(AssertionError):
    """Chromium did not start, or a protocol call failed or timed out."""


class Chromium:
    """One headless Chromium and the websocket to its browser-wide DevTools endpoint."""

    def __init__(self, binary: Path) -> None:
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="poolwatch-e2e-chromium-"))
        self.profile = self.dir / "profile"
        self.log = self.dir / "chromium.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._listeners: list[Callable[[dict[str, Any]], None]] = []

    async def start(self) -> Chromium:
        home = self.dir / "home"
        home.mkdir()
        # Chromium writes crash-handler state and caches under HOME, and shared-memory files
        # (org.chromium.Chromium.*) under TMPDIR: keep them all in our directory.
        env = {
            **os.environ,
            "HOME": str(home),
            "TMPDIR": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_CACHE_HOME": str(home / ".cache"),
        }
        args = [
            "timeout",
            "--kill-after=5",
            str(MAX_RUN_SECONDS),
            str(self.binary),
            *FLAGS,
            f"--user-data-dir={self.profile}",
            "about:blank",
        ]
        self._spawn(args, env)
        try:
            await self._connect()
        except BaseException:
            await self.stop()
            raise
        return self

    def _spawn(self, args: list[str], env: dict[str, str]) -> None:
        with self.log.open("wb") as log:
            # A session of its own: the process group has timeout's pid, and a signal to the
            # test run's terminal does not reach Chromium half-way through a stop.
            self.proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                start_new_session=True,
            )

    async def _connect(self) -> None:
        assert self.proc is not None
        # Chromium writes the port it bound and the browser target's path to this file.
        active_port = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            lines = active_port.read_text().split() if active_port.exists() else []
            if len(lines) == 2:
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BrowserError(
                    f"chromium did not open its DevTools port (exit code {self.proc.poll()}): "
                    f"{self.log_tail()}"
                )
            await asyncio.sleep(0.05)
        port, path = lines
        self._http = aiohttp.ClientSession()
        self._ws = await self._http.ws_connect(
            f"ws://127.0.0.1:{port}{path}",
            max_msg_size=0,
            timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
        )
        self._reader = asyncio.create_task(self._read(), name="chromium devtools reader")

    def _gone(self) -> str:
        code = None if self.proc is None else self.proc.poll()
        if code is None:
            return "chromium is still running"
        return f"chromium exited with {code} (124, 137: killed by timeout): {self.log_tail(5)}"

    def log_tail(self, lines: int = 20) -> str:
        """The end of Chromium's output, without its harmless D-Bus complaints."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        kept = [line for line in text.splitlines() if "dbus" not in line.lower()]
        return "\n".join(kept[-lines:])

    async def _read(self) -> None:
        assert self._ws is not None
        async for message in self._ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            data = message.json()
            if "id" in data:
                future = self._pending.pop(data["id"], None)
                if future is not None and not future.done():
                    future.set_result(data)
            else:
                for listener in list(self._listeners):
                    listener(data)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(BrowserError(f"DevTools connection closed; {self._gone()}"))
        self._pending.clear()

    async def call(
        self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None
    ) -> dict[str, Any]:
        """One protocol command; its result, or BrowserError with the protocol's error."""
        assert self._ws is not None, "not started"
        message: dict[str, Any] = {"id": next(self._ids), "method": method}
        message["params"] = params or {}
        if session is not None:
            message["sessionId"] = session
        future = asyncio.get_running_loop().create_future()
        self._pending[message["id"]] = future
        try:
            await self._ws.send_json(message)
        except (ConnectionError, aiohttp.ClientError) as exc:
            self._pending.pop(message["id"], None)
            raise BrowserError(f"{method}: {exc}; {self._gone()}") from None
        try:
            reply = await asyncio.wait_for(future, CALL_TIMEOUT)
        except TimeoutError:
            raise BrowserError(f"{method} got no answer within {CALL_TIMEOUT} s") from None
        finally:
            self._pending.pop(message["id"], None)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def new_page(self) -> Page:
        """A fresh tab, attached, with the Page, Network and Runtime domains enabled."""
        target = await self.call("Target.createTarget", {"url": "about:blank"})
        attached = await self.call(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        page = Page(self, attached["sessionId"])
        self._listeners.append(page.on_event)
        for domain in ("Page", "Network", "Runtime"):
            await page.call(f"{domain}.enable")
        return page

    async def stop(self) -> None:
        """Close the connection; end Chromium's process group by its id, then its stragglers;
        remove the directory."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._http is not None:
            await self._http.close()
        await asyncio.to_thread(self._kill)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _kill(self) -> None:
        if self.proc is not None:
            pgid = self.proc.pid  # a session leader: its process group has its id
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(STOP_TIMEOUT)
            # Renderers and zygotes may outlive the browser process for a moment.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            self.proc.wait(STOP_TIMEOUT)
        self._kill_stragglers()

    def _kill_stragglers(self) -> None:
        """Chromium's crash handlers start sessions of their own; they name our directory."""
        marker = str(self.dir).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if marker in (entry / "cmdline").read_bytes():
                    os.kill(int(entry.name), signal.SIGKILL)
            except (OSError, ProcessLookupError):
                continue


class Page:
    """One tab: navigation, JavaScript, screenshots, and what it requested and opened."""

    def __init__(self, browser: Chromium, session: str) -> None:
        self.browser = browser
        self.session = session
        self.requests: list[str] = []  # every URL the page asked for, in order
        self.dialogs: list[str] = []  # alert()/confirm()/prompt() messages, dismissed
        self.exceptions: list[str] = []  # uncaught JavaScript exceptions
        self._loaded = asyncio.Event()

    async def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.browser.call(method, params, session=self.session)

    def on_event(self, event: dict[str, Any]) -> None:
        if event.get("sessionId") != self.session:
            return
        method, params = event["method"], event.get("params", {})
        if method == "Network.requestWillBeSent":
            self.requests.append(params["request"]["url"])
        elif method == "Page.loadEventFired":
            self._loaded.set()
        elif method == "Page.javascriptDialogOpening":
            self.dialogs.append(params.get("message", ""))
            # A dialog blocks the page until answered.
            asyncio.get_running_loop().create_task(
                self.call("Page.handleJavaScriptDialog", {"accept": False})
            )
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.exceptions.append(str(details.get("exception", details)))

    async def goto(self, url: str) -> None:
        """Navigate and wait for the load event (the page and all its subresources)."""
        self._loaded.clear()
        result = await self.call("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise BrowserError(f"loading {url}: {result['errorText']}")
        try:
            await asyncio.wait_for(self._loaded.wait(), CALL_TIMEOUT)
        except TimeoutError:
            raise BrowserError(f"{url} did not finish loading in {CALL_TIMEOUT} s") from None

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (JSON-serialisable), awaited if a promise."""
        result = await self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"JavaScript failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page (not only the 1280x900 viewport) at ``path``."""
        metrics = await self.call("Page.getLayoutMetrics")
        size = metrics["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        shot = await self.call(
            "Page.captureScreenshot",
            {"format": "png", "clip": clip, "captureBeyondViewport": True},
        )
        await asyncio.to_thread(path.write_bytes, base64.b64decode(shot["data"]))
        return path
