"""The kernel fence for real, in network namespaces: h1 holds the VIP behind the fence, h2 asks.

What a user sees: while the fence is open the VIP answers ARP and pings from h1; once its time runs
out it answers neither, although the address is still on h1's interface and no process is left to
remove it (the agent and its fence guard killed together); a restarted agent keeps the deadline its
predecessor wrote; the dropped packets are counted.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import hosttools
from tests.support.netns import Host, Network, NsProcess, netns_available, network, ns_spawn

_reason = netns_available() or hosttools.unavailable("arping", "ping", "nft")
pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(_reason is not None, reason=f"kernel fence tests need root and namespaces: {_reason}"),
]

VIP4 = "192.0.2.100"
VIP6 = "2001:db8::100"
TABLE = "hacluster_fencetest"

# Runs inside h1: a KernelFence driven by JSON lines on stdin (what the agent's daemon does).
FENCE_HOST = r"""
import json, sys, time
from ipaddress import ip_address
from hacluster_agent.resources.kernelfence import KernelFence
fence = KernelFence(sys.argv[1], [ip_address(a) for a in sys.argv[2:]])  # (the name as given)
fence.install()
print(json.dumps({"ok": True}), flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    if cmd["op"] == "open":
        fence.keep(time.monotonic() + cmd["ms"] / 1000)
    elif cmd["op"] == "close":
        fence.keep(float("-inf"))
    elif cmd["op"] == "remove":
        fence.remove()
    print(json.dumps({"ok": True, "writes": fence.writes, "failures": fence.failures}), flush=True)
"""


class FenceHost:
    def __init__(self, proc: NsProcess) -> None:
        self.proc = proc
        assert self._reply()["ok"]

    def _reply(self) -> dict[str, Any]:
        assert self.proc.popen.stdout is not None
        while True:
            line = self.proc.popen.stdout.readline()
            if not line:
                raise EOFError("fence host exited")
            try:
                return dict(json.loads(line))
            except ValueError:
                continue  # a log line

    def call(self, op: str, **kw: Any) -> dict[str, Any]:
        assert self.proc.popen.stdin is not None
        self.proc.popen.stdin.write(json.dumps({"op": op, **kw}).encode() + b"\n")
        self.proc.popen.stdin.flush()
        return self._reply()


@pytest.fixture
def net() -> Iterator[Network]:
    with network(2, ipv6=True) as n:
        h1 = n.hosts[0]
        n.run(h1, ["ip", "addr", "add", f"{VIP4}/24", "dev", h1.ifname])
        n.run(h1, ["ip", "-6", "addr", "add", f"{VIP6}/64", "dev", h1.ifname, "nodad"])
        yield n


@pytest.fixture
def fence_host(net: Network) -> Iterator[Any]:
    procs: list[NsProcess] = []

    def spawn() -> FenceHost:
        proc = ns_spawn(
            net.hosts[0].ns,
            [sys.executable, "-c", FENCE_HOST, TABLE, VIP4, VIP6],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        procs.append(proc)
        return FenceHost(proc)

    try:
        yield spawn
    finally:
        for p in procs:
            p.stop(2.0)


def arp_answered(net: Network, asker: Host) -> bool:
    """One ARP request for the VIP from `asker`: did anyone answer?"""
    r = net.run(asker, ["arping", "-c", "1", "-w", "0.25", "-i", asker.ifname, VIP4], check=False)
    return r.returncode == 0


def ping_answered(net: Network, asker: Host, ip: str, wait: float = 0.3) -> bool:
    return net.run(asker, ["ping", "-n", "-c", "1", "-W", str(wait), ip], check=False).returncode == 0


def pin_neighbour(net: Network, asker: Host, owner: Host) -> None:
    """A static neighbour entry: the ping tests the IP path, whatever happens to ARP."""
    mac = json.loads(net.run(owner, ["ip", "-j", "link", "show", "dev", owner.ifname]).stdout)[0]["address"]
    net.run(asker, ["ip", "neigh", "replace", VIP4, "lladdr", mac, "dev", asker.ifname, "nud", "permanent"])
    net.run(
        asker, ["ip", "-6", "neigh", "replace", VIP6, "lladdr", mac, "dev", asker.ifname, "nud", "permanent"]
    )


def counted_drops(net: Network, host: Host) -> int:
    out = net.run(host, ["nft", "-j", "list", "table", "inet", TABLE]).stdout
    total = 0
    for item in json.loads(out)["nftables"]:
        for expr in item.get("rule", {}).get("expr", []):
            if "counter" in expr:
                total += int(expr["counter"]["packets"])
    return total


def test_the_vip_answers_only_while_the_fence_is_open(net: Network, fence_host: Any) -> None:
    h1, h2 = net.hosts
    fence_host()  # installed, never opened: closed
    assert not arp_answered(net, h2), "a closed fence let an ARP reply out"
    pin_neighbour(net, h2, h1)
    assert not ping_answered(net, h2, VIP4) and not ping_answered(net, h2, VIP6)
    assert counted_drops(net, h1) > 0, "the dropped packets were not counted"


def test_open_then_expired_without_any_process_left(net: Network, fence_host: Any) -> None:
    """The agent and its guard killed together (a container's PID 1 died): no process removes the
    address, and the kernel stops answering for it at the deadline the agent last wrote."""
    h1, h2 = net.hosts
    fh = fence_host()
    fh.call("open", ms=1500)
    t_open = time.monotonic()
    assert arp_answered(net, h2), "an open fence did not let the ARP reply out"
    pin_neighbour(net, h2, h1)
    assert ping_answered(net, h2, VIP4) and ping_answered(net, h2, VIP6)
    fh.proc.signal(signal.SIGKILL)  # nobody is left to write or remove anything
    fh.proc.wait(5)
    while time.monotonic() - t_open < 1.2:
        assert ping_answered(net, h2, VIP4), "the VIP went dark before its deadline"
        time.sleep(0.05)
    dark_after = None
    while time.monotonic() - t_open < 2.5:
        asked = time.monotonic()
        if not ping_answered(net, h2, VIP4, wait=0.1):
            dark_after = asked - t_open  # the first request that went unanswered was sent then
            break
    assert dark_after is not None, "the VIP kept answering after its deadline"

    print(
        f"\nfence opened for 1500 ms, writer SIGKILLed: the VIP stopped answering {dark_after * 1000:.0f} ms after"
    )
    assert dark_after < 1.5 + 0.15
    assert not ping_answered(net, h2, VIP6)
    net.run(h2, ["ip", "neigh", "flush", "dev", h2.ifname])
    assert not arp_answered(net, h2)
    assert f" {VIP4}/" in net.run(h1, ["ip", "-o", "addr", "show"]).stdout, (
        "the test needs the address left on"
    )


def test_a_restarted_writer_starts_closed_and_close_is_immediate(net: Network, fence_host: Any) -> None:
    h1, h2 = net.hosts
    pin_neighbour(net, h2, h1)
    first = fence_host()
    first.call("open", ms=3000)
    assert ping_answered(net, h2, VIP4)
    first.proc.signal(signal.SIGKILL)
    first.proc.wait(5)
    second = fence_host()  # install() again: closed until its engine holds the Lease again
    assert not ping_answered(net, h2, VIP4), "a restarted agent answered before it held anything"
    second.call("open", ms=3000)
    assert ping_answered(net, h2, VIP4)
    second.call("close")
    assert not ping_answered(net, h2, VIP4), "close did not take effect at once"
    second.call("remove")
    assert TABLE not in net.run(h1, ["nft", "list", "tables"]).stdout
    assert ping_answered(net, h2, VIP4)  # no fence at all: the address answers as any other


def test_tables_removed_under_the_agent_come_back(net: Network, fence_host: Any) -> None:
    """`nft flush ruleset` (Debian's nftables.service does it on restart) removes the fence: the
    next write fails, is counted, and installs the tables again; the one after opens them."""
    h1, h2 = net.hosts
    pin_neighbour(net, h2, h1)
    fh = fence_host()
    fh.call("open", ms=3000)
    net.run(h1, ["nft", "flush", "ruleset"])
    failed = fh.call("open", ms=3000)
    assert failed["failures"] == 1
    assert TABLE in net.run(h1, ["nft", "list", "tables"]).stdout, "the tables were not installed again"
    assert not ping_answered(net, h2, VIP4)  # back, closed
    fh.call("open", ms=3000)
    assert ping_answered(net, h2, VIP4)
