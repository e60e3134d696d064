"""The daemon's side of a Lease request: whatever the arbiter does, the engine hears an answer.

A request task that dies with an exception leaves the engine waiting for its answer for good (the
simulation found one: seed 205195, a Conflict out of a renewal); a renewal that takes longer than
the engine's deadline must count as unavailable, or the owner serves past its certificate."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from hacluster_agent.arbiter.lease import Verdict
from hacluster_agent.engine.actions import Action, Arbitrate
from tests.unit.test_metrics import _agent


class Arbiter:
    window = 0.2

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour

    async def _answer(self) -> Verdict:
        if self.behaviour == "raise":
            raise RuntimeError("an answer nobody expected")
        await asyncio.sleep(1.0)  # "hang"
        return Verdict(True, "granted too late", epoch=3)

    def take(self, still_wanted: Any, hold_off: float | None = None, window: float | None = None) -> Any:
        return self._answer()

    def renew(self) -> Any:
        return self._answer()


def _answers(tmp_path: Path, behaviour: str, act: Arbitrate) -> list[tuple[Any, ...]]:
    agent = _agent(tmp_path)
    agent.arbiter = Arbiter(behaviour)  # type: ignore[assignment]
    seen: list[tuple[Any, ...]] = []

    def arbitrated(op: int, granted: bool, reason: str, now: float, *rest: Any) -> list[Action]:
        seen.append((op, granted, reason, *rest))
        return []

    agent.engine.arbitrated = arbitrated  # type: ignore[method-assign]
    asyncio.run(agent._arbitrate(act))
    return seen


def test_an_exception_out_of_the_arbiter_is_answered_unavailable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="hacluster")
    seen = _answers(tmp_path, "raise", Arbitrate("take", 7, "peer dead"))
    assert len(seen) == 1
    op, granted, reason, _epoch, unavailable, _sent_at, _taken_over = seen[0]
    assert (op, granted, unavailable) == (7, False, True)
    assert reason == "Lease take failed: RuntimeError: an answer nobody expected"
    assert "Lease take failed unexpectedly; counted as unavailable" in caplog.text


def test_a_renewal_past_the_engines_deadline_is_unavailable(tmp_path: Path) -> None:
    seen = _answers(tmp_path, "hang", Arbitrate("renew", -1, "peer silent", timeout=0.1))
    assert len(seen) == 1
    op, granted, reason, _epoch, unavailable, _sent_at, _taken_over = seen[0]
    assert (op, granted, unavailable) == (-1, False, True)
    assert reason.startswith("Lease renew timed out: no answer within 100 ms")
