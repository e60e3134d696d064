"""Every field of the HACluster spec does what it says: it reaches the agent (its Heartbeat files or
agent.json, read back by the agent's own loader) or it is the operator's alone, named below with why.

The chain is the real one: the operator's config Secret data (resources.config_data), laid out by
the agent as the kubelet mounts it, read by the agent's `configure` with the DaemonSet's command
line, down to the drivers it builds."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hacluster_agent.daemon import Agent, AgentOptions, configure
from hacluster_agent.resources.group import drivers_for
from hacluster_agent.resources.ipaddr import IPAddrDriver
from hacluster_api.agentconfig import AgentConfigError, parse_agent_config
from hacluster_api.heartbeat.directory import ClusterConfig
from hacluster_api.models import HAClusterSpec
from hacluster_api.render import render_node, script_sources
from hacluster_operator.resources import agent_command, config_data

A, B = "node-a", "node-b"
KEY = "0123456789abcdef"
BASE: dict[str, Any] = {
    "nodes": [A, B],
    "heartbeat": {
        "keepalive": "100ms",
        "deadtime": "300ms",
        "media": {
            "udp": [{"interface": "eth1", "mode": "unicast", "peers": {A: "192.0.2.1", B: "192.0.2.2"}}]
        },
    },
    "auth": {"secretRef": {"name": "web-auth"}},
    "resources": [
        {"ip": {"address": "192.0.2.10/24", "interface": "eth0"}},
        {"script": {"name": "httpd", "args": ["start-arg"]}},
        {"workload": {"nodeLabel": "example.com/web"}},
    ],
}


def agent_for(spec: dict[str, Any], tmp_path: Path, node: str = A) -> tuple[ClusterConfig, AgentOptions]:
    """What the agent on `node` is told: the operator's Secret, as mounted, read with the
    DaemonSet's command line (its $(NODE_NAME) filled in, as the kubelet does)."""
    mounted = tmp_path / "secret"
    mounted.mkdir(parents=True, exist_ok=True)
    for key, text in config_data(HAClusterSpec.model_validate(spec), KEY).items():
        (mounted / key).write_text(text)
    argv = [w.replace("$(NODE_NAME)", node) for w in agent_command("ha", "web")[1:]]
    argv[argv.index("--config-dir") + 1] = str(mounted)
    argv += ["--state-dir", str(tmp_path / "state"), "--log-format", "text"]
    configured = configure(argv)
    assert not isinstance(configured, int), f"the agent refused its config (exit {configured})"
    return configured


def with_field(spec: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(spec)
    where: Any = out
    keys = path.split(".")
    for k in keys[:-1]:
        where = where[int(k)] if isinstance(where, list) else where.setdefault(k, {})
    if isinstance(where, list):
        where[int(keys[-1])] = value
    else:
        where[keys[-1]] = value
    return out


# -- the dead fields ---------------------------------------------------------------------------


def test_a_vips_arp_settings_reach_its_driver(tmp_path: Path) -> None:
    """spec.resources[].ip.arp was rendered and then dropped: the agents announced 5 times 200 ms
    apart whatever it said. Now it travels in agent.json to the VIP's driver (whose announcements
    tests/netns/test_vip_driver.py counts on the wire)."""
    spec = with_field(BASE, "resources.0.ip.arp", {"count": 2, "intervalMs": 50, "refreshSeconds": 0})
    cfg, opts = agent_for(spec, tmp_path)
    (group,) = cfg.haresources.groups
    (vip,) = [d for d in drivers_for(group, cfg.directory, arp=opts.arp) if isinstance(d, IPAddrDriver)]
    assert (vip.options.arp_count, vip.options.arp_interval, vip.options.arp_refresh) == (2, 0.05, 0.0)
    _, defaults = agent_for(BASE, tmp_path / "defaults")
    (plain,) = [d for d in drivers_for(group, cfg.directory, arp=defaults.arp) if isinstance(d, IPAddrDriver)]
    assert (plain.options.arp_count, plain.options.arp_interval, plain.options.arp_refresh) == (5, 0.2, 10.0)


def test_the_failover_policy_reaches_the_agent(tmp_path: Path) -> None:
    """whenArbiterUnavailable, W and the node fence reach the agent through agent.json."""
    spec = with_field(BASE, "failover", {
        "whenArbiterUnavailable": "TakeOver",
        "arbitrationWindow": "350ms",
        "nodeFence": {"watchdog": "/dev/watchdog0", "watchdogTimeout": 7, "stopBudget": "12s"},
    })  # fmt: skip
    _, opts = agent_for(spec, tmp_path)
    assert opts.kube is not None
    assert (opts.kube.take_over_without_arbiter, opts.kube.window) == (True, 0.35)
    assert (opts.watchdog_timeout, opts.stop_budget) == (7, 12.0)
    _, plain = agent_for(BASE, tmp_path / "defaults")
    assert plain.kube is not None and not plain.kube.take_over_without_arbiter
    assert plain.kube.window == pytest.approx(0.132)  # derived from keepalive and deadtime


# -- agent.json's own checks -------------------------------------------------------------------


def test_a_flag_and_agent_json_setting_one_option_is_an_error_naming_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = with_field(BASE, "failover", {"arbitrationWindow": "350ms"})
    mounted = tmp_path / "secret"
    mounted.mkdir()
    for key, text in config_data(HAClusterSpec.model_validate(spec), KEY).items():
        (mounted / key).write_text(text)
    argv = [w.replace("$(NODE_NAME)", A) for w in agent_command("ha", "web")[1:]]
    argv[argv.index("--config-dir") + 1] = str(mounted)
    argv += ["--state-dir", str(tmp_path / "state"), "--arbitration-window", "0.5"]
    assert configure(argv) == 1
    err = capsys.readouterr().err
    assert "--arbitration-window 0.5 and agent.json's arbitrationWindowSeconds 0.35" in err


def test_agent_json_names_its_file_and_field_and_refuses_unknown_fields() -> None:
    with pytest.raises(AgentConfigError, match=r"/etc/ha\.d/agent\.json: arbitrationWindowSecond: Extra"):
        parse_agent_config('{"arbitrationWindowSecond": 0.3}', "/etc/ha.d/agent.json")
    with pytest.raises(AgentConfigError, match=r"arbitrationWindowSeconds: Input should be less than"):
        parse_agent_config('{"arbitrationWindowSeconds": 30}')


def test_arp_settings_for_a_vip_the_files_do_not_have_are_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node = render_node(HAClusterSpec.model_validate(BASE), A, KEY)
    ha_d = tmp_path / "ha.d"
    ha_d.mkdir()
    for rel, text in node.files().items():
        (ha_d / rel).parent.mkdir(parents=True, exist_ok=True)
        (ha_d / rel).write_text(text)
    (ha_d / "authkeys").chmod(0o600)
    agent = json.loads((ha_d / "agent.json").read_text())
    agent["arp"] = {"IPaddr2::192.0.2.99/24/eth0": {"count": 1}}
    (ha_d / "agent.json").write_text(json.dumps(agent))
    argv = ["--config-dir", str(ha_d), "--node", A, "--state-dir", str(tmp_path / "state")]
    assert configure(argv) == 1
    err = capsys.readouterr().err
    assert "agent.json: arp names IPaddr2::192.0.2.99/24/eth0, not a VIP of haresources" in err
    assert "its VIPs: IPaddr2::192.0.2.10/24/eth0" in err


# -- the walk over every field ------------------------------------------------------------------

OPERATOR_ONLY = {
    "failover.autoFailback": "the operator fails back through the Lease (one owner of failback)",
    "failover.switchoverTo": "a planned move: the operator's handover-to annotation",
    "failover.maintenance": "the operator's freeze annotation",
    "auth.secretRef.name": "where the operator reads the key; the key itself reaches authkeys",
    "auth.secretRef.key": "where the operator reads the key; the key itself reaches authkeys",
    "resources[].script.configMapRef.name": "where the operator reads the script; its body reaches resource.d",
    "resources[].script.configMapRef.key": "where the operator reads the script; its body reaches resource.d",
    "resources[].workload.nodeLabel": "a node label the operator sets on the owner's node",
    "resources[].workload.value": "a node label the operator sets on the owner's node",
    "groups[].autoFailback": "the operator fails back each group through its Lease",
    "groups[].switchoverTo": "a planned move of the group: the operator's handover-to on its Lease",
}
"""Fields that are the operator's alone, each with what it does instead (tests of decide.py and of
the API server show those)."""

VARIANTS: dict[str, Any] = {
    "nodes": [A, "node-c"],
    "preferredNode": B,
    "heartbeat.keepalive": "120ms",
    "heartbeat.warntime": "250ms",
    "heartbeat.deadtime": "900ms",
    "heartbeat.initdead": "5s",
    "heartbeat.media.udp[].interface": "eth2",
    "heartbeat.media.udp[].mode": {"interface": "eth1", "mode": "broadcast"},  # (unicast in BASE)
    "heartbeat.media.udp[].group": "239.0.0.2",
    "heartbeat.media.udp[].port": 695,
    "heartbeat.media.udp[].peers": {A: "192.0.2.1", B: "192.0.2.3"},
    "heartbeat.media.udp[].ttl": 3,
    "heartbeat.media.serial[].device": "/dev/ttyS1",
    "heartbeat.media.serial[].baud": 38400,
    "auth.method": "md5",
    "auth.secretRef.name": "other-auth",
    "auth.secretRef.key": "key",
    "resources[].ip.address": "192.0.2.11/24",
    "resources[].ip.interface": "eth3",
    "resources[].ip.arp.count": 3,
    "resources[].ip.arp.intervalMs": 100,
    "resources[].ip.arp.refreshSeconds": 30,
    "resources[].script.name": "nginx",
    "resources[].script.args": ["other-arg"],
    "resources[].script.configMapRef.name": "other-scripts",
    "resources[].script.configMapRef.key": "other-key",
    "resources[].workload.nodeLabel": "example.com/other",
    "resources[].workload.value": "yes",
    "failover.autoFailback": False,
    "failover.switchoverTo": B,
    "failover.maintenance": True,
    "failover.whenArbiterUnavailable": "TakeOver",
    "failover.arbitrationWindow": "400ms",
    "failover.nodeFence.watchdog": "/dev/watchdog2",
    "failover.nodeFence.watchdogTimeout": 9,
    "failover.nodeFence.stopBudget": "20s",
    "agentMetricsPort": 9700,
    "groups[].name": "db",
    "groups[].preferredNode": B,
    "groups[].autoFailback": True,
    "groups[].switchoverTo": B,
}
"""A second value for each field (beside its value in the base spec below, or its default)."""

SCRIPTS = {"httpd": "#!/bin/sh\n", "nginx": "#!/bin/sh\n"}
RESOURCE_AT = {"ip": 0, "script": 1, "workload": 2}
"""Where each kind of resource is in BASE."""


IN_GROUPS = {k: v for k, v in BASE.items() if k != "resources"} | {
    "groups": [{"name": "web", "resources": BASE["resources"]}, {"name": "other", "preferredNode": B}]
}
"""BASE as two groups: its resources in the first, a second group (home on the other node)."""


def variant(leaf: str) -> Any:
    """A group's resources vary as the single group's."""
    return VARIANTS.get(leaf, VARIANTS.get(leaf.removeprefix("groups[].")))


def operator_only(leaf: str) -> bool:
    return leaf in OPERATOR_ONLY or leaf.removeprefix("groups[].") in OPERATOR_ONLY


def base_for(leaf: str) -> tuple[dict[str, Any], str]:
    """The spec to vary `leaf` in (with the optional parts it needs present), and its concrete path."""
    if leaf.startswith("groups[]."):
        inner = leaf.removeprefix("groups[].")
        if not inner.startswith("resources[]."):
            return IN_GROUPS, f"groups.0.{inner}"
        spec, path = base_for(inner)
        grouped = {k: v for k, v in spec.items() if k != "resources"} | {
            "groups": [{"name": "web", "resources": spec["resources"]}, *IN_GROUPS["groups"][1:]]
        }
        return grouped, path.replace("resources.", "groups.0.resources.", 1)
    spec, path = BASE, leaf
    if leaf.startswith("resources[]."):
        kind = leaf.split(".")[1]
        path = leaf.replace("resources[]", f"resources.{RESOURCE_AT[kind]}")
        if ".configMapRef." in leaf:
            spec = with_field(spec, "resources.1.script.configMapRef", {"name": "scripts"})
    elif leaf.startswith("heartbeat.media.udp[]."):
        path = leaf.replace("udp[]", "udp.0")
        if leaf.endswith((".group", ".ttl")):
            multicast = {"interface": "eth1", "mode": "multicast", "group": "239.0.0.1"}
            spec = with_field(spec, "heartbeat.media.udp", [multicast])
    elif leaf.startswith("heartbeat.media.serial[]."):
        path = leaf.replace("serial[]", "serial.0")
        spec = with_field(spec, "heartbeat.media.serial", [{"device": "/dev/ttyS0"}])
    elif leaf.startswith("failover.nodeFence."):
        spec = with_field(spec, "failover.nodeFence", {"watchdog": "/dev/watchdog0"})
    if leaf == "nodes":  # (unicast peers are named by node)
        spec = with_field(spec, "heartbeat.media.udp.0", {"interface": "eth1", "mode": "broadcast"})
    if leaf == "heartbeat.media.udp[].mode":
        path = "heartbeat.media.udp.0"  # another mode needs its own fields: the whole medium
    return spec, path


def spec_leaves(schema: dict[str, Any], defs: dict[str, Any], path: str = "") -> Iterator[str]:
    """Every field path of the HACluster spec, from its JSON schema (a list's items: `name[]`)."""
    if "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[-1]]
    options = [o for o in schema.get("anyOf", []) if o.get("type") != "null"]
    if options:
        yield from spec_leaves(options[0], defs, path)
        return
    props = schema.get("properties")
    if props is None or path in VARIANTS:
        yield path
        return
    for name, sub in props.items():
        child = f"{path}.{name}" if path else name
        items = sub.get("items") if sub.get("type") == "array" else None
        if items is not None and ("$ref" in items or "properties" in items):
            yield from spec_leaves(items, defs, f"{child}[]")
        else:
            yield from spec_leaves(sub, defs, child)


def rendered(spec: dict[str, Any]) -> dict[str, str]:
    """Both nodes' files as the operator puts them in the config Secret (agent.json included)."""
    model = HAClusterSpec.model_validate(spec)
    bodies = {name: SCRIPTS[name] for name in script_sources(model)}
    return {f"{n}/{f}": t for n in model.nodes for f, t in render_node(model, n, KEY, bodies).files().items()}


def test_every_spec_field_reaches_the_agent_or_is_operator_only() -> None:
    schema = HAClusterSpec.model_json_schema(by_alias=True)
    leaves = sorted(set(spec_leaves(schema, schema.get("$defs", {}))))
    assert len(leaves) > 30, leaves
    unknown = [leaf for leaf in leaves if variant(leaf) is None]
    assert not unknown, f"new spec fields: give each a second value in VARIANTS: {unknown}"
    silent: list[str] = []
    for leaf in leaves:
        base, path = base_for(leaf)
        changed = rendered(base) != rendered(with_field(base, path, variant(leaf)))
        if operator_only(leaf):
            assert not changed, f"{leaf} is listed as the operator's alone, but it changes the agents' files"
        elif not changed:
            silent.append(leaf)
    assert not silent, f"these fields never reach the agents and are not OPERATOR_ONLY: {silent}"


def test_in_kubernetes_mode_the_agents_never_fail_back_by_themselves(tmp_path: Path) -> None:
    """One owner of failback per mode: the operator's in Kubernetes mode, whatever ha.cf says (a
    hand-written one may say `auto_failback on`: both used to start one). The engine checked is
    the one the daemon builds from the mounted files and its command line."""
    mounted = tmp_path / "secret"
    mounted.mkdir()
    for key, text in config_data(HAClusterSpec.model_validate(BASE), KEY).items():
        if key.endswith("ha.cf"):
            assert "auto_failback off" in text  # what the operator renders
            text = text.replace("auto_failback off", "auto_failback on")
        (mounted / key).write_text(text)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'https://192.0.2.99:6443'}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\nusers: [{name: u, user: {token: t}}]\n"
    )
    argv = [w.replace("$(NODE_NAME)", A) for w in agent_command("ha", "web")[1:]]
    argv[argv.index("--config-dir") + 1] = str(mounted)
    argv += ["--state-dir", str(tmp_path / "state"), "--log-format", "text"]
    configured = configure(argv)
    assert not isinstance(configured, int)
    cfg, opts = configured
    assert cfg.hacf.auto_failback_effective  # the file says on
    assert opts.kube is not None
    kube_mode = Agent(
        cfg, dataclasses.replace(opts, kube=dataclasses.replace(opts.kube, kubeconfig=str(kubeconfig)))
    )
    standalone = Agent(cfg, dataclasses.replace(opts, kube=None))
    assert not kube_mode.engine.cfg.auto_failback and kube_mode.engine.cfg.arbitrated
    assert standalone.engine.cfg.auto_failback  # Heartbeat's own behaviour without an operator
