"""An agents' ServiceAccount on a test control plane, for agents run without the operator
(test_agent_arbitration, bench/failover.py --kubernetes): the Role the operator would make for the
cluster (its three Leases by name), plus `create`, since no operator pre-creates the Leases here."""

from __future__ import annotations

import shutil
from pathlib import Path

from kubernetes import client as k8s

from tests.support.controlplane import ControlPlane


def agent_rbac(cp: ControlPlane, dest: Path, namespace: str, cluster: str) -> Path:
    """The agents' ServiceAccount: leases of this cluster only (create cannot be name-scoped)."""
    kubeconfig = cp.service_account_kubeconfig(namespace, "hacluster-agent")
    names = [cluster, f"{cluster}-n1", f"{cluster}-n2"]
    with cp.api_client() as api:
        rbac = k8s.RbacAuthorizationV1Api(api)
        rbac.create_namespaced_role(
            namespace,
            k8s.V1Role(
                metadata=k8s.V1ObjectMeta(name="hacluster-agent"),
                rules=[
                    k8s.V1PolicyRule(
                        api_groups=["coordination.k8s.io"], resources=["leases"], verbs=["create"]
                    ),
                    k8s.V1PolicyRule(
                        api_groups=["coordination.k8s.io"],
                        resources=["leases"],
                        resource_names=names,
                        verbs=["get", "update", "patch"],
                    ),
                ],
            ),
        )
        rbac.create_namespaced_role_binding(
            namespace,
            k8s.V1RoleBinding(
                metadata=k8s.V1ObjectMeta(name="hacluster-agent"),
                role_ref=k8s.V1RoleRef(
                    api_group="rbac.authorization.k8s.io", kind="Role", name="hacluster-agent"
                ),
                subjects=[
                    k8s.RbacV1Subject(kind="ServiceAccount", name="hacluster-agent", namespace=namespace)
                ],
            ),
        )
    out = dest / "agent.kubeconfig"
    shutil.copy(kubeconfig, out)
    return out
