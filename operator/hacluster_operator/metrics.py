"""The operator's Prometheus metrics: per HACluster its epoch, state and readiness, and the Events
it posted (FailedOver, SwitchoverDone…); per replica whether it leads. Served on --metrics-port by
every replica (a standby too, so it can be probed)."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from hacluster_api.models import HAClusterStatus

from .observed import Event

STATES = ("Ready", "Degraded", "Arbitrating", "Unknown")


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.leader = Gauge("hacluster_operator_leader", "1 while this replica leads", registry=r)
        self.epoch = Gauge(
            "hacluster_cluster_epoch", "Ownership Lease epoch", ["namespace", "hacluster"], registry=r
        )
        self.state = Gauge(
            "hacluster_cluster_state",
            "1 for the HACluster's current state",
            ["namespace", "hacluster", "state"],
            registry=r,
        )
        self.requests = Counter(
            "hacluster_operator_api_requests",
            "Requests this replica sent to the API server (its watches aside), by who sent it "
            "(handlers, leader), verb, resource and response code: the handlers' stay near zero "
            "while nothing changes",
            ["client", "verb", "resource", "code"],
            registry=r,
        )
        self.renders = Counter(
            "hacluster_operator_renders",
            "Times an HACluster's agents' objects were rendered and compared with the server's, by "
            "why (new: first look; changed: an input changed; resync: config_every passed; retry)",
            ["reason"],
            registry=r,
        )
        self.cache_behind = Counter(
            "hacluster_operator_cache_behind",
            "Writes that found the watch cache behind the server (a create that already existed, a "
            "replace whose version had moved), by kind: each costs a fresh read",
            ["kind"],
            registry=r,
        )
        self.gc_pauses = Histogram(
            "hacluster_operator_gc_pause_seconds",
            "Python's garbage collections, by generation: each stops every handler and watch of "
            "the process for its length, which grows with what the watches hold",
            ["generation"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self._gc_started = 0.0
        self.events = Counter(
            "hacluster_cluster_events",
            "Events posted, by reason",
            ["namespace", "hacluster", "reason"],
            registry=r,
        )

    def observe(self, namespace: str, name: str, status: HAClusterStatus, events: Iterable[Event]) -> None:
        self.epoch.labels(namespace, name).set(status.epoch or 0)
        for state in STATES:
            self.state.labels(namespace, name, state).set(1 if str(status.state) == state else 0)
        for event in events:
            self.events.labels(namespace, name, event.reason).inc()

    def serve(self, port: int, address: str = "0.0.0.0") -> None:
        start_http_server(port, addr=address, registry=self.registry)
        self.watch_gc()

    def watch_gc(self) -> None:
        """Time the process's garbage collections from now on (gc_pauses)."""
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started:
            self.gc_pauses.labels(str(info.get("generation", "?"))).observe(
                time.perf_counter() - self._gc_started
            )


def resource_of(path: str) -> str:
    """The resource a request path names (`leases`, `hacclusters/status`), without names or
    namespaces, so a label has a few values however many objects there are."""
    parts = [p for p in path.split("?")[0].split("/") if p]
    # /api/v1/... or /apis/<group>/<version>/...; then namespaces/<ns>/ perhaps; then the plural.
    rest = parts[2:] if parts[:1] == ["api"] else parts[3:]
    if rest[:1] == ["namespaces"] and len(rest) > 2:
        rest = rest[2:]
    if not rest:
        return "namespaces" if parts[-2:-1] == ["namespaces"] else "-"
    return rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")


METRICS = OperatorMetrics()
