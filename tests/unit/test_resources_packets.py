"""Gratuitous ARP / unsolicited NA frames byte for byte, and the announcement schedule on a fake sleep."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address, IPv6Address

import pytest

from hacluster_agent.resources import IPAddrDriver, VIPOptions
from hacluster_agent.resources.ipaddr import (
    ARPOP_REPLY,
    ARPOP_REQUEST,
    Announcer,
    announcement_frames,
    build_garp,
    build_unsolicited_na,
    icmpv6_checksum,
    parse_mac,
)
from hacluster_api.heartbeat.haresources import parse_ip_spec

MAC = parse_mac("02:ac:00:00:00:01")
VIP4 = IPv4Address("192.0.2.100")
VIP6 = IPv6Address("2001:db8::100")
PAD = "00" * 18  # 42-byte ARP frame padded to the 60-byte Ethernet minimum


def test_parse_mac() -> None:
    assert parse_mac("02:AC:00:00:00:01") == bytes([2, 0xAC, 0, 0, 0, 1])
    with pytest.raises(ValueError):
        parse_mac("02:ac:00")


def test_gratuitous_arp_request_bytes() -> None:
    expected = (
        "ffffffffffff" "02ac00000001" "0806"  # Ethernet: broadcast, from the interface MAC, ARP
        "0001" "0800" "06" "04" "0001"  # Ethernet/IPv4, request
        "02ac00000001" "c0000264"  # sender: our MAC, the VIP
        "000000000000" "c0000264"  # target: zero MAC (as send_arp), the VIP again
    ) + PAD  # fmt: skip
    assert build_garp(MAC, VIP4, ARPOP_REQUEST).hex() == expected


def test_gratuitous_arp_reply_bytes() -> None:
    expected = (
        "ffffffffffff" "02ac00000001" "0806"
        "0001" "0800" "06" "04" "0002"  # reply
        "02ac00000001" "c0000264"
        "02ac00000001" "c0000264"  # target MAC = the MAC the VIP now lives at
    ) + PAD  # fmt: skip
    assert build_garp(MAC, VIP4, ARPOP_REPLY).hex() == expected


def test_unsolicited_neighbour_advertisement_bytes() -> None:
    expected = (
        "333300000001" "02ac00000001" "86dd"  # Ethernet: all-nodes multicast, IPv6
        "60000000" "0020" "3a" "ff"  # IPv6: payload 32, ICMPv6, hop limit 255
        "20010db8000000000000000000000100"  # source: the VIP
        "ff020000000000000000000000000001"  # destination: ff02::1
        "88" "00" "f680"  # ICMPv6 type 136 code 0, checksum
        "20000000"  # flags: Override only (not Solicited, not Router)
        "20010db8000000000000000000000100"  # target: the VIP
        "02" "01" "02ac00000001"  # option: target link-layer address, 8 bytes
    )  # fmt: skip
    assert build_unsolicited_na(MAC, VIP6).hex() == expected


def test_na_checksum_verifies() -> None:
    frame = build_unsolicited_na(parse_mac("0a:1b:2c:3d:4e:5f"), IPv6Address("2001:db8:1::abcd"))
    icmp = frame[14 + 40 :]
    src, dst = IPv6Address(frame[22:38]), IPv6Address(frame[38:54])
    # a correct checksum makes the sum over the whole message (checksum included) come out as 0
    assert icmpv6_checksum(src, dst, icmp) == 0


def test_announcement_round_contents() -> None:
    assert announcement_frames(MAC, VIP4) == [
        build_garp(MAC, VIP4, ARPOP_REQUEST),
        build_garp(MAC, VIP4, ARPOP_REPLY),
    ]
    assert announcement_frames(MAC, VIP4, "reply") == [build_garp(MAC, VIP4, ARPOP_REPLY)]
    assert announcement_frames(MAC, VIP4, "request") == [build_garp(MAC, VIP4, ARPOP_REQUEST)]
    assert announcement_frames(MAC, VIP6) == [build_unsolicited_na(MAC, VIP6)]


class Schedule:
    """A fake sleep that records the virtual time of each send; it blocks forever after `limit` sleeps."""

    def __init__(self, limit: int) -> None:
        self.now = 0.0
        self.sent: list[float] = []
        self.limit = limit
        self.sleeps = 0
        self.parked = asyncio.Event()

    def send(self) -> None:
        self.sent.append(round(self.now, 3))

    async def sleep(self, seconds: float) -> None:
        if self.sleeps == self.limit:
            self.parked.set()
            await asyncio.Event().wait()
        self.sleeps += 1
        self.now += seconds


@pytest.mark.asyncio
async def test_announcer_sends_first_at_once_then_count_at_interval_then_every_refresh() -> None:
    s = Schedule(limit=6)
    a = Announcer(s.send, count=5, interval=0.2, refresh=10.0, sleep=s.sleep)
    a.start()
    assert s.sent == [0.0]  # the first one before start() returns
    await asyncio.wait_for(s.parked.wait(), 5)
    assert s.sent == [0.0, 0.2, 0.4, 0.6, 0.8, 10.8, 20.8]
    await a.stop()
    assert not a.running


async def until_idle(a: Announcer) -> None:
    for _ in range(100):
        if not a.running:
            return
        await asyncio.sleep(0)
    raise AssertionError("announcer still running")


@pytest.mark.asyncio
async def test_announcer_without_refresh_stops_after_the_burst() -> None:
    s = Schedule(limit=100)
    a = Announcer(s.send, count=3, interval=0.5, refresh=0, sleep=s.sleep)
    a.start()
    await until_idle(a)
    assert s.sent == [0.0, 0.5, 1.0]


@pytest.mark.asyncio
async def test_announcer_keeps_going_when_a_send_fails() -> None:
    s = Schedule(limit=100)
    calls = 0

    def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError(100, "Network is down")
        s.send()

    a = Announcer(flaky, count=3, interval=0.2, refresh=0, sleep=s.sleep)
    a.start()
    await until_idle(a)
    assert s.sent == [0.2, 0.4]


@pytest.mark.asyncio
async def test_vip_refresh_when_not_held_does_nothing() -> None:
    """The agent's loop may renew while a release is under way: that is not an error."""
    vip = IPAddrDriver(parse_ip_spec("IPaddr", "192.0.2.100/24/eth0"), VIPOptions(lifetime=3))
    await vip.refresh()
    assert vip.placement is None and vip.expires_at is None


def test_vip_lifetime_zero_means_permanent() -> None:
    vip = IPAddrDriver(parse_ip_spec("IPaddr", "192.0.2.100"), VIPOptions(lifetime=0))
    assert vip.lifetime is None
    with pytest.raises(ValueError):
        IPAddrDriver(parse_ip_spec("IPaddr", "192.0.2.100"), VIPOptions(lifetime=-1))


@pytest.mark.asyncio
async def test_announcer_stays_silent_once_the_address_is_gone() -> None:
    """Found by bench/chaos.py: an owner resumed after a freeze sent its pending gratuitous ARP
    although its fence guard had removed the VIP and the peer owned it: one ARP request answered
    by both MACs, and the client's cache pointed at the wrong node."""
    s = Schedule(limit=6)
    here = {"vip": True}

    async def still_ours() -> bool:
        return here["vip"]

    def send() -> None:
        s.send()
        if len(s.sent) == 2:
            here["vip"] = False  # the agent froze; its guard removed the VIP

    a = Announcer(send, count=5, interval=0.2, refresh=10.0, sleep=s.sleep, still_ours=still_ours)
    a.start()
    await asyncio.wait_for(s.parked.wait(), 5)
    assert s.sent == [0.0, 0.2]  # nothing after the address went away
    assert not await a.send_if_ours()
    await a.stop()
