"""The Lease store on a real API server: coordination.k8s.io/v1 Lease, CAS on resourceVersion."""

from __future__ import annotations

import datetime as dt
from typing import Any

from kubernetes import client

from hacluster_api.annotations import RECREATED

from ..kube.leases import LeaseApi, NotFound
from .lease import LeaseView, Unavailable


class KubeLeaseStore:
    """Reads and writes one Lease through the agent's client layer (kube/leases.py): a hung API
    server turns into Unavailable within its timeout instead of stalling the arbitration window."""

    def __init__(self, leases: LeaseApi, name: str, *, duration_s: int = 1) -> None:
        self.leases, self.name, self.duration_s = leases, name, duration_s
        self.namespace = leases.namespace
        self._last: Any = None

    def _view(self, lease: Any) -> LeaseView:
        self._last = lease
        return LeaseView(
            holder=lease.spec.holder_identity or "",
            transitions=lease.spec.lease_transitions or 0,
            version=lease.metadata.resource_version,
            recreated=RECREATED in (lease.metadata.annotations or {}),
        )

    async def get(self) -> LeaseView | None:
        lease = await self.leases.read(self.name)
        return None if lease is None else self._view(lease)

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
            return self._view(await self.leases.create(body))
        except NotFound:
            raise Unavailable(f"no namespace {self.namespace!r}") from None

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
            lease = await self.leases.replace(self.name, body)
        except NotFound:
            raise Unavailable("the Lease is gone (the operator recreates it)") from None
        return self._view(lease)
