"""Structured logging: one structlog configuration for the whole process.

Events are short snake_case names with key=value context, rendered for humans on a terminal and
as JSON lines otherwise (journald and log shippers keep them intact). A line that cannot be
written (a full disk under stderr, a closed pipe) is dropped and counted, never raised: the
daemon must not die, or stop serving, because its log could not be written.
"""

from __future__ import annotations

import sys
from typing import TextIO

import structlog
from structlog.typing import Processor

from poolwatch.config import LogFormat, LogLevel

# Keys that structlog and the processors below write into events (`level` is the severity), or
# that the renderers show specially: a log call passing one as context would be overwritten or
# misrendered, so context uses other names (a pool's alarm level is `threshold_level`).
RESERVED_KEYS = frozenset(
    {"event", "level", "timestamp", "exception", "stack", "logger", "logger_name"}
)
# structlog's own flags: passed as `True` to ask for a traceback or a stack, never as context.
FLAG_KEYS = frozenset({"exc_info", "stack_info"})


class LogOutput:
    """The stream log lines go to, which never raises: a line that fails is counted instead."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.dropped = 0  # lines lost, for poolwatch_log_lines_dropped_total
        self._pending: list[str] = []

    def write(self, text: str) -> int:
        # print() writes a line in pieces (the text, then "\n"): each line goes out whole, once.
        self._pending.append(text)
        if text.endswith("\n"):
            line = "".join(self._pending)
            self._pending.clear()
            try:
                self.stream.write(line)
                self.stream.flush()
            except (OSError, ValueError):  # ENOSPC, EPIPE, EIO; ValueError: a closed stream
                self.dropped += 1
        return len(text)

    def flush(self) -> None:
        """Lines are flushed as they are written."""

    def isatty(self) -> bool:
        try:
            return self.stream.isatty()
        except (OSError, ValueError):
            return False


def configure_logging(
    *, level: LogLevel, fmt: LogFormat, stream: TextIO | LogOutput | None = None
) -> LogOutput:
    """Configure structlog; safe to call again, e.g. when SIGHUP changes the level.

    `stream` defaults to sys.stderr as it is at call time (so test capture sees it). Returns
    the `LogOutput` in use; pass it again on later calls to keep its count of dropped lines.
    """
    out = stream if isinstance(stream, LogOutput) else LogOutput(stream or sys.stderr)
    console = fmt == "console" or (fmt == "auto" and out.isatty())
    processors: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    if console:
        # ConsoleRenderer formats exc_info itself, readably; pre-rendering would flatten it.
        processors.append(structlog.dev.ConsoleRenderer(colors=out.isatty()))
    else:
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # PrintLogger needs only write() and flush(); its annotation asks for a whole TextIO.
        logger_factory=structlog.PrintLoggerFactory(file=out),  # type: ignore[arg-type]
        # Cached loggers would keep the old level filter after a SIGHUP reconfiguration.
        cache_logger_on_first_use=False,
    )
    return out
