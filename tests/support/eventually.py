"""The one polling loop of the tests and benches: `eventually` (until a check stops raising),
`wait_until` (until a predicate is truthy), `async_wait_until` (the same inside an event loop)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

T = TypeVar("T")
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
    its value; after `timeout` fail with what was awaited, the last error and `context()`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except RETRIED as e:
            if time.monotonic() > deadline:
                extra = context() if context is not None else ""
                raise AssertionError(f"not within {timeout:g}s: {what or fn.__name__}: {e!r}{extra}") from e
            time.sleep(interval)


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float,
    *,
    interval: float = 0.05,
    message: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns something truthy; return it. Raise TimeoutError."""

    def check() -> T:
        value = predicate()
        if not value:
            raise AssertionError(message)
        return value

    try:
        return eventually(check, timeout=timeout, interval=interval, what=message)
    except AssertionError:
        raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {message}") from None


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
