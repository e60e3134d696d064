"""The HACluster resource as pydantic models: the one source of truth for the CRD, its defaults and rules.

Every rule the schema alone cannot express is a `Rule`: a CEL expression the API server runs and a
Python twin pydantic runs, with one message, declared next to the field or model it guards.
`crd.py` turns these models into the CustomResourceDefinition; `render.py` turns a spec into the
node agent's own Heartbeat config models.

The auth Secret (`spec.auth.secretRef`) holds, under its key (default `authkeys`), either a single
bare key (one word, used as `auth 1` / `1 <method> <key>`) or a whole Heartbeat authkeys file
(`auth N` plus `N method key` lines). The full form is the one for key rotation: add the new key
as another index, let both nodes pick it up, then move `auth N` to it and finally drop the old one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Annotated, Any, ClassVar, Literal, Self, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, InitErrorDetails, PydanticCustomError, core_schema

from hacluster_api.heartbeat.authkeys import AuthMethod
from hacluster_api.heartbeat.durations import parse_duration_ms
from hacluster_api.heartbeat.hacf_model import DEFAULT_BAUD, DEFAULT_UDPPORT, SERIAL_BAUDS, HaCf
from hacluster_api.heartbeat.haresources import parse_ip_spec
from hacluster_api.limits import MAX_WINDOW_MS, MIN_WINDOW_MS

GROUP = "hacluster.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "HACluster"
LIST_KIND = "HAClusterList"
PLURAL = "haclusters"
SINGULAR = "hacluster"
SHORT_NAMES = ("hac",)
CRD_NAME = f"{PLURAL}.{GROUP}"

VALIDATIONS = "x-kubernetes-validations"

# --------------------------------------------------------------------------------------------
# rules: one message, checked by the API server (CEL) and by pydantic (Python)


@dataclass(frozen=True)
class Rule:
    """A rule the schema keywords cannot express: `rule` is CEL for the API server, `check` the same
    test in Python (True when valid), so a spec the server rejects is rejected here too.

    Used two ways: in `Annotated[...]` it checks one value; in a model's `cel_rules` it checks the
    model, and `field_path` (".a.b", as the API server's `fieldPath`) says which field is at fault.
    """

    rule: str
    message: str
    check: Callable[[Any], bool] = field(compare=False, repr=False)
    field_path: str | None = None

    def __post_init__(self) -> None:
        if "{" in self.message:  # pydantic would read it as a template placeholder
            raise ValueError(f"rule message must not contain braces: {self.message!r}")

    def to_cel(self) -> dict[str, str]:
        out = {"rule": self.rule, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        return out

    @property
    def loc(self) -> tuple[str, ...]:
        return tuple(self.field_path.strip(".").split(".")) if self.field_path else ()

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self._check_value, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        out = handler(schema)
        out.setdefault(VALIDATIONS, []).append(self.to_cel())
        return out

    def _check_value(self, value: Any) -> Any:
        if not self.check(value):
            raise PydanticCustomError("rule", self.message)
        return value


def _rules_json(schema: dict[str, Any], cls: type[Any]) -> None:
    rules: tuple[Rule, ...] = getattr(cls, "cel_rules", ())
    if rules:
        schema.setdefault(VALIDATIONS, []).extend(r.to_cel() for r in rules)


class _Model(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are errors; `cel_rules` enforced."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        frozen=True,
        extra="forbid",
        json_schema_extra=_rules_json,
    )
    cel_rules: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _check_cel_rules(self) -> Self:
        errors = [
            InitErrorDetails(
                type=PydanticCustomError("rule", r.message), loc=r.loc, input=self._value_at(r.loc)
            )
            for r in type(self).cel_rules
            if not r.check(self)
        ]
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self

    def _value_at(self, loc: tuple[str, ...]) -> Any:
        value: Any = self.model_dump(by_alias=True, exclude_none=True, mode="json")
        for part in loc:
            value = value.get(part) if isinstance(value, dict) else None
        return value

    def to_k8s(self) -> dict[str, Any]:
        """The JSON the API server stores: camelCase, no nulls."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


# --------------------------------------------------------------------------------------------
# scalar types

DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
NodeName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=253,
        pattern=DNS1123_SUBDOMAIN,
        description="A Kubernetes node name (DNS-1123 subdomain); also the Heartbeat node name.",
    ),
]
ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS1123_SUBDOMAIN)]
DataKey = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")]

DURATION_PATTERN = r"^([0-9]{1,6}(\.[0-9]{1,3})?s|[0-9]{1,9}ms)$"
"""Whole milliseconds, with a unit, so that CEL's duration() and the agent's parser agree exactly."""

Duration = Annotated[
    str,
    Field(
        max_length=12,
        pattern=DURATION_PATTERN,
        description="A duration in whole milliseconds with a unit: 200ms, 2s, 1.5s.",
    ),
    Rule(
        "duration(self) > duration('0s')",
        "must be a positive duration, e.g. 500ms or 2s",
        lambda v: parse_duration_ms(v) > 0,
    ),
]

INTERFACE_PATTERN = r"^[A-Za-z0-9_.:@-]{1,15}$"
Interface = Annotated[
    str, Field(max_length=15, pattern=INTERFACE_PATTERN, description="A network interface name.")
]


def _plain_ip(text: str) -> IPv4Address | IPv6Address | None:
    """An address as CEL's isIP() takes it: no zone (%eth0), no IPv4-mapped IPv6."""
    try:
        addr = ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, IPv6Address) and (addr.scope_id is not None or addr.ipv4_mapped is not None):
        return None
    return addr


def _is_ip(text: str) -> bool:
    return _plain_ip(text) is not None


def _is_multicast(text: str) -> bool:
    addr = _plain_ip(text)
    return addr is not None and addr.is_multicast


def _has_prefix(text: str) -> bool:
    if text.count("/") != 1:
        return False
    addr = text.split("/", 1)[0]
    if not _is_ip(addr):
        return False
    try:
        res = parse_ip_spec("IPv6addr" if ":" in addr else "IPaddr2", text)
    except ValueError:
        return False
    return res.prefix_given


IPAddress = Annotated[
    str,
    Field(max_length=45),
    Rule("isIP(self)", "must be an IPv4 or IPv6 address", _is_ip),
]
MulticastGroup = Annotated[
    str,
    Field(max_length=45, description="An IPv4 (224.0.0.0/4) or IPv6 (ff00::/8) multicast group."),
    Rule(
        "isIP(self) && (cidr('224.0.0.0/4').containsIP(self) || cidr('ff00::/8').containsIP(self))",
        "must be an IPv4 or IPv6 multicast group (224.0.0.0/4 or ff00::/8)",
        _is_multicast,
    ),
]
CidrAddress = Annotated[
    str,
    Field(
        max_length=49, description="The virtual IP with its prefix length: 192.0.2.100/24, 2001:db8::10/64."
    ),
    Rule(
        "isCIDR(self) && cidr(self).prefixLength() > 0",
        "must be an IP address with a prefix length, e.g. 192.0.2.100/24 or 2001:db8::10/64",
        _has_prefix,
    ),
]

# --------------------------------------------------------------------------------------------
# spec: heartbeat


class UdpMedium(_Model):
    """A UDP heartbeat link: ha.cf's bcast, mcast/mcast6 or ucast/ucast6 on one interface."""

    interface: Interface
    mode: Literal["broadcast", "multicast", "unicast"] = Field(
        description="broadcast (bcast), multicast (mcast: needs group) or unicast (ucast: needs peers)."
    )
    group: MulticastGroup | None = Field(default=None, description="The multicast group (multicast only).")
    peers: dict[str, IPAddress] | None = Field(
        default=None,
        max_length=2,
        description="Unicast only: each node's address on this link, by node name (both nodes).",
    )
    port: int = Field(default=DEFAULT_UDPPORT, ge=1, le=65535)
    ttl: int = Field(default=1, ge=0, le=255, description="Multicast TTL/hops.")

    cel_rules = (
        Rule(
            "self.mode != 'multicast' || has(self.group)",
            "a multicast medium needs a group",
            lambda m: m.mode != "multicast" or m.group is not None,
            ".group",
        ),
        Rule(
            "self.mode == 'multicast' || !has(self.group)",
            "group is only for mode multicast",
            lambda m: m.mode == "multicast" or m.group is None,
            ".group",
        ),
        Rule(
            "self.mode == 'unicast' || !has(self.peers)",
            "peers is only for mode unicast",
            lambda m: m.mode == "unicast" or m.peers is None,
            ".peers",
        ),
    )


Baud = Literal[9600, 19200, 38400, 57600, 115200, 230400, 460800]
if (
    get_args(Baud) != SERIAL_BAUDS or DEFAULT_BAUD != 19200
):  # pragma: no cover - guards against drift from the agent
    raise ImportError("Baud no longer matches the agent's SERIAL_BAUDS")


class SerialMediumSpec(_Model):
    """A null-modem serial heartbeat link (ha.cf's serial)."""

    device: str = Field(max_length=255, pattern=r"^/dev/[A-Za-z0-9._/-]+$", description="E.g. /dev/ttyS0.")
    baud: Baud = Field(default=19200, description="Bits per second; the same on both ends.")


class MediaSpec(_Model):
    """The heartbeat links; at least one. More than one keeps the pair talking when a link breaks."""

    udp: list[UdpMedium] = Field(default_factory=list, max_length=8, json_schema_extra={"default": []})
    serial: list[SerialMediumSpec] = Field(
        default_factory=list, max_length=4, json_schema_extra={"default": []}
    )

    cel_rules = (
        Rule(
            "(has(self.udp) && size(self.udp) > 0) || (has(self.serial) && size(self.serial) > 0)",
            "list at least one heartbeat medium (udp or serial)",
            lambda m: bool(m.udp or m.serial),
        ),
    )


class HeartbeatSpec(_Model):
    """Heartbeat's timing and links (ha.cf)."""

    keepalive: Duration = Field(default="1s", description="Time between heartbeats.")
    warntime: Duration | None = Field(
        default=None, description="Late-heartbeat warning; default half the deadtime. Below deadtime."
    )
    deadtime: Duration = Field(
        default="30s", description="Silence after which the peer is declared dead; above 2 x keepalive."
    )
    initdead: Duration | None = Field(
        default=None,
        description="Deadtime right after start; at least deadtime. Default (Heartbeat's rule): "
        "deadtime above 10s, 12s below 6s, else twice the deadtime.",
    )
    media: MediaSpec

    cel_rules = (
        Rule(
            "duration(self.deadtime) > duration(self.keepalive) + duration(self.keepalive)",
            "deadtime must be more than twice keepalive",
            lambda h: h.deadtime_ms > 2 * h.keepalive_ms,
            ".deadtime",
        ),
        Rule(
            "!has(self.initdead) || duration(self.initdead) >= duration(self.deadtime)",
            "initdead must be at least deadtime",
            lambda h: h.initdead is None or parse_duration_ms(h.initdead) >= h.deadtime_ms,
            ".initdead",
        ),
        Rule(
            "!has(self.warntime) || duration(self.warntime) < duration(self.deadtime)",
            "warntime must be less than deadtime",
            lambda h: h.warntime is None or parse_duration_ms(h.warntime) < h.deadtime_ms,
            ".warntime",
        ),
    )

    @property
    def keepalive_ms(self) -> int:
        return parse_duration_ms(self.keepalive)

    @property
    def deadtime_ms(self) -> int:
        return parse_duration_ms(self.deadtime)

    def timing(self) -> HaCf:
        """The agent's own ha.cf timing model, so its default rules (warntime, initdead) apply as is."""
        return HaCf(
            keepalive_ms=self.keepalive_ms,
            deadtime_ms=self.deadtime_ms,
            warntime_ms_set=parse_duration_ms(self.warntime) if self.warntime else None,
            initdead_ms_set=parse_duration_ms(self.initdead) if self.initdead else None,
        )


# --------------------------------------------------------------------------------------------
# spec: auth


class SecretKeyRef(_Model):
    """A key of a Secret in the HACluster's namespace."""

    name: ObjectName
    key: DataKey = "authkeys"


class AuthSpec(_Model):
    """How heartbeats are signed. The key itself lives in a Secret, never in the spec.

    The Secret's value is either one bare key (signed with `method`) or a whole authkeys file
    (`auth N` and `N method key` lines, several keys for rotation; `auth N` must use `method`).
    """

    method: AuthMethod = Field(default="sha1", description="crc (no authentication), md5 or sha1.")
    secret_ref: SecretKeyRef


# --------------------------------------------------------------------------------------------
# spec: resources


class ArpSpec(_Model):
    """Gratuitous ARP / unsolicited neighbour advertisements after the VIP moves."""

    count: int = Field(default=5, ge=1, le=100, description="Announcements right after the VIP is added.")
    interval_ms: int = Field(default=200, ge=1, le=10_000, description="Time between those announcements.")
    refresh_seconds: int = Field(default=10, ge=0, le=3600, description="Re-announce period after; 0: never.")


class IPResourceSpec(_Model):
    """A virtual IP (Heartbeat's IPaddr2 / IPv6addr)."""

    address: CidrAddress
    interface: Interface | None = Field(
        default=None, description="Default: the interface whose subnet holds the address."
    )
    arp: ArpSpec = Field(default_factory=ArpSpec, json_schema_extra={"default": {}})


class ConfigMapKeyRef(_Model):
    """A key of a ConfigMap in the HACluster's namespace."""

    name: ObjectName
    key: DataKey | None = Field(default=None, description="Default: the script's name.")


SCRIPT_ARG_PATTERN = r"^(:?[^\s#:])+:?$"
"""One haresources word, no `::` (Heartbeat's argument separator), no `#`."""


class ScriptResourceSpec(_Model):
    """A Heartbeat resource script, called `<name> <args...> start|stop|status`."""

    name: str = Field(max_length=253, pattern=r"^[A-Za-z0-9_.+-]+$")
    args: list[Annotated[str, Field(max_length=253, pattern=SCRIPT_ARG_PATTERN)]] = Field(
        default_factory=list, max_length=16, json_schema_extra={"default": []}
    )
    config_map_ref: ConfigMapKeyRef | None = Field(
        default=None,
        description="The script body; installed as resource.d/<name>. Without it the script is "
        "looked up in resource.d, then init.d, on the node.",
    )


LABEL_KEY_PATTERN = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"


class WorkloadResourceSpec(_Model):
    """A node label the operator keeps on the owning node only, so pods whose nodeSelector names it
    follow the owner. Not a Heartbeat resource: it never appears in haresources."""

    node_label: str = Field(max_length=317, pattern=LABEL_KEY_PATTERN, description="The label key.")
    value: str | None = Field(
        default=None, max_length=63, pattern=LABEL_VALUE_PATTERN, description="Default: the HACluster's name."
    )


class ResourceSpec(_Model):
    """One resource of the group: exactly one of ip, script or workload."""

    ip: IPResourceSpec | None = None
    script: ScriptResourceSpec | None = None
    workload: WorkloadResourceSpec | None = None

    cel_rules = (
        Rule(
            "(has(self.ip) ? 1 : 0) + (has(self.script) ? 1 : 0) + (has(self.workload) ? 1 : 0) == 1",
            "a resource sets exactly one of ip, script or workload",
            lambda r: [r.ip, r.script, r.workload].count(None) == 2,
        ),
    )


# --------------------------------------------------------------------------------------------
# spec: failover and the whole spec


class NodeFenceSpec(_Model):
    """The node fence (docs/safety.md): the kernel watchdog resets a node whose self-fencing stop
    fails or overruns `stopBudget`, or whose agent stalls or dies; the other node starts the
    services it takes over only `stopBudget` + `watchdogTimeout` after its take (the addresses at
    once). For services that must never run twice (a database on shared storage)."""

    watchdog: str = Field(
        default="/dev/watchdog",
        max_length=255,
        pattern=r"^/dev/[A-Za-z0-9._/-]+$",
        description="The watchdog device on both nodes (softdog: modprobe softdog), as ha.cf's watchdog.",
    )
    watchdog_timeout: int = Field(
        default=5,
        ge=1,
        le=600,
        description="Seconds, set on the device: how long after the agent stops feeding it the node resets.",
    )
    stop_budget: Duration = Field(
        default="10s",
        description="How long a self-fencing stop may take (every member of the groups) before the "
        "node is reset.",
    )

    @property
    def stop_budget_ms(self) -> int:
        return parse_duration_ms(self.stop_budget)


class FailoverSpec(_Model):
    """Failover policy: what the operator and the agents may move, and when."""

    auto_failback: bool = Field(
        default=True, description="Resources return to preferredNode when it is back."
    )
    switchover_to: NodeName | None = Field(
        default=None, description="Declarative switchover: move the resources to this node."
    )
    maintenance: bool = Field(default=False, description="Freeze: no automatic moves while true.")
    when_arbiter_unavailable: Literal["StayPut", "TakeOver"] = Field(
        default="StayPut",
        description="Peer silent and the API server (Lease) unreachable: keep the current placement, "
        "or take over anyway (risks split brain).",
    )
    arbitration_window: Duration | None = Field(
        default=None,
        description="W (docs/safety.md): a standby takes the ownership Lease from a silent owner only "
        "once it has seen it unchanged for W. The owner renews every W/4 while the standby may be "
        "taking over, and each renewal must reach the API server within W/2, or it fences itself: "
        "raise it for a remote or loaded control plane. Default: from the heartbeat timing, 4/3 of "
        "the keepalive (132ms at keepalive 100ms), the largest W a failover does not wait for; a "
        "longer one adds 3W/4 - keepalive to each failover.",
    )

    node_fence: NodeFenceSpec | None = Field(
        default=None,
        description="Reset a node through its kernel watchdog when its self-fencing stop fails or "
        "overruns (docs/safety.md). Unset: no node fence: a hung stop can leave a service running "
        "beside the new owner's copy.",
    )

    cel_rules = (
        Rule(
            "!has(self.arbitrationWindow) || (duration(self.arbitrationWindow) >= duration('100ms') && "
            "duration(self.arbitrationWindow) <= duration('10s'))",
            "arbitrationWindow must be between 100ms and 10s",
            lambda f: (
                f.arbitration_window is None
                or MIN_WINDOW_MS <= parse_duration_ms(f.arbitration_window) <= MAX_WINDOW_MS
            ),
            ".arbitrationWindow",
        ),
    )

    @property
    def arbitration_window_ms(self) -> int | None:
        """None: the agents derive W from the heartbeat timing (engine/window.py)."""
        return None if self.arbitration_window is None else parse_duration_ms(self.arbitration_window)


NodePair = Annotated[
    list[NodeName],
    Field(min_length=2, max_length=2, description="The two Kubernetes nodes of the pair."),
    Rule(
        "size(self) != 2 || self[0] != self[1]", "the two nodes must differ", lambda v: len(set(v)) == len(v)
    ),
]


def _labels_distinct(resources: list[ResourceSpec]) -> bool:
    labels = [r.workload.node_label for r in resources if r.workload is not None]
    return len(labels) == len(set(labels))


def _unicast_complete(spec: HAClusterSpec) -> bool:
    return all(
        m.mode != "unicast" or (m.peers is not None and set(m.peers) == set(spec.nodes))
        for m in spec.heartbeat.media.udp
    )


DEFAULT_AGENT_METRICS_PORT = 9694
MAIN_GROUP = "main"
"""The name of the group a spec without `groups` has (`resources`, `preferredNode`): its Leases keep
the HACluster's own names, so rewriting such a spec as `groups: [{name: main, ...}]` moves nothing."""
MAX_GROUPS = 8

GroupName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=40,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="A DNS label: part of its Leases' names.",
    ),
]

Resources = Annotated[
    list[ResourceSpec],
    Field(
        max_length=32,
        json_schema_extra={"default": []},
        description="The resource group, in start order (stopped in reverse), as in haresources.",
    ),
]


class GroupSpec(_Model):
    """One resource group (one haresources line): its home node, its resources, its planned moves.
    Each group has its own ownership Lease and fails over, switches over and fails back on its own."""

    name: GroupName
    preferred_node: NodeName | None = Field(
        default=None, description="The group's home node (haresources); default the first node."
    )
    resources: Resources = Field(default_factory=list)
    auto_failback: bool | None = Field(
        default=None,
        description="The group returns to its preferredNode when it is back. Default: failover.autoFailback.",
    )
    switchover_to: NodeName | None = Field(
        default=None, description="Declarative switchover of this group: move it to this node."
    )


class HAClusterSpec(_Model):
    """A Heartbeat pair: two nodes, heartbeat links, auth, the resource group and the failover policy."""

    nodes: NodePair
    preferred_node: NodeName | None = Field(
        default=None, description="The group's home node (haresources); default the first node."
    )
    heartbeat: HeartbeatSpec
    auth: AuthSpec
    resources: Resources = Field(default_factory=list)
    groups: list[GroupSpec] = Field(
        default_factory=list,
        max_length=MAX_GROUPS,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
            "default": [],
        },
        description="Several resource groups (Heartbeat's haresources lines, e.g. one home on each "
        "node: active/active), each with its own Lease, moving on its own. Replaces resources, "
        "preferredNode and failover.switchoverTo, which describe a single group named main.",
    )
    failover: FailoverSpec = Field(default_factory=FailoverSpec, json_schema_extra={"default": {}})
    agent_metrics_port: int = Field(
        default=DEFAULT_AGENT_METRICS_PORT,
        ge=1024,
        le=65535,
        description="The port the agents serve Prometheus metrics on, on the node's address (host "
        "network): distinct for HAClusters that share a node (the operator checks).",
    )

    cel_rules = (
        Rule(
            "!has(self.preferredNode) || self.preferredNode in self.nodes",
            "preferredNode must be one of nodes",
            lambda s: s.preferred_node is None or s.preferred_node in s.nodes,
            ".preferredNode",
        ),
        Rule(
            "!has(self.failover) || !has(self.failover.switchoverTo) || self.failover.switchoverTo in self.nodes",
            "switchoverTo must be one of nodes",
            lambda s: s.failover.switchover_to is None or s.failover.switchover_to in s.nodes,
            ".failover.switchoverTo",
        ),
        Rule(
            "!has(self.groups) || size(self.groups) == 0 || (!has(self.preferredNode) && "
            "(!has(self.resources) || size(self.resources) == 0) && "
            "(!has(self.failover) || !has(self.failover.switchoverTo)))",
            "groups replaces resources, preferredNode and failover.switchoverTo: set those in each group",
            lambda s: (
                not s.groups
                or (s.preferred_node is None and not s.resources and s.failover.switchover_to is None)
            ),
            ".groups",
        ),
        Rule(
            "!has(self.groups) || self.groups.all(g, (!has(g.preferredNode) || g.preferredNode in self.nodes) "
            "&& (!has(g.switchoverTo) || g.switchoverTo in self.nodes))",
            "a group's preferredNode and switchoverTo must be one of nodes",
            lambda s: all(
                (g.preferred_node is None or g.preferred_node in s.nodes)
                and (g.switchover_to is None or g.switchover_to in s.nodes)
                for g in s.groups
            ),
            ".groups",
        ),
        Rule(
            "!has(self.groups) || self.groups.all(g, !(g.name in self.nodes) && "
            "self.nodes.all(n, !n.startsWith(g.name + '-')))",
            "a group's name must not be a node's name nor begin one (its Leases are named "
            "<cluster>-<group> and <cluster>-<group>-<node>, the nodes' reports <cluster>-<node>)",
            lambda s: all(
                g.name not in s.nodes and not any(n.startswith(g.name + "-") for n in s.nodes)
                for g in s.groups
            ),
            ".groups",
        ),
        Rule(
            "!has(self.resources) || self.resources.all(r, !has(r.workload) || self.resources.exists_one("
            "s, has(s.workload) && s.workload.nodeLabel == r.workload.nodeLabel))",
            "a workload nodeLabel may appear once: each one moves one label to the holder",
            lambda s: _labels_distinct([r for r in s.resources]),
            ".resources",
        ),
        Rule(
            "!has(self.groups) || self.groups.all(g, g.resources.all(r, !has(r.workload) || "
            "self.groups.exists_one(h, h.resources.exists_one(s, has(s.workload) && "
            "s.workload.nodeLabel == r.workload.nodeLabel))))",
            "a workload nodeLabel may appear once across the groups: two groups moving one label "
            "would each put it on their own holder",
            lambda s: _labels_distinct([r for g in s.groups for r in g.resources]),
            ".groups",
        ),
        Rule(
            "!has(self.heartbeat.media.udp) || self.heartbeat.media.udp.all(m, m.mode != 'unicast' || "
            "(has(m.peers) && size(m.peers) == 2 && self.nodes.all(n, n in m.peers)))",
            "a unicast medium needs peers with an address for each of the two nodes, and no others",
            _unicast_complete,
            ".heartbeat.media.udp",
        ),
    )

    @property
    def home(self) -> str:
        """preferredNode, or the first node: haresources' home node (of the single group)."""
        return self.preferred_node or self.nodes[0]

    def group_list(self) -> list[GroupSpec]:
        """Every group, in order: `groups`, or the single group named main the other fields
        describe. autoFailback resolved (the group's, or failover's)."""
        if not self.groups:
            return [
                GroupSpec(
                    name=MAIN_GROUP,
                    preferred_node=self.preferred_node,
                    resources=self.resources,
                    auto_failback=self.failover.auto_failback,
                    switchover_to=self.failover.switchover_to,
                )
            ]
        return [
            g
            if g.auto_failback is not None
            else g.model_copy(update={"auto_failback": self.failover.auto_failback})
            for g in self.groups
        ]

    @property
    def multi_group(self) -> bool:
        return bool(self.groups) and [g.name for g in self.groups] != [MAIN_GROUP]

    def of_group(self, group: GroupSpec) -> HAClusterSpec:
        """This spec as if `group` were its only group (the single-group form): what one group's
        agents and decision see. Everything else (nodes, heartbeat, auth, timing) is shared."""
        failover = self.failover.model_copy(
            update={"auto_failback": bool(group.auto_failback if group.auto_failback is not None
                                          else self.failover.auto_failback),
                    "switchover_to": group.switchover_to}
        )  # fmt: skip
        return self.model_copy(
            update={
                "preferred_node": group.preferred_node,
                "resources": group.resources,
                "groups": [],
                "failover": failover,
            }
        )


# --------------------------------------------------------------------------------------------
# status


class ConditionType(StrEnum):
    READY = "Ready"
    DEGRADED = "Degraded"
    HEARTBEAT_LINK_DOWN = "HeartbeatLinkDown"
    ARBITRATING = "Arbitrating"


class Condition(_Model):
    """The standard Kubernetes condition (metav1.Condition)."""

    type: str = Field(
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
        description="Ready, Degraded, HeartbeatLinkDown or Arbitrating.",
    )
    status: Literal["True", "False", "Unknown"]
    observed_generation: int | None = Field(default=None, ge=0)
    last_transition_time: datetime
    reason: str = Field(min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    message: str = Field(max_length=32768)


class NodeStatus(_Model):
    """One node as the agents and the operator see it."""

    name: NodeName
    state: Literal["active", "up", "init", "dead", "unknown"] = Field(
        description="Heartbeat's node status words."
    )
    last_seen: datetime | None = None
    media: dict[str, Literal["up", "down"]] = Field(
        default_factory=dict, max_length=16, description="Each heartbeat medium (by name): up or down."
    )


class Transition(_Model):
    """The last move of the resource group."""

    from_: NodeName | None = Field(default=None, alias="from")
    to: NodeName | None = None
    reason: str = Field(max_length=1024)
    gap_ms: int | None = Field(default=None, ge=0, description="Time without an owner, in milliseconds.")
    time: datetime


class GroupStatus(_Model):
    """One resource group of several (spec.groups): who holds it, at which epoch, its last move."""

    name: GroupName
    owner: NodeName | None = Field(default=None, description="The node holding the group.")
    epoch: int | None = Field(default=None, ge=0, description="Its Lease's transitions.")
    state: Literal["Ready", "Degraded", "Arbitrating", "Unknown"] | None = None
    last_transition: Transition | None = None
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
        description="The group's own conditions; the HACluster's gather every group's.",
    )


class HAClusterStatus(_Model):
    """Observed state, written by the operator through the status subresource. With several
    groups, owner, epoch and lastTransition are the first group's; `groups` has each."""

    owner: NodeName | None = Field(default=None, description="The node holding the resources.")
    epoch: int | None = Field(
        default=None, ge=0, description="Increases on each change of owner (Lease transitions)."
    )
    state: Literal["Ready", "Degraded", "Arbitrating", "Unknown"] | None = None
    observed_generation: int | None = Field(default=None, ge=0)
    nodes: list[NodeStatus] = Field(
        default_factory=list,
        max_length=2,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    last_transition: Transition | None = None
    groups: list[GroupStatus] = Field(
        default_factory=list,
        max_length=MAX_GROUPS,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        description="Each group, with several (spec.groups).",
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


class HACluster(BaseModel):
    """A Linux-HA Heartbeat two-node active/standby pair, run by the hacluster operator."""

    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, validate_by_alias=True, extra="forbid"
    )

    api_version: Literal["hacluster.dev/v1alpha1"] = "hacluster.dev/v1alpha1"
    kind: Literal["HACluster"] = "HACluster"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: HAClusterSpec
    status: HAClusterStatus | None = None

    def to_k8s(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
