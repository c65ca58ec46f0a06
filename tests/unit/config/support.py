"""What the config tests share: the shipped example, a policy file, and error helpers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from poolwatch.config import parse_config
from poolwatch.errors import ConfigError

EXAMPLE = Path(__file__).parents[3] / "config" / "poolwatch.toml"
DURATION_HINT = '(use e.g. "15s", "5m", "1h30m")'
GiB = 2**30


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="test.toml")
    return caught.value.errors


def error_of(text: str) -> str:
    errors = errors_of(text)
    assert len(errors) == 1, errors
    return errors[0]


def commented_examples(text: str) -> str:
    """The shipped file's commented-out examples, uncommented: each runs from a commented
    `# [table]` or `# [[table]]` line down to the next line that is not a comment."""
    examples: list[str] = []
    inside = False
    for line in text.splitlines():
        starts = re.match(r"# \[{1,2}[a-z]", line) is not None
        inside = line.startswith("#") and (inside or starts)
        if inside:
            examples.append("" if line == "#" else line.removeprefix("# "))
    return "\n".join(examples)


POLICIES = """
[[autostart]]
pool = "nfs-*"
type = "netfs"
mode = "enforce"
ensure_flag = true
max_attempts = 0
backoff = "30s"
backoff_max = "1h"
hooks = ["pager"]

[[autostart]]
pool = "*"

[[threshold]]
pool = "*"
type = "dir"
warning = "85%"
critical = "95%"
for = "5m"
hooks = ["pager", "ops-webhook"]

[[threshold]]
warning = "< 20GiB"
critical = "< 5GiB"
clear = "5GiB"
time_to_full_warning = "24h"
time_to_full_critical = "2h"
forecast_window = "12h"

[hooks.pager]
exec = ["/usr/local/bin/page-oncall", "--severity", "high"]
timeout = "1m"

[hooks.ops-webhook]
webhook = "https://alerts.example.com/poolwatch"
timeout = "5s"
retries = 0
headers = { Authorization = "Bearer abc", X-Team = "storage" }
"""
