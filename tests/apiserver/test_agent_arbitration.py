"""Kubernetes mode end to end: two real agents in network namespaces arbitrate through the
ownership Lease of a real kube-apiserver (reached on the lab's LAN), with the least RBAC an agent
needs. The client never sees two owners; the Lease epoch only grows."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s

from hacluster_api.annotations import RECREATED
from tests.apiserver.conftest import ApiServerBinaries
from tests.support import hosttools
from tests.support.controlplane import ControlPlane
from tests.support.eventually import eventually
from tests.support.kubeagents import agent_rbac
from tests.support.lab import Lab

pytestmark = [pytest.mark.apiserver, pytest.mark.netns]

NS, CLUSTER = "ha", "demo"


@pytest.fixture
def kube_lab(apiserver_binary: ApiServerBinaries) -> Iterator[tuple[Lab, ControlPlane]]:
    if reason := hosttools.lab_unavailable():
        pytest.skip(reason)
    lab = Lab(keepalive="100ms", deadtime="300ms", warntime="200ms")
    cp: ControlPlane | None = None
    try:
        lab.build()
        lab.attach_host()
        cp = ControlPlane(apiserver_binary.apiserver, bind_address=lab.api_addr)
        cp.start()
        kc = agent_rbac(cp, lab.root, NS, CLUSTER)
        lab.agent_args = ["--kube", "--kubeconfig", str(kc), "--namespace", NS, "--cluster", CLUSTER]
        yield lab, cp
    finally:
        print("n1 log:\n", lab.agent_log("n1")[-4000:], "\nn2 log:\n", lab.agent_log("n2")[-4000:])
        lab.close()
        if cp is not None:
            cp.stop()


def lease(cp: ControlPlane, name: str = CLUSTER) -> k8s.V1Lease:
    with cp.api_client() as api:
        return k8s.CoordinationV1Api(api).read_namespaced_lease(name, NS)


def owner_and_epoch(cp: ControlPlane) -> tuple[str, int]:
    spec = lease(cp).spec
    return spec.holder_identity or "", spec.lease_transitions or 0


def start(lab: Lab) -> None:
    lab.start_agent("n1")
    lab.start_agent("n2")
    lab.wait_for("n1", timeout=30)


def watch_owners(lab: Lab, seconds: float) -> int:
    """Poll both nodes' interfaces; the most nodes seen holding the VIP at one instant."""
    worst, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        worst = max(worst, sum(lab.holds_vip(n) for n in ("n1", "n2")))
        time.sleep(0.01)
    return worst


def test_owner_takes_the_lease_at_start_and_reports(kube_lab: tuple[Lab, ControlPlane]) -> None:
    lab, cp = kube_lab
    start(lab)
    assert owner_and_epoch(cp) == ("n1", 1)

    def n2_report() -> dict[str, Any]:
        report: dict[str, Any] = json.loads(
            lease(cp, f"{CLUSTER}-n2").metadata.annotations["hacluster.dev/report"]
        )
        assert report["peer"]["state"] in ("active", "up"), report
        return report

    report = eventually(n2_report, timeout=10, interval=0.2, what="a report Lease from n2 seeing n1")
    assert report["holds"] == "none" and report["epoch"] is None, report  # n2 stands by, never took it


def test_owner_death_moves_the_lease_and_the_vip(kube_lab: tuple[Lab, ControlPlane]) -> None:
    lab, cp = kube_lab
    start(lab)
    lab.kill_agent("n1", signal.SIGKILL)
    lab.cut("n1")
    lab.wait_for("n2", timeout=10)
    assert owner_and_epoch(cp) == ("n2", 2)
    assert "Lease take: granted" in lab.agent_log("n2")


def test_heartbeat_link_cut_is_not_a_failover(kube_lab: tuple[Lab, ControlPlane]) -> None:
    lab, cp = kube_lab
    start(lab)
    lab.deafen("n1")
    lab.deafen("n2")
    assert watch_owners(lab, 2.5) == 1
    assert lab.holds_vip("n1") and not lab.holds_vip("n2")
    assert owner_and_epoch(cp) == ("n1", 1)
    status = json.loads(lab.hactl("n2", "status", "--json").stdout)
    assert status["heartbeat_link_down"] is True
    assert lab.fetch() == "n1"
    assert len(lab.arp_owners()) == 1


def test_owner_cut_from_peer_and_api_server_fences_before_the_peer_takes(
    kube_lab: tuple[Lab, ControlPlane],
) -> None:
    lab, cp = kube_lab
    start(lab)
    lab.deafen("n1")
    lab.deafen("n2")
    lab.block("n1", lab.api_addr)
    arp = lab.arp_probe(count=120, interval=0.025)  # the client asks who has the VIP, 3 s long
    assert watch_owners(lab, 3.0) <= 1, "two nodes held the VIP at once"
    answers, _ = arp.communicate(timeout=30)
    assert "192.0.2.100" in answers and Lab.extra_arp_answers(answers) == 0, answers[-400:]
    assert lab.holds_vip("n2") and not lab.holds_vip("n1")
    assert owner_and_epoch(cp) == ("n2", 2)
    assert "self-fencing" in lab.agent_log("n1")


def _recreate(cp: ControlPlane, holder: str, transitions: int) -> None:
    """What the operator does with a missing ownership Lease (resources.ownership_lease): marked."""
    with cp.api_client() as api:
        leases = k8s.CoordinationV1Api(api)
        leases.delete_namespaced_lease(CLUSTER, NS)
        leases.create_namespaced_lease(
            NS,
            k8s.V1Lease(
                metadata=k8s.V1ObjectMeta(name=CLUSTER, annotations={RECREATED: str(transitions - 1)}),
                spec=k8s.V1LeaseSpec(holder_identity=holder or None, lease_transitions=transitions),
            ),
        )


def test_a_recreated_lease_is_claimed_by_its_owner_or_costs_a_move_never_two_owners(
    kube_lab: tuple[Lab, ControlPlane],
) -> None:
    """The operator recreates a deleted Lease from its last observations, which can be stale (the
    full stack's campaign: the old owner named at the new owner's epoch, the pair never settled).
    Marked `recreated`, it proves nobody's ownership: named right, the owner claims it at its next
    read and keeps the VIP; named wrong, the owner loses it and takes it back after a window."""
    lab, cp = kube_lab
    start(lab)
    assert owner_and_epoch(cp) == ("n1", 1)

    def settled(epoch_above: int) -> tuple[str, int]:
        got = lease(cp)
        assert RECREATED not in (got.metadata.annotations or {}), "still the operator's record"
        holder, epoch = got.spec.holder_identity or "", got.spec.lease_transitions or 0
        assert holder == "n1" and epoch > epoch_above and lab.holds_vip("n1"), (holder, epoch)
        return holder, epoch

    _recreate(cp, "n1", 2)  # named right
    assert watch_owners(lab, 2.0) == 1 and lab.holds_vip("n1")  # never moved
    eventually(lambda: settled(1), timeout=5, interval=0.1, what="n1 claiming the recreated Lease")

    _, epoch = owner_and_epoch(cp)
    _recreate(cp, "n2", epoch)  # named wrong, at n1's own epoch (a stale status)
    assert watch_owners(lab, 3.0) <= 1
    eventually(lambda: settled(epoch), timeout=10, interval=0.1, what="one owner on the record again")
