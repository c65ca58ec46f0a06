"""What a hook is told: one alarm transition of one pool, and the final result of running it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class HookEvent:
    """One alarm transition, as hooks see it (POOLWATCH_* variables, webhook JSON body)."""

    # "warning", "critical", "recovery", "not_mounted", "mounted", "gave_up", "guest_paused",
    # "guest_resumed", "guest_killed", "guest_left_paused"
    action: str
    # The inventory key of the pool's libvirt connection, which names it uniquely (two
    # connections may report the same host name). Poolwatch's own: hooks are not given it.
    connection: str
    host: str
    pool: str
    pool_uuid: str
    # "ok" | "warning" | "critical" for space alarms; the alarm state for mount/autostart alarms
    level: str
    previous_level: str
    # libvirt's allocation / capacity, what ratio limits compare (exported as allocation and
    # capacity); None for mount/autostart alarms.
    used_ratio: float | None
    # What a guest can still write, what free-space limits compare: the smaller of libvirt's
    # available and the filesystem's f_bavail (root-reserved blocks are not free for QEMU).
    available_bytes: int | None
    time_to_full_seconds: float | None
    episode: str  # one id per alarm episode; the idempotency key is f"{episode}:{action}"
    snapshot: Mapping[str, Any]  # JSON-able description of the pool, sent in the webhook body
    guest: str = ""  # guest_paused, guest_resumed, guest_killed: the guest's name
    guests: tuple[str, ...] = ()  # every guest with a disk in the pool, by name


HookResult = Literal["ok", "failed", "timeout", "dropped", "dry_run"]
# Told once per submitted event: (hook name, event, final result).
ResultCallback = Callable[[str, HookEvent, HookResult], None]
