"""The whole product against a real kube-apiserver: the operator (as a process, with the RBAC it
ships) renders the node configs from an HACluster; two real agents in network namespaces read
them (as the DaemonSet's pods would), arbitrate through the ownership Lease, and carry out a
declared switchover and a failover; status and Events tell the story. No kubelet is needed: the
test starts what the DaemonSet would run, with the ServiceAccount token the agents' RBAC grants."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client as k8s

from hacluster_agent.lab import APISERVER_ADDR, Lab
from hacluster_operator.models import GROUP, PLURAL, VERSION
from tests.apiserver.conftest import ApiServerBinaries
from tests.support.controlplane import ControlPlane
from tests.support.eventually import eventually
from tests.support.kubeagents import agent_rbac

pytestmark = [pytest.mark.apiserver, pytest.mark.netns]

REPO = Path(__file__).resolve().parents[2]
NS, NAME, OPERATOR_NS = "ha", "demo", "hacluster-system"
KEY = "full-stack-test-key"
T = TypeVar("T")


class Stack:
    def __init__(self, lab: Lab, cp: ControlPlane, kubectl: Path) -> None:
        self.lab, self.cp, self.kubectl = lab, cp, kubectl
        self.api = cp.api_client()
        self.custom = k8s.CustomObjectsApi(self.api)
        self.core = k8s.CoreV1Api(self.api)
        self.operator: subprocess.Popen[bytes] | None = None

    def sh(self, *args: str, input: str | None = None) -> str:
        return subprocess.run(
            [str(self.kubectl), "--kubeconfig", str(self.cp.kubeconfig), *args],
            input=input, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip

    def start_operator(self, kubeconfig: Path) -> None:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.lab.root),
            "KUBECONFIG": str(kubeconfig),
            "HACLUSTER_AGENT_IMAGE": "registry.example/hacluster-agent:test",
            "HACLUSTER_OPERATOR_NAMESPACE": OPERATOR_NS,
            "PYTHONUNBUFFERED": "1",
        }
        log = (self.lab.root / "operator.log").open("ab")
        self.operator = subprocess.Popen(
            [sys.executable, "-m", "hacluster_operator", "--namespace", NS, "--identity", "op-1",
             "--interval", "0.2", "--config-every", "1"],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.lab.root,
        )  # fmt: skip

    def plugin(self, *args: str) -> str:
        """`kubectl ha …` (our plugin) as a user runs it, with the admin kubeconfig."""
        return subprocess.run(
            [sys.executable, "-m", "hacluster_operator.kubectl_ha", "--kubeconfig", str(self.cp.kubeconfig),
             "-n", NS, *args],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip

    def hac(self) -> dict[str, Any]:
        return dict(self.custom.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, NAME))

    def lease(self) -> tuple[str, int]:
        spec = k8s.CoordinationV1Api(self.api).read_namespaced_lease(NAME, NS).spec
        return spec.holder_identity or "", spec.lease_transitions or 0

    def events(self, reason: str) -> list[str]:
        items = self.core.list_namespaced_event(NS).items
        return [e.message or "" for e in items if e.reason == reason]

    def close(self) -> None:
        if self.operator is not None and self.operator.poll() is None:
            os.kill(self.operator.pid, signal.SIGTERM)
            try:
                self.operator.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.operator.pid, signal.SIGKILL)
                self.operator.wait(5)
        self.api.close()


@pytest.fixture
def stack(apiserver_binary: ApiServerBinaries) -> Iterator[Stack]:
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    lab = Lab(keepalive="100ms", deadtime="300ms", warntime="200ms")
    cp: ControlPlane | None = None
    st: Stack | None = None
    try:
        lab.build()
        lab.attach_host()
        cp = ControlPlane(apiserver_binary.apiserver, bind_address=APISERVER_ADDR)
        cp.start()
        st = Stack(lab, cp, apiserver_binary.tools.kubectl)
        st.sh("apply", "-f", str(REPO / "crds" / "hacluster.dev_haclusters.yaml"))
        for ns in (NS, OPERATOR_NS):
            st.sh("create", "namespace", ns)
        for node in ("n1", "n2"):
            st.core.create_node(k8s.V1Node(metadata=k8s.V1ObjectMeta(name=node)))
        st.sh("apply", "-f", str(REPO / "operator" / "hacluster_operator" / "rbac.yaml"))
        st.sh("wait", "--for=condition=Established", f"crd/{PLURAL}.{GROUP}", "--timeout=30s")
        st.start_operator(cp.service_account_kubeconfig(OPERATOR_NS, "hacluster-operator", create=False))
        agent_rbac(cp, lab.root, NS, NAME)  # writes lab.root/agent.kubeconfig
        yield st
    finally:
        for name in ("operator.log",):
            p = lab.root / name
            if p.exists():
                print(f"{name}:\n", p.read_text(errors="replace")[-3000:])
        print("n1 log:\n", lab.agent_log("n1")[-3000:], "\nn2 log:\n", lab.agent_log("n2")[-3000:])
        if st is not None:
            st.close()
        lab.close()
        if cp is not None:
            cp.stop()


def create_cluster(st: Stack) -> None:
    st.core.create_namespaced_secret(
        NS, k8s.V1Secret(metadata=k8s.V1ObjectMeta(name="demo-auth"), string_data={"authkeys": KEY})
    )
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "HACluster",
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {
            "nodes": ["n1", "n2"],
            "preferredNode": "n1",
            "heartbeat": {
                "keepalive": "100ms",
                "deadtime": "300ms",
                "warntime": "200ms",
                "initdead": "2s",
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
    st.custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)


def mount_config(st: Stack) -> Path:
    """What the DaemonSet's Secret volume would show the pods."""

    def rendered() -> k8s.V1Secret:
        secret = st.core.read_namespaced_secret(f"{NAME}-config", NS)
        assert secret.data and "n1.ha.cf" in secret.data
        return secret

    secret = eventually(rendered, what="the operator's config Secret")
    mount = st.lab.root / "secret"
    mount.mkdir()
    for key, value in secret.data.items():
        (mount / key).write_bytes(base64.b64decode(value))
    return mount


def start_agents(st: Stack, mount: Path) -> None:
    kc = st.lab.root / "agent.kubeconfig"
    for node in ("n1", "n2"):
        st.lab.agent_args = [
            "--config-dir", str(mount), "--config-prefix", f"{node}.",
            "--init-dir", str(st.lab.root / node / "ha.d" / "resource.d"),
            "--kube", "--kubeconfig", str(kc), "--namespace", NS, "--cluster", NAME,
        ]  # fmt: skip
        st.lab.start_agent(node)


def test_operator_and_agents_switchover_then_failover(stack: Stack) -> None:
    st = stack
    create_cluster(st)
    start_agents(st, mount_config(st))
    st.lab.wait_for("n1", timeout=30)
    assert st.lease() == ("n1", 1)

    def ready() -> dict[str, Any]:
        status = st.hac()["status"]
        assert status["owner"] == "n1" and status["epoch"] == 1
        assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True", status
        return status

    eventually(ready, what="status Ready with owner n1")

    def printed() -> None:
        table = st.sh("get", "hac", "-n", NS)
        assert "n1" in table and "Ready" in table, (table, st.hac()["status"])

    eventually(printed, what="kubectl get hac shows owner and state")
    assert not st.events("FailedOver"), "a first acquisition is not a failover"

    # Only the heartbeat link is cut: the Lease proves the owner alive, nothing moves.
    st.lab.deafen("n1")
    st.lab.deafen("n2")

    def link_down() -> None:
        status = st.hac()["status"]
        conds = {c["type"]: c for c in status["conditions"]}
        assert conds["HeartbeatLinkDown"]["status"] == "True", conds
        assert status["owner"] == "n1" and status["epoch"] == 1

    eventually(link_down, what="HeartbeatLinkDown with the owner unchanged")
    assert st.lab.holds_vip("n1") and not st.lab.holds_vip("n2") and st.lease() == ("n1", 1)
    st.lab.deafen("n1", on=False)
    st.lab.deafen("n2", on=False)
    eventually(ready, what="Ready again once the link heals")

    # A declared switchover: one field in the spec, carried out gracefully through the Lease.
    st.plugin("switchover", NAME, "--to", "n2")  # kubectl ha: patches the spec, the GitOps way
    st.lab.wait_for("n2", timeout=20)
    eventually(lambda: assert_eq(st.lease(), ("n2", 2)), what="Lease moved to n2")
    eventually(lambda: assert_true(st.events("SwitchoverDone")), what="SwitchoverDone event")
    assert not st.lab.holds_vip("n1")

    # The owner dies: the agents fail over by themselves; the operator reports it.
    st.plugin("switchover", NAME, "--clear")
    st.lab.kill_agent("n2", signal.SIGKILL)
    st.lab.cut("n2")
    st.lab.wait_for("n1", timeout=15)
    eventually(lambda: assert_eq(st.lease(), ("n1", 3)), what="Lease back on n1")

    def failed_over() -> str:
        msgs = st.events("FailedOver")
        assert msgs
        return msgs[0]

    msg = eventually(failed_over, what="FailedOver event")
    assert "n2" in msg and "n1" in msg and "epoch 3" in msg
    status = eventually(lambda: owner_is(st, "n1", 3), what="status owner n1 epoch 3")
    view = st.plugin("status", NAME)
    assert "n1" in view and "3" in view and "n2" in view, view
    assert KEY not in json.dumps(status)
    assert KEY not in (st.lab.root / "operator.log").read_text(errors="replace")


def owner_is(st: Stack, node: str, epoch: int) -> dict[str, Any]:
    status = st.hac()["status"]
    assert status["owner"] == node and status["epoch"] == epoch, status
    return dict(status)


def assert_eq(a: object, b: object) -> None:
    assert a == b, (a, b)


def assert_true(a: object) -> None:
    assert a
