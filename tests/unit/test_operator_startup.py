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

    def __init__(self, failures: list[BaseException], served: bool = True, not_yet: int = 0) -> None:
        self.failures, self.served, self.calls, self.not_yet = failures, served, 0, not_yet

    async def get(self, path: str, **_: Any) -> dict[str, Any] | None:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        if self.not_yet:
            self.not_yet -= 1
            return None  # the group not served yet: 404
        return {"resources": [{"name": PLURAL}] if self.served else []}


@pytest.fixture(autouse=True)
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(main, "STARTUP_RETRY_S", 0.01)
    monkeypatch.setattr(main, "CRD_GRACE_S", 0.2)


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


def test_a_refusal_is_waited_for_a_while_then_given_up(caplog: pytest.LogCaptureFixture) -> None:
    """A restarted API server refuses everyone until its authorizer has read the RBAC objects
    (the campaign, seed 77: the operator exited 3 on that 403): asked again for CRD_GRACE_S;
    a refusal that lasts is an error that says so."""
    assert served(Flaky([ApiError(403, "Forbidden")] * 3)) is True
    caplog.set_level(logging.ERROR)
    assert served(Flaky([ApiError(403, "Forbidden")] * 1000)) is False
    assert any(
        "cannot read the API discovery" in r.getMessage() and "403" in r.getMessage() for r in caplog.records
    )


def test_a_bad_request_is_not_waited_for() -> None:
    assert served(Flaky([ApiError(400, "BadRequest")])) is False


def test_a_crd_not_served_yet_is_waited_for_a_while(caplog: pytest.LogCaptureFixture) -> None:
    """A restarted API server serves its CRDs a moment after it answers (the campaign's operator
    exited 3 after each API server restart); a CRD never applied still ends the start, saying so."""
    caplog.set_level(logging.WARNING)
    assert served(Flaky([], not_yet=2)) is True
    assert any("CRD is not served (yet)" in r.getMessage() for r in caplog.records)
    kube = Flaky([], served=False)
    assert served(kube) is False and kube.calls > 1


def test_a_stop_while_waiting_ends_it_cleanly() -> None:
    stop = asyncio.Event()
    stop.set()
    assert served(Flaky([OSError("no route")] * 5), stop) is None
