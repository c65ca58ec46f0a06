"""Policy rules as the policies see them: plain frozen values, built from the config.

The config module validates the operator's TOML and turns it into these; the policies never
see TOML, pydantic or libvirt.
"""

from __future__ import annotations

import enum
import fnmatch
from dataclasses import dataclass
from typing import TypeVar


class Level(enum.IntEnum):
    """Space alarm level, exported as poolwatch_pool_threshold_level."""

    OK = 0
    WARNING = 1
    CRITICAL = 2


@dataclass(frozen=True, slots=True)
class Selector:
    """Which pools a rule applies to: a glob on the pool name and, optionally, on its type."""

    pool: str = "*"
    type: str | None = None

    def matches(self, pool_name: str, pool_type: str) -> bool:
        if not fnmatch.fnmatchcase(pool_name, self.pool):
            return False
        return self.type is None or fnmatch.fnmatchcase(pool_type, self.type)


@dataclass(frozen=True, slots=True)
class UsedRatio:
    """A level reached when libvirt's allocation / capacity >= ratio (config: "85%")."""

    ratio: float  # 0 < ratio <= 1


@dataclass(frozen=True, slots=True)
class FreeBelow:
    """A level reached when free bytes (min of available and f_bavail) < bytes ("< 20GiB")."""

    bytes: int


Limit = UsedRatio | FreeBelow


@dataclass(frozen=True, slots=True)
class ThresholdRule:
    selector: Selector
    warning: Limit | None
    critical: Limit | None
    # Hysteresis: a level clears only once the measure is this far back on the good side of its
    # limit (a ratio in percentage points for UsedRatio limits, bytes for FreeBelow limits).
    clear_ratio: float
    clear_bytes: int
    hold: float  # seconds a new level must hold before it takes effect (config: `for`)
    time_to_full_warning: float | None  # seconds; warning when the forecast is sooner
    time_to_full_critical: float | None
    forecast_window: float  # seconds of history the linear forecast uses
    hooks: tuple[str, ...]  # names of [hooks.NAME] run on entering warning/critical and recovery


class AutostartMode(enum.StrEnum):
    OFF = "off"  # observe only
    BOOT = "boot"  # after each (re)connect, start inactive pools whose autostart flag is set
    ENFORCE = "enforce"  # as boot, and whenever such a pool stops later


@dataclass(frozen=True, slots=True)
class AutostartRule:
    selector: Selector
    mode: AutostartMode
    ensure_flag: bool  # set libvirt's autostart flag on matching persistent pools
    require_mount: bool  # dir pools: never start one whose target is not a mount point
    max_attempts: int  # failed starts before giving up; 0: never give up
    backoff_initial: float  # seconds before the first retry; doubles, with jitter
    backoff_max: float
    hooks: tuple[str, ...]  # run when the not_mounted alarm is raised or cleared, and on give-up


class ResumeAction(enum.StrEnum):
    RESUME = "resume"  # resume once the pool has room again, one guest at a time
    LEAVE = "leave"  # only alarm: an operator resumes
    KILL = "kill"  # destroy the guest, as oVirt's KILL resume behaviour


@dataclass(frozen=True, slots=True)
class ResumeRule:
    """What to do with guests that a full pool (an I/O error on their disk in it) paused."""

    selector: Selector  # the pools
    guest: str  # glob on the guest's name
    action: ResumeAction
    free_above: int  # resume only while the pool has more than this many bytes free
    delay: float  # seconds between two resumes on one pool
    window: float  # a guest that pauses again within this many seconds of a resume stays paused
    hooks: tuple[str, ...]  # run on guest_paused, guest_resumed, guest_killed, guest_left_paused

    def matches(self, pool_name: str, pool_type: str, guest_name: str) -> bool:
        return self.selector.matches(pool_name, pool_type) and fnmatch.fnmatchcase(
            guest_name, self.guest
        )


@dataclass(frozen=True, slots=True)
class ExecHook:
    name: str
    argv: tuple[str, ...]  # run without a shell; pool facts arrive in POOLWATCH_* variables
    timeout: float  # seconds; then the whole process group is killed


@dataclass(frozen=True, slots=True)
class WebhookHook:
    name: str
    url: str
    timeout: float  # seconds per attempt
    retries: int  # further attempts after a failed one, with exponential backoff
    headers: tuple[tuple[str, str], ...]  # e.g. Authorization; never logged


Hook = ExecHook | WebhookHook


R = TypeVar("R", ThresholdRule, AutostartRule)


def first_match(rules: tuple[R, ...], pool_name: str, pool_type: str) -> R | None:
    """The first rule whose selector matches: rules are ordered, the first one wins."""
    for rule in rules:
        if rule.selector.matches(pool_name, pool_type):
            return rule
    return None
