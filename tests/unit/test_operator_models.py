"""The HACluster models: defaults, every rule (the same cases the real API server must reject, see
tests/apiserver/test_hacluster_crd.py), the generated CRD, and rendering through the agent's parsers."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from hacluster_api.heartbeat.authkeys import parse_authkeys
from hacluster_api.heartbeat.directory import load_directory
from hacluster_api.heartbeat.hacf import parse_hacf
from hacluster_api.heartbeat.haresources import parse_haresources
from hacluster_api.models import (
    HACluster,
    HAClusterSpec,
    HAClusterStatus,
    IPResourceSpec,
    ScriptResourceSpec,
)
from hacluster_api.render import (
    RenderError,
    build_hacf,
    build_haresources,
    render_all,
    render_node,
    script_sources,
)
from hacluster_operator.crd import build_crd, crd_yaml, structural

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "crds" / "hacluster.dev_haclusters.yaml"

Spec = dict[str, Any]

# The smallest spec: everything else is defaulted.
MINIMAL: Spec = {
    "nodes": ["node-a", "node-b"],
    "heartbeat": {"media": {"udp": [{"interface": "eth1", "mode": "broadcast"}]}},
    "auth": {"secretRef": {"name": "hb-auth"}},
    "resources": [{"ip": {"address": "192.0.2.10/24"}}],
}

# A valid spec that every bad case below changes in one place.
VALID: Spec = {
    "nodes": ["node-a", "node-b"],
    "heartbeat": {
        "keepalive": "1s",
        "deadtime": "10s",
        "media": {
            "udp": [{"interface": "eth1", "mode": "broadcast"}],
            "serial": [{"device": "/dev/ttyS0"}],
        },
    },
    "auth": {"method": "sha1", "secretRef": {"name": "hb-auth"}},
    "resources": [
        {"ip": {"address": "192.0.2.10/24", "interface": "eth0"}},
        {"script": {"name": "httpd"}},
        {"workload": {"nodeLabel": "hacluster.dev/web"}},
    ],
}


def manifest(name: str, spec: Spec, namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "hacluster.dev/v1alpha1",
        "kind": "HACluster",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


# --------------------------------------------------------------------------------------------
# bad specs: one list for pydantic (here) and the real API server (tests/apiserver)


@dataclass(frozen=True)
class Bad:
    """One fault. `path` is where both the API server and pydantic must report it (server notation,
    below `spec`); `says` is in both messages unless the server words it differently (`server_says`:
    schema keywords such as enum and pattern have each engine's own wording; CEL rules share theirs)."""

    id: str
    change: Callable[[Spec], object]
    path: str
    says: str
    server_says: str | None = None
    server_status: int = 422

    def spec(self) -> Spec:
        s = copy.deepcopy(VALID)
        self.change(s)
        return s

    @property
    def model_loc(self) -> str:
        return "spec." + re.sub(r"\[([^\]]+)\]", r".\1", self.path)

    def server_expects(self) -> list[str]:
        if self.server_status == 400:  # strict field validation: a decoding error, no field path
            return [self.server_says or self.says]
        return [f"spec.{self.path}: ", self.server_says or self.says]


def _udp0(s: Spec, **medium: object) -> None:
    s["heartbeat"]["media"]["udp"][0] = {"interface": "eth1", **medium}


BAD: list[Bad] = [
    Bad(
        "nodes-identical",
        lambda s: s.update(nodes=["node-a", "node-a"]),
        "nodes",
        "the two nodes must differ",
    ),
    Bad(
        "nodes-three",
        lambda s: s.update(nodes=["node-a", "node-b", "node-c"]),
        "nodes",
        "List should have at most 2 items",
        server_says="must have at most 2 items",
    ),
    Bad(
        "node-name-not-dns",
        lambda s: s.update(nodes=["Node_A", "node-b"]),
        "nodes[0]",
        "String should match pattern",
        server_says="in body should match",
    ),
    Bad(
        "preferred-node-not-a-node",
        lambda s: s.update(preferredNode="node-c"),
        "preferredNode",
        "preferredNode must be one of nodes",
    ),
    Bad(
        "switchover-to-not-a-node",
        lambda s: s.update(failover={"switchoverTo": "node-c"}),
        "failover.switchoverTo",
        "switchoverTo must be one of nodes",
    ),
    Bad(
        "groups-beside-resources",
        lambda s: s.update(groups=[{"name": "db", "resources": [{"script": {"name": "pg"}}]}]),
        "groups",
        "groups replaces resources, preferredNode and failover.switchoverTo: set those in each group",
    ),
    Bad(
        "group-preferred-node-not-a-node",
        lambda s: (s.pop("resources"), s.update(groups=[{"name": "db", "preferredNode": "node-c"}])),
        "groups",
        "a group's preferredNode and switchoverTo must be one of nodes",
    ),
    Bad(
        "workload-label-twice",
        lambda s: s["resources"].extend([{"workload": {"nodeLabel": "example.com/tier"}}] * 2),
        "resources",
        "a workload nodeLabel may appear once: each one moves one label to the holder",
    ),
    Bad(
        "workload-label-in-two-groups",
        lambda s: (
            s.pop("resources"),
            s.update(
                groups=[
                    {"name": g, "resources": [{"workload": {"nodeLabel": "example.com/tier"}}]}
                    for g in ("db", "web")
                ]
            ),
        ),
        "groups",
        "a workload nodeLabel may appear once across the groups: two groups moving one label "
        "would each put it on their own holder",
    ),
    Bad(
        "group-named-like-a-node",
        lambda s: (s.pop("resources"), s.update(groups=[{"name": "node"}])),
        "groups",
        "a group's name must not be a node's name nor begin one (its Leases are named "
        "<cluster>-<group> and <cluster>-<group>-<node>, the nodes' reports <cluster>-<node>)",
    ),
    Bad(
        "arbitration-window-too-short",
        lambda s: s.update(failover={"arbitrationWindow": "50ms"}),
        "failover.arbitrationWindow",
        "arbitrationWindow must be between 100ms and 10s",
    ),
    Bad(
        "deadtime-not-above-twice-keepalive",
        lambda s: s["heartbeat"].update(keepalive="2s", deadtime="4s"),
        "heartbeat.deadtime",
        "deadtime must be more than twice keepalive",
    ),
    Bad(
        "initdead-below-deadtime",
        lambda s: s["heartbeat"].update(initdead="9s"),
        "heartbeat.initdead",
        "initdead must be at least deadtime",
    ),
    Bad(
        "warntime-not-below-deadtime",
        lambda s: s["heartbeat"].update(warntime="10s"),
        "heartbeat.warntime",
        "warntime must be less than deadtime",
    ),
    Bad(
        "keepalive-zero",
        lambda s: s["heartbeat"].update(keepalive="0ms"),
        "heartbeat.keepalive",
        "must be a positive duration, e.g. 500ms or 2s",
    ),
    Bad(
        "duration-without-unit",
        lambda s: s["heartbeat"].update(deadtime="30"),
        "heartbeat.deadtime",
        "String should match pattern",
        server_says="in body should match",
    ),
    Bad(
        "no-media",
        lambda s: s["heartbeat"].update(media={}),
        "heartbeat.media",
        "list at least one heartbeat medium (udp or serial)",
    ),
    Bad(
        "multicast-without-group",
        lambda s: _udp0(s, mode="multicast"),
        "heartbeat.media.udp[0].group",
        "a multicast medium needs a group",
    ),
    Bad(
        "multicast-group-not-multicast",
        lambda s: _udp0(s, mode="multicast", group="192.0.2.1"),
        "heartbeat.media.udp[0].group",
        "must be an IPv4 or IPv6 multicast group (224.0.0.0/4 or ff00::/8)",
    ),
    Bad(
        "group-on-broadcast",
        lambda s: _udp0(s, mode="broadcast", group="239.192.0.1"),
        "heartbeat.media.udp[0].group",
        "group is only for mode multicast",
    ),
    Bad(
        "peers-on-broadcast",
        lambda s: _udp0(s, mode="broadcast", peers={"node-a": "192.0.2.1", "node-b": "192.0.2.2"}),
        "heartbeat.media.udp[0].peers",
        "peers is only for mode unicast",
    ),
    Bad(
        "unicast-missing-a-peer",
        lambda s: _udp0(s, mode="unicast", peers={"node-a": "192.0.2.1"}),
        "heartbeat.media.udp",
        "a unicast medium needs peers with an address for each of the two nodes, and no others",
    ),
    Bad(
        "unicast-peer-of-another-node",
        lambda s: _udp0(s, mode="unicast", peers={"node-a": "192.0.2.1", "node-c": "192.0.2.3"}),
        "heartbeat.media.udp",
        "a unicast medium needs peers with an address for each of the two nodes, and no others",
    ),
    Bad(
        "unicast-peer-not-an-address",
        lambda s: _udp0(s, mode="unicast", peers={"node-a": "192.0.2.1", "node-b": "node-b.example"}),
        "heartbeat.media.udp[0].peers[node-b]",
        "must be an IPv4 or IPv6 address",
    ),
    Bad(
        "serial-baud-not-heartbeats",
        lambda s: s["heartbeat"]["media"]["serial"][0].update(baud=12345),
        "heartbeat.media.serial[0].baud",
        "Input should be 9600, 19200, 38400, 57600, 115200, 230400 or 460800",
        server_says='Unsupported value: 12345: supported values: "9600", "19200"',
    ),
    Bad(
        "auth-method-unknown",
        lambda s: s["auth"].update(method="md4"),
        "auth.method",
        "Input should be 'crc', 'md5' or 'sha1'",
        server_says='Unsupported value: "md4": supported values: "crc", "md5", "sha1"',
    ),
    Bad(
        "auth-key-in-spec",
        lambda s: s["auth"].update(key="textoparaelpass"),
        "auth.key",
        "Extra inputs are not permitted",
        server_says='unknown field "spec.auth.key"',
        server_status=400,
    ),
    Bad(
        "vip-without-prefix",
        lambda s: s["resources"][0]["ip"].update(address="192.0.2.10"),
        "resources[0].ip.address",
        "must be an IP address with a prefix length, e.g. 192.0.2.100/24 or 2001:db8::10/64",
    ),
    Bad(
        "vip-prefix-zero",
        lambda s: s["resources"][0]["ip"].update(address="2001:db8::10/0"),
        "resources[0].ip.address",
        "must be an IP address with a prefix length, e.g. 192.0.2.100/24 or 2001:db8::10/64",
    ),
    Bad(
        "resource-ip-and-script",
        lambda s: s["resources"][0].update(script={"name": "httpd"}),
        "resources[0]",
        "a resource sets exactly one of ip, script or workload",
    ),
    Bad(
        "resource-empty",
        lambda s: s["resources"].append({}),
        "resources[3]",
        "a resource sets exactly one of ip, script or workload",
    ),
    Bad(
        "script-arg-with-separator",
        lambda s: s["resources"][1]["script"].update(args=["/dev/sda1::/data"]),
        "resources[1].script.args[0]",
        "String should match pattern",
        server_says="in body should match",
    ),
    Bad(
        "arp-count-zero",
        lambda s: s["resources"][0]["ip"].update(arp={"count": 0}),
        "resources[0].ip.arp.count",
        "Input should be greater than or equal to 1",
        server_says="should be greater than or equal to 1",
    ),
    Bad(
        "arbiter-policy-unknown",
        lambda s: s.update(failover={"whenArbiterUnavailable": "Panic"}),
        "failover.whenArbiterUnavailable",
        "Input should be 'StayPut' or 'TakeOver'",
        server_says='Unsupported value: "Panic"',
    ),
]


def model_errors(spec: Spec) -> list[tuple[str, str]]:
    """(location, message) of each pydantic error for a whole HACluster object."""
    with pytest.raises(ValidationError) as exc:
        HACluster.model_validate(manifest("bad", spec))
    return [(".".join(str(p) for p in e["loc"]), e["msg"]) for e in exc.value.errors()]


@pytest.mark.parametrize("case", BAD, ids=lambda c: c.id)
def test_models_reject_bad_spec_at_the_field(case: Bad) -> None:
    errors = model_errors(case.spec())
    assert any(loc == case.model_loc and case.says in msg for loc, msg in errors), errors


def _walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if "items" in schema:
        yield from _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], f"{path}.*")


def _crd_schema() -> dict[str, Any]:
    schema: dict[str, Any] = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_every_cel_rule_has_a_bad_case() -> None:
    """The shared list exercises each CEL rule, so the server's and pydantic's halves are both tested."""
    messages = {
        r["message"] for _, node in _walk(_crd_schema()) for r in node.get("x-kubernetes-validations", [])
    }
    assert len(messages) >= 14
    assert messages <= {c.says for c in BAD}, messages - {c.says for c in BAD}


def test_cases_start_from_a_valid_spec() -> None:
    HACluster.model_validate(manifest("good", copy.deepcopy(VALID)))


# --------------------------------------------------------------------------------------------
# defaults


def test_minimal_spec_gets_heartbeat_defaults() -> None:
    spec = HAClusterSpec.model_validate(MINIMAL)
    hb = spec.heartbeat
    assert (hb.keepalive, hb.deadtime, hb.warntime, hb.initdead) == ("1s", "30s", None, None)
    timing = hb.timing()
    assert (timing.warntime_ms, timing.initdead_ms) == (15_000, 30_000)  # Heartbeat's rules
    udp = hb.media.udp[0]
    assert (udp.port, udp.ttl, udp.group, udp.peers) == (694, 1, None, None)
    assert hb.media.serial == []
    assert (spec.auth.method, spec.auth.secret_ref.key) == ("sha1", "authkeys")
    f = spec.failover
    assert (f.auto_failback, f.switchover_to, f.maintenance, f.when_arbiter_unavailable) == (
        True,
        None,
        False,
        "StayPut",
    )
    ip = spec.resources[0].ip
    assert ip is not None and ip.interface is None
    assert (ip.arp.count, ip.arp.interval_ms, ip.arp.refresh_seconds) == (5, 200, 10)
    assert spec.preferred_node is None and spec.home == "node-a"


def test_serial_baud_defaults_and_camel_case_wire_names() -> None:
    spec = HAClusterSpec.model_validate(VALID)
    assert spec.heartbeat.media.serial[0].baud == 19200
    wire = spec.to_k8s()
    assert wire["failover"] == {
        "autoFailback": True,
        "maintenance": False,
        "whenArbiterUnavailable": "StayPut",
    }  # no arbitrationWindow: the agents derive W from the heartbeat timing (engine/window.py)
    assert wire["auth"] == {"method": "sha1", "secretRef": {"name": "hb-auth", "key": "authkeys"}}
    assert wire["resources"][0]["ip"]["arp"] == {"count": 5, "intervalMs": 200, "refreshSeconds": 10}
    assert HAClusterSpec.model_validate(wire) == spec  # what the server stores reads back the same


@pytest.mark.parametrize(
    ("deadtime", "initdead_ms"),
    [("30s", 30_000), ("10s", 20_000), ("6s", 12_000), ("5s", 12_000), ("2500ms", 12_000)],
)
def test_initdead_default_is_heartbeats_rule(deadtime: str, initdead_ms: int) -> None:
    hb = {"keepalive": "500ms", "deadtime": deadtime, "media": {"serial": [{"device": "/dev/ttyS0"}]}}
    spec = HAClusterSpec.model_validate({**MINIMAL, "heartbeat": hb})
    assert spec.heartbeat.timing().initdead_ms == initdead_ms


def test_fractional_seconds_and_milliseconds_are_durations() -> None:
    hb = {
        "keepalive": "200ms",
        "warntime": "1.5s",
        "deadtime": "2s",
        "media": {"serial": [{"device": "/dev/ttyS1"}]},
    }
    spec = HAClusterSpec.model_validate({**MINIMAL, "heartbeat": hb})
    cfg = build_hacf(spec, "node-a")
    assert (cfg.keepalive_ms, cfg.warntime_ms, cfg.deadtime_ms, cfg.initdead_ms) == (200, 1500, 2000, 12_000)


def test_status_shape() -> None:
    status = HAClusterStatus.model_validate(
        {
            "owner": "node-a",
            "epoch": 3,
            "state": "Ready",
            "observedGeneration": 2,
            "nodes": [
                {
                    "name": "node-a",
                    "state": "active",
                    "lastSeen": "2025-01-01T00:00:00Z",
                    "media": {"eth1": "up"},
                },
                {"name": "node-b", "state": "dead", "media": {"eth1": "down", "/dev/ttyS0": "down"}},
            ],
            "lastTransition": {
                "from": "node-b",
                "to": "node-a",
                "reason": "PeerDead",
                "gapMs": 10_500,
                "time": "2025-01-01T00:00:00Z",
            },
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Owned",
                    "message": "node-a holds the resources",
                    "lastTransitionTime": "2025-01-01T00:00:00Z",
                    "observedGeneration": 2,
                }
            ],
        }
    )
    assert status.last_transition is not None and status.last_transition.from_ == "node-b"
    wire = status.to_k8s()
    assert wire["lastTransition"]["from"] == "node-b" and wire["lastTransition"]["gapMs"] == 10_500
    assert wire["nodes"][0]["lastSeen"] == "2025-01-01T00:00:00Z"
    with pytest.raises(ValidationError, match="state"):
        HAClusterStatus.model_validate({"state": "Happy"})


# --------------------------------------------------------------------------------------------
# the CRD


def test_committed_crd_is_the_generated_one() -> None:
    assert CRD_FILE.read_text() == crd_yaml(), (
        "crds/ is stale: run `python -m hacluster_operator.crd > crds/hacluster.dev_haclusters.yaml`"
    )


def test_crd_module_prints_the_crd() -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(str(REPO / d) for d in ("api", "operator", "node-agent")),
    }
    out = subprocess.run(
        [sys.executable, "-m", "hacluster_operator.crd"], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout == crd_yaml()
    assert yaml.safe_load(out.stdout) == build_crd()


def test_crd_names_columns_and_subresources() -> None:
    crd = build_crd()
    assert crd["metadata"]["name"] == "haclusters.hacluster.dev"
    spec = crd["spec"]
    assert spec["group"] == "hacluster.dev" and spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "plural": "haclusters",
        "singular": "hacluster",
        "kind": "HACluster",
        "listKind": "HAClusterList",
        "shortNames": ["hac"],
    }
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = [(c["name"], c["jsonPath"]) for c in version["additionalPrinterColumns"]]
    assert columns == [
        ("Owner", ".status.owner"),
        ("State", ".status.state"),
        ("Epoch", ".status.epoch"),
        ("Age", ".metadata.creationTimestamp"),
    ]


def test_crd_schema_is_structural() -> None:
    forbidden = {"$ref", "$defs", "anyOf", "oneOf", "allOf", "not", "const", "title", "uniqueItems"}
    for path, node in _walk(_crd_schema()):
        assert "type" in node, f"{path}: untyped"
        assert not forbidden & node.keys(), f"{path}: {forbidden & node.keys()}"
        assert node.get("additionalProperties") is not False, path
        assert not ("properties" in node and "additionalProperties" in node), path
        assert "default" not in node or node["default"] is not None, path
        assert "nullable" not in node, f"{path}: nulls are pruned, not stored"
        for rule in node.get("x-kubernetes-validations", []):
            assert rule["rule"] and rule["message"], path
        if isinstance(node.get("exclusiveMinimum"), int | float):
            raise AssertionError(f"{path}: exclusiveMinimum must be a flag in OpenAPI v3.0")


def test_crd_spec_says_what_the_models_say() -> None:
    spec = _crd_schema()["properties"]["spec"]
    assert spec["required"] == ["nodes", "heartbeat", "auth"]
    hb = spec["properties"]["heartbeat"]["properties"]
    assert (hb["keepalive"]["default"], hb["deadtime"]["default"]) == ("1s", "30s")
    assert "default" not in hb["warntime"] and "default" not in hb["initdead"]
    assert spec["properties"]["auth"]["properties"]["method"]["enum"] == ["crc", "md5", "sha1"]
    assert spec["properties"]["failover"]["default"] == {}
    rules = [r["rule"] for r in spec["properties"]["heartbeat"]["x-kubernetes-validations"]]
    assert "duration(self.deadtime) > duration(self.keepalive) + duration(self.keepalive)" in rules
    status = _crd_schema()["properties"]["status"]["properties"]
    assert status["conditions"]["x-kubernetes-list-map-keys"] == ["type"]
    assert status["lastTransition"]["properties"].keys() == {"from", "to", "reason", "gapMs", "time"}


def test_structural_refuses_unions() -> None:
    schema = {"type": "object", "properties": {"x": {"anyOf": [{"type": "string"}, {"type": "integer"}]}}}
    with pytest.raises(ValueError, match=r"\.x: a union of 2 types"):
        structural(schema)
    with pytest.raises(ValueError, match="propertyNames"):
        structural({"type": "object", "propertyNames": {"pattern": "^a"}})


# --------------------------------------------------------------------------------------------
# rendering: the seed article's pair, through the agent's own parsers

ARTICLE: Spec = {
    "nodes": ["servidor1", "servidor2"],
    "preferredNode": "servidor2",  # the article's primary
    "heartbeat": {
        "keepalive": "2s",
        "deadtime": "20s",
        "media": {"udp": [{"interface": "eth1", "mode": "broadcast"}], "serial": [{"device": "/dev/ttyS0"}]},
    },
    "auth": {"method": "sha1", "secretRef": {"name": "heartbeat-auth"}},
    "resources": [
        {"ip": {"address": "192.0.2.10/24", "interface": "eth0"}},
        {"script": {"name": "httpd"}},
        {"script": {"name": "smb"}},
    ],
    "failover": {"autoFailback": False},  # the article's nice_failback on
}
ARTICLE_KEY = "textoparaelpass"


@pytest.mark.parametrize("node", ["servidor1", "servidor2"])
def test_article_pair_round_trips_through_the_agent(tmp_path: Path, node: str) -> None:
    spec = HAClusterSpec.model_validate(ARTICLE)
    cfg = render_node(spec, node, ARTICLE_KEY)
    d = tmp_path / "ha.d"
    d.mkdir()
    for name, text in cfg.files().items():
        (d / name).write_text(text)
    os.chmod(d / "authkeys", 0o600)

    loaded = load_directory(d)  # exactly what the agent does at start
    assert loaded.warnings == []
    hacf = loaded.hacf
    assert hacf == build_hacf(spec, node)
    assert hacf.nodes == ["servidor1", "servidor2"]
    assert (hacf.keepalive_ms, hacf.deadtime_ms, hacf.warntime_ms, hacf.initdead_ms) == (
        2000,
        20_000,
        10_000,
        20_000,
    )
    assert [(m.kind, getattr(m, "interface", None) or getattr(m, "device", None)) for m in hacf.media] == [
        ("bcast", "eth1"),
        ("serial", "/dev/ttyS0"),
    ]
    assert hacf.auto_failback == "off"
    (group,) = loaded.haresources.groups
    assert group.home == "servidor2"
    assert [r.name for r in group.resources] == ["IPaddr2::192.0.2.10/24/eth0", "httpd", "smb"]
    assert loaded.haresources.model_dump() == build_haresources(spec).model_dump()
    assert loaded.authkeys.signing_key.method == "sha1"
    assert loaded.authkeys.signing_key.key_bytes == ARTICLE_KEY.encode()
    assert loaded.peer_of(node) == ({"servidor1", "servidor2"} - {node}).pop()
    assert cfg.scripts == {}
    assert list(cfg.agent.arp) == ["IPaddr2::192.0.2.10/24/eth0"]


def test_both_nodes_get_the_same_files_without_unicast() -> None:
    configs = render_all(HAClusterSpec.model_validate(ARTICLE), ARTICLE_KEY)
    a, b = configs["servidor1"], configs["servidor2"]
    assert a.files() == b.files()
    assert "nice_failback" not in a.hacf and "auto_failback off" in a.hacf


def test_unicast_names_the_peer_and_multicast6_and_ports_round_trip() -> None:
    hb = {
        "keepalive": "500ms",
        "deadtime": "5s",
        "warntime": "2s",
        "initdead": "60s",
        "media": {
            "udp": [
                {"interface": "eth1", "mode": "unicast", "port": 695,
                 "peers": {"node-a": "192.0.2.1", "node-b": "192.0.2.2"}},
                {"interface": "eth2", "mode": "multicast", "group": "ff12::1:694", "port": 700, "ttl": 3},
                {"interface": "eth3", "mode": "unicast",
                 "peers": {"node-a": "2001:db8::1", "node-b": "2001:db8::2"}},
            ],
            "serial": [{"device": "/dev/ttyS0", "baud": 115200}, {"device": "/dev/ttyS1"}],
        },
    }  # fmt: skip
    spec = HAClusterSpec.model_validate({**MINIMAL, "heartbeat": hb})
    a, b = render_node(spec, "node-a", "k"), render_node(spec, "node-b", "k")
    assert "ucast eth1 192.0.2.2" in a.hacf and "ucast6 eth3 2001:db8::2" in a.hacf
    assert "ucast eth1 192.0.2.1" in b.hacf and "ucast6 eth3 2001:db8::1" in b.hacf
    assert "mcast6 eth2 ff12::1:694 700 3 0" in a.hacf
    for node, cfg in (("node-a", a), ("node-b", b)):
        parsed, findings = parse_hacf(cfg.hacf)
        assert findings.errors == []  # warnings: the agent's renderer puts `udpport 695` before ucast
        assert parsed == build_hacf(spec, node)  # the whole model, udpport and baud included


def test_ipv6_vip_and_scripts_with_args() -> None:
    spec = HAClusterSpec.model_validate(
        {
            **MINIMAL,
            "resources": [
                {"ip": {"address": "2001:db8::10/64"}},
                {"script": {"name": "Filesystem", "args": ["/dev/sda1", "/data", "ext4"]}},
                {"ip": {"address": "192.0.2.20/24"}},
            ],
        }
    )
    text = render_node(spec, "node-b", "k").haresources
    res, findings = parse_haresources(text, nodes=["node-a", "node-b"])
    assert findings.errors == [] and res is not None
    assert [r.name for r in res.groups[0].resources] == [
        "IPv6addr::2001:db8::10/64",
        "Filesystem::/dev/sda1::/data::ext4",
        "IPaddr2::192.0.2.20/24",
    ]
    assert res.groups[0].home == "node-a"


def test_workloads_are_not_heartbeat_resources() -> None:
    only = HAClusterSpec.model_validate(
        {**MINIMAL, "resources": [{"workload": {"nodeLabel": "example.com/db"}}]}
    )
    cfg = render_node(only, "node-a", "k")
    res, findings = parse_haresources(cfg.haresources)
    assert findings.errors == [] and res is not None and res.groups == []
    mixed = HAClusterSpec.model_validate(VALID)
    assert [r.name for r in build_haresources(mixed).groups[0].resources] == [
        "IPaddr2::192.0.2.10/24/eth0",
        "httpd",
    ]


def test_scripts_from_config_maps_become_resource_d_files() -> None:
    spec = HAClusterSpec.model_validate(
        {
            **MINIMAL,
            "resources": [
                {"script": {"name": "webapp", "args": ["8080"], "configMapRef": {"name": "scripts"}}},
                {"script": {"name": "backup", "configMapRef": {"name": "scripts", "key": "backup.sh"}}},
                {"script": {"name": "httpd"}},
            ],
        }
    )
    sources = script_sources(spec)
    assert {n: (r.name, r.key) for n, r in sources.items()} == {
        "webapp": ("scripts", "webapp"),
        "backup": ("scripts", "backup.sh"),
    }
    body = "#!/bin/sh\nexit 0\n"
    cfg = render_node(spec, "node-a", "k", {"webapp": body, "backup": body})
    assert cfg.scripts == {"resource.d/webapp": body, "resource.d/backup": body}
    assert cfg.files()["resource.d/webapp"] == body
    with pytest.raises(RenderError, match="no body for script 'backup'"):
        render_node(spec, "node-a", "k", {"webapp": body})


def test_a_resource_listed_twice_is_refused_by_the_agents_parser() -> None:
    spec = HAClusterSpec.model_validate(
        {**MINIMAL, "resources": [{"ip": {"address": "192.0.2.10/24"}}, {"ip": {"address": "192.0.2.10/24"}}]}
    )
    with pytest.raises(RenderError, match="already appears on line"):
        render_node(spec, "node-a", "k")


def test_render_refuses_a_node_outside_the_pair() -> None:
    with pytest.raises(RenderError, match="'node-c' is not one of the nodes"):
        render_node(HAClusterSpec.model_validate(MINIMAL), "node-c", "k")


# --------------------------------------------------------------------------------------------
# authkeys from the Secret


def test_secret_with_a_bare_key() -> None:
    spec = HAClusterSpec.model_validate(MINIMAL)
    assert render_node(spec, "node-a", "s3cret\n").authkeys == "auth 1\n1 sha1 s3cret\n"
    md5 = HAClusterSpec.model_validate({**MINIMAL, "auth": {"method": "md5", "secretRef": {"name": "x"}}})
    assert render_node(md5, "node-a", "s3cret").authkeys == "auth 1\n1 md5 s3cret\n"


def test_secret_with_a_whole_authkeys_file_allows_rotation() -> None:
    spec = HAClusterSpec.model_validate(MINIMAL)
    text = "# rotating\nauth 2\n1 sha1 oldkey\n2 sha1 newkey\n"
    out = render_node(spec, "node-a", text).authkeys
    keys, findings = parse_authkeys(out)
    assert findings.errors == [] and keys is not None
    assert keys.active == 2 and set(keys.keys) == {1, 2}  # both accepted, the new one signs
    assert keys.keys[1].key_bytes == b"oldkey" and keys.signing_key.key_bytes == b"newkey"


def test_secret_signing_with_another_method_is_refused() -> None:
    spec = HAClusterSpec.model_validate(MINIMAL)
    with pytest.raises(
        RenderError, match=r"auth.method is sha1, but the Secret's authkeys signs with md5 \(auth 1\)"
    ):
        render_node(spec, "node-a", "auth 1\n1 md5 k\n")


@pytest.mark.parametrize(
    "text",
    ["alphakey bravokey", "", "auth 1\nalphakey\n", "auth 1\n1 sha256 alphakey\n", "1 sha1 alphakey\n"],
)
def test_bad_secret_is_refused_without_showing_the_key(text: str) -> None:
    spec = HAClusterSpec.model_validate(MINIMAL)
    with pytest.raises(RenderError) as exc:
        render_node(spec, "node-a", text)
    assert "alphakey" not in str(exc.value) and "bravokey" not in str(exc.value), exc.value


def test_crc_needs_no_key() -> None:
    spec = HAClusterSpec.model_validate({**MINIMAL, "auth": {"method": "crc", "secretRef": {"name": "x"}}})
    assert render_node(spec, "node-a", "").authkeys == "auth 1\n1 crc\n"


# --------------------------------------------------------------------------------------------
# the models and the agent agree on timing


@settings(max_examples=150, deadline=None)
@given(
    keepalive=st.integers(1, 5000),
    deadtime=st.integers(1, 40_000),
    initdead=st.one_of(st.none(), st.integers(1, 80_000)),
)
def test_timing_rules_match_the_agents(keepalive: int, deadtime: int, initdead: int | None) -> None:
    """The model accepts a timing exactly when the agent's ha.cf parser does."""
    hb: Spec = {
        "keepalive": f"{keepalive}ms",
        "deadtime": f"{deadtime}ms",
        "media": MINIMAL["heartbeat"]["media"],
    }
    if initdead is not None:
        hb["initdead"] = f"{initdead}ms"
    hacf = f"keepalive {keepalive}ms\ndeadtime {deadtime}ms\nbcast eth1\nnode a\nnode b\nauto_failback on\n"
    if initdead is not None:
        hacf += f"initdead {initdead}ms\n"
    _, findings = parse_hacf(hacf)
    try:
        HAClusterSpec.model_validate({**MINIMAL, "heartbeat": hb})
    except ValidationError:
        assert findings.errors, hb
    else:
        assert not findings.errors, findings.errors


def test_rendered_specs_never_trip_the_agent() -> None:
    for spec in (MINIMAL, VALID, ARTICLE):
        model = HAClusterSpec.model_validate(spec)
        for cfg in render_all(model, "key").values():
            assert parse_hacf(cfg.hacf)[1].errors == []


def test_resource_helpers_accept_python_names() -> None:
    """Operator code builds specs in Python too: snake_case names work, aliases are the wire names."""
    ip = IPResourceSpec(address="192.0.2.1/32")
    script = ScriptResourceSpec(name="httpd", config_map_ref=None)
    assert ip.arp.interval_ms == 200 and script.args == []
