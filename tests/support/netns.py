"""Test hosts as Linux network namespaces joined by a bridge in a private "switch" namespace.

Layout of one :func:`network` (``<id>`` is ``hac`` + 6 random hex digits, new for every use)::

    <id>-sw     switch namespace: bridge br0 (and br1 for the second link), ports p<i>l<link>
    <id>-h1     host 1: lo up, eth0 192.0.2.11/24 (brd 192.0.2.255) [2001:db8::11/64]
                               eth1 198.51.100.11/24 [2001:db8:1::11/64] (second link, optional)
    <id>-h2     host 2: eth0 192.0.2.12/24 ... and so on.

Nothing is created in the root namespace: the veth pairs are created directly between the
switch namespace and each host namespace. Link faults (cuts, loss) are nftables rules in the
switch namespace (``table bridge hac``), so the host's own view of its interface does not change
unless ``mode="carrier"`` is asked for. Delay uses ``tc netem`` when the kernel has it, and
otherwise a small NFQUEUE delayer (this file run as a script) inside the host namespace.

Everything is removed when the context manager exits, even on exceptions; an ``atexit`` hook and
SIGTERM/SIGHUP handlers remove what this process still holds, and :func:`cleanup_stale` removes
what a run that died without cleaning up (SIGKILL) left, found by marker files under
``/run/hac-netns`` whose owner process is gone. Only documentation address ranges are used.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Literal, TypeVar

__all__ = [
    "LINK_NETS4",
    "LINK_NETS6",
    "PREFIX",
    "VIP_RANGE",
    "Direction",
    "Host",
    "Link",
    "NetnsError",
    "Network",
    "NsProcess",
    "cleanup_stale",
    "list_prefixed_netns",
    "netns_available",
    "network",
    "new_id",
    "ns_pids",
    "ns_run",
    "ns_spawn",
    "register_cleanup",
    "unregister_cleanup",
    "wait_until",
]

PREFIX = "hac"
"""Every namespace, temp dir and marker this module creates starts with this."""

LINK_NETS4: tuple[ipaddress.IPv4Network, ...] = (
    ipaddress.IPv4Network("192.0.2.0/24"),
    ipaddress.IPv4Network("198.51.100.0/24"),
)
LINK_NETS6: tuple[ipaddress.IPv6Network, ...] = (
    ipaddress.IPv6Network("2001:db8::/64"),
    ipaddress.IPv6Network("2001:db8:1::/64"),
)
VIP_RANGE = ("192.0.2.100", "192.0.2.199")
"""Addresses on link 0 that no host gets: free for virtual IPs in tests."""

HOST_OFFSET = 10
"""Host i (1-based) gets address .(10+i) on every link."""

MARKER_DIR = Path("/run/hac-netns")

Direction = Literal["egress", "ingress", "both"]
"""Relative to the host: egress = what the host sends, ingress = what it receives."""

T = TypeVar("T")


class NetnsError(RuntimeError):
    """A namespace operation failed."""


# --------------------------------------------------------------------------------------------
# small utilities


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float,
    *,
    interval: float = 0.05,
    message: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns something truthy; return it. Raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {message}")
        time.sleep(interval)


def _run(
    argv: Sequence[str],
    *,
    check: bool = True,
    input: str | None = None,
    timeout: float = 30.0,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        list(argv),
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=None if env is None else dict(env),
        check=False,
    )
    if check and proc.returncode != 0:
        raise NetnsError(
            f"command failed ({proc.returncode}): {' '.join(argv)}\n"
            f"stdout: {proc.stdout.strip()}\nstderr: {proc.stderr.strip()}"
        )
    return proc


# what building a Network (links, cuts, loss, delay) runs; the NFQUEUE delayer runs ip*tables
TOOLS = ("ip", "tc", "nft", "iptables-legacy", "ip6tables-legacy", "unshare", "nsenter", "ping")


def netns_available() -> str | None:
    """None if this process can build namespaces, else the reason it cannot (for skips)."""
    if sys.platform != "linux":
        return "not Linux"
    if os.geteuid() != 0:
        return "needs root"
    from tests.support import hosttools  # not at the top: this file also runs alone (-I -S)

    return hosttools.unavailable(*TOOLS)


def list_prefixed_netns(prefix: str = PREFIX) -> list[str]:
    """Names of existing network namespaces starting with ``prefix``."""
    out = _run(["ip", "netns", "list"]).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return [n for n in names if n.startswith(prefix)]


def ns_pids(ns: str) -> list[int]:
    """PIDs of the processes whose network namespace is ``ns``."""
    proc = _run(["ip", "netns", "pids", ns], check=False)
    return [int(p) for p in proc.stdout.split() if p.isdigit()]


def _proc_start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # field 22 (starttime); the comm field may contain spaces, so split after ')'
    rest = stat.rsplit(")", 1)[1].split()
    return rest[19]


def _kill_pids(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


# --------------------------------------------------------------------------------------------
# cleanup registry (atexit + signals)

_lock = threading.RLock()
_cleanups: dict[int, Callable[[], None]] = {}
_next_token = 0
_handlers_installed = False


def register_cleanup(fn: Callable[[], None]) -> int:
    """Run ``fn`` at interpreter exit or on SIGTERM/SIGHUP unless unregistered first."""
    global _next_token
    _install_handlers()
    with _lock:
        _next_token += 1
        _cleanups[_next_token] = fn
        return _next_token


def unregister_cleanup(token: int) -> None:
    with _lock:
        _cleanups.pop(token, None)


def _run_all_cleanups() -> None:
    with _lock:
        items = sorted(_cleanups.items(), reverse=True)  # newest first
        _cleanups.clear()
    for _, fn in items:
        with contextlib.suppress(Exception):
            fn()


def _signal_handler(signum: int, frame: FrameType | None) -> None:
    _run_all_cleanups()
    previous = _previous_handlers.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)
        return
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


_previous_handlers: dict[int, Callable[[int, FrameType | None], object] | int | None] = {}


def _install_handlers() -> None:
    global _handlers_installed
    with _lock:
        if _handlers_installed:
            return
        _handlers_installed = True
        atexit.register(_run_all_cleanups)
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGTERM, signal.SIGHUP):
            previous = signal.getsignal(signum)
            if previous is signal.SIG_IGN:
                continue
            _previous_handlers[signum] = previous
            signal.signal(signum, _signal_handler)


# --------------------------------------------------------------------------------------------
# running things inside a namespace


def ns_run(
    ns: str,
    argv: Sequence[str],
    *,
    check: bool = True,
    input: str | None = None,
    timeout: float = 30.0,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` inside network namespace ``ns`` (``ip netns exec``) and wait for it."""
    return _run(["ip", "netns", "exec", ns, *argv], check=check, input=input, timeout=timeout, env=env)


class NsProcess:
    """A long-running process started inside a namespace, in its own process group.

    ``stop()`` sends SIGTERM to the group, waits, then SIGKILL; ``kill()`` is SIGKILL at once.
    Only this process group is signalled; a child that calls setsid() escapes it (but not the
    namespace cleanup of :class:`Network`).
    """

    def __init__(
        self, popen: subprocess.Popen[bytes], ns: str, argv: Sequence[str], log_path: Path | None
    ) -> None:
        self.popen = popen
        self.ns = ns
        self.argv = list(argv)
        self.log_path = log_path
        self._token = register_cleanup(self.kill)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the whole process group (if anything in it is left)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def wait(self, timeout: float | None = None) -> int:
        return self.popen.wait(timeout)

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM the group, wait up to ``timeout``, then SIGKILL. Returns the exit status."""
        if self.alive():
            self.signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        self.kill()
        return self.popen.returncode

    def kill(self) -> None:
        """SIGKILL the group and reap the leader."""
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5.0)
        self._close_pipes()
        unregister_cleanup(self._token)

    def _close_pipes(self) -> None:
        for stream in (self.popen.stdin, self.popen.stdout, self.popen.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def output(self) -> str:
        """What the process wrote to stdout/stderr so far (when started with a log file)."""
        if self.log_path is None:
            return ""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> NsProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"NsProcess(pid={self.pid}, ns={self.ns!r}, argv={self.argv!r})"


def ns_spawn(
    ns: str,
    argv: Sequence[str],
    *,
    log_path: Path | None = None,
    stdin: int | IO[bytes] | None = subprocess.DEVNULL,
    stdout: int | IO[bytes] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> NsProcess:
    """Start ``argv`` inside ``ns`` in a new session/process group; don't wait.

    Output goes to ``log_path`` (stdout and stderr, appended) if given, else to ``stdout``
    (e.g. ``subprocess.PIPE``), else is discarded.
    """
    full = ["ip", "netns", "exec", ns, *argv]
    log_file: IO[bytes] | None = None
    out: int | IO[bytes] | None
    err: int | IO[bytes] | None
    if log_path is not None:
        log_file = open(log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
        out, err = log_file, subprocess.STDOUT
    else:
        out = subprocess.DEVNULL if stdout is None else stdout
        err = subprocess.DEVNULL if stdout is None else subprocess.STDOUT
    try:
        popen = subprocess.Popen(
            full,
            stdin=stdin,
            stdout=out,
            stderr=err,
            env=None if env is None else dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    finally:
        if log_file is not None:
            log_file.close()
    return NsProcess(popen, ns, argv, log_path)


# --------------------------------------------------------------------------------------------
# topology


@dataclass(frozen=True)
class Link:
    """One interface of a host, attached to one bridge of the switch namespace."""

    index: int
    ifname: str
    """Name inside the host namespace: eth0, eth1."""
    port: str
    """Name of the veth end in the switch namespace."""
    bridge: str
    ipv4: ipaddress.IPv4Interface
    ipv6: ipaddress.IPv6Interface | None
    mac: str

    @property
    def addr(self) -> str:
        return str(self.ipv4.ip)

    @property
    def addr6(self) -> str | None:
        return None if self.ipv6 is None else str(self.ipv6.ip)

    @property
    def broadcast(self) -> str:
        return str(self.ipv4.network.broadcast_address)


@dataclass(frozen=True)
class Host:
    """A test host: one network namespace with one or two links."""

    index: int
    """1-based."""
    ns: str
    links: tuple[Link, ...]

    @property
    def ip(self) -> str:
        """IPv4 address on link 0 (192.0.2.x)."""
        return self.links[0].addr

    @property
    def ip6(self) -> str | None:
        return self.links[0].addr6

    @property
    def ifname(self) -> str:
        return self.links[0].ifname

    def link(self, index: int = 0) -> Link:
        return self.links[index]


@dataclass
class _Impairment:
    kind: Literal["cut", "loss"]
    host: int
    link: int
    direction: Literal["egress", "ingress"]
    percent: int = 100
    udp_port: int | None = None


@dataclass
class Network:
    """N hosts on one (or two) bridged links. Build it with :func:`network`."""

    id: str
    switch_ns: str
    hosts: tuple[Host, ...]
    workdir: Path
    ipv6: bool
    _impairments: dict[tuple[int, int, str, str], _Impairment] = field(default_factory=dict)
    _delays: dict[tuple[int, int, str], NsProcess | None] = field(default_factory=dict)
    _procs: list[NsProcess] = field(default_factory=list)
    _closed: bool = False
    _token: int = 0

    # -- access ---------------------------------------------------------------------------

    def __getitem__(self, index: int) -> Host:
        """0-based: ``net[0]`` is host 1."""
        return self.hosts[index]

    def __len__(self) -> int:
        return len(self.hosts)

    @property
    def namespaces(self) -> list[str]:
        return [self.switch_ns, *(h.ns for h in self.hosts)]

    # -- processes ------------------------------------------------------------------------

    def run(
        self,
        host: Host | str,
        argv: Sequence[str],
        *,
        check: bool = True,
        input: str | None = None,
        timeout: float = 30.0,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the host's namespace and wait for it."""
        return ns_run(_ns(host), argv, check=check, input=input, timeout=timeout, env=env)

    def spawn(
        self,
        host: Host | str,
        argv: Sequence[str],
        *,
        log_name: str | None = None,
        stdout: int | IO[bytes] | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> NsProcess:
        """Start a long-running command in the host's namespace; it is stopped on close().

        With ``log_name`` its stdout+stderr go to ``workdir/log_name`` (see NsProcess.output()).
        """
        log_path = None if log_name is None else self.workdir / log_name
        proc = ns_spawn(_ns(host), argv, log_path=log_path, stdout=stdout, env=env, cwd=cwd)
        self._procs.append(proc)
        return proc

    def ping(self, host: Host | str, addr: str, *, count: int = 1, timeout_s: int = 2) -> bool:
        """True if ``addr`` answers an ICMP echo from inside ``host``."""
        proc = self.run(
            host,
            ["ping", "-n", "-q", "-c", str(count), "-W", str(timeout_s), addr],
            check=False,
            timeout=count * timeout_s + 5,
        )
        return proc.returncode == 0

    # -- link faults ----------------------------------------------------------------------

    def cut(
        self,
        host: Host,
        *,
        link: int = 0,
        direction: Direction = "both",
        udp_port: int | None = None,
        mode: Literal["filter", "carrier"] = "filter",
    ) -> None:
        """Cut a host's link.

        ``mode="filter"`` (default) drops IPv4/IPv6 frames at the host's switch port in the
        given direction, leaving ARP and IPv6 neighbour discovery through so a one-way cut
        stays one-way; ``udp_port`` narrows it to UDP datagrams to that port (e.g. 694).
        ``mode="carrier"`` sets the switch-side veth down: the host sees NO-CARRIER, both ways.
        """
        if mode == "carrier":
            if direction != "both" or udp_port is not None:
                raise ValueError("carrier mode cuts both directions and everything")
            self._ip(self.switch_ns, ["link", "set", host.link(link).port, "down"])
            return
        for d in _directions(direction):
            self._impairments[(host.index, link, d, "cut")] = _Impairment(
                "cut", host.index, link, d, 100, udp_port
            )
        self._apply_filters()

    def restore(self, host: Host, *, link: int = 0, direction: Direction = "both") -> None:
        """Undo :meth:`cut` (both modes) and :meth:`set_loss` for that host/link/direction."""
        self._ip(self.switch_ns, ["link", "set", host.link(link).port, "up"])
        for d in _directions(direction):
            self._impairments.pop((host.index, link, d, "cut"), None)
            self._impairments.pop((host.index, link, d, "loss"), None)
        self._apply_filters()

    def set_loss(
        self,
        host: Host,
        percent: int,
        *,
        link: int = 0,
        direction: Direction = "egress",
        udp_port: int | None = None,
    ) -> None:
        """Drop ``percent`` % (random) of the host's IP frames in that direction; 0 removes it."""
        if not 0 <= percent <= 100:
            raise ValueError("percent must be 0..100")
        for d in _directions(direction):
            key = (host.index, link, d, "loss")
            if percent == 0:
                self._impairments.pop(key, None)
            else:
                self._impairments[key] = _Impairment("loss", host.index, link, d, percent, udp_port)
        self._apply_filters()

    def set_delay(
        self,
        host: Host,
        delay_ms: float,
        *,
        link: int = 0,
        direction: Direction = "egress",
        jitter_ms: float = 0.0,
    ) -> str:
        """Delay the host's IP packets on that link; 0 removes the delay.

        Uses ``tc netem`` if the kernel has it, else an NFQUEUE delayer process in the host
        namespace (iptables-legacy mangle rules; only IP is delayed, ARP is not). Returns the
        mechanism used: "netem", "nfqueue" or "none".
        """
        mechanism = "none"
        for d in _directions(direction):
            self._clear_delay(host, link, d)
            if delay_ms > 0:
                mechanism = self._add_delay(host, link, d, delay_ms, jitter_ms)
        return mechanism

    def clear_faults(self) -> None:
        """Remove every cut, loss and delay."""
        for h in self.hosts:
            for ln in h.links:
                self._ip(self.switch_ns, ["link", "set", ln.port, "up"], check=False)
        self._impairments.clear()
        self._apply_filters()
        for host_index, link, d in list(self._delays):
            self._clear_delay(self.hosts[host_index - 1], link, d)

    # -- hosts lost and back ----------------------------------------------------------------

    def plug(self, host: Host) -> None:
        """Create the host's namespace and its links on the switch, addressed and up (building
        the network, and bringing back a host unplug() took away: same names, addresses, MACs)."""
        _run(["ip", "netns", "add", host.ns])
        cmds = [
            f"link add {ln.port} type veth peer name {ln.ifname} netns {host.ns} address {ln.mac}"
            for ln in host.links
        ] + [f"link set {ln.port} master {ln.bridge} up" for ln in host.links]
        _run(["ip", "-n", self.switch_ns, "-batch", "-"], input="\n".join(cmds) + "\n")
        sysctls = (
            ["net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"]
            if self.ipv6  # keep IPv6 link-local chatter (and DAD delays) off the wire unless asked
            else ["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"]
        )
        ns_run(host.ns, ["sysctl", "-q", "-w", *sysctls])
        cmds = ["link set lo up"]
        for ln in host.links:
            cmds.append(f"addr add {ln.ipv4} brd + dev {ln.ifname}")
            if ln.ipv6 is not None:
                cmds.append(f"addr add {ln.ipv6} dev {ln.ifname} nodad")
            cmds.append(f"link set {ln.ifname} up")
        _run(["ip", "-n", host.ns, "-batch", "-"], input="\n".join(cmds) + "\n")

    def unplug(self, host: Host, *, keep: Sequence[int] = ()) -> None:
        """The host is gone, as in a power cut: every process in its namespace SIGKILLed (but
        `keep`), the namespace deleted with its links and every address on them. Files stay."""
        _kill_pids([p for p in ns_pids(host.ns) if p not in keep and p != os.getpid()], signal.SIGKILL)
        _run(["ip", "netns", "delete", host.ns], check=False)

    def add_tap(self, ifname: str, bridge: str) -> None:
        """A tap device `ifname` on `bridge` in the switch namespace, up, for a virtual machine's
        network card (QEMU started in the switch namespace attaches to it by name)."""
        self._ip(self.switch_ns, ["tuntap", "add", "dev", ifname, "mode", "tap"])
        self._ip(self.switch_ns, ["link", "set", ifname, "master", bridge, "up"])

    def add_bridge(self, name: str) -> None:
        """Another bridge in the switch namespace (a LAN only virtual machines are on)."""
        self._ip(
            self.switch_ns,
            [
                "link",
                "add",
                name,
                "type",
                "bridge",
                "stp_state",
                "0",
                "forward_delay",
                "0",
                "mcast_snooping",
                "0",
            ],
        )
        self._ip(self.switch_ns, ["link", "set", name, "up"])

    def attach_root(self, ifname: str, *, link: int = 0) -> str:
        """Join the root namespace to link `link`'s bridge through a veth `ifname` (not
        addressed here). Its switch end is in the switch namespace, so deleting that namespace
        (close(), or cleanup_stale() after a crash) deletes `ifname` too."""
        port = f"r{link}"
        _run(["ip", "link", "add", ifname, "type", "veth", "peer", "name", port, "netns", self.switch_ns])
        self._ip(self.switch_ns, ["link", "set", port, "master", f"br{link}", "up"])
        return port

    # -- internals ------------------------------------------------------------------------

    def _ip(self, ns: str, args: Sequence[str], *, check: bool = True) -> None:
        _run(["ip", "-n", ns, *args], check=check)

    def _apply_filters(self) -> None:
        rules: list[str] = []
        for imp in sorted(self._impairments.values(), key=lambda i: (i.kind != "cut", i.host, i.link)):
            port = self.hosts[imp.host - 1].link(imp.link).port
            sel = f'iifname "{port}"' if imp.direction == "egress" else f'oifname "{port}"'
            if imp.udp_port is not None:
                match = f"ether type {{ ip, ip6 }} udp dport {imp.udp_port}"
            else:
                match = "ether type { ip, ip6 }"
            if imp.kind == "cut":
                nd = (
                    f"{sel} icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert, "
                    "nd-router-solicit, nd-router-advert } accept"
                )
                rules.append(nd)
                rules.append(f"{sel} {match} drop")
            else:
                chance = "" if imp.percent >= 100 else f" numgen random mod 100 < {imp.percent}"
                rules.append(f"{sel} {match}{chance} drop")
        body = "\n".join(f"    {r}" for r in rules)
        script = (
            "add table bridge hac\n"
            "delete table bridge hac\n"
            "table bridge hac {\n"
            "  chain filt {\n"
            "    type filter hook forward priority 0; policy accept;\n"
            f"{body}\n"
            "  }\n"
            "}\n"
        )
        ns_run(self.switch_ns, ["nft", "-f", "-"], input=script)

    def _add_delay(self, host: Host, link: int, d: str, delay_ms: float, jitter_ms: float) -> str:
        ifname = host.link(link).ifname
        if d == "egress":
            netem = ["tc", "qdisc", "replace", "dev", ifname, "root", "netem", "delay", f"{delay_ms}ms"]
            if jitter_ms:
                netem.append(f"{jitter_ms}ms")
            if self.run(host, netem, check=False).returncode == 0:
                self._delays[(host.index, link, d)] = None
                return "netem"
        queue = link * 2 + (0 if d == "egress" else 1)
        for ipt in ("iptables-legacy", "ip6tables-legacy"):
            self.run(host, [ipt, "-t", "mangle", "-A", *_nfq_rule(ifname, d, queue)])
        proc = self.spawn(
            host,
            [
                sys.executable,
                "-I",
                "-S",
                str(Path(__file__).resolve()),
                "nfqueue-delay",
                str(queue),
                str(delay_ms),
                str(jitter_ms),
            ],
            stdout=subprocess.PIPE,
        )
        assert proc.popen.stdout is not None
        line = proc.popen.stdout.readline()
        if line.strip() != b"ready":
            proc.kill()
            raise NetnsError(f"nfqueue delayer failed to start: {line!r}")
        self._delays[(host.index, link, d)] = proc
        return "nfqueue"

    def _clear_delay(self, host: Host, link: int, d: str) -> None:
        key = (host.index, link, d)
        if key not in self._delays:
            return
        proc = self._delays.pop(key)
        ifname = host.link(link).ifname
        if proc is None:
            self.run(host, ["tc", "qdisc", "del", "dev", ifname, "root"], check=False)
            return
        queue = link * 2 + (0 if d == "egress" else 1)
        for ipt in ("iptables-legacy", "ip6tables-legacy"):
            self.run(host, [ipt, "-t", "mangle", "-D", *_nfq_rule(ifname, d, queue)], check=False)
        proc.stop(2.0)

    def close(self) -> None:
        """Stop every process started here or still inside the namespaces; delete them all."""
        if self._closed:
            return
        self._closed = True
        for proc in reversed(self._procs):
            with contextlib.suppress(Exception):
                proc.stop(2.0)
        _destroy_namespaces(self.namespaces)
        shutil.rmtree(self.workdir, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            (MARKER_DIR / self.id).unlink()
        unregister_cleanup(self._token)


def _nfq_rule(ifname: str, direction: str, queue: int) -> list[str]:
    chain, iface = ("POSTROUTING", "-o") if direction == "egress" else ("PREROUTING", "-i")
    return [chain, iface, ifname, "-j", "NFQUEUE", "--queue-num", str(queue), "--queue-bypass"]


def _directions(direction: Direction) -> tuple[Literal["egress", "ingress"], ...]:
    if direction == "both":
        return ("egress", "ingress")
    if direction in ("egress", "ingress"):
        return (direction,)
    raise ValueError(f"bad direction {direction!r}")


def _ns(host: Host | str) -> str:
    return host if isinstance(host, str) else host.ns


def _destroy_namespaces(names: Sequence[str]) -> None:
    existing = set(list_prefixed_netns())
    names = [n for n in names if n in existing]
    pids = [p for n in names for p in ns_pids(n) if p != os.getpid()]
    if pids:
        _kill_pids(pids, signal.SIGTERM)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
            time.sleep(0.02)
        _kill_pids(pids, signal.SIGKILL)
    for n in names:
        _run(["ip", "netns", "delete", n], check=False)


def _write_marker(net_id: str) -> None:
    MARKER_DIR.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    (MARKER_DIR / net_id).write_text(f"{pid} {_proc_start_time(pid)}\n")


def _owner_alive(marker: Path) -> bool:
    try:
        pid_s, start = marker.read_text().split()
    except (OSError, ValueError):
        return False
    return _proc_start_time(int(pid_s)) == start


def cleanup_stale() -> list[str]:
    """Remove namespaces and temp dirs left by runs whose owner process has died.

    Only ids that have a marker under /run/hac-netns written by this module are touched.
    Returns the namespace names removed.
    """
    removed: list[str] = []
    if not MARKER_DIR.is_dir():
        return removed
    all_ns = list_prefixed_netns()
    for marker in MARKER_DIR.iterdir():
        if not marker.name.startswith(PREFIX) or _owner_alive(marker):
            continue
        names = [n for n in all_ns if n.startswith(marker.name + "-")]
        _destroy_namespaces(names)
        removed.extend(names)
        tmp = Path(tempfile.gettempdir())
        for d in tmp.glob(marker.name + "-*"):
            shutil.rmtree(d, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            marker.unlink()
    return removed


def new_id() -> str:
    """A fresh ``hac`` + 6 hex id, also used by realheartbeat for its temp dirs."""
    return f"{PREFIX}{secrets.token_hex(3)}"


def _build(
    net_id: str, n_hosts: int, second_link: bool, ipv6: bool, plugged: Sequence[int] | None = None
) -> Network:
    sw = f"{net_id}-sw"
    workdir = Path(tempfile.mkdtemp(prefix=f"{net_id}-net-"))
    n_links = 2 if second_link else 1
    hosts: list[Host] = []
    for i in range(1, n_hosts + 1):
        links = []
        for li in range(n_links):
            net4, net6 = LINK_NETS4[li], LINK_NETS6[li]
            links.append(
                Link(
                    index=li,
                    ifname=f"eth{li}",
                    port=f"p{i}l{li}",
                    bridge=f"br{li}",
                    ipv4=ipaddress.IPv4Interface(
                        f"{net4.network_address + HOST_OFFSET + i}/{net4.prefixlen}"
                    ),
                    ipv6=(
                        ipaddress.IPv6Interface(f"{net6.network_address + 16 + i}/{net6.prefixlen}")
                        if ipv6
                        else None
                    ),
                    mac=f"02:ac:00:00:{li:02x}:{i:02x}",
                )
            )
        hosts.append(Host(index=i, ns=f"{net_id}-h{i}", links=tuple(links)))
    net = Network(id=net_id, switch_ns=sw, hosts=tuple(hosts), workdir=workdir, ipv6=ipv6)
    net._token = register_cleanup(net.close)
    _write_marker(net_id)
    _run(["ip", "netns", "add", sw])
    sw_cmds = ["link set lo up"]
    for li in range(n_links):
        sw_cmds.append(f"link add br{li} type bridge stp_state 0 forward_delay 0 mcast_snooping 0")
        sw_cmds.append(f"link set br{li} up")
    _run(["ip", "-n", sw, "-batch", "-"], input="\n".join(sw_cmds) + "\n")
    # the switch must not answer or route anything itself
    ns_run(sw, ["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"], check=False)
    for h in hosts:
        if plugged is None or h.index in plugged:
            net.plug(h)
    net._apply_filters()
    return net


@contextlib.contextmanager
def network(
    n_hosts: int = 2, *, second_link: bool = False, ipv6: bool = False, plugged: Sequence[int] | None = None
) -> Iterator[Network]:
    """Create ``n_hosts`` namespaces on a bridge (two bridges with ``second_link``).

    Host i gets eth0 192.0.2.(10+i)/24 (+ 2001:db8::(10+i)/64 with ``ipv6``, written in hex as
    ``2001:db8::1b`` for host 11 etc.) and with ``second_link`` eth1 198.51.100.(10+i)/24
    (+ 2001:db8:1::...). `plugged`: the hosts (1-based) given a namespace now (default: all); the
    others keep their addresses for machines attached otherwise (virtual machines on taps in the
    switch namespace, tests/support/vmcluster.py). All is removed on exit.
    """
    reason = netns_available()
    if reason is not None:
        raise NetnsError(reason)
    if not 1 <= n_hosts <= 89:
        raise ValueError("n_hosts must be 1..89")
    cleanup_stale()
    net_id = new_id()
    net: Network | None = None
    try:
        net = _build(net_id, n_hosts, second_link, ipv6, plugged)
        yield net
    finally:
        if net is not None:
            net.close()
        else:
            _destroy_namespaces([n for n in list_prefixed_netns() if n.startswith(net_id)])
            with contextlib.suppress(FileNotFoundError):
                (MARKER_DIR / net_id).unlink()


# --------------------------------------------------------------------------------------------
# NFQUEUE delayer (run as: python netns.py nfqueue-delay QUEUE DELAY_MS JITTER_MS)


def _nfqueue_delay_main(queue: int, delay_ms: float, jitter_ms: float) -> int:
    import heapq
    import random
    import select
    import socket
    import struct

    netlink_netfilter = 12
    subsys_queue = 3
    msg_packet, msg_verdict, msg_config = 0, 1, 2
    nlm_f_request, nlm_f_ack = 1, 4
    nlmsg_error = 2

    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, netlink_netfilter)
    sock.bind((0, 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    seq = 0

    def attr(kind: int, data: bytes) -> bytes:
        raw = struct.pack("=HH", 4 + len(data), kind) + data
        return raw + b"\0" * (-len(raw) % 4)

    def send(msg_type: int, attrs: bytes, flags: int = nlm_f_request) -> None:
        nonlocal seq
        seq += 1
        payload = struct.pack("=BBH", 0, 0, socket.htons(queue)) + attrs
        hdr = struct.pack("=IHHII", 16 + len(payload), (subsys_queue << 8) | msg_type, flags, seq, 0)
        sock.send(hdr + payload)

    def check_ack() -> None:
        data = sock.recv(65536)
        _, kind, _, _, _ = struct.unpack_from("=IHHII", data)
        if kind == nlmsg_error:
            (err,) = struct.unpack_from("=i", data, 16)
            if err != 0:
                raise OSError(-err, "nfqueue config failed")

    send(msg_config, attr(1, struct.pack("=BxH", 1, 0)), nlm_f_request | nlm_f_ack)  # BIND
    check_ack()
    send(msg_config, attr(2, struct.pack(">IB", 0xFFFF, 1)), nlm_f_request | nlm_f_ack)  # META
    check_ack()
    print("ready", flush=True)

    stop = False

    def on_term(signum: int, frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    pending: list[tuple[float, int, int]] = []
    counter = 0
    while not stop:
        now = time.monotonic()
        while pending and pending[0][0] <= now:
            _, _, packet_id = heapq.heappop(pending)
            send(msg_verdict, attr(2, struct.pack(">II", 1, packet_id)))  # NF_ACCEPT
        timeout = max(0.0, pending[0][0] - now) if pending else 0.5
        try:
            ready, _, _ = select.select([sock], [], [], timeout)
        except InterruptedError:
            continue
        if not ready:
            continue
        data = sock.recv(1 << 20)
        off = 0
        while off + 16 <= len(data):
            length, kind, _, _, _ = struct.unpack_from("=IHHII", data, off)
            if length < 16:
                break
            if kind == (subsys_queue << 8) | msg_packet:
                a = off + 20
                end = off + length
                while a + 4 <= end:
                    alen, akind = struct.unpack_from("=HH", data, a)
                    if alen < 4:
                        break
                    if akind & 0x3FFF == 1:  # NFQA_PACKET_HDR
                        (packet_id,) = struct.unpack_from(">I", data, a + 4)
                        jitter = random.uniform(-jitter_ms, jitter_ms) if jitter_ms else 0.0
                        release = time.monotonic() + max(0.0, delay_ms + jitter) / 1000.0
                        counter += 1
                        heapq.heappush(pending, (release, counter, packet_id))
                    a += (alen + 3) & ~3
            off += (length + 3) & ~3
    for _, _, packet_id in pending:
        send(msg_verdict, attr(2, struct.pack(">II", 1, packet_id)))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "nfqueue-delay":
        sys.exit(_nfqueue_delay_main(int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])))
    print("usage: netns.py nfqueue-delay QUEUE DELAY_MS JITTER_MS", file=sys.stderr)
    sys.exit(2)
