"""Pure builders for what the operator creates per HACluster: the config Secret, the agents'
DaemonSet, their ServiceAccount, Role and RoleBinding, the ownership Lease and the two report
Leases, and the workload node labels. Plain JSON manifests (dicts), the
same the API server stores, so tests compare them as they are and the client sends them as is.

Everything is owned by its HACluster (an ownerReference, controller: true), so a garbage collector
deletes it with the HACluster; the operator also deletes the Secret and the DaemonSet itself when
it lets the HACluster go (see handlers.py). The agents' RBAC objects are left to the garbage
collector: they must outlive the DaemonSet's terminating pods, which release the Lease on the way
out.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from typing import Any

from hacluster_api.annotations import RECREATED
from hacluster_api.models import API_VERSION, KIND, MAIN_GROUP, HAClusterSpec
from hacluster_api.names import lease_names, ownership_lease_name, report_lease_name
from hacluster_api.recreate import recreation
from hacluster_api.render import RenderError, build_agent_config, render_all

CONFIG_DIR = "/etc/hacluster"
STATE_DIR = "/var/lib/hacluster"
AGENT_CONTAINER = "agent"
MANAGED_BY = "hacluster-operator"
CLUSTER_LABEL = "hacluster.dev/cluster"
AGENT_CONFIG_HASH = "hacluster.dev/agent-config"
"""On the agents' pod template: agent_config_hash(spec)."""
COMPONENT_LABEL = "app.kubernetes.io/component"
SECRET_MODE = 0o400
"""The config Secret's files: read-only for the agent (root) alone; Heartbeat refuses an authkeys
that group or others can read."""

Manifest = dict[str, Any]


# --------------------------------------------------------------------------------------------
# names


def config_secret_name(cluster: str) -> str:
    return f"{cluster}-config"


def daemonset_name(cluster: str) -> str:
    return f"{cluster}-agent"


def agent_account_name(cluster: str) -> str:
    """The agents' ServiceAccount, and the Role and RoleBinding that give it its cluster's Leases."""
    return f"{cluster}-agent"


def config_key(node: str, file: str) -> str:
    """The Secret key for one of a node's files: `<node>.ha.cf`, `<node>.resource.d.<script>`.
    The agent reads them with `--config-prefix <node>.`."""
    return f"{node}.{file.replace('/', '.')}"


# --------------------------------------------------------------------------------------------
# metadata


def owner_reference(hacluster: Mapping[str, Any]) -> Manifest:
    """A controller ownerReference to the HACluster (its metadata carries name and uid).

    No blockOwnerDeletion: it would need `update` on haclusters/finalizers where the
    OwnerReferencesPermissionEnforcement admission plugin runs, and the operator's own
    finalizer already orders the deletion."""
    meta = hacluster["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
    }


def labels(cluster: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "hacluster",
        "app.kubernetes.io/instance": cluster,
        COMPONENT_LABEL: component,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        CLUSTER_LABEL: cluster,
    }


def _metadata(hacluster: Mapping[str, Any], name: str, component: str) -> Manifest:
    """Metadata for the object `name` made for `hacluster`: in its namespace, labelled, owned by it."""
    meta = hacluster["metadata"]
    return {
        "name": name,
        "namespace": meta["namespace"],
        "labels": labels(meta["name"], component),
        "ownerReferences": [owner_reference(hacluster)],
    }


def has_owner_reference(obj: Mapping[str, Any], hacluster: Mapping[str, Any]) -> bool:
    uid = hacluster["metadata"]["uid"]
    return any(ref.get("uid") == uid for ref in obj.get("metadata", {}).get("ownerReferences") or [])


# --------------------------------------------------------------------------------------------
# the config Secret


def config_data(
    spec: HAClusterSpec, authkeys_secret: str, script_bodies: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Both nodes' files, by Secret key. Raises RenderError (never quoting a key) when the spec
    and its Secret/ConfigMaps do not make a config the agent would accept."""
    data: dict[str, str] = {}
    for node, cfg in render_all(spec, authkeys_secret, script_bodies).items():
        for file, text in cfg.files().items():
            key = config_key(node, file)
            if "+" in key:  # script names may hold '+', Secret keys may not
                raise RenderError(f"script {file!r} cannot be a Secret key: rename it without '+'")
            data[key] = text
    return data


def config_secret(hacluster: Mapping[str, Any], data: Mapping[str, str]) -> Manifest:
    """The Secret `<name>-config` holding `data` (text by key), base64 as the API server stores it."""
    meta = hacluster["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(hacluster, config_secret_name(meta["name"]), "config"),
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in sorted(data.items())},
    }


def secret_text(secret: Mapping[str, Any], key: str) -> str | None:
    """One key of a Secret as the API server returns it (base64 `data`), as text."""
    value = (secret.get("data") or {}).get(key)
    if value is None:
        return None
    return base64.b64decode(value).decode()


# --------------------------------------------------------------------------------------------
# the agents' DaemonSet


def agent_command(namespace: str, cluster: str) -> list[str]:
    """The agent's command line: where it runs and where its files are, nothing of how it behaves.
    Its options come with its files in the config Secret (`<node>.agent.json`, AgentConfig)."""
    return [
        "hacluster-agent",
        "--config-dir",
        CONFIG_DIR,
        "--config-prefix",
        "$(NODE_NAME).",
        "--node",
        "$(NODE_NAME)",
        "--kube",
        "--namespace",
        namespace,
        "--cluster",
        cluster,
    ]


def agent_config_hash(spec: HAClusterSpec) -> str:
    """A digest of the agents' options (agent.json), on the pod template: a change rolls the agents
    one at a time, as a restart is what applies it (the files' changes apply live or say so)."""
    return hashlib.sha256(build_agent_config(spec).to_json().encode()).hexdigest()[:16]


def min_ready_seconds(spec: HAClusterSpec) -> int:
    """A restarted agent counts as available only after its initdead, plus a margin: a rolling
    update then never restarts the second node before the first has joined again."""
    return -(-spec.heartbeat.timing().initdead_ms // 1000) + 5


def agent_security_context(spec: HAClusterSpec) -> Manifest:
    """Four capabilities and nothing else (the VIP, ARP, real-time priority, locked memory); or
    privileged when the HACluster uses a host device, a serial line or a watchdog: a container
    opens a device only if the runtime's device cgroup admits it, which for hostPath devices only
    privileged does (Kubernetes has no per-device grant but device plugins). Seen on a real node
    before: `cannot open /dev/ttyS0: Operation not permitted`, the serial medium down for good
    (issue 13's VM cluster)."""
    if spec.heartbeat.media.serial or spec.failover.node_fence is not None:
        return {"privileged": True}
    return {
        "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW", "SYS_NICE", "IPC_LOCK"]},
        "allowPrivilegeEscalation": False,
    }


def daemonset(
    hacluster: Mapping[str, Any],
    spec: HAClusterSpec,
    *,
    image: str,
    image_pull_policy: str | None = None,
) -> Manifest:
    """The DaemonSet `<name>-agent`: one agent on each of the two nodes, on the host network, as
    the ServiceAccount `<name>-agent` (agent_role: its own cluster's Leases only).

    The pod template depends on the spec's nodes and serial devices only (not on the config
    text), so a config change reaches the agents through the mounted Secret, without a restart
    (and without the failover a restart would cause).
    """
    meta = hacluster["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    selector = {CLUSTER_LABEL: name, COMPONENT_LABEL: "agent"}
    mounts: list[Manifest] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "state", "mountPath": STATE_DIR},
    ]
    volumes: list[Manifest] = [
        {"name": "config", "secret": {"secretName": config_secret_name(name), "defaultMode": SECRET_MODE}},
        # The node's UUID and generation outlive the pod, as they outlive a Heartbeat restart.
        {
            "name": "state",
            "hostPath": {"path": f"{STATE_DIR}/{namespace}/{name}", "type": "DirectoryOrCreate"},
        },
    ]
    for i, serial in enumerate(spec.heartbeat.media.serial):
        volumes.append({"name": f"serial-{i}", "hostPath": {"path": serial.device, "type": "CharDevice"}})
        mounts.append({"name": f"serial-{i}", "mountPath": serial.device})
    if spec.failover.node_fence is not None:  # ha.cf's watchdog (render.py): the node fence's device
        device = spec.failover.node_fence.watchdog
        volumes.append({"name": "watchdog", "hostPath": {"path": device, "type": "CharDevice"}})
        mounts.append({"name": "watchdog", "mountPath": device})
    container: Manifest = {
        "name": AGENT_CONTAINER,
        "image": image,
        "command": agent_command(namespace, name),
        "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
        # On the host network the port is the node's: each HACluster sharing a node has its own
        # (spec.agentMetricsPort; the operator checks, clashes.py). The PodMonitor scrapes it by name.
        "ports": [{"name": "metrics", "containerPort": spec.agent_metrics_port, "protocol": "TCP"}],
        "securityContext": agent_security_context(spec),
        "volumeMounts": mounts,
    }
    if image_pull_policy:
        container["imagePullPolicy"] = image_pull_policy
    pod_labels = labels(name, "agent")
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": _metadata(hacluster, daemonset_name(name), "agent"),
        "spec": {
            "selector": {"matchLabels": selector},
            "minReadySeconds": min_ready_seconds(spec),
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": {AGENT_CONFIG_HASH: agent_config_hash(spec)},
                },
                "spec": {
                    "serviceAccountName": agent_account_name(name),
                    "hostNetwork": True,
                    "dnsPolicy": "ClusterFirstWithHostNet",
                    "affinity": {
                        "nodeAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": {
                                # One term per node (terms are ORed): a metadata.name field
                                # selector takes exactly one value.
                                "nodeSelectorTerms": [
                                    {
                                        "matchFields": [
                                            {"key": "metadata.name", "operator": "In", "values": [node]}
                                        ]
                                    }
                                    for node in spec.nodes
                                ]
                            }
                        }
                    },
                    # The pair decides for itself when a node is gone: never evicted for taints.
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


# --------------------------------------------------------------------------------------------
# the agents' RBAC: one ServiceAccount, Role and RoleBinding per HACluster


RBAC_GROUP = "rbac.authorization.k8s.io"


def agent_service_account(hacluster: Mapping[str, Any]) -> Manifest:
    """The ServiceAccount `<name>-agent` the DaemonSet's pods run as."""
    meta = hacluster["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _metadata(hacluster, agent_account_name(meta["name"]), "agent"),
    }


def agent_role(hacluster: Mapping[str, Any], spec: HAClusterSpec) -> Manifest:
    """The Role `<name>-agent`: this HACluster's three Leases, by name, and nothing else.

    - get: the ownership Lease's holder, epoch and resourceVersion before every compare-and-swap,
      and the operator's handover-to/freeze/release annotations on it;
    - update: take, renew and release ownership (a replace carrying the resourceVersion read);
    - patch: each agent renews its report Lease `<name>-<node>` with a merge-patch.

    No create (it cannot be narrowed to names): the operator creates all three Leases before the
    DaemonSet. No list/watch, no delete, no Secrets (the config arrives as a mounted volume), no
    HACluster: an agent's token cannot touch another HACluster's Leases, even in this namespace.
    """
    meta = hacluster["metadata"]
    return {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "Role",
        "metadata": _metadata(hacluster, agent_account_name(meta["name"]), "agent"),
        "rules": [
            # The one rule: this HACluster's Leases by name; get/update for the ownership CAS,
            # patch for the report renewals (see above). The operator holds all three verbs itself.
            {
                "apiGroups": ["coordination.k8s.io"],
                "resources": ["leases"],
                "resourceNames": lease_names(meta["name"], spec.nodes, [g.name for g in spec.group_list()]),
                "verbs": ["get", "update", "patch"],
            }
        ],
    }


def agent_role_binding(hacluster: Mapping[str, Any]) -> Manifest:
    """The RoleBinding `<name>-agent`: the Role `<name>-agent` to the ServiceAccount `<name>-agent`."""
    meta = hacluster["metadata"]
    name = agent_account_name(meta["name"])
    return {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "RoleBinding",
        "metadata": _metadata(hacluster, name, "agent"),
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": meta["namespace"]}],
    }


# --------------------------------------------------------------------------------------------
# the Leases


def ownership_lease(
    hacluster: Mapping[str, Any],
    reports: Mapping[str, tuple[bool, int | None]] | None = None,
    group: str = MAIN_GROUP,
) -> Manifest:
    """The group's Lease (`<name>`, `<name>-<group>`; hacluster_api.names), as the operator creates
    it when it is missing (`status`: the group's owner and epoch): marked `recreated` (its
    holder proves nothing to the agents), at an epoch above every one observed, naming the owner
    only when the status and the agents' `reports` (node -> holds anything, epoch) agree on it
    (`api/hacluster_api/recreate.py`: the rule and why). A new HACluster's: at 0, nobody."""
    meta = hacluster["metadata"]
    status = hacluster.get("status") or {}
    epoch, owner = status.get("epoch"), status.get("owner")
    r = recreation(
        owner if isinstance(owner, str) else None, epoch if isinstance(epoch, int) else None, reports or {}
    )
    spec: dict[str, Any] = {"leaseTransitions": r.transitions}
    if r.holder:
        spec["holderIdentity"] = r.holder
    metadata = _metadata(hacluster, ownership_lease_name(meta["name"], group), "ownership")
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {**metadata, "annotations": {RECREATED: str(r.known)}},
        "spec": spec,
    }


def report_lease(hacluster: Mapping[str, Any], node: str, group: str = MAIN_GROUP) -> Manifest:
    """The node's report Lease on the group (`<name>-<node>`, `<name>-<group>-<node>`), empty
    (never renewed): the node's agent fills it in with merge-patches, as its Role lets it patch
    but not create."""
    meta = hacluster["metadata"]
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": _metadata(hacluster, report_lease_name(meta["name"], node, group), "report"),
        "spec": {},
    }


# --------------------------------------------------------------------------------------------
# workload labels


def workload_values(spec: HAClusterSpec, value: str) -> dict[str, str]:
    """The group's workload labels: `<nodeLabel>: <value>` (`value`: the default, its Lease's name)."""
    return {
        r.workload.node_label: r.workload.value or value for r in spec.resources if r.workload is not None
    }


def workload_labels(
    spec: HAClusterSpec, cluster: str, holder: str | None
) -> dict[str, dict[str, str | None]]:
    """Each node's workload labels: `<nodeLabel>=<value>` on the holder, removed (None) from the
    other node; from both while nobody holds the Lease. Empty without workload resources."""
    wanted = workload_values(spec, cluster)
    if not wanted:
        return {}
    return {node: {k: (v if node == holder else None) for k, v in wanted.items()} for node in spec.nodes}


def label_patch(
    current: Mapping[str, str] | None, wanted: Mapping[str, str | None], ours: Mapping[str, str]
) -> dict[str, str | None]:
    """The merge-patch for a node's labels that makes `current` hold `wanted` (empty: nothing to
    do). A label is removed only while it has our value (`ours`): one set by someone else (a
    user, another HACluster) is not ours to take away."""
    have = current or {}
    patch: dict[str, str | None] = {}
    for key, value in wanted.items():
        if value is None and key in have and have[key] == ours.get(key):
            patch[key] = None
        elif value is not None and have.get(key) != value:
            patch[key] = value
    return patch
