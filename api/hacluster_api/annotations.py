"""The annotations the operator and the agents exchange, and their one parser.

On the ownership Lease `<cluster>` the operator asks and the agents obey:
- `hacluster.dev/handover-to: <node>`: the holder releases gracefully, empties the holder, and that
  node takes the Lease (epoch + 1). Cleared once the node holds it, or when it can no longer take it.
- `hacluster.dev/freeze: "true"`: maintenance; the agents make no automatic moves.
- `hacluster.dev/release: "true"`: the HACluster is being deleted; release everything.
- `hacluster.dev/recreated: <epoch>`: the operator recreated the missing Lease; its holder proves
  nothing (arbiter/lease.py `LeaseView.recreated`) and an agent's write drops it.

On each report Lease `<cluster>-<node>` the agent writes `hacluster.dev/report` (report.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .models import GROUP

HANDOVER_TO = f"{GROUP}/handover-to"
FREEZE = f"{GROUP}/freeze"
RELEASE = f"{GROUP}/release"
RECREATED = f"{GROUP}/recreated"
"""On the ownership Lease the operator created (it was missing): the highest epoch the operator
knew. Its holder proves nothing; an agent's write drops it."""
REPORT = f"{GROUP}/report"
"""On each agent's report Lease: its `report.AgentReport` as JSON."""

DIRECTIVES = (HANDOVER_TO, FREEZE, RELEASE)
"""The operator's instructions: the keys it sets and clears on the ownership Lease."""


@dataclass(frozen=True)
class Directives:
    """The ownership Lease as the agents read it. handover_to: the node that should own next
    (planned move); freeze: maintenance, no automatic moves; release: the HACluster is being
    deleted, release everything."""

    handover_to: str | None = None
    freeze: bool = False
    release: bool = False
    holder: str = ""
    epoch: int | None = None  # the Lease's leaseTransitions, as read
    version: str = ""  # its resourceVersion: the arbiter counts a standby's window from a change
    recreated: bool = False  # the operator wrote it (RECREATED): its holder proves nothing


def directives_of(
    annotations: Mapping[str, str] | None, holder: str | None, epoch: int | None = None, version: str = ""
) -> Directives:
    """The one reading of the ownership Lease's annotations, for the agents and `kubectl ha`."""
    a = annotations or {}
    return Directives(
        handover_to=a.get(HANDOVER_TO) or None,
        freeze=a.get(FREEZE, "").lower() == "true",
        release=a.get(RELEASE, "").lower() == "true",
        holder=holder or "",
        epoch=epoch,
        version=version,
        recreated=RECREATED in a,
    )
