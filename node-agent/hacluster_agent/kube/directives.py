"""Read the operator's instructions from the ownership Lease (hacluster_api.annotations)."""

from __future__ import annotations

from hacluster_api.annotations import Directives, directives_of

from .leases import LeaseApi


async def read_directives(leases: LeaseApi, name: str) -> Directives | None:
    """None when the Lease does not exist yet (the operator creates it)."""
    lease = await leases.read(name)
    if lease is None:
        return None
    return directives_of(
        lease.metadata.annotations,
        lease.spec.holder_identity,
        lease.spec.lease_transitions,
        lease.metadata.resource_version or "",
    )
