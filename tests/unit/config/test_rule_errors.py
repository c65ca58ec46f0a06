"""The policy sections: every mistake with its key path."""

from __future__ import annotations

import pytest

from tests.unit.config.support import DURATION_HINT, error_of

# --- policies: every mistake with its key path ------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        # threshold: limits
        (
            '[[threshold]]\npool = "*"',
            "threshold[0]: sets no level: give at least one of warning, critical, "
            "time_to_full_warning or time_to_full_critical",
        ),
        (
            '[[threshold]]\nwarning = "20GiB"',
            'threshold[0].warning: invalid limit "20GiB": free space needs a "<": write "< 20GiB"',
        ),
        (
            '[[threshold]]\ncritical = "0%"',
            'threshold[0].critical: invalid limit "0%": a used ratio must be more than 0%',
        ),
        (
            '[[threshold]]\nwarning = "120%"',
            'threshold[0].warning: invalid ratio "120%": must be between 0% and 100%',
        ),
        (
            "[[threshold]]\nwarning = 85",
            'threshold[0].warning: must be a quoted string such as "85%" or "< 20GiB" (got 85)',
        ),
        (
            '[[threshold]]\nwarning = "85%"\ncritical = "< 5GiB"\nclear = "90%"',
            'threshold[0].clear: must be less than warning "85%": a clear of "90%" reaches '
            "beyond the threshold, so the level would never clear",
        ),
        (
            '[[threshold]]\nwarning = "95%"\ncritical = "85%"',
            'threshold[0].critical: must be higher than warning "95%" (got "85%")',
        ),
        (
            '[[threshold]]\nwarning = "90%"\ncritical = "90%"',
            'threshold[0].critical: must be higher than warning "90%" (got "90%")',
        ),
        (
            '[[threshold]]\nwarning = "< 5GiB"\ncritical = "< 20GiB"',
            'threshold[0].critical: must be less free space than warning "< 5GiB", which warns '
            'first (got "< 20GiB")',
        ),
        # threshold: clear
        (
            '[[threshold]]\nwarning = "85%"\nclear = "90%"',
            'threshold[0].clear: must be less than warning "85%": a clear of "90%" reaches '
            "beyond the threshold, so the level would never clear",
        ),
        (
            '[[threshold]]\nwarning = "85%"\nclear = "85%"',
            'threshold[0].clear: must be less than warning "85%": a clear of "85%" reaches '
            "beyond the threshold, so the level would never clear",
        ),
        (
            '[[threshold]]\ncritical = "10%"\nclear = "10%"',
            'threshold[0].clear: must be less than critical "10%": a clear of "10%" reaches '
            "beyond the threshold, so the level would never clear",
        ),
        (
            '[[threshold]]\nwarning = "85%"\nclear = "5GiB"',
            'threshold[0].clear: must be a ratio such as "2%" for used-ratio limits (got "5GiB")',
        ),
        (
            '[[threshold]]\nwarning = "< 20GiB"\nclear = "2%"',
            'threshold[0].clear: must be a size such as "5GiB" for free-space limits (got "2%")',
        ),
        (
            '[[threshold]]\nwarning = "< 20GiB"\nclear = "< 5GiB"',
            'threshold[0].clear: invalid clear "< 5GiB": a clear margin takes no "<"; write "5GiB"',
        ),
        (
            '[[threshold]]\nwarning = "< 20GiB"\nclear = "0B"',
            'threshold[0].clear: must be greater than 0 (got "0B")',
        ),
        (
            '[[threshold]]\nwarning = "85%"\nclear = "lots"',
            'threshold[0].clear: invalid clear "lots" (use a ratio such as "2%" for used-ratio '
            'limits or a size such as "5GiB" for free-space limits)',
        ),
        (
            '[[threshold]]\ntime_to_full_warning = "1h"\nclear = "2%"',
            'threshold[0].clear: has no effect without warning or critical (got "2%")',
        ),
        # threshold: durations
        (
            '[[threshold]]\ntime_to_full_warning = "2h"\ntime_to_full_critical = "1d"',
            'threshold[0].time_to_full_critical: must be shorter than time_to_full_warning "2h" '
            '(got "1d")',
        ),
        (
            '[[threshold]]\nwarning = "85%"\nforecast_window = "0s"',
            'threshold[0].forecast_window: must be greater than 0 (got "0s")',
        ),
        (
            '[[threshold]]\nwarning = "85%"\nfor = "-1m"',
            f'threshold[0].for: invalid duration "-1m": must not be negative {DURATION_HINT}',
        ),
        (
            '[[threshold]]\nwarning = "85%"\ntime_to_full_warning = "0s"',
            'threshold[0].time_to_full_warning: must be greater than 0 (got "0s")',
        ),
        (
            '[[threshold]]\nwarning = "85%"\npool = ""',
            'threshold[0].pool: must not be empty (use "*" for every pool)',
        ),
        # autostart
        (
            '[[autostart]]\nmode = "always"',
            'autostart[0].mode: must be "off", "boot" or "enforce" (got "always")',
        ),
        (
            "[[autostart]]\nmax_attempts = -1",
            "autostart[0].max_attempts: must be at least 0 (got -1)",
        ),
        (
            '[[autostart]]\nbackoff = "0s"',
            'autostart[0].backoff: must be greater than 0 (got "0s")',
        ),
        (
            '[[autostart]]\nbackoff = "1h"\nbackoff_max = "10m"',
            'autostart[0].backoff_max: must be at least backoff "1h" (got "10m")',
        ),
        (
            '[[autostart]]\nbackoff = "20m"',  # beyond the default backoff_max
            'autostart[0].backoff: must be at most backoff_max, whose default is "10m": set '
            'backoff_max too (got "20m")',
        ),
        (
            '[[autostart]]\ntype = "netfs"\nrequire_mount = true',
            'autostart[0].require_mount: only applies to dir pools, and type "netfs" does not '
            'match "dir"',
        ),
        (
            '[[autostart]]\nensure_flag = "yes"',
            'autostart[0].ensure_flag: must be true or false (got "yes")',
        ),
        (
            '[[autostart]]\ntype = ""',
            'autostart[0].type: must not be empty (use "*" for every pool)',
        ),
        # hooks
        (
            "[hooks.pager]\n",
            "hooks.pager: needs exec (a command to run) or webhook (a URL to post to)",
        ),
        (
            '[hooks.pager]\nexec = ["/bin/true"]\nwebhook = "https://example.com/"',
            "hooks.pager: has both exec and webhook; a hook is one or the other, so define two "
            "hooks",
        ),
        (
            "[hooks.pager]\nexec = []",
            "hooks.pager.exec: must not be empty: give the program and its arguments, e.g. "
            '["/usr/local/bin/page-oncall", "--severity", "high"]',
        ),
        (
            '[hooks.pager]\nexec = "/usr/local/bin/page-oncall --severity high"',
            'hooks.pager.exec: must be an array (got "/usr/local/bin/page-oncall --severity high")',
        ),
        (
            '[hooks.pager]\nexec = ["bin/page-oncall"]',
            "hooks.pager.exec[0]: must be an absolute path or a command name looked up in PATH "
            '(got "bin/page-oncall")',
        ),
        (
            '[hooks.pager]\nexec = ["", "x"]',
            "hooks.pager.exec[0]: must be an absolute path or a command name looked up in PATH "
            '(got "")',
        ),
        (
            '[hooks.pager]\nexec = ["/bin/page", 5]',
            "hooks.pager.exec[1]: must be a string (got 5)",
        ),
        (
            '[hooks.pager]\nexec = ["/bin/page"]\nretries = 2',
            "hooks.pager.retries: only applies to webhook hooks",
        ),
        (
            '[hooks.pager]\nexec = ["/bin/page"]\nheaders = { A = "b" }',
            "hooks.pager.headers: only applies to webhook hooks",
        ),
        (
            '[hooks.ops]\nwebhook = "ftp://alerts.example.com/"',
            'hooks.ops.webhook: invalid webhook URL "ftp://alerts.example.com/" (use an http:// '
            'or https:// URL such as "https://alerts.example.com/poolwatch")',
        ),
        (
            '[hooks.ops]\nwebhook = "https://"',
            'hooks.ops.webhook: invalid webhook URL "https://" (use an http:// or https:// URL '
            'such as "https://alerts.example.com/poolwatch")',
        ),
        (
            '[hooks.ops]\nwebhook = "https://example.com:99999/"',
            'hooks.ops.webhook: invalid webhook URL "https://example.com:99999/" (use an http:// '
            'or https:// URL such as "https://alerts.example.com/poolwatch")',
        ),
        (
            '[hooks.ops]\nwebhook = "https://example.com/"\nretries = -1',
            "hooks.ops.retries: must be at least 0 (got -1)",
        ),
        (
            '[hooks.ops]\nwebhook = "https://example.com/"\ntimeout = "0s"',
            'hooks.ops.timeout: must be greater than 0 (got "0s")',
        ),
        (
            '[hooks.ops]\nwebhook = "https://example.com/"\nheaders = { "X Team" = "a" }',
            'hooks.ops.headers."X Team": invalid HTTP header name "X Team"',
        ),
        (
            '[hooks.ops]\nwebhook = "https://example.com/"\nheaders = { X-Team = "a\\nX-Evil: 1" }',
            "hooks.ops.headers.X-Team: must not contain line breaks or NUL characters",
        ),
        (
            '[hooks.ops]\nwebhook = "https://example.com/"\nheaders = { X-Team = 1 }',
            "hooks.ops.headers.X-Team: must be a string (got 1)",
        ),
        (
            '[hooks."page me"]\nexec = ["/bin/page"]',
            'hooks."page me": invalid hook name "page me": use letters, digits, "_" and "-"',
        ),
        (
            '[hooks.ops]\nwebhook = "https://example.com/a b"',
            'hooks.ops.webhook: invalid webhook URL "https://example.com/a b" (use an http:// '
            'or https:// URL such as "https://alerts.example.com/poolwatch")',
        ),
        (
            '[[threshold]]\nwarning = "85%"\nclear = 2',
            'threshold[0].clear: must be a quoted string such as "2%" or "5GiB" (got 2)',
        ),
        (
            # clear is checked against warning only once warning itself is valid
            '[[threshold]]\nwarning = "85"\nclear = "5GiB"',
            'threshold[0].warning: invalid limit "85" (use a used ratio such as "85%" or free '
            'space such as "< 20GiB")',
        ),
        ("threshold = [1]", "threshold[0]: must be a table (got 1)"),
        ('hooks = ["pager"]', "hooks: must be a table (got an array)"),
        ("[[hooks]]", "hooks: must be a table (got an array)"),
    ],
)
def test_bad_policy_entries(toml: str, expected: str) -> None:
    assert error_of(toml) == expected
