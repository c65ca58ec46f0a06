"""Logging as the command line configures it: JSON lines off a terminal, reconfigurable."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import structlog

from poolwatch.logsetup import LogOutput, configure_logging


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    # configure_logging changes structlog for the whole process; other tests expect its defaults.
    yield
    structlog.reset_defaults()


def test_json_logs_one_object_per_line() -> None:
    stream = io.StringIO()
    configure_logging(level="info", fmt="json", stream=stream)

    structlog.get_logger().info("pool_started", pool="default", host="kvm01")
    structlog.get_logger().debug("filtered_out")

    (line,) = stream.getvalue().splitlines()
    event = json.loads(line)
    assert event["event"] == "pool_started"
    assert (event["pool"], event["host"], event["level"]) == ("default", "kvm01", "info")
    assert event["timestamp"].endswith("Z")


def test_auto_format_is_json_off_a_terminal_and_console_on_one() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    piped, terminal = io.StringIO(), Terminal()
    configure_logging(level="info", fmt="auto", stream=piped)
    structlog.get_logger().info("pool_started", pool="default")
    configure_logging(level="info", fmt="auto", stream=terminal)
    structlog.get_logger().info("pool_started", pool="default")

    assert json.loads(piped.getvalue())["event"] == "pool_started"
    assert "pool_started" in terminal.getvalue()
    assert not terminal.getvalue().startswith("{")


def test_reconfiguring_changes_the_level_of_existing_loggers() -> None:
    stream = io.StringIO()
    log = structlog.get_logger()
    configure_logging(level="info", fmt="json", stream=stream)
    log.debug("hidden")
    configure_logging(level="debug", fmt="json", stream=stream)
    log.debug("shown")

    assert [json.loads(line)["event"] for line in stream.getvalue().splitlines()] == ["shown"]


class FullDisk(io.StringIO):
    """A stream on a full filesystem: every flush fails with ENOSPC."""

    def flush(self) -> None:
        raise OSError(28, "No space left on device")


def test_a_line_that_cannot_be_written_is_counted_not_raised() -> None:
    output = configure_logging(level="info", fmt="json", stream=FullDisk())

    structlog.get_logger().info("http_listening")  # raised OSError at start, and poolwatch died
    structlog.get_logger().warning("libvirt_disconnected", reason="eof")

    assert output.dropped == 2


def test_a_closed_stream_drops_lines_too() -> None:
    stream = io.StringIO()
    output = configure_logging(level="info", fmt="json", stream=stream)
    stream.close()

    structlog.get_logger().info("shutting_down")

    assert output.dropped == 1
    assert output.isatty() is False


def test_reconfiguring_keeps_the_output_and_its_count() -> None:
    stream = io.StringIO()
    output = configure_logging(level="info", fmt="json", stream=FullDisk())
    structlog.get_logger().info("lost")
    again = configure_logging(level="debug", fmt="json", stream=output)

    assert again is output
    assert isinstance(again, LogOutput)
    assert again.dropped == 1
    assert stream.getvalue() == ""
