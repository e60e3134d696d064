"""What the operator observed, as its decision reads it: the ownership Lease (and the events it
posts). Shared by decide.py, plan.py and conditions.py."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from hacluster_api.annotations import Directives, directives_of

DEFAULT_REPORT_DURATION_S = 5.0
"""A report Lease without leaseDurationSeconds is stale this long after its renewTime."""

EventType = Literal["Normal", "Warning"]


@dataclass(frozen=True)
class Event:
    type: EventType
    reason: str
    message: str


@dataclass(frozen=True)
class LeaseState:
    """The ownership Lease: `holder` owns the resources ("" when released), `epoch` is
    leaseTransitions, `acquired` its acquireTime."""

    holder: str = ""
    epoch: int = 0
    annotations: Mapping[str, str] = field(default_factory=dict)
    acquired: datetime | None = None

    @property
    def directives(self) -> Directives:
        """The annotations as the agents read them (one parser: hacluster_api.annotations)."""
        return directives_of(self.annotations, self.holder, self.epoch)

    @property
    def handover_to(self) -> str | None:
        return self.directives.handover_to

    @property
    def frozen(self) -> bool:
        return self.directives.freeze

    @property
    def releasing(self) -> bool:
        return self.directives.release

    def with_annotations(self, changes: Mapping[str, str | None]) -> LeaseState:
        """This Lease after an annotation change set (None removes)."""
        annotations = dict(self.annotations)
        for key, value in changes.items():
            if value is None:
                annotations.pop(key, None)
            else:
                annotations[key] = value
        return LeaseState(self.holder, self.epoch, annotations, self.acquired)
