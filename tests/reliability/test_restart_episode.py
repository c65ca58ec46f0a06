"""poolwatch restarted while a threshold episode is open: with $STATE_DIRECTORY (systemd's
StateDirectory=) the episode survives and no second "warning" hook runs; without it (the
control run) the restart opens a new episode and the hook runs again."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from tests.helpers import until_metric
from tests.reliability.faults_common import poolwatch

Figure = Callable[[str, str, str], None]
POOL_UUID = str(uuid.uuid4())


def _setup(tmp_path: Path) -> tuple[Path, Path]:
    host = tmp_path / "host.xml"
    host.write_text(
        f"<node><pool type='dir'><name>full</name><uuid>{POOL_UUID}</uuid>"
        "<target><path>/nonexistent/full</path></target>"
        # The test driver sums the volumes: 90 of its default 100 GiB are used.
        "<volume type='file'><name>big.img</name><capacity unit='GiB'>90</capacity>"
        "<allocation unit='GiB'>90</allocation></volume></pool></node>"
    )
    hook = tmp_path / "hook.sh"
    out = tmp_path / "runs.txt"
    hook.write_text(f'#!/bin/sh\necho "$POOLWATCH_ACTION $POOLWATCH_EPISODE" >> {out}\n')
    hook.chmod(0o755)
    config = tmp_path / "poolwatch.toml"
    config.write_text(
        f'[[connection]]\nname = "test"\nuri = "test://{host}"\n'
        '[poll]\ninterval = "1s"\n\n'
        '[[threshold]]\npool = "full"\nwarning = "85%"\nclear = "5%"\nfor = "0s"\n'
        'hooks = ["record"]\n\n'
        f'[hooks.record]\nexec = ["{hook}"]\ntimeout = "5s"\n'
    )
    return config, out


def _runs(out: Path) -> list[str]:
    return out.read_text().splitlines() if out.exists() else []


async def _until(check: Callable[[], bool], within: float) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_restart_mid_episode_runs_no_duplicate_hook(tmp_path: Path, figure: Figure) -> None:
    config, out = _setup(tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    env = {"STATE_DIRECTORY": str(state)}
    settle = 3.0  # seconds a restarted poolwatch gets to (wrongly) run the hook again

    with poolwatch(config, env=env) as first:
        await _until(lambda: len(_runs(out)) == 1, 15)
        saved = state / "episodes.json"
        await _until(saved.exists, 5)
        episode = json.loads(saved.read_text())["episodes"][POOL_UUID]
        assert episode["fired"] == ["warning"]
        assert first.stop() == 0

    with poolwatch(config, env=env) as second:
        await until_metric(
            second.url, "poolwatch_pool_threshold_level", 1, within=10, storage_pool="full"
        )
        await asyncio.sleep(settle)
        assert _runs(out) == [f"warning {episode['episode']}"], _runs(out)
        assert second.events("threshold_episode_restored")

    # Control: the same restart without a state directory does run the hook a second time.
    with poolwatch(config, env={"STATE_DIRECTORY": ""}) as third:
        await _until(lambda: len(_runs(out)) == 2, 15)
        assert not third.events("threshold_episode_restored")
    files = sorted(p.name for p in state.iterdir())
    assert files == ["episodes.json"], files  # no temporary file left behind
    figure(
        "a real poolwatch with a pool at 90% (warning 85%, exec hook) and $STATE_DIRECTORY "
        f"restarted mid-episode; waited {settle:g} s after the level was back",
        "the episode was restored (same id, level warning) and the warning hook ran once in "
        "total; the control restart without $STATE_DIRECTORY ran it again",
        f"hook runs: 1 across the persisted restart, 2 after the control; episodes.json "
        f"{(state / 'episodes.json').stat().st_size} bytes",
    )
