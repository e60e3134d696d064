"""What kind of move a change of holdings was: the agent says it, the operator never parses reasons."""

from __future__ import annotations

from enum import StrEnum


class TransitionKind(StrEnum):
    """Why a node's holdings changed, as its engine decided it (engine.actions Acquire/Release)."""

    FAILOVER = "failover"
    """Taken from a peer declared dead (its gap without an owner is reported)."""
    HANDOVER = "handover"
    """Given to, or taken from, a live peer: standby, switchover, failback, a healed partition."""
    START = "start"
    """Taken while nobody held them: the home node at start-up, a start tried again."""
    STOP = "stop"
    """Given up with nobody taking them: shutdown."""
    FENCE = "fence"
    """Given up because the right to hold them was lost (the Lease, a higher epoch, a stopped clock)."""
