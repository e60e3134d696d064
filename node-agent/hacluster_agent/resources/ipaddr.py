"""The virtual IP driver (Heartbeat's IPaddr/IPaddr2/IPv6addr) over netlink, with a kernel-enforced lifetime.

The address is added with a short valid/preferred lifetime that the agent renews from its own
loop (`refresh`), so an agent that is frozen or killed loses the VIP within the lifetime without
anyone cleaning up. After adding it, the driver announces the new owner of the address: gratuitous
ARP (a request and a reply per round, like Heartbeat's send_arp) for IPv4, unsolicited neighbour
advertisements for IPv6, sent `arp_count` times `arp_interval` apart, then every `arp_refresh`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_network,
)
from typing import Any, Literal, NoReturn

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from hacluster_api.heartbeat.haresources_model import IPResource

from .base import ResourceError, ResourceState

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
ArpMode = Literal["request", "reply", "both"]

# --------------------------------------------------------------------------------------------
# packet builders (pure)

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ARPHRD_ETHER = 1
ARPOP_REQUEST = 1
ARPOP_REPLY = 2
BROADCAST_MAC = b"\xff" * 6
ZERO_MAC = b"\x00" * 6
ALL_NODES = IPv6Address("ff02::1")
ALL_NODES_MAC = b"\x33\x33\x00\x00\x00\x01"
ICMPV6_NEIGHBOR_ADVERT = 136
NA_FLAG_OVERRIDE = 0x20000000
ND_OPT_TARGET_LINKADDR = 2
ETH_MIN_FRAME = 60
"""Ethernet minimum frame length without the FCS; short frames are zero-padded to it."""


def parse_mac(mac: str) -> bytes:
    """`02:ac:00:00:00:01` -> 6 bytes."""
    raw = bytes.fromhex(mac.replace(":", "").replace("-", ""))
    if len(raw) != 6:
        raise ValueError(f"{mac!r} is not an Ethernet MAC address")
    return raw


def build_garp(mac: bytes, ip: IPv4Address, op: int = ARPOP_REQUEST) -> bytes:
    """A gratuitous ARP Ethernet frame announcing `ip` at `mac`, broadcast.

    Sender and target protocol address are both `ip`. As in Heartbeat's send_arp, the target
    hardware address is zero in a request and `mac` in a reply.
    """
    if len(mac) != 6:
        raise ValueError("mac must be 6 bytes")
    if op not in (ARPOP_REQUEST, ARPOP_REPLY):
        raise ValueError(f"unknown ARP operation {op}")
    eth = BROADCAST_MAC + mac + struct.pack("!H", ETH_P_ARP)
    target_mac = ZERO_MAC if op == ARPOP_REQUEST else mac
    arp = struct.pack("!HHBBH", ARPHRD_ETHER, ETH_P_IP, 6, 4, op) + mac + ip.packed + target_mac + ip.packed
    return (eth + arp).ljust(ETH_MIN_FRAME, b"\x00")


def _ones_complement_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = sum(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def icmpv6_checksum(src: IPv6Address, dst: IPv6Address, message: bytes) -> int:
    """RFC 4443 checksum over the IPv6 pseudo-header and `message` (its checksum field zero)."""
    pseudo = src.packed + dst.packed + struct.pack("!I3xB", len(message), socket.IPPROTO_ICMPV6)
    return ~_ones_complement_sum(pseudo + message) & 0xFFFF


def build_unsolicited_na(mac: bytes, ip: IPv6Address) -> bytes:
    """An unsolicited neighbour advertisement Ethernet frame: `ip` is at `mac`, to all nodes.

    Override flag set (so caches replace the old owner's entry), Solicited and Router clear,
    hop limit 255 (receivers drop ND with any other), with the target link-layer address option.
    """
    if len(mac) != 6:
        raise ValueError("mac must be 6 bytes")
    option = struct.pack("!BB", ND_OPT_TARGET_LINKADDR, 1) + mac
    na = struct.pack("!BBHI", ICMPV6_NEIGHBOR_ADVERT, 0, 0, NA_FLAG_OVERRIDE) + ip.packed + option
    csum = icmpv6_checksum(ip, ALL_NODES, na)
    na = na[:2] + struct.pack("!H", csum) + na[4:]
    ip6 = struct.pack("!IHBB", 6 << 28, len(na), socket.IPPROTO_ICMPV6, 255) + ip.packed + ALL_NODES.packed
    eth = ALL_NODES_MAC + mac + struct.pack("!H", ETH_P_IPV6)
    return eth + ip6 + na


def announcement_frames(mac: bytes, ip: IPv4Address | IPv6Address, arp_mode: ArpMode = "both") -> list[bytes]:
    """The frames of one announcement round."""
    if isinstance(ip, IPv6Address):
        return [build_unsolicited_na(mac, ip)]
    ops = {"request": [ARPOP_REQUEST], "reply": [ARPOP_REPLY], "both": [ARPOP_REQUEST, ARPOP_REPLY]}[arp_mode]
    return [build_garp(mac, ip, op) for op in ops]


def send_frames(ifname: str, frames: Sequence[bytes]) -> None:
    """Send ready-made Ethernet frames out of `ifname` (AF_PACKET; needs CAP_NET_RAW)."""
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0) as s:
        s.setblocking(False)
        s.bind((ifname, 0))  # protocol 0: this socket receives nothing
        for frame in frames:
            s.send(frame)


# --------------------------------------------------------------------------------------------
# announcements


class Announcer:
    """Calls `send` now, `count - 1` more times `interval` apart, then every `refresh` (0 = never).

    Send errors are logged, not raised: a missed announcement delays neighbours' cache update
    but does not make the address less ours.
    """

    def __init__(
        self,
        send: Callable[[], None],
        *,
        count: int,
        interval: float,
        refresh: float,
        sleep: Sleep = asyncio.sleep,
        what: str = "announcement",
        still_ours: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self._send = send
        self._still_ours = still_ours
        self.count = count
        self.interval = interval
        self.refresh = refresh
        self._sleep = sleep
        self._what = what
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def send_now(self) -> bool:
        try:
            self._send()
        except OSError as e:
            log.warning("%s: sending failed: %s", self._what, e)
            return False
        return True

    def start(self) -> None:
        """Send the first round synchronously; the rest happens in a background task."""
        self.stop_nowait()
        if self.count > 0:
            self.send_now()
        if self.count > 1 or self.refresh > 0:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self._what)

    async def _run(self) -> None:
        for _ in range(self.count - 1):
            await self._sleep(self.interval)
            await self.send_if_ours()
        while self.refresh > 0:
            await self._sleep(self.refresh)
            await self.send_if_ours()

    async def send_if_ours(self) -> bool:
        """Announce only an address still on the interface: after a freeze, the fence guard (or the
        kernel) removed it and the peer may own it now; a stale announcement would point every
        neighbour's cache at us."""
        if self._still_ours is not None and not await self._still_ours():
            log.warning("%s: the address is gone: not announcing it", self._what)
            return False
        return self.send_now()

    def stop_nowait(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


# --------------------------------------------------------------------------------------------
# the driver


@dataclass(frozen=True)
class VIPOptions:
    lifetime: int | None = 3
    """Kernel valid/preferred lifetime in whole seconds, renewed by refresh(); None or 0 = permanent."""
    arp_count: int = 5
    arp_interval: float = 0.2
    arp_refresh: float = 10.0
    """Seconds between re-announcements after the initial burst; 0 = none."""
    arp_mode: ArpMode = "both"


@dataclass(frozen=True)
class Placement:
    """Where the VIP goes, resolved from the configuration and the routing table."""

    index: int
    ifname: str
    prefixlen: int
    broadcast: IPv4Address | None
    mac: bytes | None
    """None when the link does not do ARP/ND (loopback, tun, NOARP): then nothing is announced."""


RT_TABLE_MAIN = 254
RTN_UNICAST = 1
RT_SCOPE_LINK = 253
IFF_NOARP = 0x80
IFA_F_NODAD = 0x02
INFINITY_LIFE_TIME = 0xFFFFFFFF
_GONE = (errno.EADDRNOTAVAIL, errno.ENODEV, errno.ENOENT, errno.ESRCH)


def default_address_lifetime(deadtime_ms: int, keepalive_ms: int, window_s: float = 0.0) -> int:
    """L, the VIP's kernel lifetime (valid_lft, whole seconds), when --address-lifetime is not
    given: the last bound when the agent and its fence guard die together (the whole process tree
    killed). The peer takes over no earlier than deadtime - keepalive (+ W in Kubernetes mode) after
    the last heartbeat, so L at most that leaves no overlap; the kernel counts whole seconds, so
    1 s is the floor (at deadtime 300 ms the overlap is then at most about 0.6 s, not 2.6 s), and
    3 s the ceiling (a lifetime renewed every L/3 survives a short stall)."""
    room = (deadtime_ms - keepalive_ms) / 1000 + window_s
    return max(1, min(3, int(room)))


STALE_CHECK = 0.02
"""A presence check that answered later than this (s) is not trusted for the refresh's write."""


class IPAddrDriver:
    """One virtual IP (`IPaddr::ip[/bits[/iface[/bcast]]]` or an IPv6 address) on this node."""

    def __init__(
        self,
        resource: IPResource,
        options: VIPOptions | None = None,
        *,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.resource = resource
        self.options = options or VIPOptions()
        if self.options.lifetime is not None and self.options.lifetime < 0:
            raise ValueError("lifetime must be >= 0 seconds (0 or None = permanent)")
        self._sleep = sleep
        self._clock = clock
        self.placement: Placement | None = None
        self._deadline: float | None = None
        self._announcer: Announcer | None = None
        self._lock = asyncio.Lock()

    @property
    def name(self) -> str:
        return self.resource.name

    @property
    def ip(self) -> IPv4Address | IPv6Address:
        return self.resource.address.ip

    @property
    def lifetime(self) -> int | None:
        return self.options.lifetime or None

    @property
    def expires_at(self) -> float | None:
        """Clock time by which the kernel may drop the address unless refreshed (None: permanent)."""
        return self._deadline

    def __repr__(self) -> str:
        return f"IPAddrDriver({self.name!r})"

    def _error(self, action: str, reason: str) -> ResourceError:
        return ResourceError(self.name, action, reason)

    @contextlib.asynccontextmanager
    async def _netlink(self, action: str) -> AsyncIterator[Any]:
        try:
            async with AsyncIPRoute() as ipr:
                yield ipr
        except NetlinkError as e:
            raise self._error(action, f"netlink: {e.args[1] if len(e.args) > 1 else e}") from e

    @property
    def _family(self) -> int:
        return socket.AF_INET if self.ip.version == 4 else socket.AF_INET6

    # -- lookups ---------------------------------------------------------------------------

    async def _links(self, ipr: Any) -> dict[int, Any]:
        return {link["index"]: link async for link in await ipr.link("dump")}

    async def _connected_routes(self, ipr: Any) -> list[tuple[IPv4Network | IPv6Network, int]]:
        """(subnet, interface index) of each directly connected route of the main table."""
        out: list[tuple[IPv4Network | IPv6Network, int]] = []
        async for rt in await ipr.route("dump", family=self._family):
            table = rt.get("RTA_TABLE") or rt["table"]
            if table != RT_TABLE_MAIN or rt["type"] != RTN_UNICAST or rt["dst_len"] == 0:
                continue
            if rt.get("gateway") or rt.get("multipath") or rt.get("oif") is None:
                continue
            if self._family == socket.AF_INET and rt["scope"] != RT_SCOPE_LINK:
                continue
            out.append((ip_network(f"{rt.get('dst')}/{rt['dst_len']}", strict=False), rt.get("oif")))
        return out

    async def resolve(self, ipr: Any | None = None) -> Placement:
        """Pick interface and prefix as Heartbeat's IPaddr does: what the configuration names, the
        rest from the most specific connected route whose subnet holds the VIP."""
        if ipr is None:
            async with self._netlink("start") as own:
                return await self.resolve(own)
        res = self.resource
        links = await self._links(ipr)
        index: int | None = None
        if res.interface is not None:
            index = next((i for i, link in links.items() if link.get("ifname") == res.interface), None)
            if index is None:
                raise self._error("start", f"no interface {res.interface!r} on this node")
        prefixlen = res.address.network.prefixlen if res.prefix_given else None
        if prefixlen is None or index is None:
            matches = [
                (net, oif)
                for net, oif in await self._connected_routes(ipr)
                if self.ip in net and (index is None or oif == index)
            ]
            if not matches:
                where = f" on {res.interface}" if res.interface else ""
                example = f"{self.ip}/{'24' if self.ip.version == 4 else '64'}/eth0"
                raise self._error(
                    "start",
                    f"no connected route{where} covers {self.ip}, so its prefix and interface cannot be "
                    f"derived; configure an address in that subnet first or spell them out "
                    f"({res.agent}::{example})",
                )
            net, oif = max(matches, key=lambda m: m[0].prefixlen)
            index = oif
            if prefixlen is None:
                prefixlen = net.prefixlen
        link = links.get(index)
        if link is None:
            raise self._error("start", f"interface index {index} vanished")
        broadcast: IPv4Address | None = None
        if isinstance(self.ip, IPv4Address):
            if res.broadcast is not None:
                broadcast = res.broadcast
            elif prefixlen <= 30:
                broadcast = IPv4Interface(f"{self.ip}/{prefixlen}").network.broadcast_address
        mac: bytes | None = None
        if link["ifi_type"] == ARPHRD_ETHER and not link["flags"] & IFF_NOARP and link.get("address"):
            mac = parse_mac(link.get("address"))
        return Placement(index, link.get("ifname"), prefixlen, broadcast, mac)

    async def _present(self, ipr: Any, index: int | None) -> list[tuple[int, int]]:
        """(interface index, prefix length) of every copy of the VIP, on `index` or anywhere."""
        found = []
        async for a in await ipr.addr("dump", family=self._family):
            if index is not None and a["index"] != index:
                continue
            addr = a.get("local") or a.get("address")
            if addr is not None and addr == str(self.ip):
                found.append((a["index"], a["prefixlen"]))
        return found

    async def _where(self, ipr: Any) -> int | None:
        """The interface to look at: where we put it, else the configured one, else anywhere (None)."""
        if self.placement is not None:
            return self.placement.index
        if self.resource.interface is not None:
            links = await self._links(ipr)
            for i, link in links.items():
                if link.get("ifname") == self.resource.interface:
                    return i
            return -1  # configured interface does not exist: the VIP cannot be on it
        return None

    # -- netlink writes --------------------------------------------------------------------

    async def _write(self, ipr: Any, p: Placement) -> None:
        """Add or renew the address (NLM_F_REPLACE: an existing copy gets our lifetime)."""
        kw: dict[str, Any] = {"index": p.index, "address": str(self.ip), "prefixlen": p.prefixlen}
        if p.broadcast is not None:
            kw["broadcast"] = str(p.broadcast)
        if self.ip.version == 6:
            kw["flags"] = IFA_F_NODAD  # usable at once: no duplicate address detection delay
        lft = self.lifetime
        kw["valid_lft"] = kw["preferred_lft"] = INFINITY_LIFE_TIME if lft is None else lft
        await ipr.addr("replace", **kw)

    # -- Resource --------------------------------------------------------------------------

    async def start(self) -> None:
        """Add the VIP (with its lifetime) and start announcing it."""
        async with self._lock:
            async with self._netlink("start") as ipr:
                p = await self.resolve(ipr)
                t0 = self._clock()
                await self._write(ipr, p)
            self.placement = p
            self._deadline = None if self.lifetime is None else t0 + self.lifetime
            log.info("%s: added %s/%d on %s", self.name, self.ip, p.prefixlen, p.ifname)
            self._start_announcer(p)

    def _start_announcer(self, p: Placement) -> None:
        if self._announcer is not None:
            self._announcer.stop_nowait()
            self._announcer = None
        if p.mac is None:
            log.info("%s: %s does not do ARP/ND, nothing to announce", self.name, p.ifname)
            return
        frames = announcement_frames(p.mac, self.ip, self.options.arp_mode)
        self._announcer = Announcer(
            lambda: send_frames(p.ifname, frames),
            count=self.options.arp_count,
            interval=self.options.arp_interval,
            refresh=self.options.arp_refresh,
            sleep=self._sleep,
            what=f"{self.name}: {'gratuitous ARP' if self.ip.version == 4 else 'unsolicited NA'} "
            f"on {p.ifname}",
            still_ours=self._still_here,
        )
        self._announcer.start()

    async def _still_here(self) -> bool:
        if self.placement is None:
            return False
        try:
            return await self.status() is ResourceState.RUNNING  # looks where we placed it
        except ResourceError:
            return True  # cannot tell: announce, as before this check existed

    async def announce(self) -> None:
        """Send one announcement round now (e.g. when the peer comes back); nothing if not held."""
        if self._announcer is not None:
            await self._announcer.send_if_ours()

    async def refresh(self) -> None:
        """Renew the kernel lifetime of the VIP we hold (nothing to do if not held or permanent).

        Never re-creates the address: if it expired (the agent stalled past the lifetime) or was
        removed, the hold is lost, the driver forgets it and this raises ResourceError once.
        """
        async with self._lock:
            p, deadline = self.placement, self._deadline
            if p is None or deadline is None:
                return
            if self._clock() >= deadline:
                await self._lose("refresh", f"its {self.lifetime} s lifetime ran out before it was renewed")
            async with self._netlink("refresh") as ipr:
                # `addr replace` re-creates an address that is gone: the presence check must be
                # fresh. A check that took long means the loop stalled after it, and the fence guard
                # may have removed the address meanwhile (sim: stall_in_refresh): check again.
                for _attempt in range(3):
                    t_check = self._clock()
                    if not await self._present(ipr, p.index):
                        await self._lose("refresh", f"the address is gone from {p.ifname}")
                    if self._clock() - t_check < STALE_CHECK:
                        break
                else:
                    return  # never a fresh answer (an overloaded host): renew next time
                t0 = self._clock()
                await self._write(ipr, p)
            # A renewal that completed after the old deadline may have re-created an expired address.
            if self._clock() >= deadline:
                await self._lose(
                    "refresh", f"its {self.lifetime} s lifetime ran out while it was being renewed"
                )
            self._deadline = t0 + (self.lifetime or 0)

    async def _lose(self, action: str, why: str) -> NoReturn:
        """The hold ended without a stop: remove any leftover copy, forget it, and raise."""
        with contextlib.suppress(ResourceError):
            await self._stop()
        raise self._error(action, why)

    async def fence(self) -> None:
        """Self-fencing: remove the VIP now (one netlink call), before the services stop."""
        await self.stop()

    async def stop(self) -> None:
        """Stop announcing and remove the VIP; already absent is fine."""
        async with self._lock:
            await self._stop()

    async def _stop(self) -> None:
        if self._announcer is not None:
            await self._announcer.stop()
            self._announcer = None
        async with self._netlink("stop") as ipr:
            index = await self._where(ipr)
            for idx, prefixlen in await self._present(ipr, index):
                try:
                    await ipr.addr("del", index=idx, address=str(self.ip), prefixlen=prefixlen)
                except NetlinkError as e:
                    if e.code not in _GONE:
                        raise
                log.info("%s: removed %s/%d", self.name, self.ip, prefixlen)
        self.placement = None
        self._deadline = None

    async def status(self) -> ResourceState:
        """RUNNING if the address is on its interface (anywhere, if no interface is known yet)."""
        async with self._netlink("status") as ipr:
            present = await self._present(ipr, await self._where(ipr))
        return ResourceState.RUNNING if present else ResourceState.STOPPED
