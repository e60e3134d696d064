"""The agent's report to the operator: the JSON in the `hacluster.dev/report` annotation of each
report Lease `<cluster>-<node>`, written by the agent (kube/reporter.py) and read by the operator
(decide.py) through these models: one shape, both sides. The kind of the last move is the agent's
`TransitionKind`; nobody parses a reason text."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .annotations import REPORT
from .transition import TransitionKind

__all__ = [
    "AgentReport",
    "LinkReport",
    "PeerReport",
    "ReportLease",
    "TransitionKind",
    "TransitionReport",
    "parse_report",
]


class _Report(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class LinkReport(_Report):
    up: bool


class PeerReport(_Report):
    """How a node sees its peer over the heartbeat links."""

    node: str = ""
    state: str = "unknown"
    links: dict[str, LinkReport] = Field(default_factory=dict)


class TransitionReport(_Report):
    """The last move of the resources, as the node that took them saw it: `from` and `to` are
    node names ("" for nobody), `gapMs` the time without an owner (failovers only)."""

    from_: str = Field(default="", alias="from")
    to: str = ""
    kind: TransitionKind | None = None
    """None: an agent from before the kind was reported (then only `from` and `to` tell)."""
    reason: str = ""
    gap_ms: int | None = Field(default=None, alias="gapMs", ge=0)
    time: datetime | None = None


class AgentReport(_Report):
    """The JSON in a report Lease's `hacluster.dev/report` annotation. Lenient on purpose: unknown
    fields are ignored and state words are kept as sent (only "active" makes a node eligible)."""

    state: str
    holds: str = "none"
    epoch: int | None = Field(default=None, ge=0)
    peer: PeerReport | None = None
    last_transition: TransitionReport | None = Field(default=None, alias="lastTransition")

    @property
    def known_epoch(self) -> int:
        """The epoch the agent knows (0 when it does not say)."""
        return self.epoch or 0


@dataclass(frozen=True)
class ReportLease:
    """One agent's report Lease `<cluster>-<node>` as observed."""

    node: str
    renewed: datetime | None
    duration_s: float | None
    report: AgentReport | None
    error: str | None = None
    """Why `report` is None although the Lease exists (no annotation, not JSON, wrong shape)."""


def parse_report(
    node: str, renewed: datetime | None, duration_s: float | None, text: str | None
) -> ReportLease:
    """A report Lease from its renewTime, leaseDurationSeconds and report annotation text."""
    if text is None:
        return ReportLease(node, renewed, duration_s, None, f"no {REPORT} annotation")
    try:
        return ReportLease(node, renewed, duration_s, AgentReport.model_validate(json.loads(text)))
    except json.JSONDecodeError as e:
        return ReportLease(node, renewed, duration_s, None, f"not JSON ({e.msg} at {e.pos})")
    except ValidationError as e:
        where = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in e.errors()
        )
        return ReportLease(node, renewed, duration_s, None, f"unexpected shape ({where})")
