"""What the actuator keeps per pool between evaluations, and the context one evaluation works in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from poolwatch.actuator.fill_history import FillHistory
from poolwatch.model import HostSnapshot, PoolSnapshot
from poolwatch.policies.autostart import AutostartState
from poolwatch.policies.forecast import UsageHistory
from poolwatch.policies.resume import ResumeState
from poolwatch.policies.rules import AutostartRule, ThresholdRule
from poolwatch.policies.thresholds import ThresholdState
from poolwatch.source import StorageSource


class Connection(Protocol):
    """What the actuator needs of a watched connection."""

    @property
    def source(self) -> StorageSource: ...

    def reread(self, pool: str) -> None:
        """Read the pool again soon (libvirt sends no event for some changes)."""

    def set_urgent(self, pools: frozenset[str]) -> None:
        """Pools to refresh sooner than the refresh interval."""


@dataclass
class PolicyState:
    """One pool's policy state, kept from one evaluation to the next."""

    threshold_rule: ThresholdRule | None = None
    threshold: ThresholdState = field(default_factory=ThresholdState)
    history: UsageHistory | None = None
    last_sample: float | None = None  # read_at of the last snapshot added to the history
    autostart_rule: AutostartRule | None = None
    autostart: AutostartState = field(default_factory=AutostartState)
    resume: ResumeState = field(default_factory=ResumeState)
    last_action: str | None = None
    last_action_at: float | None = None
    fill_history: FillHistory = field(default_factory=FillHistory)  # the last hour, for the chart

    def note(self, action: str, now: float) -> None:
        """Remember ``action`` as the pool's last one (the API's ``last_action``)."""
        self.last_action, self.last_action_at = action, now


@dataclass(frozen=True, slots=True)
class PoolContext:
    """One pool at one evaluation: where it is, what it looks like, and its state."""

    key: str  # the connection's inventory key; host.name is only its display name
    host: HostSnapshot
    pool: PoolSnapshot
    state: PolicyState  # mutable: the evaluation updates it in place
    now: float
