"""A pristine Debian 12 that boots systemd, for installing the .deb as an operator would.

Owns the cached base root (debootstrap's default variant, the host's Debian mirror, no compiler,
no pip) and the per-test copy of it booted with `systemd-nspawn --boot`: starting it, running
commands inside as root, and stopping and deleting it. The approach is that of
../shared/tools/systemd-host, with one difference: the container has a private network (only
loopback), so the poolwatch it runs cannot clash with ports on this machine, and "no network
beyond Debian's archive" is shown by having no network at all. That works because the base
keeps apt's index lists and the archive's .debs that the installs need (BASE_DOWNLOADS),
downloaded once when the base is built.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

CACHE_DIR = Path(os.environ.get("POOLWATCH_TEST_CACHE", "/var/cache/poolwatch-test"))
SUITE = "bookworm"
BASE_REV = "1"  # bump to rebuild every cached base
# What the tests install inside from Debian's archive: libvirt for a KVM host and curl for the
# checks (without the recommended QEMU, firmware and GPU drivers: 80 packages instead of 400);
# then what `apt install ./poolwatch_*.deb` adds, recommends included: python3 (libvirt0 comes
# with libvirt-daemon-system).
KVM_HOST_PACKAGES = "libvirt-daemon-system libvirt-clients curl"
BASE_DOWNLOADS = (
    f"apt-get -q -y install --download-only --no-install-recommends {KVM_HOST_PACKAGES}",
    "apt-get -q -y install --download-only python3",
)
INSIDE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NSPAWN_ARGS = ("--register=no", "--keep-unit", "--quiet")


# Run from a chroot (as in fresh-run), the container's processes stay "chrooted" for the kernel:
# nspawn moves the container's root over the chroot, not over the mount namespace's own root, and
# the kernel refuses user namespaces to chrooted processes, so poolwatch.service's PrivateUsers=
# fails (status 217/USER). Run nspawn in a private mount namespace where the chroot is stacked
# over that namespace's root: the same files, but no longer a chroot.
UNCHROOT = (
    "unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
    'outer=$(nsenter --mount=/proc/self/ns/mnt readlink /proc/$$/root) && '
    'nsenter --mount=/proc/self/ns/mnt mount --rbind "$outer" / && '
    'exec nsenter --mount=/proc/self/ns/mnt "$@"',
    "unchroot",
)  # fmt: skip


def _chrooted() -> bool:
    with contextlib.suppress(OSError):
        here, init = os.stat("/"), os.stat("/proc/1/root")
        return (here.st_dev, here.st_ino) != (init.st_dev, init.st_ino)
    return False


class HostError(Exception):
    """The base could not be built or the container could not boot."""


def prerequisites_problem() -> str | None:
    """Why this machine cannot boot a Debian 12 container, or None."""
    if os.geteuid() != 0:
        return "booting a Debian 12 container needs root (debootstrap, systemd-nspawn)"
    for tool in ("debootstrap", "systemd-nspawn", "nsenter", "tar", "apt-get"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (bash scripts/bootstrap.sh --test installs it)"
    return None


def _run(argv: list[str], log: Path, timeout: float) -> None:
    with log.open("a") as out:
        out.write(f"+ {' '.join(argv)}\n")
        out.flush()
        result = subprocess.run(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=timeout
        )
    if result.returncode != 0:
        raise HostError(f"{argv[0]} exited {result.returncode}, see {log}")


def host_sources() -> list[tuple[str, str, str]]:
    """The host's apt entries for the Debian 12 suites: (uri, suite, component)."""
    with tempfile.TemporaryDirectory() as lists:
        Path(lists, "partial").mkdir()
        out = subprocess.run(
            [
                *("apt-get", "-o", f"Dir::State::Lists={lists}", "-o", "Debug::NoLocking=1"),
                *("--print-uris", "update"),
            ],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
    sources = set()
    for line in out.splitlines():
        url = line.split("'")[1] if line.startswith("'") else ""
        if "/dists/" not in url or "/binary-" not in url:
            continue
        uri, rest = url.split("/dists/", 1)
        suite, component = rest.split("/")[0], rest.split("/")[1]
        if suite == SUITE or suite.startswith(f"{SUITE}-"):
            sources.add((uri, suite, component))
    return sorted(sources)


def _apt_sources(sources: list[tuple[str, str, str]]) -> str:
    stanzas = []
    for uri in sorted({uri for uri, _, _ in sources}):
        suites = " ".join(sorted({s for u, s, _ in sources if u == uri}))
        components = " ".join(sorted({c for u, _, c in sources if u == uri}))
        stanzas.append(
            f"Types: deb\nURIs: {uri}\nSuites: {suites}\nComponents: {components}\n"
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        )
    return "\n".join(stanzas)


def ensure_base() -> Path:
    """The cached base tarball, built first if it is missing or its recipe or mirror changed
    (a few minutes, once; later runs reuse it)."""
    sources = host_sources()
    mirror = next((uri for uri, suite, _ in sources if suite == SUITE), None)
    if mirror is None:
        raise HostError(f"the host's apt has no {SUITE} entry to take a mirror from")
    stamp_text = f"rev={BASE_REV} downloads={'; '.join(BASE_DOWNLOADS)}\n{_apt_sources(sources)}"
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tarball, stamp = CACHE_DIR / f"{SUITE}-systemd.tar", CACHE_DIR / f"{SUITE}-systemd.stamp"
    with (CACHE_DIR / ".lock").open("w") as lock:
        # Two test runs at once: the second waits for the first one's build.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if tarball.exists() and stamp.exists() and stamp.read_text() == stamp_text:
            return tarball
        log = CACHE_DIR / "build.log"
        log.write_text("")
        with tempfile.TemporaryDirectory(dir=CACHE_DIR, prefix="build.") as work:
            root = Path(work, "root")
            _run(["debootstrap", SUITE, str(root), mirror], log, timeout=1200)
            (root / "etc/apt/sources.list").unlink(missing_ok=True)
            (root / "etc/apt/sources.list.d/debian.sources").write_text(_apt_sources(sources))
            shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
            downloads = " && ".join(("apt-get -q update", *BASE_DOWNLOADS))
            _run(
                [
                    *("systemd-nspawn", *NSPAWN_ARGS, "-D", str(root), "--pipe"),
                    *("env", "DEBIAN_FRONTEND=noninteractive", "bash", "-c", downloads),
                ],
                log,
                timeout=1200,
            )
            (root / "etc/resolv.conf").write_text("")
            tar = ["tar", "-C", str(root), "--numeric-owner", "-cpf", f"{tarball}.tmp", "."]
            _run(tar, log, timeout=600)
            os.replace(f"{tarball}.tmp", tarball)
            stamp.write_text(stamp_text)
        return tarball


class DebianHost:
    """A booted copy of the base: `run()` executes shell commands inside, as root."""

    def __init__(self, root: Path, nspawn: subprocess.Popen[bytes], pid1: int) -> None:
        self.root = root
        self._nspawn = nspawn
        self._pid1 = pid1

    def run(self, command: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run a bash command inside (cwd /root), returning its exit code and output."""
        return subprocess.run(
            [
                # --root/--wd: entering the container's mount namespace alone puts a caller that
                # is itself chrooted (as in fresh-run) at that namespace's real root, outside
                # the container: nspawn moved the container's root over the chroot, not over /.
                *("nsenter", "-t", str(self._pid1), "-a", "--root", "--wd"),
                *("env", "-i", "HOME=/root"),
                *(f"PATH={INSIDE_PATH}", "LANG=C.UTF-8", "TERM=dumb"),
                *("DEBIAN_FRONTEND=noninteractive", "bash", "-c", f"cd /root && {command}"),
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def check(self, command: str, timeout: float = 300) -> str:
        """Run a command that must succeed; its output."""
        result = self.run(command, timeout)
        assert result.returncode == 0, (
            f"{command!r} exited {result.returncode}:\n{result.stdout}{result.stderr}"
        )
        return result.stdout

    def wait_for(self, command: str, timeout: float = 60, explain: str = "") -> str:
        """Run a command until it succeeds (the service reaches a state in its own time); when
        it never does, the error also shows the output of `explain` (e.g. the unit's journal)."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.run(command)
            if result.returncode == 0:
                return result.stdout
            if time.monotonic() > deadline:
                why = self.run(explain, timeout=60) if explain else None
                raise AssertionError(
                    f"{command!r} still fails after {timeout}s:\n{result.stdout}{result.stderr}"
                    + (f"--- {explain}\n{why.stdout}{why.stderr}" if why else "")
                )
            time.sleep(1)

    def copy_in(self, path: Path) -> str:
        """Put a file from this machine into the container's /root; its path inside."""
        shutil.copy(path, self.root / "root" / path.name)
        return f"/root/{path.name}"

    def stop(self) -> None:
        # nspawn turns SIGTERM into an orderly poweroff of the container's systemd.
        with contextlib.suppress(ProcessLookupError):
            self._nspawn.send_signal(signal.SIGTERM)
        try:
            self._nspawn.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._nspawn.kill()
            self._nspawn.wait()


def _find_pid1(nspawn: subprocess.Popen[bytes], timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and nspawn.poll() is None:
        children = Path(f"/proc/{nspawn.pid}/task/{nspawn.pid}/children")
        with contextlib.suppress(OSError):
            for pid in children.read_text().split():
                if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                    return int(pid)
        time.sleep(0.5)
    return None


def _check_inside(host: DebianHost, hostname: str) -> None:
    """Commands must run in the container's own root, not in the caller's filesystem: there,
    apt-get would install onto this machine and systemctl would see no container."""
    seen = host.run("cat /etc/hostname", timeout=30)
    if seen.returncode != 0 or seen.stdout.strip() != hostname:
        raise HostError(
            f"commands entered with nsenter do not run in the container's root (its "
            f"/etc/hostname says {seen.stdout.strip() or seen.stderr.strip()!r}, not {hostname!r})"
        )


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _wait_booted(host: DebianHost, console: Path, timeout: float) -> None:
    """Wait until the container's systemd has started every unit of its boot ("degraded": some
    failed, listed in the error when the boot does not end). Raises HostError saying why not."""
    deadline = time.monotonic() + timeout
    while True:
        state = host.run("systemctl is-system-running", timeout=30)
        status = state.stdout.strip() or state.stderr.strip() or f"exit {state.returncode}"
        if status in ("running", "degraded"):
            return
        if time.monotonic() > deadline:
            break
        time.sleep(1)
    report = [
        f"the container's systemd did not finish booting in {timeout:.0f}s: "
        f"`systemctl is-system-running` says {status!r}"
    ]
    for title, command in (
        ("jobs still queued (what the boot waits for)", "systemctl list-jobs --no-pager"),
        ("failed units", "systemctl --failed --no-pager"),
        ("journal, last lines", "journalctl -b --no-pager -n 40"),
    ):
        try:
            out = host.run(command, timeout=30)
            text = f"{out.stdout}{out.stderr}".rstrip() or f"(nothing; exit {out.returncode})"
        except subprocess.TimeoutExpired:
            text = "(timed out)"
        report.append(f"--- {title}: {command}\n{text}")
    report.append(
        f"--- console ({console}), last lines\n{_tail(console.read_text(errors='replace'), 30)}"
    )
    raise HostError("\n".join(report))


@contextlib.contextmanager
def booted_host(logs: Path, hostname: str = "poolhost") -> Iterator[DebianHost]:
    """A fresh copy of the base, booted with its own systemd and a private network, until the
    block ends; then powered off and deleted. Raises HostError when it does not boot."""
    tarball = ensure_base()
    logs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="poolwatch-deb.") as work:
        root = Path(work, "root")
        root.mkdir()
        tar = ["tar", "-C", str(root), "--numeric-owner", "-xpf", str(tarball)]
        _run(tar, logs / "setup.log", timeout=600)
        (root / "etc/hostname").write_text(f"{hostname}\n")
        boot_log = (logs / "boot.log").open("w")
        nspawn = subprocess.Popen(
            [
                *(UNCHROOT if _chrooted() else ()),
                *("systemd-nspawn", *NSPAWN_ARGS, "-D", str(root), "--private-network"),
                *("--boot", "--console=pipe"),
            ],
            stdout=boot_log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        host = None
        try:
            pid1 = _find_pid1(nspawn, timeout=30)
            if pid1 is None:
                raise HostError(f"the container did not boot, see {logs / 'boot.log'}")
            host = DebianHost(root, nspawn, pid1)
            _check_inside(host, hostname)
            _wait_booted(host, logs / "boot.log", timeout=90)
            yield host
        finally:
            if host is not None:
                host.stop()
            elif nspawn.poll() is None:
                nspawn.kill()
                nspawn.wait()
            boot_log.close()
