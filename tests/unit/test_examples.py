"""examples/: every HACluster validates against the operator's models and renders into configs the
agent accepts; the article's pair keeps the article's settings; the GitOps overlay switches over in
one line. Also: the chart's copy of the CRD is the generated one (so they cannot drift).

The same examples go through a real API server in tests/apiserver/test_chart.py."""

from __future__ import annotations

import copy
from ipaddress import ip_interface, ip_network
from pathlib import Path
from typing import Any

import pytest
import yaml

from hacluster_api.heartbeat.authkeys import parse_authkeys
from hacluster_api.models import HACluster
from hacluster_api.render import render_all, script_sources
from hacluster_operator.resources import config_data

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
GITOPS = EXAMPLES / "gitops"
OVERLAY = GITOPS / "overlays" / "production"
CRD_FILE = REPO / "crds" / "hacluster.dev_haclusters.yaml"
CHART_CRD_FILE = REPO / "charts" / "hacluster" / "crds" / "hacluster.dev_haclusters.yaml"
ARTICLE_DATA = REPO / "tests" / "data" / "article"

Doc = dict[str, Any]
DOC_RANGES = (ip_network("192.0.2.0/24"), ip_network("198.51.100.0/24"), ip_network("203.0.113.0/24"))
IPV6_DOC = ip_network("2001:db8::/32")


def docs_in(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def example_files() -> list[Path]:
    """Every manifest file of the examples; kustomize's own files and the overlay's partial patch
    are not objects on their own."""
    return sorted(
        p for p in EXAMPLES.rglob("*.yaml") if p.name != "kustomization.yaml" and OVERLAY not in p.parents
    )


def haclusters() -> list[tuple[Path, Doc]]:
    return [(p, d) for p in example_files() for d in docs_in(p) if d.get("kind") == "HACluster"]


def deep_merge(base: Doc, patch: Doc) -> Doc:
    """A JSON merge patch (RFC 7386): what kustomize does with a patch of a custom resource."""
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def overlay_hacluster(patch_text: str | None = None) -> Doc:
    (base,) = docs_in(GITOPS / "base" / "hacluster.yaml")
    patch = yaml.safe_load(
        patch_text if patch_text is not None else (OVERLAY / "switchover.yaml").read_text()
    )
    return deep_merge(base, patch)


def vips(doc: Doc) -> list[str]:
    return [r["ip"]["address"] for r in doc["spec"].get("resources", []) if "ip" in r]


def sibling_objects(path: Path, kind: str) -> dict[str, Doc]:
    """Objects of `kind` in the example's directory, by name."""
    return {
        d["metadata"]["name"]: d
        for p in path.parent.glob("*.yaml")
        for d in docs_in(p)
        if d.get("kind") == kind
    }


# --------------------------------------------------------------------------------------------


def test_the_chart_crd_is_the_generated_crd() -> None:
    assert CHART_CRD_FILE.read_bytes() == CRD_FILE.read_bytes(), (
        "charts/hacluster/crds/ is stale: cp crds/hacluster.dev_haclusters.yaml charts/hacluster/crds/"
    )


def test_there_are_the_five_examples() -> None:
    names = {d["metadata"]["name"] for _, d in haclusters()}
    assert {"article", "db", "v6", "web", "aa"} <= names


@pytest.mark.parametrize(
    "path, doc", haclusters(), ids=[str(p.relative_to(EXAMPLES)) for p, _ in haclusters()]
)
def test_every_example_validates_and_renders(path: Path, doc: Doc) -> None:
    hac = HACluster.model_validate(doc)
    assert "namespace" not in doc["metadata"], "examples are applied with -n (or kustomize's namespace)"
    spec = hac.spec
    # The Secret and ConfigMaps it names, when the example ships them, have the keys it uses.
    secrets = sibling_objects(path, "Secret")
    key = "example-key-0123456789abcdef"
    if spec.auth.secret_ref.name in secrets:
        key = secrets[spec.auth.secret_ref.name]["stringData"][spec.auth.secret_ref.key]
    bodies: dict[str, str] = {}
    config_maps = sibling_objects(path, "ConfigMap")
    for script, ref in script_sources(spec).items():
        assert ref.name in config_maps, f"{path.name}: ConfigMap {ref.name} is not in the example"
        assert ref.key is not None
        body = config_maps[ref.name]["data"][ref.key]
        assert body.startswith("#!/bin/sh\n") and all(a in body for a in ("start)", "stop)", "status)"))
        bodies[script] = body
    configs = render_all(spec, key, bodies)  # through the agent's own parsers
    assert set(configs) == set(spec.nodes)
    assert config_data(spec, key, bodies)  # the operator's Secret keys are valid
    # Documentation addresses only.
    for vip in vips(doc):
        net = ip_interface(vip).ip
        assert any(net in r for r in (*DOC_RANGES, IPV6_DOC)), vip


def test_the_article_example_keeps_the_articles_settings() -> None:
    (doc,) = docs_in(EXAMPLES / "article" / "hacluster.yaml")
    spec = HACluster.model_validate(doc).spec
    hacf = (ARTICLE_DATA / "ha.cf").read_text()
    assert spec.nodes == ["servidor1", "servidor2"] and "node servidor1" in hacf
    groups = [ln for ln in (ARTICLE_DATA / "haresources").read_text().splitlines() if ln and ln[0] != "#"]
    home = groups[0].split()[0]
    assert spec.home == home == "servidor2"
    assert (spec.heartbeat.keepalive_ms, spec.heartbeat.deadtime_ms) == (2000, 20_000)
    assert [(m.mode, m.interface) for m in spec.heartbeat.media.udp] == [("broadcast", "eth1")]
    assert [(s.device, s.baud) for s in spec.heartbeat.media.serial] == [("/dev/ttyS0", 19200)]
    assert spec.failover.auto_failback is False  # nice_failback on
    keys, _ = parse_authkeys((ARTICLE_DATA / "authkeys").read_text())
    assert keys is not None and spec.auth.method == keys.signing_key.method == "sha1"
    assert [r.script.name for r in spec.resources if r.script] == ["httpd", "smb"]
    (vip,) = vips(doc)
    assert ip_interface(vip).ip in ip_network("192.0.2.0/24")
    assert spec.resources[0].ip is not None  # the VIP first, as in haresources


def test_the_ipv6_example_has_an_ipv6_vip() -> None:
    (doc,) = docs_in(EXAMPLES / "ipv6" / "hacluster.yaml")
    HACluster.model_validate(doc)
    (vip,) = vips(doc)
    assert ip_interface(vip).ip in IPV6_DOC


def test_the_serial_udp_example_has_both_media() -> None:
    (doc,) = docs_in(EXAMPLES / "serial-udp" / "hacluster.yaml")
    media = HACluster.model_validate(doc).spec.heartbeat.media
    assert media.serial and media.udp


def test_the_gitops_overlay_switches_over_in_one_line() -> None:
    text = (OVERLAY / "switchover.yaml").read_text()
    base = HACluster.model_validate(docs_in(GITOPS / "base" / "hacluster.yaml")[0])
    assert base.spec.failover.switchover_to is None
    merged = HACluster.model_validate(overlay_hacluster())
    target = merged.spec.failover.switchover_to
    assert target in merged.spec.nodes
    lines = [ln for ln in text.splitlines() if ln.strip().startswith("switchoverTo:")]
    assert len(lines) == 1
    other = next(n for n in merged.spec.nodes if n != target)
    switched_text = text.replace(lines[0], lines[0].replace(str(target), other))
    assert sum(a != b for a, b in zip(text.splitlines(), switched_text.splitlines(), strict=True)) == 1
    switched = HACluster.model_validate(overlay_hacluster(switched_text))
    assert switched.spec.failover.switchover_to == other
    # Nothing else changed.
    a, b = merged.to_k8s(), switched.to_k8s()
    b["spec"]["failover"]["switchoverTo"] = target
    assert a == b


def test_kustomizations_name_files_that_exist() -> None:
    for kust in EXAMPLES.rglob("kustomization.yaml"):
        doc = yaml.safe_load(kust.read_text())
        for entry in [*doc.get("resources", []), *(p["path"] for p in doc.get("patches", []))]:
            assert (kust.parent / entry).exists(), f"{kust}: {entry}"
