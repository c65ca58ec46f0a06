"""Loading: the file, and overrides over it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from poolwatch.config import (
    FLAGS_SOURCE,
    Config,
    ConnectionConfig,
    apply_flags,
    load_config,
    parse_config,
)
from poolwatch.config.loading import MAX_CONFIG_BYTES
from poolwatch.errors import ConfigError
from tests.unit.config.support import error_of

# --- files ------------------------------------------------------------------------------------


def test_toml_syntax_error_gives_line_and_column() -> None:
    error = error_of('[poll]\ninterval = "15s\n')

    assert error.startswith("TOML syntax error: ")
    assert "line 2" in error
    assert "column" in error


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.toml"

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert caught.value.source == str(path)
    assert caught.value.errors == ["cannot read the file: No such file or directory"]
    assert str(path) in str(caught.value)


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not a regular file \(a directory\)"):
        load_config(tmp_path)


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    # Opened, it would wait forever for a writer.
    fifo = tmp_path / "poolwatch.toml"
    os.mkfifo(fifo)

    with pytest.raises(ConfigError, match=r"not a regular file \(a FIFO\)"):
        load_config(fifo)


def test_a_device_is_refused_unread() -> None:
    # /dev/zero used to be read until memory ran out.
    with pytest.raises(ConfigError, match=r"not a regular file \(a character device\)"):
        load_config(Path("/dev/zero"))


def test_a_file_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.toml"
    path.write_text("#" * MAX_CONFIG_BYTES + "\n")

    with pytest.raises(ConfigError, match=r"larger than 1024 KiB \(1048577 bytes\)"):
        load_config(path)


def test_a_byte_order_mark_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "poolwatch.toml"
    path.write_bytes(b'\xef\xbb\xbf[log]\nlevel = "debug"\n')

    assert load_config(path).log.level == "debug"


@pytest.mark.parametrize(
    "value", ["[" * 10_000 + "]" * 10_000, "{a = " * 10_000 + "1" + "}" * 10_000]
)
def test_deep_nesting_is_a_config_error(value: str) -> None:
    assert error_of(f"a = {value}") == "TOML syntax error: arrays or tables nested too deep"


def test_non_utf8_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[[connection]]\nname = "h\xf6st"\n')

    with pytest.raises(ConfigError, match="not valid UTF-8"):
        load_config(path)


def test_load_config_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "poolwatch.toml"
    path.write_text('[log]\nlevel = "debug"\n')

    assert load_config(path).log.level == "debug"


# --- overrides --------------------------------------------------------------------------------


def test_overrides_replace_only_what_is_given() -> None:
    base = parse_config(
        '[[connection]]\nname = "kvm01"\n[poll]\ninterval = "5s"\n[log]\nformat = "json"',
        source="t",
    )

    config = base.with_overrides(listen=["127.0.0.1:1", "[::1]:1"], log_level="debug")

    assert config.web.listen == ("127.0.0.1:1", "[::1]:1")
    assert config.log.level == "debug"
    assert config.log.format == "json"
    assert config.poll == base.poll
    assert config.connections == base.connections
    assert base.log.level == "info"  # the original is untouched


def test_no_overrides_keep_the_config() -> None:
    config = parse_config('[poll]\ninterval = "5s"', source="t")

    assert config.with_overrides() == config


def test_libvirt_uri_override_replaces_all_connections_without_a_name() -> None:
    base = parse_config(
        '[[connection]]\nname = "a"\nread_only = true\n[[connection]]\nname = "b"', source="t"
    )

    config = base.with_overrides(libvirt_uri="test:///default")

    assert config.connections == (ConnectionConfig(uri="test:///default"),)


def test_bad_overrides_are_all_reported_like_file_errors() -> None:
    with pytest.raises(ConfigError) as caught:
        Config().with_overrides(
            listen=["nowhere"],
            log_level="verbose",
            log_format="xml",
            libvirt_uri="kvm01",
            source="command-line flags",
        )

    assert caught.value.source == "command-line flags"
    assert [error.split(":")[0] for error in caught.value.errors] == [
        "connection[0].uri",
        "web.listen[0]",
        "log.level",
        "log.format",
    ]
    assert 'log.level: must be "debug", "info", "warning" or "error" (got "verbose")' in (
        caught.value.errors
    )


# --- command-line flags -----------------------------------------------------------------------


def test_flags_name_themselves_in_errors() -> None:
    with pytest.raises(ConfigError) as caught:
        apply_flags(
            Config(),
            listen=[":9479", "nowhere"],
            web_config_file=None,
            log_level="verbose",
            log_format=None,
            libvirt_uri="kvm01",
        )

    assert caught.value.source == FLAGS_SOURCE == "command-line flags"
    assert [error.split(":")[0] for error in caught.value.errors] == [
        "--libvirt.uri",
        "--web.listen-address",
        "--log.level",
    ]


def test_web_config_file_flag_is_made_absolute_and_empty_means_none(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    base = Config().with_overrides(web_config_file="/etc/poolwatch/web.yml")

    def flagged(value: str | None) -> Config:
        return apply_flags(
            base,
            listen=None,
            web_config_file=value,
            log_level=None,
            log_format=None,
            libvirt_uri=None,
        )

    assert flagged("web.yml").web.config_file == str(tmp_path / "web.yml")
    assert flagged("").web.config_file is None
    assert flagged(None).web.config_file == "/etc/poolwatch/web.yml"
