"""The VIP driver for real, in network namespaces: h1 runs the driver, h2 watches the wire and connects.

Each test builds a fresh two-host network (tests/support/netns.py) on 192.0.2.0/24 and
2001:db8::/64 and removes it, with every process in it, even when the test fails.
"""

from __future__ import annotations

import json
import os
import select
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

import pytest

from tests.support import hosttools
from tests.support.netns import Host, Network, NsProcess, netns_available, network, ns_spawn, wait_until

_reason = netns_available() or hosttools.unavailable("tcpdump", "sysctl")
pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(_reason is not None, reason=f"VIP driver tests need root and namespaces: {_reason}"),
]

VIP4 = "192.0.2.100"
VIP6 = "2001:db8::100"
OLD_OWNER_MAC = "02:00:00:00:00:99"

# Runs inside h1: one IPAddrDriver driven by JSON lines on stdin, answering on stdout.
DRIVER_HOST = r"""
import asyncio, json, sys
from hacluster_api.heartbeat.haresources import parse_ip_spec
from hacluster_agent.resources import IPAddrDriver, ResourceError, VIPOptions

async def main():
    drv = IPAddrDriver(parse_ip_spec(sys.argv[1], sys.argv[2]), VIPOptions(**json.loads(sys.argv[3])))
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    errors, tasks = [], []

    async def keep(every):
        while True:
            await asyncio.sleep(every)
            try:
                await drv.refresh()
            except ResourceError as e:
                errors.append(str(e))
                return

    print(json.dumps({"ok": True, "result": "ready"}), flush=True)
    while line := await reader.readline():
        cmd = json.loads(line)
        op = cmd["op"]
        try:
            result = None
            if op == "start":
                await drv.start()
                result = {"ifname": drv.placement.ifname, "prefixlen": drv.placement.prefixlen}
            elif op == "stop":
                await drv.stop()
            elif op == "status":
                result = str(await drv.status())
            elif op == "refresh":
                await drv.refresh()
            elif op == "refresh_guard_fences_during_a_stall":
                # the loop stalls right after the presence check answered; meanwhile the fence guard
                # removes the address (here: `ip addr del`, as the guard's netlink call would)
                real = drv._present

                async def stalled(ipr, index):
                    found = await real(ipr, index)
                    drv._present = real
                    import subprocess, time
                    subprocess.run(cmd["remove"], check=True)
                    time.sleep(0.06)
                    return found

                drv._present = stalled
                await drv.refresh()
            elif op == "keep":
                tasks.append(asyncio.create_task(keep(cmd["every"])))
            elif op == "errors":
                result = errors
            reply = {"ok": True, "result": result}
        except ResourceError as e:
            reply = {"ok": False, "error": str(e)}
        print(json.dumps(reply), flush=True)

asyncio.run(main())
"""


class VipAgent:
    """The driver host process in a namespace; `call` sends one command and waits for its answer."""

    def __init__(self, proc: NsProcess) -> None:
        self.proc = proc
        self._buf = b""
        self.noise: list[str] = []
        assert self._reply(30.0)["result"] == "ready"

    def _readline(self, timeout: float) -> str:
        assert self.proc.popen.stdout is not None
        fd = self.proc.popen.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError(f"driver host silent for {timeout} s; output: {self.noise}")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise EOFError(f"driver host exited; output: {self.noise}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()

    def _reply(self, timeout: float) -> dict[str, Any]:
        while True:
            line = self._readline(timeout)
            try:
                reply = json.loads(line)
            except ValueError:
                self.noise.append(line)  # log lines (stderr is merged into stdout)
                continue
            if isinstance(reply, dict) and "ok" in reply:
                return reply

    def call(self, op: str, timeout: float = 15.0, **kw: Any) -> Any:
        assert self.proc.popen.stdin is not None
        self.proc.popen.stdin.write(json.dumps({"op": op, **kw}).encode() + b"\n")
        self.proc.popen.stdin.flush()
        reply = self._reply(timeout)
        if not reply["ok"]:
            raise RuntimeError(reply["error"])
        return reply["result"]


@pytest.fixture
def net() -> Iterator[Network]:
    with network(2, ipv6=True) as n:
        yield n


@pytest.fixture
def spawn_agent(net: Network) -> Iterator[Any]:
    procs: list[NsProcess] = []

    def spawn(host: Host, agent: str, spec: str, **opts: Any) -> VipAgent:
        proc = ns_spawn(
            host.ns,
            [sys.executable, "-c", DRIVER_HOST, agent, spec, json.dumps(opts)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        procs.append(proc)
        return VipAgent(proc)

    try:
        yield spawn
    finally:
        for p in procs:
            p.signal(signal.SIGCONT)  # in case a test left it frozen
            p.stop(2.0)


# -- helpers -------------------------------------------------------------------------------------


def addresses(net: Network, host: Host) -> str:
    return net.run(host, ["ip", "-o", "addr", "show", "dev", host.ifname]).stdout


def has_address(net: Network, host: Host, ip: str) -> bool:
    return f" {ip}/" in addresses(net, host)


def neighbour_mac(net: Network, host: Host, ip: str) -> str | None:
    out = net.run(host, ["ip", "neigh", "show", ip, "dev", host.ifname]).stdout.split()
    return out[out.index("lladdr") + 1] if "lladdr" in out else None


def plant_old_owner(net: Network, host: Host, ip: str) -> None:
    """h2 still believes the VIP lives at another MAC, as after a takeover."""
    if ":" not in ip:
        net.run(host, ["sysctl", "-q", "-w", f"net.ipv4.neigh.{host.ifname}.locktime=0"])
    net.run(host, ["ip", "neigh", "replace", ip, "lladdr", OLD_OWNER_MAC, "dev", host.ifname, "nud", "stale"])
    assert neighbour_mac(net, host, ip) == OLD_OWNER_MAC


@dataclass
class Frame:
    time: float
    data: bytes


def read_pcap(path: Path) -> list[Frame]:
    raw = path.read_bytes() if path.exists() else b""
    if len(raw) < 24:
        return []
    magic = raw[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    scale = 1e-9 if magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d") else 1e-6
    frames, off = [], 24
    while off + 16 <= len(raw):
        sec, frac, incl, _ = struct.unpack(endian + "IIII", raw[off : off + 16])
        if off + 16 + incl > len(raw):
            break
        frames.append(Frame(sec + frac * scale, raw[off + 16 : off + 16 + incl]))
        off += 16 + incl
    return frames


@dataclass
class Garp:
    time: float
    op: int
    eth_src: str
    eth_dst: str
    sender_mac: str
    sender_ip: IPv4Address
    target_mac: str
    target_ip: IPv4Address


def garps(frames: list[Frame], ip: str) -> list[Garp]:
    out = []
    for f in frames:
        d = f.data
        if len(d) < 42 or d[12:14] != b"\x08\x06":
            continue
        g = Garp(
            f.time, int.from_bytes(d[20:22], "big"), d[6:12].hex(":"), d[0:6].hex(":"),
            d[22:28].hex(":"), IPv4Address(d[28:32]), d[32:38].hex(":"), IPv4Address(d[38:42]),
        )  # fmt: skip
        if g.sender_ip == g.target_ip == IPv4Address(ip):
            out.append(g)
    return out


@dataclass
class Advert:
    time: float
    eth_src: str
    eth_dst: str
    hop_limit: int
    src: IPv6Address
    dst: IPv6Address
    flags: int
    target: IPv6Address
    options: bytes


def adverts(frames: list[Frame], ip: str) -> list[Advert]:
    out = []
    for f in frames:
        d = f.data
        if len(d) < 78 or d[12:14] != b"\x86\xdd" or d[20] != 58 or d[54] != 136:
            continue
        a = Advert(
            f.time, d[6:12].hex(":"), d[0:6].hex(":"), d[21], IPv6Address(d[22:38]), IPv6Address(d[38:54]),
            int.from_bytes(d[58:62], "big"), IPv6Address(d[62:78]), d[78:],
        )  # fmt: skip
        if a.target == IPv6Address(ip):
            out.append(a)
    return out


class Capture:
    def __init__(self, net: Network, host: Host, bpf: str) -> None:
        self.path = net.workdir / f"{host.ns}-{time.monotonic_ns()}.pcap"
        log = f"tcpdump-{time.monotonic_ns()}.log"
        self.proc = net.spawn(
            host, ["tcpdump", "-i", host.ifname, "-n", "-U", "-w", str(self.path), bpf], log_name=log
        )
        wait_until(lambda: "listening on" in self.proc.output(), 10, message="tcpdump to start")

    def frames(self) -> list[Frame]:
        return read_pcap(self.path)

    def close(self) -> None:
        self.proc.stop(5.0)


def tcp_roundtrip(net: Network, server: Host, client: Host, ip: str) -> str:
    listener = net.spawn(
        server,
        [sys.executable, "-c",
         "import socket,sys; s=socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET);"
         "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((sys.argv[1], 8080)); s.listen();"
         "c,_=s.accept(); c.sendall(b'hello from the vip'); c.close()", ip],
    )  # fmt: skip
    try:
        out = net.run(
            client,
            [sys.executable, "-c",
             "import socket,sys,time\n"
             "for i in range(100):\n"
             "    try: c=socket.create_connection((sys.argv[1], 8080), timeout=5); break\n"
             "    except ConnectionRefusedError: time.sleep(0.05)\n"
             "print(c.recv(100).decode())", ip],
        ).stdout  # fmt: skip
    finally:
        listener.stop(2.0)
    return out.strip()


# -- tests -----------------------------------------------------------------------------------------


def test_ipv4_vip_is_added_announced_reachable_and_removed(net: Network, spawn_agent: Any) -> None:
    h1, h2 = net[0], net[1]
    plant_old_owner(net, h2, VIP4)
    cap = Capture(net, h2, "arp")
    agent = spawn_agent(h1, "IPaddr", VIP4, lifetime=3, arp_count=5, arp_interval=0.2, arp_refresh=0)

    # bare address: prefix, interface and broadcast come from the subnet already on eth0
    assert agent.call("start") == {"ifname": "eth0", "prefixlen": 24}
    agent.call("keep", every=1.0)  # what the agent's loop does
    line = next(ln for ln in addresses(net, h1).splitlines() if f" {VIP4}/" in ln)
    assert f"inet {VIP4}/24 brd 192.0.2.255" in line
    assert "valid_lft 3sec" in line or "valid_lft 2sec" in line
    assert agent.call("status") == "running"

    # h2's stale entry for the VIP now points at h1: the gratuitous ARP did its job
    h1_mac = h1.link(0).mac
    wait_until(lambda: neighbour_mac(net, h2, VIP4) == h1_mac, 5, message="h2 to learn the VIP's new MAC")
    wait_until(lambda: len(garps(cap.frames(), VIP4)) >= 10, 10, message="10 gratuitous ARPs")
    time.sleep(0.5)  # nothing more should come with arp_refresh=0
    cap.close()
    got = garps(cap.frames(), VIP4)
    assert [g.op for g in got] == [1, 2] * 5  # a request and a reply per round, 5 rounds
    for g in got:
        assert (g.eth_src, g.eth_dst, g.sender_mac) == (h1_mac, "ff:ff:ff:ff:ff:ff", h1_mac)
        assert g.target_mac == ("00:00:00:00:00:00" if g.op == 1 else h1_mac)
    assert 0.6 <= got[-1].time - got[0].time < 3.0  # 4 intervals of 200 ms

    assert net.ping(h2, VIP4)
    assert tcp_roundtrip(net, h1, h2, VIP4) == "hello from the vip"

    agent.call("stop")
    assert not has_address(net, h1, VIP4)
    assert agent.call("status") == "stopped"
    assert not net.ping(h2, VIP4, timeout_s=1)
    agent.call("stop")  # stopping again is fine
    assert agent.call("errors") == []


def test_vip_without_refresh_expires_by_itself_and_is_not_recreated(net: Network, spawn_agent: Any) -> None:
    h1 = net[0]
    agent = spawn_agent(h1, "IPaddr", f"{VIP4}/24/eth0", lifetime=1, arp_count=1, arp_refresh=0)
    t0 = time.monotonic()
    agent.call("start")
    assert has_address(net, h1, VIP4)
    wait_until(lambda: not has_address(net, h1, VIP4), 5, interval=0.05, message="the VIP to expire")
    assert 0.8 <= time.monotonic() - t0 < 3.0
    with pytest.raises(
        RuntimeError, match=r"IPaddr::192\.0\.2\.100/24/eth0: refresh failed: .*lifetime ran out"
    ):
        agent.call("refresh")
    assert not has_address(net, h1, VIP4)
    assert agent.call("status") == "stopped"


def test_a_refresh_stalled_after_its_check_does_not_recreate_what_the_guard_removed(
    net: Network, spawn_agent: Any
) -> None:
    """sim stall_in_refresh: the loop stalled between the presence check and `addr replace`; the
    guard removed the VIP meanwhile, and the write re-created it next to the new owner's."""
    h1 = net[0]
    agent = spawn_agent(h1, "IPaddr", f"{VIP4}/24/eth0", lifetime=3, arp_count=1, arp_refresh=0)
    agent.call("start")
    assert has_address(net, h1, VIP4)
    remove = ["ip", "addr", "del", f"{VIP4}/24", "dev", "eth0"]
    with pytest.raises(RuntimeError, match=r"refresh failed: the address is gone"):
        agent.call("refresh_guard_fences_during_a_stall", remove=remove)
    assert not has_address(net, h1, VIP4)
    assert agent.call("status") == "stopped"


def test_frozen_agent_loses_the_vip_within_its_lifetime(net: Network, spawn_agent: Any) -> None:
    h1, h2 = net[0], net[1]
    agent = spawn_agent(h1, "IPaddr", VIP4, lifetime=2, arp_count=1, arp_refresh=0)
    agent.call("start")
    agent.call("keep", every=0.5)
    time.sleep(3.0)  # refreshed past its lifetime: still there
    assert has_address(net, h1, VIP4) and net.ping(h2, VIP4)

    os.kill(agent.proc.pid, signal.SIGSTOP)
    t0 = time.monotonic()
    try:
        wait_until(lambda: not has_address(net, h1, VIP4), 5, interval=0.05, message="the VIP to expire")
        assert time.monotonic() - t0 < 3.0
        assert not net.ping(h2, VIP4, timeout_s=1)
    finally:
        os.kill(agent.proc.pid, signal.SIGCONT)
    # thawed, the agent learns that it lost the VIP and does not bring it back
    errors = wait_until(lambda: agent.call("errors"), 5, message="the refresh to fail")
    # Its lifetime ran out (the usual), or its presence check found it gone first (seen once, on
    # a loaded host in session 9's ./dev test; not explained yet). Either way: lost, not brought
    # back, which is what this test is for.
    assert "lifetime ran out" in errors[0] or "the address is gone" in errors[0], errors
    assert not has_address(net, h1, VIP4)


def test_vip_in_a_subnet_no_interface_has_is_refused_clearly(net: Network, spawn_agent: Any) -> None:
    agent = spawn_agent(net[0], "IPaddr", "203.0.113.5")
    with pytest.raises(RuntimeError) as e:
        agent.call("start")
    assert "IPaddr::203.0.113.5: start failed: no connected route covers 203.0.113.5" in str(e.value)
    agent2 = spawn_agent(net[0], "IPaddr", "192.0.2.100/24/eth7")
    with pytest.raises(RuntimeError, match="no interface 'eth7'"):
        agent2.call("start")


def test_ipv6_vip_sends_unsolicited_neighbour_advertisements(net: Network, spawn_agent: Any) -> None:
    h1, h2 = net[0], net[1]
    plant_old_owner(net, h2, VIP6)
    cap = Capture(net, h2, "icmp6 and ip6[40] == 136")
    agent = spawn_agent(h1, "IPv6addr", VIP6, lifetime=5, arp_count=3, arp_interval=0.2, arp_refresh=0)
    assert agent.call("start") == {"ifname": "eth0", "prefixlen": 64}
    h1_mac = h1.link(0).mac
    wait_until(lambda: neighbour_mac(net, h2, VIP6) == h1_mac, 5, message="h2 to learn the VIP's new MAC")
    wait_until(lambda: len(adverts(cap.frames(), VIP6)) >= 3, 10, message="3 neighbour advertisements")
    cap.close()
    got = adverts(cap.frames(), VIP6)
    assert len(got) == 3
    for a in got:
        assert (a.eth_src, a.eth_dst) == (h1_mac, "33:33:00:00:00:01")
        assert (a.hop_limit, a.src, a.dst) == (255, IPv6Address(VIP6), IPv6Address("ff02::1"))
        assert a.flags == 0x20000000  # Override, not Solicited
        assert a.options == bytes([2, 1]) + bytes.fromhex(h1_mac.replace(":", ""))
    # no duplicate address detection delay: usable at once
    assert "tentative" not in next(ln for ln in addresses(net, h1).splitlines() if VIP6 in ln)
    assert net.ping(h2, VIP6)
    assert tcp_roundtrip(net, h1, h2, VIP6) == "hello from the vip"
    agent.call("stop")
    assert not has_address(net, h1, VIP6)
