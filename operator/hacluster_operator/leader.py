"""Leader election over one Lease (`hacluster-operator` in the operator's namespace), client-go style.

Why not kopf's peering: it is a *pause* protocol, not an election. Operators with the same priority
that see each other all pause (kopf logs "Possibly conflicting operators"), so two replicas of
one Deployment would both stop; it also needs the KopfPeering CRDs installed and peers with
different priorities. A Lease is what every Kubernetes controller uses: one holder, renewed on a
short period, taken over by a standby only after a full lease duration without renewal.

The rules (those of client-go's leaderelection package):

- A candidate takes the Lease when it is missing, released (no holder), held by itself (a
  restarted container of the same pod takes it back at once), or when the record (holder,
  renewTime, resourceVersion) has not changed for a whole leaseDurationSeconds *as measured on the
  candidate's own monotonic clock*, so clock skew between nodes does not matter.
- Every write is a compare-and-swap (a merge-patch carrying the resourceVersion read).
- The leader renews every `retry_period`; when it has not renewed for `renew_deadline` (less
  than the lease duration) it stops acting and the process exits, so it is restarted and
  campaigns again. On a graceful stop it releases the Lease so a standby takes over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

log = logging.getLogger("hacluster.operator.leader")

LEADER_LEASE = "hacluster-operator"


class Conflict(Exception):
    """A compare-and-swap lost: the object changed since it was read (HTTP 409)."""


class LeaseClient(Protocol):
    """The calls the elector makes (handlers.Kube provides them)."""

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def create_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]: ...

    async def patch_lease(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ElectionConfig:
    namespace: str
    identity: str
    name: str = LEADER_LEASE
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError("need 0 < retry period < renew deadline < lease duration")


def micro_time(t: datetime) -> str:
    """A Kubernetes MicroTime."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        client: LeaseClient,
        config: ElectionConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.client, self.config, self.clock, self.wall = client, config, clock, wall
        self._observed: tuple[str, str, str] | None = None
        self._observed_at = 0.0
        self._renewed_at: float | None = None
        self.is_leader = False

    # ---------------------------------------------------------------- one attempt

    async def try_acquire_or_renew(self) -> bool:
        cfg, now = self.config, self.clock()
        lease = await self.client.get_lease(cfg.namespace, cfg.name)
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": cfg.name, "namespace": cfg.namespace},
                "spec": self._spec(acquire=True, transitions=0),
            }
            try:
                created = await self.client.create_lease(cfg.namespace, body)
            except Conflict:
                return False
            self._observe(created, now)
            return True
        spec = lease.get("spec") or {}
        self._observe(lease, now)
        holder = spec.get("holderIdentity") or ""
        duration = float(spec.get("leaseDurationSeconds") or cfg.lease_duration)
        if holder and holder != cfg.identity and now < self._observed_at + duration:
            return False  # held, and renewed within a lease duration (on our clock)
        mine = holder == cfg.identity
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if mine else 1)
        new_spec = self._spec(acquire=not mine, transitions=transitions)
        if mine and spec.get("acquireTime"):
            new_spec["acquireTime"] = spec["acquireTime"]
        patch = {"metadata": {"resourceVersion": lease["metadata"]["resourceVersion"]}, "spec": new_spec}
        try:
            updated = await self.client.patch_lease(cfg.namespace, cfg.name, patch)
        except Conflict:
            return False
        self._observe(updated, now)
        if not mine:
            log.info("took the leader Lease %s/%s from %r", cfg.namespace, cfg.name, holder or "nobody")
        return True

    def _spec(self, *, acquire: bool, transitions: int) -> dict[str, Any]:
        now = micro_time(self.wall())
        spec: dict[str, Any] = {
            "holderIdentity": self.config.identity,
            "leaseDurationSeconds": max(1, round(self.config.lease_duration)),
            "renewTime": now,
            "leaseTransitions": transitions,
        }
        if acquire:
            spec["acquireTime"] = now
        return spec

    def _observe(self, lease: Mapping[str, Any], now: float) -> None:
        spec = lease.get("spec") or {}
        record = (
            str(spec.get("holderIdentity") or ""),
            str(spec.get("renewTime") or ""),
            str(lease.get("metadata", {}).get("resourceVersion") or ""),
        )
        if record != self._observed:
            self._observed, self._observed_at = record, now

    # ---------------------------------------------------------------- the loops

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Campaign until this process leads (True) or `stop` is set (False)."""
        cfg = self.config
        announced = False
        while not stop.is_set():
            try:
                if await asyncio.wait_for(self.try_acquire_or_renew(), cfg.renew_deadline):
                    self.is_leader, self._renewed_at = True, self.clock()
                    log.info("leading as %r (Lease %s/%s)", cfg.identity, cfg.namespace, cfg.name)
                    return True
                if not announced:
                    holder = self._observed[0] if self._observed else "?"
                    log.info("standing by: %r leads (Lease %s/%s)", holder, cfg.namespace, cfg.name)
                    announced = True
            except Exception as e:
                log.warning("leader election: %s", _brief(e))
            await _wait(stop, cfg.retry_period * random.uniform(1.0, 1.2))
        return False

    async def hold(self, stop: asyncio.Event) -> bool:
        """Renew until `stop` is set (True) or the renew deadline passes without a renewal (False:
        leadership lost; the caller must stop acting at once)."""
        cfg = self.config
        while not stop.is_set():
            await _wait(stop, cfg.retry_period)
            if stop.is_set():
                break
            try:
                renewed = await asyncio.wait_for(self.try_acquire_or_renew(), cfg.renew_deadline)
            except Exception as e:
                log.warning("leader Lease renewal failed: %s", _brief(e))
                renewed = False
            now = self.clock()
            if renewed:
                self._renewed_at = now
            elif self._renewed_at is None or now - self._renewed_at > cfg.renew_deadline:
                self.is_leader = False
                log.error("leadership lost: no renewal for %.1fs", now - (self._renewed_at or now))
                return False
        return True

    async def release(self) -> None:
        """Give the Lease up (graceful stop) so a standby takes over without waiting it out."""
        if not self.is_leader:
            return
        cfg = self.config
        self.is_leader = False
        try:
            lease = await self.client.get_lease(cfg.namespace, cfg.name)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != cfg.identity:
                return
            patch = {
                "metadata": {"resourceVersion": lease["metadata"]["resourceVersion"]},
                "spec": {
                    "holderIdentity": None,
                    "leaseDurationSeconds": 1,
                    "renewTime": micro_time(self.wall()),
                },
            }
            await self.client.patch_lease(cfg.namespace, cfg.name, patch)
            log.info("released the leader Lease %s/%s", cfg.namespace, cfg.name)
        except Exception as e:
            log.warning("could not release the leader Lease: %s", _brief(e))


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def _brief(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
