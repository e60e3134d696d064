"""The operator against a real kube-apiserver, run as a subprocess (`python -m hacluster_operator`)
with a ServiceAccount token bound to operator/hacluster_operator/rbac.yaml, exactly as shipped.

The tests play the node agents: they renew report Leases `<cluster>-<node>` with the report JSON,
and take or release the ownership Lease by compare-and-swap, keeping its annotations (as real
agents must). Every assertion polls with a deadline; nothing waits a fixed time.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from kubernetes import client as k8s

from hacluster_api.annotations import FREEZE, HANDOVER_TO, RELEASE, REPORT
from hacluster_api.heartbeat.authkeys import parse_authkeys
from hacluster_api.heartbeat.hacf import parse_hacf
from hacluster_api.heartbeat.haresources import parse_haresources
from hacluster_api.models import GROUP, PLURAL, VERSION
from hacluster_operator.handlers import FINALIZER
from tests.apiserver.conftest import ControlPlaneFixture
from tests.support import tree
from tests.support.controlplane import free_port
from tests.support.eventually import eventually as _eventually
from tests.unit.test_operator_models import CRD_FILE

pytestmark = pytest.mark.apiserver

REPO = Path(__file__).resolve().parents[2]
RBAC_FILE = REPO / "operator" / "hacluster_operator" / "rbac.yaml"
NS = "hac-op"
OPERATOR_NS = "hacluster-system"
OPERATOR_SA = "hacluster-operator"
A, B = "node-a", "node-b"
IMAGE = "registry.example/hacluster-agent:test"
KEY = "Sup3r-Secret-Key-do-not-log"
REPORT_SECONDS = 2  # report Leases go stale this long after their last renewal
T = TypeVar("T")


def eventually(fn: Callable[[], T], *, timeout: float = 15.0, what: str = "") -> T:
    """The shared helper, with the running operators' log tails when it times out."""
    return _eventually(fn, timeout=timeout, what=what, context=_operator_logs)


def _operator_logs() -> str:
    return "".join(f"\n---- {op.identity} log (tail) ----\n{op.tail()}" for op in RUNNING)


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Rest:
    """Raw JSON calls as admin (the same way the operator calls)."""

    def __init__(self, api: k8s.ApiClient) -> None:
        self.api = api
        self.lock = threading.Lock()

    def __call__(self, method: str, path: str, body: Any = None, content_type: str | None = None) -> Any:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        params = self.api.param_serialize(
            method=method, resource_path=path, header_params=headers, body=body, auth_settings=["BearerToken"]
        )
        with self.lock:
            r = self.api.call_api(*params, _request_timeout=10)
            r.read()
        if r.status == 404 and method == "GET":
            return None
        if r.status == 409:
            raise Conflict(path)
        assert 200 <= r.status < 300, f"{method} {path}: {r.status} {r.data[:500]!r}"
        return json.loads(r.data) if r.data else None

    def merge(self, path: str, patch: Any) -> Any:
        return self(method="PATCH", path=path, body=patch, content_type="application/merge-patch+json")


class Conflict(Exception):
    pass


def lease_path(name: str | None = None, ns: str = NS) -> str:
    base = f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"
    return f"{base}/{name}" if name else base


def hac_path(name: str | None = None) -> str:
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}"
    return f"{base}/{name}" if name else base


# --------------------------------------------------------------------------------------------
# the operator subprocess


RUNNING: list[Operator] = []


class Operator:
    def __init__(self, kubeconfig: Path, log: Path, identity: str) -> None:
        self.kubeconfig, self.log, self.identity = kubeconfig, log, identity
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_port = free_port("127.0.0.1")

    def start(self) -> Operator:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.log.parent),
            "KUBECONFIG": str(self.kubeconfig),
            "HACLUSTER_AGENT_IMAGE": IMAGE,
            "HACLUSTER_OPERATOR_NAMESPACE": OPERATOR_NS,
            "PYTHONPATH": tree.pythonpath(),
            "PYTHONUNBUFFERED": "1",
        }
        args = [
            sys.executable, "-m", "hacluster_operator",
            "--namespace", NS,
            "--identity", self.identity,
            # the production defaults of --interval and --config-every: what it does, it does on
            # watch events and its decisions' deadlines, never because it polls
            "--release-timeout", "20",
            "--lease-duration", "3", "--renew-deadline", "2", "--retry-period", "0.5",
            "--metrics-port", str(self.metrics_port),
        ]  # fmt: skip
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=self.log.parent
            )
        if self not in RUNNING:
            RUNNING.append(self)
        return self

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.text().splitlines()[-lines:])

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL, by PID: no goodbye, no Lease release."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> int | None:
        if self in RUNNING:
            RUNNING.remove(self)
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode


# --------------------------------------------------------------------------------------------
# playing the agents


class Agents:
    """Both agents of one HACluster: report Leases renewed from a thread; the ownership Lease taken
    and released by compare-and-swap (a merge-patch carrying resourceVersion), annotations kept."""

    def __init__(self, rest: Rest, cluster: str) -> None:
        self.rest, self.cluster = rest, cluster
        self.reports: dict[str, dict[str, Any]] = {n: self.report(n) for n in (A, B)}
        self.renewing = {A: True, B: True}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def report(node: str, **kw: Any) -> dict[str, Any]:
        peer = B if node == A else A
        out: dict[str, Any] = {
            "state": "active",
            "holds": "none",
            "epoch": 0,
            "peer": {"node": peer, "state": "active", "links": {"eth1": {"up": True}}},
            "lastTransition": None,
        }
        out.update(kw)
        return out

    def start(self) -> Agents:
        self._write_all()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(0.3):
            with contextlib.suppress(Exception):  # the next round tries again
                self._write_all()

    def _write_all(self) -> None:
        for node in (A, B):
            if self.renewing[node]:
                self._write(node)

    def _write(self, node: str) -> None:
        name = f"{self.cluster}-{node}"
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": name,
                "namespace": NS,
                "annotations": {REPORT: json.dumps(self.reports[node])},
            },
            "spec": {"holderIdentity": node, "leaseDurationSeconds": REPORT_SECONDS, "renewTime": now()},
        }
        # A merge-patch: a Lease cannot be replaced without a resourceVersion (HTTP 422).
        if self.rest("GET", lease_path(name)) is None:
            try:
                self.rest("POST", lease_path(), body)
                return
            except Conflict:
                pass  # the operator created it meanwhile (it makes the report Leases): patch it
        self.rest.merge(lease_path(name), {"metadata": body["metadata"], "spec": body["spec"]})

    def set(self, node: str, **kw: Any) -> None:
        self.reports[node] = self.report(node, **kw)
        if self.renewing[node]:
            self._write(node)

    def ownership(self) -> dict[str, Any]:
        lease = self.rest("GET", lease_path(self.cluster))
        assert lease is not None, "no ownership Lease yet"
        return dict(lease)

    def cas(self, holder: str | None, *, bump: bool) -> int:
        """Take (bump: epoch + 1) or release the ownership Lease, as an agent does."""
        while True:
            lease = self.ownership()
            spec = lease.get("spec") or {}
            epoch = int(spec.get("leaseTransitions") or 0) + (1 if bump else 0)
            new_spec: dict[str, Any] = {
                "holderIdentity": holder,
                "leaseTransitions": epoch,
                "leaseDurationSeconds": 1,
            }
            if holder and bump:
                new_spec["acquireTime"] = now()
                new_spec["renewTime"] = now()
            patch = {"metadata": {"resourceVersion": lease["metadata"]["resourceVersion"]}, "spec": new_spec}
            try:
                self.rest.merge(lease_path(self.cluster), patch)
                return epoch
            except Conflict:
                continue  # the operator annotated it meanwhile: read again


# --------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def rest(controlplane: ControlPlaneFixture) -> Iterator[Rest]:
    with controlplane.api_client() as api:
        yield Rest(api)


@pytest.fixture(scope="module")
def setup(controlplane: ControlPlaneFixture, rest: Rest) -> Path:
    """The CRD, the namespaces, the RBAC file as shipped, two Node objects; the operator's
    ServiceAccount token kubeconfig."""
    applied = controlplane.run_kubectl("apply", "-f", str(CRD_FILE)).stdout
    assert "customresourcedefinition" in applied

    def established() -> None:
        crd = rest("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{PLURAL}.{GROUP}")
        assert any(c["type"] == "Established" and c["status"] == "True" for c in crd["status"]["conditions"])
        assert rest("GET", hac_path()) is not None

    for ns in (NS, OPERATOR_NS):
        if rest("GET", f"/api/v1/namespaces/{ns}") is None:
            rest("POST", "/api/v1/namespaces", {"metadata": {"name": ns}})
    for node in (A, B):
        if rest("GET", f"/api/v1/nodes/{node}") is None:
            rest("POST", "/api/v1/nodes", {"metadata": {"name": node}})
    controlplane.run_kubectl("apply", "-f", str(RBAC_FILE))
    eventually(established)
    return controlplane.plane.service_account_kubeconfig(OPERATOR_NS, OPERATOR_SA, create=False)


@pytest.fixture(scope="module")
def operator(setup: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    op = Operator(setup, tmp_path_factory.mktemp("operator") / "operator.log", "op-a").start()
    # leading before any test starts (a test that starts a standby expects op-a to lead)
    eventually(lambda: "leading as 'op-a'" in op.text() or {}["x"], what="op-a leading")
    yield op
    op.stop()
    text = op.text()
    assert KEY not in text, "the auth key was logged"
    assert "Traceback" not in text, text[-3000:]


SLOTS: dict[str, int] = {"web": 0}
"""Each HACluster of these tests shares the two nodes with the others: its own heartbeat port,
serial line and metrics port (the operator refuses to roll out one that clashes: clashes.py)."""


def make_cluster(rest: Rest, name: str, **failover: Any) -> dict[str, Any]:
    """The auth Secret, a script ConfigMap and an HACluster with every kind of medium and resource."""
    slot = SLOTS.setdefault(name, max(SLOTS.values()) + 1)
    secret = f"{name}-auth"
    rest(
        "POST",
        f"/api/v1/namespaces/{NS}/secrets",
        {"metadata": {"name": secret}, "stringData": {"authkeys": KEY}},
    )
    rest(
        "POST",
        f"/api/v1/namespaces/{NS}/configmaps",
        {"metadata": {"name": f"{name}-scripts"}, "data": {"httpd": "#!/bin/sh\nexit 0\n"}},
    )
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "HACluster",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "nodes": [A, B],
            "heartbeat": {
                "keepalive": "200ms",
                "deadtime": "1s",
                "media": {
                    "udp": [{"interface": "eth1", "mode": "broadcast", "port": 694 + slot}],
                    "serial": [{"device": f"/dev/ttyS{slot}"}],
                },
            },
            "agentMetricsPort": 9694 + slot,
            "auth": {"method": "sha1", "secretRef": {"name": secret}},
            "resources": [
                {"ip": {"address": "192.0.2.10/24", "interface": "eth0"}},
                {"script": {"name": "httpd", "configMapRef": {"name": f"{name}-scripts"}}},
                {"workload": {"nodeLabel": f"hacluster.dev/{name}"}},
            ],
            "failover": failover,
        },
    }
    return dict(rest("POST", hac_path(), body))


def status(rest: Rest, name: str) -> dict[str, Any]:
    return dict((rest("GET", hac_path(name)) or {}).get("status") or {})


def condition(st: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in st.get("conditions", []) if c["type"] == kind)


def events(rest: Rest, name: str, reason: str | None = None) -> list[dict[str, Any]]:
    found = rest("GET", f"/api/v1/namespaces/{NS}/events?fieldSelector=involvedObject.name%3D{name}")
    items = [e for e in found["items"] if e["involvedObject"].get("kind") == "HACluster"]
    return [e for e in items if reason is None or e["reason"] == reason]


def one_event(rest: Rest, name: str, reason: str, containing: str = "") -> dict[str, Any]:
    """The one Event with this reason (and text). kopf posts Events in the background, a moment
    after the write they tell of: read them through eventually()."""
    found = [e for e in events(rest, name, reason) if containing in e["message"]]
    assert found, f"no {reason} event {containing!r} yet"
    assert len(found) == 1, found
    return found[0]


def annotations(agents: Agents) -> dict[str, str]:
    return dict(agents.ownership()["metadata"].get("annotations") or {})


def node_labels(rest: Rest, node: str) -> dict[str, str]:
    return dict(rest("GET", f"/api/v1/nodes/{node}")["metadata"].get("labels") or {})


def ready_with(
    rest: Rest, name: str, owner: str, epoch: int, state: str = "Ready"
) -> Callable[[], dict[str, Any]]:
    def check() -> dict[str, Any]:
        st = status(rest, name)
        assert (st.get("owner"), st.get("epoch"), st.get("state")) == (owner, epoch, state), st
        return st

    return check


def serving_on_a(rest: Rest, name: str) -> Agents:
    """A new HACluster (no failback) whose agents run, node-a holding the Lease at epoch 1 and
    the resources, the status Ready: the agents are running (stop them)."""
    make_cluster(rest, name, autoFailback=False)
    eventually(lambda: rest("GET", lease_path(name)) or {}["x"], what="ownership Lease")
    agents = Agents(rest, name).start()
    try:
        agents.set(A, holds="local", epoch=1)
        agents.set(B, epoch=1)
        assert agents.cas(A, bump=True) == 1
        eventually(ready_with(rest, name, A, 1), what="Ready on node-a")
    except BaseException:
        agents.stop()
        raise
    return agents


# --------------------------------------------------------------------------------------------
# tests


def test_creates_config_secret_daemonset_and_ownership_lease(rest: Rest, operator: Operator) -> None:
    hac = make_cluster(rest, "web")
    uid = hac["metadata"]["uid"]

    secret = eventually(
        lambda: rest("GET", f"/api/v1/namespaces/{NS}/secrets/web-config") or {}["x"], what="config Secret"
    )
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert set(data) == {
        f"{n}.{f}"
        for n in (A, B)
        for f in ("ha.cf", "haresources", "authkeys", "agent.json", "resource.d.httpd")
    }
    for node in (A, B):
        hacf, f1 = parse_hacf(data[f"{node}.ha.cf"])
        assert hacf is not None and not f1.errors and hacf.nodes == [A, B]
        assert [type(m).__name__ for m in hacf.media] == ["BcastMedium", "SerialMedium"]
        haresources, f2 = parse_haresources(data[f"{node}.haresources"], nodes=hacf.nodes)
        assert haresources is not None and not f2.errors
        assert [r.name for r in haresources.groups[0].resources] == ["IPaddr2::192.0.2.10/24/eth0", "httpd"]
        keys, f3 = parse_authkeys(data[f"{node}.authkeys"])
        assert keys is not None and not f3.errors and keys.signing_key.method == "sha1"
        assert data[f"{node}.resource.d.httpd"] == "#!/bin/sh\nexit 0\n"
    assert secret["metadata"]["ownerReferences"][0]["uid"] == uid

    ds = eventually(
        lambda: rest("GET", f"/apis/apps/v1/namespaces/{NS}/daemonsets/web-agent") or {}["x"],
        what="DaemonSet",
    )
    pod = ds["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod["serviceAccountName"] == "web-agent"
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert terms == [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [A]}]},
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [B]}]},
    ]
    # a serial line: the device is reachable only privileged (resources.agent_security_context)
    assert container["securityContext"] == {"privileged": True}
    assert container["image"] == IMAGE
    # where it runs, nothing of how it behaves: its options are in its files (agent.json)
    assert container["command"] == [
        "hacluster-agent", "--config-dir", "/etc/hacluster", "--config-prefix", "$(NODE_NAME).",
        "--node", "$(NODE_NAME)", "--kube", "--namespace", NS, "--cluster", "web",
    ]  # fmt: skip
    assert container["ports"] == [{"name": "metrics", "containerPort": 9694, "protocol": "TCP"}]
    assert container["env"][0] == {
        "name": "NODE_NAME",
        "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "spec.nodeName"}},
    }
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["secret"] == {"secretName": "web-config", "defaultMode": 0o400}
    assert volumes["serial-0"]["hostPath"] == {"path": "/dev/ttyS0", "type": "CharDevice"}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["config"] == "/etc/hacluster" and mounts["serial-0"] == "/dev/ttyS0"
    assert ds["metadata"]["ownerReferences"][0]["uid"] == uid

    lease = eventually(lambda: rest("GET", lease_path("web")) or {}["x"], what="ownership Lease")
    assert lease["spec"].get("holderIdentity") is None and lease["spec"].get("leaseTransitions") == 0
    assert lease["metadata"]["ownerReferences"][0] == {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "HACluster", "name": "web", "uid": uid, "controller": True,
    }  # fmt: skip
    assert FINALIZER in rest("GET", hac_path("web"))["metadata"]["finalizers"]
    # The report Leases exist before any agent (agents may not create Leases), empty.
    for node in (A, B):
        report = rest("GET", lease_path(f"web-{node}"))
        assert report["metadata"]["ownerReferences"][0]["uid"] == uid
        assert not report["spec"].get("renewTime") and REPORT not in (
            report["metadata"].get("annotations") or {}
        )

    # No agent reports yet: Unknown, and said so.
    eventually(lambda: status(rest, "web")["state"] == "Unknown" or {}["x"], what="Unknown")
    # A new key reaches the config Secret without a restart of anything.
    rest.merge(f"/api/v1/namespaces/{NS}/secrets/web-auth", {"stringData": {"authkeys": KEY + "-2"}})

    def rotated() -> None:
        s = rest("GET", f"/api/v1/namespaces/{NS}/secrets/web-config")
        assert (KEY + "-2").encode() in base64.b64decode(s["data"][f"{A}.authkeys"])

    eventually(rotated, what="key rotation")
    # A Secret that is gone is a ConfigError (Degraded), the last good config stays.
    rest("DELETE", f"/api/v1/namespaces/{NS}/secrets/web-auth")

    def config_error() -> None:
        c = condition(status(rest, "web"), "Degraded")
        assert (c["status"], c["reason"]) == ("True", "ConfigError"), c
        assert "the auth Secret 'web-auth' does not exist" in c["message"]

    eventually(config_error, what="ConfigError")
    assert (
        eventually(lambda: one_event(rest, "web", "ConfigError"), what="ConfigError event")["type"]
        == "Warning"
    )
    assert rest("GET", f"/api/v1/namespaces/{NS}/secrets/web-config") is not None
    assert all(KEY not in json.dumps(e) for e in events(rest, "web"))


def test_status_failover_switchover_maintenance_and_staleness(
    controlplane: ControlPlaneFixture, rest: Rest, operator: Operator
) -> None:
    agents = serving_on_a(rest, "pair")  # node-a takes the Lease at epoch 1 and runs the resources
    try:
        st = status(rest, "pair")
        assert [(n["name"], n["state"], n["media"]) for n in st["nodes"]] == [
            (A, "active", {"eth1": "up"}),
            (B, "active", {"eth1": "up"}),
        ]
        assert condition(st, "Ready")["reason"] == "Serving"
        table = controlplane.run_kubectl("get", "hac", "pair", "-n", NS).stdout.splitlines()
        assert table[0].split() == ["NAME", "OWNER", "STATE", "EPOCH", "AGE"], table
        assert table[1].split()[:4] == ["pair", A, "Ready", "1"], table
        eventually(
            lambda: node_labels(rest, A).get("hacluster.dev/pair") == "pair" or {}["x"], what="label on a"
        )
        assert "hacluster.dev/pair" not in node_labels(rest, B)
        acquired = eventually(lambda: one_event(rest, "pair", "Acquired"), what="Acquired")
        assert acquired["message"] == "node-a took the resources, epoch 1"

        # node-a dies; node-b takes over: epoch 2, 512ms without an owner.
        agents.renewing[A] = False
        last = {"from": A, "to": B, "reason": "peer dead", "gapMs": 512, "time": now()}
        agents.set(
            B,
            holds="foreign",
            epoch=2,
            peer={"node": A, "state": "dead", "links": {"eth1": {"up": False}}},
            lastTransition=last,
        )
        assert agents.cas(B, bump=True) == 2
        failed = eventually(lambda: one_event(rest, "pair", "FailedOver"), what="FailedOver")
        assert failed["type"] == "Warning"
        assert (
            failed["message"]
            == "FailedOver from node-a to node-b: node-a silent for 512ms, epoch 2 (peer dead)"
        )
        eventually(ready_with(rest, "pair", B, 2, "Degraded"), what="Degraded on node-b")

        def node_a_down() -> dict[str, Any]:
            st = status(rest, "pair")
            assert condition(st, "Degraded")["reason"] == "NodeDown", st
            return st

        st = eventually(node_a_down, timeout=REPORT_SECONDS + 10, what="node-a down")
        assert st["lastTransition"]["gapMs"] == 512 and st["lastTransition"]["from"] == A
        eventually(
            lambda: node_labels(rest, B).get("hacluster.dev/pair") == "pair" or {}["x"], what="label on b"
        )
        assert "hacluster.dev/pair" not in node_labels(rest, A)

        # node-a is back: Ready again, on node-b (no autoFailback).
        agents.set(A, epoch=2)
        agents.renewing[A] = True
        agents.set(B, holds="foreign", epoch=2, lastTransition=last)
        eventually(ready_with(rest, "pair", B, 2), what="Ready on node-b")

        # Declared switchover back to node-a: handover-to, then the agents' handover, then done.
        rest.merge(hac_path("pair"), {"spec": {"failover": {"switchoverTo": A}}})
        eventually(lambda: annotations(agents)[HANDOVER_TO] == A or {}["x"], what="handover-to")
        requested = eventually(lambda: one_event(rest, "pair", "SwitchoverRequested"), what="requested")
        assert requested["message"] == "Switchover to node-a requested: asking node-b to hand over (epoch 2)"
        agents.set(B, holds="none", epoch=2)
        agents.cas(None, bump=False)  # node-b released
        assert annotations(agents)[HANDOVER_TO] == A  # kept while the Lease is free
        handover = {"from": B, "to": A, "reason": "handover", "gapMs": 80, "time": now()}
        agents.set(A, holds="local", epoch=3, lastTransition=handover)
        agents.set(B, epoch=3)
        assert agents.cas(A, bump=True) == 3
        eventually(lambda: HANDOVER_TO not in annotations(agents) or {}["x"], what="handover-to cleared")
        done = eventually(lambda: one_event(rest, "pair", "SwitchoverDone"), what="SwitchoverDone")
        assert done["message"] == "Switchover to node-a done: epoch 3, 80ms without an owner"
        eventually(ready_with(rest, "pair", A, 3), what="Ready on node-a again")
        assert not [e for e in events(rest, "pair", "FailedOver") if "epoch 3" in e["message"]]

        # Maintenance: the freeze annotation, and back.
        rest.merge(hac_path("pair"), {"spec": {"failover": {"maintenance": True}}})
        eventually(lambda: annotations(agents)[FREEZE] == "true" or {}["x"], what="freeze")
        rest.merge(hac_path("pair"), {"spec": {"failover": {"maintenance": False}}})
        eventually(lambda: FREEZE not in annotations(agents) or {}["x"], what="thaw")

        # Both agents up, but deaf to each other: HeartbeatLinkDown, and the Lease arbitrates.
        deaf = {"state": "dead", "links": {"eth1": {"up": False}}}
        agents.set(A, holds="local", epoch=3, peer={"node": B, **deaf})
        agents.set(B, epoch=3, peer={"node": A, **deaf})
        link = eventually(
            lambda: one_event(rest, "pair", "HeartbeatLinkDown", "cannot hear each other"),
            what="HeartbeatLinkDown",
        )
        assert link["type"] == "Warning"
        st = eventually(ready_with(rest, "pair", A, 3, "Arbitrating"), what="Arbitrating")
        assert condition(st, "HeartbeatLinkDown")["reason"] == "AllLinksDown"
        restored_before = len(events(rest, "pair", "HeartbeatLinkRestored"))
        agents.set(A, holds="local", epoch=3)
        agents.set(B, epoch=3)

        def restored() -> None:
            # at least one: the two agents' reports are two writes, and the operator may see the
            # first alone (one node hearing again: restored, then down on the other, then restored)
            assert len(events(rest, "pair", "HeartbeatLinkRestored")) >= restored_before + 1
            assert condition(status(rest, "pair"), "HeartbeatLinkDown")["status"] == "False"

        eventually(restored, what="restored")

        # node-b's agent stops reporting: its report goes stale, the pair is Degraded.
        agents.renewing[B] = False
        st = eventually(ready_with(rest, "pair", A, 3, "Degraded"), timeout=REPORT_SECONDS + 10, what="stale")
        c = condition(st, "Degraded")
        assert (c["reason"], c["status"]) == ("NodeDown", "True") and c["message"].startswith(
            "node-b: silent since"
        )
        assert next(n for n in st["nodes"] if n["name"] == B)["state"] == "active"  # node-a still hears it

        # ...and renews again, saying what it said before: no news in its report, yet Ready at
        # once (not at the operator's 30 s resync: a report that was silent is news when renewed).
        agents.renewing[B] = True
        agents.set(B, epoch=3)
        eventually(ready_with(rest, "pair", A, 3), timeout=5, what="Ready again after node-b's renewal")
    finally:
        agents.stop()


def test_killed_mid_switchover_the_operator_resumes_and_a_standby_takes_over(
    rest: Rest, operator: Operator, setup: Path, tmp_path: Path
) -> None:
    standby = Operator(setup, tmp_path / "standby.log", "op-b").start()
    make_cluster(rest, "resume", autoFailback=False)
    eventually(lambda: rest("GET", lease_path("resume")) or {}["x"], what="ownership Lease")
    agents = Agents(rest, "resume").start()
    try:
        agents.set(A, holds="local", epoch=1)
        agents.set(B, epoch=1)
        agents.cas(A, bump=True)
        eventually(ready_with(rest, "resume", A, 1), what="Ready")
        leader = rest("GET", lease_path("hacluster-operator", OPERATOR_NS))
        assert leader["spec"]["holderIdentity"] == "op-a"
        eventually(lambda: "standing by: 'op-a' leads" in standby.text() or {}["x"], what="standby")

        rest.merge(hac_path("resume"), {"spec": {"failover": {"switchoverTo": B}}})
        eventually(lambda: annotations(agents)[HANDOVER_TO] == B or {}["x"], what="handover-to")
        operator.kill()  # mid-switchover, no goodbye

        agents.set(A, epoch=1)
        agents.cas(None, bump=False)
        agents.set(
            B,
            holds="foreign",
            epoch=2,
            lastTransition={"from": A, "to": B, "reason": "handover", "gapMs": 95},
        )
        agents.cas(B, bump=True)
        operator.start()  # the same identity takes its leader Lease back at once
        eventually(lambda: HANDOVER_TO not in annotations(agents) or {}["x"], what="resumed and completed")
        done = eventually(lambda: one_event(rest, "resume", "SwitchoverDone"), what="SwitchoverDone")
        assert done["message"] == "Switchover to node-b done: epoch 2, 95ms without an owner"
        eventually(ready_with(rest, "resume", B, 2), what="Ready on node-b")
        assert not events(rest, "resume", "FailedOver")
        assert "took the leader Lease" not in standby.text()

        # The leader dies for good: the standby waits out the Lease, then acts.
        operator.kill()
        eventually(
            lambda: (
                rest("GET", lease_path("hacluster-operator", OPERATOR_NS))["spec"]["holderIdentity"] == "op-b"
                or {}["x"]
            ),
            timeout=15,
            what="standby leads",
        )
        rest.merge(hac_path("resume"), {"spec": {"failover": {"maintenance": True}}})
        eventually(lambda: annotations(agents)[FREEZE] == "true" or {}["x"], what="the new leader acts")
        assert standby.stop() == 0  # SIGTERM: a clean exit that releases the leader Lease
        assert KEY not in standby.text() and "Traceback" not in standby.text()
        assert not rest("GET", lease_path("hacluster-operator", OPERATOR_NS))["spec"].get("holderIdentity")
    finally:
        agents.stop()
        standby.stop()
        if operator.proc is None or operator.proc.poll() is not None:
            operator.start()
        print("---- standby log (tail) ----\n" + "\n".join(standby.text().splitlines()[-40:]))


def test_delete_asks_for_a_release_then_lets_the_hacluster_go(rest: Rest, operator: Operator) -> None:
    make_cluster(rest, "gone")
    eventually(lambda: rest("GET", lease_path("gone")) or {}["x"], what="ownership Lease")
    agents = Agents(rest, "gone").start()
    try:
        agents.set(A, holds="local", epoch=1)
        agents.set(B, epoch=1)
        agents.cas(A, bump=True)
        eventually(ready_with(rest, "gone", A, 1), timeout=25, what="Ready")
        eventually(lambda: node_labels(rest, A).get("hacluster.dev/gone") == "gone" or {}["x"], what="label")

        rest("DELETE", hac_path("gone"))
        eventually(lambda: annotations(agents)[RELEASE] == "true" or {}["x"], what="release annotation")
        releasing = eventually(lambda: one_event(rest, "gone", "Releasing"), what="Releasing")
        assert releasing["message"] == "HACluster deleted: asking node-a to release everything"
        hac = rest("GET", hac_path("gone"))
        assert (
            hac is not None
            and hac["metadata"].get("deletionTimestamp")
            and FINALIZER in hac["metadata"]["finalizers"]
        )
        assert rest("GET", f"/apis/apps/v1/namespaces/{NS}/daemonsets/gone-agent") is not None

        agents.set(A, holds="none", epoch=1)
        agents.cas(None, bump=False)  # node-a released everything
        eventually(lambda: rest("GET", hac_path("gone")) is None or {}["x"], what="finalizer removed")
        assert rest("GET", f"/apis/apps/v1/namespaces/{NS}/daemonsets/gone-agent") is None
        assert rest("GET", f"/api/v1/namespaces/{NS}/secrets/gone-config") is None
        assert "hacluster.dev/gone" not in node_labels(rest, A)
        # No garbage collector runs here; in a cluster the ownerReference deletes the Lease too.
        assert rest("GET", lease_path("gone"))["metadata"]["ownerReferences"][0]["name"] == "gone"
    finally:
        agents.stop()


@pytest.mark.parametrize(
    "verb, resource, allowed",
    [
        ("get", "secrets", True),
        ("list", "secrets", True),  # the watch cache (resourceVersions; fetched by name when read)
        ("watch", "secrets", True),
        ("create", "secrets", True),
        ("get", "configmaps", True),
        ("list", "configmaps", True),
        ("patch", "leases.coordination.k8s.io", True),
        ("update", "leases.coordination.k8s.io", True),  # only to grant it to the agents
        ("delete", "leases.coordination.k8s.io", False),
        ("watch", "leases.coordination.k8s.io", True),  # the watch cache
        ("patch", "haclusters.hacluster.dev", True),
        ("create", "haclusters.hacluster.dev", False),
        ("delete", "haclusters.hacluster.dev", False),
        ("list", "customresourcedefinitions.apiextensions.k8s.io", False),
        ("list", "namespaces", False),
        ("delete", "nodes", False),
        ("patch", "nodes", True),
        ("create", "pods", False),
        ("create", "serviceaccounts", True),
        ("update", "serviceaccounts", True),
        ("delete", "serviceaccounts", False),
        ("watch", "serviceaccounts", True),
        ("list", "pods", False),
        ("watch", "nodes", False),
        ("create", "roles.rbac.authorization.k8s.io", True),
        ("update", "rolebindings.rbac.authorization.k8s.io", True),
        ("delete", "roles.rbac.authorization.k8s.io", False),
        ("escalate", "roles.rbac.authorization.k8s.io", False),
        ("bind", "roles.rbac.authorization.k8s.io", False),
        ("create", "clusterroles.rbac.authorization.k8s.io", False),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io", False),
    ],
)
def test_the_operator_account_has_only_what_it_needs(
    controlplane: ControlPlaneFixture, setup: Path, verb: str, resource: str, allowed: bool
) -> None:
    assert_can_i(controlplane, setup, verb, resource, allowed)


def assert_can_i(
    controlplane: ControlPlaneFixture, kubeconfig: Path, verb: str, resource: str, allowed: bool
) -> None:
    """`kubectl auth can-i` in NS as `kubeconfig`'s account answers yes exactly when `allowed`."""
    out = controlplane.run_kubectl(
        "auth", "can-i", verb, resource, "-n", NS, kubeconfig=kubeconfig, check=False
    )
    assert out.stdout.strip() == ("yes" if allowed else "no"), out.stdout + out.stderr


# --------------------------------------------------------------------------------------------
# the agents' RBAC: one account per HACluster, its own Leases only


@pytest.fixture(scope="module")
def agent_a(controlplane: ControlPlaneFixture, rest: Rest, operator: Operator) -> Path:
    """Two HAClusters `a` and `b` in one namespace; a token of the operator-made `a-agent`."""
    for name in ("a", "b"):
        make_cluster(rest, name)
    rbac = "/apis/rbac.authorization.k8s.io/v1"

    def made(name: str) -> None:
        uid = rest("GET", hac_path(name))["metadata"]["uid"]
        sa = rest("GET", f"/api/v1/namespaces/{NS}/serviceaccounts/{name}-agent")
        role = rest("GET", f"{rbac}/namespaces/{NS}/roles/{name}-agent")
        rb = rest("GET", f"{rbac}/namespaces/{NS}/rolebindings/{name}-agent")
        assert sa and role and rb, (sa, role, rb)
        for obj in (sa, role, rb):
            assert obj["metadata"]["ownerReferences"][0]["uid"] == uid
        assert role["rules"] == [
            {
                "apiGroups": ["coordination.k8s.io"],
                "resources": ["leases"],
                "resourceNames": [name, f"{name}-{A}", f"{name}-{B}"],
                "verbs": ["get", "update", "patch"],
            }
        ]
        assert rb["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": f"{name}-agent",
        }
        assert rb["subjects"] == [{"kind": "ServiceAccount", "name": f"{name}-agent", "namespace": NS}]
        ds = rest("GET", f"/apis/apps/v1/namespaces/{NS}/daemonsets/{name}-agent")
        assert ds["spec"]["template"]["spec"]["serviceAccountName"] == f"{name}-agent"
        for lease in (name, f"{name}-{A}", f"{name}-{B}"):
            assert rest("GET", lease_path(lease)) is not None, lease

    for name in ("a", "b"):
        eventually(lambda name=name: made(name), what=f"the agents' RBAC of {name}")
    kubeconfig = controlplane.plane.service_account_kubeconfig(NS, "a-agent", create=False)

    eventually(  # the authorizer learns of new bindings through its informers
        lambda: assert_can_i(controlplane, kubeconfig, "get", "leases.coordination.k8s.io/a", True),
        what="a-agent's RoleBinding in effect",
    )
    return kubeconfig


@pytest.mark.parametrize(
    "verb, resource, allowed",
    [
        ("get", "leases.coordination.k8s.io/a", True),
        ("update", "leases.coordination.k8s.io/a", True),
        ("get", f"leases.coordination.k8s.io/a-{A}", True),
        ("patch", f"leases.coordination.k8s.io/a-{A}", True),
        ("update", f"leases.coordination.k8s.io/a-{B}", True),
        ("get", "leases.coordination.k8s.io/b", False),
        ("update", "leases.coordination.k8s.io/b", False),
        ("patch", f"leases.coordination.k8s.io/b-{A}", False),
        ("get", f"leases.coordination.k8s.io/b-{B}", False),
        ("get", "leases.coordination.k8s.io/hacluster-operator", False),
        ("create", "leases.coordination.k8s.io", False),
        ("delete", "leases.coordination.k8s.io/a", False),
        ("list", "leases.coordination.k8s.io", False),
        ("watch", "leases.coordination.k8s.io", False),
        ("get", "secrets", False),
        ("get", "secrets/a-config", False),
        ("get", "configmaps", False),
        ("get", "haclusters.hacluster.dev/a", False),
        ("patch", "haclusters.hacluster.dev/a", False),
        ("get", "haclusters.hacluster.dev/b", False),
        ("create", "events", False),
        ("list", "pods", False),
    ],
)
def test_an_agent_account_may_touch_only_its_own_clusters_leases(
    controlplane: ControlPlaneFixture, agent_a: Path, verb: str, resource: str, allowed: bool
) -> None:
    assert_can_i(controlplane, agent_a, verb, resource, allowed)


def test_an_agent_token_updates_its_leases_and_is_refused_the_others(agent_a: Path) -> None:
    """The real calls an agent makes, with a token of `a-agent`: what can-i says, the server does."""
    from kubernetes import config as k8s_config
    from kubernetes.client.exceptions import ApiException

    with k8s_config.new_client_from_config(config_file=str(agent_a)) as api:  # type: ignore[no-untyped-call]
        leases = k8s.CoordinationV1Api(api)

        def refused(call: Callable[[], Any]) -> None:
            try:
                call()
            except ApiException as e:
                assert e.status == 403, e
            else:
                raise AssertionError("allowed")

        # The ownership Lease: read, then a compare-and-swap replace (what arbiter/kube.py does).
        def swap() -> None:
            lease = leases.read_namespaced_lease("a", NS)
            leases.replace_namespaced_lease("a", NS, lease)

        eventually(swap, what="a replace of Lease a")  # may lose to the operator's annotations once
        # Its report Lease: a merge-patch (what kube/reporter.py does), no create needed.
        patch = {"metadata": {"labels": {"test": "agent-a"}}}
        leases.patch_namespaced_lease(f"a-{A}", NS, patch)
        assert leases.read_namespaced_lease(f"a-{A}", NS).metadata.labels["test"] == "agent-a"

        refused(lambda: leases.read_namespaced_lease("b", NS))
        refused(lambda: leases.patch_namespaced_lease(f"b-{A}", NS, patch))
        refused(lambda: leases.patch_namespaced_lease("b", NS, patch))
        body = k8s.V1Lease(metadata=k8s.V1ObjectMeta(name="a-extra"), spec=k8s.V1LeaseSpec())
        refused(lambda: leases.create_namespaced_lease(NS, body))
        refused(lambda: k8s.CoreV1Api(api).read_namespaced_secret("a-auth", NS))
        refused(
            lambda: k8s.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "a")
        )


def test_the_agents_role_follows_the_nodes(rest: Rest, agent_a: Path) -> None:
    """A node renamed in the spec: the operator rewrites the Role (an update the API server checks
    against the operator's own permissions) and creates the new node's report Lease."""
    rest.merge(hac_path("b"), {"spec": {"nodes": [A, "node-c"]}})
    path = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/roles/b-agent"

    def moved() -> None:
        (rule,) = rest("GET", path)["rules"]
        assert rule["resourceNames"] == ["b", f"b-{A}", "b-node-c"], rule
        assert rest("GET", lease_path("b-node-c")) is not None

    eventually(moved, what="the Role of b follows its nodes")


def test_the_rbac_file_parses_and_names_its_subjects() -> None:
    docs = [d for d in yaml.safe_load_all(RBAC_FILE.read_text()) if d]
    kinds = [d["kind"] for d in docs]
    assert kinds.count("ServiceAccount") == 1 and "ClusterRole" in kinds
    for d in docs:
        for s in d.get("subjects", []):
            assert (s["name"], s["namespace"]) == (OPERATOR_SA, OPERATOR_NS)


def test_operator_metrics_show_leadership_epochs_and_events(rest: Rest, operator: Operator) -> None:
    """Scraped over HTTP from the running operator: it leads, and each HACluster's epoch, state
    and posted Events are there."""
    import urllib.request

    make_cluster(rest, "metrics-demo")

    def scraped() -> str:
        text = (
            urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=5)
            .read()
            .decode()
        )
        assert "hacluster_operator_leader 1.0" in text
        assert 'hacluster_cluster_epoch{hacluster="metrics-demo",namespace="' in text
        assert 'hacluster_cluster_state{hacluster="metrics-demo"' in text
        return text

    eventually(scraped, timeout=20, what="operator metrics")


def operator_requests(operator: Operator) -> dict[str, float]:
    """The operator's own count of the requests its handlers sent (not its leader election), by
    verb and resource."""
    import re
    import urllib.request

    text = (
        urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=5).read().decode()
    )
    out: dict[str, float] = {}
    for labels, value in re.findall(r"^hacluster_operator_api_requests_total\{([^}]*)\} (\S+)$", text, re.M):
        fields = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if fields["client"] != "handlers":
            continue
        key = f"{fields['verb']} {fields['resource']}"
        out[key] = out.get(key, 0.0) + float(value)
    return out


def test_renewals_cost_the_operator_nothing_a_report_change_wakes_it(rest: Rest, operator: Operator) -> None:
    """Thousands of agents renew their report Leases several times a second: the operator sees
    them on its watch and sends nothing for them, while a change in what it decides on (a node's
    link going down) reaches the status at once, not at the next resync (30 s)."""
    import time

    agents = serving_on_a(rest, "quiet")
    try:
        eventually(lambda: one_event(rest, "quiet", "Acquired"), what="Acquired")
        time.sleep(2.0)  # the writes that follow becoming Ready (labels, Events) are done
        before = operator_requests(operator)
        time.sleep(6.0)  # 20 renewals of each report Lease
        after = operator_requests(operator)
        sent = {k: after[k] - before.get(k, 0.0) for k in after if after[k] != before.get(k, 0.0)}
        assert sent == {}, f"the operator sent requests while the agents only renewed: {sent}"

        agents.set(B, epoch=1, peer={"node": A, "state": "active", "links": {"eth1": {"up": False}}})
        t0 = time.monotonic()

        def link_down_shown() -> None:
            nodes = {n["name"]: n for n in status(rest, "quiet").get("nodes", [])}
            assert nodes[B]["media"] == {"eth1": "down"}, nodes

        eventually(link_down_shown, timeout=5.0, what="node-b's link down in the status")
        assert time.monotonic() - t0 < 3.0  # a wake, not the 30 s resync
    finally:
        agents.stop()
