"""Run the real Linux-HA Heartbeat 3.0.6 daemon (Debian package ``heartbeat``) as a test peer.

Each instance runs inside a network namespace (see :mod:`tests.support.netns`) and inside its
own mount, UTS and PID namespaces::

    ip netns exec <ns> unshare --mount --uts --pid --fork --kill-child --mount-proc -- sh -c SETUP

SETUP bind-mounts the instance's private copies over ``/etc/ha.d``, ``/var/lib/heartbeat`` and
``/var/log``, mounts a fresh tmpfs on ``/run`` (= ``/var/run``, ``/var/lock``), sets the hostname
to the node name, and execs a tiny init (PID 1 of the PID namespace) that starts
``heartbeat -f`` and reaps orphans. Killing that init with SIGKILL ends every process of the
instance and only those; the private mounts disappear with the mount namespace. Nothing is
mounted on the host. See REALHEARTBEAT.md for what the daemon needs.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

from tests.support import hosttools
from tests.support.netns import (
    PREFIX,
    NetnsError,
    new_id,
    register_cleanup,
    unregister_cleanup,
    wait_until,
)

__all__ = [
    "HEARTBEAT_BIN",
    "HeartbeatError",
    "NetnsError",
    "RealHeartbeat",
    "SerialNullModem",
    "authkeys_text",
    "ha_cf_text",
    "heartbeat_available",
    "start",
    "start_all",
]

HEARTBEAT_BIN = Path("/usr/libexec/heartbeat/heartbeat")
CL_STATUS = "/usr/bin/cl_status"
HB_SHARE = Path("/usr/share/heartbeat")
LOG_IN_NS = "/var/log/ha-log"

# PID 1 of the instance's PID namespace: start heartbeat, reap everything, never exit by itself
# (the harness ends it with SIGKILL, which ends the whole PID namespace).
_INIT_PY = r"""
import os, sys, time
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
while True:
    try:
        os.wait()
    except ChildProcessError:
        time.sleep(0.5)
"""

_SETUP_SH = r"""
set -e
D="$1"; NODE="$2"; shift 2
mount --bind "$D/etc/ha.d" /etc/ha.d
mount --bind "$D/var/lib/heartbeat" /var/lib/heartbeat
mount --bind "$D/var/log" /var/log
mount -t tmpfs -o mode=0755,size=16m hacrun /run
mkdir -p /run/lock /run/heartbeat/ccm /run/heartbeat/crm /run/heartbeat/dopd /run/crm \
    /run/resource-agents
chmod 1777 /run/lock
chown hacluster:haclient /run/heartbeat /run/heartbeat/ccm /run/heartbeat/crm \
    /run/heartbeat/dopd /run/crm
chmod 0750 /run/heartbeat /run/heartbeat/ccm /run/heartbeat/crm /run/heartbeat/dopd /run/crm
hostname "$NODE"
ulimit -l unlimited 2>/dev/null || true
exec "$@"
"""


class HeartbeatError(RuntimeError):
    """The real daemon failed to start or to do what was asked."""


def heartbeat_available() -> str | None:
    """None if the real daemon can be run here, else why not (for pytest skips)."""
    if os.geteuid() != 0:
        return "needs root"
    gone = hosttools.unavailable(str(HEARTBEAT_BIN), CL_STATUS, "unshare", "nsenter", "mount", "ip", "sh")
    if gone:
        return gone
    try:
        import pwd

        pwd.getpwnam("hacluster")
    except KeyError:
        return "user hacluster missing"
    return None


# --------------------------------------------------------------------------------------------
# config text helpers


def ha_cf_text(
    *,
    nodes: Sequence[str] = ("hb1", "hb2"),
    media: Sequence[str],
    keepalive: str = "1",
    deadtime: str = "5",
    warntime: str | None = None,
    initdead: str = "10",
    udpport: int | None = None,
    baud: int | None = None,
    auto_failback: str = "on",
    debug: int = 0,
    realtime: bool = True,
    extra: Iterable[str] = (),
) -> str:
    """An ha.cf. ``media`` are full lines, e.g. ``"ucast eth0 192.0.2.12"``, ``"bcast eth0"``,
    ``"serial /dev/ttyHB0"``. ``udpport``/``baud`` are written before the media lines."""
    lines = [
        f"logfile {LOG_IN_NS}",
        "logfacility none",
        "use_logd no",
    ]
    if debug:
        lines += [f"debug {debug}", "debugfile /var/log/ha-debug"]
    if udpport is not None:
        lines.append(f"udpport {udpport}")
    if baud is not None:
        lines.append(f"baud {baud}")
    lines.append(f"keepalive {keepalive}")
    lines.append(f"deadtime {deadtime}")
    if warntime is not None:
        lines.append(f"warntime {warntime}")
    lines.append(f"initdead {initdead}")
    lines += list(media)
    lines.append(f"auto_failback {auto_failback}")
    if not realtime:
        lines.append("realtime off")
    lines += list(extra)
    lines.append("node " + " ".join(nodes))
    return "\n".join(lines) + "\n"


def authkeys_text(method: Literal["crc", "md5", "sha1"] = "sha1", key: str = "", index: int = 1) -> str:
    """An authkeys file with one entry, used for signing."""
    if method != "crc" and not key:
        raise ValueError(f"{method} needs a key")
    entry = f"{index} {method}" + (f" {key}" if method != "crc" else "")
    return f"auth {index}\n{entry}\n"


# --------------------------------------------------------------------------------------------
# /proc helpers


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _pidns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def _alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        st = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return st.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _pids_in_pidns(ns_link: str) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _pidns(int(entry)) == ns_link:
            out.append(int(entry))
    return sorted(out)


# --------------------------------------------------------------------------------------------


class RealHeartbeat:
    """One real heartbeat daemon with private config and state, in network namespace ``ns``.

    The instance directory (``self.dir``) holds ``etc/ha.d``, ``var/lib/heartbeat`` and
    ``var/log``; it survives stop()/start() (so the generation number grows across restarts,
    as with a real node) and is removed by close().
    """

    def __init__(
        self,
        ns: str,
        node_name: str,
        ha_cf: str,
        authkeys: str,
        haresources: str = "",
        resource_scripts: Mapping[str, str] | None = None,
        *,
        extra_files: Mapping[str, str] | None = None,
    ) -> None:
        """``resource_scripts`` maps a name to script text, installed executable as
        /etc/ha.d/resource.d/<name>; ``extra_files`` maps an absolute path under /etc/ha.d
        or /var/lib/heartbeat to text."""
        self.ns = ns
        self.node_name = node_name
        # named after the network namespace when it is one of ours, so that cleanup_stale()
        # finds the directory of a run that died without cleaning up
        base = ns if ns.startswith(PREFIX) else new_id()
        self.dir = Path(tempfile.mkdtemp(prefix=f"{base}-hb-{node_name}-"))
        self._popen: subprocess.Popen[bytes] | None = None
        self._init_pid: int | None = None
        self._pidfd: int | None = None
        self._pidns: str | None = None
        self._token = register_cleanup(self.close)
        self._closed = False
        self.start_offset = 0
        """Log length when start() was last called (``since`` for wait_for_log)."""
        try:
            self._populate(ha_cf, authkeys, haresources, resource_scripts or {}, extra_files or {})
        except BaseException:
            self.close()
            raise

    # -- files ----------------------------------------------------------------------------

    @property
    def etc(self) -> Path:
        return self.dir / "etc/ha.d"

    @property
    def var_lib(self) -> Path:
        return self.dir / "var/lib/heartbeat"

    @property
    def log_path(self) -> Path:
        return self.dir / "var/log/ha-log"

    @property
    def debug_log_path(self) -> Path:
        return self.dir / "var/log/ha-debug"

    @property
    def console_path(self) -> Path:
        """stdout/stderr of heartbeat -f and of the setup script."""
        return self.dir / "console.log"

    def _populate(
        self,
        ha_cf: str,
        authkeys: str,
        haresources: str,
        scripts: Mapping[str, str],
        extra_files: Mapping[str, str],
    ) -> None:
        m = re.search(r"^\s*logfile\s+(\S+)", ha_cf, re.M)
        if m is None:
            ha_cf = f"logfile {LOG_IN_NS}\nlogfacility none\n" + ha_cf
        elif m.group(1) != LOG_IN_NS:
            raise ValueError(f"ha.cf logfile must be {LOG_IN_NS} (the harness reads it)")
        shutil.copytree("/etc/ha.d", self.etc, symlinks=True)
        # skeleton of /var/lib/heartbeat: directories only, same owners and modes
        src_root = Path("/var/lib/heartbeat")
        self.var_lib.mkdir(parents=True)
        _copy_meta(src_root, self.var_lib)
        for dirpath, dirnames, _ in os.walk(src_root):
            for d in dirnames:
                src = Path(dirpath) / d
                dst = self.var_lib / src.relative_to(src_root)
                dst.mkdir()
                _copy_meta(src, dst)
        (self.dir / "var/log").mkdir(parents=True)
        self.write_config(ha_cf=ha_cf, authkeys=authkeys, haresources=haresources)
        for name, text in scripts.items():
            path = self.etc / "resource.d" / name
            path.write_text(text)
            path.chmod(0o755)
        for abspath, text in extra_files.items():
            p = Path(abspath)
            for base, local in (("/etc/ha.d", self.etc), ("/var/lib/heartbeat", self.var_lib)):
                if p.is_relative_to(base):
                    target = local / p.relative_to(base)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(text)
                    break
            else:
                raise ValueError(f"extra file {abspath} not under /etc/ha.d or /var/lib/heartbeat")

    def write_config(
        self, *, ha_cf: str | None = None, authkeys: str | None = None, haresources: str | None = None
    ) -> None:
        """Replace config files (takes effect on the next start())."""
        if ha_cf is not None:
            (self.etc / "ha.cf").write_text(ha_cf)
        if authkeys is not None:
            p = self.etc / "authkeys"
            p.write_text(authkeys)
            p.chmod(0o600)
        if haresources is not None:
            (self.etc / "haresources").write_text(haresources)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, *, wait_ready: bool = True, timeout: float = 20.0) -> RealHeartbeat:
        """Start the daemon. With ``wait_ready``, return once it logged that its local status
        is up (communication media running), or raise HeartbeatError with the log."""
        if self.running():
            raise HeartbeatError(f"{self.node_name} already running")
        self._reap()
        self.start_offset = self.log_size()
        console = open(self.console_path, "ab")  # noqa: SIM115 - inherited by the child
        argv = [
            "ip",
            "netns",
            "exec",
            self.ns,
            "unshare",
            "--mount",
            "--uts",
            "--pid",
            "--fork",
            "--kill-child",
            "--mount-proc",
            "--propagation",
            "private",
            "--",
            "/bin/sh",
            "-c",
            _SETUP_SH,
            "setup",
            str(self.dir),
            self.node_name,
            sys.executable,
            "-I",
            "-S",
            "-c",
            _INIT_PY,
            str(HEARTBEAT_BIN),
            "-f",
        ]
        try:
            self._popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            console.close()
        popen = self._popen
        try:

            def find_init() -> int | None:
                kids = _children(popen.pid)
                if kids:
                    return kids[0]
                if popen.poll() is not None:
                    raise HeartbeatError(f"{self.node_name}: setup failed:\n{self.console()}")
                return None

            self._init_pid = wait_until(
                find_init, 5.0, interval=0.005, message="unshare to fork the instance init"
            )
            self._pidfd = os.pidfd_open(self._init_pid)
            self._pidns = _pidns(self._init_pid)
            if wait_ready:
                self.wait_for_log(
                    r"Local status now set to: 'up'",
                    timeout,
                    since=self.start_offset,
                    check_alive=True,
                )
        except BaseException:
            self.kill(everything=True)
            raise
        return self

    def running(self) -> bool:
        """True while the heartbeat master process is alive."""
        pid = self.master_pid()
        return pid is not None and _alive(pid)

    @property
    def init_pid(self) -> int | None:
        """Host PID of the instance's init (PID 1 of its PID namespace)."""
        return self._init_pid

    def master_pid(self) -> int | None:
        """Host PID of ``heartbeat: master control process`` (the init's child)."""
        if self._init_pid is None or not _alive(self._init_pid):
            return None
        for child in _children(self._init_pid):
            if _comm(child) == "heartbeat":
                return child
        return None

    def pids(self) -> list[int]:
        """Host PIDs of every process of the instance except its init (heartbeat's processes,
        resource scripts and whatever they started)."""
        if self._pidns is None or self._init_pid is None or not _alive(self._init_pid):
            return []
        return [p for p in _pids_in_pidns(self._pidns) if p != self._init_pid and _alive(p)]

    def heartbeat_pids(self) -> list[int]:
        """Host PIDs of the heartbeat processes (master, FIFO reader, media readers/writers)."""
        return [p for p in self.pids() if _comm(p) == "heartbeat"]

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful shutdown: SIGTERM to the master (heartbeat releases its resources and sends
        ``shutdone``), wait up to ``timeout`` for it to exit, then SIGKILL everything left."""
        master = self.master_pid()
        if master is not None and self._pidfd is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(master, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                wait_until(
                    lambda: not _alive(master),
                    timeout,
                    interval=0.05,
                    message=f"{self.node_name} heartbeat to exit",
                )
        self.kill(everything=True)

    def kill(self, *, everything: bool = False) -> None:
        """SIGKILL, to emulate a crash.

        Default: kill only the heartbeat processes, so whatever the resource scripts started
        (and any address they added) stays, as after a real daemon crash; the instance's init
        keeps reaping. ``everything=True`` ends the whole PID namespace (and is what stop() and
        close() finally do).
        """
        if not everything:
            for pid in self.heartbeat_pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            wait_until(
                lambda: not self.heartbeat_pids(),
                10.0,
                interval=0.01,
                message=f"{self.node_name} heartbeat processes to die",
            )
            return
        if self._pidfd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
        self._reap()

    def _reap(self) -> None:
        if self._popen is not None:
            try:
                self._popen.wait(10.0)
            except subprocess.TimeoutExpired:
                self._popen.kill()
                self._popen.wait(5.0)
            self._popen = None
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        self._init_pid = None
        self._pidns = None

    def restart(self, *, wait_ready: bool = True, timeout: float = 20.0) -> RealHeartbeat:
        """stop() then start() with the same state (generation goes up by one)."""
        self.stop()
        return self.start(wait_ready=wait_ready, timeout=timeout)

    def freeze(self) -> None:
        """SIGSTOP every heartbeat process (a hung daemon); thaw() resumes."""
        for pid in self.heartbeat_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in self.heartbeat_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def close(self) -> None:
        """Kill everything and delete the instance directory."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self.kill(everything=True)
        shutil.rmtree(self.dir, ignore_errors=True)
        unregister_cleanup(self._token)

    def __enter__(self) -> RealHeartbeat:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"RealHeartbeat(node={self.node_name!r}, ns={self.ns!r}, "
            f"init_pid={self._init_pid}, dir={str(self.dir)!r})"
        )

    # -- inside the instance --------------------------------------------------------------

    def exec(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 30.0,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in the instance's network, mount, UTS and PID namespaces."""
        if self._init_pid is None or not _alive(self._init_pid):
            raise HeartbeatError(f"{self.node_name} is not running")
        full = ["nsenter", "-t", str(self._init_pid), "-n", "-m", "-u", "-p", "--", *argv]
        proc = subprocess.run(
            full,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            env=None if env is None else dict(env),
            check=False,
        )
        if check and proc.returncode != 0:
            raise HeartbeatError(
                f"{self.node_name}: {' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"
            )
        return proc

    def cl_status(self, *args: str, check: bool = True, timeout: float = 10.0) -> str:
        """``cl_status ARGS`` inside the instance; its stdout, stripped. With ``check=False``
        a failure, a timeout (frozen daemon) or a stopped instance give ""."""
        try:
            return self.exec([CL_STATUS, *args], check=check, timeout=timeout).stdout.strip()
        except subprocess.TimeoutExpired as exc:
            if check:
                raise HeartbeatError(f"{self.node_name}: cl_status {args} timed out") from exc
            return ""
        except HeartbeatError:
            if check:
                raise
            return ""

    def node_status(self, node: str) -> str:
        """``cl_status nodestatus NODE``: active, up, dead, ... ("" if cl_status failed)."""
        return self.cl_status("nodestatus", node, check=False)

    def rsc_status(self) -> str:
        """``cl_status rscstatus``: local, foreign, all, none, transition."""
        return self.cl_status("rscstatus", check=False)

    def hb_standby(self, which: str = "all") -> None:
        self.exec([str(HB_SHARE / "hb_standby"), which])

    def hb_takeover(self, which: str = "all") -> None:
        self.exec([str(HB_SHARE / "hb_takeover"), which])

    def wait_node_status(self, node: str, status: str, timeout: float = 20.0) -> None:
        wait_until(
            lambda: self.node_status(node) == status,
            timeout,
            interval=0.1,
            message=f"{self.node_name}: cl_status nodestatus {node} == {status}",
        )

    # -- logs -----------------------------------------------------------------------------

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_size(self) -> int:
        """Current log length in characters; pass it as ``since`` to wait for new lines."""
        return len(self.log())

    def console(self) -> str:
        try:
            return self.console_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(
        self,
        pattern: str | re.Pattern[str],
        timeout: float = 20.0,
        *,
        since: int = 0,
        check_alive: bool = False,
    ) -> re.Match[str]:
        """Wait until the log (from character offset ``since``) matches ``pattern``."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.log(), since)
            if m is not None:
                return m
            if check_alive and self._popen is not None and self._popen.poll() is not None:
                raise HeartbeatError(
                    f"{self.node_name} exited while waiting for {rx.pattern!r}\n"
                    f"--- console ---\n{self.console()}\n--- log ---\n{self.log()[-4000:]}"
                )
            if time.monotonic() >= deadline:
                raise HeartbeatError(
                    f"{self.node_name}: no log line matching {rx.pattern!r} in {timeout}s\n"
                    f"--- console ---\n{self.console()}\n--- log ---\n{self.log()[-4000:]}"
                )
            time.sleep(0.05)


def _copy_meta(src: Path, dst: Path) -> None:
    st = src.stat()
    os.chown(dst, st.st_uid, st.st_gid)
    dst.chmod(stat.S_IMODE(st.st_mode))


def start(
    ns: str,
    node_name: str,
    ha_cf: str,
    authkeys: str,
    haresources: str = "",
    resource_scripts: Mapping[str, str] | None = None,
    *,
    wait_ready: bool = True,
    timeout: float = 20.0,
) -> RealHeartbeat:
    """Create and start an instance; close() it (or use ``with``) when done."""
    hb = RealHeartbeat(ns, node_name, ha_cf, authkeys, haresources, resource_scripts)
    try:
        return hb.start(wait_ready=wait_ready, timeout=timeout)
    except BaseException:
        hb.close()
        raise


def start_all(instances: Sequence[RealHeartbeat], *, timeout: float = 20.0) -> None:
    """Start several instances at (nearly) the same time and wait until each is up."""
    for hb in instances:
        hb.start(wait_ready=False)
    for hb in instances:
        hb.wait_for_log(r"Local status now set to: 'up'", timeout, since=hb.start_offset, check_alive=True)


# --------------------------------------------------------------------------------------------
# serial medium: two pseudo-terminals joined by a relay thread (a null-modem cable with a tap)


class SerialNullModem:
    """Two ptys whose traffic a relay thread copies across, recording every byte.

    Give ``paths[0]`` to one daemon (``serial /dev/pts/N`` in ha.cf) and ``paths[1]`` to the
    other. ``cut(direction)`` drops the bytes flowing 0→1 (``"a_to_b"``), 1→0 (``"b_to_a"``)
    or both; ``restore()`` heals. ``chunks`` holds (monotonic time, direction 0|1, bytes,
    delivered) for every read; ``frames()`` reassembles the ``>>>``…``<<<`` frames. The slave
    ends stay open in this process so the masters never see EOF/EIO when a daemon restarts.
    """

    def __init__(self) -> None:
        import threading
        import tty

        self._masters: list[int] = []
        self._slaves: list[int] = []
        for _ in range(2):
            m, s = os.openpty()
            tty.setraw(s)
            os.set_blocking(m, False)
            self._masters.append(m)
            self._slaves.append(s)
        self.paths: tuple[str, str] = (os.ttyname(self._slaves[0]), os.ttyname(self._slaves[1]))
        self.chunks: list[tuple[float, int, bytes, bool]] = []
        self._cut = [False, False]
        self._stop_r, self._stop_w = os.pipe()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._relay, name="serial-null-modem", daemon=True)
        self._thread.start()
        self._token = register_cleanup(self.close)

    def _relay(self) -> None:
        import select

        fds = [*self._masters, self._stop_r]
        while True:
            ready, _, _ = select.select(fds, [], [])
            if self._stop_r in ready:
                return
            for direction, m in enumerate(self._masters):
                if m not in ready:
                    continue
                try:
                    data = os.read(m, 65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    continue
                delivered = not self._cut[direction]
                if delivered:
                    try:
                        os.write(self._masters[1 - direction], data)
                    except (BlockingIOError, OSError):
                        delivered = False
                with self._lock:
                    self.chunks.append((time.monotonic(), direction, data, delivered))

    def cut(self, direction: Literal["a_to_b", "b_to_a", "both"] = "both") -> None:
        if direction in ("a_to_b", "both"):
            self._cut[0] = True
        if direction in ("b_to_a", "both"):
            self._cut[1] = True

    def restore(self) -> None:
        self._cut = [False, False]

    def frames(self, *, delivered_only: bool = True) -> list[tuple[float, int, bytes]]:
        """(time of the chunk that completed it, direction, frame bytes from ``>>>\\n`` through
        ``<<<\\n``) for each complete frame, per direction in order; bytes outside frames are
        returned by :meth:`stray_bytes`."""
        out: list[tuple[float, int, bytes]] = []
        for direction in (0, 1):
            buf = b""
            for t, d, data, delivered in list(self.chunks):
                if d != direction or (delivered_only and not delivered):
                    continue
                buf += data
                while True:
                    start = buf.find(b">>>\n")
                    if start < 0:
                        break
                    end = buf.find(b"<<<\n", start)
                    if end < 0:
                        break
                    out.append((t, direction, buf[start : end + 4]))
                    buf = buf[end + 4 :]
        out.sort(key=lambda f: f[0])
        return out

    def stray_bytes(self) -> dict[int, bytes]:
        """Per direction: the bytes that were not part of any complete frame."""
        out: dict[int, bytes] = {}
        for direction in (0, 1):
            buf = b"".join(c[2] for c in self.chunks if c[1] == direction)
            stray = b""
            while True:
                start = buf.find(b">>>\n")
                end = buf.find(b"<<<\n", start) if start >= 0 else -1
                if start < 0 or end < 0:
                    stray += buf
                    break
                stray += buf[:start]
                buf = buf[end + 4 :]
            out[direction] = stray
        return out

    def close(self) -> None:
        if self._stop_w < 0:
            return
        os.write(self._stop_w, b"x")
        self._thread.join(5.0)
        for fd in (*self._masters, *self._slaves, self._stop_r, self._stop_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._stop_w = -1
        unregister_cleanup(self._token)

    def __enter__(self) -> SerialNullModem:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
