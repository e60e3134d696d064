"""Resource drivers of the node agent: VIPs over netlink, resource.d/init.d scripts, and the group runner."""

from .base import Announcing, Renewable, Resource, ResourceError, ResourceState
from .group import GroupRunner, GroupStartError, GroupStopError, MonitorOutcome, drivers_for, runner_for
from .ipaddr import IPAddrDriver, VIPOptions
from .script import ScriptDriver, ScriptOptions

__all__ = [
    "Announcing",
    "GroupRunner",
    "GroupStartError",
    "GroupStopError",
    "IPAddrDriver",
    "MonitorOutcome",
    "Renewable",
    "Resource",
    "ResourceError",
    "ResourceState",
    "ScriptDriver",
    "ScriptOptions",
    "VIPOptions",
    "drivers_for",
    "runner_for",
]
