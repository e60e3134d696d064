"""The agent's one Kubernetes client layer: its Leases are all it touches (the ownership Lease and its
own report Lease; kube/client.py loads the credentials).

Every call runs in a thread with a hard timeout, so a hung API server becomes `Unavailable` within
`timeout` instead of stalling the engine's deadlines; a 409 is `Conflict` (a compare-and-swap lost),
a 404 on a read is None. The arbiter's store, the operator's directives and the report all go
through here (arbiter/kube.py, kube/directives.py, kube/reporter.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from ..arbiter.lease import Conflict, Unavailable


class NotFound(Exception):
    """The Lease does not exist (a write to it: the operator has not created it yet)."""


class LeaseApi:
    def __init__(self, api: client.ApiClient, namespace: str, *, timeout: float = 2.0) -> None:
        self.leases = client.CoordinationV1Api(api)
        self.namespace, self.timeout = namespace, timeout

    async def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(fn, *args, _request_timeout=self.timeout), self.timeout + 0.5
            )
        except ApiException as e:
            if e.status == 409:
                raise Conflict(e.reason or "conflict") from None
            if e.status == 404:
                raise NotFound(e.reason or "not found") from None
            raise Unavailable(f"HTTP {e.status} {e.reason}") from None
        except (TimeoutError, HTTPError, OSError) as e:
            raise Unavailable(f"{type(e).__name__}: {e}") from None

    async def read(self, name: str) -> Any:
        """The Lease (V1Lease), or None when there is none."""
        try:
            return await self._call(self.leases.read_namespaced_lease, name, self.namespace)
        except NotFound:
            return None

    async def create(self, body: client.V1Lease) -> Any:
        return await self._call(self.leases.create_namespaced_lease, self.namespace, body)

    async def replace(self, name: str, body: client.V1Lease) -> Any:
        """A compare-and-swap when `body` carries the resourceVersion read (Conflict otherwise)."""
        return await self._call(self.leases.replace_namespaced_lease, name, self.namespace, body)

    async def patch(self, name: str, body: client.V1Lease) -> Any:
        """A merge-patch of the fields `body` sets."""
        patch = self.leases.api_client.sanitize_for_serialization(body)
        return await self._call(self.leases.patch_namespaced_lease, name, self.namespace, patch)
