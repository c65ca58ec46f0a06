"""Bad input: property-based fuzzing of the config file and of the command-line flags.

Whatever the TOML or the flags, loading ends in a valid `Config` or a `ConfigError` whose message
names the problem, never in another exception; `poolwatch check-config` exits 0 or 3 and prints
no traceback. A bad SIGHUP reload keeping the old config is covered by
tests/embedded/test_daemon_on_test_driver.py (poolwatch_config_last_reload_successful 0, the old
config still served); hostile XML (billion laughs, external entities) by
tests/unit/test_poolxml_filesystem.py.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from poolwatch import cli
from poolwatch.config import Config, parse_config
from poolwatch.errors import ConfigError
from tests.helpers import POOLWATCH
from tests.reliability.conftest import sized

Figure = Callable[[str, str, str], None]
EXAMPLES = int(sized(200, 1000))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# Keys that exist, so that fuzzing reaches the validators rather than stopping at "unknown key".
SECTIONS: dict[str, list[str]] = {
    "poll": [
        "interval",
        "volumes_interval",
        "refresh_interval",
        "call_timeout",
        "max_volumes_per_pool",
    ],
    "web": ["listen", "config_file"],
    "log": ["level", "format"],
}
ARRAYS: dict[str, list[str]] = {
    "connection": ["name", "uri", "read_only"],
    "threshold": [
        "match",
        "type",
        "warning",
        "critical",
        "clear",
        "for",
        "hooks",
        "forecast_window",
        "time_to_full_warning",
        "time_to_full_critical",
    ],
    "autostart": [
        "match",
        "type",
        "mode",
        "max_attempts",
        "backoff",
        "backoff_max",
        "require_mount",
        "hooks",
    ],
}
HOOK_KEYS = ["exec", "webhook", "timeout", "retries", "headers", "url", "env"]

TEXTS = st.one_of(
    st.sampled_from(
        [
            "15s",
            "0s",
            "-1s",
            "5m",
            "1h",
            "50GiB",
            "85%",
            "101%",
            "0%",
            "abc",
            "",
            "auto",
            "json",
            "console",
            "debug",
            "info",
            "qemu:///system",
            "test:///default",
            ":9479",
            "127.0.0.1:0",
            "[::1]:9479",
            "999999:1",
            "boot",
            "enforce",
            "off",
            "*",
            "[",
            "dir",
            "fs",
            "true",
            "1e309",
            "nan",
            "https://example.invalid/hook",
            "/bin/true",
        ]
    ),
    st.text(max_size=30),
)
SCALARS = st.one_of(
    TEXTS,
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
)
VALUES = st.one_of(
    SCALARS, st.lists(SCALARS, max_size=4), st.dictionaries(TEXTS, SCALARS, max_size=3)
)


def _toml_key(key: str) -> str:
    return json.dumps(key)  # a quoted key is valid TOML for any string


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return "nan"
        if value in (float("inf"), float("-inf")):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


@st.composite
def documents(draw: st.DrawFn) -> str:
    lines: list[str] = []
    for section, keys in SECTIONS.items():
        if draw(st.booleans()):
            lines.append(f"[{section}]")
            for key in draw(st.lists(st.sampled_from([*keys, "bogus"]), max_size=4, unique=True)):
                lines.append(f"{key} = {_toml_value(draw(VALUES))}")
    for array, keys in ARRAYS.items():
        for _ in range(draw(st.integers(0, 2))):
            lines.append(f"[[{array}]]")
            for key in draw(st.lists(st.sampled_from(keys), max_size=5, unique=True)):
                lines.append(f"{key} = {_toml_value(draw(VALUES))}")
    for _ in range(draw(st.integers(0, 2))):
        lines.append(f"[hooks.{_toml_key(draw(TEXTS))}]")
        for key in draw(st.lists(st.sampled_from(HOOK_KEYS), max_size=4, unique=True)):
            lines.append(f"{key} = {_toml_value(draw(VALUES))}")
    if draw(st.integers(0, 9)) == 0:  # now and then, plain garbage
        lines.append(draw(st.text(max_size=40)))
    return "\n".join(lines) + "\n"


OUTCOMES: dict[str, int] = {"valid": 0, "ConfigError": 0}


def _check(text: str) -> None:
    try:
        config = parse_config(text, source="fuzz.toml")
    except ConfigError as exc:
        message = str(exc)
        assert message.strip(), "a ConfigError must say what is wrong"
        assert "Traceback" not in message
        OUTCOMES["ConfigError"] += 1
    else:
        assert isinstance(config, Config)
        OUTCOMES["valid"] += 1


def test_config_fuzz_toml(figure: Figure) -> None:
    OUTCOMES.update(valid=0, ConfigError=0)

    @SETTINGS
    @given(documents())
    def structured(text: str) -> None:
        _check(text)

    @SETTINGS
    @given(st.text(max_size=200))
    def raw(text: str) -> None:
        _check(text)

    structured()
    raw()
    total = OUTCOMES["valid"] + OUTCOMES["ConfigError"]
    figure(
        f"hypothesis: {EXAMPLES} TOML documents built from the real sections/keys with random "
        f"values + {EXAMPLES} random texts",
        "every one gave a valid Config or a ConfigError with a message; no other exception",
        f"{total} documents: {OUTCOMES['valid']} valid, {OUTCOMES['ConfigError']} ConfigError",
    )


FLAG_VALUES = st.one_of(
    TEXTS,
    st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=40).filter(
        lambda s: "\x00" not in s
    ),
)
FLAGS = [
    "--web.listen-address",
    "--web.config.file",
    "--log.level",
    "--log.format",
    "--libvirt.uri",
]


def test_config_fuzz_flags(tmp_path: Path, figure: Figure) -> None:
    parser = cli._build_parser()
    outcomes = {"valid": 0, "ConfigError": 0, "usage": 0}

    @SETTINGS
    @given(st.lists(st.tuples(st.sampled_from(FLAGS), FLAG_VALUES), min_size=1, max_size=4))
    def fuzz(flags: list[tuple[str, str]]) -> None:
        argv = ["run"] + [f"{flag}={value}" for flag, value in flags]
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr):
                args = parser.parse_args(argv)
        except SystemExit as exc:
            code = exc.code
        else:
            code = None
        if code is not None:
            assert code == cli.ExitCode.USAGE
            assert "Traceback" not in stderr.getvalue()
            outcomes["usage"] += 1
            return
        assert isinstance(args, argparse.Namespace)
        try:
            config = cli._apply_flags(
                Config(), args, listen=args.listen, libvirt_uri=args.libvirt_uri
            )
        except ConfigError as exc:
            message = str(exc)
            outcomes["ConfigError"] += 1
            assert message.strip()
        else:
            assert isinstance(config, Config)
            outcomes["valid"] += 1

    fuzz()
    figure(
        f"hypothesis: {EXAMPLES} command lines of 1-4 flags (listen, web config, log level/format, "
        "libvirt URI) with random values",
        "each: a Config, a ConfigError naming the flag, or argparse's usage exit 2; nothing else",
        ", ".join(f"{v} {k}" for k, v in outcomes.items()),
    )


def test_check_config_exit_codes(tmp_path: Path, figure: Figure) -> None:
    """The real command on files: exit 0 or 3, and never a traceback."""
    samples = [
        "",
        "[poll]\ninterval = '15s'\n",
        "[poll]\ninterval = 'soon'\n",
        "[[connection]]\nuri = 42\n",
        "[web]\nlisten = ['127.0.0.1:99999']\n",
        "garbage = = =\n",
        "[hooks.x]\nexec = []\n",
        "\udcff".encode("utf-8", "surrogateescape").decode("latin-1"),
        "[[threshold]]\nmatch = '*'\nwarning = '200%'\n",
    ]
    codes = []
    for i, text in enumerate(samples):
        path = tmp_path / f"{i}.toml"
        path.write_bytes(text.encode("latin-1", "replace") if i == 7 else text.encode())
        proc = subprocess.run(
            [str(POOLWATCH), "check-config", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert proc.returncode in (0, 3), proc
        assert "Traceback" not in proc.stderr + proc.stdout
        if proc.returncode == 3:
            assert str(path) in proc.stderr
        codes.append(proc.returncode)
    missing = subprocess.run(
        [str(POOLWATCH), "check-config", str(tmp_path / "absent.toml")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert missing.returncode == 3
    assert "Traceback" not in missing.stderr
    figure(
        f"`poolwatch check-config` on {len(samples) + 1} files (valid, wrong types, bad TOML, "
        "invalid UTF-8, missing file)",
        "exit 0 or 3 only, the file named on stderr, no traceback",
        f"exit codes {[*codes, missing.returncode]}",
    )
