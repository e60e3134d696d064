"""The narrow interface between the node agent and its heartbeat media, and the shared retry logic.

A medium moves bytes: it knows nothing of messages, authentication or membership. It reports
every datagram/frame it receives and every change of its own usability (with a reason) to a
:class:`MediumEvents`; :meth:`Medium.send` never blocks and never raises, so one broken link
cannot stall the agent or the other links.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Literal, Protocol

from hacluster_api.heartbeat.hacf_model import BcastMedium, McastMedium, SerialMedium, UcastMedium

from ..wire.codec import Encoding

__all__ = [
    "DEFAULT_LOCK_DIR",
    "DEFAULT_RETRY_INTERVAL",
    "Encoding",
    "Medium",
    "MediumEvents",
    "MediumFailure",
    "MediumStats",
    "SupervisedMedium",
    "build_media",
    "host_addresses",
    "open_media",
]

log = logging.getLogger(__name__)

DEFAULT_RETRY_INTERVAL = 1.0
"""Seconds between attempts to (re)open a failed medium, and between health checks of a working one."""
DEFAULT_LOCK_DIR = "/var/lock"

IPAddress = IPv4Address | IPv6Address
MediumKind = Literal["bcast", "mcast", "mcast6", "ucast", "ucast6", "serial"]


class MediumEvents(Protocol):
    """What a medium reports to its owner. Called from the event loop, never from inside send()."""

    def packet_received(self, medium: str, data: bytes) -> None:
        """One datagram (UDP) or one complete `>>>`…`<<<` frame (serial), unparsed."""
        ...

    def medium_state(self, medium: str, up: bool, reason: str) -> None:
        """The medium became usable (up) or unusable (down); `reason` says why, for the log."""
        ...


class Medium(Protocol):
    """One heartbeat link as Heartbeat names it: the interface ("eth0") or the device ("/dev/ttyS0")."""

    name: str
    kind: MediumKind
    encoding: Encoding
    """What the caller must hand to send(): UDP sends netstring, serial lines must carry classic."""

    @property
    def up(self) -> bool: ...

    async def start(self, events: MediumEvents) -> None:
        """Open the medium (or report it down and keep retrying); reports its first state soon."""
        ...

    def send(self, data: bytes) -> None:
        """Queue one encoded message. Never blocks, never raises: failures go to medium_state."""
        ...

    async def close(self) -> None:
        """Stop retrying and release sockets, devices and locks. No state report follows."""
        ...


class MediumFailure(Exception):
    """Why a medium cannot be opened or used right now (the text goes to medium_state)."""


@dataclass
class MediumStats:
    """Counters for diagnostics: what went out, what came in, what was dropped and why."""

    sent: int = 0
    received: int = 0
    dropped_down: int = 0
    """send() while the medium was down."""
    dropped_overflow: int = 0
    """Send queue/buffer full (oldest dropped on serial)."""
    dropped_oversize: int = 0
    """Too large to send or to accept (> MAX_PACKET, or > one UDP datagram)."""
    send_errors: int = 0
    """Transient send errors that did not take the medium down (ENOBUFS, EHOSTUNREACH...)."""
    write_timeouts: int = 0
    """Serial: a write could not finish within its timeout (flow control held, bad cable)."""
    frames_discarded: int = 0
    """Serial: frames abandoned by the framer (oversized, interrupted by a new start line or BREAK)."""


class SupervisedMedium(ABC):
    """The open / report / retry cycle every medium shares.

    The first state is reported once start() has tried to open. While down, the medium tries to
    reopen every `retry_interval`; while up, it runs a cheap health check at the same period.
    Only transitions are reported, each once, and always via the event loop so that a failure
    detected inside send() does not call back into the owner re-entrantly.
    """

    name: str
    kind: MediumKind
    encoding: Encoding

    def __init__(self, *, retry_interval: float = DEFAULT_RETRY_INTERVAL) -> None:
        if retry_interval <= 0:
            raise ValueError("retry_interval must be positive")
        self.retry_interval = retry_interval
        self.stats = MediumStats()
        self.last_reason = ""
        self._up = False
        self._reported: bool | None = None
        self._events: MediumEvents | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # -- public ------------------------------------------------------------------------------
    @property
    def up(self) -> bool:
        return self._up

    async def start(self, events: MediumEvents) -> None:
        if self._events is not None:
            raise RuntimeError(f"medium {self.name} already started")
        self._events = events
        await self._attempt()
        self._task = asyncio.create_task(self._supervise(), name=f"medium {self.kind} {self.name}")

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._up = False
        self._close_io()

    def __repr__(self) -> str:
        state = "up" if self._up else f"down ({self.last_reason})"
        return f"<{type(self).__name__} {self.kind} {self.name} {state}>"

    @abstractmethod
    def send(self, data: bytes) -> None:
        """Queue one encoded message; never blocks, never raises (see Medium.send)."""

    # -- for subclasses ------------------------------------------------------------------------
    @abstractmethod
    async def _open(self) -> None:
        """Acquire sockets/devices; raise MediumFailure (or OSError) saying why it cannot."""

    @abstractmethod
    def _close_io(self) -> None:
        """Release whatever _open acquired; must be idempotent and never raise."""

    def _check(self) -> str | None:
        """Health check while up: None if fine, else the reason the medium is no longer usable."""
        return None

    def _fail(self, reason: str) -> None:
        """The medium stopped working: release it, report down once, let the supervisor retry."""
        if self._closed or not self._up:
            return
        self._close_io()
        self._set_state(False, reason)

    def _deliver(self, data: bytes) -> None:
        """Hand one packet to the owner; an owner's bug must not kill the reader."""
        self.stats.received += 1
        if self._events is None:
            return
        try:
            self._events.packet_received(self.name, data)
        except Exception:
            log.exception("packet_received handler failed for medium %s", self.name)

    # -- internals ---------------------------------------------------------------------------------
    async def _attempt(self) -> None:
        try:
            await self._open()
        except asyncio.CancelledError:
            self._close_io()
            raise
        except Exception as exc:
            self._close_io()
            self._set_state(False, _reason(exc))
            return
        if self._closed:
            self._close_io()
            return
        self._set_state(True, "opened")

    async def _supervise(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.retry_interval)
            if self._up:
                try:
                    reason = self._check()
                except Exception as exc:
                    reason = _reason(exc)
                if reason is not None:
                    self._fail(reason)
            else:
                await self._attempt()

    def _set_state(self, up: bool, reason: str) -> None:
        self._up = up
        if not up:
            self.last_reason = reason
        if self._reported is up:
            return
        self._reported = up
        if up:
            log.info("medium %s %s up", self.kind, self.name)
        else:
            log.warning("medium %s %s down: %s", self.kind, self.name, reason)
        asyncio.get_running_loop().call_soon(self._report, up, reason)

    def _report(self, up: bool, reason: str) -> None:
        if self._closed or self._events is None:
            return
        try:
            self._events.medium_state(self.name, up, reason)
        except Exception:
            log.exception("medium_state handler failed for medium %s", self.name)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, MediumFailure):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror}{where} [errno {exc.errno}]"
    return f"{type(exc).__name__}: {exc}"


HacfMedium = BcastMedium | UcastMedium | McastMedium | SerialMedium


def build_media(
    media: Sequence[HacfMedium],
    local_addresses: Iterable[IPAddress | str],
    *,
    retry_interval: float = DEFAULT_RETRY_INTERVAL,
    lock_dir: str | os.PathLike[str] = DEFAULT_LOCK_DIR,
    rtscts: bool = True,
) -> list[SupervisedMedium]:
    """Build (not start) an adapter per ha.cf media line.

    A ucast line whose peer is one of `local_addresses` is skipped, as Heartbeat does, so that
    both nodes can share one ha.cf.
    """
    from .serial import SerialLine
    from .udp import UdpBroadcast, UdpMulticast, UdpUnicast

    local = {ip_address(a) for a in local_addresses}
    out: list[SupervisedMedium] = []
    for m in media:
        if isinstance(m, BcastMedium):
            out.append(UdpBroadcast(m.interface, m.port, retry_interval=retry_interval))
        elif isinstance(m, UcastMedium):
            if m.peer in local:
                log.info("ucast %s %s: own address, skipped", m.interface, m.peer)
                continue
            out.append(UdpUnicast(m.interface, m.peer, m.port, retry_interval=retry_interval))
        elif isinstance(m, McastMedium):
            out.append(
                UdpMulticast(
                    m.interface, m.group, m.port, ttl=m.ttl, loop=bool(m.loop), retry_interval=retry_interval
                )
            )
        else:
            out.append(
                SerialLine(
                    m.device,
                    m.baud,
                    rtscts=rtscts,
                    lock_dir=os.fspath(lock_dir),
                    retry_interval=retry_interval,
                )
            )
    return out


async def open_media(
    media: Sequence[HacfMedium],
    events: MediumEvents,
    *,
    local_addresses: Iterable[IPAddress | str] | None = None,
    retry_interval: float = DEFAULT_RETRY_INTERVAL,
    lock_dir: str | os.PathLike[str] = DEFAULT_LOCK_DIR,
    rtscts: bool = True,
) -> list[Medium]:
    """Build the adapters (see build_media) and start them all, reporting to `events`.

    Without `local_addresses` this host's addresses are looked up (host_addresses()). A medium
    that cannot open yet is reported down and keeps retrying; this never fails because of one.
    """
    if local_addresses is None:
        local_addresses = await host_addresses()
    built = build_media(
        media, local_addresses, retry_interval=retry_interval, lock_dir=lock_dir, rtscts=rtscts
    )
    await asyncio.gather(*(m.start(events) for m in built))
    return list(built)


async def host_addresses() -> set[IPAddress]:
    """Every address configured on this host (this network namespace), for open_media()."""
    from pyroute2 import AsyncIPRoute

    found: set[IPAddress] = set()
    async with AsyncIPRoute() as ipr:
        async for msg in await ipr.addr("dump"):
            value = msg.get("local") or msg.get("address")  # IFA_LOCAL is ours on point-to-point links
            if value:
                found.add(ip_address(str(value).split("%")[0]))
    return found
