"""The agent's Prometheus metrics: what a scrape shows after simulated events (no sockets)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from hacluster_agent.daemon import Agent, AgentOptions
from hacluster_agent.engine.actions import Acquire, Note, PeerChanged, Send, Side
from hacluster_agent.engine.membership import Engine, EngineConfig
from hacluster_agent.metrics import AgentMetrics, failover_reason, samples
from hacluster_agent.wire.codec import encode
from hacluster_agent.wire.message import Message
from hacluster_api.heartbeat.authkeys import parse_authkeys
from hacluster_api.heartbeat.directory import load_directory
from hacluster_api.transition import TransitionKind


def value(m: AgentMetrics, name: str, **labels: str) -> float | None:
    for n, lab, v in samples(m.text()):
        if n == name and lab == labels:
            return v
    return None


def test_counters_move_with_their_labels() -> None:
    m = AgentMetrics("n2", "n1", generation=7)
    for _ in range(3):
        m.heartbeat_sent("eth0")
    m.heartbeat_sent("/dev/ttyS0")
    for _ in range(2):
        m.heartbeat_received("eth0")
    m.rejected("bad_auth")
    m.note("rejected", {"reason": "replay"})
    m.note("late_heartbeat", {})
    m.medium_state("eth0", True)
    m.medium_state("/dev/ttyS0", False)

    assert value(m, "hacluster_heartbeats_sent_total", medium="eth0") == 3
    assert value(m, "hacluster_heartbeats_sent_total", medium="/dev/ttyS0") == 1
    assert value(m, "hacluster_heartbeats_received_total", medium="eth0", peer="n1") == 2
    assert value(m, "hacluster_packets_rejected_total", reason="bad_auth") == 1
    assert value(m, "hacluster_packets_rejected_total", reason="replay") == 1
    assert value(m, "hacluster_packets_rejected_total", reason="no_auth") == 0  # known reasons start at 0
    assert value(m, "hacluster_packets_rejected_total", reason="not_a_member") == 0
    assert value(m, "hacluster_late_heartbeats_total", peer="n1") == 1
    assert value(m, "hacluster_medium_up", medium="eth0") == 1
    assert value(m, "hacluster_medium_up", medium="/dev/ttyS0") == 0
    assert value(m, "hacluster_agent_info", node="n2", peer="n1", generation="7") == 1


def test_failover_after_peer_death_sets_gap_holds_and_durations() -> None:
    m = AgentMetrics("n2", "n1")
    assert value(m, "hacluster_holds", side="local") == 0
    assert value(m, "hacluster_holds", side="foreign") == 0
    assert value(m, "hacluster_epoch") is None  # standalone: no Lease, no epoch sample
    m.peer_changed(False, 0.532)
    m.resource_operation("start", 0.12, ok=True)
    m.set_holds({Side.FOREIGN})
    assert m.acquired("peer n1 dead: silent for 532ms", wall=1_700_000_000.0) == "peer_dead"
    m.resource_operation("stop", 3.0, ok=False)
    m.note("self_fenced", {})  # the engine's self-fencing Note, as the daemon passes it on
    m.note("node_fence", {})  # the engine's FenceNode Note: the watchdog is fed no more
    m.set_epoch(4)

    assert value(m, "hacluster_peer_deaths_total", peer="n1") == 1
    assert value(m, "hacluster_failovers_total", reason="peer_dead") == 1
    assert value(m, "hacluster_failovers_total", reason="standby") == 0
    assert value(m, "hacluster_last_failover_gap_seconds") == pytest.approx(0.532)
    assert value(m, "hacluster_last_failover_timestamp_seconds") == 1_700_000_000.0
    assert value(m, "hacluster_holds", side="foreign") == 1
    assert value(m, "hacluster_holds", side="local") == 0
    assert value(m, "hacluster_resource_operation_seconds_count", operation="start") == 1
    assert value(m, "hacluster_resource_operation_seconds_bucket", operation="start", le="0.25") == 1
    assert value(m, "hacluster_resource_operation_seconds_bucket", operation="start", le="0.1") == 0
    assert value(m, "hacluster_resource_operation_seconds_sum", operation="stop") == 3.0
    assert value(m, "hacluster_resource_failures_total", operation="stop") == 1
    assert value(m, "hacluster_resource_failures_total", operation="start") == 0
    assert value(m, "hacluster_self_fencings_total") == 1
    assert value(m, "hacluster_node_fences_total") == 1
    assert value(m, "hacluster_epoch") == 4

    # A planned handover: a failover with no silence before it.
    m.peer_changed(True)
    m.acquired("peer in standby")
    assert value(m, "hacluster_failovers_total", reason="standby") == 1
    assert value(m, "hacluster_last_failover_gap_seconds") == 0


@pytest.mark.parametrize(
    ("reason", "label"),
    [
        ("peer n1 dead: silent for 530ms", "peer_dead"),
        ("peer n1 dead: asking the Lease again", "peer_dead"),
        ("peer n1 dead: shutdone: the peer stopped cleanly", "peer_stopped"),
        ("peer n1 dead: not heard within initdead (2s)", "initdead"),
        ("peer in standby", "standby"),
        ("home node, nobody holds them", None),
        ("something new", "other"),
    ],
)
def test_failover_reasons_are_a_small_fixed_set(reason: str, label: str | None) -> None:
    assert failover_reason(reason) == label


def test_each_agent_has_its_own_registry() -> None:
    a, b = AgentMetrics("n1", "n2"), AgentMetrics("n2", "n1")
    a.heartbeat_sent("eth0")
    assert value(a, "hacluster_heartbeats_sent_total", medium="eth0") == 1
    assert value(b, "hacluster_heartbeats_sent_total", medium="eth0") is None


# -- the daemon's wiring: an Agent fed packets and actions directly, no media opened -----------


class FakeMedium:
    name, kind, encoding, up = "eth0", "ucast", "netstring", True

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sent.append(data)


def _agent(tmp_path: Path) -> Agent:
    d = tmp_path / "ha.d"
    d.mkdir()
    (d / "ha.cf").write_text(
        "keepalive 100ms\ndeadtime 500ms\nwarntime 250ms\ninitdead 2\nucast eth0 192.0.2.11\n"
        "node n1\nnode n2\nauto_failback on\n"
    )
    (d / "haresources").write_text("n1 demo-web\n")
    fd = os.open(d / "authkeys", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"auth 1\n1 sha1 right-key\n")
    os.close(fd)
    opts = AgentOptions(node="n2", state_dir=tmp_path / "state", control_socket=tmp_path / "sock")
    agent = Agent(load_directory(d), opts)
    agent.engine.start(0.0, 1_700_000_000.0)  # as run() does before packets count (its sends are not sent)
    return agent


def test_agent_counts_what_it_handles(tmp_path: Path) -> None:
    agent = _agent(tmp_path)
    medium = FakeMedium()
    agent.media = [medium]  # type: ignore[list-item]
    m = agent.metrics

    peer = Engine(EngineConfig(node="n1", peer="n2", keepalive=0.1, deadtime=0.5, warntime=0.25,
                               initdead=2.0, generation=5))  # fmt: skip
    right, _ = parse_authkeys("auth 1\n1 sha1 right-key\n")
    wrong, _ = parse_authkeys("auth 1\n1 sha1 wrong-key\n")
    assert right is not None and wrong is not None
    beats = [a.message for a in peer.start(10.0, 1_700_000_000.0) if isinstance(a, Send)]
    assert [b.type for b in beats] == ["status", "status", "status"]
    for b in beats:
        agent.packet_received("eth0", encode(b, right))
    agent.packet_received("eth0", encode(beats[0], right))  # the same sequence again: a duplicate
    agent.packet_received("eth0", encode(beats[0], wrong))
    agent.packet_received("eth0", b"garbage")
    stranger = Message.of(
        ("t", "status"), ("st", "up"), ("src", "n9"), ("seq", "1"), ("hg", "1"), ("ts", "1")
    )
    agent.packet_received("eth0", encode(stranger, right))

    assert value(m, "hacluster_heartbeats_received_total", medium="eth0", peer="n1") == 3
    assert value(m, "hacluster_packets_rejected_total", reason="bad_auth") == 1
    assert value(m, "hacluster_packets_rejected_total", reason="malformed") == 1
    assert value(m, "hacluster_packets_rejected_total", reason="not_a_member") == 1
    # what the agent sent back (starting, resource) are no heartbeats; a status is
    assert medium.sent and value(m, "hacluster_heartbeats_sent_total", medium="eth0") is None
    agent.execute(agent.engine.tick(agent.engine.next_keepalive))
    assert value(m, "hacluster_heartbeats_sent_total", medium="eth0") == 1

    agent.execute(
        [PeerChanged("n1", False, "silent for 600ms", 0.6), Note("warning", "x", counter="late_heartbeat")]
    )
    assert value(m, "hacluster_peer_deaths_total", peer="n1") == 1
    assert value(m, "hacluster_late_heartbeats_total", peer="n1") == 1
    agent.medium_state("eth0", False, "interface eth0 is down")
    assert value(m, "hacluster_medium_up", medium="eth0") == 0


def test_agent_times_resource_operations_and_counts_the_failover(tmp_path: Path) -> None:
    agent = _agent(tmp_path)
    m = agent.metrics

    class Instant:
        name = "demo-web"

        async def start(self, services_at: float | None = None, refused: object = None) -> None: ...

        async def stop(self) -> None: ...

    agent.runners[Side.FOREIGN] = [Instant()]  # type: ignore[list-item]
    agent.execute([PeerChanged("n1", False, "silent for 600ms", 0.6)])
    act = Acquire(frozenset({Side.FOREIGN}), "peer n1 dead: silent for 600ms", TransitionKind.FAILOVER, 1)
    agent.engine.flux = act  # as if the engine had asked for it
    asyncio.run(agent._resources(act))
    assert value(m, "hacluster_holds", side="foreign") == 1
    assert value(m, "hacluster_failovers_total", reason="peer_dead") == 1
    assert value(m, "hacluster_last_failover_gap_seconds") == pytest.approx(0.6)
    assert value(m, "hacluster_resource_operation_seconds_count", operation="start") == 1
