"""The agent's report Lease: written at once when the agent's view changes, renewed every
REPORT_EVERY_S otherwise (every write is a watch event for every operator replica)."""

from __future__ import annotations

import asyncio
from typing import Any

from hacluster_agent.kube.reporter import REPORT_DURATION_S, REPORT_EVERY_S, Reporter
from hacluster_api.annotations import REPORT
from hacluster_api.report import AgentReport


class Leases:
    namespace = "ha"

    def __init__(self) -> None:
        self.writes: list[tuple[float, str, int]] = []

    async def patch(self, name: str, body: Any) -> None:
        t = asyncio.get_running_loop().time()
        self.writes.append((t, body.metadata.annotations[REPORT], body.spec.lease_duration_seconds))

    async def create(self, body: Any) -> None:  # pragma: no cover - patch never says NotFound here
        raise AssertionError("not expected")


def test_a_change_is_written_at_once_and_an_unchanged_report_only_every_period() -> None:
    async def scenario() -> tuple[list[tuple[float, str, int]], float]:
        leases = Leases()
        view = {"state": "active", "holds": "none"}
        reporter = Reporter(
            leases,  # type: ignore[arg-type]
            "web-n1",
            "n1",
            lambda: AgentReport.model_validate(view),
            every=0.5,
            look=0.02,
        )
        task = asyncio.create_task(reporter.run())
        loop = asyncio.get_running_loop()
        await asyncio.sleep(1.2)  # the first write, then two renewals
        view = {"state": "active", "holds": "local"}
        changed = loop.time()
        await asyncio.sleep(0.2)
        task.cancel()
        return leases.writes, changed

    writes, changed = asyncio.run(scenario())
    before = [w for w in writes if w[0] < changed]
    after = [w for w in writes if w[0] >= changed]
    assert len(before) == 3, before  # t = 0, 0.5, 1.0: renewals of an unchanged report only
    assert len(after) == 1 and '"holds":"local"' in after[0][1]
    assert after[0][0] - changed < 0.1  # the change did not wait for the period
    assert all(w[2] == REPORT_DURATION_S for w in writes)


def test_a_silent_agent_lapses_within_a_few_renewals() -> None:
    """The operator's NodeDown for an agent that stopped: its report Lease lapses after a few
    missed renewals, not one (a renewal may be late under load)."""
    assert 3 * REPORT_EVERY_S <= REPORT_DURATION_S <= 10 * REPORT_EVERY_S


def test_a_report_that_cannot_be_made_does_not_end_the_reports() -> None:
    """One failing snapshot (a value the models refuse) is logged and tried again: the reports
    go on, or the operator would call a healthy node silent."""

    async def scenario() -> list[tuple[float, str, int]]:
        leases = Leases()
        calls = {"n": 0}

        def snapshot() -> AgentReport:
            calls["n"] += 1
            if calls["n"] == 1:
                raise ValueError("not a transition kind")
            return AgentReport.model_validate({"state": "active"})

        reporter = Reporter(leases, "web-n1", "n1", snapshot, every=0.5, look=0.02)  # type: ignore[arg-type]
        task = asyncio.create_task(reporter.run())
        await asyncio.sleep(1.5)
        task.cancel()
        return leases.writes

    assert len(asyncio.run(scenario())) >= 1
