"""What poolwatch is measured against in the same run: the baselines.

- full poll: `bare_poll`, the calls of one poolwatch resync made in a plain libvirt-python loop
  in one thread, on each connection of `POLL_BASELINES` (a plain one, and one with poolwatch's
  keepalive armed). `full_poll.poll_cost` times every entry of `POLL_BASELINES`, interleaved
  with poolwatch's resync, and reports each under its `name`: a new poll baseline is one more
  entry there.
- /metrics: `static_server`, an aiohttp process serving the bytes poolwatch served, from memory.
  Anything that yields a base URL serving `/metrics` can be scraped by `measure.scrape_matrix`
  the same way.
- events: a bare libvirt client's callback (`event_latency.BareListener`), which lives beside the
  stop/start cycles it times; and `switched_server`, the static server whose page a bare
  client's events switch, timed by the same cycles as poolwatch (the scrape-time exporter, in
  `scrape_time`, is the third).
"""

from __future__ import annotations

import contextlib
import gzip
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt

from benchmarks.scrape_time import child_process, free_port


def bare_poll(conn: Any, xml_cache: dict[str, str]) -> int:
    """The calls of one poolwatch resync, made in a plain loop in one thread; returns volumes."""
    pools = conn.listAllStoragePools(0)
    persistent = {
        p.name()
        for p in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_PERSISTENT)
    }
    autostart = {
        p.name() for p in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_AUTOSTART)
    }
    del persistent, autostart  # poolwatch asks for them; so does the baseline
    active = set()
    for pool in pools:
        uuid = pool.UUIDString()
        if uuid not in xml_cache:  # poolwatch parses a pool's XML once per definition too
            xml_cache[uuid] = pool.XMLDesc(0)
        if pool.info()[0] == libvirt.VIR_STORAGE_POOL_RUNNING:  # whether it runs, as poolwatch
            active.add(pool.name())
            pool.numOfVolumes()
    volumes = 0
    for name in sorted(active):
        for vol in conn.storagePoolLookupByName(name).listAllVolumes(0):
            vol.XMLDesc(0)
            volumes += 1
    return volumes


def plain_connection(uri: str, _keepalive: tuple[int, int]) -> Any:
    return libvirt.open(uri)


def keepalive_connection(uri: str, keepalive: tuple[int, int]) -> Any:
    """A connection with poolwatch's keepalive: libvirt then resets its keepalive timer on every
    reply, which wakes its event thread (measured: ~20 us of CPU per call). poolwatch needs
    keepalive to notice a frozen libvirtd (spec §10)."""
    conn = libvirt.open(uri)
    conn.setKeepAlive(*keepalive)
    return conn


@dataclass(frozen=True)
class PollBaseline:
    """A full poll made without poolwatch, timed beside its resync."""

    name: str  # the key of its figures in results.json ("seconds", "cpu_seconds", ...)
    # (uri, poolwatch's keepalive (interval, count)) -> an open libvirt connection; called in a
    # worker thread, closed by the caller.
    connect: Callable[[str, tuple[int, int]], Any]
    # (connection, pool XML cache) -> volumes seen; called in a worker thread.
    poll: Callable[[Any, dict[str, str]], int] = bare_poll


# The first is the reference: its calls are counted and its time is the ratio's denominator.
POLL_BASELINES: tuple[PollBaseline, ...] = (
    PollBaseline("baseline", plain_connection),
    PollBaseline("keepalive", keepalive_connection),
)


# Serves `current`, a (plain, gzip) pair of bodies, on `port`; prints "ready" once listening.
_SERVE = """
async def metrics(request):
    plain, gz = current
    if 'gzip' in request.headers.get('Accept-Encoding', ''):
        return web.Response(body=gz, headers={'Content-Type': 'text/plain; version=0.0.4',
                                              'Content-Encoding': 'gzip'})
    return web.Response(body=plain, content_type='text/plain')
app = web.Application()
app.router.add_get('/metrics', metrics)
web.run_app(app, host='127.0.0.1', port=port, print=lambda *a: print('ready', flush=True))
"""

STATIC_SERVER = (
    """
import sys
from aiohttp import web
current = (open(sys.argv[1], 'rb').read(), open(sys.argv[2], 'rb').read())
port = int(sys.argv[3])
"""
    + _SERVE
)

# The static server, with two pages: the one poolwatch served with the pool running, and the
# same bytes with the pool's state line saying stopped. A bare libvirt client's lifecycle
# callback (libvirt's default event loop in a thread of its own) picks the page.
SWITCHED_SERVER = (
    """
import sys, threading
import libvirt
from aiohttp import web
uri, pool_name, prefix, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
pages = {state: (open(f'{prefix}.{state}', 'rb').read(), open(f'{prefix}.{state}.gz', 'rb').read())
         for state in ('running', 'stopped')}
libvirt.virEventRegisterDefaultImpl()
def run_events():
    while True:
        libvirt.virEventRunDefaultImpl()
threading.Thread(target=run_events, daemon=True).start()
conn = libvirt.open(uri)
current = pages['running' if conn.storagePoolLookupByName(pool_name).isActive() else 'stopped']
def lifecycle(_conn, pool, event, _detail, _opaque):
    global current
    if pool.name() != pool_name:
        return
    if event == libvirt.VIR_STORAGE_POOL_EVENT_STARTED:
        current = pages['running']
    elif event == libvirt.VIR_STORAGE_POOL_EVENT_STOPPED:
        current = pages['stopped']
conn.storagePoolEventRegisterAny(None, libvirt.VIR_STORAGE_POOL_EVENT_ID_LIFECYCLE, lifecycle, None)
"""
    + _SERVE
)


@contextlib.contextmanager
def static_server(workdir: Path, plain: bytes, gz: bytes) -> Iterator[str]:
    """The baseline for scrapes: an aiohttp server that serves the same bytes from memory."""
    (workdir / "page").write_bytes(plain)
    (workdir / "page.gz").write_bytes(gz)
    port = free_port()
    argv = [sys.executable, "-c", STATIC_SERVER, str(workdir / "page")]
    argv += [str(workdir / "page.gz"), str(port)]
    with child_process(argv, "the static baseline server"):
        yield f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def switched_server(uri: str, pool: str, workdir: Path, plain: bytes) -> Iterator[str]:
    """The floor of the event rows: the static server with `plain` (poolwatch's page, `pool`
    running) and a copy whose `pool` state line says stopped, switched between them by a bare
    libvirt client's lifecycle events on `uri`. What it shows needs no libvirt call, no render
    and no compression: an exporter can show an event no sooner through the same timing client,
    scrapers and machine. Yields its base URL."""
    state = re.compile(
        rb'^(libvirt_storage_pool_state\{[^}]*storage_pool="'
        + re.escape(pool.encode())
        + rb'"[^}]*\} )\S+$',
        re.MULTILINE,
    )
    stopped, found = state.subn(rb"\g<1>0.0", plain)
    if found != 1:
        raise RuntimeError(f"the page has {found} state lines for {pool}")
    prefix = workdir / "switched"
    for name, page in (("running", plain), ("stopped", stopped)):
        Path(f"{prefix}.{name}").write_bytes(page)
        Path(f"{prefix}.{name}.gz").write_bytes(gzip.compress(page, 6))
    port = free_port()
    argv = [sys.executable, "-c", SWITCHED_SERVER, uri, pool, str(prefix), str(port)]
    with child_process(argv, "the event-switched static server"):
        yield f"http://127.0.0.1:{port}"
