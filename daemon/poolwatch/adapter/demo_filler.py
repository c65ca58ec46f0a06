"""Scripted-but-random activity for ``poolwatch demo`` on libvirt's test driver.

The demo host (``poolwatch/demo/host.xml``) is static: nothing fills up or stops by itself.
:class:`DemoFiller` plays an operator and a few busy guests on it, one small step at a time,
so that every pool metric, alarm and event of poolwatch shows up within about a minute:

- volumes are created in a few pools (``images``, ``backups``, ``isos`` by default) until the
  pool is ~95 % full, then the volumes the filler created are deleted again (a saw-tooth that
  crosses warning and critical thresholds and recovers); ``images`` and ``isos`` fill in under
  a minute, ``backups`` trickles for a few minutes, long enough for a steady forecast;
- every ~10 steps one persistent pool is stopped (``destroy()``, lifecycle STOPPED): every other
  time one whose autostart flag is set, if there is one. A pool without the flag is started
  again one or two steps later (STARTED); a flagged pool is left down for a few steps, so that
  an autostart rule (the demo's own ``demo.toml`` has one) starts it first, as it would after a
  failed boot; the filler starts it only if nothing else has;
- every ~5 steps one running pool is refreshed (REFRESH event);
- every ~15 steps a transient pool is created with ``storagePoolCreateXML`` (STARTED) and
  destroyed a few steps later (STOPPED, then it vanishes);
- every ~12 steps the autostart flag of one persistent pool is toggled (libvirt sends no event
  for that: only polling sees it).

The functions here are plain blocking libvirt calls: the daemon runs :meth:`DemoFiller.step` in
its executor on its own connection (with ``test:///PATH.xml`` every ``open()`` gets a private
copy of the host, so a second connection would not show the changes to the daemon).

Only volumes whose name starts with :data:`DEMO_PREFIX` are ever deleted, and libvirt errors
never escape a step: they become a line of the step's description.  For a given seed the
sequence of decisions is the same as long as libvirt answers the same way.
"""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import libvirt

__all__ = ["DEFAULT_FILL_PLANS", "DEMO_PREFIX", "DemoFiller", "FillPlan"]

DEMO_PREFIX = "demo-"
"""Name prefix of every volume (and transient pool) the filler creates."""

_MiB = 1024 * 1024
_GiB = 1024 * _MiB
_SIZE_QUANTUM = 256 * _MiB
_DEMO_SEQ = re.compile(r"^demo-(\d+)")


@dataclass(frozen=True, slots=True)
class FillPlan:
    """How the filler fills and drains one pool.

    Attributes:
        pool: pool name.
        suffix: volume name suffix, e.g. ``".qcow2"``.
        volume_format: ``<target><format type=...>`` of the created volumes.
        min_gib, max_gib: allocation of one created volume (GiB, rounded to 256 MiB).
        thin_factor: volume capacity = allocation x this (1.0: fully allocated).
        high_water: fill ratio at which the pool starts draining.
        drain_per_step: demo volumes deleted per step while draining.
        activity: probability that the pool does anything in a given step.
    """

    pool: str
    suffix: str
    volume_format: str
    min_gib: float
    max_gib: float
    thin_factor: float = 1.0
    high_water: float = 0.95
    drain_per_step: int = 1
    activity: float = 0.85


DEFAULT_FILL_PLANS: tuple[FillPlan, ...] = (
    # 62 % at load: guests' images grow fast, old ones are removed two at a time.
    FillPlan("images", ".qcow2", "qcow2", 3.0, 6.5, thin_factor=4.0, drain_per_step=2),
    # 85 % at load: nightly backups trickle in, small and steady, for a few minutes: a forecast
    # with a time to full; a retention run then removes them five at a time.
    FillPlan(
        "backups", ".qcow2", "qcow2", 0.25, 0.75, thin_factor=8.0, drain_per_step=5, activity=0.6
    ),
    # 39 % at load: install media mirrored in big chunks, purged three at a time.
    FillPlan("isos", ".iso", "iso", 4.0, 9.0, drain_per_step=3, activity=0.7),
)


@dataclass(slots=True)
class _Transient:
    name: str
    destroy_at: int


class DemoFiller:
    """One step of demo activity per :meth:`step` call (meant for every ~2 s).

    The filler holds no connection: each call gets the daemon's open ``libvirt.virConnect``.
    It keeps only its own schedule (step counter, which pools are draining, which pool it
    stopped, its transient pool); volumes it may delete are found again from their names, so
    it keeps working after the daemon reconnects.
    """

    def __init__(
        self,
        rng: random.Random,
        *,
        fill_plans: Sequence[FillPlan] = DEFAULT_FILL_PLANS,
        stop_every: tuple[int, int] = (8, 12),
        flagged_restart_after: tuple[int, int] = (4, 6),
        refresh_every: tuple[int, int] = (4, 6),
        transient_every: tuple[int, int] = (12, 18),
        autostart_every: tuple[int, int] = (10, 14),
    ) -> None:
        self._rng = rng
        self._plans = tuple(fill_plans)
        self._draining: dict[str, bool] = {plan.pool: False for plan in self._plans}
        self._stop_every = stop_every
        self._flagged_restart_after = flagged_restart_after
        self._stops = 0
        self._refresh_every = refresh_every
        self._transient_every = transient_every
        self._autostart_every = autostart_every
        self._step = 0
        self._seq = 0
        self._transient_seq = 0
        # First occurrences come early so that a new user sees everything within a minute.
        self._next_refresh = 2
        self._next_autostart = 3
        self._next_stop = 5
        self._next_transient = 7
        self._restart_at: dict[str, int] = {}
        self._last_stopped: str | None = None
        self._transient: _Transient | None = None

    @property
    def steps_done(self) -> int:
        """Number of :meth:`step` calls so far."""
        return self._step

    @property
    def draining(self) -> dict[str, bool]:
        """Per filled pool: whether it is currently being drained (a copy)."""
        return dict(self._draining)

    def step(self, conn: Any) -> list[str]:
        """Perform one step on ``conn`` (a ``libvirt.virConnect``); describe what was done.

        Blocking: run it in an executor.  Never raises ``libvirt.libvirtError``.
        """
        self._step += 1
        n = self._step
        done: list[str] = []

        for name in sorted(pool for pool, at in self._restart_at.items() if at <= n):
            del self._restart_at[name]
            done.append(self._guard(f"start pool {name}", partial(self._start, conn, name)))

        if n >= self._next_stop:
            self._next_stop = n + self._rng.randint(*self._stop_every)
            done.append(self._guard("stop a pool", partial(self._stop_one, conn)))

        if n >= self._next_refresh:
            self._next_refresh = n + self._rng.randint(*self._refresh_every)
            done.append(self._guard("refresh a pool", partial(self._refresh_one, conn)))

        if n >= self._next_autostart:
            self._next_autostart = n + self._rng.randint(*self._autostart_every)
            done.append(self._guard("toggle autostart", partial(self._toggle_autostart, conn)))

        transient = self._transient
        if transient is not None and n >= transient.destroy_at:
            self._transient = None
            done.append(
                self._guard(
                    f"destroy transient pool {transient.name}",
                    partial(self._destroy_transient, conn, transient.name),
                )
            )
        elif transient is None and n >= self._next_transient:
            self._next_transient = n + self._rng.randint(*self._transient_every)
            done.append(
                self._guard("create a transient pool", partial(self._create_transient, conn))
            )

        for plan in self._plans:
            if self._rng.random() >= plan.activity:
                continue
            done.extend(self._fill_or_drain(conn, plan))
        return done

    # -- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _guard(what: str, action: Callable[[], str]) -> str:
        try:
            return action()
        except libvirt.libvirtError as err:
            return f"could not {what}: {_message(err)}"

    def _pick(self, names: Sequence[str]) -> str | None:
        return self._rng.choice(sorted(names)) if names else None

    def _start(self, conn: Any, name: str) -> str:
        pool = conn.storagePoolLookupByName(name)
        if pool.isActive():
            return f"pool {name} is already running again"
        pool.create(0)
        return f"started pool {name}"

    def _stop_one(self, conn: Any) -> str:
        flags = libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE | (
            libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_PERSISTENT
        )
        candidates = {
            pool.name(): bool(pool.autostart())
            for pool in conn.listAllStoragePools(flags)
            if pool.name() != self._last_stopped and pool.name() not in self._restart_at
        }
        self._stops += 1
        # Every other stop (the first one included) is of a flagged pool, so that the demo
        # shows an autostart rule at work early and again now and then.
        flagged = [name for name, autostart in candidates.items() if autostart]
        wanted = flagged if self._stops % 2 == 1 and flagged else list(candidates)
        # Drawn whatever the pick, so that the random sequence does not depend on it.
        quick, slow = self._rng.randint(1, 2), self._rng.randint(*self._flagged_restart_after)
        name = self._pick(wanted)
        if name is None:
            return "no pool to stop"
        conn.storagePoolLookupByName(name).destroy()
        self._last_stopped = name
        if candidates[name]:
            self._restart_at[name] = self._step + slow
            return f"stopped pool {name} (autostart on: left to poolwatch, else restart in {slow})"
        self._restart_at[name] = self._step + quick
        return f"stopped pool {name} (restart in {quick} step{'s' if quick > 1 else ''})"

    def _refresh_one(self, conn: Any) -> str:
        flags = libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE
        name = self._pick([pool.name() for pool in conn.listAllStoragePools(flags)])
        if name is None:
            return "no running pool to refresh"
        conn.storagePoolLookupByName(name).refresh(0)
        return f"refreshed pool {name}"

    def _toggle_autostart(self, conn: Any) -> str:
        flags = libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_PERSISTENT
        name = self._pick([pool.name() for pool in conn.listAllStoragePools(flags)])
        if name is None:
            return "no persistent pool"
        pool = conn.storagePoolLookupByName(name)
        enable = not pool.autostart()
        pool.setAutostart(1 if enable else 0)
        return f"autostart of {name} {'on' if enable else 'off'}"

    def _create_transient(self, conn: Any) -> str:
        self._transient_seq += 1
        name = f"scratch-{self._transient_seq}"
        pool_uuid = uuid.UUID(int=self._rng.getrandbits(128), version=4)
        lifetime = self._rng.randint(3, 6)
        size = self._size(1.0, 4.0)
        pool = conn.storagePoolCreateXML(
            f"<pool type='dir'><name>{name}</name><uuid>{pool_uuid}</uuid>"
            f"<target><path>/var/tmp/poolwatch-{name}</path></target></pool>",
            0,
        )
        self._transient = _Transient(name, self._step + lifetime)
        text = f"created transient pool {name} (gone in {lifetime} steps)"
        volume = f"{DEMO_PREFIX}{self._next_seq()}.img"
        try:
            pool.createXML(_volume_xml(volume, size, size, "raw"), 0)
        except libvirt.libvirtError as err:
            return f"{text}; could not create {name}/{volume}: {_message(err)}"
        return f"{text} with {volume} ({_gib(size)})"

    def _destroy_transient(self, conn: Any, name: str) -> str:
        conn.storagePoolLookupByName(name).destroy()
        return f"destroyed transient pool {name} (it vanishes)"

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _size(self, min_gib: float, max_gib: float) -> int:
        quanta = self._rng.randint(
            max(1, round(min_gib * _GiB / _SIZE_QUANTUM)),
            max(1, round(max_gib * _GiB / _SIZE_QUANTUM)),
        )
        return quanta * _SIZE_QUANTUM

    def _fill_or_drain(self, conn: Any, plan: FillPlan) -> list[str]:
        # Decide sizes before talking to libvirt so that the random sequence does not depend
        # on what libvirt answers.
        size = self._size(plan.min_gib, plan.max_gib)
        try:
            pool = conn.storagePoolLookupByName(plan.pool)
            if not pool.isActive():
                return [f"{plan.pool} is not running: no volume activity"]
            if not self._draining[plan.pool]:
                _state, capacity, allocation, _available = pool.info()
                room = int(plan.high_water * capacity) - allocation
                room -= room % _SIZE_QUANTUM
                if room >= _SIZE_QUANTUM:
                    return [self._create_volume(pool, plan, min(size, room), capacity)]
                self._draining[plan.pool] = True
            return self._drain(pool, plan)
        except libvirt.libvirtError as err:
            return [f"could not fill/drain {plan.pool}: {_message(err)}"]

    def _create_volume(self, pool: Any, plan: FillPlan, size: int, capacity: int) -> str:
        name = f"{DEMO_PREFIX}{self._next_seq()}{plan.suffix}"
        provisioned = max(size, int(size * plan.thin_factor) // _GiB * _GiB)
        try:
            pool.createXML(_volume_xml(name, provisioned, size, plan.volume_format), 0)
        except libvirt.libvirtError as err:
            return f"could not create {plan.pool}/{name}: {_message(err)}"
        used = pool.info()[2]
        return f"created {plan.pool}/{name} ({_gib(size)}, pool at {_pct(used, capacity)})"

    def _drain(self, pool: Any, plan: FillPlan) -> list[str]:
        demo = sorted(
            (vol for vol in pool.listAllVolumes(0) if vol.name().startswith(DEMO_PREFIX)),
            key=lambda vol: _seq_of(vol.name()),
        )
        done: list[str] = []
        for vol in demo[: plan.drain_per_step]:
            name = vol.name()
            try:
                freed = vol.info()[2]
                vol.delete(0)
            except libvirt.libvirtError as err:
                done.append(f"could not delete {plan.pool}/{name}: {_message(err)}")
                continue
            done.append(f"deleted {plan.pool}/{name} ({_gib(freed)} freed)")
        if len(demo) <= plan.drain_per_step:
            self._draining[plan.pool] = False
            _state, capacity, allocation, _available = pool.info()
            done.append(f"{plan.pool} recovered to {_pct(allocation, capacity)}")
        return done


def _volume_xml(name: str, capacity: int, allocation: int, volume_format: str) -> str:
    return (
        f"<volume><name>{name}</name>"
        f"<capacity unit='bytes'>{capacity}</capacity>"
        f"<allocation unit='bytes'>{allocation}</allocation>"
        f"<target><format type='{volume_format}'/></target></volume>"
    )


def _seq_of(name: str) -> int:
    match = _DEMO_SEQ.match(name)
    return int(match.group(1)) if match else 0


def _gib(size: int) -> str:
    return f"{size / _GiB:.1f} GiB"


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f} %" if whole else "? %"


def _message(err: Any) -> str:
    message = err.get_error_message()
    return str(message) if message else str(err)
