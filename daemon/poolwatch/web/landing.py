"""The landing page at /: every pool's state and fill level at a glance, as one HTML document.

A pure function of the inventory and the time, so it is tested without a server. The page
carries its own CSS and no scripts or external assets: it has to work on an air-gapped
hypervisor. Every string that came from libvirt is HTML-escaped, since pool and volume names
are chosen by whoever defines the pool.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime

from poolwatch.inventory import Inventory
from poolwatch.model import HostSnapshot, PoolSnapshot

# Display only, in percent: the configured thresholds (policies) decide alarms, not these.
WARN_PERCENT = 80
CRIT_PERCENT = 90

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
  color-scheme: light dark;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #16181b; --fg: #e6e6e3; --muted: #9aa3ad; --card: #1e2125; --line: #2d3137;
    --track: #2b2f34; --ok: #5fa383; --warn: #d9a441; --crit: #d65f55; --down: #6b7178;
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
.badge {
  display: inline-block; font-size: .75rem; font-weight: 600; padding: .05rem .5rem;
  border-radius: 999px; color: #fff; vertical-align: middle; margin-left: .4rem;
}
.badge.up { background: var(--ok); }
.badge.down { background: var(--crit); }
.scroll { overflow-x: auto; }
table { width: 100%; border-collapse: collapse; }
th, td { text-align: left; padding: .4rem .5rem; border-top: 1px solid var(--line); }
th { font-size: .8rem; color: var(--muted); font-weight: 600; border-top: none; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.name { font-weight: 600; overflow-wrap: anywhere; white-space: pre-wrap; }
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
.none { color: var(--muted); }
footer { color: var(--muted); font-size: .8rem; }
@media (max-width: 40rem) {
  .hide-narrow { display: none; }
  .fill { min-width: 7rem; }
}
"""


def render_landing(inventory: Inventory, *, now: float) -> str:
    """The whole landing page for the inventory as of ``now`` (unix time)."""
    parts = [
        "<!doctype html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>\n",
        f"<meta http-equiv='refresh' content='{REFRESH_SECONDS}'>\n",
        "<title>poolwatch</title>\n<style>",
        _CSS,
        "</style>\n</head>\n<body>\n<header><h1>poolwatch</h1><nav>",
        "".join(f"<a href='{href}'>{text}</a>" for href, text in LINKS),
        "</nav></header>\n<main>\n",
    ]
    if not inventory.hosts:
        parts.append("<p class='none'>No libvirt connections configured.</p>\n")
    for host in inventory.hosts.values():
        parts.append(_host_section(host, now))
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


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _host_section(host: HostSnapshot, now: float) -> str:
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
        f"<p class='meta'>{_e(host.uri)} · {polled}{stale}</p>\n",
    ]
    if not host.pools:
        parts.append("<p class='none'>No storage pools.</p>\n</section>\n")
        return "".join(parts)
    parts.append(
        "<div class='scroll'><table>\n<thead><tr><th>Pool</th>"
        "<th class='hide-narrow'>Type</th><th>State</th><th>Used</th>"
        "<th class='num hide-narrow'>Size</th><th class='num'>Free</th>"
        "<th class='num hide-narrow'>Volumes</th><th class='hide-narrow'>Autostart</th>"
        "</tr></thead>\n<tbody>\n"
    )
    pools = host.pools
    for name in sorted(pools):
        parts.append(_pool_row(pools[name]))
    parts.append("</tbody>\n</table></div>\n</section>\n")
    return "".join(parts)


def _pool_row(pool: PoolSnapshot) -> str:
    state = pool.state.name.lower()
    details = f"uuid {pool.uuid}\ntarget {pool.target_path or '-'}\nsource {pool.source or '-'}"
    none = "<span class='none'>—</span>"
    if pool.active and pool.capacity > 0:
        fill = _fill_bar(pool.allocation / pool.capacity)
        size = human_bytes(pool.capacity)
        free = human_bytes(pool.free_bytes)
    else:
        # A stopped pool's figures are stale (libvirt keeps the last ones), so none are shown.
        fill = size = free = none
    scan = pool.volumes
    volumes = f"{scan.count:,}" if pool.active and scan is not None else none
    return (
        f"<tr><td class='name' title='{_e(details)}'>{_e(pool.name)}</td>"
        f"<td class='hide-narrow'>{_e(pool.type)}</td>"
        f"<td class='state-{state}'>{state}</td>"
        f"<td>{fill}</td>"
        f"<td class='num hide-narrow'>{size}</td>"
        f"<td class='num'>{free}</td>"
        f"<td class='num hide-narrow'>{volumes}</td>"
        f"<td class='hide-narrow'>{'yes' if pool.autostart else 'no'}</td></tr>\n"
    )


def _fill_bar(ratio: float) -> str:
    percent = min(max(ratio, 0.0), 1.0) * 100
    # Coloured by the number shown, so "90 %" is never amber.
    shown = round(percent)
    level = "crit" if shown >= CRIT_PERCENT else "warn" if shown >= WARN_PERCENT else "ok"
    return (
        f"<div class='fill'><div class='bar {level}' role='progressbar' aria-valuemin='0' "
        f"aria-valuemax='100' aria-valuenow='{shown}'><span style='width:{percent:.1f}%'>"
        f"</span></div><span class='pct'>{shown} %</span></div>"
    )
