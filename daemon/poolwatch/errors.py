"""Exceptions that cross module boundaries and map to poolwatch's exit codes."""

from __future__ import annotations

from collections.abc import Iterable


class StartupError(Exception):
    """The daemon cannot start, e.g. its listen address cannot be bound (exit code 4).

    The message is shown to the operator on one line, so it should say what failed and why,
    e.g. "cannot listen on :9479: address already in use".
    """


class ConfigError(Exception):
    """The configuration cannot be used; `errors` holds one `key.path: message` per problem."""

    def __init__(self, source: str, errors: Iterable[str]) -> None:
        self.source = source
        self.errors = list(errors)
        super().__init__(source, self.errors)

    def __str__(self) -> str:
        count = len(self.errors)
        noun = "error" if count == 1 else "errors"
        lines = [f"invalid configuration in {self.source} ({count} {noun}):"]
        lines.extend(f"  {error}" for error in self.errors)
        return "\n".join(lines)
