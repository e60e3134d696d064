"""Read the operator's instructions from the ownership Lease (hacluster_api.annotations)."""

from __future__ import annotations

import asyncio
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from hacluster_api.annotations import Directives, directives_of


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
