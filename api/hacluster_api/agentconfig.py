"""The agent's options that Heartbeat's files cannot say, as one typed file: `agent.json`.

The operator renders it from the HACluster (render.py) into the config Secret beside each node's
`ha.cf`, `haresources` and `authkeys` (key `<node>.agent.json`); the agent reads it from its config
directory (daemon.py). Heartbeat's files plus this file are everything the agent is told: no option
travels as a command-line flag. `hactl export` writes it for the standalone agent too.

Identity (the node's name, the HACluster's name and namespace) stays flags: it says where the agent
runs, not how it behaves.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .limits import MAX_WINDOW_MS, MIN_WINDOW_MS
from .models import ArpSpec

AGENT_CONFIG_FILE = "agent.json"


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class NodeFenceConfig(_Config):
    """The node fence (ha.cf's `watchdog` names the device): its timeout and the stop budget."""

    watchdog_timeout_s: int = Field(alias="watchdogTimeoutSeconds", ge=1, le=600)
    stop_budget_s: float = Field(alias="stopBudgetSeconds", gt=0, le=3600)


class AgentConfig(_Config):
    """What one agent is told beyond Heartbeat's files. Defaults are the agent's own."""

    api_version: Literal["hacluster.dev/v1alpha1"] = Field(
        default="hacluster.dev/v1alpha1", alias="apiVersion"
    )
    kind: Literal["AgentConfig"] = "AgentConfig"
    arbitration_window_s: float | None = Field(
        default=None, alias="arbitrationWindowSeconds", ge=MIN_WINDOW_MS / 1000, le=MAX_WINDOW_MS / 1000
    )
    """W (docs/safety.md). None: derived from keepalive and deadtime (engine/window.py)."""
    when_arbiter_unavailable: Literal["StayPut", "TakeOver"] = Field(
        default="StayPut", alias="whenArbiterUnavailable"
    )
    node_fence: NodeFenceConfig | None = Field(default=None, alias="nodeFence")
    metrics_port: int | None = Field(default=None, alias="metricsPort", ge=0, le=65535)
    """Serve Prometheus metrics on this port (0: any free one); None: no metrics endpoint."""
    arp: dict[str, ArpSpec] = Field(default_factory=dict)
    """Each VIP's announcements, by its haresources name (e.g. `IPaddr2::192.0.2.10/24`); a VIP
    not named here gets ArpSpec's defaults (Heartbeat's: 5 announcements 200 ms apart)."""

    groups: list[str] | None = Field(default=None, min_length=1, max_length=8)
    """Kubernetes mode, several resource groups: the group each haresources line is, in order
    (names as in the HACluster). Each group has its own ownership Lease (hacluster_api.names) and
    runs its own engine, its heartbeats tagged with its name on the same media; the agent runs
    them all. None: one group (main), Heartbeat's files alone."""

    def to_json(self) -> str:
        """The file's text (wire names, defaults included: the file says everything)."""
        return self.model_dump_json(by_alias=True, indent=2) + "\n"


class AgentConfigError(ValueError):
    """agent.json is not a valid AgentConfig; the message names the file and each bad field."""


def parse_agent_config(text: str, source: str = AGENT_CONFIG_FILE) -> AgentConfig:
    """The one parser of agent.json. Unknown fields are errors: a misspelt option never goes unseen."""
    try:
        return AgentConfig.model_validate_json(text)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in e.errors()
        )
        raise AgentConfigError(f"{source}: {problems}") from None


def load_agent_config(directory: Path) -> AgentConfig | None:
    """`agent.json` in a config directory; None when there is none (a hand-written /etc/ha.d)."""
    path = directory / AGENT_CONFIG_FILE
    if not path.exists():
        return None
    return parse_agent_config(path.read_text(), str(path))


def check_agent_config(config: AgentConfig, path: Path, vips: set[str]) -> None:
    """Cross-check with haresources: ARP settings for a VIP the files do not have would never be
    used (a typo, or a VIP renamed): an error naming the file and the VIPs there are."""
    unknown = sorted(set(config.arp) - vips)
    if unknown:
        raise AgentConfigError(
            f"{path}: arp names {', '.join(unknown)}, not a VIP of haresources "
            f"(its VIPs: {', '.join(sorted(vips)) or 'none'})"
        )


def check_groups(names: Sequence[str] | None, lines: int, path: Path, *, kube: bool) -> None:
    """`groups` against haresources: one name per line, each once, and Kubernetes mode only
    (standalone, Heartbeat's rules move a node's groups together)."""
    if names is None:
        return
    if not kube:
        raise AgentConfigError(f"{path}: groups needs Kubernetes mode (--kube): standalone, haresources' "
                               "groups follow Heartbeat's rules")  # fmt: skip
    if len(names) != lines:
        raise AgentConfigError(f"{path}: groups names {len(names)} groups, haresources has {lines} lines")
    if len(set(names)) != len(names):
        raise AgentConfigError(f"{path}: groups names a group twice: {list(names)}")
