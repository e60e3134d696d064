"""The user's path on a real cluster (issue 13): two Debian guests as kubelet nodes, the images built
here, `helm install` of the chart and `kubectl apply` of examples/article unchanged.

What a user sees:

* the chart's operator pods and the agents' DaemonSet scheduled by the scheduler and run by the
  kubelets from the images built by images/build.sh (no registry);
* the article's pair Ready with its home node (servidor2) owning the group, `kubectl get hac` and
  `kubectl ha status` showing it, and the VIP 192.0.2.10 answering the client from servidor2's MAC;
* the owner's machine powered off hard: the VIP answers from servidor1's MAC, and only from it;
* the machine powered on again: it rejoins as the standby (the article's nice_failback), the
  VIP stays where it is.

Timings under software emulation (2 host cores): the node guests boot in ~40 s, load the images
in ~2 min, the example comes up within ~2 min of `kubectl apply`; the article's deadtime is 20 s.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.support import netns, vmcluster

pytestmark = [pytest.mark.vm, pytest.mark.timeout(3600)]


@pytest.fixture(scope="module")
def cluster() -> Iterator[vmcluster.VmCluster]:
    with vmcluster.vm_cluster(vmcluster.EXAMPLE_NODES) as c:
        yield c


@pytest.fixture(scope="module")
def example(cluster: vmcluster.VmCluster) -> dict[str, str]:
    return vmcluster.install_example(cluster)


def test_helm_install_and_the_article_example(cluster: vmcluster.VmCluster, example: dict[str, str]) -> None:
    assert "STATUS: deployed" in example["helm install"], example["helm install"]
    assert vmcluster.ready_owner(cluster, "article") == "servidor2"  # the article's home node
    media = {n["name"]: n["media"] for n in vmcluster.hacluster(cluster, "article")["status"]["nodes"]}
    assert media == {n: {"eth1": "up", "/dev/ttyS0": "up"} for n in vmcluster.EXAMPLE_NODES}, media
    assert "article" in example["kubectl get hac"] and "servidor2" in example["kubectl get hac"]
    assert "servidor2" in example["kubectl ha status"], example["kubectl ha status"]
    assert vmcluster.vip_mac(cluster, vmcluster.EXAMPLE_VIP) == cluster.node("servidor2").mac_lan
    pods = vmcluster.kubectl(cluster, "get", "pods", "-A", "-o", "wide")
    for name in vmcluster.EXAMPLE_NODES:  # an agent and an operator on each node
        assert sum(1 for line in pods.splitlines() if name in line and "Running" in line) >= 2, pods


def test_the_owner_powered_off_then_on(cluster: vmcluster.VmCluster, example: dict[str, str]) -> None:
    owner = vmcluster.ready_owner(cluster, "article")
    assert owner is not None
    other = next(n for n in vmcluster.EXAMPLE_NODES if n != owner)
    t0 = time.monotonic()
    cluster.power_off(owner)
    netns.wait_until(
        lambda: vmcluster.vip_mac(cluster, vmcluster.EXAMPLE_VIP) == cluster.node(other).mac_lan,
        120,
        interval=0.5,
        message=f"the VIP answered from {other}",
    )
    moved = time.monotonic() - t0
    cluster.power_on(owner)
    netns.wait_until(
        lambda: (
            vmcluster.ready_owner(cluster, "article") == other and vmcluster.pair_joined(cluster, "article")
        ),
        600,
        interval=2.0,
        message=f"{owner} rejoined as the standby (both agents hearing each other)",
    )
    assert vmcluster.vip_mac(cluster, vmcluster.EXAMPLE_VIP) == cluster.node(other).mac_lan
    print(f"the VIP answered from {other} {moved:.1f} s after {owner} was powered off (deadtime 20 s)")
