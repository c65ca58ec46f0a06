"""Operator messages for validation errors: pydantic's errors as `key.path: message` lines.

A `Dialect` holds what differs between the files poolwatch reads: how a key path writes keys,
the wording of pydantic's error types, which error types carry final messages of their own, and
whether the offending value may be echoed. `TOML` is the configuration file's; the web config file
(exporter-toolkit YAML) needs a dialect that never echoes values, since they may be password
hashes or keys.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

# A TOML bare key: written without quotes in a key path (and required of hook names).
BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")


def _no_hint(error: ErrorDetails) -> str | None:
    return None


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one file format reports validation errors.

    `messages` maps a pydantic error type to a template, filled from the error's context (e.g.
    `{ge}`, `{expected}`), `{msg}` (pydantic's own message) and, when values are echoed, `{got}`
    (the offending value as the format writes it). Types in neither `messages` nor
    `own_error_types` use `fallback`.
    """

    messages: Mapping[str, str]
    fallback: str
    # Raised by poolwatch's own validators with messages that are final: used as they are.
    own_error_types: frozenset[str]
    # The offending value as the file writes it; None: never echo values (they may be secrets).
    value_repr: Callable[[Any], str] | None
    # A key as a key path writes it, e.g. quoted when the format needs quotes.
    key_repr: Callable[[str], str] = str
    # A format-specific explanation tried before `messages`, e.g. for a common slip.
    hint: Callable[[ErrorDetails], str | None] = field(default=_no_hint)

    def __post_init__(self) -> None:
        if self.value_repr is None:
            echoing = [t for t in (*self.messages.values(), self.fallback) if "{got}" in t]
            if echoing:
                raise ValueError(f"a dialect without value_repr cannot echo values: {echoing}")


def describe_errors(exc: ValidationError, dialect: Dialect) -> list[str]:
    """Every error of `exc` as one `key.path: message` line, in pydantic's order."""
    return [describe(error, dialect) for error in exc.errors(include_url=False)]


def describe(error: ErrorDetails, dialect: Dialect) -> str:
    path = key_path(error["loc"], dialect)
    text = message(error, dialect)
    return f"{path}: {text}" if path else text


def message(error: ErrorDetails, dialect: Dialect) -> str:
    kind = error["type"]
    if kind in dialect.own_error_types:
        return error["msg"]
    hint = dialect.hint(error)
    if hint is not None:
        return hint
    context: dict[str, Any] = dict(error.get("ctx") or {})
    if "expected" in context:
        # Pydantic lists literal choices in Python's quotes; the files write strings in double.
        context["expected"] = str(context["expected"]).replace("'", '"')
    context["msg"] = error["msg"]
    if dialect.value_repr is not None:
        context["got"] = dialect.value_repr(error["input"])
    return dialect.messages.get(kind, dialect.fallback).format_map(context)


def key_path(loc: tuple[int | str, ...], dialect: Dialect) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part == "[key]":
            # Pydantic's marker for an error in a table's key rather than its value: the path
            # up to here already names the key.
            continue
        else:
            key = dialect.key_repr(part)
            path += f".{key}" if path else key
    return path


def quote(text: str) -> str:
    """A string as TOML (and YAML, and JSON) writes it in double quotes."""
    return json.dumps(text, ensure_ascii=False)


def toml_repr(value: Any) -> str:
    """A value as the operator wrote it in TOML, shortened to fit on one line."""
    if isinstance(value, str):
        text = quote(value)
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, dict):
        text = "a table"
    elif isinstance(value, list | tuple):
        text = "an array"
    else:
        text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def toml_key(key: str) -> str:
    """A key as TOML writes it: bare when it can, quoted otherwise (`hooks."my hook"`)."""
    return key if BARE_KEY_RE.fullmatch(key) else quote(key)


# Keys that hold [[arrays of tables]]: a single-bracket [table] there is a common slip.
_ARRAYS_OF_TABLES = frozenset({"connection", "autostart", "threshold"})


def _toml_hint(error: ErrorDetails) -> str | None:
    loc = error["loc"]
    if (
        error["type"] == "tuple_type"
        and len(loc) == 1
        and loc[0] in _ARRAYS_OF_TABLES
        and isinstance(error["input"], dict)
    ):
        return f"must be an array of tables: write [[{loc[0]}]], not [{loc[0]}]"
    return None


# Pydantic's wording speaks Python ("valid dictionary", "valid tuple"); operators edit TOML.
TOML = Dialect(
    messages={
        "model_type": "must be a table (got {got})",
        "model_attributes_type": "must be a table (got {got})",
        "dict_type": "must be a table (got {got})",
        "tuple_type": "must be an array (got {got})",
        "list_type": "must be an array (got {got})",
        "string_type": "must be a string (got {got})",
        "int_type": "must be an integer (got {got})",
        "bool_type": "must be true or false (got {got})",
        "literal_error": "must be {expected} (got {got})",
        "greater_than_equal": "must be at least {ge} (got {got})",
        "extra_forbidden": "unknown key",
        "too_short": "must not be empty",
    },
    fallback="{msg} (got {got})",
    # Raised by the config's validators, with messages that already quote the offending value.
    own_error_types=frozenset(
        {
            "duration",
            "read_only",
            "listen_address",
            "connection_name",
            "libvirt_uri",
            "duplicate_connection",
            "glob",
            "limit",
            "clear",
            "hook_name",
            "hook_reference",
            "exec",
            "webhook_url",
            "header",
            "inconsistent",
            "web_config_file",
        }
    ),
    value_repr=toml_repr,
    key_repr=toml_key,
    hint=_toml_hint,
)
