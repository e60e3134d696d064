"""The operator's decisions as one pure function: what it saw in, what to write out.

`decide(spec, generation, lease, reports, now, previous=...)` takes one observation (the ownership
Lease, each agent's report Lease, the clock and the status last written) and returns a `Decision`:
who should own the resources, which annotations to set or clear on the ownership Lease, the status
to write, and the Events to post. No I/O, no clock of its own: handlers.py fetches and writes,
tests/unit/test_operator_decide.py drives every rule with fake times.

The operator never takes ownership itself. The agents own the Lease (compare-and-swap on it, the
`leaseTransitions` counter is the fencing epoch); the operator only asks, through annotations:

handover-to (a planned move), freeze (maintenance) and release (the HACluster is being deleted):
the keys and their one parser are in `hacluster_api.annotations`.

Events come from edges only (an annotation set or cleared, the epoch rising, a condition turning),
never from levels, so a loop that decides every second does not repeat them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from hacluster_api.annotations import FREEZE, HANDOVER_TO, RELEASE, Directives, directives_of
from hacluster_api.models import (
    DNS1123_SUBDOMAIN,
    Condition,
    ConditionType,
    HAClusterSpec,
    HAClusterStatus,
    NodeStatus,
    Transition,
)
from hacluster_api.report import AgentReport, ReportLease, TransitionKind, TransitionReport

DEFAULT_REPORT_DURATION_S = 5.0
"""A report Lease without leaseDurationSeconds is stale this long after its renewTime."""
ACCOUNTING_WAIT_S = 3.0
"""After a new holder takes the Lease, how long to wait for its report to describe the move (its
lastTransition carries the gap) before accounting the move with what the Lease alone says."""
NON_OWNER_GRACE_S = 2.0
"""A node other than the holder may still report holding resources this long after the Lease
changed hands (its report lags its release by up to one renewal)."""
LAST_SEEN_REFRESH_S = 30.0
"""Status is rewritten when only nodes' lastSeen moved, at most this often."""

_NODE_STATES = ("active", "up", "init", "dead")
_HOLDING = ("local", "foreign", "all")
_MAX_MEDIA = 16

EventType = Literal["Normal", "Warning"]

# --------------------------------------------------------------------------------------------
# the ownership Lease as observed


@dataclass(frozen=True)
class LeaseState:
    """The ownership Lease: `holder` owns the resources ("" when released), `epoch` is
    leaseTransitions, `acquired` its acquireTime."""

    holder: str = ""
    epoch: int = 0
    annotations: Mapping[str, str] = field(default_factory=dict)
    acquired: datetime | None = None

    @property
    def directives(self) -> Directives:
        """The annotations as the agents read them (one parser: hacluster_api.annotations)."""
        return directives_of(self.annotations, self.holder, self.epoch)

    @property
    def handover_to(self) -> str | None:
        return self.directives.handover_to

    @property
    def frozen(self) -> bool:
        return self.directives.freeze

    @property
    def releasing(self) -> bool:
        return self.directives.release

    def with_annotations(self, changes: Mapping[str, str | None]) -> LeaseState:
        """This Lease after an annotation change set (None removes)."""
        annotations = dict(self.annotations)
        for key, value in changes.items():
            if value is None:
                annotations.pop(key, None)
            else:
                annotations[key] = value
        return LeaseState(self.holder, self.epoch, annotations, self.acquired)


# --------------------------------------------------------------------------------------------
# the decision


@dataclass(frozen=True)
class Event:
    type: EventType
    reason: str
    message: str


@dataclass(frozen=True)
class Decision:
    target: str | None
    """Where the resources should be; None: wherever they are (no move wanted)."""
    why: str
    """One line on `target`, for logs."""
    holder: str | None
    """Who holds the Lease right now (what workload labels follow)."""
    annotations: dict[str, str | None]
    """Changes to the ownership Lease's annotations: a value to set, None to remove. Empty: none."""
    status: HAClusterStatus
    write_status: bool
    """False when `status` says nothing new (only lastSeen moved, and not by much)."""
    events: tuple[Event, ...]
    released: bool
    """Nobody holds the Lease (or there is none): what deletion waits for."""


# --------------------------------------------------------------------------------------------
# one node as the operator sees it


@dataclass(frozen=True)
class _Node:
    name: str
    lease: ReportLease | None
    age_s: float | None
    duration_s: float
    report: AgentReport | None
    """The report, only when its Lease is fresh."""

    @property
    def fresh(self) -> bool:
        return self.report is not None

    @property
    def healthy(self) -> bool:
        """May be handed the resources: a fresh report that says active."""
        return self.report is not None and self.report.state == "active"

    def problem(self) -> str:
        """Why this node is not healthy, in a few words."""
        if self.lease is None:
            return "no report Lease (agent not running?)"
        if self.lease.renewed is None:
            return "no report yet (agent not running?)"  # the operator pre-creates it empty
        if self.age_s is not None and self.age_s > self.duration_s:
            # No running age here: conditions carry this text, and must not change every second.
            since = self.lease.renewed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            return f"silent since {since} (its report Lease lasts {self.duration_s:g}s)"
        if self.lease.report is None:
            return f"report unreadable: {self.lease.error}"
        return f"state {self.lease.report.state}"


def _node(name: str, lease: ReportLease | None, now: datetime) -> _Node:
    if lease is None:
        return _Node(name, None, None, DEFAULT_REPORT_DURATION_S, None)
    duration = lease.duration_s if lease.duration_s and lease.duration_s > 0 else DEFAULT_REPORT_DURATION_S
    age = (now - lease.renewed).total_seconds() if lease.renewed is not None else None
    fresh = age is not None and age <= duration
    return _Node(name, lease, age, duration, lease.report if fresh else None)


def _cannot_hear(report: AgentReport) -> bool:
    """The node reports its peer dead, or every heartbeat link down."""
    peer = report.peer
    if peer is None:
        return False
    links_all_down = bool(peer.links) and not any(link.up for link in peer.links.values())
    return peer.state == "dead" or links_all_down


def _valid_node_name(name: str | None) -> str | None:
    if not name or len(name) > 253 or not re.match(DNS1123_SUBDOMAIN, name):
        return None
    return name


# --------------------------------------------------------------------------------------------
# who should own


@dataclass(frozen=True)
class _Plan:
    target: str | None
    kind: Literal["switchover", "failback", "inflight"] | None
    want: str | None
    """The handover-to annotation this plan wants on the Lease (None: none)."""
    why: str
    blocked: str | None = None
    """A declared switchover that cannot proceed now, and why."""


def _plan(
    spec: HAClusterSpec, lease: LeaseState | None, nodes: dict[str, _Node], split: bool, deleting: bool
) -> _Plan:
    if lease is None:
        return _Plan(None, None, None, "no ownership Lease yet")
    if deleting:
        return _Plan(None, None, None, "the HACluster is being deleted: the agents release everything")
    owner = lease.holder or None
    current = lease.handover_to
    declared = spec.failover.switchover_to
    if declared is not None:
        if owner == declared:
            return _Plan(
                declared, "switchover", None, f"{declared} holds the resources, as switchoverTo declares"
            )
        if not nodes[declared].healthy:
            why = f"switchover to {declared} waits: {declared} is not available ({nodes[declared].problem()})"
            return _Plan(declared, "switchover", None, why, blocked=why)
        return _Plan(
            declared, "switchover", declared, f"switchover to {declared} (spec.failover.switchoverTo)"
        )
    if owner is None and current is not None and current in nodes and nodes[current].healthy:
        # The holder already released for a handover whose reason went away: let it land.
        return _Plan(
            current, "inflight", current, f"{current} is taking the released Lease (handover in flight)"
        )
    if spec.failover.maintenance:
        return _Plan(None, None, None, "maintenance: no automatic moves")
    if not spec.failover.auto_failback:
        return _Plan(None, None, None, "no switchover declared and autoFailback is off: stay")
    home = spec.home
    if owner == home:
        return _Plan(home, "failback", None, f"the preferred node {home} holds the resources")
    unhealthy = [n for n in spec.nodes if not nodes[n].healthy]
    if unhealthy:
        problems = "; ".join(f"{n}: {nodes[n].problem()}" for n in unhealthy)
        return _Plan(None, None, None, f"no failback to {home} until both nodes are healthy ({problems})")
    if split:
        return _Plan(None, None, None, f"no failback to {home} while the heartbeat links are down")
    if owner is not None and owner not in nodes:
        return _Plan(home, "failback", home, f"{owner} is not one of the nodes: hand over to {home}")
    return _Plan(home, "failback", home, f"failback to the preferred node {home}: both nodes are healthy")


# --------------------------------------------------------------------------------------------
# decide


def decide(
    spec: HAClusterSpec,
    generation: int,
    lease: LeaseState | None,
    reports: Mapping[str, ReportLease | None],
    now: datetime,
    *,
    previous: HAClusterStatus | None = None,
    config_error: str | None = None,
    conflicts: Sequence[str] = (),
    deleting: bool = False,
) -> Decision:
    """One decision over one observation.

    `reports` maps node names to their report Lease (None or absent: no Lease). `previous` is the
    status last written (None at first): epoch rises and condition edges are measured against it.
    `config_error` is why the config Secret could not be rendered (never a key). `conflicts`: what
    this HACluster shares with one that came first on a common node (clashes.py): it is not rolled
    out until changed. `deleting`: the HACluster has a deletionTimestamp.
    """
    prev = previous or HAClusterStatus()
    nodes = {n: _node(n, reports.get(n), now) for n in spec.nodes}
    a, b = (nodes[n] for n in spec.nodes)
    split = (
        a.report is not None
        and b.report is not None
        and a.report.state != "dead"
        and b.report.state != "dead"
        and _cannot_hear(a.report)
        and _cannot_hear(b.report)
    )
    owner = (lease.holder or None) if lease is not None else None
    current = lease.handover_to if lease is not None else None
    events: list[Event] = []

    # Has the holder changed since the status was written, and does its report say how yet?
    rose = lease is not None and prev.epoch is not None and lease.epoch > prev.epoch
    holder_report = nodes[owner].report if owner is not None and owner in nodes else None
    waiting = (
        rose
        and lease is not None
        and holder_report is not None
        and holder_report.known_epoch < lease.epoch
        and lease.acquired is not None
        and (now - lease.acquired).total_seconds() < ACCOUNTING_WAIT_S
    )

    plan = _plan(spec, lease, nodes, split, deleting)
    want = current if waiting else plan.want

    # ---- annotations on the ownership Lease
    changes: dict[str, str | None] = {}
    if lease is not None:
        if want != current:
            changes[HANDOVER_TO] = want
        if spec.failover.maintenance and not lease.frozen:
            changes[FREEZE] = "true"
        elif not spec.failover.maintenance and FREEZE in lease.annotations:
            changes[FREEZE] = None
        if deleting and not lease.releasing:
            changes[RELEASE] = "true"
        elif not deleting and RELEASE in lease.annotations:
            changes[RELEASE] = None
        events.extend(_annotation_events(spec, lease, nodes, plan, want, changes))

    # ---- the last transition, and the FailedOver / Acquired event when the epoch rose
    last = prev.last_transition
    status_owner, status_epoch = owner, lease.epoch if lease is not None else None
    if waiting:
        status_owner, status_epoch = prev.owner, prev.epoch
    elif rose and lease is not None:
        last, event = _account(lease, holder_report, prev, now)
        if event is not None and not (current is not None and current == owner):
            events.append(event)  # a planned move is reported by its *Done event instead
    elif last is None and lease is not None and owner is not None and holder_report is not None:
        reported = holder_report.last_transition
        if reported is not None and reported.to == owner:
            last = _transition(reported, owner, prev.owner, lease, now)

    # ---- conditions and state
    # Conditions describe the Lease as it will be once these changes are written.
    after = lease.with_annotations(changes) if lease is not None else None
    conditions = _conditions(
        spec, generation, after, nodes, split, plan, prev, now, config_error, conflicts, deleting, waiting
    )
    by_type = {c.type: c for c in conditions}
    status = HAClusterStatus(
        owner=_valid_node_name(status_owner),
        epoch=status_epoch,
        state=_state(lease, nodes, by_type),
        observed_generation=generation,
        nodes=[_node_status(n, nodes) for n in spec.nodes],
        last_transition=last,
        conditions=conditions,
    )
    events.extend(_condition_events(prev, by_type))
    return Decision(
        target=plan.target,
        why=plan.why,
        holder=owner,
        annotations=changes,
        status=status,
        write_status=previous is None or _differs(previous, status),
        events=tuple(events),
        released=lease is None or owner is None,
    )


def _annotation_events(
    spec: HAClusterSpec,
    lease: LeaseState,
    nodes: dict[str, _Node],
    plan: _Plan,
    want: str | None,
    changes: Mapping[str, str | None],
) -> list[Event]:
    out: list[Event] = []
    owner = lease.holder or None
    current = lease.handover_to
    if HANDOVER_TO in changes:
        if want is not None:
            asking = (
                f"asking {owner} to hand over (epoch {lease.epoch})"
                if owner
                else f"the Lease is free: {want} may take it"
            )
            if plan.kind == "switchover":
                out.append(
                    Event("Normal", "SwitchoverRequested", f"Switchover to {want} requested: {asking}")
                )
            elif plan.kind == "failback":
                out.append(Event("Normal", "FailbackRequested", f"Failback to {want} requested: {asking}"))
        if current is not None and owner == current:
            kind = (
                "Switchover"
                if spec.failover.switchover_to == owner
                else "Failback"
                if owner == spec.home
                else "Handover"
            )
            out.append(Event("Normal", f"{kind}Done", _done_message(kind, owner, lease, nodes)))
        elif current is not None and want is None and plan.blocked is None:
            out.append(Event("Normal", "HandoverCancelled", f"Handover to {current} withdrawn: {plan.why}"))
    if changes.get(FREEZE) == "true":
        out.append(Event("Normal", "MaintenanceOn", "Maintenance: the agents make no automatic moves"))
    elif FREEZE in changes:
        out.append(Event("Normal", "MaintenanceOff", "Maintenance over: automatic moves resume"))
    if changes.get(RELEASE) == "true":
        who = f"asking {owner} to release everything" if owner else "nobody holds the resources"
        out.append(Event("Normal", "Releasing", f"HACluster deleted: {who}"))
    return out


def _done_message(kind: str, owner: str, lease: LeaseState, nodes: dict[str, _Node]) -> str:
    msg = f"{kind} to {owner} done: epoch {lease.epoch}"
    report = nodes[owner].report if owner in nodes else None
    reported = report.last_transition if report is not None else None
    if reported is not None and reported.to == owner and reported.gap_ms is not None:
        msg += f", {reported.gap_ms}ms without an owner"
    return msg


def _transition(
    reported: TransitionReport | None,
    owner: str | None,
    prev_owner: str | None,
    lease: LeaseState,
    now: datetime,
) -> Transition:
    if reported is None:
        return Transition(
            from_=_valid_node_name(prev_owner),
            to=_valid_node_name(owner),
            reason="the Lease changed holder",
            time=lease.acquired or now,
        )
    return Transition(
        from_=_valid_node_name(reported.from_ or prev_owner),
        to=_valid_node_name(owner),
        reason=reported.reason[:1024],
        gap_ms=reported.gap_ms,
        time=reported.time or lease.acquired or now,
    )


def _account(
    lease: LeaseState, holder_report: AgentReport | None, prev: HAClusterStatus, now: datetime
) -> tuple[Transition, Event | None]:
    """The epoch rose: the transition to record, and the event that tells it (None: released)."""
    owner = lease.holder or None
    reported = holder_report.last_transition if holder_report is not None else None
    if reported is not None and (
        reported.to != owner or (holder_report is not None and holder_report.known_epoch < lease.epoch)
    ):
        reported = None  # it describes an older move
    transition = _transition(reported, owner, prev.owner, lease, now)
    if owner is None:
        return transition, None
    source = transition.from_
    reason = reported.reason if reported is not None else ""
    kind = reported.kind if reported is not None else None
    # The agent says what kind of move it made; without its report (or from an agent that did not
    # say), a move between nodes the operator did not ask for counts as a failover.
    failed_over = kind is TransitionKind.FAILOVER or (kind is None and source not in (None, owner))
    if failed_over and source is not None and source != owner:
        gap = reported.gap_ms if reported is not None else None
        head = f"FailedOver from {source} to {owner}: "
        body = (
            f"{source} silent for {gap}ms, epoch {lease.epoch}" if gap is not None else f"epoch {lease.epoch}"
        )
        return transition, Event("Warning", "FailedOver", head + body + (f" ({reason})" if reason else ""))
    again = " again" if source == owner else f" from {source}" if source else ""
    message = f"{owner} took the resources{again}, epoch {lease.epoch}" + (f" ({reason})" if reason else "")
    return transition, Event("Normal", "Acquired", message)


# --------------------------------------------------------------------------------------------
# status: nodes, conditions, state


def _node_status(name: str, nodes: dict[str, _Node]) -> NodeStatus:
    node = nodes[name]
    state: str = "unknown"
    if node.report is not None:
        state = node.report.state if node.report.state in _NODE_STATES else "unknown"
    else:
        for other in nodes.values():
            peer = other.report.peer if other.report is not None else None
            if other.name != name and peer is not None and peer.node == name and peer.state in _NODE_STATES:
                state = peer.state  # the peer still hears it over the heartbeat links
    media: dict[str, Literal["up", "down"]] = {}
    if node.report is not None and node.report.peer is not None:
        for medium in sorted(node.report.peer.links)[:_MAX_MEDIA]:
            media[medium] = "up" if node.report.peer.links[medium].up else "down"
    last_seen = node.lease.renewed if node.lease is not None else None
    return NodeStatus.model_validate({"name": name, "state": state, "lastSeen": last_seen, "media": media})


def _conditions(
    spec: HAClusterSpec,
    generation: int,
    lease: LeaseState | None,
    nodes: dict[str, _Node],
    split: bool,
    plan: _Plan,
    prev: HAClusterStatus,
    now: datetime,
    config_error: str | None,
    conflicts: Sequence[str],
    deleting: bool,
    waiting: bool,
) -> list[Condition]:
    def cond(
        kind: ConditionType, status: Literal["True", "False", "Unknown"], reason: str, message: str
    ) -> Condition:
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

    owner = (lease.holder or None) if lease is not None else None
    epoch = lease.epoch if lease is not None else 0
    any_fresh = any(n.fresh for n in nodes.values())
    has_group = any(r.ip is not None or r.script is not None for r in spec.resources)

    # Ready: the resources are served by the holder.
    if deleting:
        ready = cond(
            ConditionType.READY, "False", "Releasing", "the HACluster is being deleted: releasing everything"
        )
    elif lease is None:
        ready = cond(ConditionType.READY, "Unknown", "NoLease", "the ownership Lease does not exist yet")
    elif owner is None:
        msg = "nobody holds the ownership Lease"
        if lease.handover_to:
            msg += f"; handing over to {lease.handover_to}"
        ready = cond(ConditionType.READY, "False", "NoOwner", msg)
    elif owner not in nodes:
        ready = cond(
            ConditionType.READY, "False", "UnknownOwner", f"the Lease holder {owner} is not one of the nodes"
        )
    elif not any_fresh:
        ready = cond(
            ConditionType.READY, "Unknown", "NoReports", f"{owner} holds the Lease, but no agent reports"
        )
    elif not nodes[owner].fresh:
        ready = cond(
            ConditionType.READY,
            "False",
            "OwnerSilent",
            f"{owner} holds the Lease but is {nodes[owner].problem()}",
        )
    elif not nodes[owner].healthy:
        ready = cond(
            ConditionType.READY,
            "False",
            "OwnerNotActive",
            f"{owner} holds the Lease but is in {nodes[owner].problem()}",
        )
    elif has_group and (report := nodes[owner].report) is not None and report.holds == "none":
        ready = cond(
            ConditionType.READY,
            "False",
            "ResourcesStarting",
            f"{owner} holds the Lease (epoch {epoch}) but reports no resources running yet",
        )
    else:
        ready = cond(ConditionType.READY, "True", "Serving", f"{owner} holds the resources, epoch {epoch}")

    # Degraded: redundancy lost, a declared move blocked, or the config cannot be rendered.
    problems: list[tuple[str, str]] = []
    if conflicts:
        problems.append(("PortConflict", "not rolled out: " + "; ".join(conflicts)))
    if config_error:
        problems.append(("ConfigError", f"the config Secret cannot be rendered: {config_error}"))
    if lease is not None and owner is not None:
        for n in nodes.values():
            r = n.report
            if n.name == owner or r is None or r.holds not in _HOLDING:
                continue
            if lease.acquired is None or (
                n.lease is not None
                and n.lease.renewed is not None
                and n.lease.renewed - lease.acquired > timedelta(seconds=NON_OWNER_GRACE_S)
            ):
                problems.append(
                    (
                        "HeldByNonOwner",
                        f"{n.name} reports holding resources ({r.holds}) but {owner} holds the Lease (epoch {epoch})",
                    )
                )
    if plan.blocked:
        problems.append(("SwitchoverBlocked", plan.blocked))
    for n in nodes.values():
        if not n.fresh:
            problems.append(("NodeDown", f"{n.name}: {n.problem()}"))
        elif not n.healthy:
            problems.append(("NodeNotActive", f"{n.name}: {n.problem()}"))
    if problems:
        degraded = cond(ConditionType.DEGRADED, "True", problems[0][0], "; ".join(m for _, m in problems))
    else:
        degraded = cond(ConditionType.DEGRADED, "False", "AllHealthy", "both nodes are active and reporting")

    # HeartbeatLinkDown: the agents' own view of their links.
    a, b = (nodes[n] for n in spec.nodes)
    down = [
        f"{medium} down on {n.name}"
        for n in nodes.values()
        if n.report is not None and n.report.peer is not None
        for medium, link in sorted(n.report.peer.links.items())
        if not link.up
    ]
    if split:
        link = cond(
            ConditionType.HEARTBEAT_LINK_DOWN,
            "True",
            "AllLinksDown",
            f"{a.name} and {b.name} both run but cannot hear each other: each reports its peer dead"
            + (f" ({', '.join(down)})" if down else ""),
        )
    elif down:
        link = cond(ConditionType.HEARTBEAT_LINK_DOWN, "True", "LinkDown", ", ".join(down))
    elif not any_fresh:
        link = cond(ConditionType.HEARTBEAT_LINK_DOWN, "Unknown", "NoReports", "no agent reports")
    else:
        link = cond(
            ConditionType.HEARTBEAT_LINK_DOWN, "False", "AllLinksUp", "every reported heartbeat link is up"
        )

    # Arbitrating: ownership is not settled; the Lease is what decides it.
    freeze_note = "; maintenance: the agents make no automatic moves" if spec.failover.maintenance else ""
    live_others = [
        n for n in nodes.values() if n.name != owner and n.report is not None and n.report.state != "dead"
    ]
    if lease is not None and waiting:
        arb = cond(
            ConditionType.ARBITRATING,
            "True",
            "TransitionInProgress",
            f"{owner} took the Lease at epoch {lease.epoch}; waiting for its report",
        )
    elif split:
        arb = cond(
            ConditionType.ARBITRATING,
            "True",
            "HeartbeatLost",
            f"the nodes cannot hear each other; the Lease decides: {owner or 'nobody'} holds it (epoch {epoch})",
        )
    elif lease is not None and owner is None and any_fresh:
        if lease.handover_to:
            arb = cond(
                ConditionType.ARBITRATING,
                "True",
                "HandoverInProgress",
                f"the Lease is free; {lease.handover_to} is to take it",
            )
        else:
            arb = cond(
                ConditionType.ARBITRATING,
                "True",
                "NoHolder",
                "the Lease is free; waiting for an agent to take it",
            )
    elif owner is not None and owner in nodes and not nodes[owner].fresh and live_others:
        arb = cond(
            ConditionType.ARBITRATING,
            "True",
            "HolderSilent",
            f"{owner} holds the Lease but is {nodes[owner].problem()}; {live_others[0].name} takes over "
            "once the Lease window passes" + freeze_note,
        )
    elif owner is not None:
        arb = cond(ConditionType.ARBITRATING, "False", "Settled", f"{owner} holds the Lease, epoch {epoch}")
    else:
        arb = cond(
            ConditionType.ARBITRATING, "Unknown", "NoReports", "nobody holds the Lease and no agent reports"
        )
    return [ready, degraded, link, arb]


def _state(
    lease: LeaseState | None, nodes: dict[str, _Node], by_type: Mapping[str, Condition]
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


_EDGE_EVENTS: dict[str, tuple[str, EventType, str, EventType]] = {
    # condition: (event reason when it turns True, its type, when it turns False, its type)
    ConditionType.HEARTBEAT_LINK_DOWN.value: (
        "HeartbeatLinkDown",
        "Warning",
        "HeartbeatLinkRestored",
        "Normal",
    ),
    ConditionType.DEGRADED.value: ("", "Warning", "Recovered", "Normal"),
}


def _condition_events(prev: HAClusterStatus, now: Mapping[str, Condition]) -> list[Event]:
    """Events for conditions that turned: HeartbeatLinkDown/Restored; Degraded's new reason or
    Recovered. None for an HACluster's first status (no conditions yet): that is the baseline, and
    a pair just created has no agents reporting yet; its status says so without a Warning."""
    out: list[Event] = []
    if not prev.conditions:
        return out
    before = {c.type: c for c in prev.conditions}
    for kind, (up_reason, up_type, down_reason, down_type) in _EDGE_EVENTS.items():
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


def _differs(old: HAClusterStatus, new: HAClusterStatus) -> bool:
    """True unless only nodes' lastSeen moved, each by less than LAST_SEEN_REFRESH_S."""

    def without_last_seen(s: HAClusterStatus) -> dict[str, Any]:
        out = s.to_k8s()
        for n in out.get("nodes", []):
            n.pop("lastSeen", None)
        return out

    if without_last_seen(old) != without_last_seen(new):
        return True
    seen_before = {n.name: n.last_seen for n in old.nodes}
    for n in new.nodes:
        before = seen_before.get(n.name)
        if (before is None) != (n.last_seen is None):
            return True
        if (
            before is not None
            and n.last_seen is not None
            and abs((n.last_seen - before).total_seconds()) >= LAST_SEEN_REFRESH_S
        ):
            return True
    return False
