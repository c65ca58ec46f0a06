"""`poolwatch status`: a terminal table of a running daemon's pools, read from /api/v1/pools.

The command asks once and exits, so fetching is one synchronous urllib request; everything else
is a pure function from the JSON document to text, tested without a server. The answer comes
over the network and is checked field by field: a wrong shape is an `InvalidAnswer`, never a
traceback. Names come from libvirt, so control characters in them are escaped before printing:
a pool named "a\\nb" cannot break the table or send escape sequences to the terminal.

Only the standard library and the document module (:mod:`poolwatch.documents`, which builds what
this parses) are used here, so the command starts fast and needs neither aiohttp nor libvirt.
"""

from __future__ import annotations

import base64
import http.client
import json
import math
import ssl
import unicodedata
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from poolwatch.documents import POOLS_PATH

DEFAULT_URL = "http://127.0.0.1:9479"
API_PATH = POOLS_PATH
BAR_WIDTH = 10  # characters between the brackets; "[##########] 100%" is always 17 wide

# A /api/v1/pools answer is about 1 KiB per pool; anything near this is not poolwatch.
MAX_ANSWER_BYTES = 64 * 1024 * 1024

COLUMNS = (
    "HOST",
    "POOL",
    "TYPE",
    "STATE",
    "USAGE",
    "USED/SIZE",
    "FREE",
    "LEVEL",
    "FORECAST",
    "AUTOSTART",
    "GUESTS",
    "LAST ACTION",
)
_RIGHT_ALIGNED = frozenset({"USED/SIZE", "FREE"})
_GAP = "  "
_NO_POOLS = "(no pools)"

_UNITS = "KMGTPE"
_CONTROL_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


class StatusError(Exception):
    """The daemon could not be asked, or its answer makes no sense; the message is one line."""


class Unreachable(StatusError):
    pass


class InvalidAnswer(StatusError):
    pass


class TlsSetupError(StatusError):
    """A CA file or client certificate given on the command line cannot be used."""


def tls_context(
    ca_file: str | None, cert_file: str | None, key_file: str | None
) -> ssl.SSLContext | None:
    """What an https daemon URL needs beyond the system's trust store: the CA that signed the
    daemon's certificate (web config `cert_file`) and, where the daemon requires client
    certificates (`client_auth_type`), ours. None: the defaults will do."""
    if ca_file is None and cert_file is None:
        if key_file is not None:
            raise TlsSetupError("--tls.key-file needs --tls.cert-file")
        return None
    try:
        context = ssl.create_default_context(cafile=ca_file)
        if cert_file is not None:
            context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise TlsSetupError(f"cannot use the TLS files given: {exc}") from None
    return context


# --- asking the daemon ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DaemonURL:
    """Where a daemon's pool API is, from the operator's --web.url."""

    api_url: str  # without credentials
    authorization: str | None  # a Basic header value when the URL carried user:password@

    def __str__(self) -> str:
        return self.api_url


def daemon_url(text: str) -> DaemonURL:
    """Parse --web.url: http(s)://host[:port][/prefix], optionally with user:password@.

    "host:port" alone means http. Raises ValueError with a message for the operator when the
    URL cannot be poolwatch's.
    """
    text = text.strip()
    parts = urllib.parse.urlsplit(text if "://" in text else f"http://{text}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"invalid URL {text!r}: use http://HOST:PORT or https://HOST:PORT, e.g. {DEFAULT_URL}"
        )
    try:
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise ValueError(f"invalid URL {text!r}: bad port") from None
    authorization = None
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        authorization = f"Basic {token}"
    path = parts.path.rstrip("/")
    if not path.endswith(API_PATH):
        path += API_PATH
    netloc = parts.netloc.rpartition("@")[2]
    return DaemonURL(urllib.parse.urlunsplit((parts.scheme, netloc, path, "", "")), authorization)


def fetch_pools(url: DaemonURL, *, timeout: float, tls: ssl.SSLContext | None = None) -> object:
    """The decoded JSON answer of the daemon's /api/v1/pools.

    Raises Unreachable when no answer came (refused, timed out, TLS failed) and InvalidAnswer
    when one came that is not a JSON document.
    """
    # S310: daemon_url admits http and https only, never file: or custom schemes.
    headers = {"Accept": "application/json"}
    request = urllib.request.Request(url.api_url, headers=headers)  # noqa: S310
    if url.authorization is not None:
        request.add_unredirected_header("Authorization", url.authorization)
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=tls) as response:  # noqa: S310
            body = response.read(MAX_ANSWER_BYTES + 1)
    except urllib.error.HTTPError as exc:
        hint = " (the daemon requires basic auth: use http://USER:PASSWORD@HOST:PORT)"
        raise InvalidAnswer(
            f"invalid answer from {url}: HTTP {exc.code} {exc.reason}"
            + (hint if exc.code == 401 else "")
        ) from None
    except urllib.error.URLError as exc:
        raise Unreachable(f"cannot reach {url}: {_reason(exc.reason, timeout)}") from None
    except http.client.HTTPException as exc:
        raise InvalidAnswer(f"invalid answer from {url}: not HTTP ({exc!r})") from None
    except OSError as exc:  # a timeout or reset while reading the answer
        raise Unreachable(f"cannot reach {url}: {_reason(exc, timeout)}") from None
    if len(body) > MAX_ANSWER_BYTES:
        raise InvalidAnswer(f"invalid answer from {url}: larger than {MAX_ANSWER_BYTES} bytes")
    try:
        document: object = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise InvalidAnswer(f"invalid answer from {url}: not a JSON document") from None
    return document


def _reason(reason: object, timeout: float) -> str:
    if isinstance(reason, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


# --- reading the answer -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PoolRow:
    """One line of the table: a pool, or a host without pools (``pool`` None)."""

    host: str
    host_up: bool
    pool: str | None
    type: str = ""
    state: str = ""
    active: bool = False
    # None unless active: the daemon sends a stopped pool's figures as null (libvirt's are stale).
    # The two figures behind a level: allocation / capacity (USAGE, what ratio limits compare)
    # and free bytes, min(available, f_bavail) (FREE, what free-space limits compare).
    fill_ratio: float | None = None
    allocation: int | None = None
    capacity: int | None = None
    free_bytes: int | None = None
    level: str | None = None  # None without a threshold rule
    time_to_full: float | None = None
    autostart: str | None = None  # mode; None without an autostart rule
    autostart_failures: int = 0
    autostart_gave_up: bool = False
    not_mounted: bool = False
    last_action: str | None = None
    last_action_at: float | None = None
    guests: int = 0  # guests with a disk in the pool
    paused: tuple[str, ...] = ()  # those paused, "name (enospc)" when a disk error did it


def parse_pools(document: object, *, url: object = API_PATH) -> list[PoolRow]:
    """The rows of a /api/v1/pools document, sorted by host, then pool name.

    Raises InvalidAnswer naming the first field that is missing or of the wrong type; ``url``
    only goes into that message.
    """
    try:
        rows = []
        root = _object(document, "the document")
        for h, host_value in enumerate(_list(root, "hosts", "the document")):
            where = f"hosts[{h}]"
            host = _object(host_value, where)
            name, up = _str(host, "name", where), _bool(host, "up", where)
            pools = _list(host, "pools", where)
            if not pools:
                rows.append(PoolRow(host=name, host_up=up, pool=None))
            for p, pool_value in enumerate(pools):
                rows.append(_pool_row(name, up, _object(pool_value, f"{where}.pools[{p}]")))
    except _Malformed as exc:
        raise InvalidAnswer(f"invalid answer from {url}: {exc}") from None
    return sorted(rows, key=lambda r: (r.host, r.pool is not None, r.pool or ""))


def _pool_row(host: str, up: bool, pool: Mapping[str, object]) -> PoolRow:
    where = f"pool {pool.get('name')!r}"
    active = _bool(pool, "active", where)
    row = PoolRow(
        host=host,
        host_up=up,
        pool=_str(pool, "name", where),
        type=_str(pool, "type", where),
        state=_str(pool, "state", where),
        active=active,
        fill_ratio=_number(pool, "fill_ratio", where, optional=True) if active else None,
        allocation=_int(pool, "allocation", where) if active else None,
        capacity=_int(pool, "capacity", where) if active else None,
        free_bytes=_optional_int(pool, "free_bytes", where) if active else None,
    )
    # A daemon from before the guests sends no "guests": read that as none.
    listed = _list(pool, "guests", where) if pool.get("guests") is not None else []
    guests = [_object(g, f"{where}.guests") for g in listed]
    row = replace(
        row,
        guests=len(guests),
        paused=tuple(_paused(g, f"{where}.guests") for g in guests if _is_paused(g)),
    )
    # A daemon from before the policies sends no "policy": read that as "no rule applies".
    if pool.get("policy") is None:
        return row
    where += ".policy"
    policy = _object(pool["policy"], where)
    row = replace(
        row,
        level=_optional_str(policy, "level", where),
        time_to_full=_number(policy, "time_to_full_seconds", where, optional=True),
        not_mounted=policy.get("not_mounted") is True,
        last_action=_optional_str(policy, "last_action", where),
        last_action_at=_number(policy, "last_action_at", where, optional=True),
    )
    if policy.get("autostart") is None:
        return row
    where += ".autostart"
    autostart = _object(policy["autostart"], where)
    return replace(
        row,
        autostart=_str(autostart, "mode", where),
        autostart_failures=_int(autostart, "failures", where),
        autostart_gave_up=_bool(autostart, "gave_up", where),
    )


def _is_paused(guest: Mapping[str, object]) -> bool:
    return str(guest.get("state", "")).startswith("paused")


def _paused(guest: Mapping[str, object], where: str) -> str:
    name = _str(guest, "name", where)
    reason = guest.get("io_error")
    return f"{name} ({reason})" if isinstance(reason, str) and reason else name


class _Malformed(Exception):
    pass


def _object(value: object, where: str) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise _Malformed(f"{where}: expected an object")
    return value


def _list(obj: Mapping[str, object], key: str, where: str) -> list[object]:
    value = obj.get(key)
    if not isinstance(value, list):
        raise _Malformed(f"{where}.{key}: expected a list")
    return value


def _str(obj: Mapping[str, object], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise _Malformed(f"{where}.{key}: expected a string")
    return value


def _optional_str(obj: Mapping[str, object], key: str, where: str) -> str | None:
    return None if obj.get(key) is None else _str(obj, key, where)


def _bool(obj: Mapping[str, object], key: str, where: str) -> bool:
    value = obj.get(key)
    if not isinstance(value, bool):
        raise _Malformed(f"{where}.{key}: expected true or false")
    return value


def _int(obj: Mapping[str, object], key: str, where: str) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _Malformed(f"{where}.{key}: expected an integer")
    return value


def _optional_int(obj: Mapping[str, object], key: str, where: str) -> int | None:
    return None if obj.get(key) is None else _int(obj, key, where)


def _number(
    obj: Mapping[str, object], key: str, where: str, *, optional: bool = False
) -> float | None:
    value = obj.get(key)
    if value is None and optional:
        return None
    # json.loads accepts NaN and Infinity; neither is a size or a time.
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise _Malformed(f"{where}.{key}: expected a number")
    return float(value)


# --- the table --------------------------------------------------------------------------------


def render_table(rows: Sequence[PoolRow], *, now: float) -> str:
    """The table as printed, one line per row after a header, each line ending in a newline."""
    if not rows:
        return "The daemon watches no libvirt connections.\n"
    cells = [list(COLUMNS)] + [_cells(row, now) for row in rows]
    widths = [max(text_width(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = []
    for line in cells:
        padded = []
        for column, text, width in zip(COLUMNS, line, widths, strict=True):
            fill = " " * (width - text_width(text))
            padded.append(fill + text if column in _RIGHT_ALIGNED else text + fill)
        lines.append(_GAP.join(padded).rstrip() + "\n")
    return "".join(lines)


def _cells(row: PoolRow, now: float) -> list[str]:
    host = f"{printable(row.host)} ({'up' if row.host_up else 'down'})"
    if row.pool is None:
        return [host, _NO_POOLS, *["-"] * (len(COLUMNS) - 2)]
    if row.fill_ratio is None or row.allocation is None or row.capacity is None:
        usage = size = "-"  # a stopped pool, or one of capacity 0
    else:
        usage = usage_bar(row.fill_ratio)
        size = f"{compact_bytes(row.allocation)}/{compact_bytes(row.capacity)}"
    free = "-" if row.free_bytes is None else compact_bytes(row.free_bytes)
    level = "-" if row.level is None else row.level if row.level == "ok" else row.level.upper()
    forecast = "-" if row.time_to_full is None else compact_duration(row.time_to_full)
    return [
        host,
        printable(row.pool),
        printable(row.type),
        printable(row.state),
        usage,
        size,
        free,
        printable(level),
        forecast,
        _autostart(row),
        _guests(row),
        _last_action(row, now),
    ]


def _guests(row: PoolRow) -> str:
    if not row.guests:
        return "-"
    if not row.paused:
        return str(row.guests)
    return f"{row.guests}, paused: {', '.join(printable(p) for p in row.paused)}"


def _autostart(row: PoolRow) -> str:
    if row.autostart is None:
        return "-"
    if row.autostart_gave_up:
        return "gave up"
    if row.not_mounted:
        return "not mounted"
    if row.autostart_failures:
        return f"{printable(row.autostart)} ({row.autostart_failures} failed)"
    return printable(row.autostart)


def _last_action(row: PoolRow, now: float) -> str:
    if row.last_action is None:
        return "-"
    if row.last_action_at is None:
        return printable(row.last_action)
    return f"{printable(row.last_action)}, {compact_duration(now - row.last_action_at)} ago"


def usage_bar(ratio: float) -> str:
    """A fixed-width ASCII bar and percentage: "[########--]  88%".

    The bar is rounded down and the number to the nearest percent, except that neither shows
    full before the pool is: 99.6 % is "[#########-]  99%".
    """
    ratio = min(max(ratio, 0.0), 1.0)
    filled = math.floor(ratio * BAR_WIDTH)
    percent = 100 if ratio >= 1.0 else min(round(ratio * 100), 99)
    return f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {percent:>3}%"


def compact_bytes(size: int) -> str:
    """A size in binary units, as `df -h` writes it: "512B", "1.5K", "40G" (G is GiB)."""
    if size < 1024:
        return f"{max(size, 0)}B"
    value = float(size)
    for unit in _UNITS:
        value /= 1024
        if round(value, 1) < 10:
            return f"{value:.1f}{unit}"
        if round(value) < 1024 or unit == _UNITS[-1]:
            return f"{value:.0f}{unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def compact_duration(seconds: float) -> str:
    """A span rounded down to its two largest units: "45s", "3h20m", "2d5h"."""
    total = int(max(seconds, 0.0))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h" if hours and days < 10 else f"{days}d"
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m"
    return f"{secs}s"


def printable(text: str) -> str:
    """``text`` with control, format and separator characters escaped as in Python literals.

    Newlines would break the table, ESC sequences would drive the terminal, and bidi overrides
    (U+202E) would make a name read as another one; lone surrogates could not even be printed.
    """
    out = []
    for char in text:
        category = unicodedata.category(char)
        if category[0] != "C" and category not in ("Zl", "Zp"):
            out.append(char)
        elif char in _CONTROL_ESCAPES:
            out.append(_CONTROL_ESCAPES[char])
        else:
            code = ord(char)
            out.append(
                f"\\x{code:02x}"
                if code < 0x100
                else f"\\u{code:04x}"
                if code < 0x10000
                else f"\\U{code:08x}"
            )
    return "".join(out)


def text_width(text: str) -> int:
    """Terminal columns of printable ``text``: wide East Asian characters take two, marks none."""
    width = 0
    for char in text:
        if unicodedata.combining(char):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width
