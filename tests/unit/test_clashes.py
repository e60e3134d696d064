"""Two HAClusters on one node: the first keeps what a node has one of, the later one is told."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from hacluster_api.models import HAClusterSpec
from hacluster_operator.clashes import clashes, footprint
from hacluster_operator.decide import decide
from hacluster_operator.resources import label_patch

A, B, C = "node-a", "node-b", "node-c"
SPEC: dict[str, Any] = {
    "nodes": [A, B],
    "heartbeat": {"media": {"udp": [{"interface": "eth1", "mode": "broadcast"}]}},
    "auth": {"secretRef": {"name": "auth"}},
    "resources": [{"ip": {"address": "192.0.2.10/24"}}],
}


def hac(name: str, created: str, **changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(SPEC)
    spec.update(changes)
    return {"metadata": {"namespace": "ha", "name": name, "creationTimestamp": created}, "spec": spec}


def between(later: dict[str, Any], first: dict[str, Any]) -> list[str]:
    mine, theirs = footprint(later), footprint(first)
    assert mine is not None and theirs is not None
    return clashes(mine, [theirs, mine])


def test_a_second_pair_on_the_same_nodes_with_the_defaults_is_told_what_and_with_whom() -> None:
    web = hac("web", "2026-01-01T00:00:00Z")
    db = hac("db", "2026-01-02T00:00:00Z")
    found = between(db, web)
    assert found == [
        "heartbeat UDP port 694 on node-a, node-b is also ha/web's (created first): "
        "give this HACluster another spec.heartbeat.media.udp[].port",
        "metrics port 9694 on node-a, node-b is also ha/web's agents' (created first): "
        "give this HACluster another spec.agentMetricsPort",
    ]
    assert between(web, db) == []  # the first keeps running


def test_distinct_ports_share_a_node_and_other_nodes_share_nothing() -> None:
    web = hac("web", "2026-01-01T00:00:00Z")
    db = hac(
        "db",
        "2026-01-02T00:00:00Z",
        heartbeat={"media": {"udp": [{"interface": "eth1", "mode": "broadcast", "port": 695}]}},
        agentMetricsPort=9695,
    )
    assert between(db, web) == []
    elsewhere = hac("far", "2026-01-03T00:00:00Z", nodes=[C, "node-d"])
    assert between(elsewhere, web) == []
    one_shared = hac("near", "2026-01-03T00:00:00Z", nodes=[B, C])
    assert [m.split(" is also")[0] for m in between(one_shared, web)] == [
        "heartbeat UDP port 694 on node-b",
        "metrics port 9694 on node-b",
    ]


def test_a_watchdog_and_a_serial_line_have_one_owner() -> None:
    fenced = {"nodeFence": {"watchdog": "/dev/watchdog"}}
    serial = {"udp": [{"interface": "eth1", "mode": "broadcast"}], "serial": [{"device": "/dev/ttyS0"}]}
    web = hac("web", "2026-01-01T00:00:00Z", failover=fenced, heartbeat={"media": serial})
    db = hac(
        "db",
        "2026-01-02T00:00:00Z",
        failover=fenced,
        heartbeat={"media": {**serial, "udp": [{"interface": "eth1", "mode": "broadcast", "port": 695}]}},
        agentMetricsPort=9695,
    )
    found = between(db, web)
    assert [m.split(" on ")[0] for m in found] == ["serial line /dev/ttyS0", "watchdog /dev/watchdog"]


def test_a_workload_node_label_has_one_owner_even_in_another_group() -> None:
    """Two HAClusters on one node that both move `tier` would each put it on their own holder:
    the later one is held back. Its groups' resources count, not only `resources`."""
    apart = {"heartbeat": {"media": {"udp": [{"interface": "eth1", "mode": "broadcast", "port": 695}]}},
             "agentMetricsPort": 9695}  # fmt: skip
    web = hac("web", "2026-01-01T00:00:00Z", resources=[{"workload": {"nodeLabel": "example.com/tier"}}])
    db = hac(
        "db",
        "2026-01-02T00:00:00Z",
        resources=[],
        groups=[
            {"name": "g1", "resources": [{"workload": {"nodeLabel": "example.com/tier", "value": "db"}}]}
        ],
        **apart,
    )
    assert between(db, web) == [
        "workload node label example.com/tier on node-a, node-b is also ha/web's (created first): "
        "each HACluster moves it to its own owner; give this one another workload nodeLabel"
    ]
    other = copy.deepcopy(db)
    other["spec"]["groups"][0]["resources"][0]["workload"]["nodeLabel"] = "example.com/db"
    assert between(other, web) == []


def test_a_node_label_is_removed_only_while_it_has_our_value() -> None:
    """The standby's label goes; a label with the same key and another value (a user's, another
    HACluster's) stays: it is not ours to take away."""
    ours = {"example.com/tier": "web"}
    away = {"example.com/tier": None}
    assert label_patch({"example.com/tier": "web", "x": "1"}, away, ours) == {"example.com/tier": None}
    assert label_patch({"example.com/tier": "db"}, away, ours) == {}
    assert label_patch({}, away, ours) == {}
    assert label_patch({"example.com/tier": "db"}, ours, ours) == {"example.com/tier": "web"}


def test_the_later_clusters_status_says_port_conflict() -> None:
    web = hac("web", "2026-01-01T00:00:00Z")
    db = hac("db", "2026-01-02T00:00:00Z")
    conflicts = between(db, web)
    d = decide(
        HAClusterSpec.model_validate(db["spec"]),
        1,
        None,
        {},
        datetime(2026, 1, 3, tzinfo=UTC),
        conflicts=conflicts,
    )
    degraded = next(c for c in d.status.conditions if c.type == "Degraded")
    assert (degraded.status, degraded.reason) == ("True", "PortConflict")
    assert "not rolled out: heartbeat UDP port 694 on node-a, node-b is also ha/web's" in degraded.message
