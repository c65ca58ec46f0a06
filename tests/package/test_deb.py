"""The Debian package, as an operator meets it on a fresh Debian 12 KVM host.

The .deb is built from this checkout with scripts/package.sh, and a later version from a copy
with its version bumped (both at once, while the host boots). The host is a pristine Debian 12
booted with its own systemd (tests/package/debian_host.py) and a private network: libvirt from
Debian's archive, one dir pool named "default", then `apt-get install ./poolwatch_*.deb`,
upgrade, remove and purge. The tests run in file order on that one host, as the steps of an
operator do. About 3 to 5 minutes; the first run also builds the cached base root (debootstrap,
a few minutes more). Needs root; in CI a host that cannot boot fails the tier.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import REPO, unavailable
from tests.package import builds
from tests.package.debian_host import (
    KVM_HOST_PACKAGES,
    DebianHost,
    HostError,
    booted_host,
    prerequisites_problem,
)

# The module fixture builds two packages and boots a host before the first test, and the first
# run also builds the cached base root: more than pyproject's 300s per test.
pytestmark = pytest.mark.timeout(1500)

CONFIG = "/etc/poolwatch/poolwatch.toml"
METRICS = "curl -sf http://127.0.0.1:9479/metrics"
# The rule an operator adds to the shipped config: the pool's free space is below 1 TiB, so
# its threshold level becomes warning (1) once poolwatch runs with the edited file.
EDIT = '\n[[threshold]]\npool = "default"\nwarning = "< 1TiB"\n'
WARNING_LEVEL = (
    f"{METRICS} | grep -E '^poolwatch_pool_threshold_level\\{{.*storage_pool=\"default\".*\\}} 1'"
)


@dataclass
class Packages:
    """The two builds: `first` ready, `upgrade` still building until `upgrade_deb()`."""

    first: Path
    upgrade_version: str
    upgrade_tree: Path
    upgrade_build: subprocess.Popen[bytes]
    upgrade_log: Path

    def upgrade_deb(self) -> Path:
        return builds.finish_build(self.upgrade_build, self.upgrade_tree, self.upgrade_log)


@dataclass
class Site:
    host: DebianHost
    packages: Packages


def _make_kvm_host(host: DebianHost) -> None:
    """What every KVM host has before poolwatch: libvirt under systemd and a running pool."""
    host.check(f"apt-get -q -y install --no-install-recommends {KVM_HOST_PACKAGES}", timeout=600)
    host.check(
        "systemctl start libvirtd.socket libvirtd && mkdir -p /var/lib/libvirt/images && "
        "virsh -q -c qemu:///system pool-define-as default dir --target /var/lib/libvirt/images && "
        "virsh -q -c qemu:///system pool-start default && "
        "virsh -q -c qemu:///system pool-autostart default"
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    problem = prerequisites_problem()
    if problem:
        unavailable(problem)
    work = tmp_path_factory.mktemp("deb")
    first_log, upgrade_log = work / "build.log", work / "build-upgrade.log"
    upgrade_tree = work / "upgrade" / "poolwatch"
    upgrade_version = builds.bumped_copy(REPO, upgrade_tree)
    first_build = builds.start_build(REPO, first_log)
    upgrade_build = builds.start_build(upgrade_tree, upgrade_log)
    try:
        try:
            with booted_host(work / "host") as host:
                _make_kvm_host(host)
                first = builds.finish_build(first_build, REPO, first_log)
                yield Site(
                    host, Packages(first, upgrade_version, upgrade_tree, upgrade_build, upgrade_log)
                )
        except HostError as exc:
            unavailable(f"cannot boot a Debian 12 host with systemd-nspawn: {exc}")
    finally:
        for build in (first_build, upgrade_build):
            if build.poll() is None:
                build.kill()
                build.wait()


# Why the service is not active, for a test that waits for it in vain.
SERVICE_LOG = "systemctl status poolwatch --no-pager -l; journalctl -u poolwatch -n 30 --no-pager"


def _main_pid(host: DebianHost) -> str:
    return host.check("systemctl show -p MainPID --value poolwatch").strip()


def test_install_needs_no_compiler_and_no_network(site: Site) -> None:
    host = site.host
    # A stock host: no compiler, no pip, and here no network at all, only the archive's
    # packages apt downloaded when the base was built.
    host.check("! command -v gcc && ! command -v cc && ! command -v pip3")
    host.check("! curl -sf --max-time 5 http://deb.debian.org/ >/dev/null")
    deb = host.copy_in(site.packages.first)
    host.check(f"apt-get -q -y install {deb}", timeout=600)
    assert host.check("dpkg-query -W -f '${Status}' poolwatch") == "install ok installed"
    host.check("! command -v gcc && ! command -v cc")
    assert host.check("command -v poolwatch").strip() == "/usr/bin/poolwatch"


def test_service_enabled_and_running_as_poolwatch(site: Site) -> None:
    host = site.host
    host.wait_for("systemctl is-active poolwatch", explain=SERVICE_LOG)
    assert host.check("systemctl is-enabled poolwatch").strip() == "enabled"
    pid = _main_pid(site.host)
    assert host.check(f"ps -o user= -p {pid}").strip() == "poolwatch"
    assert "libvirt" in host.check("id -nG poolwatch").split()
    # The shipped config is the package's conffile, so dpkg keeps an operator's edits.
    assert CONFIG in host.check("cat /var/lib/dpkg/info/poolwatch.conffiles").split()


def test_metrics_and_status_show_the_hosts_pool(site: Site) -> None:
    host = site.host
    host.wait_for(
        f"{METRICS} | grep -q 'libvirt_storage_pool_capacity_bytes{{.*storage_pool=\"default\"'"
    )
    host.check(f"{METRICS} | grep -qE '^poolwatch_libvirt_up\\{{.*\\}} 1'")
    assert "default" in host.check("poolwatch status")


def test_reload_applies_an_edited_config(site: Site) -> None:
    host = site.host
    pid = _main_pid(host)
    host.check(f"printf '%s' '{EDIT}' >>{CONFIG} && poolwatch check-config {CONFIG}")
    host.check("systemctl reload poolwatch")
    host.wait_for(WARNING_LEVEL)
    host.check(f"{METRICS} | grep -qE '^poolwatch_config_last_reload_successful(\\{{.*\\}})? 1'")
    assert _main_pid(host) == pid, "reload restarted the service"


def test_upgrade_keeps_the_edited_config_and_restarts(site: Site) -> None:
    host = site.host
    pid = _main_pid(host)
    deb = host.copy_in(site.packages.upgrade_deb())
    host.check(f"apt-get -q -y install {deb}", timeout=600)
    version = host.check("dpkg-query -W -f '${Version}' poolwatch")
    assert version == site.packages.upgrade_version
    assert EDIT in host.check(f"cat {CONFIG}")
    assert host.check("ls /etc/poolwatch").split() == ["poolwatch.toml"]  # no .dpkg-dist
    host.wait_for("systemctl is-active poolwatch", explain=SERVICE_LOG)
    assert _main_pid(host) != pid, "the upgrade did not restart the service"
    host.wait_for(WARNING_LEVEL)


def test_remove_stops_the_service(site: Site) -> None:
    host = site.host
    host.check("apt-get -q -y remove poolwatch")
    assert host.run("systemctl is-active poolwatch").stdout.strip() != "active"
    host.check(f"! command -v poolwatch && test -f {CONFIG}")


def test_purge_leaves_nothing(site: Site) -> None:
    host = site.host
    host.check("apt-get -q -y purge poolwatch")
    host.check("! getent passwd poolwatch && ! getent group poolwatch")
    host.check("! test -e /etc/poolwatch && ! test -e /var/lib/poolwatch")
    host.check("! test -e /usr/lib/poolwatch && ! test -e /usr/lib/sysusers.d/poolwatch.conf")
    host.check("! systemctl cat poolwatch.service >/dev/null 2>&1")
    host.check("! test -e /etc/systemd/system/multi-user.target.wants/poolwatch.service")
    assert host.run("dpkg-query -W poolwatch").returncode != 0
