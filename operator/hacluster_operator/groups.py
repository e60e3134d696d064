"""Several resource groups (spec.groups): one decision per group, gathered into one status.

Each group is decided as a single-group HACluster (`HAClusterSpec.of_group`): its own Lease, its
agents' reports on it, its own previous status (`status.groups[]`, conditions included, so its
condition edges and Events are measured against its own past). The HACluster's status is the
first group's (owner, epoch, lastTransition, nodes: what `kubectl get hac` shows), with every group
in `groups` and each condition the worst any group has, naming the groups that have it. Pure
functions: handlers.py fetches and writes.
"""

from __future__ import annotations

from collections.abc import Sequence

from hacluster_api.models import Condition, ConditionType, GroupStatus, HAClusterStatus

from .decide import Decision, differs
from .observed import Event

STATE_ORDER = ("Unknown", "Arbitrating", "Degraded", "Ready")
"""The HACluster's state: the first of these any group is in."""

BAD_WHEN = {
    ConditionType.READY.value: ("False", "Unknown"),
    ConditionType.DEGRADED.value: ("True", "Unknown"),
    ConditionType.HEARTBEAT_LINK_DOWN.value: ("True", "Unknown"),
    ConditionType.ARBITRATING.value: ("True", "Unknown"),
}
"""Per condition, its statuses from worst: the HACluster shows the worst any group shows."""


def previous_of(previous: HAClusterStatus | None, group: str, first: bool) -> HAClusterStatus | None:
    """A group's previous status, as a single-group status (what `decide` compares with)."""
    if previous is None:
        return None
    mine = next((g for g in previous.groups if g.name == group), None)
    if mine is None:
        # Not written yet as a group (a spec that just became multi-group): the first group was
        # the whole HACluster; any other is new.
        return previous.model_copy(update={"groups": []}) if first else None
    return HAClusterStatus(
        owner=mine.owner,
        epoch=mine.epoch,
        state=mine.state,
        observed_generation=previous.observed_generation,
        nodes=previous.nodes,
        last_transition=mine.last_transition,
        conditions=mine.conditions,
    )


def _worst(kind: str, found: Sequence[tuple[str, Condition]]) -> Condition:
    order = BAD_WHEN.get(kind, ())
    rank = {status: i for i, status in enumerate(order)}
    best = min(found, key=lambda gc: rank.get(gc[1].status, len(order)))[1]
    same = [(g, c) for g, c in found if c.status == best.status]
    if len(same) == len(found) and len({c.message for _, c in same}) == 1:
        return best  # every group says the same
    message = "; ".join(f"{g}: {c.message}" for g, c in same)
    return best.model_copy(update={"message": message[:32768]})


def gather(
    decisions: Sequence[tuple[str, Decision]], previous: HAClusterStatus | None
) -> tuple[HAClusterStatus, bool, tuple[Event, ...]]:
    """The HACluster's status from each group's decision (in spec order), whether it says anything
    new since `previous`, and every group's Events, each naming its group."""
    first = decisions[0][1].status
    groups = [
        GroupStatus(
            name=name,
            owner=d.status.owner,
            epoch=d.status.epoch,
            state=d.status.state,
            last_transition=d.status.last_transition,
            conditions=d.status.conditions,
        )
        for name, d in decisions
    ]
    kinds = [c.type for c in first.conditions]
    conditions = [
        _worst(kind, [(name, c) for name, d in decisions for c in d.status.conditions if c.type == kind])
        for kind in kinds
    ]
    states = [d.status.state or "Unknown" for _, d in decisions]
    status = first.model_copy(
        update={
            "state": next(s for s in STATE_ORDER if s in states),
            "groups": groups,
            "conditions": conditions,
        }
    )
    events = tuple(
        Event(e.type, e.reason, f"group {name}: {e.message}") for name, d in decisions for e in d.events
    )
    return status, previous is None or differs(previous, status), events
