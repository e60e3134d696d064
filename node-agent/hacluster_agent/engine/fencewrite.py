"""What the kernel fence's next write is (resources/kernelfence.py writes it): pure, in the engine
package so that the daemon and the simulation decide with the same code (the simulation compiles
the engine: this runs on every fence sync, every 25 ms of every run)."""

from __future__ import annotations

import math
from dataclasses import dataclass

REFRESH_STEP = 0.01
"""A later deadline is written only when it gains at least this much (s): one write per status."""
SYNC_EVERY = 0.025
"""The agent looks at the engine's deadline (and its clocks) at least this often (s)."""
IDLE_WAKE = 1.0
"""While the fence is closed nothing runs out: the agent's loop only looks this often (s); the
event that opens it wakes the loop at once."""


@dataclass(frozen=True)
class Write:
    """One change to make: open for `timeout` seconds from the moment it is applied, or close."""

    timeout: float | None  # None: close now


def next_write(until: float | None, installed: float | None, now: float) -> Write | None:
    """The write (if any) that brings the kernel from `installed` (the deadline last written, None
    when unknown, -inf when closed) to the engine's `until`, at `now`. Pure: the daemon and the
    simulation both decide with it."""
    if until is None:
        return None
    if until <= now:
        if installed is None or installed > -math.inf:
            return Write(None)
        return None
    if installed is None or until < installed or until > installed + REFRESH_STEP:
        return Write(until - now)
    return None


def sync_interval(window: float) -> float:
    """How often the agent syncs the fence: SYNC_EVERY, or W/8 for a short arbitration window. After
    a paused VM resumes, its first look closes the fence: this bounds how long it answered."""
    return min(SYNC_EVERY, window / 8)
