"""The agent's report to the operator: a Lease `<cluster>-<node>` with the agent's view (state,
holdings, epoch, peer and links, last transition) as a JSON annotation, written as soon as the view
changes and renewed every REPORT_EVERY_S otherwise. The renewals say the agent lives: the operator
calls a node silent once its report Lease lapses (REPORT_DURATION_S). Each write is a watch event
for every operator replica: at one a second, two agents per HACluster, an operator of 100
HAClusters spends a fifth of a core on them (bench/operator_scale.py --renew-every 1)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from kubernetes import client

from hacluster_api.annotations import REPORT
from hacluster_api.report import AgentReport, TransitionKind, TransitionReport

from .leases import LeaseApi, NotFound

log = logging.getLogger("hacluster.agent.report")

REPORT_EVERY_S = 1.0
"""A report unchanged is renewed this often."""
REPORT_DURATION_S = 5
"""The report Lease's leaseDurationSeconds: the operator calls a node silent (NodeDown) after this
without a renewal."""
REPORT_LOOK_S = 0.2
"""How often the agent's view is compared with the report last written."""
RETRY_S = 1.0

_WITH_PEER = (TransitionKind.FAILOVER, TransitionKind.HANDOVER)
"""Only a takeover from a dead peer or a handover involves the other node; a home node taking its
free group at start-up came from nobody, a shutdown or a fence gives it to nobody."""


def transition_of(status: dict[str, Any], gap_s: float | None) -> TransitionReport | None:
    """The engine's last change of holdings, in the operator's terms: node names, kind, gap."""
    t = status.get("last_transition")
    if not t:
        return None
    me, peer = status["node"], status["peer"]["node"]
    kind = TransitionKind(t["kind"])
    acquired = t["to"] != "none"
    other = peer if kind in _WITH_PEER else ""
    return TransitionReport.model_validate(
        {
            "from": other if acquired else me,
            "to": me if acquired else other,
            "kind": kind,
            "reason": str(t["reason"]),
            "gapMs": round((gap_s or 0.0) * 1000) if acquired and kind is TransitionKind.FAILOVER else 0,
            "time": dt.datetime.fromtimestamp(t["at"], dt.UTC),
        }
    )


def report_of(
    status: dict[str, Any], epoch: int | None, peer_name: str, gap_s: float | None = None
) -> AgentReport:
    """The operator's view of one agent, from `Agent.status()` (pure; no keys, no secrets).
    `gap_s`: how long the peer had been silent when we last took over."""
    peer = status["peer"]
    return AgentReport.model_validate(
        {
            "state": status["state"],
            "holds": status["holds"],
            "epoch": epoch,
            "peer": {
                "node": peer_name,
                "state": peer["state"],
                "links": {name: {"up": link["up"]} for name, link in peer["links"].items()},
            },
            "lastTransition": transition_of(status, gap_s),
        }
    )


def report_json(report: AgentReport) -> str:
    """The annotation's text: the model's JSON by its wire names (camelCase, `from`)."""
    return report.model_dump_json(by_alias=True)


class Reporter:
    def __init__(
        self,
        leases: LeaseApi,
        name: str,
        node: str,
        snapshot: Callable[[], AgentReport],
        *,
        every: float = REPORT_EVERY_S,
        duration_s: int = REPORT_DURATION_S,
        look: float = REPORT_LOOK_S,
    ) -> None:
        self.leases, self.name, self.node = leases, name, node
        self.snapshot, self.every, self.duration_s, self.look = snapshot, every, duration_s, look
        self.failures = 0

    def _body(self, report: str) -> client.V1Lease:
        return client.V1Lease(
            metadata=client.V1ObjectMeta(
                name=self.name,
                namespace=self.leases.namespace,
                annotations={REPORT: report},
            ),
            spec=client.V1LeaseSpec(
                holder_identity=self.node,
                lease_duration_seconds=self.duration_s,
                renew_time=dt.datetime.now(dt.UTC),
            ),
        )

    async def _write(self, report: str) -> None:
        body = self._body(report)
        try:  # only this agent writes its report Lease: a merge patch, no compare-and-swap needed
            await self.leases.patch(self.name, body)
        except NotFound:
            await self.leases.create(body)

    async def run(self) -> None:
        """Write the report now, then whenever it changes, and every `every` seconds regardless
        (a failed write is tried again after RETRY_S)."""
        written: str | None = None
        due = 0.0
        loop = asyncio.get_running_loop()
        while True:
            try:
                report = report_json(self.snapshot())
            except Exception:  # never the end of the reports: the operator would call us silent
                log.exception("cannot make the report for Lease %s", self.name)
                await asyncio.sleep(RETRY_S)
                continue
            if report != written or loop.time() >= due:
                try:
                    await self._write(report)
                    if self.failures:
                        log.info("report Lease %s written again after %d failures", self.name, self.failures)
                    self.failures = 0
                    written, due = report, loop.time() + self.every
                except Exception as e:  # the report is best effort; failover never waits for it
                    self.failures += 1
                    written, due = None, loop.time() + RETRY_S
                    if self.failures in (1, 10) or self.failures % 100 == 0:
                        log.warning("cannot write report Lease %s: %s", self.name, e)
            await asyncio.sleep(self.look if written is not None else RETRY_S)
