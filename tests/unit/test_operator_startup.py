"""The operator's start when the API server is not there yet (a restart, an upgrade, a node
booting): it waits and says so, never crashes with a traceback into a restart loop."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from hacluster_api.models import PLURAL
from hacluster_operator import __main__ as main
from hacluster_operator.kube import ApiError


class Flaky:
    """A Kube whose discovery read fails with `failures`, then answers."""

    def __init__(self, failures: list[BaseException], served: bool = True) -> None:
        self.failures, self.served, self.calls = failures, served, 0

    async def get(self, path: str, **_: Any) -> dict[str, Any] | None:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return {"resources": [{"name": PLURAL}] if self.served else []}


@pytest.fixture(autouse=True)
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(main, "STARTUP_RETRY_MAX_S", 0.01)


def served(kube: Flaky, stop: asyncio.Event | None = None) -> bool | None:
    async def go() -> bool | None:
        return await main.crd_served(kube, stop or asyncio.Event())  # type: ignore[arg-type]

    return asyncio.run(asyncio.wait_for(go(), 10))


def test_an_unreachable_api_server_is_waited_for(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    kube = Flaky(
        [ConnectionRefusedError(111, "Connection refused"), TimeoutError(), ApiError(503, "Unavailable")]
    )
    assert served(kube) is True
    assert kube.calls == 4
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 3 and all("the API server cannot answer yet" in m for m in said), said
    assert "ConnectionRefusedError" in said[0] and "HTTP 503" in said[2]


def test_a_refusal_is_not_waited_for() -> None:
    assert served(Flaky([ApiError(403, "Forbidden")])) is False
    assert served(Flaky([], served=False)) is False


def test_a_stop_while_waiting_ends_it_cleanly() -> None:
    stop = asyncio.Event()
    stop.set()
    assert served(Flaky([OSError("no route")] * 5), stop) is None
