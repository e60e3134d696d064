"""The Helm chart (charts/hacluster) and the examples against helm 4 and a real kube-apiserver.

- `helm lint --strict`, with the default values and with every optional value switched on;
- `helm template` renders what the values say (operator Deployment, RBAC, PodMonitor, alerts);
- values.schema.json (and the chart's own checks) reject bad values with a readable message;
- every rendered object, the chart's CRD included, passes `kubectl apply --dry-run=server`
  (the monitoring.coreos.com kinds against minimal stub CRDs installed here);
- the operator's rendered ClusterRoles/Role grant exactly operator/hacluster_operator/rbac.yaml's
  rules, and the chart grants the agents nothing (the operator makes their RBAC per HACluster);
- every example HACluster is accepted by the server with the CRD installed (server-side dry run),
  and the server's defaults are the models' defaults.

The module leaves the shared API server as it found it: it deletes the CRDs it created (the
namespaces stay; without a namespace controller they could not be deleted).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hacluster_api.models import CRD_NAME, HACluster
from tests.apiserver.conftest import ControlPlaneFixture

pytestmark = pytest.mark.apiserver

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "hacluster"
RBAC_FILE = REPO / "operator" / "hacluster_operator" / "rbac.yaml"
EXAMPLES = REPO / "examples"
RELEASE, RELEASE_NS = "hacluster", "hacluster-chart"
AGENT_NS = ("hacluster-chart-a", "hacluster-chart-b")
EXAMPLES_NS, GITOPS_NS = "hacluster-examples", "web"
MONITORING_CRDS = (("PodMonitor", "podmonitors"), ("PrometheusRule", "prometheusrules"))

Doc = dict[str, Any]

# Every optional value switched on.
ALL_ON: Doc = {
    "fullnameOverride": "hac",
    "commonLabels": {"team": "platform"},
    "imagePullSecrets": ["registry-creds"],
    "operator": {
        "watchNamespaces": list(AGENT_NS),
        "image": {"digest": "sha256:" + "a" * 64},
        "serviceAccount": {"name": "hac-operator-sa"},
        "livenessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 30},
        "readinessProbe": {"exec": {"command": ["true"]}},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "infra", "effect": "NoSchedule"}],
        "podAnnotations": {"example.com/scrape": "false"},
        "logLevel": "DEBUG",
    },
    "rbac": {"workloadNodeLabels": True},
    "agents": {"namespaces": list(AGENT_NS), "image": {"digest": "sha256:" + "b" * 64}},
    "metrics": {
        "podMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}},
    },
}


def stub_crd(kind: str, plural: str) -> Doc:
    """A minimal monitoring.coreos.com/v1 CRD: enough for the server to accept the kind."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                            },
                        }
                    },
                }
            ],
        },
    }


def crd_names(cp: ControlPlaneFixture) -> set[str]:
    out = cp.run_kubectl("get", "customresourcedefinitions", "-o", "name").stdout.split()
    return {n.split("/", 1)[1] for n in out}


def wait_for(cp: ControlPlaneFixture, present: set[str], absent: set[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        names = crd_names(cp)
        if present <= names and not (absent & names):
            if not present:
                return
            out = cp.run_kubectl(
                "wait",
                "--for=condition=Established",
                "--timeout=20s",
                *(f"crd/{n}" for n in present),
                check=False,
            )
            if out.returncode == 0:
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"CRDs not settled: want {present}, not {absent}, have {names}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def cluster(
    controlplane: ControlPlaneFixture, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlaneFixture]:
    """The HACluster CRD (from the chart), stub monitoring CRDs and the namespaces."""
    cp = controlplane
    before = crd_names(cp)
    stubs = tmp_path_factory.mktemp("chart") / "stubs.yaml"
    stubs.write_text(yaml.safe_dump_all([stub_crd(k, p) for k, p in MONITORING_CRDS]))
    cp.run_kubectl("apply", "-f", str(CHART / "crds"))
    cp.run_kubectl("apply", "-f", str(stubs))
    ours = {CRD_NAME, *(f"{p}.monitoring.coreos.com" for _, p in MONITORING_CRDS)}
    wait_for(cp, ours, set())
    existing = set(cp.run_kubectl("get", "namespaces", "-o", "name").stdout.split())
    for ns in (RELEASE_NS, *AGENT_NS, EXAMPLES_NS, GITOPS_NS):
        if f"namespace/{ns}" not in existing:
            cp.run_kubectl("create", "namespace", ns)
    yield cp
    created = ours - before
    for name in sorted(created):
        cp.run_kubectl("delete", "crd", name, "--wait=false")
    wait_for(cp, set(), created)


def helm(cp: ControlPlaneFixture, *args: str, values: Doc | None = None, check: bool = True) -> Any:
    extra: list[str] = []
    if values is not None:
        path = cp.home / f"values-{abs(hash(json.dumps(values, sort_keys=True)))}.yaml"
        path.write_text(yaml.safe_dump(values))
        extra = ["-f", str(path)]
    return cp.run_helm(*args, *extra, check=check)


def template(cp: ControlPlaneFixture, values: Doc | None = None, *extra: str) -> list[Doc]:
    out = helm(cp, "template", RELEASE, str(CHART), "-n", RELEASE_NS, *extra, values=values).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def find(docs: list[Doc], kind: str, name: str | None = None) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = find(docs, kind, name)
    assert len(found) == 1, f"{kind} {name}: {[d['metadata']['name'] for d in find(docs, kind)]}"
    return found[0]


def rules(role: Doc) -> list[Doc]:
    """Rules in a canonical form (sorted lists, no empty fields)."""
    out = []
    for r in role["rules"]:
        out.append({k: sorted(v) for k, v in r.items() if v})
    return out


# --------------------------------------------------------------------------------------------
# lint and template


@pytest.mark.parametrize("values", [None, ALL_ON], ids=["defaults", "all-on"])
def test_helm_lint_strict(controlplane: ControlPlaneFixture, values: Doc | None) -> None:
    out = helm(controlplane, "lint", "--strict", str(CHART), values=values)
    assert "0 chart(s) failed" in out.stdout, out.stdout


def test_default_values_render_the_operator(controlplane: ControlPlaneFixture) -> None:
    docs = template(controlplane)
    kinds = sorted(d["kind"] for d in docs)
    assert "PodMonitor" not in kinds and "PrometheusRule" not in kinds
    dep = one(docs, "Deployment", "hacluster-operator")
    spec = dep["spec"]["template"]["spec"]
    assert dep["spec"]["replicas"] == 2
    (c,) = spec["containers"]
    assert c["image"] == "ghcr.io/hacluster/hacluster-operator:0.1.0"
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["HACLUSTER_AGENT_IMAGE"] == "ghcr.io/hacluster/hacluster-agent:0.1.0"
    assert "HACLUSTER_AGENT_SERVICE_ACCOUNT" not in env  # the operator names it per HACluster
    assert env["HACLUSTER_AGENT_IMAGE_PULL_POLICY"] == "IfNotPresent"
    assert spec["securityContext"]["runAsNonRoot"] is True
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["allowPrivilegeEscalation"] is False
    assert c["resources"]["requests"] and c["resources"]["limits"]
    (term,) = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    # No health endpoint in the operator: no probe that would lie, unless the user gives one.
    assert "livenessProbe" not in c and "readinessProbe" not in c
    assert not any(a.startswith("--namespace") for a in c["args"])  # every namespace
    assert one(docs, "ClusterRoleBinding", "hacluster-operator")["subjects"] == [
        {"kind": "ServiceAccount", "name": "hacluster-operator", "namespace": RELEASE_NS}
    ]
    assert_no_agent_rbac(docs)


def test_every_optional_value_renders(controlplane: ControlPlaneFixture) -> None:
    docs = template(controlplane, ALL_ON)
    dep = one(docs, "Deployment", "hac-operator")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["image"] == "ghcr.io/hacluster/hacluster-operator@sha256:" + "a" * 64
    assert [a for a in c["args"] if a.startswith("--namespace")] == [f"--namespace={n}" for n in AGENT_NS]
    assert c["livenessProbe"]["periodSeconds"] == 30 and c["readinessProbe"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["HACLUSTER_AGENT_IMAGE"] == "ghcr.io/hacluster/hacluster-agent@sha256:" + "b" * 64
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "hac-operator-sa"
    assert all(d["metadata"]["labels"]["team"] == "platform" for d in docs)
    # Namespaced mode: RoleBindings in the served namespaces, no ClusterRoleBinding of the main role.
    assert not find(docs, "ClusterRoleBinding", "hac-operator")
    assert {d["metadata"]["namespace"] for d in find(docs, "RoleBinding", "hac-operator")} == set(AGENT_NS)
    assert_no_agent_rbac(docs)
    pm = one(docs, "PodMonitor")
    assert pm["metadata"]["labels"]["release"] == "prometheus"
    assert pm["spec"]["namespaceSelector"] == {"matchNames": list(AGENT_NS)}
    (ep,) = pm["spec"]["podMetricsEndpoints"]
    # each HACluster's agents declare their own port (spec.agentMetricsPort) as `metrics`
    assert ep["port"] == "metrics" and not [r for r in ep["relabelings"] if r["targetLabel"] == "__address__"]
    rule = one(docs, "PrometheusRule")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(alerts) == {
        "HAClusterSplitBrainRisk",
        "HAClusterHeartbeatLinkDown",
        "HAClusterFailover",
        "HAClusterSelfFenced",
        "HAClusterAgentDown",
    }
    assert alerts["HAClusterSplitBrainRisk"]["expr"] == "sum by (namespace, hacluster) (hacluster_holds) > 1"
    assert "hacluster_failovers_total" in alerts["HAClusterFailover"]["expr"]
    assert "hacluster_self_fencings_total" in alerts["HAClusterSelfFenced"]["expr"]
    assert alerts["HAClusterAgentDown"]["expr"] == f'up{{job="{RELEASE_NS}/hac-agents"}} == 0'
    assert "{{ $labels.hacluster }}" in alerts["HAClusterSplitBrainRisk"]["annotations"]["summary"]


def test_the_chart_pins_its_app_version(controlplane: ControlPlaneFixture) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["appVersion"] == "0.1.0"
    assert values["operator"]["image"]["tag"] == values["agents"]["image"]["tag"] == chart["appVersion"]


# --------------------------------------------------------------------------------------------
# bad values


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "operator.replicas=two"], "at '/operator/replicas': got string, want integer"),
        (["--set", "operator.replicas=0"], "at '/operator/replicas': minimum: got 0, want 1"),
        (["--set", "operator.image.tag="], "at '/operator/image/tag': minLength: got 0, want 1"),
        (["--set", "agents.image.tag="], "at '/agents/image/tag': minLength: got 0, want 1"),
        (["--set", "replicas=2"], "additional properties 'replicas' not allowed"),
        (["--set", "operator.logLevel=LOUD"], "at '/operator/logLevel'"),
        (["--set", "metrics.agentPort=9700"], "additional properties 'agentPort' not allowed"),
        (["--set", "agents.namespaces={Bad_NS}"], "at '/agents/namespaces/0'"),
        (["--set", "operator.image.pullPolicy=Sometimes"], "at '/operator/image/pullPolicy'"),
        (
            ["--set", "operator.leaderElection.renewDeadline=20"],
            "operator.leaderElection: renewDeadline must be less than leaseDuration",
        ),
    ],
    ids=lambda v: v[1] if isinstance(v, list) else None,
)
def test_bad_values_are_rejected_with_a_readable_message(
    controlplane: ControlPlaneFixture, args: list[str], message: str
) -> None:
    out = controlplane.run_helm("template", RELEASE, str(CHART), *args, check=False)
    assert out.returncode != 0
    assert message in out.stderr, out.stderr


# --------------------------------------------------------------------------------------------
# the real API server


def dry_run(cp: ControlPlaneFixture, manifests: str, *extra: str) -> list[Doc]:
    out = cp.run_kubectl("apply", "--dry-run=server", "-o", "json", "-f", "-", *extra, input=manifests)
    got = json.loads(out.stdout)
    return list(got["items"]) if got.get("kind") == "List" else [got]


@pytest.mark.parametrize("values", [None, ALL_ON], ids=["defaults", "all-on"])
def test_rendered_manifests_pass_a_server_side_dry_run(
    cluster: ControlPlaneFixture, values: Doc | None
) -> None:
    rendered = helm(
        cluster, "template", RELEASE, str(CHART), "-n", RELEASE_NS, "--include-crds", values=values
    ).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    accepted = dry_run(cluster, rendered)
    assert sorted((d["kind"], d["metadata"]["name"]) for d in accepted) == sorted(
        (d["kind"], d["metadata"]["name"]) for d in docs
    )
    assert ("CustomResourceDefinition", CRD_NAME) in {(d["kind"], d["metadata"]["name"]) for d in accepted}
    if values is ALL_ON:
        assert {"PodMonitor", "PrometheusRule"} <= {d["kind"] for d in accepted}


def test_the_operator_roles_are_exactly_rbac_yaml(controlplane: ControlPlaneFixture) -> None:
    shipped = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(RBAC_FILE.read_text()) if d}
    docs = template(controlplane, {"fullnameOverride": "hacluster"})
    pairs = [
        (("ClusterRole", "hacluster-operator"), ("ClusterRole", "hacluster-operator")),
        (("ClusterRole", "hacluster-operator-nodes"), ("ClusterRole", "hacluster-operator-nodes")),
        (("Role", "hacluster-operator-leader"), ("Role", "hacluster-operator-leader")),
    ]
    for (kind, name), key in pairs:
        assert rules(one(docs, kind, name)) == rules(shipped[key]), f"{kind} {name} differs from rbac.yaml"
    # Every Role/ClusterRole the chart renders is one of these.
    roles = {(d["kind"], d["metadata"]["name"]) for d in docs if d["kind"] in ("Role", "ClusterRole")}
    assert roles == {k for k, _ in pairs}
    # Turning workload labels off removes the nodes grant and nothing else.
    off = template(controlplane, {"fullnameOverride": "hacluster", "rbac": {"workloadNodeLabels": False}})
    assert not find(off, "ClusterRole", "hacluster-operator-nodes")
    assert not find(off, "ClusterRoleBinding", "hacluster-operator-nodes")


def assert_no_agent_rbac(docs: list[Doc]) -> None:
    """The agents' ServiceAccount, Role and RoleBinding are the operator's, one set per HACluster
    (resources.py): the chart renders no agent account and grants agents nothing."""
    rbac_kinds = ("ServiceAccount", "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")
    agents = [
        d
        for d in docs
        if d["kind"] in rbac_kinds and d["metadata"]["labels"].get("app.kubernetes.io/component") == "agent"
    ]
    assert not agents, agents
    subjects = [s for d in docs for s in d.get("subjects") or []]
    assert subjects and all("operator" in s["name"] for s in subjects), subjects


def test_the_chart_grants_the_agents_nothing(controlplane: ControlPlaneFixture) -> None:
    for values in (None, ALL_ON, {"agents": {"namespaces": list(AGENT_NS)}}):
        assert_no_agent_rbac(template(controlplane, values))
    # The agents' shared ServiceAccount is gone: a value naming it fails, and says which.
    old = {"agents": {"serviceAccount": {"name": "hacluster-agent"}}}
    out = helm(controlplane, "template", RELEASE, str(CHART), values=old, check=False)
    assert out.returncode != 0 and "additional properties 'serviceAccount' not allowed" in out.stderr


# --------------------------------------------------------------------------------------------
# the examples


def example_dirs() -> list[Path]:
    return sorted(p for p in EXAMPLES.iterdir() if p.is_dir() and p.name != "gitops")


@pytest.mark.parametrize("directory", example_dirs(), ids=lambda p: p.name)
def test_examples_are_accepted_by_the_server(cluster: ControlPlaneFixture, directory: Path) -> None:
    files = sorted(directory.glob("*.yaml"))
    text = "\n---\n".join(f.read_text() for f in files)
    accepted = dry_run(cluster, text, "-n", EXAMPLES_NS)
    hacs = [d for d in accepted if d["kind"] == "HACluster"]
    assert hacs, f"no HACluster in {directory}"
    sent = {d["metadata"]["name"]: d for d in yaml.safe_load_all(text) if d and d["kind"] == "HACluster"}
    for got in hacs:
        # The server's defaults are the models' defaults.
        expected = HACluster.model_validate(sent[got["metadata"]["name"]]).to_k8s()["spec"]
        assert got["spec"] == expected


def test_the_gitops_overlay_is_accepted_by_the_server(cluster: ControlPlaneFixture) -> None:
    built = cluster.run_kubectl("kustomize", str(EXAMPLES / "gitops" / "overlays" / "production")).stdout
    (hac,) = dry_run(cluster, built)
    assert hac["metadata"]["namespace"] == GITOPS_NS
    assert hac["spec"]["failover"]["switchoverTo"] in hac["spec"]["nodes"]
    assert hac["spec"] == HACluster.model_validate(yaml.safe_load(built)).to_k8s()["spec"]
