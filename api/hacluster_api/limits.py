"""Bounds both sides check (the CRD's CEL rules, agent.json, the agent's flags): one definition."""

from __future__ import annotations

MIN_WINDOW_MS, MAX_WINDOW_MS = 100, 10_000
"""The arbitration window W: below 100 ms a renewal has under 50 ms to reach the API server; above
10 s a failover may wait that long for nothing."""
