"""The landing page as a browser renders it: headless Chromium loads ``/`` and reads the DOM.

- ``poolwatch demo`` (the tier's shared one, with threshold and autostart rules): one row per
  pool, as in /api/v1/pools at the same moment; every running pool has a visible fill bar as
  wide as its fill ratio, its state, alarm level, forecast and autostart flag; stopped pools have
  no bar; the page loads nothing from anywhere but poolwatch itself.
- The demo's pools with a fill history: each draws it as an inline SVG sparkline of a visible
  size, with a polyline inside its box and an accessible name.
- A test-driver host with hostile pool names and target paths: they show as text, and no
  element, attribute or script of theirs reaches the DOM.

Screenshots go to the test's tmp_path; the demo's is also copied to SCREENSHOT_COPY.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import pytest
import pytest_asyncio

from tests.e2e.browser import Chromium, Page, find_chromium
from tests.e2e.conftest import DEMO_POOLS, DEMO_READY_WITHIN
from tests.helpers import PoolwatchProcess, eventually, fetch

SCREENSHOT_COPY = Path("/tmp/poolwatch-landing.png")
# Rendered bar width / track width against the fill ratio: the page gives the width to 0.1 %
# and layout is in fractional pixels.
RATIO_TOLERANCE = 0.005
ATTEMPTS = 3  # page loads to catch one between two demo polls (every 2 s)

# Each pool row as the browser laid it out; cells are found by their column heading, so a
# reordered table still reads the same.
ROWS_JS = """
(() => {
  const text = (el) => (el ? el.textContent : null);
  return Array.from(document.querySelectorAll('section.host table')).flatMap((table) => {
    const heads = Array.from(table.querySelectorAll('thead th')).map((th) => th.textContent);
    return Array.from(table.querySelectorAll('tbody tr')).map((tr) => {
      const cells = {};
      tr.querySelectorAll('td').forEach((td, i) => { cells[heads[i]] = td; });
      const bar = cells['Used'] && cells['Used'].querySelector('.bar');
      const fill = bar && bar.querySelector('span');
      let layout = null;
      if (bar && fill) {
        const track = bar.getBoundingClientRect();
        const box = fill.getBoundingClientRect();
        layout = {
          track: track.width, width: box.width, height: box.height,
          colour: getComputedStyle(fill).backgroundColor,
          classes: Array.from(bar.classList), aria: bar.getAttribute('aria-valuenow'),
        };
      }
      return {
        name: text(cells['Pool']), title: cells['Pool'] ? cells['Pool'].title : null,
        state: text(cells['State']), bar: layout,
        pct: text(cells['Used'] && cells['Used'].querySelector('.pct')),
        alarm: text(cells['Alarm']), forecast: text(cells['Forecast']),
        autostart: text(cells['Autostart']),
      };
    });
  });
})()
"""

# Anything on the page that loads or could load a resource from another origin: elements with a
# source, stylesheet links, and url()/@import in the page's CSS (dark-mode rules included).
FOREIGN_JS = """
(() => {
  const foreign = [];
  const check = (what, value) => {
    if (!value) return;
    const url = new URL(value, document.baseURI);
    if (url.protocol !== 'data:' && url.origin !== location.origin) foreign.push(what + ' ' + url);
  };
  document.querySelectorAll('[src], [poster], object[data], link[href]').forEach((el) => {
    check(el.tagName, el.getAttribute('src') || el.getAttribute('poster')
      || el.getAttribute('data') || el.getAttribute('href'));
  });
  for (const sheet of document.styleSheets) {
    if (sheet.href) check('stylesheet', sheet.href);
    let css = '';
    try {
      css = Array.from(sheet.cssRules).map((rule) => rule.cssText).join('\\n');
    } catch (error) {
      foreign.push('unreadable stylesheet ' + sheet.href);  // only another origin's is
    }
    for (const m of css.matchAll(/url\\(\\s*['"]?([^'")]*)/g)) check('css url()', m[1]);
    for (const m of css.matchAll(/@import\\s+(?:url\\()?\\s*['"]?([^'")\\s;]*)/g)) {
      check('css @import', m[1]);
    }
  }
  const resources = performance.getEntriesByType('resource').map((e) => e.name);
  resources.forEach((name) => check('resource', name));
  return foreign;
})()
"""

# What a hostile name would leave behind if it reached the DOM as markup.
INJECTED_JS = """
(() => ({
  // The page's own sparklines are the only SVG it draws.
  elements: Array.from(document.querySelectorAll(
    'img, svg:not(.spark), script, iframe, object, embed, b, .spark *:not(title, rect, polyline)'))
    .map((el) => el.outerHTML.slice(0, 120)),
  handlers: Array.from(document.querySelectorAll('*')).flatMap((el) =>
    Array.from(el.attributes).filter((a) => a.name.startsWith('on'))
      .map((a) => el.tagName + ' ' + a.name + '=' + a.value)),
  attention: Array.from(document.querySelectorAll('section.attention li a'))
    .map((a) => a.textContent),
}))()
"""


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def browser() -> AsyncIterator[Chromium]:
    chromium = Chromium(find_chromium())
    await chromium.start()
    try:
        yield chromium
    finally:
        await chromium.stop()


async def pools_doc(url: str) -> dict[str, Any]:
    status, body = await fetch(f"{url}/api/v1/pools")
    assert status == 200, body
    doc: dict[str, Any] = json.loads(body)
    return doc


def api_pools(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {pool["name"]: pool for host in doc["hosts"] for pool in host["pools"]}


def mismatches(rows: list[dict[str, Any]], doc: dict[str, Any]) -> list[str]:
    """How the rendered rows differ from the pools document; empty when they agree."""
    pools = api_pools(doc)
    names = [row["name"] for row in rows]
    problems = []
    if sorted(names) != sorted(pools):
        problems.append(f"rows {sorted(names)} but pools {sorted(pools)}")
    for row in rows:
        pool = pools.get(row["name"])
        if pool is None:
            continue
        name, bar = row["name"], row["bar"]
        if row["state"] != pool["state"]:
            problems.append(f"{name}: state {row['state']!r}, API {pool['state']!r}")
        flag = "yes" if pool["autostart"] else "no"
        if not (row["autostart"] or "").startswith(flag):
            problems.append(f"{name}: autostart {row['autostart']!r}, API {flag}")
        if not row["forecast"]:
            problems.append(f"{name}: empty forecast cell")
        policy = pool["policy"] or {}
        if policy.get("level") and policy["level"].upper() not in row["alarm"]:
            problems.append(f"{name}: alarm {row['alarm']!r}, API level {policy['level']!r}")
        ttf = policy.get("time_to_full_seconds")
        if pool["active"] and ttf is not None and not row["forecast"].startswith("full in"):
            problems.append(f"{name}: forecast {row['forecast']!r}, API time to full {ttf}")
        if not (pool["active"] and pool["capacity"] > 0):
            if bar is not None:
                problems.append(f"{name}: {pool['state']} but has a fill bar")
            continue
        if bar is None:
            problems.append(f"{name}: running but no fill bar")
            continue
        ratio = pool["fill_ratio"]
        rendered = bar["width"] / bar["track"] if bar["track"] else -1.0
        if abs(rendered - ratio) > RATIO_TOLERANCE:
            problems.append(f"{name}: bar {rendered:.4f} of the track, fill ratio {ratio:.4f}")
        if row["pct"] != f"{round(ratio * 100)} %":
            problems.append(f"{name}: shows {row['pct']!r}, fill ratio {ratio:.4f}")
    return problems


def assert_bars_visible(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        bar = row["bar"]
        if bar is None:
            continue
        assert bar["track"] > 50, f"{row['name']}: fill bar track is {bar['track']} px wide"
        assert bar["height"] > 0, f"{row['name']}: fill bar has no height"
        assert bar["colour"] not in ("rgba(0, 0, 0, 0)", "transparent"), row
        assert bar["width"] > 0, f"{row['name']}: fill bar has no width: {row}"


async def load_matching(page: Page, url: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Load the page between two reads of the API; the rows and the document they match.

    The demo changes every 2 s, so the page is compared with the document read just before
    and just after it; when it matches neither (a poll landed in between), it is loaded again.
    """
    failures: list[str] = []
    for _ in range(ATTEMPTS):
        before = await pools_doc(url)
        await page.goto(f"{url}/")
        rows: list[dict[str, Any]] = await page.evaluate(ROWS_JS)
        after = await pools_doc(url)
        for doc in (before, after):
            problems = mismatches(rows, doc)
            if not problems:
                return rows, doc
            failures.append(f"generation {doc['generation']}: {problems}")
        if before["generation"] == after["generation"]:
            break
    raise AssertionError("the landing page does not match /api/v1/pools:\n" + "\n".join(failures))


async def test_landing_page_renders_every_demo_pool(
    browser: Chromium, demo: PoolwatchProcess, tmp_path: Path
) -> None:
    page = await browser.new_page()
    rows, doc = await load_matching(page, demo.url)

    names = [row["name"] for row in rows]
    assert set(names) >= DEMO_POOLS, names
    assert len(names) == len(set(names)), f"a pool has more than one row: {names}"
    assert_bars_visible(rows)
    running = [row["name"] for row in rows if row["bar"] is not None]
    # The filler stops one pool now and then (and autostart restarts it): most are running.
    assert len(running) >= len(DEMO_POOLS) - 2, rows
    assert any(p["policy"] and p["policy"]["level"] for p in api_pools(doc).values()), doc

    # Nothing but poolwatch itself was asked for, and nothing on the page points elsewhere.
    assert page.requests, "the DevTools network log recorded no request"
    foreign = [u for u in page.requests if not u.startswith(f"{demo.url}/")]
    assert not foreign, f"the page requested other origins: {foreign}"
    assert await page.evaluate(FOREIGN_JS) == []
    assert not page.dialogs
    assert not page.exceptions

    shot = await page.screenshot(tmp_path / "landing.png")
    assert shot.stat().st_size > 10_000
    shutil.copyfile(shot, SCREENSHOT_COPY)


# Each pool's sparkline as laid out: its box, its polyline's points, its accessible name.
CHARTS_JS = """
(() => Array.from(document.querySelectorAll('section.host tbody tr')).map((tr) => {
  const svg = tr.querySelector('svg.spark');
  const line = svg && svg.querySelector('polyline');
  const box = svg && svg.getBoundingClientRect();
  return {
    name: tr.querySelector('td.name').textContent,
    chart: svg && {
      width: box.width, height: box.height, label: svg.getAttribute('aria-label'),
      viewBox: [svg.viewBox.baseVal.width, svg.viewBox.baseVal.height],
      points: line ? Array.from(line.points).map((p) => [p.x, p.y]) : [],
      stroke: line ? getComputedStyle(line).stroke : null,
    },
  };
}))()
"""


async def test_pools_with_a_history_draw_their_recent_fill(
    browser: Chromium, demo: PoolwatchProcess
) -> None:
    page = await browser.new_page()
    charts: list[dict[str, Any]] = []

    async def drawn() -> bool:
        nonlocal charts
        await page.goto(f"{demo.url}/")
        charts = await page.evaluate(CHARTS_JS)
        # The filler stops a pool now and then: a stopped one has no chart.
        return sum(1 for c in charts if c["chart"]) >= len(DEMO_POOLS) - 1

    await eventually(drawn, within=DEMO_READY_WITHIN, interval=1.0)
    for row in charts:
        chart = row["chart"]
        if chart is None:
            continue
        name = row["name"]
        assert chart["width"] > 50, row
        assert chart["height"] > 10, row
        assert chart["label"].startswith(f"fill level of {name} over the last "), row
        assert len(chart["points"]) >= 2, row
        width, height = chart["viewBox"]
        assert all(0 <= x <= width and 0 <= y <= height for x, y in chart["points"]), row
        assert chart["stroke"] not in ("none", "rgba(0, 0, 0, 0)"), row
    assert not page.exceptions


# Pool names the test driver accepts (libvirt refuses only a '/' in a name), each a different
# way out of an HTML text node; the target paths try to leave the title attribute.
HOSTILE = {
    "<img src=x onerror=alert(1)>": 20,
    "<script>alert(2)": 40,  # unescaped, it would swallow the rest of the page
    "<svg onload=alert(3)>": 60,
    "&lt;b&gt; \"q\" 'a' & <!--": 80,  # must not be unescaped once more, nor open a comment
}
HOSTILE_TARGET = "/x{}' onmouseover='alert(4)\" x=\""
HOSTILE_CONFIG = """\
[[threshold]]
pool = "*"
warning = "50%"
critical = "70%"
"""


def hostile_host_xml() -> str:
    pools = []
    for index, (name, percent) in enumerate(HOSTILE.items()):
        pools.append(
            f"<pool type='dir'><name>{escape(name)}</name>"
            f"<uuid>8c0b5d2e-3c1f-4a57-9a34-00000000000{index}</uuid>"
            f"<target><path>{escape(HOSTILE_TARGET.format(index))}</path></target>"
            f"<volume type='file'><name>disk{index}.raw</name>"
            f"<capacity unit='GiB'>100</capacity><allocation unit='GiB'>{percent}</allocation>"
            "</volume></pool>"
        )
    # The test driver makes every pool 100 GiB: allocation in GiB is the fill in percent.
    return "<node>\n" + "\n".join(pools) + "\n</node>\n"


@pytest.fixture
def hostile(tmp_path: Path) -> PoolwatchProcess:
    host = tmp_path / "host.xml"
    host.write_text(hostile_host_xml())
    config = tmp_path / "poolwatch.toml"
    config.write_text(HOSTILE_CONFIG)
    return PoolwatchProcess(
        "--libvirt.uri",
        f"test://{host.resolve()}",
        "--config.file",
        str(config),
        "--web.listen-address",
        "127.0.0.1:0",
    )


async def test_hostile_pool_names_render_as_text(
    browser: Chromium, hostile: PoolwatchProcess, tmp_path: Path
) -> None:
    hostile.start()
    try:

        async def evaluated() -> bool:
            pools = api_pools(await pools_doc(hostile.url))
            return set(pools) == set(HOSTILE) and all(
                p["policy"] and p["policy"]["level"] for p in pools.values()
            )

        await eventually(evaluated, within=10.0, interval=0.1)
        page = await browser.new_page()
        await page.goto(f"{hostile.url}/")
        injected = await page.evaluate(INJECTED_JS)
        rows = await page.evaluate(ROWS_JS)
        await page.screenshot(tmp_path / "hostile.png")
        doc = await pools_doc(hostile.url)  # the host is static: no pool changes
    finally:
        code = hostile.stop()
    assert code == 0, hostile.logs[-5:]

    assert not injected["elements"], injected
    assert not injected["handlers"], injected
    assert not page.dialogs, page.dialogs
    assert not page.exceptions, page.exceptions
    by_name = {row["name"]: row for row in rows}
    assert sorted(by_name) == sorted(HOSTILE), "names must show exactly as libvirt has them"
    assert mismatches(rows, doc) == []
    assert_bars_visible(rows)
    for index, (name, percent) in enumerate(HOSTILE.items()):
        row = by_name[name]
        assert row["bar"] is not None, row
        rendered = row["bar"]["width"] / row["bar"]["track"]
        assert abs(rendered - percent / 100) < RATIO_TOLERANCE, row
        assert f"target {HOSTILE_TARGET.format(index)}\n" in row["title"], row["title"]
    # 60 % and 80 % are over the warning threshold: listed on top, by host and name.
    host = doc["hosts"][0]["name"]
    assert sorted(injected["attention"]) == sorted(
        f"{host} / {name}" for name, percent in HOSTILE.items() if percent >= 50
    )
    assert [by_name[name]["bar"]["classes"] for name in HOSTILE] == [
        ["bar", "ok"],
        ["bar", "ok"],
        ["bar", "warn"],
        ["bar", "crit"],
    ]
