"""The landing page at /: each pool's state, fill level and alarm at a glance, as one HTML page.

A pure function of the inventory and the time, so it is tested without a server. The page
carries its own CSS and no scripts or external assets: it has to work on an air-gapped
hypervisor. Every string that came from libvirt or the config is HTML-escaped, since pool and
volume names are chosen by whoever defines the pool, and error texts quote them.

It has to stay light with hundreds of pools: one table row per pool with plain cells, and a short
"needs attention" list on top so an alarm is not lost in a long table.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from poolwatch.documents import InventorySnapshot, level_name, snapshot_of
from poolwatch.inventory import Inventory
from poolwatch.model import GuestState, HostSnapshot, PoolGuest, PoolPolicy, PoolSnapshot
from poolwatch.web.sparkline import sparkline

# Display only, in percent, for pools without a threshold rule; with a rule, the bar follows the
# rule's alarm level instead.
WARN_PERCENT = 80
CRIT_PERCENT = 90

# What the two space columns measure, as their headings' tooltips say: the figures a ratio limit
# ("85%") and a free-space limit ("< 20GiB") compare. They differ by the filesystem's reserve.
_USED_TITLE = (
    "allocation / capacity as libvirt reports them; ratio limits (85%) compare this. "
    "Below the bar: the last hour"
)
_FREE_TITLE = (
    "what guests can still write: the smaller of libvirt's available and the filesystem's "
    "space for non-root users (f_bavail); free-space limits (< 20GiB) compare this"
)

# Bar colour classes by threshold level (0 ok, 1 warning, 2 critical).
_BAR_CLASSES = ("ok", "warn", "crit")

# An error message from libvirt can be a paragraph; the cell shows its start, the tooltip all.
MAX_ERROR_CHARS = 160

# Beyond this many entries the attention list says how many more there are instead.
MAX_ATTENTION_ITEMS = 50

_NONE = "<span class='none'>—</span>"

# The page is a glance, not a live view; a slow refresh keeps an open tab current without
# loading the daemon.
REFRESH_SECONDS = 30

_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB")

LINKS = (
    ("/metrics", "metrics"),
    ("/api/v1/pools", "pools (JSON)"),
    ("/api/v1/events", "events (JSON)"),
    ("/healthz", "healthz"),
    ("/readyz", "readyz"),
)

_CSS = """
:root {
  --bg: #f6f6f3; --fg: #24292f; --muted: #667085; --card: #ffffff; --line: #e3e3de;
  --track: #e9ebe6; --ok: #4f8a6e; --warn: #d4962a; --crit: #c0463d; --down: #9aa0a6;
  --ok-bg: #dcefe5; --ok-fg: #1d5c40; --warn-bg: #fbe3a6; --warn-fg: #5c3a00;
  --crit-bg: #b3261e; --crit-fg: #ffffff; --problem: #b3261e; --attention: #8a5a00;
  color-scheme: light dark;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #16181b; --fg: #e6e6e3; --muted: #9aa3ad; --card: #1e2125; --line: #2d3137;
    --track: #2b2f34; --ok: #5fa383; --warn: #d9a441; --crit: #d65f55; --down: #6b7178;
    --ok-bg: #1d3a2c; --ok-fg: #a6dcc1; --warn-bg: #e0a93e; --warn-fg: #2a1d00;
    --crit-bg: #a8322a; --crit-fg: #ffffff; --problem: #f08a80; --attention: #e0a93e;
  }
}
* { box-sizing: border-box; }
body {
  margin: 0; background: var(--bg); color: var(--fg);
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
}
header, main, footer { max-width: 72rem; margin: 0 auto; padding: 1rem 1.25rem; }
header { display: flex; flex-wrap: wrap; align-items: baseline; gap: .5rem 1.5rem; }
h1 { font-size: 1.35rem; margin: 0; }
nav a { margin-right: 1rem; color: var(--muted); }
section.host {
  background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  padding: .9rem 1.1rem; margin-bottom: 1.25rem;
}
h2 { font-size: 1.1rem; margin: 0 0 .15rem; overflow-wrap: anywhere; }
.meta { color: var(--muted); margin: 0 0 .6rem; font-size: .9rem; overflow-wrap: anywhere; }
/* Badges carry their meaning in words; the colours (contrast 6.5:1 or more) only help. */
.badge {
  display: inline-block; font-size: .72rem; font-weight: 700; letter-spacing: .03em;
  padding: .05rem .5rem; border-radius: 999px; vertical-align: middle; white-space: nowrap;
}
h2 .badge { margin-left: .4rem; }
.badge.up, .badge.ok { background: var(--ok-bg); color: var(--ok-fg); }
.badge.warning { background: var(--warn-bg); color: var(--warn-fg); }
.badge.down, .badge.critical { background: var(--crit-bg); color: var(--crit-fg); }
.problem { color: var(--problem); }
.attention-text { color: var(--attention); }
section.attention { border-left: 4px solid var(--crit); }
section.attention h2 { margin-bottom: .4rem; }
section.attention ul { margin: 0; padding-left: 1.1rem; }
section.attention li { margin: .15rem 0; overflow-wrap: anywhere; }
tr.warning td:first-child { box-shadow: inset 3px 0 var(--warn); }
tr.critical td:first-child { box-shadow: inset 3px 0 var(--crit); }
td.note { font-size: .85rem; overflow-wrap: anywhere; }
.when { color: var(--muted); white-space: nowrap; }
.scroll { overflow-x: auto; }
table { width: 100%; border-collapse: collapse; }
th, td { text-align: left; padding: .4rem .5rem; border-top: 1px solid var(--line); }
th { font-size: .8rem; color: var(--muted); font-weight: 600; border-top: none; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.name { font-weight: 600; overflow-wrap: break-word; min-width: 8ch; white-space: pre-wrap; }
.state-running { color: var(--ok); }
.state-inactive { color: var(--down); }
.state-building { color: var(--muted); }
.state-degraded { color: var(--warn); }
.state-inaccessible { color: var(--crit); }
.fill { display: flex; align-items: center; gap: .5rem; min-width: 11rem; }
.bar { flex: 1; height: .6rem; background: var(--track); border-radius: 999px; overflow: hidden; }
.bar span { display: block; height: 100%; background: var(--ok); }
.bar.warn span { background: var(--warn); }
.bar.crit span { background: var(--crit); }
.pct { width: 3.2rem; text-align: right; font-variant-numeric: tabular-nums; }
/* The sparkline under the bar: as wide as bar and percentage, stretched; the line keeps its
   width. */
.spark { display: block; width: 100%; height: 1.25rem; margin-top: .3rem; }
.spark rect { fill: var(--track); }
.spark polyline {
  fill: none; stroke: var(--muted); stroke-width: 1.5; stroke-linejoin: round;
  vector-effect: non-scaling-stroke;
}
.none { color: var(--muted); }
footer { color: var(--muted); font-size: .8rem; }
@media (max-width: 40rem) {
  .hide-narrow { display: none; }
  .fill { min-width: 7rem; }
}
"""


def render_landing(inventory: Inventory, *, now: float) -> str:
    """The whole landing page for the inventory as of ``now`` (unix time)."""
    return render_snapshot(snapshot_of(inventory), now=now)


def render_snapshot(inventory: InventorySnapshot, *, now: float) -> str:
    """The landing page of a copy of the inventory (safe to render in another thread)."""
    parts = [
        "<!doctype html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>\n",
        f"<meta http-equiv='refresh' content='{REFRESH_SECONDS}'>\n",
        # An empty icon: browsers stop asking for /favicon.ico (a 404 in every access log).
        "<link rel='icon' href='data:,'>\n",
        "<title>poolwatch</title>\n<style>",
        _CSS,
        "</style>\n</head>\n<body>\n<header><h1>poolwatch</h1><nav>",
        "".join(f"<a href='{href}'>{text}</a>" for href, text in LINKS),
        "</nav></header>\n<main>\n",
    ]
    if not inventory.hosts:
        parts.append("<p class='none'>No libvirt connections configured.</p>\n")
    hosts = [
        _HostView(f"h{index}", host, inventory.policies[key])
        for index, (key, host) in enumerate(inventory.hosts.items())
    ]
    parts.append(_attention_section(hosts))
    for view in hosts:
        parts.append(_host_section(view, now))
    rendered = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    parts.append(f"</main>\n<footer>Rendered {rendered}.</footer>\n</body>\n</html>\n")
    return "".join(parts)


def human_bytes(size: int) -> str:
    """A size in binary units as operators read them: "512 B", "12.3 GiB"."""
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in _UNITS:
        value /= 1024
        # 1023.96 would round to "1024.0 KiB"; show it as the next unit instead.
        if value < 1023.95 or unit == _UNITS[-1]:
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def human_age(seconds: float) -> str:
    """How long ago something happened, coarse enough to read at a glance."""
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} days ago"


def human_duration(seconds: float) -> str:
    """A span ahead, rounded down so it never promises more time than there is: "3 h 20 m"."""
    total = int(max(0.0, seconds))
    if total < 60:
        return f"{total} s"
    hours, minutes = divmod(total // 60, 60)
    if hours < 1:
        return f"{minutes} m"
    days, hours = divmod(hours, 24)
    if days < 1:
        return f"{hours} h {minutes} m" if minutes else f"{hours} h"
    return f"{days} d {hours} h" if hours and days < 10 else f"{days} d"


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


@dataclass(frozen=True, slots=True)
class _HostView:
    anchor: str  # id prefix of the host's rows; names from libvirt never go into an id
    host: HostSnapshot
    policies: Mapping[str, PoolPolicy]

    def sorted_pools(self) -> list[tuple[str, PoolSnapshot, PoolPolicy | None]]:
        """(row id, pool, policy) by pool name."""
        pools = self.host.pools
        return [
            (f"{self.anchor}-p{index}", pools[name], self.policies.get(name))
            for index, name in enumerate(sorted(pools))
        ]


def _problems(policy: PoolPolicy | None) -> list[str]:
    """What needs an operator's eye on this pool, as HTML fragments; empty when all is well."""
    if policy is None:
        return []
    problems = []
    if policy.level is not None and policy.level > 0:
        problems.append(_level_badge(policy.level, policy.episode))
        if policy.time_to_full is not None:
            problems.append(f"full in {human_duration(policy.time_to_full)}")
    if policy.not_mounted:
        problems.append(_NOT_MOUNTED)
    if policy.autostart_mode is not None and policy.autostart_gave_up:
        problems.append(f"<span class='problem'>{_gave_up(policy)}</span>")
    return problems


def _attention_section(hosts: list[_HostView]) -> str:
    items = []
    for view in hosts:
        for row_id, pool, policy in view.sorted_pools():
            problems = _problems(policy)
            paused = _paused_guests(view.host.pool_guests.get(pool.name, ()))
            if paused:
                problems.append(paused)
            if problems:
                items.append(
                    f"<li><a href='#{row_id}'>{_e(view.host.name)} / {_e(pool.name)}</a> "
                    f"{' · '.join(problems)}</li>\n"
                )
    if not items:
        return ""
    more = len(items) - MAX_ATTENTION_ITEMS
    tail = f"<li>and {more} more below</li>\n" if more > 0 else ""
    return (
        "<section class='host attention'>\n<h2>Needs attention</h2>\n<ul>\n"
        + "".join(items[:MAX_ATTENTION_ITEMS])
        + tail
        + "</ul>\n</section>\n"
    )


def _host_summary(view: _HostView) -> str:
    levels = [p.level for p in view.policies.values() if p.level is not None]
    counts = (
        (sum(1 for level in levels if level >= 2), "critical", "critical"),
        (sum(1 for level in levels if level == 1), "warning", "warnings"),
        (sum(1 for p in view.policies.values() if p.not_mounted), "not mounted", "not mounted"),
        (sum(1 for p in view.policies.values() if p.autostart_gave_up), "gave up", "gave up"),
    )
    parts = [_plural(len(view.host.pools), "pool", "pools")]
    parts += [_plural(n, one, many) for n, one, many in counts if n]
    return " · ".join(parts)


def _host_section(view: _HostView, now: float) -> str:
    host = view.host
    status = "up" if host.up else "down"
    polled = (
        "never polled"
        if host.last_poll_success is None
        else f"last poll {human_age(now - host.last_poll_success)}"
    )
    stale = "" if host.up else " · not connected, showing the last known state"
    parts = [
        "<section class='host'>\n",
        f"<h2>{_e(host.name)}<span class='badge {status}'>{status}</span></h2>\n",
        f"<p class='meta'>{_e(host.uri)} · {_host_summary(view)} · {polled}{stale}</p>\n",
    ]
    if not host.pools:
        parts.append("<p class='none'>No storage pools.</p>\n</section>\n")
        return "".join(parts)
    parts.append(
        "<div class='scroll'><table>\n<thead><tr><th>Pool</th>"
        f"<th class='hide-narrow'>Type</th><th>State</th><th title='{_e(_USED_TITLE)}'>Used</th>"
        f"<th class='num hide-narrow'>Size</th><th class='num' title='{_e(_FREE_TITLE)}'>Free</th>"
        "<th>Alarm</th><th>Forecast</th><th class='hide-narrow'>Autostart</th>"
        "<th class='num hide-narrow'>Volumes</th><th>Guests</th>"
        "<th class='hide-narrow'>Last action</th>"
        "</tr></thead>\n<tbody>\n"
    )
    for row_id, pool, policy in view.sorted_pools():
        guests = view.host.pool_guests.get(pool.name, ())
        parts.append(_pool_row(row_id, pool, policy, guests, now))
    parts.append("</tbody>\n</table></div>\n</section>\n")
    return "".join(parts)


def _pool_row(
    row_id: str,
    pool: PoolSnapshot,
    policy: PoolPolicy | None,
    guests: tuple[PoolGuest, ...],
    now: float,
) -> str:
    state = pool.state.name.lower()
    details = f"uuid {pool.uuid}\ntarget {pool.target_path or '-'}\nsource {pool.source or '-'}"
    level = None if policy is None else policy.level
    if pool.active and pool.capacity > 0:
        fill = _fill_bar(pool.allocation / pool.capacity, level)
        size = human_bytes(pool.capacity)
        free = human_bytes(pool.free_bytes)
    else:
        # A stopped pool's figures are stale (libvirt keeps the last ones), so none are shown.
        fill = size = free = _NONE
    scan = pool.volumes
    volumes = f"{scan.count:,}" if pool.active and scan is not None else _NONE
    row_class = _row_class(policy)
    return (
        f"<tr id='{row_id}'{row_class}>"
        f"<td class='name' title='{_e(details)}'>{_e(pool.name)}</td>"
        f"<td class='hide-narrow'>{_e(pool.type)}</td>"
        f"<td class='state-{state}'>{state}</td>"
        f"<td>{fill}{_fill_chart(pool, policy, now)}</td>"
        f"<td class='num hide-narrow'>{size}</td>"
        f"<td class='num'>{free}</td>"
        f"<td>{_alarm(policy)}</td>"
        f"<td>{_forecast(pool, policy)}</td>"
        f"<td class='note hide-narrow'>{_autostart(pool, policy, now)}</td>"
        f"<td class='num hide-narrow'>{volumes}</td>"
        f"<td class='note'>{_guests(guests)}</td>"
        f"<td class='note hide-narrow'>{_last_action(policy, now)}</td></tr>\n"
    )


def _paused_guests(guests: tuple[PoolGuest, ...]) -> str:
    """The pool's paused guests as an HTML fragment, "" when none is paused."""
    paused = [
        f"{_e(g.name)} ({_e(g.io_error)})" if g.io_error else _e(g.name)
        for g in guests
        if g.state in (GuestState.PAUSED, GuestState.PAUSED_IO_ERROR)
    ]
    if not paused:
        return ""
    return f"<span class='problem'>paused: {', '.join(paused)}</span>"


def _guests(guests: tuple[PoolGuest, ...]) -> str:
    if not guests:
        return _NONE
    running = sum(1 for g in guests if g.state is GuestState.RUNNING)
    names = ", ".join(_e(g.name) for g in guests)
    text = f"<span title='{names}'>{len(guests)} ({running} running)</span>"
    paused = _paused_guests(guests)
    return f"{text} · {paused}" if paused else text


def _row_class(policy: PoolPolicy | None) -> str:
    """A marker at the row's edge, so a problem is found again when scrolling 300 rows."""
    if policy is None:
        return ""
    level = policy.level or 0
    if level >= 2 or policy.not_mounted or policy.autostart_gave_up:
        return " class='critical'"
    return " class='warning'" if level == 1 else ""


_NOT_MOUNTED = (
    "<span class='badge critical' title='the target is not a mount point, so the pool is not "
    "started'>NOT MOUNTED</span>"
)


def _level_badge(level: int, episode: str | None) -> str:
    name = level_name(level)
    title = "" if episode is None else f" title='alarm episode {_e(episode)}'"
    return f"<span class='badge {name}'{title}>{name.upper()}</span>"


def _alarm(policy: PoolPolicy | None) -> str:
    if policy is None:
        return _NONE
    badges = []
    if policy.level is not None:
        badges.append(_level_badge(policy.level, policy.episode))
    if policy.not_mounted:
        badges.append(_NOT_MOUNTED)
    return " ".join(badges) or _NONE


def _forecast(pool: PoolSnapshot, policy: PoolPolicy | None) -> str:
    if policy is None or not pool.active:
        return _NONE
    if policy.time_to_full is not None:
        return f"full in {human_duration(policy.time_to_full)}"
    if policy.growth_rate is not None:
        return "not growing"
    return "<span class='none' title='not enough samples for a forecast yet'>—</span>"


def _gave_up(policy: PoolPolicy) -> str:
    """The gave-up note, escaped; a long error shows its start here and in full as a tooltip."""
    text = f"gave up after {_plural(policy.autostart_failures, 'attempt', 'attempts')}"
    error = policy.last_error
    if not error:
        return text
    shown = error if len(error) <= MAX_ERROR_CHARS else error[: MAX_ERROR_CHARS - 1] + "…"
    return f"<span title='{_e(error)}'>{text}: {_e(shown)}</span>"


def _autostart(pool: PoolSnapshot, policy: PoolPolicy | None, now: float) -> str:
    flag = "yes" if pool.autostart else "no"
    if policy is None or policy.autostart_mode is None:
        return flag
    text = f"{flag} · {_e(policy.autostart_mode)}"
    if policy.autostart_gave_up:
        return f"{text}<br><span class='problem'>{_gave_up(policy)}</span>"
    if policy.autostart_failures:
        failed = _plural(policy.autostart_failures, "failed start", "failed starts")
        retry = ""
        if policy.next_attempt_at is not None:
            wait = policy.next_attempt_at - now
            retry = f", next try in {human_duration(wait)}" if wait >= 1 else ", next try due"
        error = "" if not policy.last_error else f" title='{_e(policy.last_error)}'"
        return f"{text}<br><span class='attention-text'{error}>{failed}{retry}</span>"
    return text


def _last_action(policy: PoolPolicy | None, now: float) -> str:
    if policy is None or policy.last_action is None:
        return _NONE
    when = ""
    if policy.last_action_at is not None:
        when = f" <span class='when'>{human_age(now - policy.last_action_at)}</span>"
    return f"{_e(policy.last_action)}{when}"


def _fill_chart(pool: PoolSnapshot, policy: PoolPolicy | None, now: float) -> str:
    """The pool's recent fill level as a sparkline; none while it is stopped (like its bar)
    or has fewer than two samples."""
    points = () if policy is None or not pool.active else policy.fill_history
    if len(points) < 2:
        return ""
    percents = [round(ratio * 100) for _, ratio in points]
    label = (
        f"fill level of {pool.name} over the last {human_duration(now - points[0][0])}: "
        f"{percents[0]} % to {percents[-1]} % (lowest {min(percents)} %, "
        f"highest {max(percents)} %)"
    )
    return sparkline(points, label=label)


def _fill_bar(ratio: float, level: int | None) -> str:
    percent = min(max(ratio, 0.0), 1.0) * 100
    shown = round(percent)
    if level is not None:
        # A threshold rule applies: the bar shows its alarm, which may use free bytes or a
        # forecast rather than the percentage.
        bar = _BAR_CLASSES[min(max(level, 0), len(_BAR_CLASSES) - 1)]
    else:
        # Coloured by the number shown, so "90 %" is never amber.
        bar = "crit" if shown >= CRIT_PERCENT else "warn" if shown >= WARN_PERCENT else "ok"
    return (
        f"<div class='fill'><div class='bar {bar}' role='progressbar' aria-valuemin='0' "
        f"aria-valuemax='100' aria-valuenow='{shown}'><span style='width:{percent:.1f}%'>"
        f"</span></div><span class='pct'>{shown} %</span></div>"
    )
