"""`poolwatch demo` on the command line: the shipped demo rules, the local listen address, and
what a file or a flag changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from poolwatch import cli
from poolwatch.cli import main
from poolwatch.config import load_config
from poolwatch.demo import DEMO_CONFIG
from tests.unit.cli_support import FakeDaemon, _reset_structlog, daemon, write

__all__ = ["_reset_structlog", "daemon"]  # fixtures, used by name


def test_demo_has_no_connections_and_listens_locally(daemon: FakeDaemon) -> None:
    assert main(["demo"]) == 0

    call = daemon.call
    assert call.demo is True
    assert call.dry_run is False
    assert call.config.connections == ()
    assert call.config.web.listen == ("127.0.0.1:9479",)


def test_demo_without_a_file_runs_the_shipped_demo_rules(daemon: FakeDaemon) -> None:
    assert main(["demo"]) == 0

    config = daemon.call.config
    assert config == load_config(DEMO_CONFIG).model_copy(
        update={"connections": (), "web": config.web}
    )
    # A threshold with hysteresis and a forecast, an autostart rule that writes, a hook.
    (threshold,) = config.threshold_rules()
    assert threshold.clear_ratio > 0
    assert threshold.time_to_full_warning is not None
    assert threshold.time_to_full_critical is not None
    assert threshold.hooks == ("log",)
    (autostart,) = config.autostart_rules()
    assert autostart.mode.value == "enforce"
    assert set(config.hook_definitions()) == {"log"}
    reload_config = daemon.call.reload_config
    assert reload_config is not None
    assert reload_config() == config


def test_demo_with_a_file_runs_its_rules_instead(daemon: FakeDaemon, tmp_path: Path) -> None:
    path = write(tmp_path, '[log]\nlevel = "debug"\n')

    main(["demo", "--config.file", str(path)])

    config = daemon.call.config
    assert config.threshold_rules() == ()
    assert config.autostart_rules() == ()


def test_demo_listen_flag_wins(daemon: FakeDaemon) -> None:
    main(["demo", "--web.listen-address", ":9999"])

    assert daemon.call.config.web.listen == (":9999",)


def test_demo_uses_the_files_listen_when_set(daemon: FakeDaemon, tmp_path: Path) -> None:
    path = write(tmp_path, '[[connection]]\nname = "kvm01"\n[web]\nlisten = [":9100"]\n')

    main(["demo", "--config.file", str(path)])

    assert daemon.call.config.web.listen == (":9100",)
    assert daemon.call.config.connections == ()


def test_demo_keeps_local_listen_when_the_file_does_not_set_it(
    daemon: FakeDaemon, tmp_path: Path
) -> None:
    path = write(tmp_path, '[log]\nlevel = "debug"\n')

    main(["demo", "--config.file", str(path)])

    config = daemon.call.config
    assert config.web.listen == ("127.0.0.1:9479",)
    assert config.log.level == "debug"
    reload_config = daemon.call.reload_config
    assert reload_config is not None
    assert reload_config() == config


def test_demo_ignores_the_default_config_file(
    daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(cli, "DEFAULT_CONFIG_PATH", write(tmp_path, "[web]\nlisten = [':1']\n"))

    main(["demo"])

    assert daemon.call.config.web.listen == ("127.0.0.1:9479",)


# --- status -----------------------------------------------------------------------------------
