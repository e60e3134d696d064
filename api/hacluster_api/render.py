"""Render one node's Heartbeat config (ha.cf, haresources, authkeys) from an HACluster spec.

Pure functions. The files are built with the node agent's own models and renderers (HaCf,
HaResources, AuthKeys, render_*), and checked with its own parsers before they are returned, so the
agent reads exactly what the spec says, and the same agent runs inside and outside Kubernetes.

What Heartbeat's files cannot say is returned beside them: script bodies from ConfigMaps (as
`resource.d/<name>` files) and the agent's options (`agent.json`, agentconfig.py: the arbitration
window, the arbiter policy, the node fence, each VIP's ARP settings). Workload resources are the
operator's business (a node label) and never reach haresources.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import ip_address, ip_interface

from pydantic import SecretStr

from hacluster_api.heartbeat.authkeys import AuthKey, AuthKeys, parse_authkeys, render_authkeys
from hacluster_api.heartbeat.durations import parse_duration_ms
from hacluster_api.heartbeat.hacf import parse_hacf, render_hacf
from hacluster_api.heartbeat.hacf_model import (
    DEFAULT_BAUD,
    DEFAULT_UDPPORT,
    BcastMedium,
    HaCf,
    McastMedium,
    Medium,
    SerialMedium,
    UcastMedium,
)
from hacluster_api.heartbeat.haresources import parse_haresources, render_haresources
from hacluster_api.heartbeat.haresources_model import (
    HaResources,
    IPResource,
    Resource,
    ResourceGroup,
    ScriptResource,
)
from hacluster_api.heartbeat.issues import Findings

from .agentconfig import AGENT_CONFIG_FILE, AgentConfig, NodeFenceConfig
from .models import ArpSpec, ConfigMapKeyRef, HAClusterSpec, IPResourceSpec, ResourceSpec, ScriptResourceSpec

RESOURCE_D = "resource.d"
_QUOTED = re.compile(r"got '[^']*'")


class RenderError(ValueError):
    """The spec and its Secret/ConfigMaps do not make a config the agent would accept."""


@dataclass(frozen=True)
class NodeConfig:
    """Everything one node's agent needs, as file texts plus the options files cannot carry."""

    node: str
    hacf: str
    haresources: str
    authkeys: str
    agent: AgentConfig = field(default_factory=AgentConfig)
    """The agent's options beyond Heartbeat's files (`agent.json`)."""
    scripts: dict[str, str] = field(default_factory=dict)
    """Extra files, `resource.d/<name>` -> body: install them executable (0755)."""

    def files(self) -> dict[str, str]:
        """Path (relative to the ha.d directory) -> text. authkeys must be written 0600."""
        return {
            "ha.cf": self.hacf,
            "haresources": self.haresources,
            "authkeys": self.authkeys,
            AGENT_CONFIG_FILE: self.agent.to_json(),
            **self.scripts,
        }


# --------------------------------------------------------------------------------------------
# ha.cf


def build_hacf(spec: HAClusterSpec, node: str) -> HaCf:
    """The agent's HaCf for `node`: the same timing and policy on both nodes; unicast names the peer."""
    peer = _peer_of(spec, node)
    hb = spec.heartbeat
    media: list[Medium] = []
    for u in hb.media.udp:
        if u.mode == "broadcast":
            media.append(BcastMedium(interface=u.interface, port=u.port))
        elif u.mode == "multicast":
            assert u.group is not None  # the model's rule
            media.append(
                McastMedium(interface=u.interface, group=ip_address(u.group), port=u.port, ttl=u.ttl)
            )
        else:
            assert u.peers is not None  # the spec's rule
            media.append(UcastMedium(interface=u.interface, peer=ip_address(u.peers[peer]), port=u.port))
    media.extend(SerialMedium(device=s.device, baud=s.baud) for s in hb.media.serial)
    return HaCf(
        keepalive_ms=parse_duration_ms(hb.keepalive),
        deadtime_ms=parse_duration_ms(hb.deadtime),
        warntime_ms_set=parse_duration_ms(hb.warntime) if hb.warntime else None,
        initdead_ms_set=parse_duration_ms(hb.initdead) if hb.initdead else None,
        udpport=_last_in_force(media, "udpport"),
        baud=_last_in_force(media, "baud"),
        media=media,
        nodes=list(spec.nodes),
        # Failback has one owner in Kubernetes mode: the operator (decide.py), through the Lease's
        # handover, once both nodes are healthy. The agents' own Heartbeat failback stays off, or
        # both would start one (issue 11); spec.failover.autoFailback is the operator's switch.
        auto_failback="off",
        watchdog=spec.failover.node_fence.watchdog if spec.failover.node_fence else None,
    )


def _last_in_force(media: list[Medium], what: str) -> int:
    """The global `udpport`/`baud` value after the file is read: render_hacf writes one line per
    change before the media it applies to, so the last change is what a parser ends up with."""
    value = DEFAULT_UDPPORT if what == "udpport" else DEFAULT_BAUD
    for m in media:
        if what == "udpport" and isinstance(m, BcastMedium | UcastMedium):
            value = m.port
        elif what == "baud" and isinstance(m, SerialMedium):
            value = m.baud
    return value


def _peer_of(spec: HAClusterSpec, node: str) -> str:
    if node not in spec.nodes:
        raise RenderError(f"{node!r} is not one of the nodes {list(spec.nodes)}")
    return spec.nodes[1] if node == spec.nodes[0] else spec.nodes[0]


# --------------------------------------------------------------------------------------------
# haresources


def heartbeat_resource(item: IPResourceSpec | ScriptResourceSpec) -> Resource:
    """The agent's resource for one ip or script item (IPaddr2 for IPv4, IPv6addr for IPv6)."""
    if isinstance(item, IPResourceSpec):
        address = ip_interface(item.address)
        return IPResource(
            agent="IPaddr2" if address.version == 4 else "IPv6addr",
            address=address,
            interface=item.interface,
        )
    return ScriptResource(script=item.name, args=list(item.args))


def build_haresources(spec: HAClusterSpec) -> HaResources:
    """One line per group, in spec order, each with its home node and its resources in spec
    order; workload items left out (a group of workloads alone has no line)."""
    lines = [(g, _heartbeat_resources(g.resources)) for g in spec.group_list()]
    return HaResources(
        groups=[ResourceGroup(home=g.preferred_node or spec.nodes[0], resources=rs) for g, rs in lines if rs]
    )


def haresources_groups(spec: HAClusterSpec) -> list[str]:
    """The group each haresources line is, in order (agent.json's `groups`)."""
    return [g.name for g in spec.group_list() if _heartbeat_resources(g.resources)]


def _heartbeat_resources(items: list[ResourceSpec]) -> list[Resource]:
    out: list[Resource] = []
    for r in items:
        item = r.ip or r.script
        if item is not None:
            out.append(heartbeat_resource(item))
    return out


def _all_resources(spec: HAClusterSpec) -> list[ResourceSpec]:
    return [r for g in spec.group_list() for r in g.resources]


def arp_settings(spec: HAClusterSpec) -> dict[str, ArpSpec]:
    """Each VIP's ARP settings, keyed by the name the agent gives the resource."""
    return {heartbeat_resource(r.ip).name: r.ip.arp for r in _all_resources(spec) if r.ip is not None}


def build_agent_config(spec: HAClusterSpec) -> AgentConfig:
    """The agent's options (agent.json): the same on both nodes."""
    failover = spec.failover
    window = failover.arbitration_window_ms
    fence = failover.node_fence
    return AgentConfig(
        arbitration_window_s=None if window is None else window / 1000,
        when_arbiter_unavailable=failover.when_arbiter_unavailable,
        node_fence=None
        if fence is None
        else NodeFenceConfig(
            watchdog_timeout_s=fence.watchdog_timeout, stop_budget_s=fence.stop_budget_ms / 1000
        ),
        metrics_port=spec.agent_metrics_port,
        arp=arp_settings(spec),
        groups=haresources_groups(spec) if spec.multi_group else None,
    )


# --------------------------------------------------------------------------------------------
# authkeys


def build_authkeys(spec: HAClusterSpec, secret_text: str) -> AuthKeys:
    """From the Secret's value: a whole authkeys file (has an `auth N` line), or one bare key.

    A whole file may hold several keys (rotation); the one `auth N` signs with must use the
    spec's method, so the spec never lies about how the pair authenticates.
    """
    method = spec.auth.method
    words = secret_text.split()
    if any(line.split()[:1] == ["auth"] for line in secret_text.splitlines()):
        keys, findings = parse_authkeys(secret_text, f"Secret {spec.auth.secret_ref.name}")
        _raise_on_errors(findings, redact=True)
        assert keys is not None
        if keys.signing_key.method != method:
            raise RenderError(
                f"auth.method is {method}, but the Secret's authkeys signs with "
                f"{keys.signing_key.method} (auth {keys.active})"
            )
        return keys
    if method == "crc":
        if words:
            raise RenderError("auth.method crc takes no key, but the Secret holds one")
        return AuthKeys(active=1, keys={1: AuthKey(index=1, method="crc")})
    if len(words) != 1:
        raise RenderError(
            f"the Secret's {spec.auth.secret_ref.key!r} must hold one {method} key (one word) "
            "or a whole authkeys file with an 'auth N' line"
        )
    return AuthKeys(active=1, keys={1: AuthKey(index=1, method=method, key=SecretStr(words[0]))})


# --------------------------------------------------------------------------------------------
# scripts from ConfigMaps


def script_sources(spec: HAClusterSpec) -> dict[str, ConfigMapKeyRef]:
    """The ConfigMap key each installed script comes from, by script name (what to fetch)."""
    out: dict[str, ConfigMapKeyRef] = {}
    for r in _all_resources(spec):
        s = r.script
        if s is None or s.config_map_ref is None:
            continue
        ref = s.config_map_ref.model_copy(update={"key": s.config_map_ref.key or s.name})
        if out.setdefault(s.name, ref) != ref:
            raise RenderError(f"script {s.name!r} comes from two different ConfigMap keys")
    return out


# --------------------------------------------------------------------------------------------
# the whole node


def render_node(
    spec: HAClusterSpec,
    node: str,
    authkeys_secret: str,
    script_bodies: Mapping[str, str] | None = None,
) -> NodeConfig:
    """The files for `node`. `authkeys_secret` is the Secret's value; `script_bodies` maps each
    name in `script_sources(spec)` to the ConfigMap text. Raises RenderError when anything is
    missing or the agent's parsers would not accept the result."""
    bodies = script_bodies or {}
    hacf = render_hacf(build_hacf(spec, node))
    haresources = render_haresources(build_haresources(spec))
    authkeys = render_authkeys(build_authkeys(spec, authkeys_secret))
    scripts: dict[str, str] = {}
    for name in script_sources(spec):
        if name not in bodies:
            raise RenderError(f"no body for script {name!r}: its ConfigMap key was not provided")
        scripts[f"{RESOURCE_D}/{name}"] = bodies[name]
    _check_with_agent(hacf, haresources, authkeys)
    return NodeConfig(node, hacf, haresources, authkeys, build_agent_config(spec), scripts)


def render_all(
    spec: HAClusterSpec, authkeys_secret: str, script_bodies: Mapping[str, str] | None = None
) -> dict[str, NodeConfig]:
    """Both nodes' configs, by node name."""
    return {n: render_node(spec, n, authkeys_secret, script_bodies) for n in spec.nodes}


def _check_with_agent(hacf: str, haresources: str, authkeys: str) -> None:
    """Parse the result as the agent will; its errors (e.g. a resource listed twice) become ours."""
    parsed, f1 = parse_hacf(hacf)
    _raise_on_errors(f1)
    _, f2 = parse_haresources(haresources, nodes=parsed.nodes if parsed else None)
    _raise_on_errors(f2)
    _, f3 = parse_authkeys(authkeys)
    _raise_on_errors(f3)


def _raise_on_errors(findings: Findings, *, redact: bool = False) -> None:
    """`redact`: the text is a Secret, and the parser quotes the offending word, which may be a key."""
    if findings.errors:
        text = "; ".join(str(e) for e in findings.errors)
        raise RenderError(_QUOTED.sub("got <hidden>", text) if redact else text)
