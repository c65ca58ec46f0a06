"""Shared by the CLI tests: a fake daemon in place of cli._run_daemon, recording what the CLI
handed over, and a config file writer."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import structlog

from poolwatch import cli
from poolwatch.config import Config


@dataclass
class DaemonCall:
    config: Config
    reload_config: Callable[[], Config] | None
    demo: bool
    dry_run: bool
    log_wrapper_class: object


class FakeDaemon:
    """Stands in for cli._run_daemon and records what the CLI handed over."""

    def __init__(self) -> None:
        self.calls: list[DaemonCall] = []
        self.exit_code = 0
        self.raises: BaseException | None = None

    def __call__(
        self,
        config: Config,
        *,
        reload_config: Callable[[], Config] | None,
        demo: bool,
        dry_run: bool,
    ) -> int:
        self.calls.append(
            DaemonCall(
                config, reload_config, demo, dry_run, structlog.get_config()["wrapper_class"]
            )
        )
        if self.raises is not None:
            raise self.raises
        return self.exit_code

    @property
    def call(self) -> DaemonCall:
        assert len(self.calls) == 1
        return self.calls[0]


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    # The CLI configures logging onto the captured stderr, which pytest closes after the test.
    yield
    structlog.reset_defaults()


@pytest.fixture
def daemon(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeDaemon:
    fake = FakeDaemon()
    monkeypatch.setattr(cli, "_run_daemon", fake)
    # Tests must not depend on the machine's /etc/poolwatch.
    monkeypatch.setattr(cli, "DEFAULT_CONFIG_PATH", tmp_path / "absent" / "poolwatch.toml")
    return fake


def write(tmp_path: Path, text: str, name: str = "poolwatch.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path
