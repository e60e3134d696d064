"""Polling for the tests and benches, on one loop (netns.wait_until: until a predicate is truthy):
`eventually` (until a check stops raising), `wait_until` itself, `async_wait_until` (the same
inside an event loop)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from tests.support.netns import wait_until

T = TypeVar("T")
__all__ = ["async_wait_until", "crd_established", "eventually", "wait_until"]
RETRIED = (AssertionError, KeyError, IndexError, TypeError, ApiException)


def eventually(
    fn: Callable[[], T],
    *,
    timeout: float = 20.0,
    interval: float = 0.1,
    what: str = "",
    context: Callable[[], str] | None = None,
) -> T:
    """Call `fn` until it stops raising (an assertion, a missing key, an API error) and return
    its value; after `timeout` fail with what was awaited, the last error and `context()`.
    The loop is netns.wait_until's (stdlib only: netns.py also runs as a bare script)."""
    last: list[BaseException] = []

    def attempt() -> tuple[T] | None:
        try:
            return (fn(),)
        except RETRIED as e:
            last[:] = [e]
            return None

    try:
        return wait_until(attempt, timeout, interval=interval, message=what or fn.__name__)[0]
    except TimeoutError:
        extra = context() if context is not None else ""
        error = last[0] if last else None
        raise AssertionError(f"not within {timeout:g}s: {what or fn.__name__}: {error!r}{extra}") from error


async def async_wait_until(predicate: Callable[[], object], what: str, timeout: float) -> None:
    """`wait_until` inside an event loop: the loop keeps running between looks."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def crd_established(api: k8s.ApiClient, name: str, *, timeout: float = 20.0) -> None:
    """Wait until the CustomResourceDefinition `name` reports the condition Established=True."""
    ext = k8s.ApiextensionsV1Api(api)

    def established() -> None:
        status = ext.read_custom_resource_definition(name).status
        conditions = {c.type: c.status for c in ((status and status.conditions) or [])}
        assert conditions.get("Established") == "True", conditions

    eventually(established, timeout=timeout, what=f"the CRD {name} Established")
