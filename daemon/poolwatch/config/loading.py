"""Where a `Config` comes from: the TOML file, and the daemon's command-line flags over it.

A file's problems and a flag's problems read alike: both are validated by the same models, and
a flag's errors name the flag the operator typed instead of the key it sets.
"""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from poolwatch.config.fields import FROM_FILE
from poolwatch.config.messages import TOML, describe_errors
from poolwatch.config.schema import Config
from poolwatch.errors import ConfigError

# How errors in flag values name their source.
FLAGS_SOURCE = "command-line flags"

# A configuration file is a few KiB; anything near this is not one (or is /dev/zero).
MAX_CONFIG_BYTES = 1024 * 1024

# Flag values are validated as config keys; their errors name the flag the operator typed.
_FLAG_FOR_KEY = (
    ("web.listen", "--web.listen-address"),
    ("web.config_file", "--web.config.file"),
    ("log.level", "--log.level"),
    ("log.format", "--log.format"),
    ("connection[0].uri", "--libvirt.uri"),
)


def parse_config(text: str, *, source: str) -> Config:
    """Validate TOML text; `source` names it in error messages (usually the file path)."""
    # Editors on Windows save UTF-8 with a byte order mark, which TOML does not allow.
    text = text.removeprefix("\ufeff")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [f"TOML syntax error: {exc}"]) from None
    except RecursionError:
        # tomllib parses nested arrays and inline tables recursively: `a = [[[[...]]]]`.
        raise ConfigError(source, ["TOML syntax error: arrays or tables nested too deep"]) from None
    try:
        return _validate(data, source=source)
    except RecursionError:
        # Describing a deeply nested value in an error message recurses too.
        raise ConfigError(source, ["values nested too deep"]) from None


def _validate(data: dict[str, object], *, source: str) -> Config:
    try:
        # The file spells tables by their TOML keys only: [[connections]] is a typo, not a synonym.
        return Config.model_validate(data, context=FROM_FILE, by_alias=True, by_name=False)
    except ValidationError as exc:
        raise ConfigError(source, describe_errors(exc, TOML)) from None


def load_config(path: Path) -> Config:
    """Read and validate a configuration file: a regular file of at most MAX_CONFIG_BYTES."""
    try:
        data = read_config_file(path)
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read the file: {exc.strerror or exc}"]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [f"the file is not valid UTF-8: {exc}"]) from None
    return parse_config(text, source=str(path))


def read_config_file(path: Path) -> bytes:
    """The bytes of a regular file of at most MAX_CONFIG_BYTES; ConfigError for anything else.

    A FIFO would block the open and the read forever, /dev/zero would fill memory: the path is
    checked before opening, opened without blocking, and checked again on the open file (the
    path may have been replaced in between).
    """
    _check_regular(path, os.stat(path))
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    with os.fdopen(fd, "rb") as file:
        _check_regular(path, os.fstat(fd))
        data = file.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:  # grew after the fstat
        raise ConfigError(str(path), [_too_big()])
    return data


def _check_regular(path: Path, status: os.stat_result) -> None:
    if not stat.S_ISREG(status.st_mode):
        raise ConfigError(str(path), [f"not a regular file ({_file_kind(status.st_mode)})"])
    if status.st_size > MAX_CONFIG_BYTES:
        raise ConfigError(str(path), [_too_big(status.st_size)])


def _too_big(size: int | None = None) -> str:
    got = "" if size is None else f" ({size} bytes)"
    return f"the file is larger than {MAX_CONFIG_BYTES // 1024} KiB{got}"


def _file_kind(mode: int) -> str:
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "an unknown kind of file")


def apply_flags(
    config: Config,
    *,
    listen: Sequence[str] | None,
    web_config_file: str | None,
    log_level: str | None,
    log_format: str | None,
    libvirt_uri: str | None,
) -> Config:
    """`config` with the daemon's flag values in place of its keys (None: the flag is absent);
    a ConfigError from FLAGS_SOURCE names each bad flag as the operator typed it."""
    try:
        return config.with_overrides(
            listen=listen,
            web_config_file=_web_config_file(web_config_file),
            log_level=log_level,
            log_format=log_format,
            libvirt_uri=libvirt_uri,
            source=FLAGS_SOURCE,
        )
    except ConfigError as exc:
        raise ConfigError(exc.source, [_name_flag(error) for error in exc.errors]) from None


def _web_config_file(flag: str | None) -> str | None:
    # Absolute, as web.config_file must be; "" (exporter-toolkit's default) means none.
    return flag if not flag else str(Path(flag).absolute())


def _name_flag(error: str) -> str:
    for key, flag in _FLAG_FOR_KEY:
        if error.startswith(key):
            rest = error[len(key) :]
            if rest.startswith("["):
                rest = rest[rest.index("]") + 1 :]
            return flag + rest
    return error
