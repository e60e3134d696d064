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
never from levels, so deciding again on the same observation does not repeat them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from hacluster_api.annotations import FREEZE, HANDOVER_TO, RELEASE
from hacluster_api.models import (
    HAClusterSpec,
    HAClusterStatus,
    Transition,
)
from hacluster_api.report import AgentReport, ReportLease, TransitionKind, TransitionReport

from .conditions import HOLDING, NON_OWNER_GRACE_S, Facts, condition_events, conditions, node_status, state
from .observed import DEFAULT_REPORT_DURATION_S, Event, EventType, LeaseState
from .plan import Node, Plan, cannot_hear, observe, plan_for, valid_node_name

__all__ = ["DEFAULT_REPORT_DURATION_S", "Decision", "Event", "EventType", "LeaseState", "decide"]

ACCOUNTING_WAIT_S = 3.0
"""After a new holder takes the Lease, how long to wait for its report to describe the move (its
lastTransition carries the gap) before accounting the move with what the Lease alone says."""
LAST_SEEN_REFRESH_S = 300.0
"""Status is rewritten when only nodes' lastSeen moved, at most this often: the kubelet's
nodeStatusReportFrequency (a Node's status is rewritten every 5 min while nothing changes; its
heartbeat is its Lease). Every 30 s cost 33 status writes a second at 1,000 HAClusters with the
agents renewing (bench/operator_scale.py --renew-every 1); `kubectl ha status` reads the nodes'
report Leases for LAST SEEN."""


# --------------------------------------------------------------------------------------------
# the decision


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
    renewal_is_news: frozenset[str] = frozenset()
    """The nodes whose next report renewal may change this decision although it says what it
    said before: a report gone stale (renewed: fresh again), a non-owner claiming resources within
    its grace (renewed past it: HeldByNonOwner). handlers.py wakes on those renewals only."""
    recheck_s: float | None = None
    """Seconds after which this decision may change although nothing was written: a report goes
    stale, the wait for the holder's account ends. None: only a change (the spec, a Lease, a
    renewal above) can change it. The operator looks again then (handlers.py), not every second:
    the decision is event-driven."""


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
    nodes = {n: observe(n, reports.get(n), now) for n in spec.nodes}
    a, b = (nodes[n] for n in spec.nodes)
    split = (
        a.report is not None
        and b.report is not None
        and a.report.state != "dead"
        and b.report.state != "dead"
        and cannot_hear(a.report)
        and cannot_hear(b.report)
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

    plan = plan_for(spec, lease, nodes, split, deleting)
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
    facts = Facts(spec, after, nodes, split, plan, config_error, conflicts, deleting, waiting)
    conds = conditions(facts, generation, prev, now)
    by_type = {c.type: c for c in conds}
    status = HAClusterStatus(
        owner=valid_node_name(status_owner),
        epoch=status_epoch,
        state=state(lease, nodes, by_type),
        observed_generation=generation,
        nodes=[node_status(n, nodes) for n in spec.nodes],
        last_transition=last,
        conditions=conds,
    )
    events.extend(condition_events(prev, by_type))
    return Decision(
        target=plan.target,
        why=plan.why,
        holder=owner,
        annotations=changes,
        status=status,
        write_status=previous is None or differs(previous, status),
        events=tuple(events),
        released=lease is None or owner is None,
        renewal_is_news=_renewal_is_news(nodes, lease, owner),
        recheck_s=_recheck(nodes, lease, waiting, now),
    )


RECHECK_MIN_S = 0.05
"""The soonest a time-driven look is asked for (a deadline just passed: look again, not spin)."""


def _recheck(
    nodes: Mapping[str, Node], lease: LeaseState | None, waiting: bool, now: datetime
) -> float | None:
    """When time alone may change the decision (Decision.recheck_s): the rules above that read
    `now`, each with its deadline."""
    due: list[float] = []
    for n in nodes.values():
        if n.age_s is not None and n.age_s <= n.duration_s:
            due.append(n.duration_s - n.age_s)  # fresh until then (plan.observe)
    if waiting and lease is not None and lease.acquired is not None:
        due.append(ACCOUNTING_WAIT_S - (now - lease.acquired).total_seconds())
    return max(RECHECK_MIN_S, min(due)) if due else None


def _renewal_is_news(
    nodes: Mapping[str, Node], lease: LeaseState | None, owner: str | None
) -> frozenset[str]:
    """Decision.renewal_is_news: the rules above that read a report's renewal time."""
    out = set()
    for n in nodes.values():
        if n.age_s is not None and n.age_s > n.duration_s:
            out.add(n.name)  # stale by age (plan.observe); unreadable or missing ones change content
        elif (
            owner is not None
            and n.name != owner
            and n.report is not None
            and n.report.holds in HOLDING
            and lease is not None
            and lease.acquired is not None
            and n.lease is not None
            and n.lease.renewed is not None
            and n.lease.renewed - lease.acquired <= timedelta(seconds=NON_OWNER_GRACE_S)
        ):
            out.add(n.name)  # a claim within its grace (conditions._held_by_non_owner)
    return frozenset(out)


def _annotation_events(
    spec: HAClusterSpec,
    lease: LeaseState,
    nodes: dict[str, Node],
    plan: Plan,
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


def _done_message(kind: str, owner: str, lease: LeaseState, nodes: dict[str, Node]) -> str:
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
            from_=valid_node_name(prev_owner),
            to=valid_node_name(owner),
            reason="the Lease changed holder",
            time=lease.acquired or now,
        )
    return Transition(
        from_=valid_node_name(reported.from_ or prev_owner),
        to=valid_node_name(owner),
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


def differs(old: HAClusterStatus, new: HAClusterStatus) -> bool:
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
