"""The web config file from the TOML key and the --web.config.file flag: check-config and the
daemon's start read it and exit with the config code when it is invalid."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from poolwatch import cli
from poolwatch.cli import ExitCode, main
from poolwatch.config import Config, parse_config
from poolwatch.errors import ConfigError
from tests.unit.web_serving import TLS, WebConfigDir

# --- the TOML key and the flag ----------------------------------------------------------------


def test_config_file_key_names_the_web_config(
    web_dir: WebConfigDir, capsys: pytest.CaptureFixture[str]
) -> None:
    path = web_dir.write(TLS)
    toml = web_dir.directory / "poolwatch.toml"
    toml.write_text(f'[web]\nconfig_file = "{path}"\n')

    assert main(["check-config", str(toml)]) == ExitCode.OK
    assert parse_config(toml.read_text(), source="x").web.config_file == str(path)

    web_dir.write(TLS + "  min_version: TLS99\n")
    assert main(["check-config", str(toml)]) == ExitCode.CONFIG_INVALID
    assert capsys.readouterr().err == (
        f"invalid configuration in {toml} (1 error):\n"
        f'  web.config_file: {path}: tls_server_config.min_version: unknown TLS version "TLS99" '
        "(use TLS10, TLS11, TLS12 or TLS13)\n"
    )


def test_config_file_key_must_be_absolute() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config('[web]\nconfig_file = "web.yml"\n', source="poolwatch.toml")

    assert info.value.errors == [
        "web.config_file: must be an absolute path, e.g. /etc/poolwatch/web-config.yml "
        '(got "web.yml")'
    ]


@pytest.fixture
def fake_daemon(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Config]:
    calls: list[Config] = []

    def run(config: Config, **_: object) -> int:
        calls.append(config)
        return 0

    monkeypatch.setattr(cli, "_run_daemon", run)
    monkeypatch.setattr(cli, "DEFAULT_CONFIG_PATH", tmp_path / "absent" / "poolwatch.toml")
    monkeypatch.chdir(tmp_path)
    return calls


@pytest.fixture
def _reset_structlog() -> Iterator[None]:
    # The CLI configures logging onto pytest's captured stderr, which is closed after the test.
    yield
    structlog.reset_defaults()


@pytest.mark.usefixtures("_reset_structlog")
def test_flag_sets_the_web_config_file(web_dir: WebConfigDir, fake_daemon: list[Config]) -> None:
    web_dir.write(TLS)

    # Relative to the working directory, as for other flags; stored absolute.
    assert main(["--web.config.file", "web-config.yml", "--log.format", "json"]) == ExitCode.OK

    assert fake_daemon[0].web.config_file == str(web_dir.path)


@pytest.mark.usefixtures("_reset_structlog")
def test_empty_flag_removes_the_files_web_config(
    web_dir: WebConfigDir, fake_daemon: list[Config]
) -> None:
    toml = web_dir.directory / "poolwatch.toml"
    toml.write_text(f'[web]\nconfig_file = "{web_dir.write(TLS)}"\n')

    argv = ["--config.file", str(toml), "--web.config.file", "", "--log.format", "json"]
    assert main(argv) == ExitCode.OK

    assert fake_daemon[0].web.config_file is None


def test_invalid_web_config_exits_with_the_config_code(
    web_dir: WebConfigDir, fake_daemon: list[Config], capsys: pytest.CaptureFixture[str]
) -> None:
    web_dir.write("tls_server_config:\n  min_version: TLS99\n")

    assert main(["--web.config.file", "web-config.yml"]) == ExitCode.CONFIG_INVALID

    assert fake_daemon == []
    assert capsys.readouterr().err == (
        "invalid configuration in command-line flags (1 error):\n"
        f"  --web.config.file: {web_dir.path}: tls_server_config.min_version: unknown TLS version "
        '"TLS99" (use TLS10, TLS11, TLS12 or TLS13)\n'
    )


def test_check_config_checks_the_web_config(
    web_dir: WebConfigDir, capsys: pytest.CaptureFixture[str]
) -> None:
    web_dir.write("basic_auth_users:\n  alice: nope\n")
    toml = web_dir.directory / "poolwatch.toml"
    toml.write_text(f'[web]\nconfig_file = "{web_dir.path}"\n')

    assert main(["check-config", str(toml)]) == ExitCode.CONFIG_INVALID

    assert f"web.config_file: {web_dir.path}: basic_auth_users.alice: is not a bcrypt hash" in (
        capsys.readouterr().err
    )
