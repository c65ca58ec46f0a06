"""sd_notify: what systemd's notify socket receives, from the Notifier and from a real poolwatch."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from poolwatch.sdnotify import Notifier, keep_alive
from tests.helpers import PoolwatchProcess, fetch


class NotifySocket:
    """The receiving end systemd would hold: an AF_UNIX datagram socket."""

    def __init__(self, address: str) -> None:
        self.env = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)

    def receive(self, timeout: float = 5.0) -> dict[str, str]:
        """The next message as KEY=value pairs; fails after `timeout` seconds."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            raise AssertionError(f"no sd_notify message within {timeout} s") from None
        return _parse(data)

    def pending(self) -> list[dict[str, str]]:
        out = []
        self.sock.setblocking(False)
        try:
            while True:
                out.append(_parse(self.sock.recv(4096)))
        except BlockingIOError:
            return out

    def close(self) -> None:
        self.sock.close()


def _parse(datagram: bytes) -> dict[str, str]:
    pairs = [line.split("=", 1) for line in datagram.decode().split("\n")]
    assert all(len(pair) == 2 for pair in pairs), datagram
    return dict(pairs)


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    path = tmp_path / "notify"
    assert len(str(path)) < 100, f"unix socket path too long: {path}"
    receiver = NotifySocket(str(path))
    yield receiver
    receiver.close()


@pytest.fixture
def abstract_socket() -> Iterator[NotifySocket]:
    receiver = NotifySocket(f"@poolwatch-test-{uuid.uuid4().hex}")
    yield receiver
    receiver.close()


@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_messages_reach_the_socket(
    kind: str, path_socket: NotifySocket, abstract_socket: NotifySocket
) -> None:
    receiver = path_socket if kind == "path" else abstract_socket
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": receiver.env})
    try:
        assert notifier.enabled
        notifier.ready("pools: 3")
        assert receiver.receive() == {"READY": "1", "STATUS": "pools: 3"}
        notifier.status("two\nlines")
        assert receiver.receive() == {"STATUS": "two lines"}
        notifier.watchdog()
        assert receiver.receive() == {"WATCHDOG": "1"}
        notifier.reloading()
        reloading = receiver.receive()
        assert reloading["RELOADING"] == "1"
        assert abs(int(reloading["MONOTONIC_USEC"]) - time.monotonic_ns() // 1000) < 10_000_000
        notifier.stopping()
        assert receiver.receive() == {"STOPPING": "1"}
    finally:
        notifier.close()
    notifier.stopping()  # closed: a no-op, not an error


def test_without_notify_socket_everything_is_a_no_op() -> None:
    notifier = Notifier.from_environment({"WATCHDOG_USEC": "30000000"})
    assert not notifier.enabled
    assert notifier.watchdog_interval() is None
    with capture_logs() as logs:
        notifier.ready("x")
        notifier.status("x")
        notifier.reloading()
        notifier.watchdog()
        notifier.stopping()
        notifier.close()
    assert logs == []


def test_an_unsupported_socket_address_disables_notification() -> None:
    with capture_logs() as logs:
        notifier = Notifier.from_environment({"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not notifier.enabled
    assert [e["event"] for e in logs] == ["sd_notify_unsupported_socket"]


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({"WATCHDOG_USEC": "400000"}, 0.2),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4243"}, None),  # meant for another pid
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "x"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "30s"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec(
    env: dict[str, str], interval: float | None, path_socket: NotifySocket
) -> None:
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": path_socket.env, **env}, pid=4242)
    try:
        assert notifier.watchdog_interval() == interval
    finally:
        notifier.close()


def test_watchdog_pid_defaults_to_our_own_pid(path_socket: NotifySocket) -> None:
    env = {"NOTIFY_SOCKET": path_socket.env, "WATCHDOG_USEC": "2000000"}
    ours = Notifier.from_environment({**env, "WATCHDOG_PID": str(os.getpid())})
    theirs = Notifier.from_environment({**env, "WATCHDOG_PID": str(os.getpid() + 1)})
    try:
        assert ours.watchdog_interval() == 1.0
        assert theirs.watchdog_interval() is None
    finally:
        ours.close()
        theirs.close()


def test_a_failing_socket_is_logged_once_and_never_raises(tmp_path: Path) -> None:
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    try:
        with capture_logs() as logs:
            notifier.ready("x")
            notifier.watchdog()
            notifier.watchdog()
        assert [(e["event"], e["log_level"]) for e in logs] == [
            ("sd_notify_failed", "warning"),
            ("sd_notify_failed", "debug"),
            ("sd_notify_failed", "debug"),
        ]
    finally:
        notifier.close()


def test_a_full_socket_drops_messages_instead_of_blocking(path_socket: NotifySocket) -> None:
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": path_socket.env})

    def flood() -> None:
        for _ in range(5000):  # far more than an unread datagram queue holds
            notifier.watchdog()

    try:
        with capture_logs():
            flooding = threading.Thread(target=flood, daemon=True)
            flooding.start()
            flooding.join(10)
        assert not flooding.is_alive(), "sending blocked on a full notify socket"
    finally:
        notifier.close()


async def test_keep_alive_pings_and_sends_status_when_it_changes(
    path_socket: NotifySocket,
) -> None:
    notifier = Notifier.from_environment(
        {"NOTIFY_SOCKET": path_socket.env, "WATCHDOG_USEC": "40000"}  # a ping every 20 ms
    )
    status = ["pools: 0"]
    task = asyncio.create_task(keep_alive(notifier, lambda: status[0]))
    try:
        await asyncio.sleep(0.15)
        status[0] = "pools: 2"
        await asyncio.sleep(0.15)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        notifier.close()
    messages = path_socket.pending()
    assert sum(1 for m in messages if m.get("WATCHDOG") == "1") >= 5
    assert [m["STATUS"] for m in messages if "STATUS" in m] == ["pools: 0", "pools: 2"]


async def test_keep_alive_without_watchdog_only_sends_status(path_socket: NotifySocket) -> None:
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": path_socket.env})
    task = asyncio.create_task(keep_alive(notifier, lambda: "pools: 1"))
    try:
        await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        notifier.close()
    assert path_socket.pending() == [{"STATUS": "pools: 1"}]


# -- a real poolwatch process ------------------------------------------------------------------


class Recorder:
    """Every message the socket receives, with its arrival time, read by a thread of its own."""

    def __init__(self, receiver: NotifySocket) -> None:
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._receiver = receiver
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                message = self._receiver.receive(timeout=0.05)
            except AssertionError:
                continue
            self.messages.append((time.monotonic(), message))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)

    async def wait_for(self, key: str, value: str, *, after: int = 0, within: float = 10.0) -> int:
        """Index of the first message from `after` on with key=value; fails after `within` s."""
        deadline = time.monotonic() + within
        while True:
            for index in range(after, len(self.messages)):
                if self.messages[index][1].get(key) == value:
                    return index
            if time.monotonic() > deadline:
                raise AssertionError(f"no {key}={value} within {within} s: {self.messages}")
            await asyncio.sleep(0.01)


async def test_poolwatch_process_notifies_systemd(path_socket: NotifySocket) -> None:
    recorder = Recorder(path_socket)
    process = PoolwatchProcess(
        "--libvirt.uri",
        "test:///default",
        "--web.listen-address",
        "127.0.0.1:0",
        env={"NOTIFY_SOCKET": path_socket.env, "WATCHDOG_USEC": "400000"},
    )
    process.start()
    try:
        ready = await recorder.wait_for("READY", "1")
        # READY is sent after the listeners are bound: the port answers at once.
        status, _ = await fetch(f"{process.url}/healthz")
        assert status == 200
        assert "libvirt connections up" in recorder.messages[ready][1]["STATUS"]

        # The STATUS line follows the connection once it is up (test:///default has one pool).
        await recorder.wait_for("STATUS", "pools: 1, libvirt connections up: 1/1", after=ready)

        # WATCHDOG=1 at half of WATCHDOG_USEC (0.2 s), from the event loop.
        await asyncio.sleep(2.0)
        times = [at for at, message in recorder.messages if message.get("WATCHDOG") == "1"]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert len(times) >= 8, times
        assert 0.1 < statistics.median(gaps) < 0.3, gaps
        assert max(gaps) < 0.4, f"a gap as long as WATCHDOG_USEC would get us killed: {gaps}"

        # SIGHUP: RELOADING=1, then READY=1 again (here the reload is skipped: no config file).
        mark = len(recorder.messages)
        process.signal(signal.SIGHUP)
        reloading = await recorder.wait_for("RELOADING", "1", after=mark)
        await recorder.wait_for("READY", "1", after=reloading)

        mark = len(recorder.messages)
        process.signal(signal.SIGTERM)
        await recorder.wait_for("STOPPING", "1", after=mark)
        assert process.proc is not None
        # Waited for, not stop()ped: a second SIGTERM during shutdown would kill it outright.
        assert await asyncio.to_thread(process.proc.wait, 10) == 0
    finally:
        process.stop()
        recorder.close()
