"""What the membership engine asks its driver to do. The engine never performs I/O itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from hacluster_api.transition import TransitionKind

from ..wire.message import Message


class Side(StrEnum):
    """Heartbeat's two halves of haresources, seen from one node: its home groups and its peer's."""

    LOCAL = "local"
    FOREIGN = "foreign"


def hold_word(sides: frozenset[Side]) -> str:
    """The `rsc_hold` word for a set of sides (none/local/foreign/all)."""
    if sides >= {Side.LOCAL, Side.FOREIGN}:
        return "all"
    if Side.LOCAL in sides:
        return "local"
    if Side.FOREIGN in sides:
        return "foreign"
    return "none"


def sides_of(word: str | None) -> frozenset[Side] | None:
    return {
        "all": frozenset({Side.LOCAL, Side.FOREIGN}),
        "local": frozenset({Side.LOCAL}),
        "foreign": frozenset({Side.FOREIGN}),
        "none": frozenset(),
    }.get(word or "")


def flip(sides: frozenset[Side]) -> frozenset[Side]:
    """A peer's 'local' is our 'foreign' and vice versa."""
    return frozenset(Side.FOREIGN if s is Side.LOCAL else Side.LOCAL for s in sides)


@dataclass(frozen=True)
class Send:
    """Put a message on every medium (the engine has already added the standard fields)."""

    message: Message


@dataclass(frozen=True)
class Acquire:
    """Start the groups of these sides, left to right; report back with Engine.resources_done."""

    sides: frozenset[Side]
    reason: str
    kind: TransitionKind
    op: int = 0
    services_at: float | None = None
    """Start the groups' addresses now, and every other member no earlier than this (our clock):
    the peer we took over from may still be stopping its services, or be about to be reset by its
    watchdog, until then (its node fence, `hacfence`; docs/safety.md). None: no wait."""


@dataclass(frozen=True)
class Release:
    """Stop the groups of these sides, right to left; report back with Engine.resources_done.
    `fence`: we may no longer own them (the Lease is lost): remove every VIP first, at once, then
    stop the services."""

    sides: frozenset[Side]
    reason: str
    kind: TransitionKind
    op: int = 0
    fence: bool = False


@dataclass(frozen=True)
class Arbitrate:
    """Ask the Lease (Kubernetes mode): `take` before acquiring, `renew` when the owner loses its
    peer, `release` once our resources are stopped, `handback` when a take was granted but the peer
    turned out alive and holding (give the Lease back to it). Report take/renew with Engine.arbitrated."""

    kind: str  # take | renew | release | handback
    op: int
    reason: str
    timeout: float | None = None
    """Unanswered after this long (s), the request counts as unavailable (the driver cancels it;
    a write already sent may still be applied). Renewals: W/2, so the owner fences itself before
    the peer may take the Lease (docs/safety.md). None: no deadline."""
    hold_off: float | None = None
    """Takes: the owner went silent after we heard it, so it has been proving itself since before
    we declared it dead; the window counts from when we first saw the Lease's current version, and
    the swap waits at least this long (s) from the take's start (engine/window.py). None: the
    window counts from the take's first read."""
    window: float | None = None
    """Takes: the window to watch (s): the longer of ours and the peer's (`hacwindow`), whose
    renewals come every W/4 of its own W while the two differ (a change of W rolls the agents one
    at a time). None: the arbiter's own."""


@dataclass(frozen=True)
class FenceNode:
    """Reset this node: stop feeding its watchdog, which resets it within its timeout. A
    self-fencing stop failed or overran its budget: a service may still run beside the new
    owner's copy, and only the machine going down ends it (Heartbeat's `watchdog`, SBD's rule)."""

    reason: str


@dataclass(frozen=True)
class Announce:
    """Re-send gratuitous ARP / unsolicited NA for the VIPs we hold (after a partition heals)."""

    reason: str


@dataclass(frozen=True)
class PeerChanged:
    """The peer's liveness changed (alive/dead), for logs, status and metrics."""

    peer: str
    alive: bool
    reason: str
    silent_for: float = 0.0


@dataclass(frozen=True)
class LinkChanged:
    """One medium to the peer went up or down."""

    peer: str
    medium: str
    up: bool


@dataclass(frozen=True)
class Note:
    """A log line worth keeping (late heartbeat, rejected packet, refused request)."""

    level: str
    text: str
    counter: str | None = None
    labels: dict[str, str] = field(default_factory=dict)


Action = Send | Acquire | Release | Arbitrate | FenceNode | Announce | PeerChanged | LinkChanged | Note
