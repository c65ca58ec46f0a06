"""Structured logging: one structlog configuration for the whole process.

Events are short snake_case names with key=value context, rendered for humans on a terminal and
as JSON lines otherwise (journald and log shippers keep them intact).
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


def configure_logging(*, level: LogLevel, fmt: LogFormat, stream: TextIO | None = None) -> None:
    """Configure structlog; safe to call again, e.g. when SIGHUP changes the level.

    `stream` defaults to sys.stderr as it is at call time (so test capture sees it).
    """
    out = sys.stderr if stream is None else stream
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
        logger_factory=structlog.PrintLoggerFactory(file=out),
        # Cached loggers would keep the old level filter after a SIGHUP reconfiguration.
        cache_logger_on_first_use=False,
    )
