"""Several resource groups (spec.groups): what each side makes of them, without I/O.

The agent runs one engine per group on shared media (hacluster_agent/groups.py): each group's
heartbeats carry its name and reach only its engine; another group's never do. The operator
decides each group as a single-group HACluster and gathers one status (operator/groups.py).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest

from hacluster_agent.daemon import Agent, AgentOptions
from hacluster_agent.engine.actions import Send
from hacluster_agent.engine.membership import Engine, EngineConfig
from hacluster_agent.groups import Hub, Labelled, group_config
from hacluster_agent.wire.codec import encode
from hacluster_agent.wire.message import GROUP_TAG
from hacluster_api.agentconfig import AgentConfigError, check_groups
from hacluster_api.heartbeat.authkeys import parse_authkeys
from hacluster_api.heartbeat.directory import load_directory
from hacluster_api.models import Condition, HAClusterSpec, HAClusterStatus
from hacluster_api.render import render_node
from hacluster_operator.decide import Decision
from hacluster_operator.groups import gather, previous_of
from hacluster_operator.observed import Event

A, B = "n1", "n2"
KEY = "groups-test-key"
BASE: dict[str, Any] = {
    "nodes": [A, B],
    "heartbeat": {"keepalive": "100ms", "deadtime": "300ms", "media": {"udp": [{"interface": "eth0", "mode": "broadcast"}]}},
    "auth": {"secretRef": {"name": "auth"}},
}  # fmt: skip
IP1 = {"ip": {"address": "192.0.2.10/24", "interface": "eth0"}}
IP2 = {"ip": {"address": "192.0.2.11/24", "interface": "eth0"}}


def spec(**fields: Any) -> HAClusterSpec:
    return HAClusterSpec.model_validate({**BASE, **fields})


# -- what the agents are told -------------------------------------------------------------------


def test_each_group_is_a_haresources_line_with_its_home_and_agent_json_names_them() -> None:
    s = spec(
        groups=[{"name": "db", "resources": [IP1]}, {"name": "web", "preferredNode": B, "resources": [IP2]}]
    )
    files = render_node(s, A, KEY).files()
    assert [line for line in files["haresources"].splitlines() if not line.startswith("#")] == [
        "n1 IPaddr2::192.0.2.10/24/eth0",
        "n2 IPaddr2::192.0.2.11/24/eth0",
    ]
    assert render_node(s, A, KEY).agent.groups == ["db", "web"]


def test_one_group_named_main_is_the_single_group_form_byte_for_byte() -> None:
    single = spec(resources=[IP1], preferredNode=B)
    grouped = spec(groups=[{"name": "main", "preferredNode": B, "resources": [IP1]}])
    for node in (A, B):
        assert render_node(single, node, KEY).files() == render_node(grouped, node, KEY).files()


def test_the_agent_refuses_groups_that_do_not_match_haresources(tmp_path: Path) -> None:
    f = tmp_path / "agent.json"
    check_groups(["db", "web"], 2, f, kube=True)
    check_groups(None, 3, f, kube=False)
    for names, lines, kube, says in [
        (["db"], 2, True, "groups names 1 groups, haresources has 2 lines"),
        (["db", "db"], 2, True, "names a group twice"),
        (["db", "web"], 2, False, "groups needs Kubernetes mode"),
    ]:
        with pytest.raises(AgentConfigError, match=says) as e:
            check_groups(names, lines, f, kube=kube)
        assert str(e.value).startswith(str(f))


# -- the agent: one engine per group on shared media ---------------------------------------------


def _agents(tmp_path: Path) -> dict[str | None, Agent]:
    """n2's agents of two groups (main untagged, web tagged), as run_groups builds them."""
    d = tmp_path / "ha.d"
    d.mkdir()
    (d / "ha.cf").write_text(
        "keepalive 100ms\ndeadtime 500ms\nwarntime 250ms\ninitdead 2\nucast eth0 192.0.2.11\nnode n1\nnode n2\n"
    )
    (d / "haresources").write_text("n1 IPaddr2::192.0.2.10/24/eth0\nn2 IPaddr2::192.0.2.11/24/eth0\n")
    fd = os.open(d / "authkeys", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, f"auth 1\n1 sha1 {KEY}\n".encode())
    os.close(fd)
    cfg = load_directory(d)
    out: dict[str | None, Agent] = {}
    for i, tag in enumerate((None, "web")):
        opts = AgentOptions(
            node=B, state_dir=tmp_path / f"state-{i}", control_socket=tmp_path / f"sock-{i}", tag=tag
        )
        agent = Agent(group_config(cfg, i), opts)
        agent.engine.start(0.0, 1_700_000_000.0)
        agent.started = True
        out[tag] = agent
    return out


def _beats(tag: str | None) -> list[bytes]:
    keys, _ = parse_authkeys(f"auth 1\n1 sha1 {KEY}\n")
    assert keys is not None
    peer = Engine(
        EngineConfig(node=A, peer=B, keepalive=0.1, deadtime=0.5, warntime=0.25, initdead=2.0, generation=5)
    )
    out = []
    for act in peer.start(10.0, 1_700_000_000.0):
        if isinstance(act, Send):
            message = act.message if tag is None else act.message.add(GROUP_TAG, tag)
            out.append(encode(message, keys))
    return out


def test_each_group_engine_hears_only_its_own_groups_heartbeats(tmp_path: Path) -> None:
    agents = _agents(tmp_path)
    assert [len(a.cfg.haresources.groups) for a in agents.values()] == [1, 1]
    hub = Hub(agents)
    for data in _beats("web"):
        hub.packet_received("eth0", data)
    assert agents["web"].engine.counters.get("rx_status", 0) == 3
    assert agents[None].engine.counters.get("rx_status", 0) == 0
    for data in _beats(None):
        hub.packet_received("eth0", data)
    assert agents[None].engine.counters.get("rx_status", 0) == 3
    # A group this node does not run (the peer's config is newer): dropped and counted, nowhere heard.
    for data in _beats("cache"):
        hub.packet_received("eth0", data)
    assert agents[None].rejected == {"unknown_group": 3}
    assert [a.engine.counters.get("rx_status", 0) for a in agents.values()] == [3, 3]


def test_one_metrics_endpoint_labels_each_groups_samples() -> None:
    registries = {}
    for group, n in (("db", 1), ("web", 2)):
        r = registries[group] = CollectorRegistry()
        Counter("hacluster_peer_deaths", "Times the peer was declared dead.", ["peer"], registry=r).labels(
            A
        ).inc(n)
    combined = CollectorRegistry(auto_describe=False)
    combined.register(Labelled(registries))
    text = generate_latest(combined).decode()
    assert 'hacluster_peer_deaths_total{group="db",peer="n1"} 1.0' in text
    assert 'hacluster_peer_deaths_total{group="web",peer="n1"} 2.0' in text
    assert text.count("# TYPE hacluster_peer_deaths_total counter") == 1


# -- the operator: one decision per group, one status ---------------------------------------------

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _cond(kind: str, status: str, message: str) -> Condition:
    return Condition(type=kind, status=status, last_transition_time=T0, reason="R", message=message)  # type: ignore[arg-type]


def _decision(owner: str, epoch: int, state: str, ready: str, events: tuple[Event, ...] = ()) -> Decision:
    status = HAClusterStatus(
        owner=owner,
        epoch=epoch,
        state=state,  # type: ignore[arg-type]
        conditions=[_cond("Ready", ready, f"{owner} serves"), _cond("Degraded", "False", "fine")],
    )
    return Decision(None, "", owner, {}, status, True, events, False)


def test_the_status_is_the_first_groups_with_every_group_and_the_worst_condition() -> None:
    db = _decision(A, 3, "Ready", "True")
    web = _decision(B, 7, "Degraded", "False", (Event("Warning", "FailedOver", "FailedOver from n1 to n2"),))
    status, new, events = gather([("db", db), ("web", web)], None)
    assert (status.owner, status.epoch, status.state) == (A, 3, "Degraded")
    assert [(g.name, g.owner, g.epoch, g.state) for g in status.groups] == [
        ("db", A, 3, "Ready"),
        ("web", B, 7, "Degraded"),
    ]
    ready = {c.type: c for c in status.conditions}["Ready"]
    assert (ready.status, ready.message) == ("False", "web: n2 serves")
    assert {c.type: c for c in status.conditions}["Degraded"].message == "fine"  # every group says the same
    assert new and [e.message for e in events] == ["group web: FailedOver from n1 to n2"]
    assert gather([("db", db), ("web", web)], status)[1] is False  # nothing new: no write

    # Each group's next decision compares with its own past, conditions included.
    mine = previous_of(status, "web", first=False)
    assert mine is not None and (mine.owner, mine.epoch, mine.state) == (B, 7, "Degraded")
    assert {c.type: c.status for c in mine.conditions} == {"Ready": "False", "Degraded": "False"}
    # A status written before the spec had groups: the first group was the whole HACluster.
    old = HAClusterStatus(owner=A, epoch=2, state="Ready")
    assert previous_of(old, "db", first=True) == old and previous_of(old, "web", first=False) is None


def test_a_restarted_operator_reads_every_groups_owner_and_epoch_from_the_status() -> None:
    """No memory yet (a new leader): the HACluster's status is the previous look. Each group's
    owner and epoch must come from it (the events of a move made meanwhile, a recreated Lease's
    epoch), not only the first group's."""
    from hacluster_operator.handlers import _previous, group_record

    hacluster = {
        "metadata": {"name": "web", "namespace": "ha"},
        "status": {
            "owner": "n1", "epoch": 4, "state": "Ready", "observedGeneration": 3,
            "groups": [
                {"name": "n1-group", "owner": "n1", "epoch": 4, "state": "Ready"},
                {"name": "n2-group", "owner": "n2", "epoch": 7, "state": "Ready"},
            ],
        },
    }  # fmt: skip
    previous = _previous(hacluster)
    second = previous_of(previous, "n2-group", first=False)
    assert second is not None and (second.owner, second.epoch) == ("n2", 7)
    assert group_record(hacluster, "n2-group", first=False) == {"owner": "n2", "epoch": 7}
    assert group_record(hacluster, "n1-group", first=True) == {"owner": "n1", "epoch": 4}
    assert group_record(hacluster, "new-group", first=False) == {}
