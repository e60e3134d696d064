"""A small virtual-machine lab: Debian guests under QEMU, for tests that need a whole machine.

What a network namespace cannot show (a kernel that resets itself, a clock that stops, a disk
that survives a power cut) needs a real kernel. This module builds a guest image from Debian
packages once, caches it, and boots throw-away guests from it:

* :func:`ensure_image` builds the image with ``mmdebstrap`` (kernel, systemd, udev, kmod,
  iproute2, procps, the QEMU guest agent) into ``/var/cache/hacluster/vmlab/<key>``, where
  ``<key>`` hashes everything the image is made from (the Debian suite, the package list, the
  files written into it, this module's build code and the host's apt sources). It builds into a
  temporary directory beside it and renames it into place, under a lock, so a half-built image
  is never used and two runs never build the same image at once.
* :func:`boot` starts one guest: a qcow2 overlay on the cached base image (the base is never
  written), the serial console logged to a file, a QMP socket (events such as the reset) and a
  guest-agent socket (commands), ``-no-reboot`` so that a guest reset makes QEMU exit, and no
  network device at all. Host directories can be shared read-only over 9p at chosen guest paths.
  Leaving the ``with`` block kills QEMU (by its PID) and removes the overlay, sockets and logs,
  also when the test failed; QEMU also dies with the process that started it.
* :meth:`VM.shell` runs a shell script in the guest with a timeout and returns its exit code and
  output (QEMU guest agent ``guest-exec``).

Acceleration is software emulation (TCG): on this kind of machine ``/dev/kvm`` exists but runs
stock kernels unusably slowly (shared/vm-lab.md). Measured on this kind of machine (2 cores): the
image builds in 75-90 s (once per recipe), a guest answers commands 26-27 s after QEMU starts.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import fcntl
import hashlib
import inspect
import json
import os
import queue
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support import hosttools

__all__ = [
    "CACHE_ROOT",
    "HOST_TOOLS",
    "VM",
    "Cable",
    "Image",
    "MirrorTrapError",
    "Nic",
    "Pool",
    "Recipe",
    "Result",
    "Share",
    "VMError",
    "boot",
    "cleanup_stale",
    "ensure_image",
    "image_key",
    "interpreter_share",
    "mirror_trap",
    "unavailable",
]

CACHE_ROOT = Path(os.environ.get("HACLUSTER_VMLAB_CACHE", "/var/cache/hacluster/vmlab"))
SUITE = "bookworm"
BASE_PACKAGES = (
    "linux-image-amd64",
    "systemd-sysv",
    "udev",
    "kmod",
    "iproute2",
    "procps",
    "qemu-guest-agent",
    # what the host's Python interpreter (shared into the guest read-only) and the agent's
    # dependencies load besides libc: _ssl/_hashlib, _ctypes, _sqlite3
    "libssl3",
    "libffi8",
    "libsqlite3-0",
)
# systemd units a test guest does not need: they only slow the boot down under emulation
MASKED_UNITS = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "systemd-logind.service",  # needs D-Bus, which the image does not have
    "getty@tty1.service",  # no display
    "systemd-journal-flush.service",  # the journal stays in /run
)
GUEST_FILES = {
    "etc/hostname": "vmlab\n",
    "etc/hosts": "127.0.0.1 localhost\n127.0.1.1 vmlab\n",
    "etc/fstab": "/dev/vda / ext4 rw,errors=remount-ro 0 1\n",
    "etc/systemd/journald.conf.d/vmlab.conf": "[Journal]\nStorage=volatile\n",
}
KERNEL_CMDLINE = "root=/dev/vda rw net.ifnames=0"  # and console=<the recipe's console>; eth0, eth1 as named


@dataclass(frozen=True)
class Recipe:
    """What one guest image is made of (all of it goes into the image's cache key)."""

    name: str
    packages: tuple[str, ...]
    files: tuple[tuple[str, str], ...] = ()  # (path in the guest, text) besides GUEST_FILES
    masked: tuple[str, ...] = ()  # systemd units masked besides MASKED_UNITS
    enabled: tuple[str, ...] = ()  # systemd units enabled at boot (their files come with them)
    binaries: tuple[tuple[str, Path], ...] = ()  # (path in the guest, host file), mode 0755
    # The kernel's console: "ttyS0" (the first serial port; a cable is then ttyS1), or "ttyS1"
    # (the second: /dev/ttyS0 is left to a heartbeat cable, as Heartbeat's examples name it).
    console: str = "ttyS0"
    free_mib: int = 384  # room left on the root file system (a sparse file: costs nothing unused)


BASE = Recipe("base", BASE_PACKAGES)
"""The small guest of the watchdog tests: the host's Python interpreter is shared into it."""
HOST_TOOLS = ("qemu-system-x86_64", "qemu-img", "mmdebstrap", "mkfs.ext4", "ip")
APT_OPTIONS = ('Acquire::Check-Valid-Until "false"', 'Acquire::Check-Date "false"')
APT_SOURCES = Path("/etc/apt/sources.list.d")
RUN_PREFIX = "hacluster-vm-"
QGA_PORT = "org.qemu.guest_agent.0"


class VMError(RuntimeError):
    """The VM lab could not build, boot or reach a guest; says what and shows the evidence."""


class MirrorTrapError(VMError):
    """The package mirror is routed into a lab interface (shared/vm-lab.md): a build would fail."""


# --------------------------------------------------------------------------------------------
# what the host needs


def unavailable() -> str | None:
    """None if this host can build and boot guests, else why not (for skips; CI fails on them)."""
    if os.geteuid() != 0:
        return "the VM lab needs root (mmdebstrap, the image cache under /var/cache)"
    return hosttools.unavailable(*HOST_TOOLS)


def _run(argv: Sequence[str], *, timeout: float = 60.0, what: str = "") -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise VMError(
            f"{what or argv[0]} failed (exit {proc.returncode}): {' '.join(argv)}\n"
            f"{(proc.stdout + proc.stderr).strip()[-3000:]}"
        )
    return proc.stdout


def _sources_text() -> str:
    files = sorted(APT_SOURCES.glob("*.sources")) + sorted(APT_SOURCES.glob("*.list"))
    if Path("/etc/apt/sources.list").is_file():
        files.insert(0, Path("/etc/apt/sources.list"))
    return "".join(f"# {f}\n{f.read_text()}" for f in files)


def _mirror_hosts() -> list[str]:
    hosts: set[str] = set()
    for line in _sources_text().splitlines():
        words = line.split()
        if line.startswith("URIs:"):
            uris = words[1:]
        elif words[:1] in (["deb"], ["deb-src"]):
            uris = [w for w in words[1:] if "://" in w][:1]
        else:
            continue
        for uri in uris:
            host = uri.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]
            hosts.add(host.split(":", 1)[0] if host.count(":") == 1 else host.strip("[]"))
    return sorted(hosts)


def _route_dev(out: str) -> str | None:
    words = out.split()
    return words[words.index("dev") + 1] if "dev" in words[:-1] else None


def mirror_trap() -> str | None:
    """None, or why a package download would go astray: an address the host resolves for its
    package mirror is routed through an interface other than the default route's, i.e. a lab
    left a range holding the mirror's address on this host (the trap of shared/vm-lab.md)."""
    default = _route_dev(_run(["ip", "-4", "route", "show", "default"]))
    if default is None:
        return None  # no default route: the mirror is reached some other way (a proxy); not ours
    for host in _mirror_hosts():
        try:
            infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
        except OSError:
            continue  # mmdebstrap will say it cannot resolve it
        for addr in sorted({str(i[4][0]) for i in infos}):
            via = _route_dev(_run(["ip", "-4", "route", "get", addr]))
            if via is not None and via != default:
                return (
                    f"the package mirror {host} ({addr}) is routed through {via}, not {default}: a lab "
                    f"left an address range on this host (ip -4 addr show dev {via}); remove it first"
                )
    return None


# --------------------------------------------------------------------------------------------
# the guest image


@dataclass(frozen=True)
class Image:
    """A built guest: a raw ext4 root file system (never written to) and the kernel booting it."""

    dir: Path
    disk: Path
    kernel: Path
    initrd: Path
    build_seconds: float  # how long building it took (when it was built, maybe by another run)
    console: str = "ttyS0"


def _recipe(recipe: Recipe) -> dict[str, Any]:
    files = dict(GUEST_FILES)
    files.update(recipe.files)
    return {
        "suite": SUITE,
        "packages": sorted(recipe.packages),
        "masked": sorted(MASKED_UNITS + recipe.masked),
        "enabled": sorted(recipe.enabled),
        "console": recipe.console,
        "free_mib": recipe.free_mib,
        "binaries": {guest: [str(host), _file_digest(host)] for guest, host in recipe.binaries},
        "files": files,
        "apt_options": APT_OPTIONS,
        "sources": _sources_text(),
        "build": inspect.getsource(_build_image),
    }


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def image_key(recipe: Recipe = BASE) -> str:
    """A hash of everything the image is made from."""
    return hashlib.sha256(json.dumps(_recipe(recipe), sort_keys=True).encode()).hexdigest()[:20]


def _image_at(d: Path) -> Image | None:
    try:
        meta = json.loads((d / "image.json").read_text())
    except (OSError, ValueError):
        return None
    return Image(
        d,
        d / "disk.raw",
        d / "vmlinuz",
        d / "initrd.img",
        float(meta["build_seconds"]),
        str(meta.get("console", "ttyS0")),
    )


def _build_image(work: Path, log: Path, recipe: dict[str, Any]) -> None:
    """mmdebstrap a root file system into `work`/rootfs, write the guest's files, copy its kernel
    out and pack it into `work`/disk.raw (ext4, no partition table)."""
    rootfs = work / "rootfs"
    rootfs.mkdir()
    aptopts = [f"--aptopt={o}" for o in APT_OPTIONS]
    sources = [str(p) for p in sorted(APT_SOURCES.glob("*.sources")) + sorted(APT_SOURCES.glob("*.list"))]
    with log.open("w") as out:
        proc = subprocess.run(
            [
                "mmdebstrap",
                "--variant=apt",
                f"--include={','.join(recipe['packages'])}",
                *aptopts,
                SUITE,
                str(rootfs),
                *sources,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=1800,
            check=False,
        )
    if proc.returncode != 0:
        raise VMError(f"mmdebstrap failed (exit {proc.returncode}); its log:\n{log.read_text()[-4000:]}")
    for rel, text in recipe["files"].items():
        (rootfs / rel).parent.mkdir(parents=True, exist_ok=True)
        (rootfs / rel).write_text(text)
    for rel, (host, _digest) in recipe["binaries"].items():
        (rootfs / rel.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(host, rootfs / rel.lstrip("/"))
        (rootfs / rel.lstrip("/")).chmod(0o755)
    for unit in recipe["masked"]:
        link = rootfs / "etc/systemd/system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    for unit in recipe["enabled"]:  # what `systemctl enable` does for a WantedBy=multi-user.target
        wants = rootfs / "etc/systemd/system/multi-user.target.wants"
        wants.mkdir(parents=True, exist_ok=True)
        (wants / unit).unlink(missing_ok=True)
        (wants / unit).symlink_to(f"/etc/systemd/system/{unit}")
    kernels = sorted((rootfs / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise VMError(f"expected one kernel in the image's /boot, found {[k.name for k in kernels]}")
    version = kernels[0].name.removeprefix("vmlinuz-")
    shutil.copyfile(kernels[0], work / "vmlinuz")
    shutil.copyfile(rootfs / "boot" / f"initrd.img-{version}", work / "initrd.img")
    used = sum(
        (Path(d) / f).lstat().st_size for d, _, files in os.walk(rootfs) for f in files
    )  # bytes in files; ext4 needs room for inodes, directories and the journal besides
    size_mib = used * 13 // 10 // 2**20 + int(recipe["free_mib"])
    _run(
        ["mkfs.ext4", "-q", "-F", "-L", "vmlab", "-d", str(rootfs), str(work / "disk.raw"), f"{size_mib}M"],
        timeout=600,
        what="mkfs.ext4",
    )
    shutil.rmtree(rootfs)
    (work / "image.json").write_text(json.dumps({"kernel": version, **recipe}, indent=1))


def _remove_tree(path: Path) -> None:
    """rm -rf, but never through a mount point: a build killed half-way may leave the host's /proc,
    /sys or /dev mounted in its root file system."""
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    inside = [m for m in mounts if m == str(path) or m.startswith(f"{path}/")]
    if inside:
        raise VMError(f"{path} has file systems mounted in it ({', '.join(inside)}): unmount them first")
    shutil.rmtree(path, ignore_errors=True)


def ensure_image(recipe: Recipe = BASE, cache_root: Path = CACHE_ROOT) -> Image:
    """The cached guest image, built first if there is none for the current recipe."""
    key = image_key(recipe)
    final = cache_root / key
    if (img := _image_at(final)) is not None:
        return img
    cache_root.mkdir(parents=True, exist_ok=True)
    with (cache_root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be building this very image
        if (img := _image_at(final)) is not None:
            return img
        if trap := mirror_trap():
            raise MirrorTrapError(f"cannot build the VM image: {trap}")
        for stale in cache_root.glob(".build-*"):  # builds hold the lock: these were killed
            if stale.is_dir():
                _remove_tree(stale)
        work = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=cache_root))
        try:
            t0 = time.monotonic()
            _build_image(work, cache_root / f".build-{key}.log", _recipe(recipe))
            meta = json.loads((work / "image.json").read_text())
            meta["build_seconds"] = round(time.monotonic() - t0, 1)
            meta["name"] = recipe.name
            (work / "image.json").write_text(json.dumps(meta, indent=1))
            work.chmod(0o755)
            work.rename(final)  # atomic: the image is whole or absent
        finally:
            if work.exists():
                _remove_tree(work)
        (cache_root / f".build-{key}.log").unlink(missing_ok=True)
        for old in cache_root.iterdir():  # this recipe's earlier images: replaced, 1-2 GB each
            try:
                name = json.loads((old / "image.json").read_text()).get("name")
            except (OSError, ValueError):
                continue
            if old != final and name == recipe.name:
                _remove_tree(old)
    img = _image_at(final)
    assert img is not None
    return img


# --------------------------------------------------------------------------------------------
# JSON over the guest's sockets


class _JsonSocket:
    """Newline-delimited JSON over a Unix socket (QMP and the guest agent speak it)."""

    def __init__(self, path: Path, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self.sock.connect(str(path))
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.buf = b""

    def send(self, obj: dict[str, Any], prefix: bytes = b"") -> None:
        self.sock.sendall(prefix + json.dumps(obj).encode() + b"\n")

    def recv(self, timeout: float | None) -> dict[str, Any]:
        """The next message; TimeoutError after `timeout` s, EOFError if the peer closed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError("no message")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                raise TimeoutError("no message") from None
            if not chunk:
                raise EOFError("the socket was closed")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        line = line.lstrip(b"\xff")  # guest-sync-delimited's marker
        if not line.strip():
            return self.recv(timeout)
        msg: dict[str, Any] = json.loads(line)
        return msg

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes a reader blocked in recv
        with contextlib.suppress(OSError):
            self.sock.close()


@dataclass(frozen=True)
class Event:
    at: float  # host time.monotonic() when it was read
    name: str
    data: dict[str, Any]


class _Qmp:
    """The QEMU Machine Protocol: commands, and every event QEMU sends, timestamped."""

    def __init__(self, path: Path, timeout: float) -> None:
        self.conn = _JsonSocket(path, timeout)
        greeting = self.conn.recv(timeout)
        if "QMP" not in greeting:
            raise VMError(f"not a QMP greeting: {greeting}")
        self.events: list[Event] = []
        self.replies: queue.Queue[dict[str, Any]] = queue.Queue()
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, name="qmp-reader", daemon=True)
        self.reader.start()
        self.command("qmp_capabilities")

    def _read(self) -> None:
        with contextlib.suppress(EOFError, OSError, ValueError):
            while True:
                msg = self.conn.recv(None)
                if "event" in msg:
                    self.events.append(Event(time.monotonic(), msg["event"], msg.get("data", {})))
                else:
                    self.replies.put(msg)

    def command(self, name: str, arguments: dict[str, Any] | None = None, timeout: float = 10.0) -> Any:
        with self.lock:
            self.conn.send({"execute": name, **({"arguments": arguments} if arguments else {})})
            try:
                reply = self.replies.get(timeout=timeout)
            except queue.Empty:
                raise TimeoutError(f"QMP {name}: no reply within {timeout:g}s") from None
        if "error" in reply:
            raise VMError(f"QMP {name}: {reply['error']}")
        return reply.get("return")

    def close(self) -> None:
        self.conn.close()


class _GuestAgent:
    """The QEMU guest agent (qemu-ga in the guest) over its virtio-serial port."""

    def __init__(self, path: Path, timeout: float) -> None:
        self.conn = _JsonSocket(path, timeout)
        self.synced = False

    def sync(self, timeout: float) -> None:
        """Until the agent answers a fresh guest-sync: requests sent before it ran (they wait in
        the port) and replies to abandoned requests are read and dropped."""
        ident = secrets.randbelow(2**31)
        self.conn.send({"execute": "guest-sync-delimited", "arguments": {"id": ident}}, prefix=b"\xff")
        deadline = time.monotonic() + timeout
        while True:
            msg = self.conn.recv(max(0.0, deadline - time.monotonic()))
            if msg.get("return") == ident:
                self.synced = True
                return

    def call(self, name: str, arguments: dict[str, Any] | None = None, timeout: float = 30.0) -> Any:
        try:
            if not self.synced:
                self.sync(timeout)
            self.conn.send({"execute": name, **({"arguments": arguments} if arguments else {})})
            reply = self.conn.recv(timeout)
        except TimeoutError:
            self.synced = False  # a late reply must not be taken for the next command's
            raise TimeoutError(f"guest agent {name}: no reply within {timeout:g}s") from None
        except (EOFError, OSError) as e:
            raise VMError(f"guest agent {name}: the connection is gone ({e}): QEMU exited?") from e
        if "error" in reply:
            raise VMError(f"guest agent {name}: {reply['error']}")
        return reply.get("return")

    def close(self) -> None:
        self.conn.close()


# --------------------------------------------------------------------------------------------
# a running guest


@dataclass(frozen=True)
class Share:
    """A host directory shared into the guest, read-only, over 9p."""

    host: Path
    guest: str
    tag: str


@dataclass(frozen=True)
class Nic:
    """A virtio network card on the host's tap device `tap` (made beforehand, in the namespace
    QEMU runs in, and put on a bridge there: see tests/support/vmnet.py)."""

    tap: str
    mac: str


@dataclass(frozen=True)
class Cable:
    """One end of a null-modem cable: the guest's serial port that is not its console (/dev/ttyS1,
    or /dev/ttyS0 with the console on ttyS1) on a unix socket
    shared with the other guest. The `server` end listens; the other connects, and connects again
    after the listening guest was powered off and on (a cable still plugged in)."""

    socket: Path
    server: bool


@dataclass(frozen=True)
class Result:
    rc: int  # the exit code, or minus the signal that killed it
    out: str
    err: str

    def __str__(self) -> str:
        return f"exit {self.rc}\nstdout: {self.out.strip()}\nstderr: {self.err.strip()}"


def interpreter_share(python: Path) -> Share:
    """The installation of the interpreter behind a virtualenv's `python` (a symlink to it), to be
    shared at the same path, so that the guest runs the very same interpreter and the venv's
    site-packages (the venv itself is shared with the repository)."""
    real = python.resolve()
    prefix = real.parent.parent
    if prefix in (Path("/usr"), Path("/usr/local"), Path("/")):
        raise VMError(
            f"{python} is {real}, the system's own interpreter: the VM lab shares the interpreter's "
            "installation into the guest and cannot share /usr; make the venv from a self-contained "
            "Python (this kind of machine's /root/.pyenv)"
        )
    return Share(prefix, str(prefix), "python")


def die_with_parent() -> None:
    """In the QEMU child before exec: SIGKILL it when the test process dies (even by SIGKILL)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class VM:
    """One running guest (from :func:`boot`)."""

    name: str
    run_dir: Path
    proc: subprocess.Popen[bytes]
    qmp: _Qmp
    console: Path
    qemu_log: Path
    shares: Sequence[Share]
    started: float
    ready_at: float | None = None
    exited_at: float | None = None  # host time.monotonic() when QEMU's process was reaped
    _agent: _GuestAgent | None = None
    _waiter: threading.Thread | None = field(default=None, repr=False)

    # -- state -----------------------------------------------------------------------------------
    def _wait_process(self) -> None:
        self.proc.wait()
        self.exited_at = time.monotonic()

    def running(self) -> bool:
        return self.exited_at is None

    def wait_exit(self, timeout: float) -> float | None:
        """Wait until QEMU exits; the host monotonic time it did, or None if it is still running."""
        assert self._waiter is not None
        self._waiter.join(timeout)
        return self.exited_at

    def console_text(self) -> str:
        try:
            return self.console.read_bytes().decode(errors="replace").replace("\r", "")
        except FileNotFoundError:
            return ""

    def shutdown_reasons(self) -> list[str]:
        """The reasons of QEMU's SHUTDOWN events: 'guest-reset' when the guest reset itself (with
        -no-reboot QEMU then exits), 'guest-shutdown' for a power-off, 'host-qmp-quit' ..."""
        return [str(e.data.get("reason")) for e in self.qmp.events if e.name == "SHUTDOWN"]

    def evidence(self, console_lines: int = 60) -> str:
        """The console's last lines and QEMU's own messages, for failure messages."""
        lines = self.console_text().splitlines()[-console_lines:]
        try:
            qemu = self.qemu_log.read_text().strip()
        except OSError:
            qemu = ""
        return (
            f"\n--- {self.name}: QEMU {'running' if self.running() else f'exited {self.proc.returncode}'}"
            + (f", ready {self.ready_at - self.started:.1f}s after it started" if self.ready_at else "")
            + f", shutdown reasons {self.shutdown_reasons()}; console (last {len(lines)} lines):\n"
            + "\n".join(lines)
            + (f"\n--- QEMU stderr:\n{qemu}" if qemu else "")
        )

    # -- commands ----------------------------------------------------------------------------------
    @property
    def agent(self) -> _GuestAgent:
        if self._agent is None:
            raise VMError(f"{self.name}: not booted yet (wait_ready)")
        return self._agent

    def wait_ready(self, timeout: float = 180.0) -> float:
        """Wait until the guest agent answers and the shares are mounted; seconds since start."""
        deadline = time.monotonic() + timeout
        self._agent = _GuestAgent(self.run_dir / "qga.sock", timeout)
        while True:
            if not self.running():
                raise VMError(f"{self.name}: QEMU exited while booting" + self.evidence())
            try:
                self._agent.sync(min(5.0, max(0.1, deadline - time.monotonic())))
                break
            except TimeoutError:  # (before OSError: it is one)
                if time.monotonic() > deadline:
                    raise VMError(
                        f"{self.name}: the guest agent did not answer within {timeout:g}s" + self.evidence()
                    ) from None
            except (EOFError, OSError) as e:
                if self.wait_exit(5) is None:  # else: QEMU exited, said at the top of the loop
                    raise VMError(
                        f"{self.name}: the guest agent's socket failed: {e}" + self.evidence()
                    ) from e
        self.ready_at = time.monotonic()
        for s in self.shares:
            r = self.shell(
                # cache=loose: the guest caches what it read (Python's imports over 9p are twice as
                # fast); a host file changed while the guest runs may be seen late.
                f"mkdir -p '{s.guest}' && mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,"
                f"cache=loose '{s.tag}' '{s.guest}'",
                timeout=60,
            )
            if r.rc != 0:
                raise VMError(f"{self.name}: cannot mount the share {s.tag} at {s.guest}: {r}")
        return self.ready_at - self.started

    def shell(self, script: str, timeout: float = 60.0) -> Result:
        """Run `script` with /bin/sh in the guest (as root); it is killed after `timeout` s."""
        ret = self.agent.call(
            "guest-exec",
            {
                "path": "/usr/bin/timeout",  # the guest's: kills the script (not what it left behind)
                "arg": ["-s", "KILL", f"{timeout:g}", "/bin/sh", "-c", script],
                "capture-output": True,
            },
        )
        pid = ret["pid"]
        deadline = time.monotonic() + timeout + 30
        interval = 0.02
        while True:
            st = self.agent.call("guest-exec-status", {"pid": pid})
            if st["exited"]:
                break
            if time.monotonic() > deadline or not self.running():
                raise VMError(f"{self.name}: {script!r} did not finish" + self.evidence())
            time.sleep(interval)
            interval = min(0.2, interval * 2)

        def text(key: str) -> str:
            return base64.b64decode(st.get(key, "")).decode(errors="replace")

        rc = st["exitcode"] if "exitcode" in st else -int(st.get("signal", 0))
        return Result(int(rc), text("out-data"), text("err-data"))

    def check(self, script: str, timeout: float = 60.0) -> str:
        """`shell`, failing unless the script exits 0; its output."""
        r = self.shell(script, timeout)
        if r.rc != 0:
            raise VMError(f"{self.name}: {script!r} failed: {r}")
        return r.out

    def write_file(self, path: str, text: str, mode: int = 0o644) -> None:
        """Write `text` to `path` in the guest (its directory must exist)."""
        handle = self.agent.call("guest-file-open", {"path": path, "mode": "w"})
        try:
            self.agent.call(
                "guest-file-write", {"handle": handle, "buf-b64": base64.b64encode(text.encode()).decode()}
            )
        finally:
            self.agent.call("guest-file-close", {"handle": handle})
        self.check(f"chmod {mode:o} '{path}'")

    # -- whole-machine faults ------------------------------------------------------------------------
    def pause(self) -> None:
        """Stop the whole machine (QMP `stop`): its CPU and its clocks, as a live migration or a
        hypervisor hiccup does (shared/vm-lab.md: the guest sees almost no time pass)."""
        self.qmp.command("stop")

    def resume(self) -> None:
        """Let a paused machine run again (QMP `cont`)."""
        self.qmp.command("cont")

    def power_off(self) -> None:
        """Pull the plug: QEMU SIGKILLed by its PID, nothing in the guest runs another instruction.
        A disk given to boot() keeps what the guest had written; boot() it again to power on."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
        if self.wait_exit(10) is None:
            raise VMError(f"{self.name}: QEMU still running 10 s after SIGKILL")

    # -- the end -------------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop QEMU (by its PID) and remove everything this guest had on the host."""
        try:
            if self.running():
                with contextlib.suppress(OSError, VMError, TimeoutError):
                    self.qmp.command("quit", timeout=3)
                if self.wait_exit(5) is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.proc.pid, signal.SIGKILL)
                    self.wait_exit(10)
        finally:
            if self._agent is not None:
                self._agent.close()
            self.qmp.close()
            shutil.rmtree(self.run_dir, ignore_errors=True)


class Pool:
    """Guests reused across tests: :meth:`get` gives the running guest, or boots a new one when
    there is none (the last one reset, or :meth:`discard` was called because a test left it in a
    state the next test must not inherit). Booting costs ~30 s under emulation."""

    def __init__(self, img: Image, shares: Sequence[Share] = (), **boot_args: Any) -> None:
        self.img = img
        self.shares = shares
        self.boot_args = boot_args
        self.vm: VM | None = None
        self.boots = 0
        self._stack = contextlib.ExitStack()

    def get(self) -> VM:
        if self.vm is not None and not self.vm.running():
            self.discard()
        if self.vm is None:
            self.vm = self._stack.enter_context(boot(self.img, self.shares, **self.boot_args))
            self.boots += 1
        return self.vm

    def discard(self) -> None:
        """Stop the current guest (if any) and remove what it had."""
        self.vm = None
        self._stack.close()

    close = discard


def _qemu_argv(
    img: Image,
    run_dir: Path,
    overlay: Path,
    shares: Sequence[Share],
    memory_mib: int,
    nics: Sequence[Nic] = (),
    cable: Cable | None = None,
    netns: str | None = None,
) -> list[str]:
    argv = [
        *(["ip", "netns", "exec", netns] if netns else []),  # exec: QEMU keeps the PID
        "qemu-system-x86_64",
        "-name", run_dir.name,
        "-accel", "tcg,tb-size=256", "-cpu", "max", "-smp", "1", "-m", str(memory_mib),
        "-nodefaults", "-no-user-config", "-display", "none",
        "-no-reboot",  # a guest reset ends QEMU: the test sees it
        "-kernel", str(img.kernel), "-initrd", str(img.initrd),
        "-append", f"console={img.console} {KERNEL_CMDLINE}",
        "-drive", f"file={overlay},if=virtio,format=qcow2,cache=unsafe",
        "-chardev", f"file,id=con0,path={run_dir / 'console.log'}",
        "-qmp", f"unix:{run_dir / 'qmp.sock'},server=on,wait=off",
        "-device", "virtio-serial-pci",
        "-chardev", f"socket,id=qga0,path={run_dir / 'qga.sock'},server=on,wait=off",
        "-device", f"virtserialport,chardev=qga0,name={QGA_PORT}",
    ]  # fmt: skip
    console_port, cable_port = (1, 0) if img.console == "ttyS1" else (0, 1)
    argv += ["-device", f"isa-serial,chardev=con0,index={console_port}"]
    if not nics:
        argv += ["-nic", "none"]
    for i, nic in enumerate(nics):  # eth0, eth1, ... in this order (PCI slots in order)
        argv += [
            "-netdev", f"tap,id=net{i},ifname={nic.tap},script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=net{i},mac={nic.mac}",
        ]  # fmt: skip
    if cable is not None:  # the serial port the console does not use
        end = "server=on,wait=off" if cable.server else "reconnect=1"
        argv += ["-chardev", f"socket,id=cable0,path={cable.socket},{end}"]
        argv += ["-device", f"isa-serial,chardev=cable0,index={cable_port}"]
    for s in shares:
        if "," in str(s.host) or "'" in s.guest:
            raise VMError(f"cannot share {s.host} at {s.guest}: commas and quotes are not supported")
        argv += ["-virtfs", f"local,path={s.host},mount_tag={s.tag},security_model=none,readonly=on"]
    return argv


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def cleanup_stale() -> list[Path]:
    """Remove the run directories that a test process killed outright left behind (its QEMU died
    with it): those whose owner process is gone."""
    removed = []
    for d in Path(tempfile.gettempdir()).glob(f"{RUN_PREFIX}*"):
        try:
            pid, start = (d / "owner").read_text().split()
        except (OSError, ValueError):
            if time.time() - d.stat().st_mtime < 60:
                continue  # being created right now
            pid, start = "0", ""
        if _start_time(int(pid)) != start:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


@contextlib.contextmanager
def boot(
    img: Image,
    shares: Sequence[Share] = (),
    *,
    memory_mib: int = 1024,
    ready_timeout: float = 180.0,
    nics: Sequence[Nic] = (),
    cable: Cable | None = None,
    netns: str | None = None,
    disk: Path | None = None,
    wait: bool = True,
    backing: Path | None = None,
) -> Iterator[VM]:
    """A guest booted from `img` on a fresh overlay, ready for commands (the guest agent answers,
    the shares are mounted). Everything is removed on exit, whatever happened.

    `nics`: network cards on taps of namespace `netns` (QEMU runs in it); `cable`: a null-modem
    cable on ttyS1; `disk`: a qcow2 overlay of `img` that outlives this boot (made here if
    missing; kept on exit): a guest powered off and on again finds its disk as it left it.
    `backing`: a qcow2 made from `img` (a prepared disk, see tests/support/vmcluster.py) that the new
    overlay starts from instead of the image's own disk. `wait=False`: yield at once; call
    vm.wait_ready() (from any thread). QEMU itself must be started
    from a thread that outlives it: it dies with the thread that started it (PR_SET_PDEATHSIG)."""
    from tests.support.netns import register_cleanup, unregister_cleanup

    cleanup_stale()
    run_dir = Path(tempfile.mkdtemp(prefix=RUN_PREFIX))
    (run_dir / "owner").write_text(f"{os.getpid()} {_start_time(os.getpid())}")
    vm: VM | None = None
    token = None
    try:
        overlay = disk or run_dir / "disk.qcow2"
        if not overlay.exists():
            _run(
                [
                    "qemu-img",
                    "create",
                    "-q",
                    "-f",
                    "qcow2",
                    "-b",
                    str(backing or img.disk),
                    "-F",
                    "qcow2" if backing else "raw",
                    str(overlay),
                ],
                what="qemu-img",
            )
        qemu_log = run_dir / "qemu.log"
        with qemu_log.open("wb") as err:
            proc = subprocess.Popen(
                _qemu_argv(img, run_dir, overlay, shares, memory_mib, nics, cable, netns),
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                preexec_fn=die_with_parent,  # only prctl before exec: safe beside our threads
            )
        started = time.monotonic()
        try:
            qmp = _Qmp(run_dir / "qmp.sock", timeout=20)
        except (OSError, VMError, TimeoutError, EOFError) as e:
            proc.kill()
            proc.wait()
            raise VMError(f"QEMU did not start: {e}\n{qemu_log.read_text().strip()}") from e
        vm = VM(run_dir.name, run_dir, proc, qmp, run_dir / "console.log", qemu_log, shares, started)
        vm._waiter = threading.Thread(target=vm._wait_process, name=f"{run_dir.name}-wait", daemon=True)
        vm._waiter.start()
        token = register_cleanup(vm.close)  # also on SIGTERM or interpreter exit
        if wait:
            vm.wait_ready(ready_timeout)
        yield vm
    finally:
        if token is not None:
            unregister_cleanup(token)
        if vm is not None:
            vm.close()
        shutil.rmtree(run_dir, ignore_errors=True)
