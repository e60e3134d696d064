"""The operator's Lease watch (leasewatch.py) on a real API server: what it holds and tells is
what the server has, for the labelled Leases only, through a list, a watch and a relist."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s

from hacluster_operator.kube import lease_path
from hacluster_operator.leasewatch import LeaseWatch
from tests.apiserver.conftest import ControlPlaneFixture
from tests.support.eventually import async_wait_until

NS = "lease-watch"
MINE = "app.kubernetes.io/managed-by=hacluster-operator"


@pytest.fixture
def api(controlplane: ControlPlaneFixture) -> Iterator[k8s.ApiClient]:
    with controlplane.api_client() as api_client:
        core = k8s.CoreV1Api(api_client)
        core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=NS)))
        try:
            yield api_client
        finally:
            core.delete_namespace(NS)


def lease(name: str, mine: bool = True) -> k8s.V1Lease:
    labels = {"app.kubernetes.io/managed-by": "hacluster-operator"} if mine else {"app": "other"}
    return k8s.V1Lease(
        metadata=k8s.V1ObjectMeta(name=name, labels=labels),
        spec=k8s.V1LeaseSpec(holder_identity="n1", renew_time=dt.datetime.now(dt.UTC)),
    )


def test_the_watch_holds_the_labelled_leases_and_tells_each_change(api: k8s.ApiClient) -> None:
    leases = k8s.CoordinationV1Api(api)
    leases.create_namespaced_lease(NS, lease("before"))  # listed
    leases.create_namespaced_lease(NS, lease("theirs", mine=False))
    seen: list[tuple[str, str, str]] = []

    def on_event(kind: str, obj: dict[str, Any]) -> None:
        seen.append((kind, obj["metadata"]["name"], (obj.get("spec") or {}).get("holderIdentity", "")))

    async def scenario() -> LeaseWatch:
        watch = LeaseWatch(api, [NS], MINE, on_event)
        stop = asyncio.Event()
        task = asyncio.create_task(watch.run(stop))
        await async_wait_until(watch.synced.is_set, "the first list", 20)
        assert list(watch.store) == [lease_path(NS, "before")]
        assert "managedFields" not in watch.store[lease_path(NS, "before")][0]["metadata"]
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, leases.create_namespaced_lease, NS, lease("after"))
        await loop.run_in_executor(
            None, leases.patch_namespaced_lease, "after", NS, {"spec": {"holderIdentity": "n2"}}
        )
        await loop.run_in_executor(None, leases.delete_namespaced_lease, "before", NS)
        await async_wait_until(lambda: ("DELETED", "before", "n1") in seen, "the deletion", 20)
        await async_wait_until(lambda: ("MODIFIED", "after", "n2") in seen, "the change", 20)
        stop.set()
        await task
        return watch

    watch = asyncio.run(scenario())
    assert list(watch.store) == [lease_path(NS, "after")]
    assert watch.store[lease_path(NS, "after")][0]["spec"]["holderIdentity"] == "n2"
    assert ("ADDED", "before", "n1") in seen and ("ADDED", "after", "n1") in seen
    assert all(name != "theirs" for _, name, _ in seen)
