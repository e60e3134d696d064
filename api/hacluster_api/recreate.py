"""What the operator writes when the ownership Lease is missing (deleted by hand, or new).

Why a rule of its own: the Lease is the one record of who owns the VIP, and the agents' writes
to it are compare-and-swaps, so it always names the last CAS winner. A Lease the operator
recreates is a guess from its last observations, which can be stale (a take it had not recorded
yet: the full stack's campaign, `lease-deleted` right after a move, recreated the old owner at
the new owner's epoch and the pair never settled). So the recreated Lease:
- is marked (`RECREATED`): its holder proves nothing. The agents take it only after a full window
  unchanged, as a Lease another node holds; the holder it names, or any holder if it names
  nobody, renews it at its next read (claiming it), and a holder it does not name loses;
- names the owner only when every observation agrees on it (no move while they are right);
- is at an epoch above every epoch observed (the status and both agents' reports), so the epoch
  never goes down (an empty Lease at 0 took it from 6 to 0 and the pair never settled).

Both the operator (`resources.ownership_lease`) and the simulation decide with this function.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Recreation:
    holder: str  # "" : nobody named
    transitions: int
    known: int  # the highest epoch observed (the annotation's value)


def recreation(
    recorded_owner: str | None, recorded_epoch: int | None, reports: Mapping[str, tuple[bool, int | None]]
) -> Recreation:
    """`recorded_*`: the owner and epoch the operator's status last recorded; `reports`: each
    node's last report, (holds anything, its epoch)."""
    epochs = [e for e in (recorded_epoch, *(e for _, e in reports.values())) if e is not None]
    known = max(epochs, default=0)
    if known <= 0:
        return Recreation("", 0, 0)
    named = {n for n, (holds, e) in reports.items() if holds and e is not None and e >= known}
    if recorded_owner and recorded_epoch == known:
        named.add(recorded_owner)
    holder = next(iter(named)) if len(named) == 1 else ""
    return Recreation(holder, known + 1, known)
