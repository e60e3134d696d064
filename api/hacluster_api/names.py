"""The names of the Leases an HACluster's operator and agents share, by one rule both sides import.

Each resource group has an ownership Lease (its holder owns the group; its transitions are the
fencing epoch) and, per node, a report Lease its agent renews. The group named main (the only one
of a spec without `groups`) keeps the HACluster's own names, so rewriting a single-group spec as
`groups: [{name: main, ...}]` renames nothing and moves nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from .models import MAIN_GROUP


def ownership_lease_name(cluster: str, group: str = MAIN_GROUP) -> str:
    """The Lease whose holder owns the group: `<cluster>`, or `<cluster>-<group>`."""
    return cluster if group == MAIN_GROUP else f"{cluster}-{group}"


def report_lease_name(cluster: str, node: str, group: str = MAIN_GROUP) -> str:
    """The Lease a node's agent renews with its report on the group: `<cluster>-<node>`, or
    `<cluster>-<group>-<node>` (a group's name never is nor begins a node's: the spec's rule)."""
    return f"{ownership_lease_name(cluster, group)}-{node}"


def lease_names(cluster: str, nodes: Sequence[str], groups: Sequence[str] = (MAIN_GROUP,)) -> list[str]:
    """Every Lease the agents of `cluster` touch: per group its ownership Lease, then each node's
    report."""
    return [
        name
        for g in groups
        for name in (ownership_lease_name(cluster, g), *(report_lease_name(cluster, n, g) for n in nodes))
    ]
