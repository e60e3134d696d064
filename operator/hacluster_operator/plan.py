"""Who should own, from one observation: each node as the operator sees it (its report Lease's
freshness and state), and the planned move (a declared switchover, a failback, a handover in
flight) as an ordered list of rules, first match wins. Pure; decide.py calls it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from hacluster_api.models import DNS1123_SUBDOMAIN, HAClusterSpec
from hacluster_api.report import AgentReport, ReportLease

from .observed import DEFAULT_REPORT_DURATION_S, LeaseState

# --------------------------------------------------------------------------------------------
# one node as the operator sees it


@dataclass(frozen=True)
class Node:
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


def observe(name: str, lease: ReportLease | None, now: datetime) -> Node:
    if lease is None:
        return Node(name, None, None, DEFAULT_REPORT_DURATION_S, None)
    duration = lease.duration_s if lease.duration_s and lease.duration_s > 0 else DEFAULT_REPORT_DURATION_S
    age = (now - lease.renewed).total_seconds() if lease.renewed is not None else None
    fresh = age is not None and age <= duration
    return Node(name, lease, age, duration, lease.report if fresh else None)


def cannot_hear(report: AgentReport) -> bool:
    """The node reports its peer dead, or every heartbeat link down."""
    peer = report.peer
    if peer is None:
        return False
    links_all_down = bool(peer.links) and not any(link.up for link in peer.links.values())
    return peer.state == "dead" or links_all_down


def valid_node_name(name: str | None) -> str | None:
    if not name or len(name) > 253 or not re.match(DNS1123_SUBDOMAIN, name):
        return None
    return name


# --------------------------------------------------------------------------------------------
# who should own


@dataclass(frozen=True)
class Plan:
    target: str | None
    kind: Literal["switchover", "failback", "inflight"] | None
    want: str | None
    """The handover-to annotation this plan wants on the Lease (None: none)."""
    why: str
    blocked: str | None = None
    """A declared switchover that cannot proceed now, and why."""


def plan_for(
    spec: HAClusterSpec, lease: LeaseState | None, nodes: dict[str, Node], split: bool, deleting: bool
) -> Plan:
    if lease is None:
        return Plan(None, None, None, "no ownership Lease yet")
    if deleting:
        return Plan(None, None, None, "the HACluster is being deleted: the agents release everything")
    owner = lease.holder or None
    current = lease.handover_to
    declared = spec.failover.switchover_to
    if declared is not None:
        if owner == declared:
            return Plan(
                declared, "switchover", None, f"{declared} holds the resources, as switchoverTo declares"
            )
        if not nodes[declared].healthy:
            why = f"switchover to {declared} waits: {declared} is not available ({nodes[declared].problem()})"
            return Plan(declared, "switchover", None, why, blocked=why)
        return Plan(
            declared, "switchover", declared, f"switchover to {declared} (spec.failover.switchoverTo)"
        )
    if owner is None and current is not None and current in nodes and nodes[current].healthy:
        # The holder already released for a handover whose reason went away: let it land.
        return Plan(
            current, "inflight", current, f"{current} is taking the released Lease (handover in flight)"
        )
    if spec.failover.maintenance:
        return Plan(None, None, None, "maintenance: no automatic moves")
    if not spec.failover.auto_failback:
        return Plan(None, None, None, "no switchover declared and autoFailback is off: stay")
    home = spec.home
    if owner == home:
        return Plan(home, "failback", None, f"the preferred node {home} holds the resources")
    unhealthy = [n for n in spec.nodes if not nodes[n].healthy]
    if unhealthy:
        problems = "; ".join(f"{n}: {nodes[n].problem()}" for n in unhealthy)
        return Plan(None, None, None, f"no failback to {home} until both nodes are healthy ({problems})")
    if split:
        return Plan(None, None, None, f"no failback to {home} while the heartbeat links are down")
    if owner is not None and owner not in nodes:
        return Plan(home, "failback", home, f"{owner} is not one of the nodes: hand over to {home}")
    return Plan(home, "failback", home, f"failback to the preferred node {home}: both nodes are healthy")
