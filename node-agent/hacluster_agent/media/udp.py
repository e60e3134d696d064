"""UDP heartbeat media (bcast, mcast, ucast; IPv6 ucast6/mcast6 too) with Heartbeat's socket layout.

As in Heartbeat 3.0.6 the receive socket binds the port with SO_REUSEADDR + SO_REUSEPORT +
SO_BINDTODEVICE, so it can share a host with a real heartbeat daemon, and the send socket is a
separate, unbound socket (ephemeral source port) with SO_BINDTODEVICE and TOS IPTOS_LOWDELAY.
Source addresses are not checked: peers are known by the `src` field, which is the caller's
business.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import socket
import struct
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from ..wire.codec import MAX_PACKET
from .base import DEFAULT_RETRY_INTERVAL, Encoding, MediumFailure, MediumKind, SupervisedMedium

__all__ = ["UdpBroadcast", "UdpMedium", "UdpMulticast", "UdpUnicast", "interface_state"]

IPTOS_LOWDELAY = 0x10
IP_MULTICAST_ALL = 49  # linux/in.h; not exported by the socket module
IPV6_MULTICAST_ALL = 29
SIOCGIFFLAGS = 0x8913
IFF_UP = 0x1
IFF_RUNNING = 0x40  # operstate UP or UNKNOWN: carrier present
MAX_DATAGRAM = {socket.AF_INET: 65507, socket.AF_INET6: 65527}

# send errors that lose one datagram but say nothing about our own link
_TRANSIENT = frozenset(
    {errno.ENOBUFS, errno.EAGAIN, errno.EMSGSIZE, errno.EHOSTUNREACH, errno.EHOSTDOWN, errno.ECONNREFUSED}
)

Address = tuple[Any, ...]


def interface_state(name: str) -> tuple[int, int]:
    """(ifindex, flags) of a network interface via ioctl: cheap enough to poll every second."""
    try:
        index = socket.if_nametoindex(name)
    except (OSError, ValueError):
        raise MediumFailure(f"interface {name} not found") from None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH22x", name.encode(), 0)
        try:
            res = fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, req)
        except OSError:
            raise MediumFailure(f"interface {name} not found") from None
    (flags,) = struct.unpack_from("H", res, 16)
    return index, flags


def _usable(name: str, flags: int) -> str | None:
    if not flags & IFF_UP:
        return f"interface {name} is down"
    if not flags & IFF_RUNNING:
        return f"interface {name} has no carrier"
    return None


class UdpMedium(SupervisedMedium):
    """Common machinery: two sockets as asyncio datagram endpoints, a per-period interface check."""

    encoding: Encoding = "netstring"
    family: socket.AddressFamily = socket.AF_INET

    def __init__(self, interface: str, port: int, *, retry_interval: float = DEFAULT_RETRY_INTERVAL) -> None:
        super().__init__(retry_interval=retry_interval)
        if not 0 < port < 65536:
            raise ValueError(f"bad UDP port {port}")
        self.name = interface
        self.port = port
        self.ifindex = 0
        self.destination: Address | None = None
        self._rx: asyncio.DatagramTransport | None = None
        self._tx: asyncio.DatagramTransport | None = None
        self._tx_paused = False  # the kernel said EAGAIN and asyncio's buffer passed its high-water mark

    # -- hooks -----------------------------------------------------------------------------------
    def _rx_address(self, ifindex: int) -> Address:
        if self.family == socket.AF_INET6:
            return ("::", self.port, 0, 0)
        return ("0.0.0.0", self.port)

    def _setup_rx(self, sock: socket.socket, ifindex: int) -> None:
        """Kind-specific receive options; the default keeps others' multicast groups out."""
        if self.family == socket.AF_INET:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
        else:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_ALL, 0)

    def _setup_tx(self, sock: socket.socket, ifindex: int) -> None:
        """Kind-specific send options (broadcast permission, multicast interface/TTL/loop)."""

    async def _destination(self, ifindex: int) -> Address:
        raise NotImplementedError

    # -- SupervisedMedium ----------------------------------------------------------------------------
    async def _open(self) -> None:
        index, flags = interface_state(self.name)
        problem = _usable(self.name, flags)
        if problem:
            raise MediumFailure(problem)
        destination = await self._destination(index)
        loop = asyncio.get_running_loop()
        rx = tx = None
        try:
            rx = socket.socket(self.family, socket.SOCK_DGRAM)
            rx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            rx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            rx.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.name.encode())
            if self.family == socket.AF_INET6:
                rx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            self._setup_rx(rx, index)
            rx.bind(self._rx_address(index))
            tx = socket.socket(self.family, socket.SOCK_DGRAM)
            tx.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.name.encode())
            if self.family == socket.AF_INET6:
                tx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                tx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, IPTOS_LOWDELAY)
            else:
                tx.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, IPTOS_LOWDELAY)
            self._setup_tx(tx, index)
            self._rx, _ = await loop.create_datagram_endpoint(lambda: _Receiver(self), sock=rx)
            rx = None
            self._tx, _ = await loop.create_datagram_endpoint(lambda: _Sender(self), sock=tx)
            tx = None
        except OSError as exc:
            raise MediumFailure(
                f"{self.kind} {self.name} port {self.port}: socket setup failed: {exc}"
            ) from exc
        finally:
            for s in (rx, tx):
                if s is not None:
                    s.close()
        self.ifindex = index
        self.destination = destination

    def _close_io(self) -> None:
        for transport in (self._rx, self._tx):
            if transport is not None:
                transport.abort()
        self._rx = self._tx = None
        self._tx_paused = False

    def _check(self) -> str | None:
        try:
            index, flags = interface_state(self.name)
        except MediumFailure as exc:
            return str(exc)
        if index != self.ifindex:
            return f"interface {self.name} was replaced"
        return _usable(self.name, flags)

    # -- Medium --------------------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        tx, destination = self._tx, self.destination
        if not self._up or tx is None or destination is None:
            self.stats.dropped_down += 1
            return
        if len(data) > MAX_DATAGRAM[self.family]:
            self.stats.dropped_oversize += 1
            return
        if self._tx_paused:
            self.stats.dropped_overflow += 1
            return
        try:
            tx.sendto(data, destination)
        except Exception as exc:  # the transport reports most errors via error_received
            self._send_error(exc)
            return
        self.stats.sent += 1

    def _send_error(self, exc: BaseException) -> None:
        if isinstance(exc, OSError) and exc.errno in _TRANSIENT:
            self.stats.send_errors += 1
            return
        self._fail(f"send on {self.name} failed: {exc}")

    def _datagram(self, data: bytes) -> None:
        if len(data) > MAX_PACKET:
            self.stats.dropped_oversize += 1
            return
        self._deliver(data)


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self, medium: UdpMedium) -> None:
        self.medium = medium

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.medium._datagram(data)

    def error_received(self, exc: Exception) -> None:
        self.medium._send_error(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self.medium._fail(f"receive socket on {self.medium.name} failed: {exc}")


class _Sender(asyncio.DatagramProtocol):
    def __init__(self, medium: UdpMedium) -> None:
        self.medium = medium

    def error_received(self, exc: Exception) -> None:
        self.medium._send_error(exc)

    def pause_writing(self) -> None:
        self.medium._tx_paused = True

    def resume_writing(self) -> None:
        self.medium._tx_paused = False

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self.medium._fail(f"send socket on {self.medium.name} failed: {exc}")


class UdpBroadcast(UdpMedium):
    """`bcast IFACE`: to the interface's own broadcast address, looked up each time it opens.

    An interface without an IPv4 broadcast address is a failure: Heartbeat would send to
    0.0.0.0 there and never reach the peer, silently splitting the brain.
    """

    kind: MediumKind = "bcast"

    def _setup_tx(self, sock: socket.socket, ifindex: int) -> None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)

    async def _destination(self, ifindex: int) -> Address:
        broadcast = await broadcast_address(ifindex)
        if broadcast is None:
            raise MediumFailure(
                f"interface {self.name} has no IPv4 broadcast address (Heartbeat would send to 0.0.0.0)"
            )
        return (broadcast, self.port)


async def broadcast_address(ifindex: int) -> str | None:
    """The IPv4 broadcast address of an interface, preferring its primary address."""
    from pyroute2 import AsyncIPRoute

    found: list[tuple[int, str]] = []
    async with AsyncIPRoute() as ipr:
        async for msg in await ipr.addr("dump"):
            if msg["index"] != ifindex or msg["family"] != socket.AF_INET:
                continue
            brd = msg.get("broadcast")
            if brd and brd != "0.0.0.0":
                found.append((msg["flags"] & 0x01, str(brd)))  # IFA_F_SECONDARY sorts last
    return min(found)[1] if found else None


class UdpUnicast(UdpMedium):
    """`ucast IFACE PEER` (or ucast6): one datagram per message to the peer."""

    def __init__(
        self,
        interface: str,
        peer: IPv4Address | IPv6Address,
        port: int,
        *,
        retry_interval: float = DEFAULT_RETRY_INTERVAL,
    ) -> None:
        super().__init__(interface, port, retry_interval=retry_interval)
        self.peer = peer
        if isinstance(peer, IPv6Address):
            self.family = socket.AF_INET6
            self.kind = "ucast6"
        else:
            self.kind = "ucast"

    async def _destination(self, ifindex: int) -> Address:
        if isinstance(self.peer, IPv6Address):
            return (str(self.peer), self.port, 0, ifindex if self.peer.is_link_local else 0)
        return (str(self.peer), self.port)


class UdpMulticast(UdpMedium):
    """`mcast IFACE GROUP PORT TTL LOOP` (or mcast6): joins the group on that interface only.

    The receive socket binds the group address itself (as Heartbeat does), so unicast and other
    groups on the same port are not mixed in.
    """

    def __init__(
        self,
        interface: str,
        group: IPv4Address | IPv6Address,
        port: int,
        *,
        ttl: int = 1,
        loop: bool = False,
        retry_interval: float = DEFAULT_RETRY_INTERVAL,
    ) -> None:
        super().__init__(interface, port, retry_interval=retry_interval)
        if not group.is_multicast:
            raise ValueError(f"{group} is not a multicast group")
        if not 0 <= ttl <= 255:
            raise ValueError(f"bad multicast ttl {ttl}")
        self.group = group
        self.ttl = ttl
        self.loop = loop
        if isinstance(group, IPv6Address):
            self.family = socket.AF_INET6
            self.kind = "mcast6"
        else:
            self.kind = "mcast"

    def _rx_address(self, ifindex: int) -> Address:
        if isinstance(self.group, IPv6Address):
            return (str(self.group), self.port, 0, ifindex)
        return (str(self.group), self.port)

    def _setup_rx(self, sock: socket.socket, ifindex: int) -> None:
        if isinstance(self.group, IPv6Address):
            mreq6 = self.group.packed + struct.pack("@I", ifindex)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq6)
        else:
            mreqn = self.group.packed + bytes(4) + struct.pack("@i", ifindex)  # struct ip_mreqn
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)

    def _setup_tx(self, sock: socket.socket, ifindex: int) -> None:
        if isinstance(self.group, IPv6Address):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, self.ttl)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, int(self.loop))
        else:
            mreqn = bytes(8) + struct.pack("@i", ifindex)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, self.ttl)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, int(self.loop))

    async def _destination(self, ifindex: int) -> Address:
        if isinstance(self.group, IPv6Address):
            return (str(self.group), self.port, 0, ifindex)
        return (str(self.group), self.port)
