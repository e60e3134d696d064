"""HAClusters that share a node must not share what a node has one of: a heartbeat UDP port, a
serial line, a watchdog device, the agents' metrics port (host network: the node's own port), a
workload node label (each would move it to its own holder).

Pure: each HACluster's footprint, and what one clashes with among those that came first (created
earlier; by name on a tie). The first keeps running; the later one is not rolled out until it is
changed, and its status says with whom and on what (handlers.ensure_all, decide's PortConflict)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from hacluster_api.models import HAClusterSpec

SHOWN = 4
"""Clashes named in one status: the first few say what to change."""


@dataclass(frozen=True)
class Footprint:
    """What one HACluster takes on its nodes."""

    cluster: str  # namespace/name
    created: str  # creationTimestamp (RFC 3339, sorts as time)
    nodes: frozenset[str]
    udp_ports: frozenset[int]
    serial: frozenset[str]
    watchdog: str | None
    metrics_port: int
    node_labels: frozenset[str] = frozenset()

    def first(self) -> tuple[str, str]:
        return self.created, self.cluster


def footprint(hacluster: Mapping[str, Any], spec: HAClusterSpec | None = None) -> Footprint | None:
    """None for a spec the models refuse (its own status says why). `spec`: the one already
    validated from this HACluster, if the caller has it."""
    meta = hacluster.get("metadata") or {}
    if spec is None:
        try:
            spec = HAClusterSpec.model_validate(hacluster.get("spec") or {})
        except ValidationError:
            return None
    fence = spec.failover.node_fence
    return Footprint(
        cluster=f"{meta.get('namespace', '')}/{meta.get('name', '')}",
        created=str(meta.get("creationTimestamp") or ""),
        nodes=frozenset(spec.nodes),
        udp_ports=frozenset(m.port for m in spec.heartbeat.media.udp),
        serial=frozenset(s.device for s in spec.heartbeat.media.serial),
        watchdog=fence.watchdog if fence is not None else None,
        metrics_port=spec.agent_metrics_port,
        node_labels=frozenset(
            r.workload.node_label
            for group in spec.group_list()
            for r in group.resources
            if r.workload is not None
        ),
    )


def clashes(me: Footprint, others: Iterable[Footprint]) -> list[str]:
    """What `me` shares with an HACluster that came first, on a node both run on (one line each,
    naming both and the field to change; the first few). Empty: `me` may run."""
    out: list[str] = []
    for other in sorted(others, key=Footprint.first):
        if len(out) >= SHOWN:
            out.append("and more (the same with other HAClusters)")
            break
        if other.cluster == me.cluster or other.first() > me.first():
            continue
        shared = me.nodes & other.nodes
        if not shared:
            continue
        where = f"on {', '.join(sorted(shared))}"
        for port in sorted(me.udp_ports & other.udp_ports):
            out.append(
                f"heartbeat UDP port {port} {where} is also {other.cluster}'s (created first): "
                "give this HACluster another spec.heartbeat.media.udp[].port"
            )
        for device in sorted(me.serial & other.serial):
            out.append(
                f"serial line {device} {where} is also {other.cluster}'s (created first): "
                "one serial line carries one pair's heartbeats"
            )
        if me.watchdog is not None and me.watchdog == other.watchdog:
            out.append(
                f"watchdog {me.watchdog} {where} is also {other.cluster}'s node fence (created first): "
                "a watchdog device has one owner (the kernel lets one process open it)"
            )
        if me.metrics_port == other.metrics_port:
            out.append(
                f"metrics port {me.metrics_port} {where} is also {other.cluster}'s agents' (created "
                "first): give this HACluster another spec.agentMetricsPort"
            )
        for label in sorted(me.node_labels & other.node_labels):
            out.append(
                f"workload node label {label} {where} is also {other.cluster}'s (created first): "
                "each HACluster moves it to its own owner; give this one another workload nodeLabel"
            )
    return out
