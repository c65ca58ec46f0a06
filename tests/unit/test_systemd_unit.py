"""The operations files: systemd/poolwatch.service passes `systemd-analyze verify` and scores
<= 2.0 in `systemd-analyze security`, the sysusers file creates what the unit names, and the
polkit rule grants poolwatch exactly the libvirt permissions it needs.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import POOLWATCH, REPO, unavailable

UNIT = REPO / "systemd" / "poolwatch.service"
SYSUSERS = REPO / "systemd" / "poolwatch.sysusers"
POLKIT_RULE = REPO / "config" / "polkit" / "50-poolwatch.rules"
INSTALLED_POOLWATCH = "/opt/poolwatch/venv/bin/poolwatch"
MAX_EXPOSURE = 2.0


def _tool(name: str) -> str:
    """The tool's path; in CI its absence is a failure, elsewhere a skip with the reason."""
    path = shutil.which(name)
    if path is None:
        unavailable(f"{name} is not installed (Debian: apt-get install systemd)")
    return path


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def _directives(text: str) -> dict[str, list[str]]:
    """Every `Key=value` of a unit file, by key, in order (comments and sections left out)."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


@pytest.fixture
def unit_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart= pointing at this checkout's poolwatch.

    `verify` checks that the ExecStart= binary exists; the unit names where the package installs
    it (/opt/poolwatch/venv), which is not there on a development machine or in CI.
    """
    text = UNIT.read_text()
    assert f"ExecStart={INSTALLED_POOLWATCH} " in text
    copy = tmp_path / "poolwatch.service"
    copy.write_text(text.replace(INSTALLED_POOLWATCH, str(POOLWATCH)))
    return copy


def test_unit_verifies_without_a_single_complaint(unit_copy: Path) -> None:
    # verify warns about unknown keys or bad values but still exits 0: any output is a finding.
    # It does not resolve User=, Group= or SupplementaryGroups= (systemd does that only when the
    # service starts), so the poolwatch user need not exist here; the sysusers test below checks
    # that installing poolwatch.sysusers creates them.
    result = _run(_tool("systemd-analyze"), "verify", str(unit_copy))
    assert result.returncode == 0, result.stderr
    assert (result.stdout + result.stderr).strip() == ""


def test_the_installed_path_is_the_only_complaint_about_the_original() -> None:
    analyze = _tool("systemd-analyze")
    if Path(INSTALLED_POOLWATCH).exists():
        pytest.skip(f"{INSTALLED_POOLWATCH} exists: nothing to complain about")
    result = _run(analyze, "verify", str(UNIT))
    complaints = (result.stdout + result.stderr).strip().splitlines()
    assert len(complaints) == 1, complaints
    assert f"Command {INSTALLED_POOLWATCH} is not executable" in complaints[0]


def test_security_exposure_is_ok(unit_copy: Path) -> None:
    result = _run(_tool("systemd-analyze"), "security", "--offline=true", str(unit_copy))
    found = re.search(
        r"Overall exposure level for \S+: (\d+(?:\.\d+)?) (\S+)", result.stdout + result.stderr
    )
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE, result.stdout
    assert found.group(2) == "OK"


def test_the_sandbox_keeps_what_poolwatch_needs() -> None:
    unit = _directives(UNIT.read_text())
    assert unit["Type"] == ["notify"]
    assert unit["NotifyAccess"] == ["main"]
    assert unit["WatchdogSec"] == ["30s"]
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert unit["Restart"] == ["on-failure"]
    assert unit["User"] == ["poolwatch"]
    assert unit["SupplementaryGroups"] == ["libvirt"]
    # /run/libvirt/* are unix sockets, /metrics is TCP; nothing may cut the daemon off either.
    assert unit["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    for cutting in ("PrivateNetwork", "IPAddressDeny", "InaccessiblePaths", "TemporaryFileSystem"):
        assert cutting not in unit
    # Read-only everywhere keeps statvfs() and the mount checks of pool targets working.
    assert unit["ProtectSystem"] == ["strict"]
    # Far above the HTTP connection bound (512), which otherwise shrinks to half of 1024.
    assert unit["LimitNOFILE"] == ["65536"]


def test_sysusers_creates_the_user_and_its_libvirt_membership(tmp_path: Path) -> None:
    sysusers = _tool("systemd-sysusers")
    (tmp_path / "etc").mkdir()
    result = _run(sysusers, f"--root={tmp_path}", str(SYSUSERS))
    assert result.returncode == 0, result.stderr
    passwd = {
        line.split(":")[0]: line.split(":")
        for line in (tmp_path / "etc" / "passwd").read_text().splitlines()
    }
    groups = {
        line.split(":")[0]: line.split(":")
        for line in (tmp_path / "etc" / "group").read_text().splitlines()
    }
    assert passwd["poolwatch"][5] == "/var/lib/poolwatch"  # the unit's StateDirectory=
    assert passwd["poolwatch"][6] == "/usr/sbin/nologin"
    assert groups["poolwatch"][2] == passwd["poolwatch"][3]  # its primary group
    assert "poolwatch" in groups["libvirt"][3].split(",")


# Runs the rule file under node with a stand-in for polkit's JavaScript API, one call per case.
_POLKIT_HARNESS = """
const fs = require("fs");
let rule = null;
const polkit = {
  Result: {YES: "yes", NO: "no", NOT_HANDLED: null},
  addRule: (f) => { rule = f; },
};
new Function("polkit", fs.readFileSync(process.argv[1], "utf8"))(polkit);
const cases = JSON.parse(process.argv[2]);
console.log(JSON.stringify(cases.map(([user, id, pool]) =>
  rule({id: id, lookup: (key) => (key === "pool_name" || key === "domain_name" ? pool : undefined)},
       {user: user}))));
"""

_GRANTED = [
    "org.libvirt.unix.manage",
    "org.libvirt.api.connect.getattr",
    "org.libvirt.api.connect.read",
    "org.libvirt.api.connect.search-storage-pools",
    "org.libvirt.api.storage-pool.getattr",
    "org.libvirt.api.storage-pool.read",
    "org.libvirt.api.storage-pool.search-storage-vols",
    "org.libvirt.api.storage-pool.refresh",
    "org.libvirt.api.storage-pool.start",
    "org.libvirt.api.storage-pool.write",
    "org.libvirt.api.storage-vol.getattr",
    "org.libvirt.api.storage-vol.read",
    "org.libvirt.api.connect.search-domains",
    "org.libvirt.api.domain.getattr",
    "org.libvirt.api.domain.read",
    "org.libvirt.api.domain.suspend",
]
_REFUSED = [
    "org.libvirt.api.connect.write",
    "org.libvirt.api.domain.read-secure",
    "org.libvirt.api.domain.stop",
    "org.libvirt.api.domain.start",
    "org.libvirt.api.domain.write",
    "org.libvirt.api.domain.delete",
    "org.libvirt.api.domain.save",
    "org.libvirt.api.storage-pool.stop",
    "org.libvirt.api.storage-pool.delete",
    "org.libvirt.api.storage-pool.format",
    "org.libvirt.api.storage-pool.save",
    "org.libvirt.api.storage-vol.create",
    "org.libvirt.api.storage-vol.data-read",
    "org.libvirt.api.storage-vol.delete",
    "org.libvirt.api.secret.read-secure",
]


def _polkit_answers(rule: Path, cases: list[list[str | None]]) -> list[str | None]:
    node = shutil.which("node")
    if node is None:
        unavailable(
            "node is not installed (Debian: apt-get install nodejs), so the polkit rule "
            "cannot be evaluated"
        )
    result = subprocess.run(
        [node, "-e", _POLKIT_HARNESS, str(rule), json.dumps(cases)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    answers: list[str | None] = json.loads(result.stdout)
    return answers


def test_polkit_rule_grants_poolwatch_exactly_what_it_calls() -> None:
    cases: list[list[str | None]] = []
    cases += [["poolwatch", action, "images"] for action in _GRANTED + _REFUSED]
    cases += [["alice", action, "images"] for action in _GRANTED]
    cases += [["poolwatch", "org.freedesktop.login1.reboot", None]]
    answers = _polkit_answers(POLKIT_RULE, cases)
    n_granted, n_refused = len(_GRANTED), len(_REFUSED)
    assert answers[:n_granted] == ["yes"] * n_granted
    assert answers[n_granted : n_granted + n_refused] == ["no"] * n_refused
    # Other users and other services' actions are left to the rest of the polkit rules.
    assert answers[n_granted + n_refused :] == [None] * (n_granted + 1)


def test_polkit_rule_can_narrow_autostart_to_named_pools(tmp_path: Path) -> None:
    text = POLKIT_RULE.read_text()
    assert "var AUTOSTART_POOLS = null;" in text
    narrowed = tmp_path / "50-poolwatch.rules"
    narrowed.write_text(text.replace("var AUTOSTART_POOLS = null;", 'var AUTOSTART_POOLS = ["a"];'))
    cases: list[list[str | None]] = [
        ["poolwatch", f"org.libvirt.api.storage-pool.{perm}", pool]
        for perm in ("start", "write", "refresh")
        for pool in ("a", "b")
    ]
    assert _polkit_answers(narrowed, cases) == ["yes", "no", "yes", "no", "yes", "yes"]


def test_polkit_rule_can_narrow_resumes_to_named_guests(tmp_path: Path) -> None:
    text = POLKIT_RULE.read_text()
    assert "var RESUME_GUESTS = null;" in text
    narrowed = tmp_path / "50-poolwatch.rules"
    narrowed.write_text(text.replace("var RESUME_GUESTS = null;", 'var RESUME_GUESTS = ["db"];'))
    cases: list[list[str | None]] = [
        ["poolwatch", f"org.libvirt.api.domain.{perm}", guest]
        for perm in ("suspend", "read")
        for guest in ("db", "web")
    ]
    assert _polkit_answers(narrowed, cases) == ["yes", "no", "yes", "yes"]
