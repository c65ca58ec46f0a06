"""The landing page as a pure function of the inventory and the time: what it shows, what it
escapes, and that it stays light."""

from __future__ import annotations

import html
import re

import pytest

from poolwatch.inventory import Inventory
from poolwatch.model import PoolPolicy
from poolwatch.web.landing import (
    MAX_ERROR_CHARS,
    human_age,
    human_bytes,
    human_duration,
    render_landing,
)
from tests.unit.factories import (
    GIB,
    HOST_A,
    HOST_B,
    HOSTILE,
    NOW,
    URI_A,
    URI_B,
    FakeClock,
    policy_inventory,
    pool,
    sample_inventory,
)


def test_landing_escapes_what_libvirt_says() -> None:
    inventory = sample_inventory()
    inventory.put_pool(
        HOST_A, pool("x'><img src=y>", target_path="/tmp/'\"><b>", source="<i>src</i>")
    )
    page = render_landing(inventory, now=NOW)
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&quot;pool&quot;" in page
    assert "<img" not in page
    assert "<b>" not in page
    assert "<i>" not in page


def test_landing_shows_fill_and_state() -> None:
    page = render_landing(sample_inventory(), now=NOW + 12)
    default_row = _row(page, "default")
    assert "40 %" in default_row
    assert "bar ok" in default_row
    assert "50.0 GiB" in default_row  # free: the filesystem's figure, smaller than libvirt's
    assert "100.0 GiB" in default_row
    assert ">5<" in default_row  # every volume, not just the exported ones
    assert "bar crit" in _row(page, "nfs")  # 92 %
    assert "bar warn" in _row(page, "images")  # 85 %
    backup_row = _row(page, "backup")
    assert "inactive" in backup_row
    assert "bar" not in backup_row  # stale figures of a stopped pool are not drawn
    assert "GiB" not in backup_row
    assert "last poll 12 s ago" in page
    assert "badge down" in page


def test_landing_says_what_used_and_free_measure() -> None:
    page = render_landing(sample_inventory(), now=NOW)
    titles = dict(
        (heading, html.unescape(title))
        for title, heading in re.findall(r"<th[^>]*title='([^']*)'>(\w+)</th>", page)
    )
    assert titles["Used"].startswith("allocation / capacity")
    assert "ratio limits" in titles["Used"]
    assert "smaller of libvirt's available and the filesystem's" in titles["Free"]
    assert "free-space limits (< 20GiB)" in titles["Free"]


def test_landing_shows_alarms_forecasts_and_autostart() -> None:
    page = render_landing(policy_inventory(), now=NOW + 12)

    default = _row(page, "default")
    assert "badge critical" in default
    assert ">CRITICAL<" in default  # the level in words, not only in colour
    assert "title='alarm episode ep-7'" in default
    assert "bar crit" in default  # the rule's level wins over the display-only 40 %
    assert "full in 3 h 20 m" in default
    assert "yes · boot" in default
    assert "hook:page enter_critical ok" in default
    assert "102 s ago" in default

    nfs = _row(page, "nfs")
    assert ">OK<" in nfs
    assert "bar ok" in nfs  # 92 %, but the rule says ok
    assert "not growing" in nfs

    images = _row(page, "images")
    assert ">WARNING<" in images
    assert "bar warn" in images
    assert "not enough samples" in images

    backup = _row(page, "backup")
    assert "gave up after 5 attempts: cannot mount" in backup
    assert "start_pool failed" in backup
    assert "bar" not in backup

    hostile = _row(page, html.escape(HOSTILE))
    assert ">NOT MOUNTED<" in hostile
    assert "yes · enforce" not in hostile  # the libvirt flag is off
    assert "no · enforce" in hostile
    assert "2 failed starts, next try in 40 s" in hostile
    assert "title='Cannot access storage'" in hostile

    assert f"{URI_A} · 4 pools · 1 critical · 1 not mounted · 1 gave up · " in page
    assert f"{URI_B} · 1 pool · 1 warning · " in page


def test_landing_lists_what_needs_attention_first() -> None:
    page = render_landing(policy_inventory(), now=NOW)
    attention = page[page.index("Needs attention") : page.index("</section>")]
    # Each entry links to its row; ids are made up, never taken from a pool name.
    entries = re.findall(r"<li><a href='#(h\d+-p\d+)'>([^<]*)</a>", attention)
    assert [text for _, text in entries] == [
        f"{HOST_A} / backup",
        f"{HOST_A} / default",
        f"{HOST_A} / evil &quot;pool&quot; \\ with\nnewline &lt;script&gt;alert(1)&lt;/script&gt;"
        " ünïcødé",
        f"{HOST_B} / images",
    ]
    for row_id, _ in entries:
        assert f"<tr id='{row_id}'" in page
    assert "full in 3 h 20 m" in attention
    assert "NOT MOUNTED" in attention
    assert "gave up after 5 attempts" in attention
    assert "nfs" not in attention


def test_landing_without_alarms_has_no_attention_list() -> None:
    assert "Needs attention" not in render_landing(sample_inventory(), now=NOW)


def test_landing_escapes_hostile_errors_and_actions() -> None:
    inventory = policy_inventory()
    long_error = "<b>" + "x" * 500 + "</b>"
    inventory.set_policy(
        HOST_A,
        "nfs",
        PoolPolicy(
            autostart_mode="<i>enforce</i>",
            autostart_failures=1,
            autostart_gave_up=True,
            last_error=long_error,
            last_action="hook:<script>x</script> enter_warning ok",
            last_action_at=NOW,
        ),
    )
    page = render_landing(inventory, now=NOW)
    assert "<img" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "<b>" not in page
    assert "<i>" not in page
    assert "<script>" not in page
    assert "hook:&lt;script&gt;x&lt;/script&gt; enter_warning ok" in page
    assert "gave up after 1 attempt: &lt;b&gt;" in page
    # A long error is cut in the cell (before escaping, so no entity is split) and kept whole
    # in the tooltip.
    assert "x" * (MAX_ERROR_CHARS - 4) + "…" in page
    assert f"title='{'&lt;b&gt;' + 'x' * 500 + '&lt;/b&gt;'}'" in page


def test_landing_stays_light_with_many_pools() -> None:
    inventory = Inventory(clock=FakeClock())
    inventory.add_host(HOST_A, name=HOST_A, uri=URI_A)
    inventory.set_connected(HOST_A, name=HOST_A)
    names = [f"pool-{i:03}" for i in range(300)]
    inventory.replace_pools(HOST_A, {name: pool(name) for name in names})
    for i, name in enumerate(names):
        inventory.set_policy(
            HOST_A,
            name,
            PoolPolicy(level=i % 3, time_to_full=3600.0 * i, autostart_mode="enforce"),
        )
    page = render_landing(inventory, now=NOW)
    assert page.count("<tr id=") == 300
    assert len(page) < 300 * 1500  # plain rows, no per-pool styles or scripts
    assert page.count("<li>") == 51  # 50 entries, then how many more
    assert "and 150 more below" in page


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "0 s"),
        (59.9, "59 s"),
        (60, "1 m"),
        (3 * 3600 + 20 * 60 + 59, "3 h 20 m"),
        (3 * 3600 + 30, "3 h"),
        (2 * 86400 + 5 * 3600, "2 d 5 h"),
        (2 * 86400, "2 d"),
        (40 * 86400 + 5 * 3600, "40 d"),
    ],
)
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_landing_without_connections() -> None:
    page = render_landing(Inventory(clock=FakeClock()), now=NOW)
    assert "No libvirt connections configured" in page


def test_landing_before_the_first_poll() -> None:
    inventory = Inventory(clock=FakeClock())
    inventory.add_host(HOST_A, name=HOST_A, uri=URI_A)
    page = render_landing(inventory, now=NOW)
    assert "never polled" in page
    assert "No storage pools." in page


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-3, "0 s ago"),  # clocks of snapshot and page may disagree slightly
        (59.6, "60 s ago"),
        (600, "10 min ago"),
        (3 * 3600, "3 h ago"),
        (3 * 86400, "3 days ago"),
    ],
)
def test_human_age(seconds: float, text: str) -> None:
    assert human_age(seconds) == text


def _row(page: str, pool_name: str) -> str:
    start = page.index(f">{pool_name}</td>")
    return page[start : page.index("</tr>", start)]


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (int(12.3 * GIB), "12.3 GiB"),
        (1024**2 - 1, "1.0 MiB"),
        (5 * 1024**6, "5.0 EiB"),
        (2000 * 1024**6, "2000.0 EiB"),
    ],
)
def test_human_bytes(size: int, text: str) -> None:
    assert human_bytes(size) == text


def test_landing_draws_the_recent_fill_of_pools_with_history() -> None:
    inventory = policy_inventory()
    points = ((NOW - 1800, 0.4), (NOW - 900, 0.55), (NOW, 0.625))
    inventory.set_policy(HOST_A, "default", PoolPolicy(level=0, fill_history=points))
    inventory.set_policy(HOST_A, "nfs", PoolPolicy(level=2, fill_history=points[:1]))
    inventory.set_policy(HOST_A, "backup", PoolPolicy(level=0, fill_history=points))
    inventory.put_pool(HOST_A, pool(HOSTILE, allocation=50 * GIB, available=50 * GIB))
    inventory.set_policy(HOST_A, HOSTILE, PoolPolicy(fill_history=points))
    page = render_landing(inventory, now=NOW)

    chart = _row(page, "default")
    assert chart.count("<svg class='spark'") == 1
    assert "<polyline points='0.0," in chart
    assert "aria-label='fill level of default over the last 30 m: 40 % to 62 % " in chart
    assert "(lowest 40 %, highest 62 %)'" in chart
    assert "<svg" not in _row(page, "nfs")  # one sample: no line to draw
    assert "<svg" not in _row(page, "backup")  # stopped: its figures are not current
    hostile = page[page.index(f">{html.escape(HOSTILE, quote=True)}</td>") :]
    hostile = hostile[: hostile.index("</tr>")]
    assert f"fill level of {html.escape(HOSTILE, quote=True)} over" in hostile
    assert "<script>" not in page
