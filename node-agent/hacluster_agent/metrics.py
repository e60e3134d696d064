"""The node agent's Prometheus metrics, in a registry of its own (several agents per process in tests).

`AgentMetrics` is fed by the daemon where it already handles packets, actions and resource results;
the per-heartbeat calls are one dict lookup and one `inc()` on a pre-labelled child. `serve()`
exports the registry over HTTP (`hacluster-agent --metrics-port N`).

| metric | labels | meaning |
|---|---|---|
| `hacluster_heartbeats_sent_total` | medium | status messages handed to an up medium |
| `hacluster_heartbeats_received_total` | medium, peer | status messages the engine accepted from the peer |
| `hacluster_late_heartbeats_total` | peer | intervals above warntime |
| `hacluster_peer_deaths_total` | peer | the peer declared dead (deadtime, initdead, shutdone) |
| `hacluster_packets_rejected_total` | reason | dropped packets: the codec's and the engine's reasons |
| `hacluster_holds` | side | 1 while this node holds that side's groups (local, foreign) |
| `hacluster_epoch` | | the ownership Lease's epoch (Kubernetes mode, once known) |
| `hacluster_failovers_total` | reason | resources taken over from the peer, and why |
| `hacluster_last_failover_gap_seconds` | | how long the peer had been silent before the last failover |
| `hacluster_last_failover_timestamp_seconds` | | when the last failover completed (Unix time) |
| `hacluster_resource_operation_seconds` | operation | start/stop of the resource groups (histogram) |
| `hacluster_resource_failures_total` | operation | failed start/stop, lost addresses (refresh), monitor failures |
| `hacluster_self_fencings_total` | | releases because the Lease could not be renewed |
| `hacluster_medium_up` | medium | 1 while the medium is usable |
| `hacluster_config_reloads_total` | result | reloads (SIGHUP, file change): applied, rejected, restart_needed, unchanged |
| `hacluster_auth_signing_key` | | the authkeys index (`auth N`) heartbeats are signed with |
| `hacluster_auth_key_accepted` | index | 1 for each authkeys index received packets may be signed with |
| `hacluster_fence_guard_up` | | 1 while the fence guard process runs (`resources/fenceguard.py`) |
| `hacluster_fence_guard_restarts_total` | | times the agent restarted a fence guard that had died |
| `hacluster_kernel_fence_open_seconds` | | how long the kernel fence lets this node answer for its VIPs from now (0: dark; Kubernetes mode) |
| `hacluster_kernel_fence_write_failures_total` | | nftables writes that failed (the tables are then installed again) |
| `hacluster_lease_request_seconds` | kind | round trip of each take and renewal of the ownership Lease (a renewal must answer within W/2) |
| `hacluster_kernel_fence_lapses_total` | | times the fence ran out while the engine still let this node serve (the agent wrote too late: a stall) |
| `hacluster_agent_info` | node, peer, generation | always 1 |
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hacluster_api.heartbeat.authkeys import MAX_AUTH_INDEX, AuthKeys

from .engine.actions import Side
from .wire.errors import Reject

CODEC_REASONS = (Reject.BAD_AUTH, Reject.NO_AUTH, Reject.MALFORMED, Reject.TOO_LARGE, Reject.UNSUPPORTED)
ENGINE_REASONS = (Reject.REPLAY, Reject.NOT_A_MEMBER, Reject.BAD_FIELDS, Reject.PEER_NOT_UP)
OPERATIONS = ("start", "stop")
RELOAD_RESULTS = ("applied", "rejected", "restart_needed", "unchanged")  # reload.Result
RESOURCE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

PEER_DEAD = "peer_dead"
PEER_STOPPED = "peer_stopped"
INITDEAD = "initdead"
STANDBY = "standby"
OTHER = "other"


def failover_reason(acquire_reason: str) -> str | None:
    """A bounded label for an acquisition's free-text reason, or None when it is no failover
    (the home node starting its groups, at start-up or on a failback handed back by the peer).

    The engine's reasons: "peer X dead: <why PeerChanged said>", "peer in standby",
    "home node, nobody holds them" (see engine/membership.py `_reconcile`).
    """
    if acquire_reason.startswith("peer ") and " dead" in acquire_reason:
        if "shutdone" in acquire_reason:
            return PEER_STOPPED
        if "initdead" in acquire_reason:
            return INITDEAD
        return PEER_DEAD
    if acquire_reason == "peer in standby":
        return STANDBY
    if acquire_reason.startswith("home node"):
        return None
    return OTHER


class _Epoch(Collector):
    """`hacluster_epoch`, exported only once a Lease has told us (absent in standalone mode)."""

    def __init__(self) -> None:
        self.value: int | None = None

    def collect(self) -> Iterable[Metric]:
        g = GaugeMetricFamily("hacluster_epoch", "The ownership Lease's epoch (leaseTransitions) last seen.")
        if self.value is not None:
            g.add_metric([], float(self.value))
        yield g

    def describe(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "hacluster_epoch", "The ownership Lease's epoch (leaseTransitions) last seen."
        )


class AgentMetrics:
    """Every metric of one agent, in `self.registry`."""

    def __init__(self, node: str, peer: str, generation: int = 0) -> None:
        self.node, self.peer = node, peer
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.heartbeats_sent = Counter(
            "hacluster_heartbeats_sent",
            "Heartbeats (status messages) sent, per medium.",
            ["medium"],
            registry=r,
        )
        self.heartbeats_received = Counter(
            "hacluster_heartbeats_received",
            "Heartbeats accepted from the peer, per medium it came on.",
            ["medium", "peer"],
            registry=r,
        )
        self.late_heartbeats = Counter(
            "hacluster_late_heartbeats", "Heartbeat intervals longer than warntime.", ["peer"], registry=r
        )
        self.peer_deaths = Counter(
            "hacluster_peer_deaths", "Times the peer was declared dead.", ["peer"], registry=r
        )
        self.packets_rejected = Counter(
            "hacluster_packets_rejected", "Received packets dropped, by reason.", ["reason"], registry=r
        )
        self.holds = Gauge(
            "hacluster_holds", "1 while this node holds that side's resource groups.", ["side"], registry=r
        )
        self._epoch = _Epoch()
        r.register(self._epoch)
        self.failovers = Counter(
            "hacluster_failovers", "Resources taken over from the peer, by reason.", ["reason"], registry=r
        )
        self.last_failover_gap = Gauge(
            "hacluster_last_failover_gap_seconds",
            "How long the peer had been silent when it was declared dead, for the last failover.",
            registry=r,
        )
        self.last_failover_time = Gauge(
            "hacluster_last_failover_timestamp_seconds",
            "When the last failover completed (Unix time).",
            registry=r,
        )
        self.resource_seconds = Histogram(
            "hacluster_resource_operation_seconds",
            "Time to start or stop the resource groups.",
            ["operation"],
            buckets=RESOURCE_BUCKETS,
            registry=r,
        )
        self.lease_seconds = Histogram(
            "hacluster_lease_request_seconds",
            "Round trip of the ownership Lease's requests (take, renew): a renewal must answer within W/2.",
            ["kind"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=r,
        )
        self.resource_failures = Counter(
            "hacluster_resource_failures",
            "Failed resource operations (start, stop, refresh of a held address, monitor).",
            ["operation"],
            registry=r,
        )
        self.self_fencings = Counter(
            "hacluster_self_fencings",
            "Resources released because the ownership Lease could not be renewed.",
            registry=r,
        )
        self.node_fences = Counter(
            "hacluster_node_fences",
            "Times this agent stopped feeding its watchdog to reset the node (the node fence: a "
            "self-fencing stop failed or overran its budget; docs/safety.md).",
            registry=r,
        )
        self.medium_up = Gauge("hacluster_medium_up", "1 while the medium is usable.", ["medium"], registry=r)
        self.config_reloads = Counter(
            "hacluster_config_reloads",
            "Config reloads (SIGHUP or a change of the files), by result.",
            ["result"],
            registry=r,
        )
        self.auth_signing_key = Gauge(
            "hacluster_auth_signing_key", "The authkeys index heartbeats are signed with.", registry=r
        )
        self.auth_key_accepted = Gauge(
            "hacluster_auth_key_accepted",
            "1 for each authkeys index a received packet may be signed with.",
            ["index"],
            registry=r,
        )
        self.fence_guard_up = Gauge(
            "hacluster_fence_guard_up", "1 while the fence guard process runs.", registry=r
        )
        self.fence_guard_restarts = Counter(
            "hacluster_fence_guard_restarts", "Times a dead fence guard was restarted.", registry=r
        )
        self.kernel_fence_open = Gauge(
            "hacluster_kernel_fence_open_seconds",
            "How long the kernel fence lets this node answer for its VIPs from now (0: dark).",
            registry=r,
        )
        self._fence_failures_seen = 0
        self.kernel_fence_failures = Counter(
            "hacluster_kernel_fence_write_failures",
            "nftables writes of the kernel fence that failed (its tables are installed again).",
            registry=r,
        )
        self._fence_lapses_seen = 0
        self.kernel_fence_lapses = Counter(
            "hacluster_kernel_fence_lapses",
            "Times the kernel fence ran out while the engine still let this node serve (a late write).",
            registry=r,
        )
        info = Gauge("hacluster_agent_info", "The agent's node, peer and generation.", ["node", "peer", "generation"], registry=r)  # fmt: skip
        info.labels(node, peer, str(generation)).set(1)
        # Every label value known in advance is shown from the start (at 0), so rate() works at once.
        for rejected in (*CODEC_REASONS, *ENGINE_REASONS):
            self.packets_rejected.labels(rejected.value)
        for side in Side:
            self.holds.labels(side.value).set(0)
        for op in OPERATIONS:
            self.resource_seconds.labels(op)
            self.resource_failures.labels(op)
        for reason in (PEER_DEAD, PEER_STOPPED, INITDEAD, STANDBY):
            self.failovers.labels(reason)
        for result in RELOAD_RESULTS:
            self.config_reloads.labels(result)
        self.late_heartbeats.labels(peer)
        self.peer_deaths.labels(peer)
        self._sent: dict[str, Counter] = {}
        self._received: dict[str, Counter] = {}
        self._rejected: dict[str, Counter] = {}
        self._silent_for = 0.0

    # -- the hot path: one dict lookup and one inc() -------------------------------------------
    def heartbeat_sent(self, medium: str) -> None:
        c = self._sent.get(medium)
        if c is None:
            c = self._sent[medium] = self.heartbeats_sent.labels(medium)
        c.inc()

    def heartbeat_received(self, medium: str) -> None:
        c = self._received.get(medium)
        if c is None:
            c = self._received[medium] = self.heartbeats_received.labels(medium, self.peer)
        c.inc()

    def rejected(self, reason: str) -> None:
        c = self._rejected.get(reason)
        if c is None:
            c = self._rejected[reason] = self.packets_rejected.labels(reason)
        c.inc()

    # -- events ------------------------------------------------------------------------------
    def note(self, counter: str, labels: dict[str, str]) -> None:
        """An engine Note that names a counter: `late_heartbeat`, `self_fenced`, `node_fence`, or
        `rejected` with its reason."""
        if counter == "late_heartbeat":
            self.late_heartbeat()
        elif counter == "self_fenced":
            self.self_fenced()
        elif counter == "node_fence":
            self.node_fences.inc()
        elif counter == "rejected":
            self.rejected(labels.get("reason", OTHER))

    def late_heartbeat(self) -> None:
        self.late_heartbeats.labels(self.peer).inc()

    def peer_changed(self, alive: bool, silent_for: float = 0.0) -> None:
        if alive:
            self._silent_for = 0.0
        else:
            self.peer_deaths.labels(self.peer).inc()
            self._silent_for = silent_for

    def medium_state(self, medium: str, up: bool) -> None:
        self.medium_up.labels(medium).set(1 if up else 0)

    def set_holds(self, sides: Iterable[Side]) -> None:
        held = set(sides)
        for side in Side:
            self.holds.labels(side.value).set(1 if side in held else 0)

    def set_epoch(self, epoch: int | None) -> None:
        if epoch is not None:
            self._epoch.value = epoch

    def lease_request(self, kind: str, seconds: float) -> None:
        self.lease_seconds.labels(kind).observe(seconds)

    def resource_operation(self, operation: str, seconds: float, ok: bool) -> None:
        """A finished start (acquire) or stop (release) of the groups."""
        self.resource_seconds.labels(operation).observe(seconds)
        if not ok:
            self.resource_failures.labels(operation).inc()

    def resource_failure(self, operation: str) -> None:
        """A failure outside start/stop: `refresh` (a held address vanished), `monitor`."""
        self.resource_failures.labels(operation).inc()

    def acquired(self, reason: str, wall: float | None = None) -> str | None:
        """A successful acquisition: counted as a failover when the reason says so. Returns the label."""
        label = failover_reason(reason)
        if label is None:
            return None
        self.failovers.labels(label).inc()
        self.last_failover_gap.set(self._silent_for if label in (PEER_DEAD, INITDEAD) else 0.0)
        self.last_failover_time.set(time.time() if wall is None else wall)
        return label

    def self_fenced(self) -> None:
        self.self_fencings.inc()

    def config_reload(self, result: str) -> None:
        self.config_reloads.labels(result).inc()

    def set_auth(self, keys: AuthKeys) -> None:
        """The key indices in force (never a key): after start-up and after each applied reload."""
        self.auth_signing_key.set(keys.active)
        for index in range(MAX_AUTH_INDEX + 1):
            if index in keys.keys:
                self.auth_key_accepted.labels(str(index)).set(1)
            else:
                with contextlib.suppress(KeyError):
                    self.auth_key_accepted.remove(str(index))

    def fence_guard(self, up: bool) -> None:
        self.fence_guard_up.set(1 if up else 0)

    def fence_guard_restarted(self) -> None:
        self.fence_guard_restarts.inc()

    def kernel_fence(self, open_for: float, failures: int, lapses: int = 0) -> None:
        """The fence's state after a sync: seconds left open (0: dark), its failures and lapses so far."""
        self.kernel_fence_open.set(max(0.0, open_for))
        if failures > self._fence_failures_seen:
            self.kernel_fence_failures.inc(failures - self._fence_failures_seen)
            self._fence_failures_seen = failures
        if lapses > self._fence_lapses_seen:
            self.kernel_fence_lapses.inc(lapses - self._fence_lapses_seen)
            self._fence_lapses_seen = lapses

    def text(self) -> str:
        """The exposition text, as a scrape returns it."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode()


def serve(metrics: AgentMetrics, port: int, address: str = "0.0.0.0") -> WSGIServer:
    """Export `metrics` over HTTP at http://address:port/metrics (a daemon thread). Stop with
    `server.shutdown()`; `server.server_address[1]` is the port (useful with port 0)."""
    server, _thread = start_http_server(port, address, registry=metrics.registry)
    return server


def samples(text: str) -> Iterator[tuple[str, dict[str, str], float]]:
    """Parse exposition text into (name, labels, value): for tests and hactl."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for s in family.samples:
            yield s.name, dict(s.labels), s.value
