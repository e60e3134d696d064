"""The HACluster's status conditions, as tables: for each condition, rules in order, the first that
holds gives its status, reason and message (Degraded gathers every problem, the first one's reason
wins). Pure; decide.py calls `conditions`, `state` and `condition_events`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from hacluster_api.models import Condition, ConditionType, HAClusterSpec, HAClusterStatus, NodeStatus

from .observed import Event, EventType, LeaseState
from .plan import Node, Plan

NON_OWNER_GRACE_S = 2.0
"""A node other than the holder may still report holding resources this long after the Lease
changed hands (its report lags its release by up to one renewal)."""

NODE_STATES = ("active", "up", "init", "dead")
HOLDING = ("local", "foreign", "all")
MAX_MEDIA = 16

Status = Literal["True", "False", "Unknown"]


@dataclass(frozen=True)
class Facts:
    """One observation, as every condition's rules read it."""

    spec: HAClusterSpec
    lease: LeaseState | None
    nodes: dict[str, Node]
    split: bool
    plan: Plan
    config_error: str | None
    conflicts: Sequence[str]
    deleting: bool
    waiting: bool

    @property
    def owner(self) -> str | None:
        return (self.lease.holder or None) if self.lease is not None else None

    @property
    def epoch(self) -> int:
        return self.lease.epoch if self.lease is not None else 0

    @property
    def any_fresh(self) -> bool:
        return any(n.fresh for n in self.nodes.values())

    @property
    def has_group(self) -> bool:
        return any(r.ip is not None or r.script is not None for r in self.spec.resources)

    @property
    def owner_node(self) -> Node:
        assert self.owner is not None and self.owner in self.nodes
        return self.nodes[self.owner]

    @property
    def links_down(self) -> list[str]:
        return [
            f"{medium} down on {n.name}"
            for n in self.nodes.values()
            if n.report is not None and n.report.peer is not None
            for medium, link in sorted(n.report.peer.links.items())
            if not link.up
        ]

    @property
    def live_others(self) -> list[Node]:
        return [
            n
            for n in self.nodes.values()
            if n.name != self.owner and n.report is not None and n.report.state != "dead"
        ]


Rule = tuple[Callable[[Facts], bool], Status, str, Callable[[Facts], str]]
"""(when, status, reason, message): the first rule whose `when` holds decides."""


def _no_owner(f: Facts) -> str:
    assert f.lease is not None
    handing = f"; handing over to {f.lease.handover_to}" if f.lease.handover_to else ""
    return f"nobody holds the ownership Lease{handing}"


READY: tuple[Rule, ...] = (
    (lambda f: f.deleting, "False", "Releasing",
     lambda f: "the HACluster is being deleted: releasing everything"),
    (lambda f: f.lease is None, "Unknown", "NoLease", lambda f: "the ownership Lease does not exist yet"),
    (lambda f: f.owner is None, "False", "NoOwner", _no_owner),
    (lambda f: f.owner not in f.nodes, "False", "UnknownOwner",
     lambda f: f"the Lease holder {f.owner} is not one of the nodes"),
    (lambda f: not f.any_fresh, "Unknown", "NoReports",
     lambda f: f"{f.owner} holds the Lease, but no agent reports"),
    (lambda f: not f.owner_node.fresh, "False", "OwnerSilent",
     lambda f: f"{f.owner} holds the Lease but is {f.owner_node.problem()}"),
    (lambda f: not f.owner_node.healthy, "False", "OwnerNotActive",
     lambda f: f"{f.owner} holds the Lease but is in {f.owner_node.problem()}"),
    (lambda f: f.has_group and f.owner_node.report is not None and f.owner_node.report.holds == "none",
     "False", "ResourcesStarting",
     lambda f: f"{f.owner} holds the Lease (epoch {f.epoch}) but reports no resources running yet"),
    (lambda f: True, "True", "Serving", lambda f: f"{f.owner} holds the resources, epoch {f.epoch}"),
)  # fmt: skip
"""Ready: the resources are served by the holder."""


def _held_by_non_owner(f: Facts) -> list[str]:
    lease, owner = f.lease, f.owner
    if lease is None or owner is None:
        return []
    out = []
    for n in f.nodes.values():
        r = n.report
        if n.name == owner or r is None or r.holds not in HOLDING:
            continue
        if lease.acquired is None or (
            n.lease is not None
            and n.lease.renewed is not None
            and n.lease.renewed - lease.acquired > timedelta(seconds=NON_OWNER_GRACE_S)
        ):
            out.append(
                f"{n.name} reports holding resources ({r.holds}) but {owner} holds the Lease (epoch {f.epoch})"
            )
    return out


PROBLEMS: tuple[tuple[str, Callable[[Facts], list[str]]], ...] = (
    ("PortConflict", lambda f: ["not rolled out: " + "; ".join(f.conflicts)] if f.conflicts else []),
    ("ConfigError",
     lambda f: [f"the config Secret cannot be rendered: {f.config_error}"] if f.config_error else []),
    ("HeldByNonOwner", _held_by_non_owner),
    ("SwitchoverBlocked", lambda f: [f.plan.blocked] if f.plan.blocked else []),
    ("NodeDown", lambda f: [f"{n.name}: {n.problem()}" for n in f.nodes.values() if not n.fresh]),
    ("NodeNotActive",
     lambda f: [f"{n.name}: {n.problem()}" for n in f.nodes.values() if n.fresh and not n.healthy]),
)  # fmt: skip
"""Degraded: redundancy lost, a declared move blocked, the config cannot be rendered or rolled out.
Each gives its messages; Degraded is True with the first one's reason, and every message."""


def _all_down(f: Facts) -> str:
    a, b = (f.nodes[n] for n in f.spec.nodes)
    down = f.links_down
    return f"{a.name} and {b.name} both run but cannot hear each other: each reports its peer dead" + (
        f" ({', '.join(down)})" if down else ""
    )


LINK: tuple[Rule, ...] = (
    (lambda f: f.split, "True", "AllLinksDown", _all_down),
    (lambda f: bool(f.links_down), "True", "LinkDown", lambda f: ", ".join(f.links_down)),
    (lambda f: not f.any_fresh, "Unknown", "NoReports", lambda f: "no agent reports"),
    (lambda f: True, "False", "AllLinksUp", lambda f: "every reported heartbeat link is up"),
)
"""HeartbeatLinkDown: the agents' own view of their links."""


def _holder_silent(f: Facts) -> str:
    freeze = "; maintenance: the agents make no automatic moves" if f.spec.failover.maintenance else ""
    return (
        f"{f.owner} holds the Lease but is {f.owner_node.problem()}; {f.live_others[0].name} takes over "
        "once the Lease window passes" + freeze
    )


ARBITRATING: tuple[Rule, ...] = (
    (lambda f: f.lease is not None and f.waiting, "True", "TransitionInProgress",
     lambda f: f"{f.owner} took the Lease at epoch {f.epoch}; waiting for its report"),
    (lambda f: f.split, "True", "HeartbeatLost",
     lambda f: f"the nodes cannot hear each other; the Lease decides: {f.owner or 'nobody'} holds it "
     f"(epoch {f.epoch})"),
    (lambda f: f.lease is not None and f.owner is None and f.any_fresh and bool(f.lease.handover_to),
     "True", "HandoverInProgress",
     lambda f: f"the Lease is free; {f.lease.handover_to if f.lease else ''} is to take it"),
    (lambda f: f.lease is not None and f.owner is None and f.any_fresh, "True", "NoHolder",
     lambda f: "the Lease is free; waiting for an agent to take it"),
    (lambda f: f.owner is not None and f.owner in f.nodes and not f.owner_node.fresh and bool(f.live_others),
     "True", "HolderSilent", _holder_silent),
    (lambda f: f.owner is not None, "False", "Settled", lambda f: f"{f.owner} holds the Lease, epoch {f.epoch}"),
    (lambda f: True, "Unknown", "NoReports", lambda f: "nobody holds the Lease and no agent reports"),
)  # fmt: skip
"""Arbitrating: ownership is not settled; the Lease is what decides it."""


def conditions(f: Facts, generation: int, prev: HAClusterStatus, now: datetime) -> list[Condition]:
    """Ready, Degraded, HeartbeatLinkDown, Arbitrating, from their tables. A condition keeps its
    lastTransitionTime while its status stays."""

    def cond(kind: ConditionType, status: Status, reason: str, message: str) -> Condition:
        old = next((c for c in prev.conditions if c.type == kind.value), None)
        since = old.last_transition_time if old is not None and old.status == status else now
        return Condition(
            type=kind.value,
            status=status,
            observed_generation=generation,
            last_transition_time=since,
            reason=reason,
            message=message[:32768],
        )

    def first(kind: ConditionType, rules: tuple[Rule, ...]) -> Condition:
        for when, status, reason, message in rules:
            if when(f):
                return cond(kind, status, reason, message(f))
        raise AssertionError(f"no rule for {kind.value}: the table ends with one that always holds")

    problems = [(reason, m) for reason, find in PROBLEMS for m in find(f)]
    degraded = (
        cond(ConditionType.DEGRADED, "True", problems[0][0], "; ".join(m for _, m in problems))
        if problems
        else cond(ConditionType.DEGRADED, "False", "AllHealthy", "both nodes are active and reporting")
    )
    return [
        first(ConditionType.READY, READY),
        degraded,
        first(ConditionType.HEARTBEAT_LINK_DOWN, LINK),
        first(ConditionType.ARBITRATING, ARBITRATING),
    ]


def node_status(name: str, nodes: dict[str, Node]) -> NodeStatus:
    node = nodes[name]
    state: str = "unknown"
    if node.report is not None:
        state = node.report.state if node.report.state in NODE_STATES else "unknown"
    else:
        for other in nodes.values():
            peer = other.report.peer if other.report is not None else None
            if other.name != name and peer is not None and peer.node == name and peer.state in NODE_STATES:
                state = peer.state  # the peer still hears it over the heartbeat links
    media: dict[str, Literal["up", "down"]] = {}
    if node.report is not None and node.report.peer is not None:
        for medium in sorted(node.report.peer.links)[:MAX_MEDIA]:
            media[medium] = "up" if node.report.peer.links[medium].up else "down"
    last_seen = node.lease.renewed if node.lease is not None else None
    return NodeStatus.model_validate({"name": name, "state": state, "lastSeen": last_seen, "media": media})


def state(
    lease: LeaseState | None, nodes: dict[str, Node], by_type: Mapping[str, Condition]
) -> Literal["Ready", "Degraded", "Arbitrating", "Unknown"]:
    if lease is None or not any(n.fresh for n in nodes.values()):
        return "Unknown"
    if by_type[ConditionType.ARBITRATING.value].status == "True":
        return "Arbitrating"
    if (
        by_type[ConditionType.READY.value].status != "True"
        or by_type[ConditionType.DEGRADED.value].status == "True"
        or by_type[ConditionType.HEARTBEAT_LINK_DOWN.value].status == "True"
    ):
        return "Degraded"
    return "Ready"


EDGE_EVENTS: dict[str, tuple[str, EventType, str, EventType]] = {
    # condition: (event reason when it turns True, its type, when it turns False, its type)
    ConditionType.HEARTBEAT_LINK_DOWN.value: (
        "HeartbeatLinkDown",
        "Warning",
        "HeartbeatLinkRestored",
        "Normal",
    ),
    ConditionType.DEGRADED.value: ("", "Warning", "Recovered", "Normal"),
}


def condition_events(prev: HAClusterStatus, now: Mapping[str, Condition]) -> list[Event]:
    """Events for conditions that turned: HeartbeatLinkDown/Restored; Degraded's new reason or
    Recovered. None for an HACluster's first status (no conditions yet): that is the baseline, and
    a pair just created has no agents reporting yet; its status says so without a Warning."""
    out: list[Event] = []
    if not prev.conditions:
        return out
    before = {c.type: c for c in prev.conditions}
    for kind, (up_reason, up_type, down_reason, down_type) in EDGE_EVENTS.items():
        new, old = now[kind], before.get(kind)
        turned = old is None or old.status != "True"
        if new.status == "True" and (turned or old is None or old.reason != new.reason):
            if (
                not turned
                and kind == ConditionType.HEARTBEAT_LINK_DOWN.value
                and new.reason != "AllLinksDown"
            ):
                continue  # still down, no worse: one link of several
            out.append(Event(up_type, up_reason or new.reason, new.message))
        elif new.status == "False" and old is not None and old.status == "True":
            out.append(Event(down_type, down_reason, new.message))
    return out
