"""The ownership states of one node and the transitions between them, as tables (h11's `_state.py`
is the model): what the engine may do next from where it is, checked after every event.

The engine keeps its facts in a few fields (what it holds, the resource operation in flight, the
Lease take in flight, the Lease held, a fencing owed). `state_of` reads them as one of six states;
`TRANSITIONS` lists, per mode, every state a node may go to from each state in one event. A move
outside the table is a bug of the engine: it is reported (a Note, the `illegal_transition`
counter, `Engine.illegal`) and the simulation counts it as a violation at the step it happens.
`SERVES` says in which states the kernel fence may be open (Engine.serve_until).

docs/safety.md shows these tables; tests/unit/test_ownership.py checks that the docs and the tables
agree and that every state is reachable and left.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from .actions import Acquire, Release

if TYPE_CHECKING:
    from .membership import Engine


class Own(enum.Enum):
    """Where a node stands with respect to the resource groups (and, in Kubernetes mode, the Lease)."""

    STANDBY = "standby"
    """Holds nothing and asks for nothing."""
    TAKING = "taking"
    """Kubernetes mode: a take of the Lease is in flight; nothing starts before it is granted. It
    may hold the other group meanwhile (taking the peer's group while keeping its own)."""
    STARTING = "starting"
    """Starting resources (VIP, then services): after a granted take in Kubernetes mode."""
    OWNER = "owner"
    """Holds one or both groups, nothing in flight."""
    STOPPING = "stopping"
    """Stopping resources on purpose: a planned move, standby, shutdown, a failed start; or such a
    stop failed and is owed (tried again later)."""
    FENCING = "fencing"
    """Stopping because the right to hold was lost (the Lease, a higher epoch, a stopped clock):
    the kernel fence is closed before anything else runs. A failed fencing stop stays here until
    a retry succeeds."""


def state_of(e: Engine) -> Own:
    """The state the engine's fields describe (the first rule that applies)."""
    flux = e.flux
    if flux is None and e.release_retry is None and e.fence_owed is None:  # the common case, first
        if e.arbitration is not None:
            return Own.TAKING
        return Own.OWNER if e.hold else Own.STANDBY
    retry = e.release_retry[1] if e.release_retry is not None else None  # a failed stop, owed
    if e.fence_owed is not None or (isinstance(flux, Release) and flux.fence) or (retry and retry.fence):
        return Own.FENCING
    if isinstance(flux, Release) or retry is not None:
        return Own.STOPPING
    if isinstance(flux, Acquire):
        return Own.STARTING
    if e.arbitration is not None:
        return Own.TAKING
    if e.hold:
        return Own.OWNER
    return Own.STANDBY


S, T, ST, OW, SP, F = Own.STANDBY, Own.TAKING, Own.STARTING, Own.OWNER, Own.STOPPING, Own.FENCING

KUBE_TRANSITIONS: dict[Own, frozenset[Own]] = {
    # A standby asks the Lease first; it starts nothing on its own.
    S: frozenset({S, T}),
    # Granted: start. Refused, or the peer is heard holding: back to standby (or to the group it
    # kept, if it held one).
    T: frozenset({T, ST, S, OW}),
    # Started; or a start failed and what started is stopped (by the start itself: standby at
    # once, or by a release); or the Lease was lost meanwhile.
    # A failed start that rolled itself back frees the Lease; the peer dead to it, it asks for the
    # Lease again in the same event (standby, then taking: sim seeds 755799, 857800, 1090884).
    ST: frozenset({ST, OW, SP, F, S, T}),
    # Asks for the other group; gives groups up (planned) or is fenced.
    OW: frozenset({OW, T, SP, F}),
    # Stopped: holds nothing, or still holds the group it kept; or holds nothing and asks the Lease
    # again at once (the peer it stopped for is gone: sim seed 104251). A Lease lost during a
    # planned stop makes it a fencing stop.
    SP: frozenset({SP, S, OW, F, T}),
    # Fenced down to nothing (a failed fencing stop is retried, still fencing: see Engine
    # release_retry).
    # A node fenced down to nothing asks the Lease again at once if the peer is gone (a take,
    # never a start: the Lease decides).
    F: frozenset({F, S, T}),
}

STANDALONE_TRANSITIONS: dict[Own, frozenset[Own]] = {
    # Heartbeat's rules: no Lease, no take, no fencing (the fence guard and the kernel lifetime
    # are the node's own, outside the engine).
    S: frozenset({S, ST}),
    T: frozenset({T}),  # never entered
    ST: frozenset({ST, OW, SP, S}),
    OW: frozenset({OW, ST, SP}),
    SP: frozenset({SP, S, OW, ST}),
    F: frozenset({F}),  # never entered
}

SERVES = frozenset({ST, OW, SP})
"""The states in which the kernel fence may be open (Kubernetes mode): starting after a granted
take, holding, and stopping on purpose (the Lease is kept until everything is stopped, and the VIP
goes last). Never while taking, fencing or in standby."""


def transitions(arbitrated: bool) -> dict[Own, frozenset[Own]]:
    return KUBE_TRANSITIONS if arbitrated else STANDALONE_TRANSITIONS


def render(arbitrated: bool) -> str:
    """The table as Markdown, for docs/safety.md (a test keeps the two equal)."""
    table = transitions(arbitrated)
    names = [o.value for o in Own]
    lines = ["| from \\ to | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for a in Own:
        cells = ["yes" if b in table[a] and b is not a else ("·" if b is a else "") for b in Own]
        lines.append(f"| **{a.value}** | " + " | ".join(cells) + " |")
    return "\n".join(lines)
