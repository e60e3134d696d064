"""The operator's builders for the agents' RBAC and Leases (resources.py), and the RBAC it ships
(rbac.yaml): each agent's account may touch only its own HACluster's Leases, and the operator
holds everything it grants (Kubernetes refuses a Role that grants more than its creator holds)."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import yaml

from hacluster_api.agentconfig import NodeFenceConfig
from hacluster_api.annotations import RECREATED
from hacluster_api.models import API_VERSION, FailoverSpec, HAClusterSpec, NodeFenceSpec
from hacluster_api.names import lease_names
from hacluster_api.render import build_agent_config, build_hacf
from hacluster_operator.handlers import SPEC_HASH, Context, Settings, ensure_object
from hacluster_operator.resources import (
    agent_account_name,
    agent_role,
    agent_role_binding,
    agent_service_account,
    daemonset,
    ownership_lease,
    report_lease,
)

REPO = Path(__file__).resolve().parents[2]
RBAC_FILE = REPO / "operator" / "hacluster_operator" / "rbac.yaml"
A, B = "node-a", "node-b"
SPEC = HAClusterSpec.model_validate(
    {
        "nodes": [A, B],
        "heartbeat": {"media": {"udp": [{"interface": "eth1", "mode": "broadcast"}]}},
        "auth": {"secretRef": {"name": "web-auth"}},
        "resources": [{"ip": {"address": "192.0.2.10/24"}}],
    }
)
HAC: dict[str, Any] = {
    "apiVersion": API_VERSION,
    "kind": "HACluster",
    "metadata": {"name": "web", "namespace": "ha", "uid": "1234"},
    "spec": {},
}
OWNER = {"apiVersion": API_VERSION, "kind": "HACluster", "name": "web", "uid": "1234", "controller": True}


def test_the_agents_account_role_and_binding_are_named_after_the_cluster_and_owned_by_it() -> None:
    assert agent_account_name("web") == "web-agent"
    for made, kind in (
        (agent_service_account(HAC), "ServiceAccount"),
        (agent_role(HAC, SPEC), "Role"),
        (agent_role_binding(HAC), "RoleBinding"),
    ):
        meta = made["metadata"]
        assert made["kind"] == kind
        assert (meta["name"], meta["namespace"]) == ("web-agent", "ha")
        assert meta["ownerReferences"] == [OWNER]
        assert meta["labels"]["hacluster.dev/cluster"] == "web"
        assert meta["labels"]["app.kubernetes.io/component"] == "agent"


def test_the_agents_role_names_this_clusters_three_leases_and_nothing_else() -> None:
    assert lease_names("web", [A, B]) == ["web", "web-node-a", "web-node-b"]
    assert lease_names("web", [A, B], ["main", "db"]) == [
        "web", "web-node-a", "web-node-b", "web-db", "web-db-node-a", "web-db-node-b"
    ]  # fmt: skip
    role = agent_role(HAC, SPEC)
    assert role["apiVersion"] == "rbac.authorization.k8s.io/v1"
    assert role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["web", "web-node-a", "web-node-b"],
            "verbs": ["get", "update", "patch"],
        }
    ]
    # Another HACluster, other nodes: other names, never a wildcard.
    other = {**HAC, "metadata": {**HAC["metadata"], "name": "db"}}
    spec = SPEC.model_copy(update={"nodes": ["x", "y"]})
    (rule,) = agent_role(other, spec)["rules"]
    assert rule["resourceNames"] == ["db", "db-x", "db-y"]


def test_the_binding_gives_the_role_to_the_account_in_the_clusters_namespace() -> None:
    rb = agent_role_binding(HAC)
    assert rb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "web-agent"}
    assert rb["subjects"] == [{"kind": "ServiceAccount", "name": "web-agent", "namespace": "ha"}]


def test_the_daemonset_runs_as_the_clusters_agent_account() -> None:
    ds = daemonset(HAC, SPEC, image="agent:1")
    assert ds["spec"]["template"]["spec"]["serviceAccountName"] == "web-agent"


def test_the_agent_has_four_capabilities_or_privileged_for_a_host_device() -> None:
    """A serial line or a watchdog is a host device: only a privileged container may open it (the
    agent on a real node: `cannot open /dev/ttyS0: Operation not permitted` before)."""

    def context(extra: dict[str, Any]) -> dict[str, Any]:
        spec = HAClusterSpec.model_validate({**SPEC.model_dump(by_alias=True, exclude_none=True), **extra})
        (container,) = daemonset(HAC, spec, image="agent:1")["spec"]["template"]["spec"]["containers"]
        return dict(container["securityContext"])

    assert context({}) == {
        "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW", "SYS_NICE", "IPC_LOCK"]},
        "allowPrivilegeEscalation": False,
    }
    serial = {"heartbeat": {"media": {"serial": [{"device": "/dev/ttyS0"}]}}}
    assert context(serial) == {"privileged": True}
    watchdog = {"failover": {"nodeFence": {"watchdog": "/dev/watchdog"}}}
    assert context(watchdog) == {"privileged": True}


def test_the_report_leases_are_created_empty_and_owned() -> None:
    for node in (A, B):
        lease = report_lease(HAC, node)
        assert lease["metadata"]["name"] == f"web-{node}"
        assert lease["metadata"]["ownerReferences"] == [OWNER]
        assert lease["spec"] == {}  # never renewed: the agent's first merge-patch fills it in
    assert ownership_lease(HAC)["spec"] == {"leaseTransitions": 0}
    # recreated after a deletion: the recorded owner at the recorded epoch + 1, never lower
    recorded = {**HAC, "status": {"owner": "node-b", "epoch": 6}}
    assert ownership_lease(recorded)["spec"] == {"leaseTransitions": 7, "holderIdentity": "node-b"}
    # marked: its holder proves nothing to the agents (api/hacluster_api/recreate.py)
    assert ownership_lease(recorded)["metadata"]["annotations"] == {RECREATED: "6"}
    # a report newer than the status (a take it had not recorded): above it, naming that node
    newer = ownership_lease(recorded, {"node-a": (True, 7), "node-b": (False, 6)})
    assert newer["spec"] == {"leaseTransitions": 8, "holderIdentity": "node-a"}


def _covers(rule: dict[str, Any], group: str, resource: str, verb: str, name: str | None) -> bool:
    return (
        group in rule.get("apiGroups", [])
        and resource in rule.get("resources", [])
        and verb in rule.get("verbs", [])
        and (not rule.get("resourceNames") or name in rule["resourceNames"])
    )


def _operator_rules() -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(RBAC_FILE.read_text()) if d]
    (role,) = [
        d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "hacluster-operator"
    ]
    return list(role["rules"])


def test_the_operator_holds_every_permission_it_grants_the_agents() -> None:
    """RBAC escalation prevention: the operator may create the agents' Role only with permissions
    it holds itself (it holds neither `escalate` nor `bind`)."""
    rules = _operator_rules()
    for rule in agent_role(HAC, SPEC)["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    for name in rule["resourceNames"]:
                        assert any(_covers(r, group, resource, verb, name) for r in rules), (resource, verb)
    for resource in ("roles", "rolebindings"):
        for verb in ("escalate", "bind", "delete"):
            assert not any(_covers(r, "rbac.authorization.k8s.io", resource, verb, None) for r in rules)
    # What it needs to make the agents' objects (and to watch them: its cache), and not more.
    for group, resource in (("", "serviceaccounts"), ("rbac.authorization.k8s.io", "roles")):
        for verb in ("get", "list", "watch", "create", "update"):
            assert any(_covers(r, group, resource, verb, None) for r in rules), (resource, verb)
        assert not any(_covers(r, group, resource, "delete", None) for r in rules)


class FakeKube:
    """The two calls ensure_object makes, on a dict of objects by path."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []
        self.version = 0

    async def get(self, path: str, *, sensitive: bool = False, fresh: bool = False) -> dict[str, Any] | None:
        obj = self.objects.get(path)
        return copy.deepcopy(obj) if obj is not None else None

    async def request(self, method: str, path: str, body: Any = None, **_: Any) -> dict[str, Any]:
        self.calls.append(method)
        self.version += 1
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = str(self.version)
        if method == "POST":
            path = f"{path}/{body['metadata']['name']}"
        self.objects[path] = stored
        return stored


def test_ensure_object_creates_then_leaves_alone_then_replaces_on_change() -> None:
    kube = FakeKube()
    ctx = Context(kube=kube, settings=Settings(agent_image="agent:1"))  # type: ignore[arg-type]
    roles = "/apis/rbac.authorization.k8s.io/v1/namespaces/ha/roles"

    async def run() -> None:
        assert await ensure_object(ctx, roles, agent_role(HAC, SPEC))
        assert not await ensure_object(ctx, roles, agent_role(HAC, SPEC))
        moved = SPEC.model_copy(update={"nodes": [A, "node-c"]})
        assert await ensure_object(ctx, roles, agent_role(HAC, moved))

    asyncio.run(run())
    assert kube.calls == ["POST", "PUT"]
    stored = kube.objects[f"{roles}/web-agent"]
    assert stored["rules"][0]["resourceNames"] == ["web", "web-node-a", "web-node-c"]
    assert SPEC_HASH in stored["metadata"]["annotations"]


def test_a_node_fence_reaches_the_agents_as_a_watchdog_they_can_open() -> None:
    """spec.failover.nodeFence: ha.cf gets Heartbeat's `watchdog` line, agent.json its timeout and
    the stop budget (tests/unit/test_agent_config.py reads them back as the agent does), and the
    device is mounted into the agent's container."""
    fence = NodeFenceSpec(watchdog="/dev/watchdog0", watchdog_timeout=7, stop_budget="12s")
    spec = SPEC.model_copy(update={"failover": FailoverSpec(node_fence=fence)})
    assert build_hacf(spec, spec.nodes[0]).watchdog == "/dev/watchdog0"
    assert build_agent_config(spec).node_fence == NodeFenceConfig(watchdog_timeout_s=7, stop_budget_s=12.0)
    pod = daemonset(HAC, spec, image="agent:1")["spec"]["template"]["spec"]
    assert {"name": "watchdog", "hostPath": {"path": "/dev/watchdog0", "type": "CharDevice"}} in pod[
        "volumes"
    ]
    assert {"name": "watchdog", "mountPath": "/dev/watchdog0"} in pod["containers"][0]["volumeMounts"]
    assert build_hacf(SPEC, SPEC.nodes[0]).watchdog is None
    assert build_agent_config(SPEC).node_fence is None


def test_a_change_of_the_agents_options_rolls_them_and_a_change_of_their_files_does_not() -> None:
    """The options (agent.json) apply at start: their digest is on the pod template, so a change
    restarts the agents one at a time. No option is a flag any more."""
    spec = SPEC.model_copy(
        update={"failover": FailoverSpec(when_arbiter_unavailable="TakeOver", arbitration_window="350ms")}
    )
    template = daemonset(HAC, spec, image="agent:1")["spec"]["template"]
    default = daemonset(HAC, SPEC, image="agent:1")["spec"]["template"]
    assert template["metadata"]["annotations"] != default["metadata"]["annotations"]
    assert template["spec"] == default["spec"]
    command = template["spec"]["containers"][0]["command"]
    assert not [
        w for w in command if w in ("--arbitration-window", "--when-arbiter-unavailable", "--stop-budget")
    ]
    timing = SPEC.model_copy(update={"heartbeat": SPEC.heartbeat.model_copy(update={"keepalive": "2s"})})
    assert daemonset(HAC, timing, image="agent:1")["spec"]["template"]["metadata"] == default["metadata"]
