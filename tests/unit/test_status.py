"""`poolwatch status`: the table it prints (the answer it reads and the command itself are in
test_status_client.py)."""

from __future__ import annotations

import json

import pytest

from poolwatch.documents import pools_document
from poolwatch.inventory import Inventory
from poolwatch.model import GuestDisk, GuestSnapshot, GuestState
from poolwatch.status import (
    BAR_WIDTH,
    COLUMNS,
    PoolRow,
    compact_bytes,
    compact_duration,
    parse_pools,
    printable,
    render_table,
    text_width,
    usage_bar,
)
from tests.unit.factories import (
    GIB,
    HOST_A,
    HOST_B,
    HOSTILE,
    NOW,
    URI_A,
    FakeClock,
    policy_inventory,
    pool,
)

THEN = NOW + 12  # "now" for the rendering: twelve seconds after the sample was read


def sample_table() -> list[str]:
    document = json.loads(json.dumps(pools_document(policy_inventory())))
    return render_table(parse_pools(document), now=THEN).splitlines()


def columns_of(line: str, header: str) -> dict[str, str]:
    """Cut ``line`` at the header's column starts, counted in terminal columns."""
    ends = [header.index(name) for name in COLUMNS[1:]]
    cells: dict[str, str] = {}
    chars, width = iter(line), 0
    for name, end in zip(COLUMNS, [*ends, None], strict=True):
        cell = ""
        for char in chars:
            cell += char
            width += text_width(char)
            if end is not None and width >= end:
                break
        cells[name] = cell.strip()
    return cells


# --- the table --------------------------------------------------------------------------------


def test_table_of_the_sample() -> None:
    header, *lines = sample_table()

    assert header == "  ".join(  # column widths follow the widest cell
        [
            f"{'HOST':<11}",  # "beta (down)"
            f"{'POOL':<{text_width(printable(HOSTILE))}}",
            f"{'TYPE':<7}",
            f"{'STATE':<8}",
            f"{'USAGE':<17}",
            f"{'USED/SIZE':>9}",
            f"{'FREE':>4}",
            f"{'LEVEL':<8}",
            f"{'FORECAST':<8}",
            f"{'AUTOSTART':<11}",
            f"{'GUESTS':<6}",
            "LAST ACTION",
        ]
    )
    # One line per pool, whatever the names hold; sorted by host, then pool.
    rows = [columns_of(line, header) for line in lines]
    assert [(r["HOST"], r["POOL"]) for r in rows] == [
        (f"{HOST_A} (up)", "backup"),
        (f"{HOST_A} (up)", "default"),
        (f"{HOST_A} (up)", printable(HOSTILE)),
        (f"{HOST_A} (up)", "nfs"),
        (f"{HOST_B} (down)", "images"),
    ]
    backup, default, hostile, nfs, images = rows
    assert default == {
        "HOST": "alpha (up)",
        "POOL": "default",
        "TYPE": "dir",
        "STATE": "running",
        "USAGE": "[####------]  40%",
        "USED/SIZE": "40G/100G",
        # What guests can still write: the filesystem's 50G, not libvirt's 100G - 40G.
        "FREE": "50G",
        "LEVEL": "CRITICAL",
        "FORECAST": "3h20m",
        "AUTOSTART": "boot",
        "GUESTS": "-",
        "LAST ACTION": "hook:page enter_critical ok, 1m ago",
    }
    # A stopped pool: libvirt's stale figures are not drawn.
    assert (backup["STATE"], backup["USAGE"], backup["USED/SIZE"], backup["FREE"]) == (
        "inactive",
        "-",
        "-",
        "-",
    )
    assert (backup["LEVEL"], backup["AUTOSTART"]) == ("-", "gave up")
    assert backup["LAST ACTION"] == "start_pool failed, 5m ago"
    assert (hostile["AUTOSTART"], hostile["FORECAST"]) == ("not mounted", "-")
    assert (nfs["USAGE"], nfs["LEVEL"], nfs["FORECAST"], nfs["AUTOSTART"]) == (
        "[#########-]  92%",
        "ok",
        "-",  # shrinking: no time to full
        "-",
    )
    assert (images["LEVEL"], images["USED/SIZE"]) == ("WARNING", "85G/100G")


def test_guests_and_the_paused_ones() -> None:
    inventory = policy_inventory()
    key = next(iter(inventory.hosts))
    disk = (GuestDisk("vda", path="/var/lib/libvirt/default/vm.img"),)
    guests = [
        GuestSnapshot("web", "u1", GuestState.RUNNING, disk),
        GuestSnapshot("db", "u2", GuestState.PAUSED_IO_ERROR, disk, io_errors={"vda": "enospc"}),
    ]
    inventory.replace_guests(key, {g.uuid: g for g in guests})
    document = json.loads(json.dumps(pools_document(inventory)))
    header, *lines = render_table(parse_pools(document), now=THEN).splitlines()
    rows = [columns_of(line, header) for line in lines]
    default = next(r for r in rows if r["POOL"] == "default")
    assert default["GUESTS"] == "2, paused: db (enospc)"


def test_columns_are_aligned_and_sized_to_their_content() -> None:
    header, *lines = sample_table()
    usage_at = header.index("USAGE")
    for line in lines:
        # Every bar starts in the same terminal column, after the widest pool name.
        before = line[: line.index("[")] if "[" in line else None
        if before is not None:
            assert text_width(before) == usage_at
    assert header.index("TYPE") == header.index("POOL") + text_width(printable(HOSTILE)) + 2
    assert all(line == line.rstrip() for line in lines)


def test_used_size_is_right_aligned() -> None:
    header, *lines = sample_table()
    end = header.index("USED/SIZE") + len("USED/SIZE")
    for line in lines:
        if "G/" in line:
            assert line[end - 1] == "G"
            assert line[end] == " "


@pytest.mark.parametrize(
    ("ratio", "bar"),
    [
        (0.0, "[----------]   0%"),
        (0.004, "[----------]   0%"),
        (0.5, "[#####-----]  50%"),
        (0.875, "[########--]  88%"),
        (0.996, "[#########-]  99%"),  # not full yet: neither bar nor number says so
        (1.0, "[##########] 100%"),
        (1.2, "[##########] 100%"),  # allocation beyond capacity (thin provisioning)
        (-0.1, "[----------]   0%"),
    ],
)
def test_usage_bar(ratio: float, bar: str) -> None:
    assert usage_bar(ratio) == bar
    assert len(bar) == BAR_WIDTH + 7


def test_bars_at_0_50_and_100_percent_in_the_table() -> None:
    rows = [
        PoolRow(
            HOST_A, True, name, "dir", "running", True, ratio, int(ratio * 100 * GIB), 100 * GIB
        )
        for name, ratio in (("empty", 0.0), ("half", 0.5), ("full", 1.0))
    ]
    header, *lines = render_table(rows, now=THEN).splitlines()
    usage = {columns_of(line, header)["POOL"]: columns_of(line, header)["USAGE"] for line in lines}
    assert usage == {
        "empty": "[----------]   0%",
        "full": "[##########] 100%",
        "half": "[#####-----]  50%",
    }
    assert [columns_of(line, header)["USED/SIZE"] for line in lines] == [
        "0B/100G",
        "50G/100G",
        "100G/100G",
    ]


def test_a_down_host_without_pools_still_shows() -> None:
    inventory = Inventory(clock=FakeClock())
    inventory.add_host("kvm02", name="kvm02", uri="qemu+ssh://kvm02/system")
    inventory.add_host(HOST_A, name=HOST_A, uri=URI_A)
    inventory.set_connected(HOST_A, name=HOST_A)
    inventory.replace_pools(HOST_A, {"default": pool("default")})

    header, *lines = render_table(parse_pools(pools_document(inventory)), now=THEN).splitlines()

    rows = [columns_of(line, header) for line in lines]
    assert [(r["HOST"], r["POOL"], r["USAGE"]) for r in rows] == [
        ("alpha (up)", "default", "[####------]  40%"),
        ("kvm02 (down)", "(no pools)", "-"),
    ]
    # Without a "policy" field (an older daemon), or with a null one, no rule applies.
    assert (rows[0]["LEVEL"], rows[0]["FORECAST"], rows[0]["AUTOSTART"]) == ("-", "-", "-")


def test_no_connections() -> None:
    assert render_table([], now=THEN) == "The daemon watches no libvirt connections.\n"


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("a\nb", "a\\nb"),
        ("tab\there\r", "tab\\there\\r"),
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),  # no terminal escape sequences
        ("admin\u202egnp.exe", "admin\\u202egnp.exe"),  # no bidi override
        ("line\u2028sep", "line\\u2028sep"),
        ("zero\u200bwidth", "zero\\u200bwidth"),
        ("lone \ud800 surrogate", "lone \\ud800 surrogate"),  # json.loads lets these through
        ("ünïcødé 日本 <b>", "ünïcødé 日本 <b>"),  # printable text stays as it is
    ],
)
def test_printable(name: str, shown: str) -> None:
    assert printable(name) == shown


def test_hostile_names_keep_the_table_intact() -> None:
    names = ["\x1b[2J\x1b[Hgotcha", "two\nlines", "日本語プール", "e\u0301cole"]
    rows = [
        PoolRow(f"h\x07st\n{i}", True, name, "dir\n", "running", False)
        for i, name in enumerate(names)
    ]
    table = render_table(rows, now=THEN)
    header, *lines = table.splitlines()

    assert len(lines) == len(names)
    assert "\x1b" not in table
    assert "\x07" not in table
    cells = [columns_of(line, header) for line in lines]
    assert [c["POOL"] for c in cells] == [
        "\\x1b[2J\\x1b[Hgotcha",
        "two\\nlines",
        "日本語プール",
        "e\u0301cole",
    ]
    assert {c["TYPE"] for c in cells} == {"dir\\n"}
    # Wide characters take two terminal columns, combining marks none: TYPE stays aligned.
    type_at = text_width(header[: header.index("TYPE")])
    for line in lines:
        assert text_width(line[: line.index("dir\\n")]) == type_at


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0B"),
        (1023, "1023B"),
        (1024, "1.0K"),
        (1536, "1.5K"),
        (10 * 1024, "10K"),
        (40 * GIB, "40G"),
        (int(9.96 * GIB), "10G"),  # not "10.0G"
        (1023 * 1024**2 + 1000 * 1024, "1.0G"),  # not "1024M"
        (3 * 1024**4, "3.0T"),
        (5000 * 1024**6, "5000E"),
    ],
)
def test_compact_bytes(size: int, text: str) -> None:
    assert compact_bytes(size) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-1, "0s"),
        (45.9, "45s"),
        (60, "1m"),
        (12000, "3h20m"),
        (3 * 3600 + 59, "3h"),
        (2 * 86400 + 5 * 3600 + 7, "2d5h"),
        (3 * 86400, "3d"),
        (400 * 86400 + 3600, "400d"),
    ],
)
def test_compact_duration(seconds: float, text: str) -> None:
    assert compact_duration(seconds) == text
