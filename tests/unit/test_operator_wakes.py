"""What wakes the operator's decision for an HACluster, and what does not (handlers.py): the
operator acts on watch events, so a missed wake is a decision taken late, and a wake on every
renewal is the one-second poll back (thousands of HAClusters, two agents each)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from hacluster_api.models import HAClusterSpec
from hacluster_operator.handlers import (
    SPEC_HASH,
    Context,
    QuietWakes,
    Settings,
    config_inputs,
    lease_news,
)
from hacluster_operator.kube import Cache, Kube

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
NS, NAME, UID = "ha", "web", "uid-1"


def lease(
    *, renewed: float = 0, holder: str = "node-a", epoch: int = 1, report: str = "{}", rv: str = "1"
) -> dict[str, Any]:
    return {
        "metadata": {"name": NAME, "namespace": NS, "uid": "lease-uid", "resourceVersion": rv,
                     "annotations": {"hacluster.dev/report": report}},
        "spec": {"holderIdentity": holder, "leaseTransitions": epoch, "leaseDurationSeconds": 5,
                 "acquireTime": T0.isoformat(), "renewTime": (T0 + timedelta(seconds=renewed)).isoformat()},
    }  # fmt: skip


def test_a_renewal_is_not_news_what_decide_reads_is() -> None:
    first, mark = lease_news(None, lease(), "ADDED", watched=False)
    assert first
    assert lease_news(mark, lease(renewed=1, rv="2"), "MODIFIED", watched=False)[0] is False
    for changed in (lease(holder="node-b"), lease(epoch=2), lease(report='{"state":"standby"}')):
        assert lease_news(mark, changed, "MODIFIED", watched=False)[0], changed
    assert lease_news(mark, lease(), "DELETED", watched=False)[0]


def test_a_renewal_is_news_after_a_lapse_or_when_the_decision_watches_it() -> None:
    _, mark = lease_news(None, lease(), "ADDED", watched=False)
    assert lease_news(mark, lease(renewed=5.5), "MODIFIED", watched=False)[0]  # stale in between
    assert lease_news(mark, lease(renewed=1), "MODIFIED", watched=True)[0]  # stale, or a claim in grace


def cache_with(objects: dict[str, dict[str, Any]], versions: dict[str, str]) -> Cache:
    def index(items: dict[str, Any]) -> dict[str, dict[str, list[Any]]]:
        out: dict[str, dict[str, list[Any]]] = {}
        for path, value in items.items():
            kind = path.split("/")[-2]
            out.setdefault(kind, {})[path] = [value]
        return out

    whole = index(objects)
    for kind in ("leases", "daemonsets", "serviceaccounts", "roles", "rolebindings"):
        whole.setdefault(kind, {})
    held = index(versions)
    for kind in ("secrets", "configmaps"):
        held.setdefault(kind, {})
    return Cache(whole, held)


SPEC = HAClusterSpec.model_validate(
    {
        "nodes": ["node-a", "node-b"],
        "heartbeat": {"media": {"udp": [{"interface": "eth1", "mode": "broadcast"}]}},
        "auth": {"secretRef": {"name": "web-auth"}},
        "resources": [{"ip": {"address": "192.0.2.10/24", "interface": "eth0"}}],
    }
)
HAC = {"metadata": {"name": NAME, "namespace": NS, "uid": UID, "generation": 1}, "spec": {}}


def objects(*, lease_rv: str = "1", renewed: float = 0, ds_rv: str = "7", ds_gen: int = 1) -> dict[str, Any]:
    ds = {
        "metadata": {
            "uid": "ds",
            "resourceVersion": ds_rv,
            "generation": ds_gen,
            "annotations": {SPEC_HASH: "h"},
        }
    }
    out: dict[str, Any] = {f"/apis/apps/v1/namespaces/{NS}/daemonsets/{NAME}-agent": ds}
    for name in (NAME, f"{NAME}-node-a", f"{NAME}-node-b"):
        path = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/{name}"
        out[path] = lease(renewed=renewed, rv=lease_rv)
    return out


def inputs(objs: dict[str, Any], auth_rv: str = "3") -> tuple[str, ...] | None:
    kube = Kube(None, cache=cache_with(objs, {f"/api/v1/namespaces/{NS}/secrets/web-auth": auth_rv}))  # type: ignore[arg-type]
    ctx = Context(kube=kube, settings=Settings(agent_image="agent:1"))
    return config_inputs(ctx, HAC, SPEC)


def test_the_agents_objects_are_not_rendered_again_for_renewals_or_status() -> None:
    before = inputs(objects())
    assert before is not None
    # the agents renewed every Lease; the DaemonSet's controller wrote its status
    assert inputs(objects(lease_rv="9", renewed=30, ds_rv="8")) == before


def test_they_are_rendered_again_when_what_they_are_made_from_changed() -> None:
    before = inputs(objects())
    assert inputs(objects(ds_gen=2)) != before  # someone edited the DaemonSet's spec
    assert inputs(objects(), auth_rv="4") != before  # the auth key rotated
    gone = objects()
    del gone[f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/{NAME}"]
    assert inputs(gone) != before  # the ownership Lease deleted


def test_a_wake_handlers_success_is_quiet_its_failure_is_not() -> None:
    quiet = QuietWakes()

    def record(level: int, msg: str) -> logging.LogRecord:
        return logging.LogRecord("kopf.objects", level, __file__, 1, msg, None, None)

    assert not quiet.filter(record(logging.INFO, "Handler 'wake_secrets' succeeded."))
    assert quiet.filter(
        record(logging.ERROR, "Handler 'wake_secrets' failed with an exception and will ignore it")
    )
    assert quiet.filter(record(logging.INFO, "Handler 'build_registry.<locals>.ensure' succeeded."))


def test_kopf_builds_an_essence_for_haclusters_only() -> None:
    """The essence (a deep copy kopf diffs for create/update handlers) of a Lease renewal is
    skipped: nothing but HAClusters has such handlers. An HACluster's is kopf's own."""
    import kopf

    from hacluster_operator.handlers import HAClusterDiffBase

    storage = HAClusterDiffBase(prefix="hacluster.dev", key="last-handled-configuration")
    lease = kopf.Body({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "web-n1"},
                       "spec": {"holderIdentity": "n1", "renewTime": "2026-12-07T00:00:00Z"}})  # fmt: skip
    assert storage.build(body=lease) == {}
    hac = {"apiVersion": "hacluster.dev/v1alpha1", "kind": "HACluster", "metadata": {"name": "web"},
           "spec": {"nodes": ["n1", "n2"]}}  # fmt: skip
    assert storage.build(body=kopf.Body(hac))["spec"] == {"nodes": ["n1", "n2"]}
