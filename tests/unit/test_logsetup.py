"""Logging as the command line configures it: JSON lines off a terminal, reconfigurable."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import structlog

from poolwatch.logsetup import configure_logging


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
