"""The `poolwatch` command line: exit codes, messages, and the config each command hands over."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path

import pytest
import structlog

from poolwatch import __version__, cli
from poolwatch.cli import ExitCode, main
from poolwatch.config import Config, ConnectionConfig
from poolwatch.errors import ConfigError, StartupError
from tests.unit.cli_support import FakeDaemon, _reset_structlog, daemon, write

__all__ = ["_reset_structlog", "daemon"]  # fixtures, used by name

EXAMPLE = Path(__file__).parents[2] / "config" / "poolwatch.toml"


def test_exit_codes_are_stable() -> None:
    # systemd units, scripts and the --help text rely on these numbers.
    assert {code.name: int(code) for code in ExitCode} == {
        "OK": 0,
        "RUNTIME_ERROR": 1,
        "USAGE": 2,
        "CONFIG_INVALID": 3,
        "STARTUP_FAILED": 4,
        "UNREACHABLE": 5,
    }


# --- top-level flags and usage errors ---------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"poolwatch {__version__}\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["--bogus"],
        ["run", "--bogus"],
        ["frobnicate"],
        ["demo", "--libvirt.uri", "test:///default"],  # demo brings its own connection
        ["run", "--log.level"],
    ],
)
def test_bad_command_line_exits_2(
    argv: list[str], daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == ExitCode.USAGE

    assert "usage: poolwatch" in capsys.readouterr().err
    assert daemon.calls == []


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["demo", "--help"]])
def test_help_documents_flags_defaults_and_exit_codes(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 0

    out = capsys.readouterr().out
    for code in ExitCode:
        assert f"  {int(code)}  " in out
    if argv[0] != "--help":
        for flag in (
            "--config.file",
            "--web.listen-address",
            "--log.level",
            "--log.format",
            "--dry-run",
        ):
            assert flag in out
        assert "default:" in out


def test_module_entry_point_runs_main() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "poolwatch", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )

    assert (result.returncode, result.stdout) == (0, f"poolwatch {__version__}\n")


def test_one_version_for_the_command_the_wheel_and_the_debian_package() -> None:
    # A release bumps __init__.py; the wheel's metadata reads it there, and the .deb must say
    # the same, or `poolwatch --version` contradicts `dpkg -l` on a host.
    changelog = (Path(__file__).parents[2] / "debian" / "changelog").read_text(encoding="utf-8")
    debian = changelog.split("(", 1)[1].split(")", 1)[0].split("-", 1)[0]

    assert (importlib.metadata.version("poolwatch"), debian) == (__version__, __version__)


# --- bad flag values --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["--log.level", "verbose"],
            '--log.level: must be "debug", "info", "warning" or "error" (got "verbose")',
        ),
        (
            ["--log.format", "xml"],
            '--log.format: must be "auto", "console" or "json" (got "xml")',
        ),
        (
            ["--web.listen-address", ":9479", "--web.listen-address", "::1:9479"],
            '--web.listen-address: invalid listen address "::1:9479": an IPv6 address must be '
            'in brackets, e.g. [::1]:9479 (use "host:port", "[::1]:port" or ":port")',
        ),
        (
            ["--libvirt.uri", "kvm01"],
            '--libvirt.uri: invalid libvirt URI "kvm01" '
            '(use e.g. "qemu:///system", "qemu+ssh://root@kvm02/system")',
        ),
    ],
)
def test_bad_flag_value_exits_3_naming_the_flag(
    argv: list[str], expected: str, daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == ExitCode.CONFIG_INVALID

    assert capsys.readouterr().err == (
        f"invalid configuration in command-line flags (1 error):\n  {expected}\n"
    )
    assert daemon.calls == []


def test_bad_flag_values_are_reported_together(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--log.level", "loud", "--log.format", "xml"]) == 3

    err = capsys.readouterr().err
    assert "(2 errors)" in err
    assert "--log.level:" in err
    assert "--log.format:" in err


# --- run --------------------------------------------------------------------------------------


def test_run_is_the_default_command(daemon: FakeDaemon) -> None:
    daemon.exit_code = 0

    assert main(["--libvirt.uri", "test:///default"]) == 0

    call = daemon.call
    assert call.demo is False
    assert call.dry_run is False
    assert call.config.connections == (ConnectionConfig(uri="test:///default"),)
    assert call.config.web.listen == (":9479",)
    assert call.reload_config is None  # no file to reload


def test_run_without_arguments_uses_defaults_when_the_default_file_is_absent(
    daemon: FakeDaemon,
) -> None:
    assert main([]) == 0

    assert daemon.call.config == Config()


def test_run_reads_the_default_file_when_present(
    daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = write(tmp_path, '[poll]\ninterval = "30s"\n')
    monkeypatch.setattr(cli, "DEFAULT_CONFIG_PATH", path)

    assert main(["run"]) == 0

    assert daemon.call.config.poll.interval == 30.0
    assert daemon.call.reload_config is not None


def test_run_with_an_explicit_missing_file_exits_3(
    daemon: FakeDaemon, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "missing.toml"

    assert main(["run", "--config.file", str(path)]) == 3

    assert str(path) in capsys.readouterr().err
    assert daemon.calls == []


def test_run_with_an_invalid_file_exits_3_without_traceback(
    daemon: FakeDaemon, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "[poll]\ninterval = 15\n")

    assert main(["--config.file", str(path)]) == 3

    err = capsys.readouterr().err
    assert "poll.interval: invalid duration 15" in err
    assert "Traceback" not in err
    assert daemon.calls == []


def test_flags_override_the_file(daemon: FakeDaemon, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[[connection]]\nname = "kvm01"\n[poll]\ninterval = "30s"\n'
        '[web]\nlisten = [":9100"]\n[log]\nlevel = "debug"\nformat = "console"\n',
    )

    main(
        [
            "run",
            "--config.file",
            str(path),
            "--web.listen-address",
            "127.0.0.1:9479",
            "--web.listen-address",
            "[::1]:9479",
            "--log.level",
            "warning",
            "--log.format",
            "json",
            "--libvirt.uri",
            "test:///default",
        ]
    )

    config = daemon.call.config
    assert config.web.listen == ("127.0.0.1:9479", "[::1]:9479")
    assert (config.log.level, config.log.format) == ("warning", "json")
    assert config.connections == (ConnectionConfig(uri="test:///default"),)
    assert config.poll.interval == 30.0  # not overridden: the file's value


def test_logging_is_configured_before_the_daemon_runs(daemon: FakeDaemon) -> None:
    main(["--log.level", "warning", "--log.format", "json"])

    assert daemon.call.log_wrapper_class is structlog.make_filtering_bound_logger("warning")


def test_reload_rereads_the_file_and_keeps_the_flags(daemon: FakeDaemon, tmp_path: Path) -> None:
    path = write(tmp_path, '[poll]\ninterval = "30s"\n')
    main(["run", "--config.file", str(path), "--log.level", "debug"])
    reload_config = daemon.call.reload_config
    assert reload_config is not None

    path.write_text('[poll]\ninterval = "1m"\n[log]\nlevel = "error"\n')
    reloaded = reload_config()

    assert reloaded.poll.interval == 60.0
    assert reloaded.log.level == "debug"

    path.write_text('[poll]\ninterval = "1x"\n')
    with pytest.raises(ConfigError, match=r"poll\.interval"):
        reload_config()


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--dry-run"],
        ["--dry-run"],
        ["--libvirt.uri", "test:///default", "--dry-run"],
        ["demo", "--dry-run"],
    ],
)
def test_dry_run_is_handed_to_the_daemon(argv: list[str], daemon: FakeDaemon) -> None:
    assert main(argv) == 0

    assert daemon.call.dry_run is True
    assert daemon.call.demo is (argv[0] == "demo")


def test_check_config_has_no_dry_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--dry-run", str(EXAMPLE)]) == ExitCode.USAGE


def test_daemon_exit_code_is_returned(daemon: FakeDaemon) -> None:
    daemon.exit_code = 0
    assert main([]) == 0


def test_startup_error_exits_4_with_one_line(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.raises = StartupError("cannot listen on :9479: address already in use")

    assert main([]) == ExitCode.STARTUP_FAILED

    assert capsys.readouterr().err.endswith(
        "poolwatch: cannot start: cannot listen on :9479: address already in use\n"
    )


def test_unexpected_error_exits_1_and_is_logged(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.raises = RuntimeError("boom")

    assert main(["--log.format", "json"]) == ExitCode.RUNTIME_ERROR

    events = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    failure = events[-1]
    assert failure["event"] == "daemon_failed"
    assert failure["level"] == "error"
    assert "RuntimeError: boom" in failure["exception"]


def test_interrupt_before_the_daemon_handles_signals_is_a_clean_stop(daemon: FakeDaemon) -> None:
    daemon.raises = KeyboardInterrupt()

    assert main([]) == ExitCode.OK


def test_run_daemon_hands_over_to_the_daemon_module(monkeypatch: pytest.MonkeyPatch) -> None:
    received: list[tuple[Config, object, bool, bool]] = []

    def run_daemon(
        config: Config,
        *,
        reload_config: Callable[[], Config] | None,
        demo: bool,
        dry_run: bool = False,
    ) -> int:
        received.append((config, reload_config, demo, dry_run))
        return 7

    fake_module = types.ModuleType("poolwatch.daemon")
    fake_module.run_daemon = run_daemon  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "poolwatch.daemon", fake_module)
    config = Config()

    assert cli._run_daemon(config, reload_config=None, demo=True, dry_run=True) == 7
    assert received == [(config, None, True, True)]


# --- demo -------------------------------------------------------------------------------------


def test_status_help_documents_flags_columns_and_exit_codes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["status", "--help"]) == 0

    out = capsys.readouterr().out
    words = " ".join(out.split())  # argparse wraps the flag help
    for text in ("--web.url", "--timeout", "default: http://127.0.0.1:9479", "default: 5s"):
        assert text in words
    for column in ("HOST", "USAGE", "USED/SIZE", "LEVEL", "FORECAST", "AUTOSTART", "LAST ACTION"):
        assert f"\n  {column}" in out
    assert "  5  status: the daemon did not answer" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--web.url", "ftp://kvm01"], "argument --web.url: invalid URL 'ftp://kvm01'"),
        (["--timeout", "5"], "argument --timeout: invalid duration"),
        (["--timeout", "0s"], "argument --timeout: must be greater than 0"),
        (["extra"], "unrecognized arguments: extra"),
    ],
)
def test_status_bad_command_line_exits_2(
    argv: list[str], message: str, daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", *argv]) == ExitCode.USAGE

    assert message in capsys.readouterr().err
    assert daemon.calls == []
