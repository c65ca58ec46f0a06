"""The harness itself: a private libvirtd that is really private, and pools it really serves."""

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from tests.harness.commands import CommandError, MiB
from tests.harness.libvirtd import Libvirtd, prerequisites_problem, snapshot_host_dirs
from tests.helpers import REPO, unavailable

pytestmark = pytest.mark.integration


def pool_info(daemon: Libvirtd, name: str) -> dict[str, str]:
    """`virsh pool-info --bytes` as a dict: State, Capacity, Allocation, ..."""
    out = daemon.virsh("pool-info", name, "--bytes")
    return {
        k.strip(): v.strip()
        for k, v in (line.split(":", 1) for line in out.splitlines() if ":" in line)
    }


@pytest.fixture
def dir_pool(libvirtd: Libvirtd, tmp_path: Path) -> Iterator[str]:
    """A persistent, running `dir` pool; it and every other pool are gone afterwards."""
    name = "harness-dir"
    target = tmp_path / "dirpool"
    target.mkdir()
    libvirtd.virsh_xml(
        "pool-define",
        f"<pool type='dir'><name>{name}</name><target><path>{target}</path></target></pool>",
    )
    try:
        libvirtd.virsh("pool-start", name)
        yield name
    finally:
        if libvirtd.running:
            libvirtd.cleanup_pools()


def test_daemon_answers_on_its_private_sockets(libvirtd: Libvirtd) -> None:
    assert Path(f"/proc/{libvirtd.pid}/exe").resolve().name == "libvirtd"
    assert int((libvirtd.tmpdir / "libvirtd.pid").read_text()) == libvirtd.pid
    assert os.readlink(f"/proc/{libvirtd.pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")

    conn = libvirt.open(libvirtd.uri)
    try:
        assert conn.getLibVersion() >= 9_000_000
    finally:
        conn.close()
    ro = libvirt.openReadOnly(libvirtd.ro_uri)
    try:
        assert ro.isAlive() == 1
    finally:
        ro.close()
    with pytest.raises(CommandError, match=r"read.only"):
        libvirtd.virsh("pool-create-as", "nope", "dir", "--target", "/nonexistent", readonly=True)


def test_host_libvirt_dirs_and_mounts_are_untouched(libvirtd: Libvirtd) -> None:
    assert libvirtd.host_snapshot is not None
    assert snapshot_host_dirs() == libvirtd.host_snapshot
    # Inside its namespace, libvirtd's /run/libvirt is the temporary directory's run/ ...
    private = os.stat(libvirtd.tmpdir / "run")
    inside = libvirtd.nsenter("stat", "--format=%d:%i", "/run/libvirt").strip()
    assert inside == f"{private.st_dev}:{private.st_ino}"
    assert (libvirtd.tmpdir / "run" / "storage").is_dir()
    # ... and none of its mounts shows up on the host.
    assert str(libvirtd.tmpdir) not in Path("/proc/self/mountinfo").read_text()


def test_dir_pool_starts_and_reports(libvirtd: Libvirtd, dir_pool: str) -> None:
    info = pool_info(libvirtd, dir_pool)
    assert info["State"] == "running"
    assert int(info["Capacity"]) > 0
    assert info["Persistent"] == "yes"


@pytest.fixture
def fs_pool(libvirtd: Libvirtd, loop_fs: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A running `fs` pool on an ext4 loop device: (name, mount point)."""
    name = "harness-fs"
    target = tmp_path / "mnt"
    target.mkdir()
    libvirtd.virsh_xml(
        "pool-define",
        f"""<pool type='fs'><name>{name}</name>
              <source><device path='{loop_fs}'/><format type='ext4'/></source>
              <target><path>{target}</path></target></pool>""",
    )
    try:
        libvirtd.virsh("pool-start", name)
        yield name, target
    finally:
        if libvirtd.running:
            libvirtd.cleanup_pools()


def mounted_source(libvirtd: Libvirtd, target: Path) -> str:
    """What is mounted on target inside libvirtd's namespace ("" if nothing)."""
    return libvirtd.nsenter("findmnt", "-n", "-o", "SOURCE", str(target), check=False).strip()


def test_fs_pool_on_loop_device(
    libvirtd: Libvirtd, loop_fs: str, fs_pool: tuple[str, Path]
) -> None:
    name, target = fs_pool
    # Mounted inside libvirtd's namespace only.
    assert mounted_source(libvirtd, target) == loop_fs
    assert str(target) not in Path("/proc/self/mountinfo").read_text()

    before = pool_info(libvirtd, name)
    assert 32 * MiB < int(before["Capacity"]) <= 64 * MiB
    libvirtd.virsh_xml(
        "vol-create",
        "<volume><name>full.img</name><capacity>8388608</capacity>"
        "<allocation>8388608</allocation></volume>",
        "--pool",
        name,
    )
    after = pool_info(libvirtd, name)
    assert int(after["Allocation"]) - int(before["Allocation"]) >= 8 * MiB
    # The blocks are really on the loop device, as seen from inside the namespace.
    du = libvirtd.nsenter("du", "--block-size=1", str(target / "full.img"))
    assert int(du.split()[0]) >= 8 * MiB

    libvirtd.virsh("pool-destroy", name)
    assert mounted_source(libvirtd, target) == ""


def test_fs_pool_mount_survives_restart_not_reboot(
    libvirtd: Libvirtd, loop_fs: str, fs_pool: tuple[str, Path]
) -> None:
    name, target = fs_pool
    libvirtd.kill(signal.SIGKILL)
    libvirtd.restart()
    # As on a real host: the mount stays, and libvirtd finds the pool active again.
    assert mounted_source(libvirtd, target) == loop_fs
    assert pool_info(libvirtd, name)["State"] == "running"

    libvirtd.reboot()
    assert mounted_source(libvirtd, target) == ""
    assert pool_info(libvirtd, name)["State"] == "inactive"


def test_kill_and_restart_keeps_defined_pools(libvirtd: Libvirtd, dir_pool: str) -> None:
    old_pid = libvirtd.pid
    try:
        libvirtd.kill(signal.SIGKILL)
        assert not libvirtd.running
        with pytest.raises(CommandError):
            libvirtd.virsh("pool-list", timeout=5)
    finally:
        libvirtd.restart()
    assert libvirtd.pid != old_pid
    assert libvirtd.start_seconds is not None
    assert libvirtd.start_seconds < 5
    assert dir_pool in libvirtd.virsh("pool-list", "--all", "--name").split()
    # libvirtd marks a defined dir pool active at start when its directory exists.
    assert pool_info(libvirtd, dir_pool)["State"] == "running"


def test_freeze_blocks_calls_until_thaw(libvirtd: Libvirtd) -> None:
    libvirtd.freeze()
    try:
        assert libvirtd.frozen
        with pytest.raises(subprocess.TimeoutExpired):
            libvirtd.virsh("pool-list", timeout=0.5)
    finally:
        libvirtd.thaw()
    assert not libvirtd.frozen
    libvirtd.virsh("pool-list")


# In a child process: registering an event implementation is once per process and would clash
# with the daemon code under test in this one.
KEEPALIVE_CLIENT = textwrap.dedent(
    """
    import sys, threading, time, libvirt
    libvirt.registerErrorHandler(lambda *a: None, None)
    libvirt.virEventRegisterDefaultImpl()
    threading.Thread(target=lambda: [libvirt.virEventRunDefaultImpl() for _ in iter(int, 1)],
                     daemon=True).start()
    conn = libvirt.open(sys.argv[1])
    closed = threading.Event()
    reason = []
    conn.registerCloseCallback(lambda c, r, o: (reason.append(r), closed.set()), None)
    print(conn.setKeepAlive(1, 2), flush=True)
    sys.stdin.readline()  # the parent froze libvirtd
    began = time.monotonic()
    closed.wait(15)
    print(reason[0] if reason else -1, round(time.monotonic() - began, 2), flush=True)
    """
)


def test_keepalive_notices_a_frozen_daemon(libvirtd: Libvirtd) -> None:
    client = subprocess.Popen(
        [sys.executable, "-c", KEEPALIVE_CLIENT, libvirtd.uri],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert client.stdin is not None
    assert client.stdout is not None
    try:
        assert client.stdout.readline().strip() == "0"  # setKeepAlive succeeded
        libvirtd.freeze()
        client.stdin.write("go\n")
        client.stdin.flush()
        reason, seconds = client.stdout.readline().split()
    finally:
        if libvirtd.running:
            libvirtd.thaw()
        client.kill()
        client.wait()
    assert int(reason) == libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE
    assert 1 < float(seconds) < 8


# Run by the chroot test below, inside the chroot: start a private libvirtd, which reads its
# config from /tmp, and look at that from inside its namespace.
IN_CHROOT = """
import os, sys
os.chdir(sys.argv[1])
sys.path.insert(0, sys.argv[1])
from tests.harness.libvirtd import Libvirtd
with Libvirtd() as daemon:
    daemon.virsh("pool-list", "--all")
    daemon.nsenter("test", "-e", str(daemon.config_path))
    print("ok", daemon.nsenter("pwd").strip())
"""


def test_runs_inside_a_chroot(tmp_path: Path) -> None:
    """In a chroot or container root, the namespace's root is not the caller's: libvirtd and
    `nsenter` must still see the caller's files (here: the chroot's own /tmp, a tmpfs)."""
    problem = prerequisites_problem()
    if problem:
        unavailable(problem)
    root = tmp_path / "root"
    root.mkdir()
    # The chroot is / itself with a tmpfs of its own on /tmp, in a mount namespace that vanishes
    # with the process: only where it looks for the files in /tmp tells the two roots apart. A
    # checkout or venv that lives in /tmp (a CI clone there) is bound into that tmpfs, where the
    # chroot finds it at the same path.
    script = (
        'mount --rbind / "$1" && mount -t tmpfs tmpfs "$1/tmp" && '
        'for d in $KEEP; do mkdir -p "$1$d" && mount --bind "$d" "$1$d" || exit 1; done && '
        'exec chroot "$@"'
    )
    tmp = Path("/tmp")
    keep = {str(d) for d in (REPO, Path(sys.prefix).resolve()) if d.is_relative_to(tmp)}
    chroot = [sys.executable, "-c", IN_CHROOT, str(REPO)]
    proc = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", str(root), *chroot],
        env={**os.environ, "KEEP": " ".join(sorted(keep))},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["ok", str(REPO)]
