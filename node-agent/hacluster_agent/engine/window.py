"""The arbitration window W (docs/safety.md): its default from the heartbeat timings, and how long a
standby that lost a live owner still waits after declaring it dead before its compare-and-swap.

The owner starts proving itself (renewing the Lease every W/4, each renewal within W/2, or it fences
itself) a keepalive before the standby can declare it dead (`hacheard`). So once the standby has seen
the Lease's version unchanged for W, the only owner it can still overlap is one whose renewals all
failed: gone by W/2 (its first renewal's deadline) plus W/4 (the VIP's removal and the clocks'
drift) after it began, that is `3W/4 - k` after the declaration at most.
"""

from __future__ import annotations

import math

from hacluster_api.limits import MAX_WINDOW_MS, MIN_WINDOW_MS

MIN_WINDOW = MIN_WINDOW_MS / 1000
"""Below 100 ms a renewal has under 50 ms to reach the API server (hacluster_api.limits)."""
MAX_WINDOW = MAX_WINDOW_MS / 1000
"""Above 10 s a failover may wait that long for nothing."""
DRIFT = 0.001
"""The clock-rate difference between the two nodes allowed for (1000 ppm; crystals are within
100 ppm): every interval here is measured by one node on its own monotonic clock."""


def take_hold_off(window: float, keepalive: float, deadtime: float) -> float:
    """Seconds a standby still waits after declaring the owner dead, when the Lease's version has
    already been unchanged for `window`: 3W/4 - k (plus the drift over a deadtime), at least 0."""
    return max(0.0, 0.75 * window - keepalive + DRIFT * deadtime)


def default_window(keepalive: float, deadtime: float) -> float:
    """W when none is set: the largest that costs a failover nothing (`take_hold_off` is 0), so the
    owner's renewals get as long as possible (W/2) to reach the API server. Whole milliseconds,
    within [MIN_WINDOW, MAX_WINDOW]: 132 ms at 100 ms / 300 ms, 1.293 s at the CRD's 1 s / 30 s."""
    best = math.floor(4 * (keepalive - DRIFT * deadtime) / 3 * 1000) / 1000
    return min(MAX_WINDOW, max(MIN_WINDOW, best))
