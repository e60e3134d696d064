"""Which adapters an ha.cf gets: one per media line, self-pointing ucast lines skipped."""

from __future__ import annotations

import asyncio
import errno
from ipaddress import IPv4Address, IPv6Address

import pytest

from hacluster_agent.media import SerialLine, UdpBroadcast, UdpMulticast, UdpUnicast, build_media
from hacluster_api.heartbeat.hacf import parse_hacf
from hacluster_api.heartbeat.hacf_model import BcastMedium, McastMedium, SerialMedium, UcastMedium

HACF = """\
udpport 5694
baud 38400
bcast eth0
ucast eth1 192.0.2.11
ucast eth1 192.0.2.12
ucast6 eth1 2001:db8::12
mcast eth2 239.192.0.7 7694 2 1
serial /dev/ttyS1
node hb1 hb2
auto_failback off
"""


def media() -> list[BcastMedium | UcastMedium | McastMedium | SerialMedium]:
    cfg, findings = parse_hacf(HACF)
    assert cfg is not None, findings
    return list(cfg.media)


def test_one_adapter_per_line_self_ucast_skipped() -> None:
    built = build_media(media(), ["192.0.2.11", "2001:db8::11"], lock_dir="/tmp/locks", rtscts=False)
    assert [(m.kind, m.name) for m in built] == [
        ("bcast", "eth0"),
        ("ucast", "eth1"),
        ("ucast6", "eth1"),
        ("mcast", "eth2"),
        ("serial", "/dev/ttyS1"),
    ]
    bcast, ucast, ucast6, mcast, ser = built
    assert isinstance(bcast, UdpBroadcast) and bcast.port == 5694
    assert isinstance(ucast, UdpUnicast) and ucast.peer == IPv4Address("192.0.2.12") and ucast.port == 5694
    assert isinstance(ucast6, UdpUnicast) and ucast6.peer == IPv6Address("2001:db8::12")
    assert isinstance(mcast, UdpMulticast)
    assert (mcast.group, mcast.port, mcast.ttl, mcast.loop) == (IPv4Address("239.192.0.7"), 7694, 2, True)
    assert isinstance(ser, SerialLine)
    assert (ser.baud, ser.rtscts, ser.lock_dir) == (38400, False, "/tmp/locks")
    assert {m.encoding for m in built[:4]} == {"netstring"} and ser.encoding == "classic"
    assert not any(m.up for m in built)


def test_the_other_node_keeps_the_other_ucast_line() -> None:
    built = build_media(media(), [IPv4Address("192.0.2.12")])
    peers = [m.peer for m in built if isinstance(m, UdpUnicast)]
    assert peers == [IPv4Address("192.0.2.11"), IPv6Address("2001:db8::12")]
    assert all(m.retry_interval == 1.0 for m in built)


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        UdpMulticast("eth0", IPv4Address("192.0.2.1"), 694)
    with pytest.raises(ValueError):
        UdpBroadcast("eth0", 0)
    with pytest.raises(ValueError):
        UdpBroadcast("eth0", 694, retry_interval=0)


@pytest.mark.asyncio
async def test_send_before_start_is_dropped_not_raised() -> None:
    for m in build_media(media(), []):
        m.send(b"###\n%%%\n")
        assert m.stats.dropped_down == 1
        await m.close()


@pytest.mark.asyncio
async def test_send_errors_transient_ones_count_others_take_the_medium_down() -> None:
    class Events:
        def __init__(self) -> None:
            self.states: list[tuple[str, bool, str]] = []

        def packet_received(self, medium: str, data: bytes) -> None: ...

        def medium_state(self, medium: str, up: bool, reason: str) -> None:
            self.states.append((medium, up, reason))

    m = UdpBroadcast("eth9", 694)
    events = Events()
    m._events = events
    m._set_state(True, "opened")  # as if it had opened
    for code in (errno.ENOBUFS, errno.EAGAIN, errno.EHOSTUNREACH, errno.ECONNREFUSED):
        m._send_error(OSError(code, "transient"))
    assert m.up and m.stats.send_errors == 4
    m._send_error(OSError(errno.ENETUNREACH, "Network is unreachable"))
    m._send_error(OSError(errno.ENETDOWN, "Network is down"))
    assert not m.up
    await asyncio.sleep(0)  # reports are delivered from the loop, never from inside send()
    assert events.states == [
        ("eth9", True, "opened"),
        ("eth9", False, "send on eth9 failed: [Errno 101] Network is unreachable"),
    ]
    await m.close()
