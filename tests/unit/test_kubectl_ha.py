"""kubectl ha: the status view from an HACluster's status and its Lease, and the switchover patches."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hacluster_operator.kubectl_ha import (
    NotFound,
    age,
    main,
    render_status,
    switchover_patch,
    target_node,
)

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def hacluster(**status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "hacluster.dev/v1alpha1",
        "kind": "HACluster",
        "metadata": {"name": "web", "namespace": "prod", "generation": 3},
        "spec": {
            "nodes": ["node-a", "node-b"],
            "preferredNode": "node-a",
            "heartbeat": {
                "keepalive": "100ms",
                "deadtime": "500ms",
                "media": {"udp": [{"interface": "eth1", "mode": "broadcast"}]},
            },
            "auth": {"method": "sha1", "secretRef": {"name": "web-authkeys"}},
            "resources": [
                {"ip": {"address": "192.0.2.100/24", "interface": "eth1"}},
                {"script": {"name": "Filesystem", "args": ["/dev/sdb1", "/srv"]}},
                {"workload": {"nodeLabel": "hacluster.dev/web"}},
            ],
            "failover": {"autoFailback": True},
        },
        "status": status,
    }


STATUS = {
    "owner": "node-b",
    "epoch": 7,
    "state": "Degraded",
    "observedGeneration": 3,
    "nodes": [
        {"name": "node-a", "state": "dead", "lastSeen": "2025-03-01T11:58:00Z", "media": {}},
        {
            "name": "node-b",
            "state": "active",
            "lastSeen": "2025-03-01T11:59:58Z",
            "media": {"eth1": "down", "/dev/ttyS0": "down"},
        },
    ],
    "lastTransition": {
        "from": "node-a",
        "to": "node-b",
        "reason": "peer node-a dead: silent for 520ms",
        "gapMs": 812,
        "time": "2025-03-01T11:58:01Z",
    },
    "conditions": [
        {
            "type": "Ready",
            "status": "True",
            "reason": "Owned",
            "message": "node-b holds the resources",
            "lastTransitionTime": "2025-03-01T11:58:01Z",
        },
        {
            "type": "Degraded",
            "status": "True",
            "reason": "NodeDown",
            "message": "node-a is dead",
            "lastTransitionTime": "2025-03-01T11:58:00Z",
        },
    ],
}

LEASE = {
    "metadata": {"name": "web", "namespace": "prod", "annotations": {}},
    "spec": {"holderIdentity": "node-b", "leaseTransitions": 7, "acquireTime": "2025-03-01T11:58:01.000000Z"},
}


def test_status_view_shows_owner_epoch_nodes_links_last_move_and_conditions() -> None:
    text = render_status(hacluster(**STATUS), LEASE, NOW)
    lines = text.splitlines()
    assert lines[0] == "HACluster prod/web: Degraded, owner node-b, epoch 7"
    assert "lease      held by node-b, epoch 7 since 2025-03-01 11:58:01Z (1m59s ago)" in text
    assert "policy     preferred node-a, autoFailback on" in text
    assert (
        "resources  ip 192.0.2.100/24 on eth1 -> Filesystem::/dev/sdb1::/srv -> label hacluster.dev/web"
        in text
    )
    node_a = next(line for line in lines if line.strip().startswith("node-a"))
    node_b = next(line for line in lines if line.strip().startswith("node-b"))
    assert node_a.split()[:3] == ["node-a", "dead", "standby,preferred"]
    assert node_b.split()[:3] == ["node-b", "active", "owner"]
    assert "/dev/ttyS0 down, eth1 down" in node_b and "2s ago" in node_b
    assert (
        "last move  node-a -> node-b at 2025-03-01 11:58:01Z (1m59s ago), 812ms without an owner: peer node-a dead: silent for 520ms"
        in text
    )
    ready = next(line for line in lines if line.strip().startswith("Ready"))
    assert ready.split()[:4] == ["Ready", "True", "Owned", "1m59s"]
    assert "NodeDown" in text and "node-a is dead" in text


def test_status_view_from_the_lease_when_the_status_lags_and_a_handover_runs() -> None:
    lease = {
        "metadata": {"annotations": {"hacluster.dev/handover-to": "node-a", "hacluster.dev/freeze": "true"}},
        "spec": {"holderIdentity": "", "leaseTransitions": 8},
    }
    obj = hacluster(**{**STATUS, "observedGeneration": 2})
    obj["spec"]["failover"]["switchoverTo"] = "node-a"
    text = render_status(obj, lease, NOW)
    assert text.splitlines()[0] == "HACluster prod/web: Degraded, no owner, epoch 8"
    assert "status is behind the spec: generation 3, observed 2" in text
    assert "released (nobody holds it), epoch 8" in text
    assert "handover to node-a in progress" in text
    assert "maintenance: automatic moves frozen" in text
    assert "switchoverTo node-a (pending)" in text


def test_status_view_of_a_new_cluster_without_status_or_lease() -> None:
    text = render_status(hacluster(), None, NOW)
    assert text.splitlines()[0] == "HACluster prod/web: Unknown, no owner"
    assert "lease      none yet" in text
    assert "last move  none recorded" in text
    assert "node-a" in text and "unknown" in text


def test_status_without_access_to_the_lease_falls_back_on_the_status(
    capsys: pytest.CaptureFixture[str],
) -> None:
    class Forbidden(Exception):
        status, reason = 403, "Forbidden"

    api = FakeApi([hacluster(**STATUS)])

    def no_lease(namespace: str, name: str) -> dict[str, Any] | None:
        raise Forbidden()

    api.lease = no_lease  # type: ignore[method-assign]
    assert main(["-n", "prod", "status", "web"], api=api) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "HACluster prod/web: Degraded, owner node-b, epoch 7"
    assert "lease      cannot read it (HTTP 403 Forbidden): owner and epoch from the status" in out


@pytest.mark.parametrize(
    ("seconds", "shown"), [(5, "5s"), (125, "2m5s"), (900, "15m"), (7500, "2h5m"), (200_000, "2d7h")]
)
def test_age_reads_like_kubectl(seconds: int, shown: str) -> None:
    t = datetime.fromtimestamp(NOW.timestamp() - seconds, UTC).isoformat()
    assert age(t, NOW) == shown


def test_switchover_patch_is_a_merge_patch_of_the_spec() -> None:
    assert switchover_patch("node-b") == {"spec": {"failover": {"switchoverTo": "node-b"}}}
    assert switchover_patch(None) == {"spec": {"failover": {"switchoverTo": None}}}  # null removes it


def test_heartbeat_aliases() -> None:
    nodes = ["node-a", "node-b"]
    assert target_node("standby", nodes, "node-a") == "node-b"  # hb_standby on node-a
    assert target_node("takeover", nodes, "node-a") == "node-a"  # hb_takeover on node-a
    assert target_node("switchover", nodes, "node-b") == "node-b"
    with pytest.raises(ValueError, match="not one of the nodes"):
        target_node("takeover", nodes, "node-c")


class FakeApi:
    def __init__(self, objs: list[dict[str, Any]], lease: dict[str, Any] | None = None) -> None:
        self.objs = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objs}
        self.leases = {k: lease for k in self.objs}
        self.patches: list[tuple[str, str, Mapping[str, Any]]] = []

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        if (namespace, name) not in self.objs:
            raise NotFound(f"HACluster {name!r} not found in namespace {namespace!r}")
        return self.objs[(namespace, name)]

    def list(self, namespace: str | None) -> list[dict[str, Any]]:
        return [o for (ns, _), o in self.objs.items() if namespace in (None, ns)]

    def lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.leases.get((namespace, name))

    def patch(self, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        self.patches.append((namespace, name, body))
        return self.objs[(namespace, name)]


@pytest.mark.parametrize(
    ("argv", "to"),
    [
        (["switchover", "web", "--to", "node-a"], "node-a"),
        (["standby", "web", "--node", "node-b"], "node-a"),
        (["takeover", "web", "--node", "node-a"], "node-a"),
        (["switchover", "web", "--clear"], None),
    ],
)
def test_moves_patch_switchover_to(
    argv: list[str], to: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    obj = hacluster(**STATUS)
    if to is None:
        obj["spec"]["failover"]["switchoverTo"] = "node-b"
    api = FakeApi([obj], LEASE)
    assert main(["-n", "prod", *argv], api=api) == 0
    assert api.patches == [("prod", "web", {"spec": {"failover": {"switchoverTo": to}}})]


def test_namespace_flag_after_the_subcommand_and_dry_run(capsys: pytest.CaptureFixture[str]) -> None:
    api = FakeApi([hacluster(**STATUS)], LEASE)
    assert main(["standby", "web", "--node", "node-b", "-n", "prod", "--dry-run"], api=api) == 0
    assert api.patches == []
    out = capsys.readouterr()
    assert json.loads(out.out) == {"spec": {"failover": {"switchoverTo": "node-a"}}}
    assert "kubectl patch haclusters.hacluster.dev/web -n prod --type merge" in out.err


def test_unknown_node_or_cluster_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    api = FakeApi([hacluster(**STATUS)], LEASE)
    assert main(["-n", "prod", "takeover", "web", "--node", "node-z"], api=api) == 1
    assert main(["-n", "prod", "status", "nope"], api=api) == 1
    err = capsys.readouterr().err
    assert "'node-z' is not one of the nodes node-a, node-b" in err
    assert "'nope' not found in namespace 'prod'" in err
    assert api.patches == []


def test_status_command_lists_every_cluster_of_the_namespace(capsys: pytest.CaptureFixture[str]) -> None:
    other = hacluster()
    other["metadata"] = {"name": "db", "namespace": "prod"}
    api = FakeApi([hacluster(**STATUS), other], LEASE)
    assert main(["-n", "prod", "status"], api=api) == 0
    out = capsys.readouterr().out
    assert out.index("HACluster prod/db") < out.index("HACluster prod/web")
    assert main(["-n", "prod", "status", "web", "-o", "json"], api=api) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown[0]["lease"]["spec"]["holderIdentity"] == "node-b"


def grouped() -> dict[str, Any]:
    """`web` as two resource groups (spec.groups), db on node-a, cache on node-b."""
    obj = hacluster(**STATUS)
    spec = obj["spec"]
    spec.pop("preferredNode", None)
    resources = spec.pop("resources")
    spec["groups"] = [
        {"name": "db", "preferredNode": "node-a", "resources": resources},
        {"name": "cache", "preferredNode": "node-b", "autoFailback": True, "switchoverTo": "node-a",
         "resources": [{"ip": {"address": "192.0.2.20/24"}}]},
    ]  # fmt: skip
    obj["metadata"]["resourceVersion"] = "41"
    obj["status"]["groups"] = [
        {"name": "db", "owner": "node-a", "epoch": 7, "state": "Ready"},
        {"name": "cache", "owner": "node-a", "epoch": 3, "state": "Ready"},
    ]
    return obj


def test_status_of_several_groups_shows_each_group(capsys: pytest.CaptureFixture[str]) -> None:
    api = FakeApi([grouped()], LEASE)
    assert main(["-n", "prod", "status", "web"], api=api) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.strip().startswith(("GROUP", "db ", "cache "))]
    assert rows[0] == ["GROUP", "OWNER", "EPOCH", "STATE", "PREFERRED", "FAILBACK", "SWITCHOVER", "RESOURCES"]
    assert rows[1][:7] == ["db", "node-a", "7", "Ready", "node-a", "on", "-"]
    assert rows[2] == ["cache", "node-a", "3", "Ready", "node-b", "on", "node-a", "ip", "192.0.2.20/24"]


def test_a_move_of_one_group_patches_that_group_only(capsys: pytest.CaptureFixture[str]) -> None:
    api = FakeApi([grouped()], LEASE)
    assert main(["-n", "prod", "switchover", "web", "--to", "node-b"], api=api) == 1
    assert "several resource groups: say which with --group (db, cache)" in capsys.readouterr().err
    assert main(["-n", "prod", "standby", "web", "--node", "node-a", "--group", "db"], api=api) == 0
    assert main(["-n", "prod", "switchover", "web", "--group", "cache", "--clear"], api=api) == 0
    (_, _, first), (_, _, second) = api.patches
    assert first["metadata"] == {"resourceVersion": "41"}  # a change made meanwhile fails it
    assert [(g["name"], g.get("switchoverTo")) for g in first["spec"]["groups"]] == [
        ("db", "node-b"),
        ("cache", "node-a"),
    ]
    assert [(g["name"], g.get("switchoverTo")) for g in second["spec"]["groups"]] == [
        ("db", None),
        ("cache", None),
    ]
    assert main(["-n", "prod", "switchover", "web", "--group", "nope", "--to", "node-a"], api=api) == 1
    assert "no group 'nope' (groups: db, cache)" in capsys.readouterr().err


def test_last_seen_is_the_report_leases_renewal_when_it_can_be_read() -> None:
    """The status's lastSeen is rewritten every few minutes only (decide.LAST_SEEN_REFRESH_S):
    LAST SEEN comes from each node's report Lease, renewed every second by its agent."""
    renewed = {"node-b": (NOW - timedelta(seconds=40)).isoformat().replace("+00:00", "Z")}
    lines = render_status(hacluster(**STATUS), LEASE, NOW, renewed=renewed).splitlines()
    node_a = next(line for line in lines if line.strip().startswith("node-a"))
    node_b = next(line for line in lines if line.strip().startswith("node-b"))
    assert "40s ago" in node_b
    assert "2m0s ago" in node_a  # no report Lease read: the status's lastSeen
