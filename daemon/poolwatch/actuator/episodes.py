"""Alarm episodes: their ids, and the open ones kept across a restart.

Open threshold episodes survive a restart when systemd gives poolwatch a state directory
(``StateDirectory=`` sets ``$STATE_DIRECTORY``): each one (pool uuid -> connection, episode id,
level, actions already fired) is kept in ``episodes.json`` there, rewritten (temporary file and
rename, so never half written) whenever the set changes, and read back at start. A pool seen
again after a restart continues its episode, so a restart mid-alarm runs no second "warning"
hook and the eventual "recovery" carries the same episode id (the webhook idempotency key).
Without ``$STATE_DIRECTORY`` nothing is persisted and a restart starts every pool at ok.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog

from poolwatch.actuator.context import PolicyState
from poolwatch.model import HostSnapshot, PoolSnapshot
from poolwatch.policies.rules import Level
from poolwatch.policies.thresholds import ThresholdState

log = structlog.get_logger()

# Open episodes are kept here, under $STATE_DIRECTORY (the first one, if systemd gives several).
EPISODES_FILE = "episodes.json"
EPISODES_VERSION = 1


def threshold_episode_id(host: str, pool: str, now: float) -> str:
    """The id a threshold episode that opens now gets (used only if one does open)."""
    return f"{host}/{pool}/{int(now)}"


def alarm_episode_id(host: str, pool: str, alarm: str, now: float) -> str:
    """The id of a mount or autostart alarm: each one is an episode of its own."""
    return f"{host}/{pool}/{alarm}/{int(now)}"


def default_episodes_path() -> Path | None:
    """Where open episodes persist: $STATE_DIRECTORY/episodes.json, or None (not persisted)."""
    directory = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(directory) / EPISODES_FILE if directory else None


class EpisodeStore:
    """The open episodes on disk: read once at start, rewritten whenever the set changes."""

    def __init__(self, path: Path | None) -> None:
        """``path`` None: nothing is persisted, and nothing restored."""
        self._path = path
        # Restored episodes whose pool has not been seen yet: uuid -> persisted entry.
        self._restored: dict[str, dict[str, Any]] = load_episodes(path)
        self._saved: dict[str, dict[str, Any]] = dict(self._restored)
        self._save_failed = False

    def restore(self, key: str, pool: PoolSnapshot) -> ThresholdState | None:
        """The episode a previous run left open on this pool, if any, to continue."""
        entry = self._restored.pop(pool.uuid, None)
        if entry is None or entry["connection"] != key:
            return None
        log.info(
            "threshold_episode_restored",
            host=key,
            pool=pool.name,
            episode=entry["episode"],
            threshold_level=Level(entry["level"]).name.lower(),
        )
        return ThresholdState(
            level=Level(entry["level"]), episode=entry["episode"], fired=frozenset(entry["fired"])
        )

    def forget_gone(self, key: str, host: HostSnapshot) -> None:
        """A full poll of ``key`` saw every pool: episodes of pools gone meanwhile end here."""
        if not self._restored:
            return
        present = {pool.uuid for pool in host.pools.values()}
        for uuid in [u for u, e in self._restored.items() if e["connection"] == key]:
            if uuid not in present:
                del self._restored[uuid]

    def persist(
        self, states: Mapping[str, Mapping[str, PolicyState]], hosts: Mapping[str, HostSnapshot]
    ) -> None:
        """Save the open episodes of ``states`` (by connection key, then pool name) if changed."""
        if self._path is None:
            return
        episodes = self._open_episodes(states, hosts)
        if episodes == self._saved:
            return
        try:
            write_atomically(
                self._path,
                json.dumps({"version": EPISODES_VERSION, "episodes": episodes}, indent=1),
            )
        except OSError as exc:
            if not self._save_failed:  # once, not on every evaluation
                log.warning("episodes_save_failed", path=str(self._path), error=str(exc))
            self._save_failed = True
            return
        self._saved, self._save_failed = episodes, False

    def _open_episodes(
        self, states: Mapping[str, Mapping[str, PolicyState]], hosts: Mapping[str, HostSnapshot]
    ) -> dict[str, dict[str, Any]]:
        episodes = dict(self._restored)
        for key, pool_states in states.items():
            host = hosts.get(key)
            if host is None:
                continue
            for name, state in pool_states.items():
                pool = host.pools.get(name)
                threshold = state.threshold
                if pool is None or threshold.episode is None or not pool.uuid:
                    continue
                episodes[pool.uuid] = {
                    "connection": key,
                    "pool": name,
                    "episode": threshold.episode,
                    "level": int(threshold.level),
                    "fired": sorted(threshold.fired),
                }
        return episodes


def load_episodes(path: Path | None) -> dict[str, dict[str, Any]]:
    """The open episodes a previous run saved; empty when there are none or they are unusable."""
    if path is None:
        return {}
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("episodes_load_failed", path=str(path), error=str(exc))
        return {}
    episodes: dict[str, dict[str, Any]] = {}
    raw = document.get("episodes") if isinstance(document, dict) else None
    if not isinstance(raw, dict) or document.get("version") != EPISODES_VERSION:
        log.warning("episodes_load_failed", path=str(path), error="unknown format")
        return {}
    for uuid, entry in raw.items():
        try:
            episodes[str(uuid)] = {
                "connection": str(entry["connection"]),
                "pool": str(entry["pool"]),
                "episode": str(entry["episode"]),
                "level": int(Level(int(entry["level"]))),
                "fired": sorted(str(action) for action in entry["fired"]),
            }
        except (KeyError, TypeError, ValueError):
            log.warning("episodes_entry_skipped", path=str(path), pool_uuid=str(uuid))
    return episodes


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file next to ``path`` and rename it over ``path``."""
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
