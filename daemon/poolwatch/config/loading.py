"""Where a `Config` comes from: the TOML file, and the daemon's command-line flags over it.

A file's problems and a flag's problems read alike: both are validated by the same models, and
a flag's errors name the flag the operator typed instead of the key it sets.
"""

from __future__ import annotations

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
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [f"TOML syntax error: {exc}"]) from None
    try:
        # The file spells tables by their TOML keys only: [[connections]] is a typo, not a synonym.
        return Config.model_validate(data, context=FROM_FILE, by_alias=True, by_name=False)
    except ValidationError as exc:
        raise ConfigError(source, describe_errors(exc, TOML)) from None


def load_config(path: Path) -> Config:
    """Read and validate a configuration file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read the file: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [f"the file is not valid UTF-8: {exc}"]) from None
    return parse_config(text, source=str(path))


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
