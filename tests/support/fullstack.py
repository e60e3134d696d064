"""The whole product on one machine: a real kube-apiserver, the operator (a process with the RBAC
it ships) and two agents in the Lab's namespaces, started the way the DaemonSet would start them
(the operator's rendered config Secret, a token of the ServiceAccount `<cluster>-agent` the
operator made, with the Role it made: this cluster's Leases only). No kubelet needed.

Used by tests/apiserver/test_full_stack.py and the fault campaign (bench/chaos.py).
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kubernetes import client as k8s
from kubernetes import utils as k8s_utils

from hacluster_api.heartbeat.durations import parse_duration_ms
from hacluster_api.models import GROUP, PLURAL, VERSION, HAClusterSpec
from hacluster_api.names import lease_names
from tests.support import tree
from tests.support.controlplane import ControlPlane
from tests.support.eventually import crd_established, eventually
from tests.support.lab import Lab

REPO = Path(__file__).resolve().parents[2]
NS, NAME, OPERATOR_NS = "ha", "demo", "hacluster-system"
NODES = ("n1", "n2")
KEY = "full-stack-test-key"


def cluster_body(
    keepalive: str = "100ms", deadtime: str = "300ms", warntime: str = "200ms"
) -> dict[str, Any]:
    """The HACluster of the Lab's pair: ucast on eth0, sha1, the VIP then demo-web, no failback."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "HACluster",
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {
            "nodes": list(NODES),
            "preferredNode": "n1",
            "heartbeat": {
                "keepalive": keepalive,
                "deadtime": deadtime,
                "warntime": warntime,
                # Heartbeat's own rule: initdead at least deadtime (the CRD refuses less)
                "initdead": deadtime if parse_duration_ms(deadtime) > 2000 else "2s",
                "media": {
                    "udp": [
                        {
                            "interface": "eth0",
                            "mode": "unicast",
                            "peers": {"n1": "192.0.2.11", "n2": "192.0.2.12"},
                        }
                    ]
                },
            },
            "auth": {"method": "sha1", "secretRef": {"name": "demo-auth"}},
            "resources": [
                {"ip": {"address": "192.0.2.100/24", "interface": "eth0"}},
                {"script": {"name": "demo-web"}},
            ],
            "failover": {"autoFailback": False},
        },
    }


class FullStack:
    """Operator and agents around one HACluster; every process it starts is ended by close()."""

    def __init__(
        self, lab: Lab, cp: ControlPlane, agent_args: list[str] | None = None, name: str = NAME
    ) -> None:
        self.lab, self.cp, self.name = lab, cp, name
        self.api = cp.api_client()
        self.custom = k8s.CustomObjectsApi(self.api)
        self.core = k8s.CoreV1Api(self.api)
        self.leases = k8s.CoordinationV1Api(self.api)
        self.operator: subprocess.Popen[bytes] | None = None
        self.operator_kubeconfig: Path | None = None
        self.agent_kubeconfig: Path | None = None
        self.mount: Path | None = None
        self.agent_args = agent_args or []

    # -- set-up ---------------------------------------------------------------------------------
    def install(self) -> None:
        """CRD, namespaces, the two Node objects, the operator's RBAC. (The agents' RBAC is the
        operator's to make, per HACluster: see agent_account().)"""
        crd = yaml.safe_load((REPO / "crds" / "hacluster.dev_haclusters.yaml").read_text())
        k8s.ApiextensionsV1Api(self.api).create_custom_resource_definition(crd)
        for ns in (NS, OPERATOR_NS):
            self.core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=ns)))
        for node in NODES:
            self.core.create_node(k8s.V1Node(metadata=k8s.V1ObjectMeta(name=node)))
        rbac = list(yaml.safe_load_all((REPO / "operator" / "hacluster_operator" / "rbac.yaml").read_text()))
        k8s_utils.create_from_yaml(self.api, yaml_objects=[d for d in rbac if d])
        crd_established(self.api, f"{PLURAL}.{GROUP}")
        self.operator_kubeconfig = self.cp.service_account_kubeconfig(
            OPERATOR_NS, "hacluster-operator", create=False
        )

    def start_operator(self) -> None:
        assert self.operator_kubeconfig is not None
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.lab.root),
            "KUBECONFIG": str(self.operator_kubeconfig),
            "HACLUSTER_AGENT_IMAGE": "registry.example/hacluster-agent:test",
            "HACLUSTER_OPERATOR_NAMESPACE": OPERATOR_NS,
            "PYTHONPATH": tree.pythonpath(),
            "PYTHONUNBUFFERED": "1",
        }
        log = (self.lab.root / "operator.log").open("ab")
        self.operator = subprocess.Popen(
            # its production defaults (--interval, --config-every): it acts on watch events
            [sys.executable, "-m", "hacluster_operator", "--namespace", NS, "--identity", "op-1"],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.lab.root,
        )  # fmt: skip
        log.close()

    def kill_operator(self, sig: int = signal.SIGKILL) -> None:
        if self.operator is not None and self.operator.poll() is None:
            os.kill(self.operator.pid, sig)
            try:
                self.operator.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.operator.pid, signal.SIGKILL)
                self.operator.wait(5)

    def create_cluster(self, body: dict[str, Any] | None = None) -> None:
        self.core.create_namespaced_secret(
            NS, k8s.V1Secret(metadata=k8s.V1ObjectMeta(name="demo-auth"), string_data={"authkeys": KEY})
        )
        self.custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body or cluster_body())

    def mount_config(self) -> Path:
        """What the DaemonSet's Secret volume would show the pods."""

        def rendered() -> k8s.V1Secret:
            secret = self.core.read_namespaced_secret(f"{self.name}-config", NS)
            assert secret.data and "n1.ha.cf" in secret.data
            return secret

        secret = eventually(rendered, what="the operator's config Secret")
        mount = self.lab.root / ("secret" if self.name == NAME else f"secret-{self.name}")
        mount.mkdir(exist_ok=True)
        for key, value in secret.data.items():
            (mount / key).write_bytes(base64.b64decode(value))
        self.mount = mount
        return mount

    def agent_account(self) -> Path:
        """A kubeconfig of the ServiceAccount `<cluster>-agent`, once the operator has made it,
        its Role and RoleBinding, and the Leases the agents may not create themselves."""
        if self.agent_kubeconfig is not None:
            return self.agent_kubeconfig
        rbac = k8s.RbacAuthorizationV1Api(self.api)
        account = f"{self.name}-agent"

        def made() -> None:
            self.core.read_namespaced_service_account(account, NS)
            rbac.read_namespaced_role(account, NS)
            rbac.read_namespaced_role_binding(account, NS)
            spec = HAClusterSpec.model_validate(self.hac()["spec"])
            for lease in lease_names(self.name, NODES, [g.name for g in spec.group_list()]):
                self.leases.read_namespaced_lease(lease, NS)

        eventually(made, what=f"the operator's ServiceAccount, Role and RoleBinding {account}")
        kubeconfig = self.cp.service_account_kubeconfig(NS, account, create=False)
        out = self.lab.root / ("agent.kubeconfig" if self.name == NAME else f"{self.name}.agent.kubeconfig")
        shutil.copy(kubeconfig, out)
        self.agent_kubeconfig = out
        return out

    def start_agent(self, node: str) -> subprocess.Popen[bytes]:
        assert self.mount is not None
        self.agent_account()
        assert self.agent_kubeconfig is not None
        self.lab.agent_args = [
            "--config-dir", str(self.mount), "--config-prefix", f"{node}.",
            "--init-dir", str(self.lab.root / node / "ha.d" / "resource.d"),
            "--kube", "--kubeconfig", str(self.agent_kubeconfig), "--namespace", NS, "--cluster", self.name,
            *self.agent_args,
        ]  # fmt: skip
        return self.lab.start_agent(node, self.instance)

    @property
    def instance(self) -> str:
        """The Lab's name for this cluster's agents on a node ("" for the first cluster's)."""
        return "" if self.name == NAME else self.name

    def sibling(self, name: str) -> FullStack:
        """Another HACluster on the same nodes, served by the same operator (not started again)."""
        return FullStack(self.lab, self.cp, self.agent_args, name=name)

    # -- reading --------------------------------------------------------------------------------
    def hac(self) -> dict[str, Any]:
        return dict(self.custom.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, self.name))

    def lease(self, timeout: float | None = None) -> tuple[str, int]:
        """(holderIdentity, leaseTransitions) of the ownership Lease."""
        kw: dict[str, Any] = {} if timeout is None else {"_request_timeout": timeout}
        spec = self.leases.read_namespaced_lease(self.name, NS, **kw).spec
        return spec.holder_identity or "", spec.lease_transitions or 0

    def events(self, reason: str) -> list[str]:
        items = self.core.list_namespaced_event(NS).items
        return [e.message or "" for e in items if e.reason == reason]

    def patch_failover(self, **fields: Any) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, NS, PLURAL, self.name, {"spec": {"failover": fields}}
        )

    def logs(self, tail: int = 3000) -> str:
        parts = []
        p = self.lab.root / "operator.log"
        if p.exists():
            parts.append("operator.log:\n" + p.read_text(errors="replace")[-tail:])
        for node in NODES:
            parts.append(f"{node} log:\n" + self.lab.agent_log(node)[-tail:])
        return "\n".join(parts)

    def log_files(self) -> list[tuple[str, Path]]:
        return [("operator", self.lab.root / "operator.log")] + [
            (node, self.lab.root / node / "agent.log") for node in NODES
        ]

    def log_marks(self) -> dict[str, int]:
        """Each log's current size: `logs_since` shows what was written after this."""
        return {name: p.stat().st_size if p.exists() else 0 for name, p in self.log_files()}

    def logs_since(self, marks: dict[str, int], limit: int = 200_000) -> str:
        """What each log got after `marks` (all of a log started afresh since), at most `limit` chars each."""
        parts = []
        for name, p in self.log_files():
            if not p.exists():
                continue
            data = p.read_bytes()
            mark = marks.get(name, 0)
            text = data[mark if mark <= len(data) else 0 :].decode(errors="replace")
            cut = f"[… {len(text) - limit} chars]\n" if len(text) > limit else ""
            parts.append(f"== {name} log:\n{cut}{text[-limit:]}")
        return "\n".join(parts)

    def close(self) -> None:
        self.kill_operator(signal.SIGTERM)
        self.api.close()


S = TypeVar("S", bound=FullStack)


@contextlib.contextmanager
def full_stack(
    apiserver: Path,
    make: Callable[[Lab, ControlPlane], S],
    lab: Lab | None = None,
    echo_logs: bool = True,
) -> Iterator[S]:
    """A built Lab joined to a real API server, with the CRD, RBAC and the operator running; the
    caller creates the HACluster and starts the agents. Removes everything on exit, even on error."""
    lab = lab or Lab(keepalive="100ms", deadtime="300ms", warntime="200ms")
    cp: ControlPlane | None = None
    st: S | None = None
    try:
        lab.build()
        lab.attach_host()
        cp = ControlPlane(apiserver, bind_address=lab.api_addr)
        cp.start()
        st = make(lab, cp)
        st.install()
        st.start_operator()
        yield st
    finally:
        if st is not None and echo_logs:
            print(st.logs())
        if st is not None:
            st.close()
        lab.close()
        if cp is not None:
            cp.stop()
