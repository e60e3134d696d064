"""The Lease store on a real API server: coordination.k8s.io/v1 Lease, CAS on resourceVersion."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from hacluster_api.annotations import RECREATED

from .lease import Conflict, LeaseView, Unavailable


class KubeLeaseStore:
    """Reads and writes one Lease. Calls run in a thread with a hard timeout, so a hung API server
    turns into Unavailable within `timeout` instead of stalling the arbitration window."""

    def __init__(
        self, api: client.ApiClient, namespace: str, name: str, *, timeout: float, duration_s: int = 1
    ) -> None:
        self.api = client.CoordinationV1Api(api)
        self.namespace, self.name, self.timeout, self.duration_s = namespace, name, timeout, duration_s
        self._last: Any = None

    async def _call(self, fn: Any, *args: Any, **kw: Any) -> Any:
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(fn, *args, _request_timeout=self.timeout, **kw), self.timeout + 0.5
            )
        except ApiException as e:
            if e.status == 409:
                raise Conflict(e.reason or "conflict") from None
            if e.status == 404:
                raise
            raise Unavailable(f"HTTP {e.status} {e.reason}") from None
        except (TimeoutError, HTTPError, OSError) as e:
            raise Unavailable(f"{type(e).__name__}: {e}") from None

    def _view(self, lease: Any) -> LeaseView:
        self._last = lease
        return LeaseView(
            holder=lease.spec.holder_identity or "",
            transitions=lease.spec.lease_transitions or 0,
            version=lease.metadata.resource_version,
            recreated=RECREATED in (lease.metadata.annotations or {}),
        )

    async def get(self) -> LeaseView | None:
        try:
            lease = await self._call(self.api.read_namespaced_lease, self.name, self.namespace)
        except ApiException:  # 404
            return None
        return self._view(lease)

    def _spec(self, holder: str, transitions: int, acquired: bool) -> client.V1LeaseSpec:
        now = dt.datetime.now(dt.UTC)
        spec = client.V1LeaseSpec(
            holder_identity=holder or None,
            lease_transitions=transitions,
            renew_time=now if holder else None,
            lease_duration_seconds=self.duration_s,
        )
        if acquired:
            spec.acquire_time = now
        elif self._last is not None:
            spec.acquire_time = self._last.spec.acquire_time
        return spec

    async def create(self, holder: str) -> LeaseView:
        body = client.V1Lease(
            metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
            spec=self._spec(holder, 1, True),
        )
        try:
            return self._view(await self._call(self.api.create_namespaced_lease, self.namespace, body))
        except ApiException as e:
            raise Unavailable(f"HTTP {e.status}") from None

    async def swap(self, seen: LeaseView, holder: str, transitions: int) -> LeaseView:
        changed = self._last is None or (self._last.spec.holder_identity or "") != holder
        # Keep the metadata we read (the operator's annotations, the ownerReference): only the
        # spec changes, and only if nobody wrote since `seen`.
        meta = self._last.metadata if self._last is not None else client.V1ObjectMeta(name=self.name)
        meta.namespace, meta.resource_version = self.namespace, seen.version
        if meta.annotations and RECREATED in meta.annotations:  # ours now: a CAS winner's record
            meta.annotations = {k: v for k, v in meta.annotations.items() if k != RECREATED}
        body = client.V1Lease(metadata=meta, spec=self._spec(holder, transitions, changed and bool(holder)))
        try:
            lease = await self._call(self.api.replace_namespaced_lease, self.name, self.namespace, body)
        except ApiException as e:
            raise Unavailable(f"HTTP {e.status}") from None
        return self._view(lease)
