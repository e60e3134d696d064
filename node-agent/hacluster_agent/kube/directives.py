"""The operator's instructions, written as annotations on the ownership Lease."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

HANDOVER_TO = "hacluster.dev/handover-to"
FREEZE = "hacluster.dev/freeze"
RELEASE = "hacluster.dev/release"
RECREATED = "hacluster.dev/recreated"
"""On the ownership Lease the operator created (it was missing): the highest epoch the operator
knew. Its holder proves nothing (arbiter/lease.py `LeaseView.recreated`); an agent's write drops it."""


@dataclass(frozen=True)
class Directives:
    """handover_to: the node that should own next (planned move); freeze: maintenance, no
    automatic moves; release: the HACluster is being deleted, release everything."""

    handover_to: str | None = None
    freeze: bool = False
    release: bool = False
    holder: str = ""
    epoch: int | None = None  # the Lease's leaseTransitions, as read
    version: str = ""  # its resourceVersion: the arbiter counts a standby's window from a change
    recreated: bool = False  # the operator wrote it (RECREATED): its holder proves nothing


def directives_of(
    annotations: dict[str, str] | None, holder: str | None, epoch: int | None = None, version: str = ""
) -> Directives:
    a = annotations or {}
    return Directives(
        handover_to=a.get(HANDOVER_TO) or None,
        freeze=a.get(FREEZE, "").lower() == "true",
        release=a.get(RELEASE, "").lower() == "true",
        holder=holder or "",
        epoch=epoch,
        version=version,
        recreated=RECREATED in a,
    )


async def read_directives(api: client.ApiClient, namespace: str, name: str) -> Directives | None:
    """None when the Lease does not exist yet (the operator creates it)."""

    def call() -> Any:
        return client.CoordinationV1Api(api).read_namespaced_lease(name, namespace, _request_timeout=2)

    try:
        lease = await asyncio.to_thread(call)
    except ApiException as e:
        if e.status == 404:
            return None
        raise
    return directives_of(
        lease.metadata.annotations,
        lease.spec.holder_identity,
        lease.spec.lease_transitions,
        lease.metadata.resource_version or "",
    )
