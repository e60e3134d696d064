"""One polling helper for tests that wait on a real API server or real agents."""

from __future__ import annotations

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


def crd_established(api: k8s.ApiClient, name: str, *, timeout: float = 20.0) -> None:
    """Wait until the CustomResourceDefinition `name` reports the condition Established=True."""
    ext = k8s.ApiextensionsV1Api(api)

    def established() -> None:
        status = ext.read_custom_resource_definition(name).status
        conditions = {c.type: c.status for c in ((status and status.conditions) or [])}
        assert conditions.get("Established") == "True", conditions

    eventually(established, timeout=timeout, what=f"the CRD {name} Established")
