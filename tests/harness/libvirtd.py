"""A private, real libvirtd for integration tests and benchmarks.

libvirtd in system mode always uses /etc/libvirt, /run/libvirt, /var/lib/libvirt and
/var/cache/libvirt (and /var/log/libvirt for guest logs). `Libvirtd` runs it in a private mount
namespace with each of those bind-mounted from a temporary directory, so the host's libvirt state
is never read or written and several daemons can run side by side.

The namespace is held by its own process (`sleep infinity`) and libvirtd is started into it with
`nsenter`, so, as on a real host, the mounts of `fs` pools outlive a libvirtd restart or kill;
`reboot()` drops them. Everything here is plain stdlib so benchmarks can use it without pytest:

    with Libvirtd() as daemon:
        daemon.virsh("pool-list", "--all")

Needs root, `unshare`, `nsenter`, `mount`, `libvirtd` and `virsh`.
"""

import contextlib
import os
import pwd
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.harness.commands import CommandError, run, which
from tests.harness.leftovers import LEFTOVERS

START_TIMEOUT = 20.0

# Directory inside the temporary directory -> the system path it replaces in the namespace.
PRIVATE_DIRS = {
    "etc": "/etc/libvirt",
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "cache": "/var/cache/libvirt",
    "log": "/var/log/libvirt",
}

# Runs as `sh -c SCRIPT sh T SRC:DST... -- sleep infinity` inside `unshare -m`, says "ready" once
# the mounts are in place and execs the holder. A mount point that does not exist on the host
# (often /run/libvirt) is made on an overlay of its parent whose upper layer lives on a
# namespace-private tmpfs: mkdir on the host would change the host. `mount -n` keeps libmount from
# creating /run/mount/utab on the host.
_NAMESPACE_SCRIPT = r"""
set -eu
T=$1; shift
mount -n --make-rprivate /
mount -n -t tmpfs -o mode=0700,size=1m poolwatch-overlays "$T/ovl"
n=0
while [ "$1" != "--" ]; do
    src=$T/${1%%:*}; dst=${1#*:}; shift
    if [ ! -d "$dst" ]; then
        parent=$(dirname "$dst"); n=$((n + 1))
        mkdir "$T/ovl/upper$n" "$T/ovl/work$n"
        mount -n -t overlay overlay \
            -o "lowerdir=$parent,upperdir=$T/ovl/upper$n,workdir=$T/ovl/work$n" "$parent"
        mkdir "$dst"
    fi
    mount -n --bind "$src" "$dst"
done
shift
echo ready
exec "$@"
"""

_CONFIG = """\
unix_sock_dir = "{sock}"
auth_unix_rw = "none"
auth_unix_ro = "none"
listen_tcp = 0
listen_tls = 0
log_outputs = "3:file:{log}"
"""


class LibvirtdError(RuntimeError):
    """libvirtd could not be started or is not running."""


def in_mount_namespace(pid: int) -> list[str]:
    """The argv prefix that runs a command in the mount namespace of process `pid`.

    Entering a mount namespace moves root and working directory to the namespace's root, which
    in a chroot or container is not ours: --root and --wd take the process's own instead (the
    holder's, inherited from us), so paths mean what they mean to the caller.
    """
    return ["nsenter", "-t", str(pid), "-m", "--root", "--wd", "--"]


def prerequisites_problem() -> str | None:
    """Why a private libvirtd cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "a private libvirtd needs root (mount namespaces, bind mounts)"
    missing = [t for t in ("libvirtd", "virsh", "unshare", "nsenter", "mount") if not which(t)]
    if missing:
        return f"missing tools: {', '.join(missing)} (run scripts/bootstrap.sh)"
    return ensure_qemu_user()


def ensure_qemu_user() -> str | None:
    """Create the user `libvirt-qemu` (libvirtd's QEMU driver insists); return a problem or None."""
    try:
        pwd.getpwnam("libvirt-qemu")
    except KeyError:
        try:
            run(["useradd", "-r", "-s", "/usr/sbin/nologin", "libvirt-qemu"])
        except (OSError, CommandError) as exc:
            return f"user libvirt-qemu is missing and could not be created: {exc}"
    return None


def snapshot_host_dirs() -> dict[str, list[tuple[str, int, int]] | None]:
    """(relative path, mode, mtime_ns) of all under the host's libvirt dirs; None if absent."""
    snapshot: dict[str, list[tuple[str, int, int]] | None] = {}
    for path in PRIVATE_DIRS.values():
        if not os.path.isdir(path):
            snapshot[path] = None
            continue
        entries = []
        for root, dirs, files in os.walk(path):
            for name in [".", *dirs, *files]:
                full = os.path.join(root, name)
                st = os.lstat(full)
                entries.append((os.path.relpath(full, path), st.st_mode, st.st_mtime_ns))
        snapshot[path] = sorted(entries)
    return snapshot


class Libvirtd:
    """One private libvirtd: start, stop, kill, restart, freeze and talk to it.

    State lives in `tmpdir` and survives `restart()` and `reboot()`, so persistent pools stay
    defined and the socket paths (hence `uri` and `ro_uri`) never change.
    """

    def __init__(
        self,
        tmpdir: str | os.PathLike[str] | None = None,
        *,
        start_timeout: float = START_TIMEOUT,
        qemu_conf: str | None = None,
    ) -> None:
        """``qemu_conf``: the QEMU driver's qemu.conf (its /etc/libvirt/qemu.conf), for tests
        that run real guests; None leaves the driver's defaults."""
        self.qemu_conf = qemu_conf
        # /tmp rather than $TMPDIR: a unix socket path must stay under 108 bytes.
        self._owns_tmpdir = tmpdir is None
        self.tmpdir = Path(tmpdir or tempfile.mkdtemp(prefix="poolwatch-libvirtd-", dir="/tmp"))
        self.start_timeout = start_timeout
        self.sock_dir = self.tmpdir / "sock"
        self.socket = self.sock_dir / "libvirt-sock"
        self.ro_socket = self.sock_dir / "libvirt-sock-ro"
        self.uri = f"qemu:///system?socket={self.socket}"
        self.ro_uri = f"qemu:///system?socket={self.ro_socket}"
        self.config_path = self.tmpdir / "libvirtd.conf"
        self.log_path = self.tmpdir / "libvirtd.log"
        self.output_path = self.tmpdir / "libvirtd.out"
        self.pid_file = self.tmpdir / "libvirtd.pid"
        self.start_seconds: float | None = None  # how long the last start took
        self.host_snapshot: dict[str, list[tuple[str, int, int]] | None] | None = None
        self._proc: subprocess.Popen[bytes] | None = None  # libvirtd
        self._holder: subprocess.Popen[bytes] | None = None  # keeps the mount namespace alive
        self._xml_count = 0
        if len(str(self.ro_socket)) > 100:
            raise LibvirtdError(f"socket path too long for a unix socket: {self.ro_socket}")

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        """Start libvirtd and wait until it answers; raise `LibvirtdError` with its log if not."""
        if self.running:
            raise LibvirtdError(f"libvirtd is already running as pid {self.pid}")
        self._reap()
        problem = prerequisites_problem()
        if problem:
            raise LibvirtdError(problem)
        if self.host_snapshot is None:
            self.host_snapshot = snapshot_host_dirs()
        for sub in [*PRIVATE_DIRS, "sock", "ovl", "xml"]:
            (self.tmpdir / sub).mkdir(mode=0o755, exist_ok=True)
        # Left behind by a killed daemon; they would make the readiness check pass too early.
        for stale in [*self.sock_dir.iterdir(), self.pid_file]:
            stale.unlink(missing_ok=True)
        self.config_path.write_text(_CONFIG.format(sock=self.sock_dir, log=self.log_path))
        if self.qemu_conf is not None:
            (self.tmpdir / "etc" / "qemu.conf").write_text(self.qemu_conf)

        began = time.monotonic()
        deadline = began + self.start_timeout
        LEFTOVERS.add(self, rank=0)
        try:
            if not self.namespace_alive:
                self._start_namespace(deadline)
            # nsenter without --fork execs, so the pid we started is libvirtd's own.
            argv = [*in_mount_namespace(self.namespace_pid), *_pdeathsig()]
            argv += [which("libvirtd") or "libvirtd", "--config", str(self.config_path)]
            argv += ["--pid-file", str(self.pid_file)]
            with self.output_path.open("ab") as out:
                self._proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
                )
            self._wait_ready(deadline)
        except BaseException:
            self.kill(signal.SIGKILL)
            raise
        self.start_seconds = time.monotonic() - began
        return self

    def _start_namespace(self, deadline: float) -> None:
        # No --fork: unshare execs sh, which execs the holder, all under one pid.
        argv = ["unshare", "-m", "--propagation", "private", *_pdeathsig()]
        argv += ["sh", "-c", _NAMESPACE_SCRIPT, "sh", str(self.tmpdir)]
        argv += [f"{src}:{dst}" for src, dst in PRIVATE_DIRS.items()]
        argv += ["--", "sleep", "infinity"]
        with self.output_path.open("ab") as out:
            self._holder = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=out
            )
        assert self._holder.stdout is not None
        readable, _, _ = select.select([self._holder.stdout], [], [], deadline - time.monotonic())
        if not readable or self._holder.stdout.readline() != b"ready\n":
            raise LibvirtdError(
                "could not set up the private mount namespace"
                + self._cause(any_line=True)
                + self._diagnostics()
            )

    def _wait_ready(self, deadline: float) -> None:
        assert self._proc is not None
        while True:
            if self._proc.poll() is not None:
                raise LibvirtdError(
                    f"libvirtd exited with status {self._proc.returncode} while starting"
                    + self._cause()
                    + self._diagnostics()
                )
            if self.socket.exists() and self.ro_socket.exists():
                try:
                    # Goes through the storage driver, which is what the tests talk to.
                    self.virsh("pool-list", "--all", timeout=max(deadline - time.monotonic(), 1))
                    break
                except (CommandError, subprocess.TimeoutExpired):
                    pass
            if time.monotonic() > deadline:
                raise LibvirtdError(
                    f"libvirtd did not answer on {self.socket} within {self.start_timeout:g} s"
                    + self._cause()
                    + self._diagnostics()
                )
            time.sleep(0.02)
        pid_file = int(self.pid_file.read_text().strip())
        if pid_file != self._proc.pid:
            raise LibvirtdError(f"pid file says {pid_file}, but we started {self._proc.pid}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM libvirtd (thawing it if frozen) and wait; SIGKILL after `timeout` seconds."""
        if not self.running:
            self._reap()
            return
        os.kill(self.pid, signal.SIGTERM)
        os.kill(self.pid, signal.SIGCONT)
        assert self._proc is not None
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill(signal.SIGKILL)
        self._reap()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to libvirtd's pid; for SIGKILL also wait until it is gone."""
        if not self.running:
            return
        assert self._proc is not None
        os.kill(self._proc.pid, sig)
        if sig == signal.SIGKILL:
            self._proc.wait(10)

    def restart(self) -> None:
        """Stop libvirtd if it still runs, then start it again on the same state and socket."""
        self.stop()
        self.start()

    def reboot(self) -> None:
        """Like a host reboot: pool mounts and /run/libvirt are gone, so autostart runs again."""
        self.stop()
        self._stop_namespace()
        shutil.rmtree(self.tmpdir / "run")
        self.start()

    def freeze(self) -> None:
        """SIGSTOP libvirtd and wait until every thread is stopped."""
        os.kill(self.pid, signal.SIGSTOP)
        self._wait_for(lambda: self.frozen, "libvirtd to stop")

    def thaw(self) -> None:
        """SIGCONT libvirtd and wait until it runs again."""
        os.kill(self.pid, signal.SIGCONT)
        self._wait_for(lambda: not self.frozen, "libvirtd to continue")

    def close(self, *, remove_tmpdir: bool = True) -> None:
        """Stop libvirtd and its namespace; remove the temporary directory if this made it."""
        try:
            self.stop()
            self._stop_namespace()
        finally:
            LEFTOVERS.discard(self)
            if remove_tmpdir and self._owns_tmpdir:
                shutil.rmtree(self.tmpdir, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- state -----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while the libvirtd process exists (also when frozen)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        """libvirtd's own pid (checked against its --pid-file at start)."""
        if not self.running:
            raise LibvirtdError("libvirtd is not running")
        assert self._proc is not None
        return self._proc.pid

    @property
    def namespace_alive(self) -> bool:
        return self._holder is not None and self._holder.poll() is None

    @property
    def namespace_pid(self) -> int:
        """A process in libvirtd's mount namespace that outlives libvirtd restarts."""
        if self._holder is None or not self.namespace_alive:
            raise LibvirtdError("the private mount namespace is gone")
        return self._holder.pid

    @property
    def frozen(self) -> bool:
        """True when every libvirtd thread is stopped (SIGSTOP)."""
        states = []
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError):  # a thread that just exited
                # Field 3 of stat, after the parenthesised command name.
                states.append((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
        return bool(states) and all(state in "Tt" for state in states)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of libvirtd's log and of its stdout/stderr."""
        parts = []
        for path in (self.log_path, self.output_path):
            with contextlib.suppress(FileNotFoundError):
                text = "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
                parts.append(f"--- {path} ---\n{text}")
        return "\n".join(parts)

    # -- talking to it ---------------------------------------------------------------------

    def virsh(
        self, *args: str, readonly: bool = False, timeout: float = 30.0, check: bool = True
    ) -> str:
        """`virsh -c URI ARGS...` (`-r` on the read-only socket); stdout, or `CommandError`."""
        conn = ["-r", "-c", self.ro_uri] if readonly else ["-c", self.uri]
        return run(["virsh", *conn, *args], timeout=timeout, check=check)

    def virsh_xml(self, command: str, xml: str, *args: str, timeout: float = 30.0) -> str:
        """Run a virsh command that reads XML from `--file`, e.g. pool-define or vol-create."""
        self._xml_count += 1
        path = self.tmpdir / "xml" / f"{self._xml_count}.xml"
        path.write_text(xml)
        return self.virsh(command, *args, "--file", str(path), timeout=timeout)

    def nsenter(self, *argv: str, timeout: float = 30.0, check: bool = True) -> str:
        """Run argv in libvirtd's mount namespace (sees pool mounts, also while it is down)."""
        argv_ns = [*in_mount_namespace(self.namespace_pid), *argv]
        return run(argv_ns, timeout=timeout, check=check)

    def cleanup_pools(self) -> None:
        """Stop and undefine every pool, so one test's pools do not leak into the next."""
        for name in self.virsh("pool-list", "--all", "--name").split():
            self.virsh("pool-destroy", name, check=False)
            self.virsh("pool-undefine", name, check=False)

    # -- internals -------------------------------------------------------------------------

    def _reap(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            self._proc = None

    def _stop_namespace(self) -> None:
        """Kill the holder: the namespace and every mount in it (fs pools, loop devices) go away."""
        if self._holder is None:
            return
        if self._holder.poll() is None:
            self._holder.kill()
            self._holder.wait(10)
        if self._holder.stdout is not None:
            self._holder.stdout.close()
        self._holder = None

    def _wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise LibvirtdError(f"timed out waiting for {what}")
            time.sleep(0.005)

    def _cause(self, *, any_line: bool = False) -> str:
        """ ": " and the last error libvirtd logged (with `any_line`, the last line of output).

        It goes on the message's first line: pytest's skip summary shows no more than that.
        """
        for path in (self.output_path, self.log_path):
            with contextlib.suppress(FileNotFoundError):
                lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
                # "2026-01-01 00:00:00.000+0000: 4359: error : main:918 : Can't load ..."
                errors = [
                    line[line.index(" error : ") + 1 :] for line in lines if " error : " in line
                ]
                if errors:
                    return f": {errors[-1]}"
                if any_line and any(lines):
                    return f": {[line for line in lines if line][-1]}"
        return ""

    def _diagnostics(self) -> str:
        return f"\ntmpdir: {self.tmpdir}\n{self.log_tail()}"

    def __repr__(self) -> str:
        state = f"pid {self._proc.pid}" if self.running and self._proc else "stopped"
        return f"<Libvirtd {state} {self.tmpdir}>"


def _pdeathsig() -> list[str]:
    """Last resort if the test process is SIGKILLed and neither finalizers nor atexit run."""
    # Only from the main thread: the signal fires when the *thread* that forked exits.
    if threading.current_thread() is threading.main_thread() and which("setpriv"):
        return ["setpriv", "--pdeathsig", "KILL"]
    return []
