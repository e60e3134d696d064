"""Typed model of haresources: resource groups, each with a home node and resources in start order."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv6Interface
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

IP_AGENTS = ("IPaddr", "IPaddr2", "IPv6addr")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class IPResource(_Frozen):
    """A virtual IP: `192.0.2.100`, `IPaddr::192.0.2.100/24/eth1/192.0.2.255`, `IPaddr2::…`.

    A missing prefix or interface is resolved at start from the subnet already on an interface,
    as Heartbeat's IPaddr does.
    """

    kind: Literal["ip"] = "ip"
    agent: Literal["IPaddr", "IPaddr2", "IPv6addr"] = "IPaddr"
    address: IPv4Interface | IPv6Interface
    prefix_given: bool = True
    interface: str | None = None
    broadcast: IPv4Address | None = None
    bare: bool = False

    @property
    def name(self) -> str:
        return f"{self.agent}::{self.spec}"

    @property
    def spec(self) -> str:
        """The argument Heartbeat passes to the IPaddr script: ip[/bits[/iface[/bcast]]]."""
        parts = [str(self.address.ip)]
        tail = [str(x) for x in (self.interface, self.broadcast) if x]
        if self.prefix_given or tail:  # `ip//eth1`: no prefix (taken from eth1), but the interface stays
            parts.append(str(self.address.network.prefixlen) if self.prefix_given else "")
            parts += tail
        return "/".join(parts)


class ScriptResource(_Frozen):
    """A resource.d or init.d script with Heartbeat-style `::` arguments (`Filesystem::/dev/sda1::/data`)."""

    kind: Literal["script"] = "script"
    script: str
    args: list[str] = Field(default_factory=list)

    @property
    def name(self) -> str:
        return "::".join([self.script, *self.args])


Resource = Annotated[IPResource | ScriptResource, Field(discriminator="kind")]


class ResourceGroup(_Frozen):
    """One haresources line: started left to right on its home node, stopped right to left."""

    home: str
    resources: list[Resource]
    line: int | None = Field(default=None, exclude=True)

    @property
    def key(self) -> str:
        """How Heartbeat names a group on the wire (ip-request's `ipaddr`): its first resource."""
        return self.resources[0].name if self.resources else self.home


class HaResources(_Frozen):
    groups: list[ResourceGroup] = Field(default_factory=list)

    def groups_of(self, node: str) -> list[ResourceGroup]:
        """The groups whose home node is `node` (Heartbeat's 'local' resources there)."""
        return [g for g in self.groups if g.home == node]
