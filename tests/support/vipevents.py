"""The VIP's comings and goings on a node, from `ip -ts monitor address` (kernel address events,
time-stamped by `ip` itself): used by the fence-guard tests and the fault campaign (bench/chaos.py)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable


def vip_event(line: str, vip: str) -> tuple[float, bool] | None:
    """(time, present after the event) if `line` of `ip -ts monitor address` is about `vip`."""
    if not line.startswith("[") or f" inet {vip}/" not in line:
        return None
    stamp, rest = line[1:].split("]", 1)
    return dt.datetime.fromisoformat(stamp).timestamp(), not rest.lstrip().startswith("Deleted")


def held_intervals(
    events: Iterable[tuple[float, bool]], until: float, held_since: float | None = None
) -> list[tuple[float, float]]:
    """When the VIP was held, as [from, to) intervals; `held_since`: held before the first event
    (from then); an interval still open ends at `until`."""
    out: list[tuple[float, float]] = []
    since = held_since
    for t, present in events:
        if present and since is None:
            since = t
        elif not present and since is not None:
            out.append((since, t))
            since = None
    if since is not None:
        out.append((since, until))
    return out


def overlaps(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Where two nodes' held intervals intersect (both held the VIP)."""
    return [(max(s1, s2), min(e1, e2)) for s1, e1 in a for s2, e2 in b if max(s1, s2) < min(e1, e2)]
