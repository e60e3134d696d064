"""UDP media between network namespaces: bcast, mcast, ucast (and ucast6), failure and recovery.

Each host runs a small agent process (AGENT below) inside its namespace that builds the media
from an ha.cf media list shared by both hosts (so ucast lines pointing at the host itself are
skipped, as with a real identical ha.cf), prints every event as a JSON line and sends what it
is told to on stdin.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import netns

pytestmark = pytest.mark.netns

RETRY = 0.1
TIMEOUT = 10.0
ROOT = Path(__file__).resolve().parents[2]

AGENT = r"""
import asyncio, json, sys
from pydantic import TypeAdapter
from hacluster_api.heartbeat.hacf_model import Medium
from hacluster_agent.media import open_media

def emit(**kw):
    print(json.dumps(kw), flush=True)

class Events:
    def packet_received(self, medium, data):
        emit(ev="packet", medium=medium, data=data.decode("latin-1"))
    def medium_state(self, medium, up, reason):
        emit(ev="state", medium=medium, up=up, reason=reason)

async def main():
    spec = json.loads(sys.argv[1])
    media = TypeAdapter(list[Medium]).validate_python(spec["media"])
    started = await open_media(media, Events(), retry_interval=spec["retry"])
    emit(ev="ready", media=[[m.kind, m.name] for m in started])
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        cmd = json.loads(line)
        for i, m in enumerate(started):
            if cmd.get("medium") in (None, m.name):
                m.send(cmd["data"].encode("latin-1"))
    for m in started:
        await m.close()
    emit(ev="closed")

asyncio.run(main())
"""

# A socket laid out like heartbeat's own receive socket, in another process: it must be able to
# share the port with ours (SO_REUSEADDR + SO_REUSEPORT + SO_BINDTODEVICE on both).
OTHER_LISTENER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, sys.argv[1].encode())
s.bind(("0.0.0.0", int(sys.argv[2])))
print("ready", flush=True)
while True:
    print(s.recv(65536).decode("latin-1").replace("\n", " "), flush=True)
"""


class Agent:
    """One agent process in a namespace; its events accumulate in `events` (a reader thread)."""

    def __init__(self, host: netns.Host, media: list[dict[str, Any]]) -> None:
        self.host = host
        spec = json.dumps({"media": media, "retry": RETRY})
        self.proc = netns.ns_spawn(
            host.ns,
            [sys.executable, "-c", AGENT, spec],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        self.events: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        ready = self.wait(lambda e: e["ev"] == "ready", "agent ready")
        self.media: list[tuple[str, str]] = [tuple(m) for m in ready["media"]]

    def _read(self) -> None:
        assert self.proc.popen.stdout is not None
        for line in self.proc.popen.stdout:
            with self._lock:
                self.raw.append(line)
                with contextlib.suppress(ValueError):
                    self.events.append(json.loads(line))

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.events)

    def wait(
        self, match: Callable[[dict[str, Any]], bool], what: str, timeout: float = TIMEOUT
    ) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            if not self.proc.alive() and not any(match(e) for e in self.snapshot()):
                raise AssertionError(f"agent on {self.host.ns} exited: {b''.join(self.raw)!r}")
            return next((e for e in self.snapshot() if match(e)), None)

        try:
            return netns.wait_until(found, timeout, message=f"{what} on {self.host.ns}")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; events: {self.snapshot()}") from None

    def send(self, data: str, medium: str | None = None) -> None:
        assert self.proc.popen.stdin is not None
        self.proc.popen.stdin.write(json.dumps({"data": data, "medium": medium}).encode() + b"\n")
        self.proc.popen.stdin.flush()

    def packets(self, medium: str | None = None) -> list[str]:
        return [
            e["data"]
            for e in self.snapshot()
            if e["ev"] == "packet" and (medium is None or e["medium"] == medium)
        ]

    def states(self, medium: str) -> list[tuple[bool, str]]:
        return [
            (e["up"], e["reason"]) for e in self.snapshot() if e["ev"] == "state" and e["medium"] == medium
        ]

    def stop(self) -> None:
        if self.proc.alive() and self.proc.popen.stdin is not None:
            try:
                self.proc.popen.stdin.close()  # EOF: the agent closes its media and exits
                self.proc.popen.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.proc.stop(2.0)
        self._thread.join(5)


@pytest.fixture(scope="module")
def net() -> Iterator[netns.Network]:
    reason = netns.netns_available()
    if reason is not None:
        pytest.skip(f"UDP media tests need network namespaces: {reason}")
    with netns.network(2, second_link=True, ipv6=True) as network:
        yield network


class Agents:
    """Starts agents and always stops them."""

    def __init__(self) -> None:
        self.started: list[Agent] = []

    def __call__(self, host: netns.Host, media: list[dict[str, Any]]) -> Agent:
        agent = Agent(host, media)
        self.started.append(agent)
        return agent

    def stop_all(self) -> None:
        for agent in reversed(self.started):
            agent.stop()


@pytest.fixture
def agents() -> Iterator[Agents]:
    started = Agents()
    try:
        yield started
    finally:
        started.stop_all()


def exchange(a: Agent, b: Agent, medium: str, tag: str) -> None:
    """Each side keeps sending until the other has heard it (the first datagrams may race ARP)."""
    deadline = time.monotonic() + TIMEOUT
    want_b, want_a = f"###\n{tag} from {a.host.ns}", f"###\n{tag} from {b.host.ns}"
    while not (want_b in b.packets(medium) and want_a in a.packets(medium)):
        if time.monotonic() > deadline:
            raise AssertionError(f"no exchange on {medium}: a={a.snapshot()} b={b.snapshot()}")
        a.send(want_b, medium)
        b.send(want_a, medium)
        time.sleep(0.05)


# -- delivery --------------------------------------------------------------------------------------------
def media_for(kind: str, port: int, net: netns.Network) -> list[dict[str, Any]]:
    """The same ha.cf media list for both hosts."""
    if kind == "bcast":
        return [{"kind": "bcast", "interface": "eth0", "port": port}]
    if kind == "mcast":
        return [
            {"kind": "mcast", "interface": "eth0", "group": "239.192.0.1", "port": port, "ttl": 1, "loop": 0}
        ]
    if kind == "ucast":
        return [{"kind": "ucast", "interface": "eth0", "peer": h.ip, "port": port} for h in net.hosts]
    assert kind == "ucast6"
    return [{"kind": "ucast", "interface": "eth0", "peer": h.ip6, "port": port} for h in net.hosts]


@pytest.mark.parametrize("port", [694, 5694])
@pytest.mark.parametrize("kind", ["bcast", "mcast", "ucast", "ucast6"])
def test_datagrams_cross_between_namespaces(net: netns.Network, agents: Agents, kind: str, port: int) -> None:
    media = media_for(kind, port, net)
    a, b = agents(net[0], media), agents(net[1], media)
    assert a.media == b.media == [(kind, "eth0")]  # ucast: the line to ourselves was skipped
    assert a.wait(lambda e: e["ev"] == "state", "first state")["up"] is True
    exchange(a, b, "eth0", f"{kind}:{port}")
    if kind == "bcast":  # like Heartbeat, a node hears its own broadcasts
        a.wait(lambda e: e.get("data", "").endswith(f"from {a.host.ns}"), "own broadcast")
    if kind in ("mcast", "ucast"):  # loop 0 / unicast: never our own
        assert not [p for p in a.packets() if p.endswith(f"from {a.host.ns}")]


def test_receive_socket_shares_the_port_with_another_process(net: netns.Network, agents: Agents) -> None:
    other = netns.ns_spawn(
        net[1].ns, [sys.executable, "-u", "-c", OTHER_LISTENER, "eth0", "694"], stdout=subprocess.PIPE
    )
    try:
        assert other.popen.stdout is not None
        assert other.popen.stdout.readline().strip() == b"ready"
        media = media_for("bcast", 694, net)
        a, b = agents(net[0], media), agents(net[1], media)
        assert b.wait(lambda e: e["ev"] == "state", "first state")["up"] is True
        exchange(a, b, "eth0", "shared")
        line = other.popen.stdout.readline()  # the other listener got its copy too
        assert b"shared from" in line
    finally:
        other.stop(2.0)


# -- failure and recovery --------------------------------------------------------------------------------------
def test_interface_down_then_up_while_the_other_medium_carries_on(net: netns.Network, agents: Agents) -> None:
    media = [
        {"kind": "bcast", "interface": "eth0", "port": 694},
        *({"kind": "ucast", "interface": "eth1", "peer": h.link(1).addr, "port": 694} for h in net.hosts),
    ]
    a, b = agents(net[0], media), agents(net[1], media)
    assert a.media == [("bcast", "eth0"), ("ucast", "eth1")]
    exchange(a, b, "eth0", "before")
    exchange(a, b, "eth1", "before")
    try:
        net.run(net[0], ["ip", "link", "set", "eth0", "down"])
        a.wait(lambda e: e["ev"] == "state" and e["medium"] == "eth0" and not e["up"], "eth0 down")
        down = a.states("eth0")[-1]
        assert "eth0" in down[1] and ("down" in down[1] or "unreachable" in down[1].lower()), down
        a.send("###\nwhile eth0 is down")  # to every medium: eth0 drops it, eth1 carries it
        exchange(a, b, "eth1", "during")
        assert a.states("eth1") == [(True, "opened")]
        time.sleep(5 * RETRY)  # reopen attempts keep failing: still reported once
        assert [s[0] for s in a.states("eth0")] == [True, False]
    finally:
        net.run(net[0], ["ip", "link", "set", "eth0", "up"])
    a.wait(lambda e: len(a.states("eth0")) == 3, "eth0 up again")
    assert [s[0] for s in a.states("eth0")] == [True, False, True]
    exchange(a, b, "eth0", "after")
    assert b.states("eth0") == [(True, "opened")]


def test_lost_carrier_reports_down_and_back(net: netns.Network, agents: Agents) -> None:
    media = media_for("mcast", 7694, net)
    a, b = agents(net[0], media), agents(net[1], media)
    exchange(a, b, "eth0", "carrier")
    try:
        net.cut(net[1], mode="carrier")  # the switch port goes down: host 2 sees NO-CARRIER
        b.wait(lambda e: e["ev"] == "state" and not e["up"], "eth0 down")
        assert b.states("eth0")[-1] == (False, "interface eth0 has no carrier")
        assert a.states("eth0") == [(True, "opened")]
    finally:
        net.restore(net[1])
    b.wait(lambda e: len(b.states("eth0")) == 3, "eth0 up again")
    assert [s[0] for s in b.states("eth0")] == [True, False, True]
    exchange(a, b, "eth0", "carrier back")


def test_missing_interface_and_missing_broadcast_address(net: netns.Network, agents: Agents) -> None:
    host = net[0]
    media = [
        {"kind": "bcast", "interface": "hbx0", "port": 694},
        {"kind": "bcast", "interface": "eth1", "port": 694},
    ]
    try:
        a = agents(host, media)
        a.wait(lambda e: e["ev"] == "state" and e["medium"] == "hbx0", "hbx0 state")
        assert a.states("hbx0") == [(False, "interface hbx0 not found")]
        assert a.states("eth1") == [(True, "opened")]
        # appears, up, but only a /32 without broadcast: Heartbeat would send to 0.0.0.0 here
        net.run(host, ["ip", "link", "add", "hbx0", "type", "veth", "peer", "name", "hbx1"])
        net.run(host, ["ip", "addr", "add", "203.0.113.1/32", "dev", "hbx0"])
        net.run(host, ["ip", "link", "set", "hbx1", "up"])
        net.run(host, ["ip", "link", "set", "hbx0", "up"])
        time.sleep(5 * RETRY)
        assert a.states("hbx0") == [(False, "interface hbx0 not found")]  # still down: reported once
        a.send("###\nnowhere", "hbx0")
        net.run(host, ["ip", "addr", "add", "203.0.113.2/24", "brd", "+", "dev", "hbx0"])
        a.wait(lambda e: e["ev"] == "state" and e["medium"] == "hbx0" and e["up"], "hbx0 up")
    finally:
        net.run(host, ["ip", "link", "del", "hbx0"], check=False)


def test_bcast_on_an_interface_without_broadcast_address_is_refused(
    net: netns.Network, agents: Agents
) -> None:
    host = net[1]
    try:
        net.run(host, ["ip", "link", "add", "hby0", "type", "veth", "peer", "name", "hby1"])
        net.run(host, ["ip", "addr", "add", "203.0.113.5/32", "dev", "hby0"])
        for dev in ("hby1", "hby0"):
            net.run(host, ["ip", "link", "set", dev, "up"])
        a = agents(host, [{"kind": "bcast", "interface": "hby0", "port": 694}])
        state = a.wait(lambda e: e["ev"] == "state", "first state")
        assert state["up"] is False
        assert "no IPv4 broadcast address" in state["reason"] and "0.0.0.0" in state["reason"]
    finally:
        net.run(host, ["ip", "link", "del", "hby0"], check=False)
